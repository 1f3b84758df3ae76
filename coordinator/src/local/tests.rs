//! Tests of `LocalStore`: ZooKeeper semantics, watches, sessions, journal recovery.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, TryRecvError};
use proptest::prelude::*;

use super::*;
use crate::store::{create_recursive, delete_recursive, get_opt};
use crate::testutil::TempDir;

fn fake_clock(start_ms: i64) -> (Clock, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(start_ms));
    let handle = Arc::clone(&now);
    (Arc::new(move || handle.load(Ordering::SeqCst)), now)
}

fn persistent(store: &LocalStore, path: &str, data: &[u8]) -> String {
    store.create(path, data, CreateMode::Persistent).unwrap()
}

fn no_event(rx: &Receiver<WatchEvent>) {
    let next = rx.try_recv();
    assert!(
        matches!(next, Err(TryRecvError::Empty | TryRecvError::Disconnected)),
        "unexpected {next:?}"
    );
}

#[test]
fn root_exists_and_cannot_be_created_or_deleted() {
    let store = LocalStore::in_memory();
    let root = store.exists("/").unwrap().unwrap();
    assert_eq!(root.num_children, 0);
    assert!(matches!(
        store.create("/", b"", CreateMode::Persistent),
        Err(StoreError::NodeExists(p)) if p == "/"
    ));
    assert!(matches!(
        store.delete("/", None),
        Err(StoreError::InvalidPath(_))
    ));
    assert_eq!(store.children("/").unwrap(), Vec::<String>::new());
}

#[test]
fn stat_follows_zookeeper_rules() {
    let (clock, now) = fake_clock(1_000);
    let store = LocalStore::in_memory_with_clock(clock);
    persistent(&store, "/a", b"hello");
    let (data, stat) = store.get("/a").unwrap();
    assert_eq!(data, b"hello");
    assert_eq!(
        stat,
        Stat {
            version: 0,
            cversion: 0,
            ephemeral_owner: 0,
            czxid: 1,
            mzxid: 1,
            ctime_ms: 1_000,
            mtime_ms: 1_000,
            num_children: 0,
            data_length: 5,
        }
    );
    now.store(2_000, Ordering::SeqCst);
    let stat = store.set("/a", b"hi", None).unwrap();
    assert_eq!((stat.version, stat.mzxid, stat.czxid), (1, 2, 1));
    assert_eq!(
        (stat.ctime_ms, stat.mtime_ms, stat.data_length),
        (1_000, 2_000, 2)
    );
    // Child add and remove bump the parent's cversion, not its version.
    persistent(&store, "/a/x", b"");
    persistent(&store, "/a/y", b"");
    store.delete("/a/x", None).unwrap();
    let stat = store.exists("/a").unwrap().unwrap();
    assert_eq!((stat.version, stat.cversion, stat.num_children), (1, 3, 1));
    // Versioned set and delete.
    assert!(matches!(
        store.set("/a", b"", Some(0)),
        Err(StoreError::BadVersion { ref path, expected: 0, actual: 1 }) if path == "/a"
    ));
    assert_eq!(store.set("/a", b"v2", Some(1)).unwrap().version, 2);
    assert_eq!(store.set("/a", b"v3", Some(-1)).unwrap().version, 3);
    assert!(matches!(
        store.delete("/a/y", Some(5)),
        Err(StoreError::BadVersion { .. })
    ));
    store.delete("/a/y", Some(0)).unwrap();
    // A failed write does not consume a zxid.
    assert_eq!(store.exists("/a").unwrap().unwrap().mzxid, 7);
    persistent(&store, "/b", b"");
    assert_eq!(store.exists("/b").unwrap().unwrap().czxid, 9);
}

#[test]
fn errors_name_the_right_path() {
    let store = LocalStore::in_memory();
    assert!(matches!(
        store.create("/a/b", b"", CreateMode::Persistent),
        Err(StoreError::NoNode(p)) if p == "/a"
    ));
    persistent(&store, "/a", b"");
    persistent(&store, "/a/b", b"");
    assert!(matches!(
        store.create("/a/b", b"", CreateMode::Persistent),
        Err(StoreError::NodeExists(p)) if p == "/a/b"
    ));
    assert!(matches!(store.delete("/a", None), Err(StoreError::NotEmpty(p)) if p == "/a"));
    assert!(matches!(store.get("/nope"), Err(StoreError::NoNode(p)) if p == "/nope"));
    assert!(matches!(
        store.set("/nope", b"", None),
        Err(StoreError::NoNode(_))
    ));
    assert!(matches!(
        store.delete("/nope", None),
        Err(StoreError::NoNode(_))
    ));
    assert!(matches!(
        store.children("/nope"),
        Err(StoreError::NoNode(_))
    ));
    assert_eq!(store.exists("/nope").unwrap(), None);
    for bad in ["a", "/a/", "/a//b", "/a/./b", "/a/../b", ""] {
        assert!(
            matches!(store.get(bad), Err(StoreError::InvalidPath(_))),
            "{bad}"
        );
        assert!(matches!(
            store.create(bad, b"", CreateMode::Persistent),
            Err(StoreError::InvalidPath(_))
        ));
    }
    let big = vec![0u8; crate::store::DATA_BYTES_MAX + 1];
    assert!(matches!(
        store.create("/big", &big, CreateMode::Persistent),
        Err(StoreError::LimitExceeded { .. })
    ));
    assert!(matches!(
        store.set("/a", &big, None),
        Err(StoreError::LimitExceeded { .. })
    ));
}

#[test]
fn children_are_sorted_names() {
    let store = LocalStore::in_memory();
    persistent(&store, "/t", b"");
    for name in ["b", "a", "c10", "c2"] {
        persistent(&store, &format!("/t/{name}"), b"");
    }
    assert_eq!(store.children("/t").unwrap(), ["a", "b", "c10", "c2"]);
    assert_eq!(store.children("/").unwrap(), ["t"]);
}

#[test]
fn sequential_names_come_from_the_parent_cversion() {
    let store = LocalStore::in_memory();
    persistent(&store, "/q", b"");
    let first = store
        .create("/q/item-", b"1", CreateMode::PersistentSequential)
        .unwrap();
    assert_eq!(first, "/q/item-0000000000");
    persistent(&store, "/q/plain", b"");
    store.delete("/q/plain", None).unwrap();
    let second = store
        .create("/q/item-", b"2", CreateMode::EphemeralSequential)
        .unwrap();
    assert_eq!(second, "/q/item-0000000003");
    // A sequential create may end with '/'.
    assert_eq!(
        store
            .create("/q/", b"", CreateMode::PersistentSequential)
            .unwrap(),
        "/q/0000000004"
    );
    assert_eq!(
        store
            .create("/", b"", CreateMode::PersistentSequential)
            .unwrap(),
        "/0000000001"
    );
    assert_eq!(
        store.get("/q/item-0000000003").unwrap().1.ephemeral_owner,
        store.session_id()
    );
}

#[test]
fn ephemerals_cannot_have_children() {
    let store = LocalStore::in_memory();
    let path = store.create("/e", b"", CreateMode::Ephemeral).unwrap();
    assert_eq!(
        store.exists(&path).unwrap().unwrap().ephemeral_owner,
        store.session_id()
    );
    assert!(store.session_id() != 0);
    for mode in [
        CreateMode::Persistent,
        CreateMode::Ephemeral,
        CreateMode::PersistentSequential,
    ] {
        assert!(matches!(
            store.create("/e/child", b"", mode),
            Err(StoreError::NoChildrenForEphemerals(_))
        ));
    }
    assert!(matches!(
        create_recursive(&store, "/e/x/y", b"", CreateMode::Persistent),
        Err(StoreError::NoChildrenForEphemerals(_))
    ));
}

#[test]
fn multi_is_all_or_nothing() {
    let store = LocalStore::in_memory();
    persistent(&store, "/a", b"old");
    let before = store.exists("/a").unwrap().unwrap();
    let ops = [
        Op::Create {
            path: "/b".into(),
            data: b"new".to_vec(),
            mode: CreateMode::Persistent,
        },
        Op::SetData {
            path: "/a".into(),
            data: b"changed".to_vec(),
            version: Some(0),
        },
        Op::Create {
            path: "/b/c".into(),
            data: vec![],
            mode: CreateMode::Ephemeral,
        },
        Op::Check {
            path: "/a".into(),
            version: 0, // fails: the set above made it 1
        },
    ];
    let (tx, rx) = unbounded();
    store.watch_data("/b", tx.clone()).unwrap();
    store.watch_data("/a", tx).unwrap();
    assert!(matches!(
        store.multi(&ops),
        Err(StoreError::BadVersion { ref path, expected: 0, actual: 1 }) if path == "/a"
    ));
    assert_eq!(store.exists("/b").unwrap(), None);
    assert_eq!(store.get("/a").unwrap(), (b"old".to_vec(), before));
    assert_eq!(store.exists("/").unwrap().unwrap().cversion, 1);
    no_event(&rx);
    // The same multi with a passing check applies everything under one zxid.
    let mut ops = ops.to_vec();
    ops[3] = Op::Check {
        path: "/a".into(),
        version: 1,
    };
    let results = store.multi(&ops).unwrap();
    assert_eq!(results[0], OpResult::Created("/b".into()));
    assert!(matches!(
        results[1],
        OpResult::SetData(Stat { version: 1, .. })
    ));
    assert_eq!(results[3], OpResult::Checked);
    let zxid = before.czxid + 1;
    assert_eq!(store.exists("/b").unwrap().unwrap().czxid, zxid);
    assert_eq!(store.exists("/a").unwrap().unwrap().mzxid, zxid);
    assert_eq!(store.exists("/b/c").unwrap().unwrap().czxid, zxid);
    let mut events = vec![rx.try_recv().unwrap(), rx.try_recv().unwrap()];
    events.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        events,
        [
            WatchEvent::NodeCreated("/b".into()),
            WatchEvent::NodeDataChanged("/a".into())
        ]
    );
    no_event(&rx);
    assert_eq!(store.multi(&[]).unwrap(), vec![]);
}

#[test]
fn multi_rollback_restores_deleted_nodes_and_cversions() {
    let store = LocalStore::in_memory();
    persistent(&store, "/p", b"");
    persistent(&store, "/p/x", b"x");
    let before = store.get("/p/x").unwrap();
    let parent_before = store.exists("/p").unwrap().unwrap();
    let ops = [
        Op::Delete {
            path: "/p/x".into(),
            version: None,
        },
        Op::Create {
            path: "/p/x".into(),
            data: b"again".to_vec(),
            mode: CreateMode::Persistent,
        },
        Op::Delete {
            path: "/p/missing".into(),
            version: None,
        },
    ];
    assert!(matches!(store.multi(&ops), Err(StoreError::NoNode(p)) if p == "/p/missing"));
    assert_eq!(store.get("/p/x").unwrap(), before);
    assert_eq!(store.exists("/p").unwrap().unwrap(), parent_before);
}

#[test]
fn data_watch_fires_once_per_registration() {
    let store = LocalStore::in_memory();
    let (tx, rx) = unbounded();
    assert_eq!(store.watch_data("/w", tx.clone()).unwrap(), None);
    persistent(&store, "/w", b"");
    assert_eq!(rx.try_recv().unwrap(), WatchEvent::NodeCreated("/w".into()));
    store.set("/w", b"1", None).unwrap();
    no_event(&rx); // one-shot: not re-armed
    assert!(store.watch_data("/w", tx.clone()).unwrap().is_some());
    store.watch_data("/w", tx.clone()).unwrap(); // same channel twice: one event
    store.set("/w", b"2", None).unwrap();
    store.set("/w", b"3", None).unwrap();
    assert_eq!(
        rx.try_recv().unwrap(),
        WatchEvent::NodeDataChanged("/w".into())
    );
    no_event(&rx);
    store.watch_data("/w", tx).unwrap();
    store.delete("/w", None).unwrap();
    assert_eq!(rx.try_recv().unwrap(), WatchEvent::NodeDeleted("/w".into()));
    no_event(&rx);
}

#[test]
fn child_watch_fires_on_child_changes_and_deletion() {
    let store = LocalStore::in_memory();
    persistent(&store, "/p", b"");
    let (tx, rx) = unbounded();
    assert!(matches!(
        store.watch_children("/absent", tx.clone()),
        Err(StoreError::NoNode(_))
    ));
    assert_eq!(
        store.watch_children("/p", tx.clone()).unwrap(),
        Vec::<String>::new()
    );
    store.set("/p", b"data", None).unwrap();
    no_event(&rx); // data changes are not child changes
    persistent(&store, "/p/a", b"");
    persistent(&store, "/p/b", b"");
    assert_eq!(
        rx.try_recv().unwrap(),
        WatchEvent::NodeChildrenChanged("/p".into())
    );
    no_event(&rx);
    assert_eq!(store.watch_children("/p", tx.clone()).unwrap(), ["a", "b"]);
    store.delete("/p/a", None).unwrap();
    assert_eq!(
        rx.try_recv().unwrap(),
        WatchEvent::NodeChildrenChanged("/p".into())
    );
    // A node deleted while watched on both data and children: NodeDeleted once.
    store.delete("/p/b", None).unwrap();
    store.watch_children("/p", tx.clone()).unwrap();
    store.watch_data("/p", tx).unwrap();
    store.delete("/p", None).unwrap();
    assert_eq!(rx.try_recv().unwrap(), WatchEvent::NodeDeleted("/p".into()));
    no_event(&rx);
}

#[test]
fn dropped_receivers_and_callbacks_into_the_store_are_fine() {
    let store = Arc::new(LocalStore::in_memory());
    let (tx, rx) = unbounded();
    store.watch_data("/gone", tx).unwrap();
    drop(rx);
    persistent(&store, "/gone", b""); // send error ignored

    // A watcher thread that re-reads and re-arms from inside its event loop.
    let (tx, rx) = crossbeam_channel::bounded(1);
    persistent(&store, "/n", b"0");
    store.watch_data("/n", tx.clone()).unwrap();
    let reader = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while seen.last().map(Vec::as_slice) != Some(&b"9"[..]) {
                let event = rx.recv_timeout(Duration::from_secs(10)).expect("an event");
                assert_eq!(event, WatchEvent::NodeDataChanged("/n".into()));
                store.watch_data("/n", tx.clone()).unwrap();
                seen.push(store.get("/n").unwrap().0);
            }
            seen
        })
    };
    for i in 1..=9u8 {
        store.set("/n", &[b'0' + i], None).unwrap();
    }
    let seen = reader.join().unwrap();
    assert_eq!(seen.last().unwrap(), b"9");
}

#[test]
fn sessions_own_their_ephemerals() {
    let first = LocalStore::in_memory();
    let second = first.new_session();
    assert_ne!(first.session_id(), second.session_id());
    persistent(&first, "/brokers", b"");
    second
        .create("/brokers/2", b"b2", CreateMode::Ephemeral)
        .unwrap();
    first
        .create("/brokers/1", b"b1", CreateMode::Ephemeral)
        .unwrap();
    assert_eq!(first.children("/brokers").unwrap(), ["1", "2"]);

    let (tx, rx) = unbounded();
    first.watch_data("/brokers/2", tx.clone()).unwrap();
    first.watch_children("/brokers", tx.clone()).unwrap();
    let (own_tx, own_rx) = unbounded();
    second.watch_data("/brokers/1", own_tx).unwrap();
    second.close_session();
    assert_eq!(own_rx.try_recv().unwrap(), WatchEvent::SessionExpired);
    no_event(&own_rx); // its watch on /brokers/1 is gone
    let mut events = vec![rx.try_recv().unwrap(), rx.try_recv().unwrap()];
    events.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        events,
        [
            WatchEvent::NodeChildrenChanged("/brokers".into()),
            WatchEvent::NodeDeleted("/brokers/2".into())
        ]
    );
    assert_eq!(first.children("/brokers").unwrap(), ["1"]);
    assert!(matches!(
        second.get("/brokers"),
        Err(StoreError::SessionExpired)
    ));
    assert!(matches!(
        second.create("/x", b"", CreateMode::Persistent),
        Err(StoreError::SessionExpired)
    ));
    second.close_session(); // idempotent

    let third = first.new_session();
    third
        .create("/brokers/3", b"", CreateMode::Ephemeral)
        .unwrap();
    drop(third); // dropping a handle ends its session
    assert_eq!(first.children("/brokers").unwrap(), ["1"]);
}

#[test]
fn helpers_create_and_delete_recursively() {
    let store = LocalStore::in_memory();
    assert_eq!(
        create_recursive(&store, "/a/b/c", b"leaf", CreateMode::Persistent).unwrap(),
        "/a/b/c"
    );
    assert_eq!(store.get("/a/b").unwrap().0, b"");
    assert_eq!(store.get("/a/b/c").unwrap().0, b"leaf");
    assert!(matches!(
        create_recursive(&store, "/a/b/c", b"", CreateMode::Persistent),
        Err(StoreError::NodeExists(_))
    ));
    let seq = create_recursive(
        &store,
        "/n/isr_change_",
        b"",
        CreateMode::PersistentSequential,
    )
    .unwrap();
    assert_eq!(seq, "/n/isr_change_0000000000");
    create_recursive(&store, "/a/b/e", b"", CreateMode::Ephemeral).unwrap();
    assert_eq!(get_opt(&store, "/a/b/c").unwrap().unwrap().0, b"leaf");
    assert_eq!(get_opt(&store, "/a/zz").unwrap(), None);
    delete_recursive(&store, "/a").unwrap();
    assert_eq!(store.exists("/a").unwrap(), None);
    delete_recursive(&store, "/a").unwrap(); // absent is fine
    assert!(matches!(
        delete_recursive(&store, "/"),
        Err(StoreError::InvalidPath(_))
    ));
    assert_eq!(store.children("/").unwrap(), ["n"]);
}

#[test]
fn journal_replay_keeps_persistent_nodes_and_drops_ephemerals() {
    let dir = TempDir::new("replay");
    let (clock, _) = fake_clock(5_000);
    let view = {
        let store = LocalStore::open_with_clock(dir.path(), clock.clone()).unwrap();
        persistent(&store, "/a", b"1");
        store.set("/a", b"2", Some(0)).unwrap();
        persistent(&store, "/a/keep", b"k");
        store.create("/a/eph", b"e", CreateMode::Ephemeral).unwrap();
        persistent(&store, "/a/gone", b"");
        store.delete("/a/gone", None).unwrap();
        store
            .create("/a/seq-", b"", CreateMode::PersistentSequential)
            .unwrap();
        // An ephemeral child change followed by a journaled one: replay must restore the
        // recorded cversion, not count.
        store.create("/a/eph2", b"", CreateMode::Ephemeral).unwrap();
        persistent(&store, "/a/last", b"");
        store
            .multi(&[
                Op::Create {
                    path: "/m".into(),
                    data: b"m".to_vec(),
                    mode: CreateMode::Persistent,
                },
                Op::Create {
                    path: "/m/e".into(),
                    data: vec![],
                    mode: CreateMode::EphemeralSequential,
                },
            ])
            .unwrap();
        store.persistent_view()
    };
    let store = LocalStore::open_with_clock(dir.path(), clock).unwrap();
    assert_eq!(store.exists("/a/eph").unwrap(), None);
    assert_eq!(
        store.children("/a").unwrap(),
        ["keep", "last", "seq-0000000004"]
    );
    assert_eq!(store.children("/m").unwrap(), Vec::<String>::new());
    let (data, stat) = store.get("/a").unwrap();
    assert_eq!(data, b"2");
    assert_eq!(
        (stat.version, stat.czxid, stat.mzxid, stat.ctime_ms),
        (1, 1, 2, 5_000)
    );
    // cversion survives even though ephemeral creates are not journaled.
    assert_eq!(stat.cversion, 7);
    // /m's only child change was an ephemeral create, which is not journaled: its cversion
    // restarts from its last journaled value (documented; Kafka uses no ephemeral
    // sequential nodes, so no sequence number it relies on can repeat).
    let mut view = view;
    view.get_mut("/m").unwrap().1.cversion = 0;
    assert_eq!(store.persistent_view(), view);
    // Sequence numbers continue, zxids keep growing.
    assert_eq!(
        store
            .create("/a/seq-", b"", CreateMode::PersistentSequential)
            .unwrap(),
        "/a/seq-0000000007"
    );
    assert!(store.exists("/a/seq-0000000007").unwrap().unwrap().czxid > stat.mzxid);
}

/// Appends `bytes` to the journal of a closed store.
fn append_raw(dir: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.join(journal::JOURNAL_FILE_NAME))
        .unwrap();
    file.write_all(bytes).unwrap();
}

fn journal_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(journal::JOURNAL_FILE_NAME))
        .unwrap()
        .len()
}

#[test]
fn torn_tail_is_dropped_and_the_rest_kept() {
    let dir = TempDir::new("torn");
    {
        let store = LocalStore::open(dir.path()).unwrap();
        persistent(&store, "/kept", b"before");
    }
    // A journal whose last record (the txn creating /torn) is cut short.
    let full = {
        let store = LocalStore::open(dir.path()).unwrap();
        persistent(&store, "/torn", b"after");
        let len = journal_len(dir.path());
        drop(store);
        let bytes = std::fs::read(dir.path().join(journal::JOURNAL_FILE_NAME)).unwrap();
        assert_eq!(bytes.len() as u64, len);
        bytes
    };
    for cut in [1usize, 4, 11, 12, 20] {
        std::fs::write(
            dir.path().join(journal::JOURNAL_FILE_NAME),
            &full[..full.len() - cut],
        )
        .unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(store.get("/kept").unwrap().0, b"before");
        assert_eq!(store.exists("/torn").unwrap(), None, "cut {cut}");
        drop(store);
    }
}

#[test]
fn bad_checksum_and_garbage_tails_are_dropped() {
    let dir = TempDir::new("checksum");
    {
        let store = LocalStore::open(dir.path()).unwrap();
        persistent(&store, "/a", b"1");
        store.set("/a", b"2", None).unwrap();
        store.set("/a", b"3", None).unwrap();
    }
    // Reopening compacted the journal; write three more txn records and damage the middle.
    let offsets = {
        let store = LocalStore::open(dir.path()).unwrap();
        let mut offsets = vec![journal_len(dir.path())];
        for data in [b"4", b"5", b"6"] {
            store.set("/a", data, None).unwrap();
            offsets.push(journal_len(dir.path()));
        }
        offsets
    };
    let path = dir.path().join(journal::JOURNAL_FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let last_byte_of_second = offsets[2] as usize - 1;
    bytes[last_byte_of_second] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    {
        let store = LocalStore::open(dir.path()).unwrap();
        let (data, stat) = store.get("/a").unwrap();
        assert_eq!((data.as_slice(), stat.version), (&b"4"[..], 3));
    }
    // Garbage after valid records, including a huge length field.
    append_raw(dir.path(), &[0xff, 0xff, 0xff, 0x7f, 1, 2, 3]);
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(store.get("/a").unwrap().0, b"4");
    drop(store);
    // An empty or torn-header journal starts empty.
    std::fs::write(&path, b"KB").unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(store.children("/").unwrap(), Vec::<String>::new());
}

#[test]
fn a_foreign_or_inconsistent_journal_is_refused() {
    let dir = TempDir::new("foreign");
    let path = dir.path().join(journal::JOURNAL_FILE_NAME);
    std::fs::write(&path, b"not a journal at all").unwrap();
    let e = LocalStore::open(dir.path()).err().unwrap();
    assert!(e.to_string().contains("bad magic"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"not a journal at all");

    // A well-framed record that does not apply (delete of a missing node).
    let mut bytes = b"KBMJ\x01\x00\x00\x00".to_vec();
    let record = journal::encode_txn(
        1,
        0,
        &[Change::Deleted {
            path: "/missing".into(),
            ephemeral: false,
            parent_cversion: 1,
        }],
    )
    .unwrap()
    .unwrap();
    bytes.extend_from_slice(&record);
    std::fs::write(&path, &bytes).unwrap();
    let e = LocalStore::open(dir.path()).err().unwrap();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("/missing"), "{e}");
}

#[test]
fn a_directory_is_opened_by_one_store_at_a_time() {
    let dir = TempDir::new("lock");
    let store = LocalStore::open(dir.path()).unwrap();
    let e = LocalStore::open(dir.path()).err().unwrap();
    assert!(e.to_string().contains("another process"), "{e}");
    drop(store);
    LocalStore::open(dir.path()).unwrap();
}

#[test]
fn journal_compacts_while_running() {
    let dir = TempDir::new("compact");
    let store = LocalStore::open(dir.path()).unwrap();
    store.set_compact_bytes_min(2_000);
    persistent(&store, "/c", b"");
    for i in 0..200 {
        store
            .set("/c", format!("value {i}").as_bytes(), None)
            .unwrap();
    }
    assert!(journal_len(dir.path()) < 2_000 + 100);
    let view = store.persistent_view();
    drop(store);
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(store.persistent_view(), view);
    assert_eq!(store.get("/c").unwrap().1.version, 200);
}

#[test]
fn ephemeral_only_writes_do_not_touch_the_journal() {
    let dir = TempDir::new("ephemeral-only");
    let store = LocalStore::open(dir.path()).unwrap();
    persistent(&store, "/e", b"");
    let len = journal_len(dir.path());
    let path = store.create("/e/x", b"", CreateMode::Ephemeral).unwrap();
    store.set(&path, b"changed", None).unwrap();
    store.delete(&path, None).unwrap();
    assert_eq!(journal_len(dir.path()), len);
    assert!(store
        .journal_path()
        .unwrap()
        .ends_with(journal::JOURNAL_FILE_NAME));
}

#[derive(Debug, Clone)]
enum TestOp {
    Create(usize, u8, bool),
    CreateSequential(usize, bool),
    Set(usize, u8),
    Delete(usize),
    Multi(usize, usize, u8),
    Reopen,
}

const TEST_PATHS: [&str; 7] = ["/a", "/b", "/a/x", "/a/y", "/b/x", "/a/x/z", "/q"];

fn test_op() -> impl Strategy<Value = TestOp> {
    let path = 0..TEST_PATHS.len();
    prop_oneof![
        4 => (path.clone(), any::<u8>(), any::<bool>()).prop_map(|(p, d, e)| TestOp::Create(p, d, e)),
        1 => (path.clone(), any::<bool>()).prop_map(|(p, e)| TestOp::CreateSequential(p, e)),
        3 => (path.clone(), any::<u8>()).prop_map(|(p, d)| TestOp::Set(p, d)),
        2 => path.clone().prop_map(TestOp::Delete),
        1 => (path.clone(), path, any::<u8>()).prop_map(|(a, b, d)| TestOp::Multi(a, b, d)),
        1 => Just(TestOp::Reopen),
    ]
}

fn apply_test_op(store: &LocalStore, op: &TestOp) {
    let data = |d: u8| vec![d; usize::from(d % 5)];
    let mode = |ephemeral: bool| {
        if ephemeral {
            CreateMode::Ephemeral
        } else {
            CreateMode::Persistent
        }
    };
    // Errors (missing parents, versions, ...) are part of the test: ignore them.
    let _ = match op {
        TestOp::Create(p, d, e) => store
            .create(TEST_PATHS[*p], &data(*d), mode(*e))
            .map(|_| ()),
        TestOp::CreateSequential(p, e) => {
            let seq_mode = if *e {
                CreateMode::EphemeralSequential
            } else {
                CreateMode::PersistentSequential
            };
            store
                .create(&format!("{}/s-", TEST_PATHS[*p]), b"s", seq_mode)
                .map(|_| ())
        }
        TestOp::Set(p, d) => store.set(TEST_PATHS[*p], &data(*d), None).map(|_| ()),
        TestOp::Delete(p) => store.delete(TEST_PATHS[*p], None),
        TestOp::Multi(a, b, d) => store
            .multi(&[
                Op::SetData {
                    path: TEST_PATHS[*a].into(),
                    data: data(*d),
                    version: None,
                },
                Op::Create {
                    path: TEST_PATHS[*b].into(),
                    data: data(*d),
                    mode: CreateMode::Persistent,
                },
            ])
            .map(|_| ()),
        TestOp::Reopen => unreachable!("handled by the caller"),
    };
}

/// What must survive a restart exactly. cversion too when no ephemeral was ever created
/// (ephemeral creates and deletes bump it without being journaled).
fn comparable(
    store: &LocalStore,
    with_cversion: bool,
) -> std::collections::BTreeMap<String, (Vec<u8>, Stat)> {
    let mut view = store.persistent_view();
    if !with_cversion {
        for (_, stat) in view.values_mut() {
            stat.cversion = 0;
        }
    }
    view
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn reopening_from_the_journal_yields_the_same_persistent_tree(
        ops in proptest::collection::vec(test_op(), 1..40),
        compact_small in any::<bool>(),
    ) {
        let dir = TempDir::new("prop");
        let (clock, now) = fake_clock(1);
        let mut store = LocalStore::open_with_clock(dir.path(), clock.clone()).unwrap();
        let no_ephemerals = !ops.iter().any(|op| matches!(op,
            TestOp::Create(_, _, true) | TestOp::CreateSequential(_, true)));
        for op in &ops {
            if compact_small {
                store.set_compact_bytes_min(300);
            }
            now.fetch_add(1, Ordering::SeqCst);
            if let TestOp::Reopen = op {
                let before = comparable(&store, no_ephemerals);
                drop(store);
                store = LocalStore::open_with_clock(dir.path(), clock.clone()).unwrap();
                prop_assert_eq!(comparable(&store, no_ephemerals), before);
            } else {
                apply_test_op(&store, op);
            }
        }
        let before = comparable(&store, no_ephemerals);
        drop(store);
        let store = LocalStore::open_with_clock(dir.path(), clock).unwrap();
        prop_assert_eq!(comparable(&store, no_ephemerals), before);
    }
}

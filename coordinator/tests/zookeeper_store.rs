//! `ZkStore` against a real ZooKeeper (Debian's zookeeper 3.8 on Java, started here on a
//! free loopback port and stopped by PID): the same semantics the embedded store has —
//! versions, sequential and ephemeral nodes, atomic multi-ops, one-shot watches — plus a
//! chroot, and session expiry reported to subscribers with the session's ephemerals gone.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;
use kbroker_coordinator::{
    CreateMode, MetadataStore, Op, StoreError, WatchEvent, ZkConfig, ZkStore,
};

struct ZooKeeper {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn zookeeper_jar() -> String {
    std::env::var("KBROKER_ZOOKEEPER_CLASSPATH")
        .unwrap_or_else(|_| "/usr/share/java/zookeeper.jar".to_string())
}

fn start_zookeeper(name: &str) -> ZooKeeper {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = std::env::temp_dir().join(format!("kb-zk-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let child = run_zookeeper(&dir, port);
    ZooKeeper { child, port, dir }
}

impl ZooKeeper {
    /// Stops the server and starts a fresh one (no data) on the same port: every session
    /// of the old one is unknown to it, so reconnecting clients learn their session expired.
    fn replace_with_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        self.child = run_zookeeper(&self.dir, self.port);
    }
}

fn run_zookeeper(dir: &std::path::Path, port: u16) -> Child {
    std::fs::create_dir_all(dir.join("data")).expect("zk dir");
    std::fs::write(
        dir.join("zoo.cfg"),
        format!(
            "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n4lw.commands.whitelist=srvr,ruok,mntr\n\
             minSessionTimeout=1000\nmaxSessionTimeout=60000\n",
            dir.join("data").display()
        ),
    )
    .expect("zoo.cfg");
    let child = Command::new("java")
        .args([
            "-cp",
            &zookeeper_jar(),
            "org.apache.zookeeper.server.ZooKeeperServerMain",
        ])
        .arg(dir.join("zoo.cfg"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "start ZooKeeper (java and /usr/share/java/zookeeper.jar; scripts/test installs them)",
        );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            // A server still starting may accept and not answer: never wait on it for ever.
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(b"srvr");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.contains("Mode:") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "ZooKeeper did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

fn store(zk: &ZooKeeper, chroot: &str) -> ZkStore {
    ZkStore::connect(ZkConfig {
        connect: format!("127.0.0.1:{}{chroot}", zk.port),
        session_timeout: Duration::from_millis(4000),
        connection_timeout: Duration::from_secs(10),
    })
    .expect("connect")
}

#[test]
fn zookeeper_semantics_through_the_store() {
    let zk = start_zookeeper("semantics");
    let s = store(&zk, "/kafka/test");
    s.create("/brokers", b"", CreateMode::Persistent)
        .expect("create");
    assert!(matches!(
        s.create("/brokers", b"", CreateMode::Persistent),
        Err(StoreError::NodeExists(_))
    ));
    assert!(matches!(
        s.create("/a/b", b"", CreateMode::Persistent),
        Err(StoreError::NoNode(_))
    ));
    let st = s.set("/brokers", b"v1", Some(0)).expect("set v0");
    assert_eq!(st.version, 1);
    assert!(matches!(
        s.set("/brokers", b"v2", Some(0)),
        Err(StoreError::BadVersion { .. })
    ));
    assert_eq!(s.get("/brokers").expect("get").0, b"v1");
    // sequential names carry ZooKeeper's 10-digit suffix
    let seq = s
        .create("/brokers/n-", b"", CreateMode::PersistentSequential)
        .expect("sequential");
    assert!(
        seq.starts_with("/brokers/n-") && seq.len() == "/brokers/n-".len() + 10,
        "{seq}"
    );
    // multi: all or nothing
    let failed = s.multi(&[
        Op::Create {
            path: "/brokers/x".into(),
            data: b"x".to_vec(),
            mode: CreateMode::Persistent,
        },
        Op::Check {
            path: "/brokers".into(),
            version: 99,
        },
    ]);
    assert!(
        matches!(failed, Err(StoreError::BadVersion { .. })),
        "{failed:?}"
    );
    assert!(
        s.exists("/brokers/x").expect("exists").is_none(),
        "nothing applied"
    );
    s.multi(&[
        Op::Create {
            path: "/brokers/x".into(),
            data: b"x".to_vec(),
            mode: CreateMode::Persistent,
        },
        Op::Check {
            path: "/brokers".into(),
            version: 1,
        },
    ])
    .expect("multi");
    assert_eq!(s.children("/brokers").expect("children").len(), 2);
    // the chroot exists in the real tree
    let root = store(&zk, "");
    assert!(root
        .exists("/kafka/test/brokers/x")
        .expect("exists")
        .is_some());
    // watches: data change, child change, deletion
    let (tx, rx) = unbounded();
    s.watch_data("/brokers/x", tx.clone()).expect("watch");
    s.watch_children("/brokers", tx.clone())
        .expect("watch children");
    root.set("/kafka/test/brokers/x", b"y", None).expect("set");
    let ev = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("data event");
    assert_eq!(ev, WatchEvent::NodeDataChanged("/brokers/x".into()));
    s.create("/brokers/y", b"", CreateMode::Persistent)
        .expect("create");
    let ev = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("children event");
    assert_eq!(ev, WatchEvent::NodeChildrenChanged("/brokers".into()));
    assert!(s
        .watch_data("/nothing", tx)
        .expect("watch absent")
        .is_none());
    assert!(matches!(
        s.delete("/brokers", None),
        Err(StoreError::NotEmpty(_))
    ));
}

#[test]
fn ephemerals_belong_to_the_session_and_expiry_is_reported() {
    let mut zk = start_zookeeper("session");
    let s = store(&zk, "");
    let observer = store(&zk, "");
    s.create("/owned", b"", CreateMode::Ephemeral)
        .expect("ephemeral");
    let owner = observer
        .exists("/owned")
        .expect("exists")
        .expect("present")
        .ephemeral_owner;
    assert_eq!(owner, s.session_id());
    assert!(matches!(
        s.create("/owned/child", b"", CreateMode::Persistent),
        Err(StoreError::NoChildrenForEphemerals(_))
    ));
    let (tx, rx) = unbounded();
    s.subscribe_session(tx);
    // The ensemble forgets the session (a fresh server on the same port).
    zk.replace_with_empty();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen.contains(&WatchEvent::SessionExpired) {
        assert!(Instant::now() < deadline, "expiry reported; saw {seen:?}");
        if let Ok(ev) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(ev);
        }
    }
    assert!(seen.contains(&WatchEvent::Disconnected), "{seen:?}");
    assert!(matches!(
        s.create("/after", b"", CreateMode::Persistent),
        Err(StoreError::SessionExpired | StoreError::ConnectionLoss(_))
    ));
    s.renew_session().expect("renew");
    assert!(
        s.exists("/owned").expect("exists").is_none(),
        "its ephemeral is gone"
    );
    s.create("/owned", b"", CreateMode::Ephemeral)
        .expect("ephemeral again");
}

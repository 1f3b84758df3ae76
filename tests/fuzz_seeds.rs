//! Writes seed corpora for the fuzz targets (run by `scripts/fuzz`, ignored otherwise):
//! valid inputs of every kind, so the fuzzers start from what real peers and real disks
//! hold. `KBROKER_FUZZ_CORPUS=<dir>` names the corpus root (`<dir>/<target>/seed-*`).

mod support;

use std::path::{Path, PathBuf};

use kbroker::handler::SUPPORTED_APIS;
use kbroker_storage::batch::{self, NewRecord};
use kbroker_storage::compression;
use kbroker_storage::{Log, LogConfig};

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed");
}

fn records(n: usize) -> Vec<NewRecord> {
    (0..n)
        .map(|i| NewRecord {
            key: (i % 3 != 0).then(|| format!("key-{i}").into_bytes()),
            value: Some(format!("value-{i}").repeat(1 + i % 4).into_bytes()),
            headers: vec![("h".into(), Some(b"v".to_vec()))],
            timestamp: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

#[test]
#[ignore = "writes seed corpora for scripts/fuzz"]
fn write_seed_corpora() {
    let Some(root) = std::env::var_os("KBROKER_FUZZ_CORPUS").map(PathBuf::from) else {
        panic!("set KBROKER_FUZZ_CORPUS");
    };
    // request: every advertised API and version, defaults and populated
    for &(api, min, max) in SUPPORTED_APIS {
        for version in min..=max {
            for (i, body) in support::requests::samples(api, version).iter().enumerate() {
                let frame = support::requests::frame(api, version, 1, body);
                write(
                    &root,
                    "request",
                    &format!("{api:?}-v{version}-{i}"),
                    &frame[4..],
                );
            }
        }
    }
    // frame: size-prefixed frames back to back, behind 8 bytes of read sizes
    let mut stream = vec![3u8, 200, 1, 7, 255, 16, 2, 90];
    for &(api, min, _) in SUPPORTED_APIS.iter().take(6) {
        for body in support::requests::samples(api, min) {
            stream.extend(support::requests::frame(api, min, 2, &body));
        }
    }
    write(&root, "frame", "pipelined", &stream);
    // record_batch: one batch of every codec, and several batches (internal form)
    let plain = batch::build_batch(0, &records(12));
    for codec in [
        0,
        compression::GZIP,
        compression::SNAPPY,
        compression::LZ4,
        compression::ZSTD,
    ] {
        let b = if codec == 0 {
            plain.clone()
        } else {
            batch::compress_batch(&plain, codec).expect("compress")
        };
        let mut seed = vec![0u8];
        seed.extend_from_slice(&b);
        write(&root, "record_batch", &format!("codec-{codec}"), &seed);
    }
    let mut two = vec![2u8];
    two.extend_from_slice(&plain);
    two.extend_from_slice(&batch::build_batch(0, &records(3)));
    write(&root, "record_batch", "two-batches", &two);
    // segment_recovery: a real segment with its indexes
    let dir = std::env::temp_dir().join(format!("kb-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let log_dir = dir.join("t-0");
    let config = LogConfig {
        segment_bytes: 64 * 1024,
        segment_index_bytes: 1024,
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let mut log = Log::open(&log_dir, "t", 0, config, 0, 0, true, 0).expect("log");
    for i in 0..20 {
        log.append_internal(&batch::build_batch(0, &records(1 + i % 5)), 0, 0)
            .expect("append");
    }
    log.close().expect("close");
    let part =
        |ext: &str| std::fs::read(log_dir.join(format!("{:020}.{ext}", 0))).unwrap_or_default();
    let (l, x, t) = (part("log"), part("index"), part("timeindex"));
    let mut seed = Vec::new();
    for n in [l.len(), x.len(), t.len()] {
        seed.extend_from_slice(&(n.min(u16::MAX as usize) as u16).to_le_bytes());
    }
    seed.extend_from_slice(&l);
    seed.extend_from_slice(&x);
    seed.extend_from_slice(&t);
    write(&root, "segment_recovery", "segment", &seed);
    let _ = std::fs::remove_dir_all(&dir);
    // journal: a real journal with nodes and a multi
    let jdir = std::env::temp_dir().join(format!("kb-seeds-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&jdir);
    {
        use kbroker_coordinator::{CreateMode, MetadataStore};
        let store = kbroker_coordinator::LocalStore::open(&jdir).expect("store");
        store
            .create("/brokers", b"", CreateMode::Persistent)
            .expect("create");
        store
            .create("/brokers/topics", b"{}", CreateMode::Persistent)
            .expect("create");
        store
            .set("/brokers/topics", b"{\"v\":1}", None)
            .expect("set");
        store
            .create("/tmp", b"x", CreateMode::Ephemeral)
            .expect("create");
    }
    let journal = std::fs::read(jdir.join("metadata.journal")).expect("journal");
    write(&root, "journal", "journal", &journal);
    let _ = std::fs::remove_dir_all(&jdir);
    // checkpoint: an offset checkpoint and a leader-epoch checkpoint
    write(
        &root,
        "checkpoint",
        "offsets",
        b"0\n3\norders 0 1234\norders 1 99\nb-c 7 0\n",
    );
    write(&root, "checkpoint", "epochs", b"0\n2\n0 0\n3 120\n");
    // producer_snapshot: mode byte 1 (fix the CRC), then a snapshot of two producers
    let mut snap = Vec::new();
    snap.extend_from_slice(&1i16.to_be_bytes());
    snap.extend_from_slice(&[0u8; 4]);
    snap.extend_from_slice(&2i32.to_be_bytes());
    for pid in [1000i64, 1001] {
        snap.extend_from_slice(&pid.to_be_bytes());
        snap.extend_from_slice(&0i16.to_be_bytes()); // epoch
        snap.extend_from_slice(&9i32.to_be_bytes()); // last sequence
        snap.extend_from_slice(&(pid - 990).to_be_bytes()); // last offset
        snap.extend_from_slice(&9i32.to_be_bytes()); // offset delta
        snap.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        snap.extend_from_slice(&(-1i32).to_be_bytes()); // coordinator epoch
        snap.extend_from_slice(&(-1i64).to_be_bytes()); // no transaction
    }
    let crc = crc32c::crc32c(&snap[6..]);
    snap[2..6].copy_from_slice(&crc.to_be_bytes());
    write(
        &root,
        "producer_snapshot",
        "two",
        &[&[1u8][..], &snap].concat(),
    );
    let empty = kbroker_storage::producer_state::ProducerStateManager::new(0).encode_snapshot();
    write(
        &root,
        "producer_snapshot",
        "empty",
        &[&[0u8][..], &empty].concat(),
    );
    // znode: one valid input per decoder (the first byte picks it)
    use kbroker_coordinator::layout::*;
    use kbroker_coordinator::offsets::{GroupValue, OffsetValue, OffsetsKey};
    let registration = BrokerRegistration {
        id: 7,
        endpoints: vec![Endpoint {
            listener_name: "PLAINTEXT".into(),
            security_protocol: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 9092,
        }],
        rack: Some("r1".into()),
        timestamp_ms: 1_700_000_000_000,
    };
    let mut assignment = TopicAssignment::default();
    assignment.partitions.insert(0, vec![1, 2]);
    assignment.partitions.insert(1, vec![2, 3]);
    let mut config = EntityConfig::default();
    config.config.insert("retention.ms".into(), "1000".into());
    let znodes: Vec<(u8, Vec<u8>)> = vec![
        (
            0,
            br#"{"version":"1","id":"dXmdueehzqA5XyVj1rrmFQ"}"#.to_vec(),
        ),
        (1, registration.to_json()),
        (
            2,
            br#"{"version":1,"brokerid":2,"timestamp":"1700000000000"}"#.to_vec(),
        ),
        (3, b"17".to_vec()),
        (4, assignment.to_json()),
        (
            5,
            br#"{"controller_epoch":3,"leader":1,"version":1,"leader_epoch":4,"isr":[1,2]}"#
                .to_vec(),
        ),
        (6, config.to_json()),
        (7, b"42".to_vec()),
        (
            8,
            br#"{"version":1,"broker":1,"block_start":"0","block_end":"999"}"#.to_vec(),
        ),
        (
            9,
            br#"{"version":1,"partitions":[{"topic":"t","partition":0}]}"#.to_vec(),
        ),
        (
            10,
            br#"{"version":1,"partitions":[{"topic":"t","partition":3}]}"#.to_vec(),
        ),
        (
            11,
            OffsetsKey::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 1,
            }
            .encode(),
        ),
        (
            12,
            OffsetValue {
                offset: 5,
                leader_epoch: 2,
                metadata: "m".into(),
                commit_timestamp_ms: 1_700_000_000_000,
            }
            .encode(),
        ),
        (
            13,
            GroupValue {
                protocol_type: "consumer".into(),
                generation_id: 3,
                protocol: Some("range".into()),
                leader: Some("m-1".into()),
                state_timestamp_ms: 1_700_000_000_000,
                members: vec![kbroker_coordinator::offsets::MemberValue {
                    member_id: "m-1".into(),
                    group_instance_id: Some("i-1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                    subscription: vec![0, 1, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0],
                    assignment: vec![0, 1, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 0],
                }],
            }
            .encode(),
        ),
        (14, vec![0, 1, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0]),
        (
            15,
            vec![
                0, 1, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ),
        (
            16,
            br#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[2,3]}]}"#
                .to_vec(),
        ),
    ];
    for (which, bytes) in znodes {
        write(
            &root,
            "znode",
            &format!("kind-{which}"),
            &[&[which][..], &bytes].concat(),
        );
    }
}

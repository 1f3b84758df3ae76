//! Logs under settings and states that used to panic or lose data: tiny and full indexes,
//! recovery of segments whose index filled up, an interrupted cleaner swap.

use std::path::{Path, PathBuf};

use kbroker_storage::batch::{self, NewRecord};
use kbroker_storage::{Log, LogConfig};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kb-faults-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d.join("t-0")
}

fn open(path: &Path, config: LogConfig, clean: bool) -> Log {
    Log::open(path, "t", 0, config, 0, 0, clean, 0).expect("open")
}

fn one_record_batch(i: u64) -> Vec<u8> {
    batch::build_batch(
        0,
        &[NewRecord {
            key: Some(format!("k{}", i % 7).into_bytes()),
            value: Some(i.to_be_bytes().to_vec()),
            headers: vec![],
            timestamp: 1_000 + i as i64,
        }],
    )
}

/// Every record's value in offset order.
fn values(log: &Log) -> Vec<u64> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log
            .read(offset, log.log_end_offset(), 1 << 20, true)
            .expect("read");
        let Some(region) = read.region else { break };
        let bytes = log.read_region_bytes(&region).expect("bytes");
        for (pos, h) in batch::BatchIter::new(&bytes, true) {
            for r in batch::uncompressed_records(&bytes[pos..pos + h.total_size()]).expect("decode")
            {
                let mut v = [0u8; 8];
                v.copy_from_slice(r.value.expect("value"));
                out.push(u64::from_be_bytes(v));
            }
            offset = h.next_offset();
        }
    }
    out
}

#[test]
fn a_thousand_batches_in_one_append_on_a_tiny_index() {
    let path = dir("tiny-index");
    let config = LogConfig {
        segment_index_bytes: 4096,
        index_interval_bytes: 0,
        ..LogConfig::default()
    };
    let mut log = open(&path, config.clone(), true);
    let mut bytes = Vec::new();
    for i in 0..1000 {
        bytes.extend_from_slice(&one_record_batch(i));
    }
    log.append_internal(&bytes, 0, 0)
        .expect("one append of 1000 batches");
    // The next append rolls: the index (512 entries) is full.
    log.append_internal(&one_record_batch(1000), 0, 0)
        .expect("append");
    assert_eq!(log.segment_count(), 2);
    assert_eq!(values(&log), (0..=1000).collect::<Vec<_>>());
    drop(log);
    for clean in [false, true] {
        let log = open(&path, config.clone(), clean);
        assert_eq!(
            values(&log),
            (0..=1000).collect::<Vec<_>>(),
            "reopened clean={clean}"
        );
        assert_eq!(log.log_end_offset(), 1001);
    }
}

#[test]
fn an_index_that_holds_no_entry_still_works() {
    // segment.index.bytes=4 is valid for Kafka: the index is always full, every append rolls.
    let path = dir("zero-index");
    let config = LogConfig {
        segment_index_bytes: 4,
        ..LogConfig::default()
    };
    let mut log = open(&path, config.clone(), true);
    for i in 0..5 {
        log.append_internal(&one_record_batch(i), 0, 0)
            .expect("append");
    }
    assert_eq!(log.segment_count(), 5);
    assert_eq!(values(&log), vec![0, 1, 2, 3, 4]);
    drop(log);
    let log = open(&path, config, false);
    assert_eq!(values(&log), vec![0, 1, 2, 3, 4]);
}

#[test]
fn recovery_with_a_smaller_index_keeps_every_segment() {
    // Segments written with a big index, recovered with a small one: a full index is not
    // corruption, nothing is truncated and no later segment is deleted.
    let path = dir("full-index-recovery");
    let big = LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 0,
        ..LogConfig::default()
    };
    let mut log = open(&path, big.clone(), true);
    for i in 0..3000 {
        log.append_internal(&one_record_batch(i), 0, 0)
            .expect("append");
    }
    let segments = log.segment_count();
    assert!(segments >= 3, "several segments ({segments})");
    drop(log); // no clean close: the next open recovers every segment
    let small = LogConfig {
        segment_index_bytes: 64,
        ..big
    };
    let log = Log::open(&path, "t", 0, small, 0, 0, false, 0).expect("recover");
    assert_eq!(log.segment_count(), segments);
    assert_eq!(values(&log), (0..3000).collect::<Vec<_>>());
}

#[test]
fn an_interrupted_cleaner_swap_is_finished_at_open() {
    // A crash after `<base>.log.swap` was written and the old indexes deleted: the swap is
    // promoted and the indexes rebuilt (not trusted empty, which would break retention).
    let path = dir("swap");
    let config = LogConfig {
        segment_bytes: 4096,
        retention_ms: 10_000,
        ..LogConfig::default()
    };
    let mut log = open(&path, config.clone(), true);
    for i in 0..200 {
        log.append_internal(&one_record_batch(i), 0, 0)
            .expect("append");
    }
    log.close().expect("close");
    drop(log);
    let first = path.join(format!("{:020}.log", 0));
    let original = std::fs::read(&first).expect("first segment");
    // The "cleaned" copy: the same batches (a real cleaner would drop some).
    std::fs::write(first.with_extension("log.swap"), &original).expect("swap");
    std::fs::remove_file(first.with_extension("index")).expect("index");
    std::fs::remove_file(first.with_extension("timeindex")).expect("timeindex");
    std::fs::write(first.with_extension("log.cleaned"), b"partial").expect("cleaned");
    let mut log = open(&path, config, true);
    assert!(!first.with_extension("log.swap").exists());
    assert!(!first.with_extension("log.cleaned").exists());
    assert_eq!(values(&log), (0..200).collect::<Vec<_>>());
    // Timestamps are 1000..1199; at 10,500 nothing is past retention.ms=10,000 — unless the
    // promoted segment's time index had been trusted empty (max timestamp -1).
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    assert_eq!(log.delete_expired_segments(10_500).expect("retention"), 0);
    assert_eq!(values(&log), (0..200).collect::<Vec<_>>());
}

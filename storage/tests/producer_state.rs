//! Idempotent producer state kept by the log: duplicates answered with their original
//! offsets and not appended again, sequence and epoch errors, and the state surviving a clean
//! reopen (snapshot), an unclean one (rebuilt from the log), truncation and retention.

use std::path::{Path, PathBuf};

use kbroker_storage::batch::{self, NewRecord};
use kbroker_storage::producer_state::ProducerStateError;
use kbroker_storage::{Log, LogConfig, StorageError};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kb-pstate-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d.join("t-0")
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        ..LogConfig::default()
    }
}

fn open(path: &Path, clean: bool, now: i64) -> Log {
    Log::open(path, "t", 0, config(), 0, 0, clean, now).expect("open")
}

/// A batch of `n` records from producer `pid` at `epoch`, starting at sequence `seq`.
fn idempotent(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
    let records: Vec<NewRecord> = (0..n)
        .map(|i| NewRecord {
            key: None,
            value: Some(
                format!("p{pid}-e{epoch}-s{}", seq as usize + i)
                    .into_bytes()
                    .repeat(8),
            ),
            headers: vec![],
            timestamp: 1_000_000,
        })
        .collect();
    let mut b = batch::build_batch(0, &records);
    batch::set_producer(&mut b, pid, epoch, seq);
    b
}

fn append(log: &mut Log, b: &[u8]) -> Result<(i64, bool), StorageError> {
    log.append_internal(b, 0, 1_000_000)
        .map(|i| (i.first_offset, i.duplicate))
}

#[test]
fn duplicates_and_errors_and_every_kind_of_reopen() {
    let path = dir("reopen");
    let mut log = open(&path, true, 1_000_000);
    let mut bases = Vec::new();
    for i in 0..30 {
        let (base, dup) = append(&mut log, &idempotent(7, 0, i * 2, 2)).expect("append");
        assert!(!dup);
        bases.push(base);
    }
    assert!(log.segment_count() > 3, "rolled several times");
    let end = log.log_end_offset();
    // a retry of the last batch: same offsets, nothing appended
    assert_eq!(
        append(&mut log, &idempotent(7, 0, 58, 2)).expect("dup"),
        (bases[29], true)
    );
    assert_eq!(log.log_end_offset(), end);
    // one of the five remembered batches
    assert_eq!(
        append(&mut log, &idempotent(7, 0, 50, 2)).expect("dup"),
        (bases[25], true)
    );
    // a gap, an old epoch
    assert!(matches!(
        append(&mut log, &idempotent(7, 0, 61, 1)),
        Err(StorageError::Producer(
            ProducerStateError::OutOfOrderSequence { .. }
        ))
    ));
    assert!(matches!(
        append(&mut log, &idempotent(7, -1, 60, 1)),
        Err(StorageError::Producer(
            ProducerStateError::InvalidProducerEpoch { .. }
        ))
    ));
    assert_eq!(
        log.log_end_offset(),
        end,
        "refused batches are not appended"
    );
    let snapshots = std::fs::read_dir(&path)
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".snapshot"))
        })
        .count();
    assert!(snapshots >= 3, "a snapshot at each roll ({snapshots})");

    // clean close: the snapshot at the log end restores the last batch of each producer
    log.close().expect("close");
    drop(log);
    let mut log = open(&path, true, 1_000_000);
    assert_eq!(
        append(&mut log, &idempotent(7, 0, 58, 2)).expect("dup"),
        (bases[29], true)
    );
    assert!(!append(&mut log, &idempotent(7, 0, 60, 2)).expect("next").1);
    bases.push(end);

    // unclean: no snapshot at the end; the newest snapshot (the clean close's, which keeps
    // each producer's last batch, as Kafka's format does) plus the log after it
    drop(log);
    let mut log = open(&path, false, 1_000_000);
    for (i, seq) in [(30usize, 60), (29, 58)] {
        assert_eq!(
            append(&mut log, &idempotent(7, 0, seq, 2)).expect("dup"),
            (bases[i], true),
            "batch seq {seq} recognised after the crash"
        );
    }
    assert_eq!(log.producer(7).expect("entry").last_seq(), 61);
}

#[test]
fn after_a_crash_the_last_five_batches_are_rebuilt_from_the_log() {
    let path = dir("crash");
    let big = LogConfig::default();
    let mut log = Log::open(&path, "t", 0, big.clone(), 0, 0, true, 0).expect("open");
    let mut bases = Vec::new();
    for i in 0..12 {
        bases.push(
            append(&mut log, &idempotent(5, 2, i * 3, 3))
                .expect("append")
                .0,
        );
    }
    drop(log); // kill -9: no close, no snapshot
    let mut log = Log::open(&path, "t", 0, big, 0, 0, false, 0).expect("recover");
    for (i, base) in bases.iter().enumerate().skip(7) {
        assert_eq!(
            append(&mut log, &idempotent(5, 2, i as i32 * 3, 3)).expect("dup"),
            (*base, true),
            "retry of batch {i} recognised after the crash"
        );
    }
    assert!(
        append(&mut log, &idempotent(5, 2, 6 * 3, 3)).is_err(),
        "older than five: refused"
    );
}

#[test]
fn truncation_rewinds_the_state_and_retention_keeps_it() {
    let path = dir("truncate");
    let mut log = open(&path, true, 1_000_000);
    for i in 0..20 {
        append(&mut log, &idempotent(3, 0, i, 1)).expect("append");
    }
    log.truncate_to(10).expect("truncate");
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(log.producer(3).expect("entry").last_seq(), 9);
    assert_eq!(
        append(&mut log, &idempotent(3, 0, 10, 1)).expect("next"),
        (10, false)
    );
    // retention deletes old segments (and their snapshots), the producer stays known
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    log.advance_log_start_offset(end).expect("delete records");
    assert!(
        log.producer(3).is_some(),
        "state outlives the records (Kafka 2.8+)"
    );
    for e in std::fs::read_dir(&path).expect("dir").flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(stem) = name.strip_suffix(".snapshot") {
            let offset: i64 = stem.parse().expect("offset");
            assert!(
                log.segment_bases().contains(&offset) || offset == log.log_end_offset(),
                "snapshot {offset} belongs to a live segment"
            );
        }
    }
}

#[test]
fn idle_producers_expire() {
    let path = dir("expire");
    let mut log = open(&path, true, 1_000_000);
    append(&mut log, &idempotent(1, 0, 0, 1)).expect("append");
    assert_eq!(log.remove_expired_producers(1_000_000 + 1_000), 0);
    assert_eq!(log.remove_expired_producers(1_000_000 + 86_400_000), 1);
    // an unknown producer is accepted at any sequence, as Kafka does
    assert!(
        !append(&mut log, &idempotent(1, 0, 77, 1))
            .expect("unknown")
            .1
    );
    // expired at load too
    log.close().expect("close");
    drop(log);
    let log = open(&path, true, 1_000_000 + 2 * 86_400_000);
    assert!(log.producer(1).is_none());
}

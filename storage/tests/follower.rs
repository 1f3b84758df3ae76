//! A follower's log: batches copied from a leader keep their offsets, epochs and bytes
//! (segments roll where they must, compacted gaps included); the leader-epoch cache answers
//! OffsetForLeaderEpoch as Kafka's does; truncation to a shared point and full truncation
//! leave a log that appends and reopens consistently.

use std::path::{Path, PathBuf};

use kbroker_storage::batch::{self, NewRecord};
use kbroker_storage::validate::validate_replica_records;
use kbroker_storage::{Log, LogConfig};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kb-follower-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d.join("t-0")
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    }
}

fn open(path: &Path) -> Log {
    Log::open(path, "t", 0, config(), 0, 0, true, 1_000_000).expect("open")
}

fn batch_of(n: usize, tag: &str) -> Vec<u8> {
    let records: Vec<NewRecord> = (0..n)
        .map(|i| NewRecord {
            key: Some(format!("k{i}").into_bytes()),
            value: Some(format!("{tag}-{i}").repeat(10).into_bytes()),
            headers: vec![],
            timestamp: 1_000_000 + i as i64,
        })
        .collect();
    batch::build_batch(0, &records)
}

/// Every byte of `log` from `from` to its end, as whole batches.
fn all_bytes(log: &Log, from: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < log.log_end_offset() {
        let read = log
            .read(offset, log.log_end_offset(), 1 << 20, true)
            .expect("read");
        let Some(region) = read.region else { break };
        let bytes = log.read_region_bytes(&region).expect("bytes");
        let next = batch::BatchIter::new(&bytes, true)
            .last()
            .map(|(_, h)| h.next_offset())
            .expect("a batch");
        out.extend_from_slice(&bytes);
        offset = next;
    }
    out
}

/// Copies everything `leader` has beyond `follower`'s end, fetch-sized (`chunk` bytes).
fn replicate(leader: &Log, follower: &mut Log, chunk: usize) {
    loop {
        let from = follower.log_end_offset();
        if from >= leader.log_end_offset() {
            return;
        }
        let read = leader
            .read(from, leader.log_end_offset(), chunk, true)
            .expect("read");
        let region = read.region.expect("data below the leader's end");
        let bytes = leader.read_region_bytes(&region).expect("bytes");
        let records = validate_replica_records(&bytes)
            .expect("valid")
            .expect("a whole batch");
        follower
            .append_as_follower(&records, 1_000_000)
            .expect("append");
    }
}

#[test]
fn a_follower_holds_the_leaders_bytes_and_epochs() {
    let mut leader = open(&dir("leader"));
    for epoch in [0, 0, 1, 1, 1, 3] {
        for i in 0..5 {
            leader
                .append_internal(&batch_of(3 + i, &format!("e{epoch}")), epoch, 1_000_000)
                .expect("leader append");
        }
    }
    assert!(leader.segment_count() > 2, "the leader rolled");
    let fpath = dir("follower");
    let mut follower = open(&fpath);
    replicate(&leader, &mut follower, 700);
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(all_bytes(&follower, 0), all_bytes(&leader, 0), "same bytes");
    for epoch in 0..5 {
        assert_eq!(
            follower.end_offset_for_epoch(epoch),
            leader.end_offset_for_epoch(epoch),
            "epoch {epoch}"
        );
    }
    // Kafka's answers: the latest epoch ends at the log end; an older one where the next
    // begins; a missing one between two answers with the floor epoch; a later one is unknown.
    let end = leader.log_end_offset();
    assert_eq!(leader.end_offset_for_epoch(3).0, 3);
    assert_eq!(leader.end_offset_for_epoch(3).1, end);
    let (e, start_of_3) = leader.end_offset_for_epoch(2);
    assert_eq!(e, 1);
    assert_eq!(leader.end_offset_for_epoch(1), (1, start_of_3));
    assert_eq!(leader.end_offset_for_epoch(4), (-1, -1));
    drop(follower);
    let follower = open(&fpath);
    assert_eq!(follower.log_end_offset(), end, "reopened");
    assert_eq!(follower.latest_epoch(), Some(3));
}

#[test]
fn divergent_suffix_truncated_then_replaced_by_the_new_leaders() {
    // Both hold epoch 0; the old leader wrote more in epoch 0 that no one copied, then a
    // new leader (epoch 1) appended its own records from the shared point.
    let mut old = open(&dir("old"));
    for i in 0..4 {
        old.append_internal(&batch_of(2, &format!("shared{i}")), 0, 1_000_000)
            .expect("append");
    }
    let shared_end = old.log_end_offset();
    let mut new_leader = open(&dir("new"));
    replicate(&old, &mut new_leader, 1 << 20);
    for i in 0..3 {
        old.append_internal(&batch_of(2, &format!("lost{i}")), 0, 1_000_000)
            .expect("append");
    }
    new_leader.begin_leader_epoch(1).expect("epoch");
    for i in 0..3 {
        new_leader
            .append_internal(&batch_of(3, &format!("new{i}")), 1, 1_000_000)
            .expect("append");
    }
    // The old leader, now a follower, asks the new leader where its epoch 0 ends.
    let (epoch, end) = new_leader.end_offset_for_epoch(old.latest_epoch().expect("epoch"));
    assert_eq!((epoch, end), (0, shared_end));
    old.truncate_to(end.min(old.log_end_offset()))
        .expect("truncate");
    assert_eq!(old.log_end_offset(), shared_end);
    replicate(&new_leader, &mut old, 300);
    assert_eq!(all_bytes(&old, 0), all_bytes(&new_leader, 0));
    assert_eq!(old.end_offset_for_epoch(0), (0, shared_end));
}

#[test]
fn full_truncation_restarts_at_the_leaders_log_start() {
    let mut log = open(&dir("full"));
    for i in 0..6 {
        log.append_internal(&batch_of(4, &format!("x{i}")), 0, 1_000_000)
            .expect("append");
    }
    log.truncate_fully_and_start_at(1000)
        .expect("truncate fully");
    assert_eq!(log.log_start_offset(), 1000);
    assert_eq!(log.log_end_offset(), 1000);
    assert_eq!(log.latest_epoch(), None);
    // The leader's batches from 1000 on append after it.
    let mut b = batch_of(2, "from-leader");
    batch::patch_base_offset(&mut b, 1000);
    batch::patch_leader_epoch(&mut b, 4);
    let records = validate_replica_records(&b).expect("valid").expect("whole");
    log.append_as_follower(&records, 1_000_000).expect("append");
    assert_eq!(log.log_end_offset(), 1002);
    assert_eq!(log.end_offset_for_epoch(4), (4, 1002));
    // A batch below the end is refused; an incomplete tail is ignored.
    assert!(log.append_as_follower(&records, 1_000_000).is_err());
    let mut tail = batch_of(1, "tail");
    batch::patch_base_offset(&mut tail, 1002);
    let cut = &tail[..tail.len() - 3];
    assert!(validate_replica_records(cut).expect("no error").is_none());
    // A gap (a compacted leader) is kept as the leader has it.
    let mut gap = batch_of(1, "after-gap");
    batch::patch_base_offset(&mut gap, 5000);
    let records = validate_replica_records(&gap)
        .expect("valid")
        .expect("whole");
    log.append_as_follower(&records, 1_000_000).expect("append");
    assert_eq!(log.log_end_offset(), 5001);
    let read = log.read(5000, 5001, 1 << 20, true).expect("read");
    let bytes = log
        .read_region_bytes(&read.region.expect("data"))
        .expect("bytes");
    assert_eq!(bytes, gap);
}

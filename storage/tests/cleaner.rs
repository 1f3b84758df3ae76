//! When the cleaner compacts a log, and how much of it (Kafka's LogCleanerManager rules):
//! only once the dirty share of the cleanable bytes passes `min.cleanable.dirty.ratio`,
//! never past the high watermark, the active segment or a segment younger than
//! `min.compaction.lag.ms`, and whatever the ratio once a dirty record is older than
//! `max.compaction.lag.ms` (which also rolls the active segment of a compacted log).

mod common;

use std::path::PathBuf;

use kbroker_storage::batch::{self, NewRecord};
use kbroker_storage::{Log, LogConfig};

const NOW: i64 = 10_000_000;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kb-cleaner-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d.join("t-0")
}

fn open(name: &str, tune: impl FnOnce(&mut LogConfig)) -> Log {
    let mut config = LogConfig {
        cleanup_compact: true,
        cleanup_delete: false,
        ..LogConfig::default()
    };
    tune(&mut config);
    Log::open(&dir(name), "t", 0, config, 0, 0, true, NOW).expect("open")
}

/// Appends one batch of (key, value) records stamped `timestamp`, and commits it.
fn write(log: &mut Log, records: &[(&str, &str)], timestamp: i64) {
    let records: Vec<NewRecord> = records
        .iter()
        .map(|(k, v)| NewRecord {
            key: Some(k.as_bytes().to_vec()),
            value: Some(v.as_bytes().to_vec()),
            headers: vec![],
            timestamp,
        })
        .collect();
    log.append_internal(&batch::build_batch(0, &records), 0, timestamp)
        .expect("append");
    let end = log.log_end_offset();
    log.set_high_watermark(end);
}

/// Ten keys, one value each: `k0=<tag>` .. `k9=<tag>`, as a rolled segment.
fn segment_of_all_keys(log: &mut Log, tag: &str, timestamp: i64) {
    let values: Vec<String> = (0..10).map(|_| tag.to_string()).collect();
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    let records: Vec<(&str, &str)> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    write(log, &records, timestamp);
    log.roll().expect("roll");
}

/// Every record left: (offset, key, value).
fn records(log: &Log) -> Vec<(i64, String, String)> {
    let text = |b: Option<Vec<u8>>| String::from_utf8_lossy(&b.unwrap_or_default()).to_string();
    common::read_records(log, 1 << 20)
        .into_iter()
        .map(|(offset, k, v)| (offset, text(k), text(v)))
        .collect()
}

fn value_of(log: &Log, key: &str) -> Vec<String> {
    records(log)
        .into_iter()
        .filter(|(_, k, _)| k == key)
        .map(|(_, _, v)| v)
        .collect()
}

#[test]
fn the_dirty_ratio_decides_when_a_log_is_cleaned() {
    let mut log = open("ratio", |c| c.min_cleanable_ratio = 0.5);
    segment_of_all_keys(&mut log, "v1", NOW);
    segment_of_all_keys(&mut log, "v2", NOW);
    // Nothing cleaned yet: everything is dirty.
    let plan = log.cleanable(NOW);
    assert!(plan.due && plan.ratio == 1.0, "{plan:?}");
    assert!(log.clean(NOW).expect("clean") > 0);
    assert_eq!(value_of(&log, "k0"), vec!["v2"]);
    assert_eq!(records(&log).len(), 10);

    // One new record against ten clean ones: about 10 % dirty, below 0.5.
    write(&mut log, &[("k0", "v3")], NOW);
    log.roll().expect("roll");
    let plan = log.cleanable(NOW);
    assert!(
        !plan.due && plan.ratio > 0.0 && plan.ratio < 0.5,
        "{plan:?}"
    );
    assert_eq!(log.clean(NOW).expect("clean"), 0);
    assert_eq!(value_of(&log, "k0"), vec!["v2", "v3"], "left alone");

    // Twenty more: now mostly dirty, and the pass removes every superseded record.
    segment_of_all_keys(&mut log, "v4", NOW);
    segment_of_all_keys(&mut log, "v5", NOW);
    let plan = log.cleanable(NOW);
    assert!(plan.due && plan.ratio > 0.5, "{plan:?}");
    assert!(log.clean(NOW).expect("clean") > 0);
    assert_eq!(value_of(&log, "k0"), vec!["v5"]);
    assert_eq!(records(&log).len(), 10);
    assert!(!log.cleanable(NOW).due, "clean again");
}

#[test]
fn nothing_past_the_high_watermark_or_in_the_active_segment_is_cleaned() {
    let mut log = open("hw", |c| c.min_cleanable_ratio = 0.0);
    segment_of_all_keys(&mut log, "v1", NOW);
    segment_of_all_keys(&mut log, "v2", NOW);
    write(&mut log, &[("k0", "active")], NOW);
    // The second segment is not committed yet: only the first may be cleaned, against its
    // own keys (so nothing goes: v2 might still be truncated away).
    log.set_high_watermark(12);
    assert_eq!(log.clean(NOW).expect("clean"), 0);
    assert_eq!(value_of(&log, "k0"), vec!["v1", "v2", "active"]);
    // Committed: v1 goes; the active segment's record does not remove v2.
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    assert!(log.clean(NOW).expect("clean") > 0);
    assert_eq!(value_of(&log, "k0"), vec!["v2", "active"]);
}

#[test]
fn min_compaction_lag_keeps_young_segments_uncleaned() {
    let mut log = open("min-lag", |c| {
        c.min_cleanable_ratio = 0.0;
        c.min_compaction_lag_ms = 60_000;
    });
    write(&mut log, &[("k0", "old1"), ("k0", "old2")], NOW - 120_000);
    log.roll().expect("roll");
    write(&mut log, &[("k0", "young")], NOW - 1_000);
    log.roll().expect("roll");
    assert!(log.clean(NOW).expect("clean") > 0);
    assert_eq!(
        value_of(&log, "k0"),
        vec!["old2", "young"],
        "the old segment compacted against itself; the young one is untouched"
    );
    // A minute later the young segment may be cleaned too.
    assert!(log.clean(NOW + 60_000).expect("clean") > 0);
    assert_eq!(value_of(&log, "k0"), vec!["young"]);
}

#[test]
fn max_compaction_lag_forces_a_pass_and_rolls_the_active_segment() {
    // A ratio no log can pass: only the max lag makes the cleaner run.
    let mut log = open("max-lag", |c| {
        c.min_cleanable_ratio = 1.0;
        c.max_compaction_lag_ms = 60_000;
    });
    segment_of_all_keys(&mut log, "v1", NOW - 30_000);
    segment_of_all_keys(&mut log, "v2", NOW - 30_000);
    assert!(!log.cleanable(NOW).due, "30 s old, the lag is a minute");
    assert_eq!(log.clean(NOW).expect("clean"), 0);
    assert!(log.cleanable(NOW + 30_001).due);
    assert!(log.clean(NOW + 30_001).expect("clean") > 0);
    assert_eq!(value_of(&log, "k0"), vec!["v2"]);

    // The active segment of a compacted log rolls once the lag has passed since its first
    // append, though segment.ms is a week.
    let segments = log.segment_count();
    write(&mut log, &[("k1", "a")], NOW);
    write(&mut log, &[("k1", "b")], NOW + 1_000);
    assert_eq!(log.segment_count(), segments, "not yet");
    write(&mut log, &[("k1", "c")], NOW + 60_000);
    assert_eq!(
        log.segment_count(),
        segments + 1,
        "rolled by max.compaction.lag.ms"
    );
}

#[test]
fn a_truncated_log_counts_what_follows_as_dirty() {
    let mut log = open("truncate", |c| c.min_cleanable_ratio = 0.5);
    segment_of_all_keys(&mut log, "v1", NOW);
    segment_of_all_keys(&mut log, "v2", NOW);
    assert!(log.clean(NOW).expect("clean") > 0);
    let first_clean_end = log.cleanable(NOW).first_dirty;
    log.truncate_to(15).expect("truncate");
    let plan = log.cleanable(NOW);
    assert!(
        plan.first_dirty < first_clean_end,
        "{plan:?} vs {first_clean_end}"
    );
}

#[test]
fn a_compaction_runs_beside_appends_and_is_dropped_if_the_log_changed_under_it() {
    let mut log = open("beside", |c| c.min_cleanable_ratio = 0.0);
    segment_of_all_keys(&mut log, "v1", NOW);
    segment_of_all_keys(&mut log, "v2", NOW);
    // Planned, then appends (and a roll) while the job runs: installed all the same.
    let job = log.prepare_clean(NOW).expect("due");
    write(&mut log, &[("k0", "during")], NOW);
    log.roll().expect("roll");
    let outcome = job.run().expect("run");
    assert!(log.finish_clean(outcome).expect("finish") > 0);
    assert_eq!(value_of(&log, "k0"), vec!["v2", "during"]);
    assert_eq!(value_of(&log, "k5"), vec!["v2"]);

    // Planned, then a truncation into the planned range: nothing is installed, no
    // `.cleaned` file is left, and the next pass plans again.
    // (half the keys: the v2 segment keeps the other half, so it is rewritten, not removed)
    for k in ["k0", "k1", "k2", "k3", "k4"] {
        write(&mut log, &[(k, "v3")], NOW); // a batch each: truncation cuts between them
    }
    log.roll().expect("roll");
    let job = log.prepare_clean(NOW).expect("due");
    let outcome = job.run().expect("run");
    let cleaned = |log: &Log| {
        std::fs::read_dir(log.dir())
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".cleaned"))
            })
            .count()
    };
    assert!(cleaned(&log) > 0, "the job wrote its segments");
    let end = log.log_end_offset();
    log.truncate_to(end - 2).expect("truncate");
    assert_eq!(log.finish_clean(outcome).expect("finish"), 0);
    assert_eq!(cleaned(&log), 0, "discarded");
    assert_eq!(
        value_of(&log, "k0"),
        vec!["v2", "during", "v3"],
        "untouched"
    );
    assert_eq!(
        value_of(&log, "k4"),
        vec!["v2"],
        "k4's v3 was truncated away"
    );
    assert_eq!(value_of(&log, "k2"), vec!["v2", "v3"]);
    log.roll().expect("roll"); // the truncated segment was the last: active again
    assert!(log.clean(NOW).expect("clean again") > 0);
    assert_eq!(value_of(&log, "k0"), vec!["v3"]);
    assert_eq!(value_of(&log, "k4"), vec!["v2"]);
    assert_eq!(value_of(&log, "k9"), vec!["v2"]);
}

//! Property test: the log equals a `Vec` model under random appends, rolls, truncations,
//! retention and reopen (clean and unclean), read back batch by batch.

use kbroker_storage::batch::{self, NewRecord};
use kbroker_storage::{Log, LogConfig};
use proptest::prelude::*;

mod common;
use common::{read_all, reopen, roll_unless_empty, truncate_with_model};

#[derive(Debug, Clone)]
enum Action {
    Append(Vec<u8>),
    Roll,
    Truncate(u8),
    Reopen { clean: bool },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => proptest::collection::vec(1u8..60, 1..6).prop_map(Action::Append),
        1 => Just(Action::Roll),
        1 => any::<u8>().prop_map(Action::Truncate),
        1 => any::<bool>().prop_map(|clean| Action::Reopen { clean }),
    ]
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 128,
        segment_index_bytes: 4096,
        ..LogConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn log_matches_vec_model(actions in proptest::collection::vec(action(), 1..60), seed in any::<u32>()) {
        let dir = std::env::temp_dir().join(format!("kb-logmodel-{}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut log = Log::open(&dir, "t", 0, config(), 0, 0, true, 0).expect("open");
        let mut model: Vec<(i64, Vec<u8>)> = Vec::new();
        let mut now = 1_000;
        for a in actions {
            now += 10;
            match a {
                Action::Append(sizes) => {
                    let records: Vec<NewRecord> = sizes.iter().enumerate().map(|(i, s)| NewRecord {
                        value: Some(vec![*s; *s as usize]), timestamp: now + i as i64, ..NewRecord::default()
                    }).collect();
                    let info = log.append_internal(&batch::build_batch(0, &records), 0, now).expect("append");
                    prop_assert_eq!(info.first_offset, model.len() as i64);
                    for (i, s) in sizes.iter().enumerate() {
                        model.push((info.first_offset + i as i64, vec![*s; *s as usize]));
                    }
                    let end = log.log_end_offset();
                    log.set_high_watermark(end);
                }
                Action::Roll => roll_unless_empty(&mut log),
                // At a batch boundary: the batch that starts at or after n.
                Action::Truncate(n) => truncate_with_model(&mut log, &mut model, n as i64),
                Action::Reopen { clean } => log = reopen(log, &dir, config(), clean, now),
            }
            prop_assert_eq!(log.log_end_offset(), model.len() as i64);
            prop_assert_eq!(read_all(&log, 1 << 20), model.clone());
        }
        for (i, (offset, _)) in model.iter().enumerate().step_by(7) {
            let found = log.offset_for_timestamp(0).expect("ts");
            prop_assert_eq!(found.map(|f| f.0), model.first().map(|m| m.0));
            let _ = (i, offset);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn torn_tail_is_truncated_on_unclean_open() {
    let dir = std::env::temp_dir().join(format!("kb-torn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut log = Log::open(&dir, "t", 0, config(), 0, 0, true, 0).expect("open");
    for i in 0..5 {
        let r = NewRecord {
            value: Some(vec![i; 40]),
            timestamp: 100 + i as i64,
            ..NewRecord::default()
        };
        log.append_internal(&batch::build_batch(0, &[r]), 0, 0)
            .expect("append");
    }
    log.close().expect("close");
    drop(log);
    // Tear the last batch: cut 10 bytes off and append garbage.
    let path = dir.join("00000000000000000000.log");
    let mut bytes = std::fs::read(&path).expect("read");
    let len = bytes.len();
    bytes.truncate(len - 10);
    bytes.extend_from_slice(&[0xAB; 7]);
    std::fs::write(&path, &bytes).expect("write");
    let log = Log::open(&dir, "t", 0, config(), 0, 0, false, 0).expect("reopen");
    assert_eq!(log.log_end_offset(), 4, "the torn fifth batch is dropped");
    let mut log = log;
    let r = NewRecord {
        value: Some(b"next".to_vec()),
        timestamp: 1,
        ..NewRecord::default()
    };
    let info = log
        .append_internal(&batch::build_batch(0, &[r]), 0, 0)
        .expect("append");
    assert_eq!(
        info.first_offset, 4,
        "offsets continue after the truncation"
    );
}

#[test]
fn retention_by_size_and_time_advances_log_start() {
    let dir = std::env::temp_dir().join(format!("kb-retention-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = LogConfig {
        segment_bytes: 512,
        retention_bytes: 1024,
        ..LogConfig::default()
    };
    let mut log = Log::open(&dir, "t", 0, cfg, 0, 0, true, 0).expect("open");
    for i in 0..40 {
        let r = NewRecord {
            value: Some(vec![1; 100]),
            timestamp: 1_000 + i,
            ..NewRecord::default()
        };
        log.append_internal(&batch::build_batch(0, &[r]), 0, 0)
            .expect("append");
    }
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    let before = log.segment_count();
    let deleted = log.delete_expired_segments(2_000).expect("retention");
    assert!(deleted > 0 && log.segment_count() < before);
    assert!(log.size_bytes() <= 1024 + 512);
    assert!(log.log_start_offset() > 0);
    assert!(
        log.read(0, end, 1000, true).is_err(),
        "offset 0 is now out of range"
    );
    let mut cfg = log.config().clone();
    cfg.retention_bytes = -1;
    cfg.retention_ms = 10;
    log.set_config(cfg);
    log.delete_expired_segments(1_000_000)
        .expect("retention by time");
    assert_eq!(
        log.log_start_offset(),
        end,
        "everything expired; the log is empty at its end"
    );
    assert_eq!(log.log_end_offset(), end);
}

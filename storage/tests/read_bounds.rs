//! Property test of a read's bounds (the index skips ahead; the result must be what a walk
//! of every header gives): whole batches from the one holding the offset, each ending at or
//! below `max_offset`, within `max_bytes` unless `min_one` lets a first batch through, and
//! no batch left out that would have fit before the segment's end.

use kbroker_storage::batch::{self, BatchIter, NewRecord};
use kbroker_storage::{Log, LogConfig};
use proptest::prelude::*;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8192,
        index_interval_bytes: 200,
        segment_index_bytes: 4096,
        ..LogConfig::default()
    }
}

/// (first offset, next offset, size) of every whole batch in `bytes`.
fn batches(bytes: &[u8]) -> Vec<(i64, i64, usize)> {
    BatchIter::new(bytes, true)
        .map(|(_, h)| (h.base_offset, h.next_offset(), h.total_size()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn reads_stop_exactly_at_their_bounds(
        appends in proptest::collection::vec((1usize..6, 1usize..300, proptest::bool::weighted(0.05)), 10..120),
        reads in proptest::collection::vec((any::<u16>(), any::<u16>(), 0usize..6000, any::<bool>()), 1..40),
        seed in any::<u32>(),
    ) {
        let dir = std::env::temp_dir().join(format!("kb-readbounds-{}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut log = Log::open(&dir, "t", 0, config(), 0, 0, true, 0).expect("open");
        for (i, (records, size, roll)) in appends.iter().enumerate() {
            let records: Vec<NewRecord> = (0..*records)
                .map(|r| NewRecord {
                    value: Some(vec![r as u8; *size]),
                    timestamp: 1_000 + i as i64,
                    ..NewRecord::default()
                })
                .collect();
            log.append_internal(&batch::build_batch(0, &records), 0, 1_000).expect("append");
            if *roll {
                log.roll().expect("roll");
            }
        }
        let end = log.log_end_offset();
        log.set_high_watermark(end);
        let bases = log.segment_bases();
        let segment_end = |offset: i64| {
            bases.iter().copied().find(|b| *b > offset).unwrap_or(i64::MAX)
        };
        for (o, m, max_bytes, min_one) in reads {
            let offset = o as i64 % end;
            let max_offset = offset + 1 + (m as i64 % (end - offset));
            let read = log.read(offset, max_offset, max_bytes, min_one).expect("read");
            // The read in two steps (rolled segments read without the lock) gives the same.
            let planned = log
                .plan_read(offset, max_offset, max_bytes, min_one)
                .expect("plan")
                .finish(|| log.read(offset, max_offset, max_bytes, min_one))
                .expect("finish");
            let span = |r: &Option<kbroker_storage::FileRegion>| r.as_ref().map(|r| (r.position, r.len));
            prop_assert_eq!(span(&planned.region), span(&read.region), "planned read at {}", offset);
            prop_assert_eq!(
                (planned.high_watermark, planned.log_start_offset, planned.log_end_offset),
                (read.high_watermark, read.log_start_offset, read.log_end_offset)
            );
            let got = match read.region {
                Some(region) => batches(&log.read_region_bytes(&region).expect("bytes")),
                None => Vec::new(),
            };
            // What follows the region, batch by batch, to the segment's end.
            let after = |from: i64| -> Option<(i64, i64, usize)> {
                if from >= end || from >= segment_end(offset) {
                    return None;
                }
                let r = log.read(from, end, 1, true).expect("read next").region?;
                batches(&log.read_region_bytes(&r).expect("bytes")).into_iter().next()
            };
            let total: usize = got.iter().map(|b| b.2).sum();
            match got.first() {
                None => {
                    // Nothing fits: the batch holding the offset breaks a bound.
                    let first = log.read(offset, end, usize::MAX, true).expect("read").region;
                    if let Some(r) = first {
                        let b = batches(&log.read_region_bytes(&r).expect("bytes"))[0];
                        prop_assert!(b.1 > max_offset || (!min_one && b.2 > max_bytes),
                            "empty read at {} though {:?} fits ({} {} {})", offset, b, max_offset, max_bytes, min_one);
                    }
                }
                Some(first) => {
                    prop_assert!(first.0 <= offset && offset < first.1, "starts at the batch holding the offset");
                    prop_assert!(got.windows(2).all(|w| w[0].1 == w[1].0), "contiguous");
                    prop_assert!(got.iter().all(|b| b.1 <= max_offset), "below max_offset");
                    prop_assert!(total <= max_bytes || (min_one && got.len() == 1), "within max_bytes");
                    let last_next = got.last().map(|b| b.1).unwrap_or(offset);
                    if let Some(next) = after(last_next) {
                        prop_assert!(next.1 > max_offset || total + next.2 > max_bytes,
                            "the next batch {:?} would have fit ({} {} {})", next, max_offset, max_bytes, total);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

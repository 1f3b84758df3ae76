//! Property test of the sliding mapped window: a log whose active segment is written
//! through windows much smaller than the segment (and than some batches) equals a `Vec`
//! model under random appends, truncations, rolls and reopens (clean, and unclean as after
//! kill -9), read back both from the mapped window and from the file; and what it keeps
//! mapped stays bounded by the window, not by what was written — with written pages kept
//! in the page cache and with them dropped behind the writer.

use kbroker_storage::batch::{self, NewRecord};
use kbroker_storage::window::{WindowConfig, MIN_WINDOW_BYTES, WINDOW_ALIGN};
use kbroker_storage::{Log, LogConfig};
use proptest::prelude::*;

mod common;
use common::{read_all, reopen, roll_unless_empty, truncate_with_model};

const WINDOW: usize = MIN_WINDOW_BYTES;

#[derive(Debug, Clone)]
enum Action {
    /// Records of these sizes in 4 KiB units (0 = a few bytes), one batch.
    Append(Vec<u8>),
    Roll,
    Truncate(u16),
    Reopen {
        clean: bool,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        10 => proptest::collection::vec(0u8..200, 1..8).prop_map(Action::Append),
        1 => Just(Action::Roll),
        1 => any::<u16>().prop_map(Action::Truncate),
        2 => any::<bool>().prop_map(|clean| Action::Reopen { clean }),
    ]
}

fn config() -> LogConfig {
    config_dropping(None)
}

fn config_dropping(drop_behind: Option<usize>) -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024 * 1024,
        index_interval_bytes: 4096,
        segment_index_bytes: 64 * 1024,
        max_message_bytes: 8 << 20,
        map_window: WindowConfig {
            bytes: WINDOW,
            drop_behind,
        },
        ..LogConfig::default()
    }
}

fn value(offset: i64, units: u8) -> Vec<u8> {
    let len = if units == 0 {
        7
    } else {
        units as usize * 4096 - 3
    };
    (0..len).map(|i| (offset as usize * 31 + i) as u8).collect()
}

/// Appends one batch of one record of ~256 KiB (`value(offset, 64)`); its first offset.
fn append_big_record(log: &mut Log, offset: i64) -> i64 {
    let records = vec![NewRecord {
        value: Some(value(offset, 64)),
        timestamp: 1,
        ..NewRecord::default()
    }];
    log.append_internal(&batch::build_batch(0, &records), 0, 1)
        .expect("append")
        .first_offset
}

/// The log holds exactly the `count` records [`append_big_record`] wrote, in order.
fn assert_big_records_read_back(log: &Log, count: i64) {
    let all = read_all(log, 1 << 20);
    assert_eq!(all.len(), count as usize);
    for (o, v) in all {
        assert_eq!(v, value(o, 64), "offset {o}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn windowed_log_matches_vec_model(
        actions in proptest::collection::vec(action(), 1..50),
        drop_behind in prop_oneof![Just(None), Just(Some(0)), Just(Some(WINDOW))],
        seed in any::<u32>(),
    ) {
        let dir = std::env::temp_dir().join(format!("kb-window-{}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = || config_dropping(drop_behind);
        let mut log = Log::open(&dir, "t", 0, config(), 0, 0, true, 0).expect("open");
        let mut model: Vec<(i64, Vec<u8>)> = Vec::new();
        let mut largest_batch = 0usize;
        let mut now = 1_000;
        for a in actions {
            now += 10;
            match a {
                Action::Append(sizes) => {
                    let first = model.len() as i64;
                    let records: Vec<NewRecord> = sizes.iter().enumerate().map(|(i, s)| NewRecord {
                        value: Some(value(first + i as i64, *s)), timestamp: now, ..NewRecord::default()
                    }).collect();
                    let bytes = batch::build_batch(0, &records);
                    largest_batch = largest_batch.max(bytes.len());
                    let info = log.append_internal(&bytes, 0, now).expect("append");
                    prop_assert_eq!(info.first_offset, first);
                    for (i, s) in sizes.iter().enumerate() {
                        model.push((first + i as i64, value(first + i as i64, *s)));
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
            // Whole reads (mostly through the file) and small ones (the tail through the map).
            prop_assert_eq!(read_all(&log, usize::MAX), model.clone());
            prop_assert_eq!(read_all(&log, 1), model.clone());
            let bound = 2 * WINDOW + largest_batch + WINDOW_ALIGN;
            prop_assert!(log.mapped_bytes() <= bound, "{} mapped, bound {bound}", log.mapped_bytes());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn the_window_slides_ahead_of_the_writer_and_mapped_memory_stays_bounded() {
    use kbroker_storage::window::STATS;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let dir = std::env::temp_dir().join(format!("kb-window-slide-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut log = Log::open(&dir, "t", 0, config(), 0, 0, true, 0).expect("open");
    let slides =
        || STATS.mapped_inline.load(Ordering::Relaxed) + STATS.prefaulted.load(Ordering::Relaxed);
    let before = slides();
    let prefaulted_before = STATS.prefaulted.load(Ordering::Relaxed);
    // 64 MiB (the whole segment) in 256 KiB batches through a 4 MiB window.
    let batches = 255;
    for offset in 0..batches {
        assert_eq!(append_big_record(&mut log, offset), offset);
        assert!(
            log.mapped_bytes() <= 2 * WINDOW,
            "{} mapped",
            log.mapped_bytes()
        );
        if offset == 10 {
            // Past the middle of the first window: the next one is being prepared; wait
            // for the prefault thread (not a timing assertion: it only has to happen).
            let deadline = Instant::now() + Duration::from_secs(30);
            while STATS.prefaulted.load(Ordering::Relaxed) == prefaulted_before {
                assert!(
                    Instant::now() < deadline,
                    "the next window was never prepared"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    // 64 MiB through 4 MiB windows advancing by at least a quarter of one each time.
    assert!(
        slides() - before >= 16,
        "the window slid {} times",
        slides() - before
    );
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    assert_big_records_read_back(&log, batches);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pages of `[0, len)` of `file` in the page cache (mincore(2) on a fresh read-only map,
/// which faults nothing in).
fn cached_pages(file: &std::fs::File, len: usize) -> usize {
    // SAFETY: the map is only passed to mincore, never read.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(file) }.expect("map");
    let page = 4096;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `vec` has one byte per page of the mapped range.
    let rc = unsafe { nix::libc::mincore(map.as_ptr() as *mut _, len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|b| *b & 1 == 1).count()
}

#[test]
fn written_pages_leave_the_page_cache_behind_the_writer_and_still_read_back() {
    use std::time::{Duration, Instant};
    let dir = std::env::temp_dir().join(format!("kb-window-drop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let behind = 8 << 20;
    let mut log =
        Log::open(&dir, "t", 0, config_dropping(Some(behind)), 0, 0, true, 0).expect("open");
    // 48 MiB in 256 KiB batches through 4 MiB windows.
    let batches = 190;
    for offset in 0..batches {
        assert_eq!(append_big_record(&mut log, offset), offset);
    }
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    // Everything up to the last window and `behind` before it goes; the first 32 MiB
    // are far enough behind. Wait for the drop-behind thread (it only has to happen).
    let file = std::fs::File::open(dir.join("00000000000000000000.log")).expect("segment");
    let checked = 32 << 20;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cached = cached_pages(&file, checked);
        if cached == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{cached} pages of the first 32 MiB still cached"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The dropped pages read back from disk, every record as written.
    assert_big_records_read_back(&log, batches);
    let _ = std::fs::remove_dir_all(&dir);
}

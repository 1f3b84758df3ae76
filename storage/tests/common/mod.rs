//! Helpers shared by the log property tests.

#![allow(dead_code)]

use std::path::Path;

use kbroker_storage::batch;
use kbroker_storage::{Log, LogConfig};

/// Every record from the log start as (offset, value), `max_bytes` per read.
pub fn read_all(log: &Log, max_bytes: usize) -> Vec<(i64, Vec<u8>)> {
    read_records(log, max_bytes)
        .into_iter()
        .map(|(offset, _, value)| (offset, value.unwrap_or_default()))
        .collect()
}

/// One record as read back: (offset, key, value).
pub type ReadRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// Every record from the log start, `max_bytes` per read.
pub fn read_records(log: &Log, max_bytes: usize) -> Vec<ReadRecord> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let read = log
            .read(offset, log.log_end_offset(), max_bytes, true)
            .expect("read");
        let Some(region) = read.region else { break };
        let bytes = log.read_region_bytes(&region).expect("region bytes");
        let mut last = offset;
        for (pos, header) in batch::BatchIter::new(&bytes, true) {
            let records = batch::uncompressed_records(&bytes[pos..pos + header.total_size()])
                .expect("decode");
            for r in records {
                out.push((
                    r.offset,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                ));
            }
            last = header.next_offset();
        }
        assert!(last > offset, "reads make progress");
        offset = last;
    }
    out
}

/// The base offset of the first batch at or after `target` (the log end if none).
pub fn batch_boundary(log: &Log, target: i64) -> i64 {
    let read = log
        .read(0, log.log_end_offset(), usize::MAX, true)
        .expect("read");
    if let Some(region) = read.region {
        let bytes = log.read_region_bytes(&region).expect("bytes");
        for (_, h) in batch::BatchIter::new(&bytes, false) {
            if h.base_offset >= target {
                return h.base_offset;
            }
        }
    }
    log.log_end_offset()
}

/// Rolls the log unless its active segment is empty.
pub fn roll_unless_empty(log: &mut Log) {
    if log.log_end_offset() > log.segment_bases().last().copied().unwrap_or(0) {
        log.roll().expect("roll");
    }
}

/// Truncates the log and its model (one entry per offset) at the first batch boundary at or
/// after `n` modulo the model's length + 1.
pub fn truncate_with_model<T>(log: &mut Log, model: &mut Vec<T>, n: i64) {
    let boundary = batch_boundary(log, n % (model.len() as i64 + 1));
    log.truncate_to(boundary).expect("truncate");
    model.truncate(boundary as usize);
}

/// Closes (clean) or just drops (unclean: as after kill -9) the log and opens it again,
/// high watermark at the log end.
pub fn reopen(log: Log, dir: &Path, config: LogConfig, clean: bool, now: i64) -> Log {
    let mut log = log;
    if clean {
        log.close().expect("close");
    }
    let rp = log.recovery_point();
    drop(log);
    let recovery_point = if clean { rp } else { 0 };
    let mut log = Log::open(dir, "t", 0, config, recovery_point, 0, clean, now).expect("reopen");
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    log
}

//! Log compaction (`cleanup.policy=compact`): keep the latest record per key.
//!
//! Kafka's cleaner, simplified to whole passes: build a map key → latest offset over the
//! cleanable dirty range (`Log::cleanable` decides when and which: dirty ratio, compaction
//! lags, high watermark), then rewrite every segment before the range's end keeping a
//! record only if no later offset of its key is in the map (records without a key are
//! kept), and dropping tombstones (null values) whose segment is older than
//! `delete.retention.ms`. Offsets and
//! timestamps never move, so compaction leaves gaps that readers skip. Compressed batches
//! are kept verbatim (reading them would need decompression; documented limit).
//!
//! A rewritten segment is written to `<base>.log.cleaned`, fsynced, renamed to
//! `<base>.log.swap`, the old files deleted, and the swap renamed to `.log`; at start a
//! `.swap` is promoted and a `.cleaned` deleted, so a crash at any point loses nothing.
//! Pure functions here. The log's lock is held only to plan a pass (`Log::prepare_clean`)
//! and to install it (`Log::finish_clean`, which drops the pass if a segment it read was
//! truncated, deleted or replaced meanwhile); reading, compacting and writing the `.cleaned`
//! files run without it (`CleanJob::run`), so produce and fetch go on.

use std::collections::HashMap;

use crate::batch::{self, BatchIter};

/// Records each key's latest offset found in `segment_bytes`.
pub fn index_keys(segment_bytes: &[u8], latest: &mut HashMap<Vec<u8>, i64>) {
    for (pos, header) in BatchIter::new(segment_bytes, false) {
        let bytes = &segment_bytes[pos..pos + header.total_size()];
        if header.is_control() {
            continue;
        }
        if let Some(records) = batch::uncompressed_records(bytes) {
            for r in records {
                if let Some(k) = r.key {
                    let e = latest.entry(k.to_vec()).or_insert(r.offset);
                    *e = (*e).max(r.offset);
                }
            }
        }
    }
}

/// The compacted bytes of one rolled segment, or `None` if nothing would change.
/// Also reports whether tombstones were kept (a later pass may remove them).
pub fn compact_segment(
    segment_bytes: &[u8],
    latest: &HashMap<Vec<u8>, i64>,
    drop_tombstones: bool,
) -> (Option<Vec<u8>>, bool) {
    let mut out = Vec::with_capacity(segment_bytes.len());
    let mut changed = false;
    let mut tombstones_kept = false;
    for (pos, header) in BatchIter::new(segment_bytes, false) {
        let bytes = &segment_bytes[pos..pos + header.total_size()];
        let Some(spans) = batch::record_spans(bytes).filter(|_| !header.is_control()) else {
            out.extend_from_slice(bytes);
            continue;
        };
        let keep: Vec<std::ops::Range<usize>> = spans
            .iter()
            .filter(|(r, _)| match r.key {
                None => true,
                Some(k) => {
                    latest.get(k).is_none_or(|o| *o == r.offset)
                        && !(r.value.is_none() && drop_tombstones)
                }
            })
            .map(|(r, range)| {
                tombstones_kept |= r.value.is_none();
                range.clone()
            })
            .collect();
        if keep.len() == spans.len() {
            out.extend_from_slice(bytes);
        } else {
            changed = true;
            if !keep.is_empty() {
                out.extend_from_slice(&batch::retain_records(bytes, &keep));
            }
        }
    }
    (changed.then_some(out), tombstones_kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::NewRecord;

    fn rec(k: &str, v: Option<&str>) -> NewRecord {
        NewRecord {
            key: Some(k.as_bytes().to_vec()),
            value: v.map(|v| v.as_bytes().to_vec()),
            headers: vec![],
            timestamp: 1,
        }
    }

    #[test]
    fn keeps_latest_per_key_and_drops_old_tombstones() {
        let mut seg = batch::build_batch(
            0,
            &[
                rec("a", Some("1")),
                rec("b", Some("1")),
                rec("a", Some("2")),
            ],
        );
        seg.extend(batch::build_batch(
            3,
            &[rec("c", None), rec("b", Some("2"))],
        ));
        let mut latest = HashMap::new();
        index_keys(&seg, &mut latest);
        assert_eq!(latest[b"a".as_slice()], 2);
        let (out, tombstones) = compact_segment(&seg, &latest, false);
        let out = out.expect("changed");
        assert!(tombstones);
        let values: Vec<(i64, Option<Vec<u8>>)> = BatchIter::new(&out, true)
            .flat_map(|(p, h)| {
                batch::uncompressed_records(&out[p..p + h.total_size()])
                    .expect("valid")
                    .into_iter()
                    .map(|r| (r.offset, r.value.map(|v| v.to_vec())))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            values,
            vec![
                (2, Some(b"2".to_vec())),
                (3, None),
                (4, Some(b"2".to_vec()))
            ]
        );
        let (out, _) = compact_segment(&out, &latest, true);
        let out = out.expect("tombstone dropped");
        assert_eq!(
            BatchIter::new(&out, true)
                .map(|(_, h)| h.records_count)
                .sum::<i32>(),
            2
        );
        assert!(
            compact_segment(&out, &latest, true).0.is_none(),
            "a clean segment is left alone"
        );
    }
}

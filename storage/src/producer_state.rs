//! Idempotent producers' state of one partition — Kafka's `ProducerStateManager`.
//!
//! For each producer id: its epoch, the metadata of its last [`BATCHES_PER_PRODUCER_MAX`]
//! batches (last sequence, last offset, offset delta, max timestamp) and the timestamp of
//! its last batch. A client batch is checked against it before anything is written:
//! - the same epoch with the same first and last sequence as a cached batch is a duplicate
//!   (a retry): it is not appended again and answered with the original offsets;
//! - an older epoch is `InvalidProducerEpoch`;
//! - a newer epoch must start at sequence 0; the same epoch must continue at last + 1
//!   (wrapping from `i32::MAX` to 0); otherwise `OutOfOrderSequence`;
//! - an unknown producer (never seen, expired) is accepted at any epoch and sequence, as
//!   Kafka ≥ 2.5 does (it never answers UNKNOWN_PRODUCER_ID).
//!
//! The state is a function of the log: every batch's header carries producer id, epoch,
//! base sequence, offsets and max timestamp, so [`ProducerStateManager::record`] rebuilds it
//! from any stretch of log — at recovery, after truncation, and on a follower replicating
//! the leader's batches (origin `Replication`: no sequence checks, epochs only warned about).
//!
//! Snapshots, Kafka's format (`<20-digit offset>.snapshot`, state of every offset below the
//! name; big-endian): `version i16 = 1 | crc u32 (CRC32C of everything after it) | count
//! i32 | count × (producer_id i64, epoch i16, last_sequence i32, last_offset i64,
//! offset_delta i32, timestamp i64, coordinator_epoch i32, current_txn_first_offset i64)`.
//! Only the last batch of each producer is kept in a snapshot (as in Kafka). Pure: the
//! owning `Log` does the file I/O; not thread safe on its own (used behind the log's lock).

use std::collections::{HashMap, VecDeque};

use crate::batch::BatchHeader;

/// Batches remembered per producer for duplicate detection (clients keep at most five
/// requests in flight with idempotence).
pub const BATCHES_PER_PRODUCER_MAX: usize = 5;
/// Snapshot format version.
pub const SNAPSHOT_VERSION: i16 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 10;
const SNAPSHOT_ENTRY_BYTES: usize = 46;
/// Producers one snapshot may hold (bounds what a damaged file can make us allocate).
pub const SNAPSHOT_ENTRIES_MAX: usize = 10_000_000;

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub last_seq: i32,
    pub last_offset: i64,
    /// `last_offset - first_offset`.
    pub offset_delta: i32,
    /// The batch's max timestamp as written.
    pub timestamp: i64,
}

impl BatchMetadata {
    pub fn first_seq(&self) -> i32 {
        decrement_sequence(self.last_seq, self.offset_delta)
    }
    pub fn first_offset(&self) -> i64 {
        self.last_offset - self.offset_delta as i64
    }
}

/// What a partition knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub producer_id: i64,
    /// -1 until a batch is seen.
    pub epoch: i16,
    /// Oldest first, at most [`BATCHES_PER_PRODUCER_MAX`].
    pub batches: VecDeque<BatchMetadata>,
    /// Max timestamp of the producer's last batch (-1 initially); expiry counts from it.
    pub last_timestamp: i64,
    /// -1: no transaction marker was ever seen (always, without transactions).
    pub coordinator_epoch: i32,
}

impl ProducerEntry {
    fn empty(producer_id: i64) -> ProducerEntry {
        ProducerEntry {
            producer_id,
            epoch: -1,
            batches: VecDeque::new(),
            last_timestamp: -1,
            coordinator_epoch: -1,
        }
    }
    /// The last sequence written, or -1.
    pub fn last_seq(&self) -> i32 {
        self.batches.back().map_or(-1, |b| b.last_seq)
    }
}

/// Where an append comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A producer: sequences and epochs are enforced, duplicates detected.
    Client,
    /// The log itself (recovery, a follower copying its leader): state is only updated.
    Replication,
}

/// Why a client batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerStateError {
    /// The batch's epoch is older than the producer's (INVALID_PRODUCER_EPOCH).
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// The batch does not continue the producer's sequence (OUT_OF_ORDER_SEQUENCE_NUMBER).
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        last_seq: i32,
        first_seq: i32,
    },
}

impl std::fmt::Display for ProducerStateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ProducerStateError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current,
            } => write!(
                f,
                "producer {producer_id}: epoch {epoch} is older than the current epoch {current}"
            ),
            ProducerStateError::OutOfOrderSequence {
                producer_id,
                epoch,
                last_seq,
                first_seq,
            } => write!(
                f,
                "producer {producer_id} epoch {epoch}: sequence {first_seq} does not follow {last_seq}"
            ),
        }
    }
}

/// `seq + delta` on Kafka's wrapping sequence space (-1 stays -1).
pub fn increment_sequence(seq: i32, delta: i32) -> i32 {
    if seq < 0 {
        return -1;
    }
    if seq > i32::MAX - delta {
        delta - (i32::MAX - seq) - 1
    } else {
        seq + delta
    }
}

/// `seq - delta` on Kafka's wrapping sequence space.
pub fn decrement_sequence(seq: i32, delta: i32) -> i32 {
    if seq < delta {
        i32::MAX - (delta - seq) + 1
    } else {
        seq - delta
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq as i64 == last_seq as i64 + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

/// The producers of one partition, and the offset up to which the log was applied.
#[derive(Debug, Clone, Default)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    /// Every batch below this offset is reflected.
    map_end_offset: i64,
}

impl ProducerStateManager {
    /// Empty state covering nothing below `offset`.
    pub fn new(offset: i64) -> ProducerStateManager {
        ProducerStateManager {
            producers: HashMap::new(),
            map_end_offset: offset,
        }
    }

    pub fn map_end_offset(&self) -> i64 {
        self.map_end_offset
    }
    pub fn set_map_end_offset(&mut self, offset: i64) {
        self.map_end_offset = offset;
    }
    pub fn len(&self) -> usize {
        self.producers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }
    /// Every known producer, in producer id order.
    pub fn producers(&self) -> Vec<ProducerEntry> {
        let mut all: Vec<ProducerEntry> = self.producers.values().cloned().collect();
        all.sort_by_key(|e| e.producer_id);
        all
    }

    /// Checks a client batch before it is appended: `Ok(Some(original))` for a retry of a
    /// batch already in the log, `Ok(None)` to append it.
    pub fn check_client_batch(
        &self,
        h: &BatchHeader,
    ) -> Result<Option<BatchMetadata>, ProducerStateError> {
        if h.producer_id < 0 {
            return Ok(None);
        }
        let entry = self.producers.get(&h.producer_id);
        let first_seq = h.base_sequence;
        let last_seq = increment_sequence(first_seq, h.last_offset_delta);
        if let Some(e) = entry.filter(|e| e.epoch == h.producer_epoch) {
            if let Some(original) = e
                .batches
                .iter()
                .find(|b| b.first_seq() == first_seq && b.last_seq == last_seq)
            {
                return Ok(Some(*original));
            }
        }
        let current_epoch = entry.map_or(-1, |e| e.epoch);
        if h.producer_epoch < current_epoch {
            return Err(ProducerStateError::InvalidProducerEpoch {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: current_epoch,
            });
        }
        let current_last = entry.map_or(-1, ProducerEntry::last_seq);
        let accepted = if current_epoch == -1 {
            true // unknown producer: any epoch, any sequence
        } else if h.producer_epoch != current_epoch {
            first_seq == 0 // a new epoch starts over
        } else {
            in_sequence(current_last, first_seq)
        };
        if !accepted {
            return Err(ProducerStateError::OutOfOrderSequence {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                last_seq: current_last,
                first_seq,
            });
        }
        Ok(None)
    }

    /// Records a batch now in the log at `[first_offset, last_offset]` whose max timestamp
    /// is `max_timestamp`, and moves the map end past it.
    pub fn record(
        &mut self,
        h: &BatchHeader,
        first_offset: i64,
        last_offset: i64,
        max_timestamp: i64,
        origin: Origin,
    ) {
        self.map_end_offset = self.map_end_offset.max(last_offset + 1);
        if h.producer_id < 0 || h.is_control() {
            return;
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry::empty(h.producer_id));
        if origin == Origin::Replication && h.producer_epoch < entry.epoch {
            log::warn!(
                "producer {} epoch {} below the known epoch {} in replicated data at offset {}",
                h.producer_id,
                h.producer_epoch,
                entry.epoch,
                first_offset
            );
        }
        if entry.epoch != h.producer_epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_PER_PRODUCER_MAX {
            entry.batches.pop_front();
        }
        let offset_delta = (last_offset - first_offset).clamp(0, i32::MAX as i64) as i32;
        entry.batches.push_back(BatchMetadata {
            last_seq: increment_sequence(h.base_sequence, h.last_offset_delta),
            last_offset,
            offset_delta,
            timestamp: max_timestamp,
        });
        entry.last_timestamp = max_timestamp;
    }

    /// Forgets producers whose last batch is `expiration_ms` or more older than `now_ms`
    /// (`producer.id.expiration.ms`). Returns how many.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp) < expiration_ms);
        before - self.producers.len()
    }

    /// Forgets everything and covers nothing below `offset`.
    pub fn reset(&mut self, offset: i64) {
        self.producers.clear();
        self.map_end_offset = offset;
    }

    /// The snapshot of the current state (Kafka's `.snapshot` format).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let entries = self.producers();
        let mut out =
            Vec::with_capacity(SNAPSHOT_HEADER_BYTES + entries.len() * SNAPSHOT_ENTRY_BYTES);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&[0u8; 4]); // crc, below
        out.extend_from_slice(&(entries.len() as i32).to_be_bytes());
        for e in &entries {
            let last = e.batches.back();
            out.extend_from_slice(&e.producer_id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&last.map_or(-1, |b| b.last_seq).to_be_bytes());
            out.extend_from_slice(&last.map_or(-1, |b| b.last_offset).to_be_bytes());
            out.extend_from_slice(&last.map_or(0, |b| b.offset_delta).to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            out.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            out.extend_from_slice(&(-1i64).to_be_bytes()); // no open transaction
        }
        let crc = crc32c::crc32c(&out[6..]);
        out[2..6].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            out.len(),
            SNAPSHOT_HEADER_BYTES + entries.len() * SNAPSHOT_ENTRY_BYTES
        );
        out
    }

    /// State from a snapshot taken at `offset`; producers already expired at `now_ms` are
    /// left out, as Kafka does at load.
    pub fn from_snapshot(
        bytes: &[u8],
        offset: i64,
        now_ms: i64,
        expiration_ms: i64,
    ) -> Result<ProducerStateManager, &'static str> {
        if bytes.len() < SNAPSHOT_HEADER_BYTES {
            return Err("snapshot shorter than its header");
        }
        let be_i16 = |at: usize| i16::from_be_bytes([bytes[at], bytes[at + 1]]);
        let be_i32 = |at: usize| {
            i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let be_i64 = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[at..at + 8]);
            i64::from_be_bytes(a)
        };
        if be_i16(0) != SNAPSHOT_VERSION {
            return Err("unknown snapshot version");
        }
        if crc32c::crc32c(&bytes[6..]) != be_i32(2) as u32 {
            return Err("snapshot CRC mismatch");
        }
        let count = usize::try_from(be_i32(6)).map_err(|_| "negative entry count")?;
        if count > SNAPSHOT_ENTRIES_MAX
            || bytes.len() != SNAPSHOT_HEADER_BYTES + count * SNAPSHOT_ENTRY_BYTES
        {
            return Err("snapshot length does not match its entry count");
        }
        let mut state = ProducerStateManager::new(offset);
        for i in 0..count {
            let at = SNAPSHOT_HEADER_BYTES + i * SNAPSHOT_ENTRY_BYTES;
            let mut e = ProducerEntry::empty(be_i64(at));
            e.epoch = be_i16(at + 8);
            let (last_seq, last_offset, offset_delta) =
                (be_i32(at + 10), be_i64(at + 14), be_i32(at + 22));
            e.last_timestamp = be_i64(at + 26);
            e.coordinator_epoch = be_i32(at + 34);
            if last_offset >= 0 && offset_delta >= 0 && last_offset < offset {
                e.batches.push_back(BatchMetadata {
                    last_seq,
                    last_offset,
                    offset_delta,
                    timestamp: e.last_timestamp,
                });
            }
            if now_ms.saturating_sub(e.last_timestamp) < expiration_ms {
                state.producers.insert(e.producer_id, e);
            }
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 1_000,
            max_timestamp: 1_000,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: records,
        }
    }

    /// Checks and, if accepted, appends at the map end; returns the check's outcome.
    fn produce(
        s: &mut ProducerStateManager,
        h: BatchHeader,
    ) -> Result<Option<BatchMetadata>, ProducerStateError> {
        let r = s.check_client_batch(&h)?;
        if r.is_none() {
            let first = s.map_end_offset();
            s.record(
                &h,
                first,
                first + h.last_offset_delta as i64,
                1_000,
                Origin::Client,
            );
        }
        Ok(r)
    }

    #[test]
    fn sequences_epochs_and_duplicates_follow_kafka() {
        let mut s = ProducerStateManager::new(0);
        assert_eq!(produce(&mut s, header(7, 0, 0, 3)), Ok(None)); // offsets 0..2, seq 0..2
        assert_eq!(produce(&mut s, header(7, 0, 3, 2)), Ok(None)); // offsets 3..4, seq 3..4
                                                                   // a retry of the first batch: its original offsets
        let dup = produce(&mut s, header(7, 0, 0, 3))
            .expect("dup")
            .expect("is a duplicate");
        assert_eq!((dup.first_offset(), dup.last_offset), (0, 2));
        // a gap
        assert!(matches!(
            produce(&mut s, header(7, 0, 6, 1)),
            Err(ProducerStateError::OutOfOrderSequence {
                last_seq: 4,
                first_seq: 6,
                ..
            })
        ));
        // a partial overlap is not a duplicate
        assert!(produce(&mut s, header(7, 0, 1, 3)).is_err());
        // an older epoch
        assert!(matches!(
            produce(&mut s, header(7, -1, 5, 1)),
            Err(ProducerStateError::InvalidProducerEpoch { current: 0, .. })
        ));
        // a newer epoch must start at 0 (the Java client's own epoch bump)
        assert!(produce(&mut s, header(7, 1, 5, 1)).is_err());
        assert_eq!(produce(&mut s, header(7, 1, 0, 1)), Ok(None));
        assert!(matches!(
            produce(&mut s, header(7, 0, 5, 1)),
            Err(ProducerStateError::InvalidProducerEpoch { current: 1, .. })
        ));
        // an unknown producer is accepted anywhere; no producer id means no state at all
        assert_eq!(produce(&mut s, header(9, 4, 1234, 1)), Ok(None));
        assert_eq!(produce(&mut s, header(-1, -1, -1, 5)), Ok(None));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn sequences_wrap_and_only_five_batches_are_remembered() {
        let mut s = ProducerStateManager::new(0);
        assert_eq!(produce(&mut s, header(1, 0, i32::MAX - 1, 2)), Ok(None));
        assert_eq!(s.get(1).expect("entry").last_seq(), i32::MAX);
        assert_eq!(produce(&mut s, header(1, 0, 0, 1)), Ok(None), "wraps to 0");
        let mut s = ProducerStateManager::new(0);
        for seq in 0..8 {
            assert_eq!(produce(&mut s, header(1, 0, seq, 1)), Ok(None));
        }
        assert_eq!(
            produce(&mut s, header(1, 0, 3, 1))
                .expect("dup")
                .map(|b| b.last_offset),
            Some(3)
        );
        assert!(
            produce(&mut s, header(1, 0, 2, 1)).is_err(),
            "sixth from last is forgotten"
        );
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(decrement_sequence(0, 1), i32::MAX);
    }

    #[test]
    fn snapshots_round_trip_expire_and_refuse_damage() {
        let mut s = ProducerStateManager::new(0);
        for pid in 0..4 {
            produce(&mut s, header(pid, 2, 0, 3)).expect("append");
        }
        let bytes = s.encode_snapshot();
        assert_eq!(bytes.len(), 10 + 4 * 46);
        let back =
            ProducerStateManager::from_snapshot(&bytes, s.map_end_offset(), 1_500, 86_400_000)
                .expect("valid");
        assert_eq!(back.producers(), s.producers());
        // a retry of the last batch is still recognised after a reload
        let last = s.get(3).expect("entry").batches[0];
        assert_eq!(back.check_client_batch(&header(3, 2, 0, 3)), Ok(Some(last)));
        // expiry at load and at run time
        assert!(
            ProducerStateManager::from_snapshot(&bytes, 12, 1_000 + 10, 10)
                .expect("valid")
                .is_empty()
        );
        let mut live = back.clone();
        assert_eq!(live.remove_expired(1_000 + 10, 10), 4);
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(ProducerStateManager::from_snapshot(&bad, 12, 0, 1).is_err());
        assert!(ProducerStateManager::from_snapshot(&bytes[..30], 12, 0, 1).is_err());
    }
}

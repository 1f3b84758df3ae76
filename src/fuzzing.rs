//! The bodies of the fuzz targets: every parser of bytes from outside the process, driven
//! with arbitrary input. `fuzz/fuzz_targets/*.rs` (cargo-fuzz, nightly) call these, and so
//! does `tests/fuzz_regressions.rs` on stable, over every input a fuzzer ever crashed on
//! (`fuzz/regressions/<target>/`). Each function panics only on a real bug: an invariant
//! broken by input that must merely be refused.
//!
//! Targets: `frame` (the reactor's size-prefixed framing, fed in arbitrary chunks),
//! `request` (header and body decoding of every advertised API and version), `record_batch`
//! (produce validation incl. decompression, recompression and the timestamp search), `segment_recovery` (arbitrary bytes as a
//! segment's `.log`, `.index` and `.timeindex`, opened after a crash and used), `journal`
//! (metadata journal replay), `checkpoint` (offset and leader-epoch checkpoint files and
//! `partition.metadata`),
//! `producer_snapshot` (a partition's `.snapshot` of producer state) and `znode` (every
//! decoder of znode data read from ZooKeeper incl. config change notifications and
//! sanitized entity names, and of `__consumer_offsets` records).

use std::io::Read;
use std::path::PathBuf;

use bytes::Bytes;
use kbroker_reactor::{Decoded, FrameReceiver, READ_CHUNK_BYTES_MAX};
use kbroker_storage::batch::{self, BatchIter, NewRecord};
use kbroker_storage::validate::{
    find_record, recompress, validate_client_records, validate_internal_records, ProduceRules,
};
use kbroker_storage::{Log, LogConfig};

/// The names of the targets, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/regressions/<name>/`.
pub const TARGETS: &[&str] = &[
    "frame",
    "request",
    "record_batch",
    "segment_recovery",
    "journal",
    "checkpoint",
    "producer_snapshot",
    "znode",
];

/// Runs target `name` on `data`; false if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "frame" => frame(data),
        "request" => request(data),
        "record_batch" => record_batch(data),
        "segment_recovery" => segment_recovery(data),
        "journal" => journal(data),
        "checkpoint" => checkpoint(data),
        "producer_snapshot" => producer_snapshot(data),
        "znode" => znode(data),
        _ => return false,
    }
    true
}

/// A reader that hands out `data` in chunks whose sizes come from the input itself.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = self
            .sizes
            .get(self.turn % self.sizes.len().max(1))
            .map_or(4096, |s| *s as usize + 1);
        self.turn += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Framing: the first 8 bytes pick read sizes, the rest is the stream.
pub fn frame(data: &[u8]) {
    const FRAME_BYTES_MAX: usize = 64 * 1024;
    let (sizes, stream) = data.split_at(data.len().min(8));
    let mut receiver = FrameReceiver::new(FRAME_BYTES_MAX);
    let mut reader = Chunked {
        data: stream,
        sizes,
        turn: 0,
    };
    let mut fed = 0usize;
    loop {
        match receiver.decode() {
            Decoded::Frame(f) => {
                assert!(f.len() <= FRAME_BYTES_MAX, "frame over the limit");
                continue;
            }
            Decoded::Invalid(_) => return,
            Decoded::Incomplete => {}
        }
        match receiver.read_from(&mut reader) {
            Ok(0) | Err(_) => return,
            Ok(n) => fed += n,
        }
        assert!(
            receiver.capacity_bytes() <= 2 * (fed + READ_CHUNK_BYTES_MAX),
            "the receive buffer grows with what arrives, not with what is claimed"
        );
    }
}

/// Request decoding (header and body, no size prefix).
pub fn request(data: &[u8]) {
    let _ = crate::handler::decode_frame(Bytes::copy_from_slice(data));
}

/// Produce validation: the first byte picks the topic rules, the rest is the records field.
pub fn record_batch(data: &[u8]) {
    let Some((&rules_byte, records)) = data.split_first() else {
        return;
    };
    let rules = ProduceRules {
        max_message_bytes: if rules_byte & 1 == 0 { 1 << 20 } else { 256 },
        compacted: rules_byte & 2 != 0,
    };
    // Stored bytes are searched by timestamp (ListOffsets) whatever they hold.
    let _ = find_record(records, |_, ts| ts >= 0);
    if let Ok(v) = validate_client_records(records, &rules) {
        let b = v.batches()[0];
        assert_eq!(b.header.total_size(), records.len(), "one whole batch");
        assert!(b.header.records_count > 0);
        assert!(b.header.total_size() <= rules.max_message_bytes);
        assert!(b.min_timestamp == i64::MAX || b.min_timestamp <= b.max_timestamp);
        // A topic's compression.type: the recompressed batch holds the same records.
        let codec = i16::from(rules_byte >> 2) % 5;
        let again = recompress(records, codec, None).expect("a valid batch recompresses");
        let loose = ProduceRules {
            max_message_bytes: usize::MAX,
            compacted: rules.compacted,
        };
        let w = validate_client_records(&again, &loose).expect("and validates again");
        let a = w.batches()[0];
        assert_eq!(a.header.compression(), codec);
        assert_eq!(a.header.records_count, b.header.records_count);
        assert_eq!(a.max_timestamp, b.max_timestamp);
        assert_eq!(a.uncompressed_bytes, b.uncompressed_bytes);
    }
    if let Ok(v) = validate_internal_records(records) {
        assert!(!v.batches().is_empty());
        let covered: usize = v.batches().iter().map(|b| b.header.total_size()).sum();
        assert_eq!(covered, records.len(), "batches cover the bytes exactly");
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    // Per process and thread: tests run targets on several threads at once, and one
    // removing another's memory-mapped segment would be a SIGBUS, not a finding.
    let thread: String = format!("{:?}", std::thread::current().id())
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    base.join(format!(
        "kbroker-fuzz-{}-{thread}-{name}",
        std::process::id()
    ))
}

/// Segment recovery: three little-endian u16 lengths split the rest into `.log`, `.index`
/// and `.timeindex` of one segment (base offset 0); the log is opened as after a crash,
/// read through, appended to and reopened.
pub fn segment_recovery(data: &[u8]) {
    if data.len() < 6 {
        return;
    }
    let len = |i: usize| u16::from_le_bytes([data[i], data[i + 1]]) as usize;
    let rest = &data[6..];
    let log_len = len(0).min(rest.len());
    let index_len = len(2).min(rest.len() - log_len);
    let time_len = len(4).min(rest.len() - log_len - index_len);
    let dir = scratch_dir("segment").join("t-0");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let parts = [
        ("log", &rest[..log_len]),
        ("index", &rest[log_len..log_len + index_len]),
        (
            "timeindex",
            &rest[log_len + index_len..log_len + index_len + time_len],
        ),
    ];
    for (ext, bytes) in parts {
        std::fs::write(dir.join(format!("{:020}.{ext}", 0)), bytes).expect("scratch file");
    }
    let config = LogConfig {
        segment_bytes: 64 * 1024,
        segment_index_bytes: 1024,
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    for clean in [false, true] {
        let Ok(mut log) = Log::open(&dir, "t", 0, config.clone(), 0, 0, clean, 0) else {
            break;
        };
        let end = log.log_end_offset();
        assert!(log.log_start_offset() <= end);
        log.set_high_watermark(end);
        if clean {
            // The second pass (indexes rebuilt by the first): reads of a rolled segment,
            // whose headers a fetch reads after releasing the lock, must give exactly what
            // the one-step read gives.
            let _ = log.roll();
        }
        let mut offset = log.log_start_offset();
        let mut reads = 0;
        while offset < end && reads < 10_000 {
            reads += 1;
            let Ok(read) = log.read(offset, end, 1 << 20, true) else {
                break;
            };
            let planned = log
                .plan_read(offset, end, 1 << 20, true)
                .and_then(|plan| plan.finish(|| log.read(offset, end, 1 << 20, true)))
                .expect("the two-step read of what the one-step read read");
            let span =
                |r: &Option<kbroker_storage::FileRegion>| r.as_ref().map(|r| (r.position, r.len));
            assert_eq!(span(&planned.region), span(&read.region), "two-step read");
            let Some(region) = read.region else { break };
            let bytes = log
                .read_region_bytes(&region)
                .expect("region of a live segment");
            let mut next = offset;
            for (_, h) in BatchIter::new(&bytes, true) {
                assert!(
                    h.next_offset() > next || h.last_offset() >= offset,
                    "offsets move on"
                );
                next = h.next_offset();
            }
            if next <= offset {
                break;
            }
            offset = next;
        }
        let record = NewRecord {
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: Vec::new(),
            timestamp: 1,
        };
        let appended = log
            .append_internal(&batch::build_batch(0, &[record]), 0, 0)
            .expect("a recovered log takes appends");
        assert_eq!(
            appended.first_offset, end,
            "appends continue at the log end"
        );
        log.close().expect("close");
    }
    let _ = std::fs::remove_dir_all(dir.parent().expect("parent"));
}

/// Metadata journal replay.
pub fn journal(data: &[u8]) {
    let _ = kbroker_coordinator::replay_journal(data);
}

/// Offset checkpoints and the leader-epoch checkpoint.
pub fn checkpoint(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = kbroker_storage::checkpoint::parse(text, std::path::Path::new("<bytes>"));
    if let Some(id) = kbroker_storage::log::parse_partition_metadata(text) {
        assert!(!id.is_empty() && text.contains(id));
    }
    if let Ok(epochs) = kbroker_storage::log::parse_leader_epochs(text) {
        assert!(epochs
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }
}

/// A producer-state snapshot. An odd first byte has the CRC fixed up first, so the input
/// reaches the entries; whatever loads must save and load again to the same producers.
pub fn producer_snapshot(data: &[u8]) {
    use kbroker_storage::producer_state::ProducerStateManager;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 && bytes.len() >= 10 {
        let crc = crc32c::crc32c(&bytes[6..]);
        bytes[2..6].copy_from_slice(&crc.to_be_bytes());
    }
    let Ok(state) = ProducerStateManager::from_snapshot(&bytes, 0, 0, i64::MAX) else {
        return;
    };
    let again = ProducerStateManager::from_snapshot(&state.encode_snapshot(), 0, 0, i64::MAX)
        .expect("a snapshot this broker wrote loads");
    assert_eq!(state.producers(), again.producers(), "snapshot round trip");
}

/// Znode data and offsets-topic records: the first byte picks the decoder, the rest is the
/// data. What decodes and has an encoder must encode and decode to the same value.
pub fn znode(data: &[u8]) {
    use kbroker_coordinator::layout::*;
    use kbroker_coordinator::offsets;
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    fn round_trip<T: PartialEq + std::fmt::Debug>(
        decoded: Option<T>,
        encode: impl Fn(&T) -> Vec<u8>,
        decode: impl Fn(&[u8]) -> Option<T>,
    ) {
        if let Some(v) = decoded {
            let again = decode(&encode(&v));
            assert_eq!(again.as_ref(), Some(&v), "znode round trip");
        }
    }
    match which % 17 {
        0 => round_trip(ClusterId::from_json(bytes).ok(), ClusterId::to_json, |b| {
            ClusterId::from_json(b).ok()
        }),
        1 => round_trip(
            BrokerRegistration::from_json(7, bytes).ok(),
            BrokerRegistration::to_json,
            |b| BrokerRegistration::from_json(7, b).ok(),
        ),
        2 => round_trip(
            ControllerZnode::from_json(bytes).ok(),
            ControllerZnode::to_json,
            |b| ControllerZnode::from_json(b).ok(),
        ),
        3 => {
            let _ = decode_controller_epoch(bytes);
        }
        4 => round_trip(
            TopicAssignment::from_json(bytes).ok(),
            TopicAssignment::to_json,
            |b| TopicAssignment::from_json(b).ok(),
        ),
        5 => round_trip(
            PartitionState::from_json(bytes).ok(),
            PartitionState::to_json,
            |b| PartitionState::from_json(b).ok(),
        ),
        6 => {
            round_trip(
                EntityConfig::from_json(bytes).ok(),
                EntityConfig::to_json,
                |b| EntityConfig::from_json(b).ok(),
            );
            // Entity znode names (quota users, clients, IPs) as sanitized by Kafka.
            if let Ok(name) = std::str::from_utf8(bytes) {
                if let Some(plain) = desanitize_entity_name(name) {
                    let again = desanitize_entity_name(&sanitize_entity_name(&plain));
                    assert_eq!(
                        again.as_deref(),
                        Some(plain.as_str()),
                        "sanitize round trip"
                    );
                }
            }
        }
        7 => {
            let _ = ConsumerOffset::from_json(bytes);
            let _ = ConsumerRegistration::from_json(bytes);
            let _ = ConsumerOwner::from_json(bytes);
        }
        8 => round_trip(
            ProducerIdBlock::from_json(bytes).ok(),
            ProducerIdBlock::to_json,
            |b| ProducerIdBlock::from_json(b).ok(),
        ),
        9 => {
            let _ = decode_partition_list(bytes);
        }
        10 => {
            // Both kinds of notification: ISR changes and config changes.
            let _ = decode_isr_change_notification(bytes);
            round_trip(
                decode_config_change(bytes).ok(),
                |entity| encode_config_change(entity),
                |b| decode_config_change(b).ok(),
            );
        }
        11 => round_trip(
            offsets::OffsetsKey::decode(bytes).ok(),
            offsets::OffsetsKey::encode,
            |b| offsets::OffsetsKey::decode(b).ok(),
        ),
        12 => round_trip(
            offsets::OffsetValue::decode(bytes).ok(),
            offsets::OffsetValue::encode,
            |b| offsets::OffsetValue::decode(b).ok(),
        ),
        13 => round_trip(
            offsets::GroupValue::decode(bytes).ok(),
            offsets::GroupValue::encode,
            |b| offsets::GroupValue::decode(b).ok(),
        ),
        14 => {
            let _ = offsets::subscription_topics(bytes);
        }
        15 => {
            let _ = offsets::assignment_partitions(bytes);
        }
        _ => round_trip(
            decode_reassignment(bytes).ok(),
            |r| encode_reassignment(r),
            |b| decode_reassignment(b).ok(),
        ),
    }
}

//! The hand-written Fetch response writer: header bytes interleaved with file regions.
//!
//! A Fetch response is mostly record batches that already sit in segment files. This
//! writer emits everything around them (response header, topic and partition fields,
//! length prefixes) into byte chunks and each partition's records as a file region, so the
//! processor can `writev` the bytes and `sendfile` the regions: no record byte is copied
//! into user space. Supports Fetch v4–v17 (v12+ are flexible: compact strings and arrays,
//! unsigned-varint lengths, tagged fields — written empty, as Kafka omits default-valued
//! tagged fields; v13+ name topics by their 16-byte id instead of their name). The frame's 4-byte size is the first chunk. Equivalence with the
//! `kafka-protocol` encoder is checked by a property test (decode(write(x)) == x).

use bytes::{BufMut, Bytes, BytesMut};
use kbroker_reactor::Chunk;
use kbroker_storage::FileRegion;

/// One partition's records: a file region, in-memory bytes (tests), or nothing.
#[derive(Debug, Clone)]
pub enum Records {
    Empty,
    Region(FileRegion),
    Bytes(Bytes),
}

impl Records {
    pub fn len(&self) -> usize {
        match self {
            Records::Empty => 0,
            Records::Region(r) => r.len,
            Records::Bytes(b) => b.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
pub struct PartitionData {
    pub index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// `None` for read_uncommitted (null on the wire), `Some(vec![])` for read_committed.
    pub aborted_transactions: Option<Vec<(i64, i64)>>,
    pub preferred_read_replica: i32,
    pub records: Records,
}

impl PartitionData {
    pub fn error(index: i32, error_code: i16) -> Self {
        PartitionData {
            index,
            error_code,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted_transactions: None,
            preferred_read_replica: -1,
            records: Records::Empty,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TopicData {
    pub name: String,
    /// Written instead of the name from v13.
    pub id: [u8; 16],
    pub partitions: Vec<PartitionData>,
}

#[derive(Debug, Clone, Default)]
pub struct FetchResponseData {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
    pub topics: Vec<TopicData>,
}

pub const VERSION_MIN: i16 = 4;
pub const VERSION_MAX: i16 = 17;
const FLEXIBLE_FROM: i16 = 12;
const TOPIC_IDS_FROM: i16 = 13;

struct Writer {
    chunks: Vec<Chunk>,
    current: BytesMut,
    flexible: bool,
    total: usize,
}

impl Writer {
    fn i16(&mut self, v: i16) {
        self.current.put_i16(v);
    }
    fn i32(&mut self, v: i32) {
        self.current.put_i32(v);
    }
    fn i64(&mut self, v: i64) {
        self.current.put_i64(v);
    }
    fn uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.current.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.current.put_u8(v as u8);
    }
    /// Array length; `None` is a null array.
    fn array_len(&mut self, n: Option<usize>) {
        match (self.flexible, n) {
            (true, None) => self.uvarint(0),
            (true, Some(n)) => self.uvarint(n as u64 + 1),
            (false, None) => self.i32(-1),
            (false, Some(n)) => self.i32(n as i32),
        }
    }
    fn string(&mut self, s: &str) {
        assert!(s.len() <= i16::MAX as usize, "topic names are bounded");
        if self.flexible {
            self.uvarint(s.len() as u64 + 1);
        } else {
            self.i16(s.len() as i16);
        }
        self.current.put_slice(s.as_bytes());
    }
    fn empty_tagged_fields(&mut self) {
        if self.flexible {
            self.uvarint(0);
        }
    }
    fn records(&mut self, records: &Records) {
        let len = records.len();
        assert!(len <= i32::MAX as usize);
        if self.flexible {
            self.uvarint(len as u64 + 1);
        } else {
            self.i32(len as i32);
        }
        match records {
            Records::Empty => {}
            Records::Bytes(b) => self.current.put_slice(b),
            Records::Region(r) => {
                self.flush_bytes();
                self.total += r.len;
                self.chunks.push(Chunk::File {
                    file: r.file.clone(),
                    offset: r.position,
                    len: r.len,
                });
            }
        }
    }
    fn flush_bytes(&mut self) {
        if !self.current.is_empty() {
            let b = self.current.split().freeze();
            self.total += b.len();
            self.chunks.push(Chunk::Bytes(b));
        }
    }
}

/// Writes the whole response frame (size prefix, header, body) as chunks.
pub fn write(correlation_id: i32, version: i16, data: &FetchResponseData) -> Vec<Chunk> {
    assert!(
        (VERSION_MIN..=VERSION_MAX).contains(&version),
        "fetch v{version} not written here"
    );
    let flexible = version >= FLEXIBLE_FROM;
    let mut w = Writer {
        chunks: Vec::with_capacity(4),
        current: BytesMut::with_capacity(256),
        flexible,
        total: 0,
    };
    w.i32(correlation_id);
    w.empty_tagged_fields(); // response header v1 when flexible
    w.i32(data.throttle_time_ms);
    if version >= 7 {
        w.i16(data.error_code);
        w.i32(data.session_id);
    }
    w.array_len(Some(data.topics.len()));
    for topic in &data.topics {
        if version >= TOPIC_IDS_FROM {
            w.current.put_slice(&topic.id);
        } else {
            w.string(&topic.name);
        }
        w.array_len(Some(topic.partitions.len()));
        for p in &topic.partitions {
            w.i32(p.index);
            w.i16(p.error_code);
            w.i64(p.high_watermark);
            w.i64(p.last_stable_offset);
            if version >= 5 {
                w.i64(p.log_start_offset);
            }
            w.array_len(p.aborted_transactions.as_ref().map(Vec::len));
            for (producer_id, first_offset) in p.aborted_transactions.iter().flatten() {
                w.i64(*producer_id);
                w.i64(*first_offset);
                w.empty_tagged_fields();
            }
            if version >= 11 {
                w.i32(p.preferred_read_replica);
            }
            w.records(&p.records);
            w.empty_tagged_fields();
        }
        w.empty_tagged_fields();
    }
    w.empty_tagged_fields();
    w.flush_bytes();
    let size = w.total;
    assert!(size <= i32::MAX as usize);
    let mut chunks = Vec::with_capacity(w.chunks.len() + 1);
    chunks.push(Chunk::Bytes(Bytes::copy_from_slice(
        &(size as i32).to_be_bytes(),
    )));
    chunks.extend(w.chunks);
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;
    use proptest::prelude::*;

    fn flatten(chunks: &[Chunk]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            match c {
                Chunk::Bytes(b) => out.extend_from_slice(b),
                Chunk::File { .. } => panic!("tests use in-memory records"),
            }
        }
        out
    }

    fn partition() -> impl Strategy<Value = PartitionData> {
        (
            any::<i32>(),
            0i16..100,
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
            proptest::option::of(proptest::collection::vec(
                (any::<i64>(), any::<i64>()),
                0..3,
            )),
            -1i32..5,
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(index, error_code, hw, lso, lss, aborted, rr, recs)| {
                PartitionData {
                    index,
                    error_code,
                    high_watermark: hw,
                    last_stable_offset: lso,
                    log_start_offset: lss,
                    aborted_transactions: aborted,
                    preferred_read_replica: rr,
                    records: if recs.is_empty() {
                        Records::Empty
                    } else {
                        Records::Bytes(Bytes::from(recs))
                    },
                }
            })
    }

    fn response() -> impl Strategy<Value = FetchResponseData> {
        let topic = (
            "[a-zA-Z0-9._-]{1,40}",
            any::<[u8; 16]>(),
            proptest::collection::vec(partition(), 0..4),
        )
            .prop_map(|(name, id, partitions)| TopicData {
                name,
                id,
                partitions,
            });
        (
            any::<i32>(),
            0i16..100,
            any::<i32>(),
            proptest::collection::vec(topic, 0..4),
        )
            .prop_map(|(t, e, s, topics)| FetchResponseData {
                throttle_time_ms: t,
                error_code: e,
                session_id: s,
                topics,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// The writer's bytes decode with kafka-protocol to the same response, every version.
        #[test]
        fn writer_output_decodes_to_the_same_response(data in response(), version in VERSION_MIN..=VERSION_MAX, correlation_id in any::<i32>()) {
            let bytes = flatten(&write(correlation_id, version, &data));
            let size = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            prop_assert_eq!(size, bytes.len() - 4);
            let mut buf = Bytes::from(bytes[4..].to_vec());
            let header_version = if version >= FLEXIBLE_FROM { 1 } else { 0 };
            let header = ResponseHeader::decode(&mut buf, header_version).expect("header");
            prop_assert_eq!(header.correlation_id, correlation_id);
            let decoded = FetchResponse::decode(&mut buf, version).expect("body");
            prop_assert!(buf.is_empty(), "no trailing bytes");
            prop_assert_eq!(decoded.throttle_time_ms, data.throttle_time_ms);
            if version >= 7 {
                prop_assert_eq!(decoded.error_code, data.error_code);
                prop_assert_eq!(decoded.session_id, data.session_id);
            }
            prop_assert_eq!(decoded.responses.len(), data.topics.len());
            for (dt, t) in decoded.responses.iter().zip(&data.topics) {
                if version >= TOPIC_IDS_FROM {
                    prop_assert_eq!(dt.topic_id.as_bytes(), &t.id);
                } else {
                    prop_assert_eq!(dt.topic.0.as_str(), t.name.as_str());
                }
                prop_assert_eq!(dt.partitions.len(), t.partitions.len());
                for (dp, p) in dt.partitions.iter().zip(&t.partitions) {
                    prop_assert_eq!(dp.partition_index, p.index);
                    prop_assert_eq!(dp.error_code, p.error_code);
                    prop_assert_eq!(dp.high_watermark, p.high_watermark);
                    prop_assert_eq!(dp.last_stable_offset, p.last_stable_offset);
                    if version >= 5 { prop_assert_eq!(dp.log_start_offset, p.log_start_offset); }
                    let aborted = dp.aborted_transactions.as_ref().map(|v| v.iter().map(|a| (a.producer_id.0, a.first_offset)).collect::<Vec<_>>());
                    prop_assert_eq!(aborted, p.aborted_transactions.clone());
                    if version >= 11 { prop_assert_eq!(dp.preferred_read_replica, p.preferred_read_replica); }
                    let records = dp.records.clone().unwrap_or_default();
                    let expected = match &p.records { Records::Bytes(b) => b.clone(), _ => Bytes::new() };
                    prop_assert_eq!(records, expected);
                }
            }
        }
    }
}

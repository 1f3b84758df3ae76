//! Record batch v2 header views — Kafka's on-disk and on-wire batch format.
//!
//! Layout of one batch (big-endian), as Kafka's `DefaultRecordBatch`:
//!
//! ```text
//! 0  base_offset i64        12 partition_leader_epoch i32   16 magic i8 (= 2)
//! 8  batch_length i32       17 crc u32 (CRC32C of bytes 21..end)
//! 21 attributes i16         23 last_offset_delta i32        27 base_timestamp i64
//! 35 max_timestamp i64      43 producer_id i64              51 producer_epoch i16
//! 53 base_sequence i32      57 records_count i32            61 records...
//! ```
//!
//! `batch_length` counts the bytes after itself, so a batch occupies `batch_length + 12`
//! bytes. The base offset and the partition leader epoch lie outside the CRC, which is why
//! the produce path assigns offsets by patching the header in place, without decompressing
//! or re-checksumming. Everything here is a pure function over byte slices: no I/O, no
//! allocation on the hot path, safe from any thread.

/// Bytes before `batch_length` ends: the base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed batch header, up to and including `records_count`.
pub const BATCH_HEADER_BYTES: usize = 61;
/// The only stored record format.
pub const MAGIC_V2: i8 = 2;
const CRC_START: usize = 21;
/// Position of the magic byte, the same in every message format.
pub const MAGIC_OFFSET: usize = 16;

/// Attribute bits.
const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Why a byte range is not a valid batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the header or the declared length needs.
    Incomplete,
    /// The bytes contradict themselves (length, CRC, counts).
    Corrupt(&'static str),
    /// Magic other than 2 (message sets v0/v1).
    UnsupportedMagic(i8),
    /// Well-formed, but not something a client may append (Kafka's INVALID_RECORD).
    Invalid(&'static str),
    /// A timestamp or timestamp type the topic refuses.
    InvalidTimestamp(&'static str),
    /// A batch over `max.message.bytes`.
    TooLarge { size: usize, max: usize },
    /// Records that decompress to more than the validator reads for one batch.
    DecompressedTooLarge,
    /// A codec the request version may not use (zstd before Produce v7).
    UnsupportedCompression,
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Incomplete => write!(f, "incomplete record batch"),
            BatchError::Corrupt(why) => write!(f, "corrupt record batch: {why}"),
            BatchError::UnsupportedMagic(m) => write!(f, "unsupported record batch magic {m}"),
            BatchError::Invalid(why) => write!(f, "invalid record batch: {why}"),
            BatchError::InvalidTimestamp(why) => write!(f, "invalid timestamp: {why}"),
            BatchError::TooLarge { size, max } => {
                write!(
                    f,
                    "record batch of {size} bytes exceeds max.message.bytes {max}"
                )
            }
            BatchError::UnsupportedCompression => {
                write!(f, "zstd needs Produce v7 or later")
            }
            BatchError::DecompressedTooLarge => write!(
                f,
                "record batch decompresses to more than {} bytes",
                crate::validate::DECOMPRESSED_BATCH_BYTES_MAX
            ),
        }
    }
}

/// The parsed fixed header of one v2 batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl BatchHeader {
    /// Reads the fixed header; does not look at the records or the CRC.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < LOG_OVERHEAD + 5 {
            return Err(BatchError::Incomplete);
        }
        let magic = buf[MAGIC_OFFSET] as i8;
        if magic != MAGIC_V2 {
            // A zero length with zero magic is preallocated space, not a batch.
            return Err(if be_i32(buf, 8) == 0 {
                BatchError::Corrupt("zero batch length")
            } else {
                BatchError::UnsupportedMagic(magic)
            });
        }
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Incomplete);
        }
        let header = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic,
            crc: be_i32(buf, 17) as u32,
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        };
        if (header.batch_length as i64) < (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i64 {
            return Err(BatchError::Corrupt("batch length smaller than its header"));
        }
        if header.last_offset_delta < 0 || header.records_count < 0 {
            return Err(BatchError::Corrupt("negative record count or offset delta"));
        }
        if header.base_offset < 0
            || header.base_offset > i64::MAX - 1 - header.last_offset_delta as i64
        {
            return Err(BatchError::Corrupt("batch offsets out of range"));
        }
        Ok(header)
    }

    /// Bytes the whole batch occupies, header included.
    pub fn total_size(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// Validates one complete batch at the start of `buf`: header, declared length, CRC32C.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let size = header.total_size();
    if buf.len() < size {
        return Err(BatchError::Incomplete);
    }
    if crc32c::crc32c(&buf[CRC_START..size]) != header.crc {
        return Err(BatchError::Corrupt("CRC32C mismatch"));
    }
    Ok(header)
}

/// Validates a batch as a producer sent it: besides [`validate`], the record count must
/// match the offset deltas (producers never leave gaps) and the batch must not be empty.
pub fn validate_produced(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate(buf)?;
    if header.records_count == 0 {
        return Err(BatchError::Corrupt("empty batch"));
    }
    if header.records_count as i64 != header.last_offset_delta as i64 + 1 {
        return Err(BatchError::Corrupt(
            "record count does not match last offset delta",
        ));
    }
    Ok(header)
}

/// Writes a new base offset into the header (outside the CRC).
pub fn patch_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the partition leader epoch into the header (outside the CRC).
pub fn patch_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Sets the max timestamp and the timestamp type (LogAppendTime when `log_append_time`) and
/// recomputes the CRC — what Kafka does when it corrects a batch in place.
pub fn patch_max_timestamp(buf: &mut [u8], max_timestamp: i64, log_append_time: bool) {
    let header = BatchHeader::parse(buf).expect("patching a validated batch");
    let size = header.total_size();
    let mut attributes = header.attributes & !TIMESTAMP_TYPE_BIT;
    if log_append_time {
        attributes |= TIMESTAMP_TYPE_BIT;
    }
    buf[21..23].copy_from_slice(&attributes.to_be_bytes());
    buf[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&buf[CRC_START..size]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates the complete batches of a buffer, yielding `(position, header)`; stops at the
/// first incomplete or invalid one. `error()` tells why it stopped early, if it did.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    position: usize,
    verify_crc: bool,
    stopped: Option<BatchError>,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8], verify_crc: bool) -> Self {
        BatchIter {
            buf,
            position: 0,
            verify_crc,
            stopped: None,
        }
    }
    /// Position just past the last batch yielded.
    pub fn position(&self) -> usize {
        self.position
    }
    pub fn error(&self) -> Option<BatchError> {
        self.stopped
    }
}

impl Iterator for BatchIter<'_> {
    type Item = (usize, BatchHeader);
    fn next(&mut self) -> Option<Self::Item> {
        if self.stopped.is_some() || self.position >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.position..];
        let parsed = if self.verify_crc {
            validate(rest)
        } else {
            BatchHeader::parse(rest).and_then(|h| {
                if rest.len() < h.total_size() {
                    Err(BatchError::Incomplete)
                } else {
                    Ok(h)
                }
            })
        };
        match parsed {
            Ok(header) => {
                let at = self.position;
                self.position += header.total_size();
                Some((at, header))
            }
            Err(e) => {
                self.stopped = Some(e);
                None
            }
        }
    }
}

/// Reads a zig-zag varint (Kafka's record fields) from `buf` at `*at`.
pub fn read_varlong(buf: &[u8], at: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

fn skip_varlong_bytes(buf: &[u8], at: &mut usize) -> Option<()> {
    let len = read_varlong(buf, at)?;
    if len > 0 {
        *at = at.checked_add(len as usize)?;
        if *at > buf.len() {
            return None;
        }
    }
    Some(())
}

/// One record of an uncompressed batch, borrowed from the batch bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Decodes the records of an uncompressed batch (compression 0). Returns `None` if the
/// batch is compressed or its records are malformed.
pub fn uncompressed_records(batch: &[u8]) -> Option<Vec<RecordView<'_>>> {
    Some(record_spans(batch)?.into_iter().map(|(r, _)| r).collect())
}

/// Each record of an uncompressed batch with its byte range within `batch` (length prefix
/// included), so records can be kept or dropped verbatim.
pub fn record_spans(batch: &[u8]) -> Option<Vec<(RecordView<'_>, std::ops::Range<usize>)>> {
    let header = BatchHeader::parse(batch).ok()?;
    if header.compression() != 0 || batch.len() < header.total_size() {
        return None;
    }
    let end_of_batch = header.total_size();
    let mut out = Vec::with_capacity(header.records_count.clamp(0, 4096) as usize);
    let mut at = BATCH_HEADER_BYTES;
    for _ in 0..header.records_count {
        let start = at;
        let length = read_varlong(&batch[..end_of_batch], &mut at)?;
        let end = at.checked_add(usize::try_from(length).ok()?)?;
        if end > end_of_batch {
            return None;
        }
        let record = &batch[..end];
        at += 1; // attributes
        let timestamp_delta = read_varlong(record, &mut at)?;
        let offset_delta = read_varlong(record, &mut at)?;
        let key = read_bytes(record, &mut at)?;
        let value = read_bytes(record, &mut at)?;
        let headers = read_varlong(record, &mut at)?;
        for _ in 0..headers.max(0) {
            skip_varlong_bytes(record, &mut at)?;
            skip_varlong_bytes(record, &mut at)?;
        }
        if at != end {
            return None;
        }
        let view = RecordView {
            offset: header.base_offset + offset_delta,
            timestamp: header.base_timestamp + timestamp_delta,
            key,
            value,
        };
        out.push((view, start..end));
    }
    Some(out)
}

/// A copy of `batch` holding only the records in `keep` (ranges from [`record_spans`]),
/// with the count, length and CRC fixed. Offsets, timestamps and the last offset delta are
/// kept, so offsets stay where they were (compaction leaves gaps, never moves records).
pub fn retain_records(batch: &[u8], keep: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    for r in keep {
        out.extend_from_slice(&batch[r.clone()]);
    }
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    out[57..61].copy_from_slice(&(keep.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

fn read_bytes<'a>(buf: &'a [u8], at: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = read_varlong(buf, at)?;
    if len < 0 {
        return Some(None);
    }
    let end = at.checked_add(len as usize)?;
    let slice = buf.get(*at..end)?;
    *at = end;
    Some(Some(slice))
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// A record to build into a batch: key, value, headers, timestamp.
#[derive(Debug, Clone, Default)]
pub struct NewRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: i64,
}

/// Builds an uncompressed v2 batch (used by internal writers and tests).
pub fn build_batch(base_offset: i64, records: &[NewRecord]) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let base_timestamp = records[0].timestamp;
    let max_timestamp = records
        .iter()
        .map(|r| r.timestamp)
        .max()
        .unwrap_or(base_timestamp);
    let mut body = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let mut rec = Vec::new();
        rec.push(0u8);
        put_varlong(&mut rec, r.timestamp - base_timestamp);
        put_varlong(&mut rec, i as i64);
        put_bytes(&mut rec, r.key.as_deref());
        put_bytes(&mut rec, r.value.as_deref());
        put_varlong(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes(&mut rec, Some(k.as_bytes()));
            put_bytes(&mut rec, v.as_deref());
        }
        put_varlong(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend_from_slice(&base_offset.to_be_bytes());
    let batch_length = (BATCH_HEADER_BYTES - LOG_OVERHEAD + body.len()) as i32;
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, patched below
    out.extend_from_slice(&0i16.to_be_bytes()); // attributes
    out.extend_from_slice(&((records.len() - 1) as i32).to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    out.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    out.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    out.extend_from_slice(&(records.len() as i32).to_be_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A copy of an uncompressed `batch` with its records compressed by `codec` (attributes,
/// length and CRC fixed). For internal writers and tests.
pub fn compress_batch(batch: &[u8], codec: i16) -> std::io::Result<Vec<u8>> {
    let header = BatchHeader::parse(batch).map_err(|e| std::io::Error::other(e.to_string()))?;
    let records = &batch[BATCH_HEADER_BYTES..header.total_size()];
    let compressed = crate::compression::compress(codec, records)?;
    Ok(with_records(
        &batch[..BATCH_HEADER_BYTES],
        codec,
        &compressed,
    ))
}

/// A batch made of the 61-byte `header` and `records` already encoded with `codec`: the
/// length, the codec bits of the attributes and the CRC are set to match.
pub fn with_records(header: &[u8], codec: i16, records: &[u8]) -> Vec<u8> {
    assert_eq!(header.len(), BATCH_HEADER_BYTES, "a whole batch header");
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + records.len());
    out.extend_from_slice(header);
    out.extend_from_slice(records);
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = i16::from_be_bytes([out[21], out[22]]);
    let attributes = (attributes & !COMPRESSION_MASK) | (codec & COMPRESSION_MASK);
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Sets a batch's producer id, epoch and base sequence (an idempotent producer's batch) and
/// fixes the CRC. For tests and tools.
pub fn set_producer(batch: &mut [u8], producer_id: i64, epoch: i16, base_sequence: i32) {
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    fix_crc(batch);
}

/// Recomputes the CRC of a whole batch after its bytes were changed (tests, fuzz seeds).
pub fn fix_crc(batch: &mut [u8]) {
    if let Ok(h) = BatchHeader::parse(batch) {
        if batch.len() >= h.total_size() {
            let crc = crc32c::crc32c(&batch[CRC_START..h.total_size()]);
            batch[17..21].copy_from_slice(&crc.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: i64) -> NewRecord {
        NewRecord {
            key: Some(format!("k{i}").into_bytes()),
            value: if i % 3 == 0 {
                None
            } else {
                Some(vec![i as u8; i as usize])
            },
            headers: vec![("h".into(), Some(b"v".to_vec()))],
            timestamp: 1000 + i * 10,
        }
    }

    #[test]
    fn build_validate_and_decode_round_trip() {
        let records: Vec<_> = (0..5).map(rec).collect();
        let mut batch = build_batch(0, &records);
        let header = validate_produced(&batch).expect("valid");
        assert_eq!(header.records_count, 5);
        assert_eq!(header.max_timestamp, 1040);
        patch_base_offset(&mut batch, 100);
        patch_leader_epoch(&mut batch, 7);
        let header = validate(&batch).expect("patching keeps the CRC valid");
        assert_eq!(header.base_offset, 100);
        assert_eq!(header.partition_leader_epoch, 7);
        let decoded = uncompressed_records(&batch).expect("decodes");
        assert_eq!(decoded.len(), 5);
        for (i, r) in decoded.iter().enumerate() {
            assert_eq!(r.offset, 100 + i as i64);
            assert_eq!(r.timestamp, 1000 + i as i64 * 10);
            assert_eq!(r.value.map(|v| v.to_vec()), records[i].value);
        }
    }

    #[test]
    fn corrupt_and_incomplete_are_reported() {
        let batch = build_batch(0, &[rec(1)]);
        assert_eq!(validate(&batch[..30]), Err(BatchError::Incomplete));
        assert_eq!(
            validate(&batch[..batch.len() - 1]),
            Err(BatchError::Incomplete)
        );
        let mut bad = batch.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(validate(&bad), Err(BatchError::Corrupt("CRC32C mismatch")));
        let mut v1 = batch.clone();
        v1[16] = 1;
        assert_eq!(validate(&v1), Err(BatchError::UnsupportedMagic(1)));
        assert!(validate(&[0u8; 100]).is_err());
    }

    #[test]
    fn iterator_stops_at_torn_tail() {
        let mut buf = build_batch(0, &[rec(1), rec(2)]);
        let second = build_batch(2, &[rec(3)]);
        buf.extend_from_slice(&second);
        buf.extend_from_slice(&second[..20]);
        let mut it = BatchIter::new(&buf, true);
        assert_eq!(it.by_ref().count(), 2);
        assert_eq!(it.error(), Some(BatchError::Incomplete));
        assert_eq!(it.position(), buf.len() - 20);
    }
}

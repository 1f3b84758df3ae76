//! Validation of the records a client produces — what Kafka's `LogValidator` checks for
//! record batch v2, done before the partition lock is taken and before a byte is written.
//!
//! A client append must be exactly one batch (Kafka since 2.4, KAFKA-8428) whose header is
//! whole and consistent (length, magic 2, CRC32C over bytes 21.., base offset 0, record count
//! = last offset delta + 1 > 0, no control bit, a producer id only with a sequence ≥ 0, no
//! LogAppendTime bit) and no larger than `max.message.bytes`. Then every record is parsed —
//! length, attributes, timestamp delta, offset delta (must equal its index), key, value,
//! headers (keys not null), each field within the record's declared length, exactly
//! `records_count` records and not a byte more. Compressed batches are parsed the same way
//! from a streaming decompressor ([`crate::compression`]): memory stays bounded whatever the
//! payload claims and output is capped at [`DECOMPRESSED_BATCH_BYTES_MAX`]. A compacted
//! topic refuses records without a key.
//!
//! Nothing is copied: uncompressed records are parsed in place, compressed ones in 16 KiB
//! pieces; the stored bytes stay the producer's bytes. Errors say which Kafka error they
//! are ([`BatchError`]): unparseable bytes are `Corrupt` (CORRUPT_MESSAGE), well-formed but
//! refused batches `Invalid` (INVALID_RECORD). Pure functions; safe from any thread.

use std::io::BufRead;

use crate::batch::{self, BatchError, BatchHeader, BatchIter, BATCH_HEADER_BYTES};
use crate::compression::{self, DecompressError};

/// Decompressed bytes one batch may expand to (Kafka has no such limit; a bomb would cost
/// seconds of a handler thread). Over it the batch is refused as too large.
pub const DECOMPRESSED_BATCH_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Smallest record body: attributes, timestamp delta, offset delta, key and value lengths,
/// header count — one byte each.
const RECORD_BODY_BYTES_MIN: i64 = 6;
/// A record timestamp of -1: none given (Kafka's RecordBatch.NO_TIMESTAMP).
pub const NO_TIMESTAMP: i64 = -1;

/// What the topic's config asks of produced records.
#[derive(Debug, Clone, Copy)]
pub struct ProduceRules {
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: usize,
    /// `cleanup.policy` contains `compact`: every record needs a key.
    pub compacted: bool,
}

/// A batch that passed validation, with what validation learned about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidatedBatch {
    /// Position of the batch within the validated bytes.
    pub position: usize,
    pub header: BatchHeader,
    /// The greatest record timestamp (the header's claim is not trusted).
    pub max_timestamp: i64,
    /// The smallest record timestamp other than -1 (no timestamp); i64::MAX if none.
    pub min_timestamp: i64,
    /// Bytes of record data after decompression (the batch size when uncompressed).
    pub uncompressed_bytes: u64,
}

/// Records ready to append: only the functions of this module make one.
#[derive(Debug)]
pub struct ValidatedRecords<'a> {
    bytes: &'a [u8],
    batches: Vec<ValidatedBatch>,
}

impl<'a> ValidatedRecords<'a> {
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    pub fn batches(&self) -> &[ValidatedBatch] {
        &self.batches
    }
    pub fn records_count(&self) -> i64 {
        self.batches
            .iter()
            .map(|b| b.header.records_count as i64)
            .sum()
    }
}

/// Validates what a client produced to one partition (the whole `records` field).
pub fn validate_client_records<'a>(
    bytes: &'a [u8],
    rules: &ProduceRules,
) -> Result<ValidatedRecords<'a>, BatchError> {
    let header = batch::validate(bytes)?;
    if header.total_size() != bytes.len() {
        return Err(if bytes.len() < header.total_size() {
            BatchError::Incomplete
        } else {
            BatchError::Invalid("more than one record batch for a partition")
        });
    }
    if header.total_size() > rules.max_message_bytes {
        return Err(BatchError::TooLarge {
            size: header.total_size(),
            max: rules.max_message_bytes,
        });
    }
    check_client_header(&header)?;
    let (max_timestamp, min_timestamp, uncompressed_bytes) = check_records(bytes, &header, rules)?;
    Ok(ValidatedRecords {
        bytes,
        batches: vec![ValidatedBatch {
            position: 0,
            header,
            max_timestamp,
            min_timestamp,
            uncompressed_bytes,
        }],
    })
}

/// Validates batches the broker itself built (offset commits, tests): whole batches with
/// valid headers and CRCs, records parsed; any number of batches.
pub fn validate_internal_records(bytes: &[u8]) -> Result<ValidatedRecords<'_>, BatchError> {
    let rules = ProduceRules {
        max_message_bytes: usize::MAX,
        compacted: false,
    };
    let mut batches = Vec::new();
    let mut iter = BatchIter::new(bytes, true);
    for (position, header) in iter.by_ref() {
        let whole = &bytes[position..position + header.total_size()];
        check_client_header(&header)?;
        let (max_timestamp, min_timestamp, uncompressed_bytes) =
            check_records(whole, &header, &rules)?;
        batches.push(ValidatedBatch {
            position,
            header,
            max_timestamp,
            min_timestamp,
            uncompressed_bytes,
        });
    }
    if let Some(e) = iter.error() {
        return Err(e);
    }
    if batches.is_empty() || iter.position() != bytes.len() {
        return Err(BatchError::Incomplete);
    }
    Ok(ValidatedRecords { bytes, batches })
}

/// Validates what a follower copies from its leader: whole batches with valid headers and
/// CRCs, offsets increasing from batch to batch; records are not parsed (the leader did).
/// An incomplete batch at the end (a fetch cut at its size limit) is left out; `None` if
/// no whole batch remains.
pub fn validate_replica_records(bytes: &[u8]) -> Result<Option<ValidatedRecords<'_>>, BatchError> {
    let mut batches: Vec<ValidatedBatch> = Vec::new();
    let mut iter = BatchIter::new(bytes, true);
    for (position, header) in iter.by_ref() {
        if header.last_offset_delta < 0 || header.records_count < 0 {
            return Err(BatchError::Invalid("a batch with a negative offset range"));
        }
        if let Some(prev) = batches.last() {
            if header.base_offset < prev.header.next_offset() {
                return Err(BatchError::Invalid(
                    "replicated batches out of offset order",
                ));
            }
        }
        batches.push(ValidatedBatch {
            position,
            max_timestamp: header.max_timestamp,
            min_timestamp: header.base_timestamp,
            uncompressed_bytes: header.total_size() as u64,
            header,
        });
    }
    match iter.error() {
        None | Some(BatchError::Incomplete) => {}
        Some(e) => return Err(e),
    }
    if batches.is_empty() {
        return Ok(None);
    }
    let end = iter.position();
    Ok(Some(ValidatedRecords {
        bytes: &bytes[..end],
        batches,
    }))
}

fn check_client_header(h: &BatchHeader) -> Result<(), BatchError> {
    if h.base_offset != 0 {
        return Err(BatchError::Invalid(
            "a produced batch must have base offset 0",
        ));
    }
    if h.records_count <= 0 {
        return Err(BatchError::Invalid("empty record batch"));
    }
    if h.records_count as i64 != h.last_offset_delta as i64 + 1 {
        return Err(BatchError::Invalid(
            "record count does not match the batch's offset range",
        ));
    }
    if h.is_control() {
        return Err(BatchError::Invalid("clients may not write control records"));
    }
    if h.producer_id >= 0 && h.base_sequence < 0 {
        return Err(BatchError::Invalid(
            "a batch with a producer id needs a sequence number",
        ));
    }
    if h.is_log_append_time() {
        return Err(BatchError::InvalidTimestamp(
            "producers may not set the LogAppendTime timestamp type",
        ));
    }
    Ok(())
}

/// Parses every record of one whole batch; returns its greatest and smallest record
/// timestamps and its decompressed record bytes.
fn check_records(
    whole: &[u8],
    header: &BatchHeader,
    rules: &ProduceRules,
) -> Result<(i64, i64, u64), BatchError> {
    let payload = &whole[BATCH_HEADER_BYTES..header.total_size()];
    let mut min_timestamp = i64::MAX;
    let mut smallest = |_, timestamp: i64| {
        if timestamp != NO_TIMESTAMP {
            min_timestamp = min_timestamp.min(timestamp);
        }
        true
    };
    if header.compression() == compression::NONE {
        let mut src: &[u8] = payload;
        let max_timestamp = parse_records(&mut src, header, rules, &mut smallest)?;
        if !src.is_empty() {
            return Err(BatchError::Corrupt("bytes after the last record"));
        }
        return Ok((max_timestamp, min_timestamp, payload.len() as u64));
    }
    let mut src =
        compression::decompress(header.compression(), payload, DECOMPRESSED_BATCH_BYTES_MAX)
            .map_err(|e| match e {
                DecompressError::UnknownCodec(_) => {
                    BatchError::Corrupt("unknown compression codec")
                }
                DecompressError::Corrupt => {
                    BatchError::Corrupt("compressed records do not decompress")
                }
                DecompressError::TooLarge => BatchError::DecompressedTooLarge,
            })?;
    let result = parse_records(&mut src, header, rules, &mut smallest).and_then(|max_timestamp| {
        match compression::at_end(&mut src) {
            Ok(true) => Ok(max_timestamp),
            Ok(false) => Err(BatchError::Corrupt("bytes after the last record")),
            Err(_) => Err(BatchError::Corrupt("compressed records do not decompress")),
        }
    });
    let over_budget = src.get_ref().exceeded();
    match result {
        Err(_) if over_budget => Err(BatchError::DecompressedTooLarge),
        Err(e) => Err(e),
        // At the end the buffer is drained, so what came out is what the records used.
        Ok(max_timestamp) => Ok((
            max_timestamp,
            min_timestamp,
            DECOMPRESSED_BATCH_BYTES_MAX - src.get_ref().remaining(),
        )),
    }
}

/// Reads `header.records_count` records from `src`; returns the greatest timestamp. Each
/// record's offset and timestamp go to `visit`, and reading stops early when it answers
/// false.
fn parse_records<R: BufRead>(
    src: &mut R,
    header: &BatchHeader,
    rules: &ProduceRules,
    visit: &mut dyn FnMut(i64, i64) -> bool,
) -> Result<i64, BatchError> {
    let mut reader = RecordReader {
        src,
        left: i64::MAX,
    };
    let mut max_timestamp = i64::MIN;
    for index in 0..header.records_count {
        reader.left = i64::MAX;
        let length = reader.varint()?;
        if length < RECORD_BODY_BYTES_MIN {
            return Err(BatchError::Corrupt("record length too small"));
        }
        reader.left = length;
        reader.byte()?; // attributes: unused in v2
        let timestamp_delta = reader.varlong()?;
        let offset_delta = reader.varint()?;
        if offset_delta != index as i64 {
            // No v2 client writes this; Kafka would rewrite the batch, kbroker refuses it.
            return Err(BatchError::Corrupt("record offset delta out of sequence"));
        }
        let key_length = reader.varint()?;
        if key_length < 0 && rules.compacted {
            return Err(BatchError::Invalid(
                "a compacted topic needs a key on every record",
            ));
        }
        reader.skip(key_length)?;
        let value_length = reader.varint()?;
        reader.skip(value_length)?;
        let headers = reader.varint()?;
        if headers < 0 {
            return Err(BatchError::Corrupt("negative record header count"));
        }
        for _ in 0..headers {
            let key = reader.varint()?;
            if key < 0 {
                return Err(BatchError::Corrupt("record header without a key"));
            }
            reader.skip(key)?;
            let value = reader.varint()?;
            reader.skip(value)?;
        }
        if reader.left != 0 {
            return Err(BatchError::Corrupt(
                "record length does not match its fields",
            ));
        }
        let timestamp = header
            .base_timestamp
            .checked_add(timestamp_delta)
            .ok_or(BatchError::Corrupt("record timestamp overflows"))?;
        max_timestamp = max_timestamp.max(timestamp);
        if !visit(header.base_offset + offset_delta, timestamp) {
            break;
        }
    }
    Ok(max_timestamp)
}

/// A copy of the validated batch `whole` with its records in `codec` at `level` (Kafka's
/// `compression.type` of a topic when it is not `producer`): decompressed within
/// [`DECOMPRESSED_BATCH_BYTES_MAX`], recompressed, attributes, length and CRC fixed; offsets,
/// timestamps and the producer's id, epoch and sequence kept.
pub fn recompress(whole: &[u8], codec: i16, level: Option<i32>) -> Result<Vec<u8>, BatchError> {
    use std::io::Read;
    let header = BatchHeader::parse(whole)?;
    let payload = whole
        .get(BATCH_HEADER_BYTES..header.total_size())
        .ok_or(BatchError::Corrupt("batch shorter than its length"))?;
    let plain: std::borrow::Cow<'_, [u8]> = if header.compression() == compression::NONE {
        payload.into()
    } else {
        let mut src =
            compression::decompress(header.compression(), payload, DECOMPRESSED_BATCH_BYTES_MAX)
                .map_err(|_| BatchError::Corrupt("compressed records do not decompress"))?;
        let mut out = Vec::new();
        src.read_to_end(&mut out)
            .map_err(|_| BatchError::Corrupt("compressed records do not decompress"))?;
        out.into()
    };
    let records = compression::compress_with_level(codec, &plain, level)
        .map_err(|_| BatchError::Invalid("records could not be recompressed"))?;
    Ok(batch::with_records(
        &whole[..BATCH_HEADER_BYTES],
        codec,
        &records,
    ))
}

/// The offset and timestamp of the first record of the stored batch `whole` for which
/// `wanted(offset, timestamp)` holds, decompressing it if it is compressed (in pieces, within
/// [`DECOMPRESSED_BATCH_BYTES_MAX`]). `None` when no record matches or the batch does not
/// parse.
pub fn find_record(whole: &[u8], wanted: impl Fn(i64, i64) -> bool) -> Option<(i64, i64)> {
    let header = BatchHeader::parse(whole).ok()?;
    if whole.len() < header.total_size() {
        return None;
    }
    let rules = ProduceRules {
        max_message_bytes: usize::MAX,
        compacted: false,
    };
    let mut found = None;
    let mut visit = |offset, timestamp| {
        if wanted(offset, timestamp) {
            found = Some((offset, timestamp));
            return false;
        }
        true
    };
    let payload = &whole[BATCH_HEADER_BYTES..header.total_size()];
    if header.compression() == compression::NONE {
        let mut src: &[u8] = payload;
        parse_records(&mut src, &header, &rules, &mut visit).ok()?;
    } else {
        let mut src =
            compression::decompress(header.compression(), payload, DECOMPRESSED_BATCH_BYTES_MAX)
                .ok()?;
        parse_records(&mut src, &header, &rules, &mut visit).ok()?;
    }
    found
}

/// Fields of one record, read from a buffered stream within the record's declared length.
struct RecordReader<'r, R> {
    src: &'r mut R,
    /// Bytes of the current record not yet read.
    left: i64,
}

impl<R: BufRead> RecordReader<'_, R> {
    fn byte(&mut self) -> Result<u8, BatchError> {
        if self.left <= 0 {
            return Err(BatchError::Corrupt("record field past the record's length"));
        }
        let buf = self
            .src
            .fill_buf()
            .map_err(|_| BatchError::Corrupt("compressed records do not decompress"))?;
        let Some(&b) = buf.first() else {
            return Err(BatchError::Corrupt(
                "records end before the batch's record count",
            ));
        };
        self.src.consume(1);
        self.left -= 1;
        Ok(b)
    }

    fn unsigned(&mut self, max_bytes: u32) -> Result<u64, BatchError> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BatchError::Corrupt("varint too long"))
    }

    /// A zig-zag varint (at most 5 bytes, an i32).
    fn varint(&mut self) -> Result<i64, BatchError> {
        let raw = self.unsigned(5)?;
        if raw > u64::from(u32::MAX) {
            return Err(BatchError::Corrupt("varint too long"));
        }
        let raw = raw as u32;
        Ok(i64::from((raw >> 1) as i32 ^ -((raw & 1) as i32)))
    }

    /// A zig-zag varlong (at most 10 bytes).
    fn varlong(&mut self) -> Result<i64, BatchError> {
        let raw = self.unsigned(10)?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// Skips a field of `len` bytes (a negative length is a null field: nothing to skip).
    fn skip(&mut self, len: i64) -> Result<(), BatchError> {
        if len <= 0 {
            return Ok(());
        }
        if len > self.left {
            return Err(BatchError::Corrupt("record field past the record's length"));
        }
        let mut todo = len as u64;
        while todo > 0 {
            let buf = self
                .src
                .fill_buf()
                .map_err(|_| BatchError::Corrupt("compressed records do not decompress"))?;
            if buf.is_empty() {
                return Err(BatchError::Corrupt(
                    "records end before the batch's record count",
                ));
            }
            let n = (buf.len() as u64).min(todo) as usize;
            self.src.consume(n);
            todo -= n as u64;
        }
        self.left -= len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build_batch, compress_batch, fix_crc, NewRecord};
    use crate::compression::{GZIP, LZ4, SNAPPY, ZSTD};

    const RULES: ProduceRules = ProduceRules {
        max_message_bytes: 1 << 20,
        compacted: false,
    };

    fn records(n: usize) -> Vec<NewRecord> {
        (0..n)
            .map(|i| NewRecord {
                key: (i % 4 != 0).then(|| format!("k{i}").into_bytes()),
                value: (i % 5 != 0).then(|| vec![b'v'; i * 3]),
                headers: vec![("h".into(), Some(b"x".to_vec())), ("n".into(), None)],
                timestamp: 1_000 + i as i64,
            })
            .collect()
    }

    #[test]
    fn valid_batches_of_every_codec_pass_with_their_true_max_timestamp() {
        let plain = build_batch(0, &records(50));
        for codec in [0, GZIP, SNAPPY, LZ4, ZSTD] {
            let b = if codec == 0 {
                plain.clone()
            } else {
                compress_batch(&plain, codec).expect("compress")
            };
            let v = validate_client_records(&b, &RULES).expect("valid");
            assert_eq!(v.records_count(), 50);
            assert_eq!(v.batches()[0].max_timestamp, 1_049, "codec {codec}");
            assert!(v.batches()[0].uncompressed_bytes >= (plain.len() - BATCH_HEADER_BYTES) as u64);
        }
    }

    #[test]
    fn corrupt_payloads_of_every_codec_are_refused() {
        let plain = build_batch(0, &records(20));
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            let good = compress_batch(&plain, codec).expect("compress");
            // random payload
            let mut bad = good[..BATCH_HEADER_BYTES].to_vec();
            bad.extend((0..500u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
            let len = (bad.len() - 12) as i32;
            bad[8..12].copy_from_slice(&len.to_be_bytes());
            fix_crc(&mut bad);
            assert!(
                matches!(
                    validate_client_records(&bad, &RULES),
                    Err(BatchError::Corrupt(_))
                ),
                "random payload codec {codec}"
            );
            // valid compression of garbage records
            let mut garbage = plain[..BATCH_HEADER_BYTES].to_vec();
            garbage.extend_from_slice(&[0x7f; 300]);
            let len = (garbage.len() - 12) as i32;
            garbage[8..12].copy_from_slice(&len.to_be_bytes());
            let garbage = compress_batch(&garbage, codec).expect("compress");
            assert!(
                matches!(
                    validate_client_records(&garbage, &RULES),
                    Err(BatchError::Corrupt(_))
                ),
                "garbage records codec {codec}"
            );
            // truncated compressed stream
            let mut cut = good[..good.len() - 8].to_vec();
            let len = (cut.len() - 12) as i32;
            cut[8..12].copy_from_slice(&len.to_be_bytes());
            fix_crc(&mut cut);
            assert!(
                validate_client_records(&cut, &RULES).is_err(),
                "cut codec {codec}"
            );
        }
    }

    #[test]
    fn kafka_batch_rules() {
        let one = build_batch(0, &records(3));
        let mut two = one.clone();
        two.extend_from_slice(&one);
        assert!(matches!(
            validate_client_records(&two, &RULES),
            Err(BatchError::Invalid(_))
        ));
        let mut based = one.clone();
        crate::batch::patch_base_offset(&mut based, 5);
        assert!(matches!(
            validate_client_records(&based, &RULES),
            Err(BatchError::Invalid(_))
        ));
        let keyless = build_batch(0, &records(2)); // record 0 has no key
        let compacted = ProduceRules {
            compacted: true,
            ..RULES
        };
        assert!(matches!(
            validate_client_records(&keyless, &compacted),
            Err(BatchError::Invalid(_))
        ));
        assert!(matches!(
            validate_client_records(
                &one,
                &ProduceRules {
                    max_message_bytes: 10,
                    ..RULES
                }
            ),
            Err(BatchError::TooLarge { .. })
        ));
        // a count that the records do not back up
        let mut short = one.clone();
        short[57..61].copy_from_slice(&4i32.to_be_bytes());
        short[23..27].copy_from_slice(&3i32.to_be_bytes());
        fix_crc(&mut short);
        assert!(matches!(
            validate_client_records(&short, &RULES),
            Err(BatchError::Corrupt(_))
        ));
        // control batches come only from the broker
        let mut control = one.clone();
        control[22] |= 0x20;
        fix_crc(&mut control);
        assert!(matches!(
            validate_client_records(&control, &RULES),
            Err(BatchError::Invalid(_))
        ));
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_budget() {
        // One record whose value is 300 MB of zeros, zstd-compressed into a few hundred KB.
        // attributes, timestamp delta, offset delta, key length -1
        let mut rec = vec![0u8, 0, 0, 1];
        let value_len: i64 = 300 << 20;
        let mut z = ((value_len << 1) ^ (value_len >> 63)) as u64;
        while z >= 0x80 {
            rec.push((z as u8) | 0x80);
            z >>= 7;
        }
        rec.push(z as u8);
        let header_len = rec.len();
        let body_len = (header_len as i64 + value_len + 1) as u64;
        let mut stream = Vec::new();
        let mut z = body_len << 1;
        while z >= 0x80 {
            stream.push((z as u8) | 0x80);
            z >>= 7;
        }
        stream.push(z as u8);
        stream.extend_from_slice(&rec);
        let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).expect("zstd");
        use std::io::Write;
        encoder.write_all(&stream).expect("zstd");
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..300 {
            encoder.write_all(&chunk).expect("zstd");
        }
        encoder.write_all(&[0]).expect("zstd"); // header count
        let compressed = encoder.finish().expect("zstd");
        let mut b = build_batch(0, &records(1))[..BATCH_HEADER_BYTES].to_vec();
        b.extend_from_slice(&compressed);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[21..23].copy_from_slice(&(ZSTD).to_be_bytes());
        fix_crc(&mut b);
        assert!(matches!(
            validate_client_records(&b, &RULES),
            Err(BatchError::DecompressedTooLarge)
        ));
    }
}

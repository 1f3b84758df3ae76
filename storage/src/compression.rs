//! Streaming decompression of a record batch's records, with bounded memory and output.
//!
//! Kafka's codecs (attributes bits 0-2): 1 gzip (one or more gzip members), 2 snappy (the
//! xerial framing Java clients write — magic `\x82SNAPPY\0`, two i32 versions, then blocks of
//! `i32 compressed length | raw snappy` — or a single raw snappy block, as librdkafka may
//! write), 3 lz4 (the LZ4 frame format), 4 zstd (one or more zstd frames).
//!
//! Memory: every decoder here holds a bounded state whatever the input claims — gzip its
//! 32 KiB window, lz4 at most two blocks of the frame's declared block size (≤ 4 MiB), zstd a
//! window of at most 2^[`ZSTD_WINDOW_LOG_MAX`] bytes, snappy one block, which must declare a
//! decompressed length within the output budget before it is inflated. Output is read through
//! [`Limited`], which fails once more than the budget has come out, so a small frame that
//! expands to gigabytes costs at most the budget in CPU and nothing in memory (callers read
//! it in small pieces). Pure functions over a byte slice; safe from any thread.

use std::io::{self, BufRead, BufReader, Read};

/// Compression codec ids (record batch attributes, bits 0-2).
pub const NONE: i16 = 0;
pub const GZIP: i16 = 1;
pub const SNAPPY: i16 = 2;
pub const LZ4: i16 = 3;
pub const ZSTD: i16 = 4;

/// Largest zstd window accepted (16 MiB). Kafka's clients compress with levels whose windows
/// are far smaller for batch-sized inputs; a frame asking for more is refused.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;
/// Buffer between a decoder and the record parser.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// The xerial snappy stream header.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_BYTES: usize = 16;

/// Why the records could not be decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecompressError {
    /// Codec id 5-7.
    UnknownCodec(i16),
    /// The payload is not valid data of its codec.
    Corrupt,
    /// More than the output budget came out.
    TooLarge,
}

/// A reader that fails with `TooLarge` after `budget` bytes.
pub struct Limited<R> {
    inner: R,
    budget: u64,
    exceeded: bool,
}

impl<R> Limited<R> {
    /// True once the inner reader produced more than the budget.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }
    /// Budget left.
    pub fn remaining(&self) -> u64 {
        self.budget
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.budget == 0 {
            // One byte more tells "exactly at the budget" from "over it".
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded = true;
                    Err(io::Error::other("decompressed output over budget"))
                }
            };
        }
        let want = buf.len().min(self.budget.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.budget -= n as u64;
        Ok(n)
    }
}

/// The decompressed records of `payload`, as a buffered stream of at most `budget` bytes.
pub fn decompress<'a>(
    codec: i16,
    payload: &'a [u8],
    budget: u64,
) -> Result<BufReader<Limited<Box<dyn Read + 'a>>>, DecompressError> {
    let inner: Box<dyn Read + 'a> = match codec {
        GZIP => Box::new(flate2::bufread::MultiGzDecoder::new(payload)),
        SNAPPY => Box::new(SnappyReader::new(payload, budget)?),
        LZ4 => Box::new(lz4_flex::frame::FrameDecoder::new(payload)),
        ZSTD => {
            let mut d = zstd::stream::read::Decoder::with_buffer(payload)
                .map_err(|_| DecompressError::Corrupt)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|_| DecompressError::Corrupt)?;
            Box::new(d)
        }
        other => return Err(DecompressError::UnknownCodec(other)),
    };
    Ok(BufReader::with_capacity(
        READ_BUFFER_BYTES,
        Limited {
            inner,
            budget,
            exceeded: false,
        },
    ))
}

/// Snappy, xerial-framed or one raw block. Each block is inflated whole (snappy blocks are
/// not streamable) once its declared length fits the remaining budget.
struct SnappyReader<'a> {
    rest: &'a [u8],
    framed: bool,
    block: Vec<u8>,
    at: usize,
    budget: u64,
    done: bool,
}

impl<'a> SnappyReader<'a> {
    fn new(payload: &'a [u8], budget: u64) -> Result<SnappyReader<'a>, DecompressError> {
        let framed = payload.len() >= XERIAL_HEADER_BYTES && payload[..8] == XERIAL_MAGIC;
        Ok(SnappyReader {
            rest: if framed {
                &payload[XERIAL_HEADER_BYTES..]
            } else {
                payload
            },
            framed,
            block: Vec::new(),
            at: 0,
            budget,
            done: false,
        })
    }

    /// Inflates the next block; false at the end of the stream.
    fn next_block(&mut self) -> io::Result<bool> {
        let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "corrupt snappy data");
        if self.done || self.rest.is_empty() {
            self.done = true;
            return Ok(false);
        }
        let compressed = if self.framed {
            if self.rest.len() < 4 {
                return Err(corrupt());
            }
            let len = i32::from_be_bytes([self.rest[0], self.rest[1], self.rest[2], self.rest[3]]);
            let len = usize::try_from(len).map_err(|_| corrupt())?;
            let end = 4usize.checked_add(len).ok_or_else(corrupt)?;
            let block = self.rest.get(4..end).ok_or_else(corrupt)?;
            self.rest = &self.rest[end..];
            block
        } else {
            let block = self.rest;
            self.rest = &[];
            self.done = true;
            block
        };
        let len = snap::raw::decompress_len(compressed).map_err(|_| corrupt())?;
        if len as u64 > self.budget {
            return Err(io::Error::other("decompressed output over budget"));
        }
        self.budget -= len as u64;
        self.block.clear();
        self.block.resize(len, 0);
        let n = snap::raw::Decoder::new()
            .decompress(compressed, &mut self.block)
            .map_err(|_| corrupt())?;
        if n != len {
            return Err(corrupt());
        }
        self.at = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Compresses `data` with `codec` the way Kafka's clients frame it (xerial for snappy, the
/// LZ4 frame format, gzip and zstd streams). For building batches: internal writers, tests.
pub fn compress(codec: i16, data: &[u8]) -> io::Result<Vec<u8>> {
    compress_with_level(codec, data, None)
}

/// [`compress`] at a Kafka `compression.<codec>.level` (`None` or gzip's -1: the codec's
/// default). LZ4 has one level here (lz4_flex's fast mode) whatever is asked.
pub fn compress_with_level(codec: i16, data: &[u8], level: Option<i32>) -> io::Result<Vec<u8>> {
    use std::io::Write;
    match codec {
        NONE => Ok(data.to_vec()),
        GZIP => {
            let level = match level {
                Some(l @ 1..=9) => flate2::Compression::new(l as u32),
                _ => flate2::Compression::default(),
            };
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(data)?;
            e.finish()
        }
        SNAPPY => {
            let mut out = XERIAL_MAGIC.to_vec();
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            for chunk in data.chunks(32 * 1024) {
                let c = snap::raw::Encoder::new()
                    .compress_vec(chunk)
                    .map_err(io::Error::other)?;
                out.extend_from_slice(&(c.len() as i32).to_be_bytes());
                out.extend_from_slice(&c);
            }
            Ok(out)
        }
        LZ4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(data)?;
            e.finish().map_err(io::Error::other)
        }
        ZSTD => zstd::stream::encode_all(data, level.unwrap_or(3)),
        other => Err(io::Error::other(format!("unknown codec {other}"))),
    }
}

/// True once `reader` is exhausted (reads one byte at most).
pub fn at_end<R: BufRead>(reader: &mut R) -> io::Result<bool> {
    Ok(reader.fill_buf()?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(codec: i16, payload: &[u8], budget: u64) -> Result<Vec<u8>, String> {
        let mut r = decompress(codec, payload, budget).map_err(|e| format!("{e:?}"))?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    fn sample() -> Vec<u8> {
        (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).expect("gzip");
        let gz = gz.finish().expect("gzip");
        assert_eq!(read_all(GZIP, &gz, 1 << 30).expect("gzip"), data);

        let raw = snap::raw::Encoder::new()
            .compress_vec(&data)
            .expect("snappy");
        assert_eq!(read_all(SNAPPY, &raw, 1 << 30).expect("raw snappy"), data);
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        for chunk in data.chunks(32 * 1024) {
            let c = snap::raw::Encoder::new()
                .compress_vec(chunk)
                .expect("snappy");
            framed.extend_from_slice(&(c.len() as i32).to_be_bytes());
            framed.extend_from_slice(&c);
        }
        assert_eq!(read_all(SNAPPY, &framed, 1 << 30).expect("xerial"), data);

        let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz.write_all(&data).expect("lz4");
        let lz = lz.finish().expect("lz4");
        assert_eq!(read_all(LZ4, &lz, 1 << 30).expect("lz4"), data);

        let zs = zstd::stream::encode_all(&data[..], 3).expect("zstd");
        assert_eq!(read_all(ZSTD, &zs, 1 << 30).expect("zstd"), data);
    }

    #[test]
    fn garbage_and_bombs_are_errors_not_allocations() {
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761u32) >> 24) as u8)
            .collect();
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            assert!(read_all(codec, &garbage, 1 << 30).is_err(), "codec {codec}");
        }
        assert!(matches!(
            decompress(5, &garbage, 1),
            Err(DecompressError::UnknownCodec(5))
        ));
        // 200 MB of zeros in a few KB: stopped at the budget.
        let zeros = vec![0u8; 200 << 20];
        let zs = zstd::stream::encode_all(&zeros[..], 19).expect("zstd");
        assert!(zs.len() < 64 * 1024, "a bomb: {} bytes", zs.len());
        let mut r = decompress(ZSTD, &zs, 1 << 20).expect("starts");
        let mut sink = [0u8; 4096];
        let mut total = 0u64;
        let err = loop {
            match r.read(&mut sink) {
                Ok(0) => break None,
                Ok(n) => total += n as u64,
                Err(e) => break Some(e),
            }
        };
        assert!(err.is_some() && total <= 1 << 20, "stopped after {total}");
        assert!(r.get_ref().exceeded());
        let huge = snap::raw::Encoder::new()
            .compress_vec(&zeros[..8 << 20])
            .expect("snappy");
        assert!(
            read_all(SNAPPY, &huge, 1 << 20).is_err(),
            "block over the budget is refused"
        );
    }
}

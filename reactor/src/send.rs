//! Writing one response: byte chunks with writev, file regions with sendfile(2).
//!
//! A response is a queue of [`Chunk`]s. Consecutive byte chunks go out in one `writev` (up
//! to [`IOVECS_MAX`] of them); a file region goes out with `sendfile` from the file's
//! descriptor at its offset, so its bytes move from the page cache to the socket without
//! entering user space. Partial writes advance the queue; `EAGAIN` returns
//! [`WriteOutcome::WouldBlock`] and the processor waits for the socket to be writable.
//!
//! Checked before anything is written: the 4-byte size prefix (in the leading byte chunks)
//! equals the length of the rest, and every file region's end fits in `off_t`. A response
//! failing these is a broker bug: the processor logs it and closes the connection.
//!
//! A `sendfile` that returns 0 before its region is done means the file is shorter than the
//! region (truncated by retention or recovery); the connection is closed, because the size
//! prefix already promised bytes that do not exist.
//!
//! Thread safety: owned by one connection on one processor thread.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use bytes::Buf;
use nix::libc::off_t;

use crate::frame::FRAME_SIZE_PREFIX_BYTES;
use crate::request::Chunk;
use crate::stats::ReactorStats;

/// Byte chunks gathered into one writev call.
pub const IOVECS_MAX: usize = 64;
/// Largest count passed to one sendfile call (Linux transfers at most 0x7ffff000 per call).
pub const SENDFILE_BYTES_PER_CALL_MAX: usize = 0x7fff_f000;

/// Why a response cannot be sent as given (a broker bug).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The leading byte chunks hold fewer than 4 bytes, so the size prefix cannot be checked.
    #[error("response does not start with a 4-byte size prefix in byte chunks")]
    PrefixMissing,
    /// The size prefix disagrees with the bytes that follow it.
    #[error("response size prefix {declared} but {actual} bytes follow")]
    SizeMismatch {
        /// The prefix.
        declared: i64,
        /// The length of the chunks after the prefix.
        actual: u64,
    },
    /// A file region's end does not fit in `off_t`.
    #[error("file region offset {offset} + len {len} out of range")]
    FileRegionOutOfRange {
        /// The region's offset.
        offset: u64,
        /// The region's length.
        len: usize,
    },
}

/// How far a write got.
#[derive(Debug)]
pub enum WriteOutcome {
    /// Every byte is written.
    Complete,
    /// The socket is full; wait for it to be writable.
    WouldBlock,
    /// The connection cannot continue.
    Closed(WriteError),
}

/// Why writing stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The socket failed.
    #[error("socket write failed: {0}")]
    Io(#[from] io::Error),
    /// The socket accepted no bytes.
    #[error("socket accepted zero bytes")]
    WriteZero,
    /// sendfile hit the end of the file before the region was sent.
    #[error("file ended {missing} bytes before its region (offset {offset})")]
    FileShrank {
        /// Where sending stopped.
        offset: u64,
        /// Region bytes that could not be sent.
        missing: usize,
    },
}

/// A response being written.
#[derive(Debug)]
pub struct ResponseSend {
    chunks: VecDeque<Chunk>,
    total_bytes: usize,
    written_bytes: usize,
}

impl ResponseSend {
    /// Validates the size prefix and file regions; drops empty chunks.
    pub fn new(chunks: Vec<Chunk>) -> Result<ResponseSend, ResponseError> {
        let chunks: VecDeque<Chunk> = chunks
            .into_iter()
            .filter(|chunk| !chunk.is_empty())
            .collect();
        for chunk in &chunks {
            if let Chunk::File { offset, len, .. } = chunk {
                let end = u64::try_from(*len)
                    .ok()
                    .and_then(|len| offset.checked_add(len));
                if end.and_then(|end| off_t::try_from(end).ok()).is_none() {
                    return Err(ResponseError::FileRegionOutOfRange {
                        offset: *offset,
                        len: *len,
                    });
                }
            }
        }
        let total_bytes: usize = chunks.iter().map(Chunk::len).sum();
        let declared = i64::from(i32::from_be_bytes(size_prefix(&chunks)?));
        let actual = (total_bytes - FRAME_SIZE_PREFIX_BYTES) as u64;
        if i64::try_from(actual).ok() != Some(declared) {
            return Err(ResponseError::SizeMismatch { declared, actual });
        }
        Ok(ResponseSend {
            chunks,
            total_bytes,
            written_bytes: 0,
        })
    }

    /// Bytes of the whole response, size prefix included.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Bytes written so far.
    pub fn written_bytes(&self) -> usize {
        self.written_bytes
    }

    /// Writes until done, `WouldBlock`, or failure. Counts bytes in `stats`.
    pub fn write_to<S: Write + AsFd>(
        &mut self,
        socket: &mut S,
        stats: &ReactorStats,
    ) -> WriteOutcome {
        loop {
            let result = match self.chunks.front() {
                None => {
                    assert_eq!(self.written_bytes, self.total_bytes);
                    return WriteOutcome::Complete;
                }
                Some(Chunk::Bytes(_)) => self.write_bytes(socket, stats),
                Some(Chunk::File { .. }) => self.send_file(socket, stats),
            };
            match result {
                Ok(()) => continue,
                Err(WriteError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                    return WriteOutcome::WouldBlock;
                }
                Err(WriteError::Io(error)) if error.kind() == io::ErrorKind::Interrupted => {
                    continue
                }
                Err(error) => return WriteOutcome::Closed(error),
            }
        }
    }

    fn write_bytes<S: Write>(
        &mut self,
        socket: &mut S,
        stats: &ReactorStats,
    ) -> Result<(), WriteError> {
        let mut slices = [IoSlice::new(&[]); IOVECS_MAX];
        let mut count = 0;
        for chunk in self.chunks.iter().take(IOVECS_MAX) {
            let Chunk::Bytes(bytes) = chunk else { break };
            slices[count] = IoSlice::new(bytes);
            count += 1;
        }
        assert!(count > 0, "write_bytes called without a leading byte chunk");
        let written = socket.write_vectored(&slices[..count])?;
        if written == 0 {
            return Err(WriteError::WriteZero);
        }
        stats.bytes_out.fetch_add(written as u64, Ordering::Relaxed);
        self.consume_bytes(written);
        Ok(())
    }

    fn consume_bytes(&mut self, mut written: usize) {
        self.written_bytes += written;
        assert!(self.written_bytes <= self.total_bytes);
        while written > 0 {
            let Some(Chunk::Bytes(bytes)) = self.chunks.front_mut() else {
                panic!("writev reported more bytes than the byte chunks hold");
            };
            if written < bytes.len() {
                bytes.advance(written);
                return;
            }
            written -= bytes.len();
            self.chunks.pop_front();
        }
    }

    fn send_file<S: AsFd>(&mut self, socket: &S, stats: &ReactorStats) -> Result<(), WriteError> {
        let Some(Chunk::File { file, offset, len }) = self.chunks.front_mut() else {
            panic!("send_file called without a leading file chunk");
        };
        assert!(*len > 0, "empty chunks are dropped at construction");
        let sent = sendfile_once(socket, file, *offset, *len)?;
        if sent == 0 {
            return Err(WriteError::FileShrank {
                offset: *offset,
                missing: *len,
            });
        }
        assert!(sent <= *len);
        stats
            .sendfile_bytes
            .fetch_add(sent as u64, Ordering::Relaxed);
        stats.bytes_out.fetch_add(sent as u64, Ordering::Relaxed);
        self.written_bytes += sent;
        *offset += sent as u64;
        *len -= sent;
        if *len == 0 {
            self.chunks.pop_front();
        }
        Ok(())
    }
}

/// One sendfile(2) call for at most `len` bytes of `file` from `offset`.
fn sendfile_once<S: AsFd>(
    socket: &S,
    file: &File,
    offset: u64,
    len: usize,
) -> Result<usize, WriteError> {
    let Ok(mut file_offset) = off_t::try_from(offset) else {
        panic!("file region offsets are checked at construction");
    };
    let count = len.min(SENDFILE_BYTES_PER_CALL_MAX);
    match nix::sys::sendfile::sendfile(socket.as_fd(), file.as_fd(), Some(&mut file_offset), count)
    {
        Ok(sent) => Ok(sent),
        Err(errno) => Err(WriteError::Io(io::Error::from(errno))),
    }
}

/// The 4-byte prefix, read across the leading byte chunks.
fn size_prefix(chunks: &VecDeque<Chunk>) -> Result<[u8; FRAME_SIZE_PREFIX_BYTES], ResponseError> {
    let mut prefix = [0_u8; FRAME_SIZE_PREFIX_BYTES];
    let mut filled = 0;
    for chunk in chunks {
        let Chunk::Bytes(bytes) = chunk else { break };
        let take = bytes.len().min(FRAME_SIZE_PREFIX_BYTES - filled);
        prefix[filled..filled + take].copy_from_slice(&bytes[..take]);
        filled += take;
        if filled == FRAME_SIZE_PREFIX_BYTES {
            return Ok(prefix);
        }
    }
    Err(ResponseError::PrefixMissing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    fn bytes(data: &'static [u8]) -> Chunk {
        Chunk::Bytes(Bytes::from_static(data))
    }

    fn temp_file(name: &str, contents: &[u8]) -> Arc<File> {
        let path = std::env::temp_dir().join(format!(
            "kbroker-reactor-send-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("write temp file");
        let file = File::open(&path).expect("open temp file");
        std::fs::remove_file(&path).expect("unlink temp file");
        Arc::new(file)
    }

    #[test]
    fn checks_the_size_prefix_across_chunks() {
        let ok =
            ResponseSend::new(vec![bytes(&[0, 0]), bytes(&[0, 3]), bytes(b"abc")]).expect("valid");
        assert_eq!(ok.total_bytes(), 7);
        let short = ResponseSend::new(vec![bytes(&[0, 0, 0, 4]), bytes(b"abc")]);
        assert_eq!(
            short.unwrap_err(),
            ResponseError::SizeMismatch {
                declared: 4,
                actual: 3
            }
        );
        let missing = ResponseSend::new(vec![bytes(&[0, 0])]);
        assert_eq!(missing.unwrap_err(), ResponseError::PrefixMissing);
        let file = temp_file("prefix", b"0123");
        let file_first = ResponseSend::new(vec![Chunk::File {
            file,
            offset: 0,
            len: 4,
        }]);
        assert_eq!(file_first.unwrap_err(), ResponseError::PrefixMissing);
        assert_eq!(
            ResponseSend::new(vec![]).unwrap_err(),
            ResponseError::PrefixMissing
        );
    }

    #[test]
    fn writes_bytes_and_file_regions_in_order() {
        let stats = ReactorStats::new(1, 1);
        let file = temp_file("order", b"..file-region..");
        let chunks = vec![
            bytes(&[0, 0, 0, 18]),
            bytes(b"head-"),
            Chunk::File {
                file,
                offset: 2,
                len: 11,
            },
            bytes(b""),
            bytes(b"-x"),
        ];
        let mut send = ResponseSend::new(chunks).expect("valid");
        let (mut server, mut client) = UnixStream::pair().expect("socket pair");
        assert!(matches!(
            send.write_to(&mut server, &stats),
            WriteOutcome::Complete
        ));
        drop(server);
        let mut received = Vec::new();
        client.read_to_end(&mut received).expect("read");
        assert_eq!(&received[4..], b"head-file-region-x");
        assert_eq!(stats.sendfile_bytes.load(Ordering::Relaxed), 11);
        assert_eq!(stats.bytes_out.load(Ordering::Relaxed), 22);
        assert_eq!(send.written_bytes(), 22);
    }

    #[test]
    fn a_shrunk_file_stops_the_send() {
        let stats = ReactorStats::new(1, 1);
        let file = temp_file("shrunk", b"0123456789");
        let chunks = vec![
            bytes(&[0, 0, 0, 20]),
            Chunk::File {
                file,
                offset: 0,
                len: 20,
            },
        ];
        let mut send = ResponseSend::new(chunks).expect("valid");
        let (mut server, _client) = UnixStream::pair().expect("socket pair");
        match send.write_to(&mut server, &stats) {
            WriteOutcome::Closed(WriteError::FileShrank { offset, missing }) => {
                assert_eq!((offset, missing), (10, 10));
            }
            other => panic!("expected FileShrank, got {other:?}"),
        }
        assert_eq!(stats.sendfile_bytes.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn a_full_socket_would_block_and_resumes_where_it_stopped() {
        let stats = ReactorStats::new(1, 1);
        let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let file = temp_file("large", &payload);
        let prefix = (payload.len() as i32 + 3).to_be_bytes().to_vec();
        let chunks = vec![
            Chunk::Bytes(Bytes::from(prefix)),
            Chunk::File {
                file,
                offset: 0,
                len: payload.len(),
            },
            bytes(b"end"),
        ];
        let mut send = ResponseSend::new(chunks).expect("valid");
        let (mut server, mut client) = UnixStream::pair().expect("socket pair");
        server.set_nonblocking(true).expect("nonblocking");
        assert!(matches!(
            send.write_to(&mut server, &stats),
            WriteOutcome::WouldBlock
        ));
        let mut received = Vec::new();
        let mut buffer = vec![0_u8; 64 * 1024];
        loop {
            match send.write_to(&mut server, &stats) {
                WriteOutcome::Complete => break,
                WriteOutcome::WouldBlock => {}
                WriteOutcome::Closed(error) => panic!("{error}"),
            }
            let read = client.read(&mut buffer).expect("read");
            received.extend_from_slice(&buffer[..read]);
        }
        drop(server);
        client.read_to_end(&mut received).expect("read rest");
        assert_eq!(received.len(), payload.len() + 7);
        assert_eq!(&received[4..4 + payload.len()], &payload[..]);
        assert_eq!(&received[4 + payload.len()..], b"end");
        assert_eq!(
            stats.sendfile_bytes.load(Ordering::Relaxed),
            payload.len() as u64
        );
    }
}

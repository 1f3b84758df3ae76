//! Receiving frames: Kafka's size-delimited framing, without I/O of its own.
//!
//! Wire format: every request is a 4-byte big-endian signed size `N` followed by `N` bytes
//! (the request header and body). The reactor hands the broker those `N` bytes. A size below
//! [`FRAME_BYTES_MIN`] (api key, api version and correlation id: 2 + 2 + 4 bytes), negative,
//! or over `socket.request.max.bytes` is refused as soon as the 4 size bytes arrive.
//!
//! Memory: the size a peer claims is never allocated ahead. Each read asks for at most as
//! many bytes as are already buffered (at least [`READ_CHUNK_BYTES_MIN`], at most
//! [`READ_CHUNK_BYTES_MAX`]), so the buffer grows geometrically with the bytes that really
//! arrive: a peer claiming 100 MB and sending nothing costs one small chunk.
//!
//! Bytes behind a complete frame (pipelined requests) stay buffered for the next `decode`.
//! Frames are split off the buffer without copying.
//!
//! Thread safety: a receiver belongs to one connection on one processor thread.

use std::io::{self, Read};

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of the size prefix in front of every frame.
pub const FRAME_SIZE_PREFIX_BYTES: usize = 4;
/// Smallest valid frame: request api key (2), api version (2), correlation id (4).
pub const FRAME_BYTES_MIN: usize = 8;
/// Largest frame the 4-byte signed prefix can express.
pub const FRAME_BYTES_MAX: usize = i32::MAX as usize;
/// Smallest read issued while receiving.
pub const READ_CHUNK_BYTES_MIN: usize = 4 * 1024;
/// Largest read issued while receiving; bounds a connection's over-allocation.
pub const READ_CHUNK_BYTES_MAX: usize = 256 * 1024;

const _: () = assert!(READ_CHUNK_BYTES_MIN >= FRAME_SIZE_PREFIX_BYTES);
const _: () = assert!(READ_CHUNK_BYTES_MIN <= READ_CHUNK_BYTES_MAX);
const _: () = assert!(FRAME_BYTES_MIN <= FRAME_BYTES_MAX);

/// A size prefix the reactor refuses; the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The prefix is negative.
    #[error("negative frame size {size}")]
    Negative {
        /// The size read from the wire.
        size: i32,
    },
    /// The prefix is over `socket.request.max.bytes`.
    #[error("frame size {size} over socket.request.max.bytes {max}")]
    TooLarge {
        /// The size read from the wire.
        size: i32,
        /// The configured limit.
        max: usize,
    },
    /// The prefix is too small to hold a request header.
    #[error("frame size {size} under the {min}-byte request header")]
    TooSmall {
        /// The size read from the wire.
        size: i32,
        /// [`FRAME_BYTES_MIN`].
        min: usize,
    },
}

impl FrameError {
    /// The size the peer claimed.
    pub fn size(&self) -> i32 {
        match *self {
            FrameError::Negative { size }
            | FrameError::TooLarge { size, .. }
            | FrameError::TooSmall { size, .. } => size,
        }
    }
}

/// What the buffered bytes hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Not a whole frame yet; read more. Not an error.
    Incomplete,
    /// A whole frame, without its size prefix.
    Frame(Bytes),
    /// The size prefix is refused.
    Invalid(FrameError),
}

/// The receive buffer of one connection.
#[derive(Debug)]
pub struct FrameReceiver {
    buffer: BytesMut,
    frame_bytes_max: usize,
}

impl FrameReceiver {
    /// A receiver refusing frames over `frame_bytes_max` (`socket.request.max.bytes`).
    pub fn new(frame_bytes_max: usize) -> FrameReceiver {
        assert!((FRAME_BYTES_MIN..=FRAME_BYTES_MAX).contains(&frame_bytes_max));
        FrameReceiver {
            buffer: BytesMut::new(),
            frame_bytes_max,
        }
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Bytes allocated for the buffer (what a slow or lying peer costs).
    pub fn capacity_bytes(&self) -> usize {
        self.buffer.capacity()
    }

    /// Checks the size prefix as soon as it is there, then splits off a complete frame.
    pub fn decode(&mut self) -> Decoded {
        let Some(size) = self.frame_size() else {
            return Decoded::Incomplete;
        };
        let frame_bytes = match size {
            Ok(frame_bytes) => frame_bytes,
            Err(error) => return Decoded::Invalid(error),
        };
        if self.buffer.len() < FRAME_SIZE_PREFIX_BYTES + frame_bytes {
            return Decoded::Incomplete;
        }
        let mut frame = self.buffer.split_to(FRAME_SIZE_PREFIX_BYTES + frame_bytes);
        frame.advance(FRAME_SIZE_PREFIX_BYTES);
        assert_eq!(frame.len(), frame_bytes);
        Decoded::Frame(frame.freeze())
    }

    /// One `read` from `reader` into the buffer; returns what `read` returned.
    pub fn read_from<R: Read>(&mut self, reader: &mut R) -> io::Result<usize> {
        let chunk_bytes = self.read_chunk_bytes();
        let start = self.buffer.len();
        self.buffer.resize(start + chunk_bytes, 0);
        let result = reader.read(&mut self.buffer[start..]);
        let read_bytes = match &result {
            Ok(read_bytes) => *read_bytes,
            Err(_) => 0,
        };
        assert!(
            read_bytes <= chunk_bytes,
            "read returned more than the buffer"
        );
        self.buffer.truncate(start + read_bytes);
        result
    }

    /// The current frame's size: `None` before 4 bytes arrived, else the validated size.
    fn frame_size(&self) -> Option<Result<usize, FrameError>> {
        let prefix: [u8; FRAME_SIZE_PREFIX_BYTES] = self
            .buffer
            .get(..FRAME_SIZE_PREFIX_BYTES)?
            .try_into()
            .ok()?;
        let size = i32::from_be_bytes(prefix);
        let Ok(frame_bytes) = usize::try_from(size) else {
            return Some(Err(FrameError::Negative { size }));
        };
        if frame_bytes > self.frame_bytes_max {
            return Some(Err(FrameError::TooLarge {
                size,
                max: self.frame_bytes_max,
            }));
        }
        if frame_bytes < FRAME_BYTES_MIN {
            return Some(Err(FrameError::TooSmall {
                size,
                min: FRAME_BYTES_MIN,
            }));
        }
        Some(Ok(frame_bytes))
    }

    /// How much the next read asks for: the rest of the current frame, but never more than
    /// is already buffered (so allocation follows arrival), within the chunk limits.
    fn read_chunk_bytes(&self) -> usize {
        let buffered = self.buffer.len();
        let frame_rest = match self.frame_size() {
            Some(Ok(frame_bytes)) => {
                (FRAME_SIZE_PREFIX_BYTES + frame_bytes).saturating_sub(buffered)
            }
            _ => FRAME_SIZE_PREFIX_BYTES,
        };
        frame_rest
            .min(buffered)
            .clamp(READ_CHUNK_BYTES_MIN, READ_CHUNK_BYTES_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as i32).to_be_bytes().to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    fn feed(receiver: &mut FrameReceiver, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let read = receiver.read_from(&mut bytes).expect("slice read");
            assert!(read > 0);
        }
    }

    #[test]
    fn decodes_pipelined_frames_in_order_and_keeps_the_rest() {
        let mut receiver = FrameReceiver::new(1024);
        let mut wire = frame(b"first-request");
        wire.extend(frame(b"second-request"));
        wire.extend(&frame(b"third-request")[..6]);
        feed(&mut receiver, &wire);
        assert_eq!(
            receiver.decode(),
            Decoded::Frame(Bytes::from_static(b"first-request"))
        );
        assert_eq!(
            receiver.decode(),
            Decoded::Frame(Bytes::from_static(b"second-request"))
        );
        assert_eq!(receiver.decode(), Decoded::Incomplete);
        assert_eq!(receiver.buffered_bytes(), 6);
        feed(&mut receiver, &frame(b"third-request")[6..]);
        assert_eq!(
            receiver.decode(),
            Decoded::Frame(Bytes::from_static(b"third-request"))
        );
        assert_eq!(receiver.buffered_bytes(), 0);
    }

    #[test]
    fn byte_at_a_time_arrival_is_incomplete_not_an_error() {
        let mut receiver = FrameReceiver::new(1024);
        let wire = frame(b"0123456789");
        for (index, byte) in wire.iter().enumerate() {
            assert_eq!(receiver.decode(), Decoded::Incomplete, "at byte {index}");
            feed(&mut receiver, &[*byte]);
        }
        assert_eq!(
            receiver.decode(),
            Decoded::Frame(Bytes::from_static(b"0123456789"))
        );
    }

    #[test]
    fn refuses_bad_sizes_as_soon_as_the_prefix_arrives() {
        let cases = [
            (-1, FrameError::Negative { size: -1 }),
            (i32::MIN, FrameError::Negative { size: i32::MIN }),
            (
                1025,
                FrameError::TooLarge {
                    size: 1025,
                    max: 1024,
                },
            ),
            (
                0,
                FrameError::TooSmall {
                    size: 0,
                    min: FRAME_BYTES_MIN,
                },
            ),
            (
                7,
                FrameError::TooSmall {
                    size: 7,
                    min: FRAME_BYTES_MIN,
                },
            ),
        ];
        for (size, expected) in cases {
            let mut receiver = FrameReceiver::new(1024);
            feed(&mut receiver, &size.to_be_bytes());
            assert_eq!(receiver.decode(), Decoded::Invalid(expected));
            assert_eq!(expected.size(), size);
        }
        let mut receiver = FrameReceiver::new(1024);
        feed(&mut receiver, &1024_i32.to_be_bytes());
        assert_eq!(
            receiver.decode(),
            Decoded::Incomplete,
            "exactly the limit is allowed"
        );
        let mut receiver = FrameReceiver::new(1024);
        feed(&mut receiver, &8_i32.to_be_bytes());
        assert_eq!(
            receiver.decode(),
            Decoded::Incomplete,
            "exactly the minimum is allowed"
        );
    }

    #[test]
    fn a_large_claim_allocates_with_arrival_not_with_the_claim() {
        let claimed_bytes = 100 * 1024 * 1024;
        let mut receiver = FrameReceiver::new(claimed_bytes);
        let mut wire = (claimed_bytes as i32).to_be_bytes().to_vec();
        wire.extend_from_slice(&[7; 12]);
        feed(&mut receiver, &wire);
        assert_eq!(receiver.decode(), Decoded::Incomplete);
        assert!(
            receiver.capacity_bytes() <= 4 * READ_CHUNK_BYTES_MIN,
            "{}",
            receiver.capacity_bytes()
        );

        // 1 MiB arriving costs a small multiple of 1 MiB, not 100 MiB.
        let mut arrived = vec![1_u8; 1024 * 1024];
        feed(&mut receiver, &arrived);
        assert_eq!(receiver.decode(), Decoded::Incomplete);
        assert!(
            receiver.capacity_bytes() <= 4 * 1024 * 1024,
            "{}",
            receiver.capacity_bytes()
        );
        arrived.clear();
    }

    #[test]
    fn a_read_error_leaves_the_buffer_as_it_was() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
        let mut receiver = FrameReceiver::new(1024);
        feed(&mut receiver, &frame(b"abcdefgh")[..5]);
        let error = receiver.read_from(&mut Failing).expect_err("would block");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(receiver.buffered_bytes(), 5);
    }
}

//! One client connection as a processor sees it, the slab that holds a processor's
//! connections, and [`ConnectionId`].
//!
//! A connection is a small state machine; "muted" means the processor does not read from
//! it, which is how one request at a time per connection is enforced:
//!
//! ```text
//! Reading ──frame──▶ Pending ──into channel──▶ AwaitingResponse ──Send──▶ Sending ──▶ Sent
//!    ▲               (channel full: retry)            │ NoResponse                     │
//!    └────────────────────────────────────────────────┴──── process completed sends ◀──┘
//! ```
//!
//! Only `Reading` reads; bytes a client pipelined behind a request wait in the receive
//! buffer or the socket until the response is written. Only a `Reading` connection can be
//! closed as idle.
//!
//! Slots: a connection lives in a slot of its processor's [`ConnectionSlab`]. Each slot has
//! a generation, bumped when the slot is freed, so a [`ConnectionId`] names one connection
//! for ever and a late response for a closed connection can never reach the next occupant.
//!
//! Thread safety: everything here is owned by one processor thread.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use mio::net::TcpStream;

use crate::channel::RequestEnvelope;
use crate::frame::{Decoded, FrameError, FrameReceiver};
use crate::quotas::ConnectionPermit;
use crate::request::RequestTimings;
use crate::send::{ResponseError, ResponseSend, WriteError};
use crate::stats::ReactorStats;

/// Names one connection for its whole life: its processor, its slot in that processor's
/// slab, and the slot's generation when the connection was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    /// Index of the owning processor (`kb-net-<processor>`).
    pub processor: u16,
    /// Slot in the processor's slab.
    pub slot: u32,
    /// The slot's generation; differs for every connection that uses the slot.
    pub generation: u32,
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.processor, self.slot, self.generation)
    }
}

/// Upper bound on slots in one processor's slab (ids are `u32`).
pub const SLOTS_MAX: usize = u32::MAX as usize;

/// A growable slab: slots of `Option<T>`, a free list, and a generation per slot.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    processor: u16,
    entries: Vec<Option<T>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    pub fn new(processor: u16) -> Slab<T> {
        Slab {
            processor,
            entries: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// The id the next `insert` will use.
    pub fn vacant_id(&self) -> ConnectionId {
        let slot = match self.free.last() {
            Some(&slot) => slot,
            None => {
                assert!(self.entries.len() < SLOTS_MAX, "connection slab full");
                self.entries.len() as u32
            }
        };
        let generation = self.generations.get(slot as usize).copied().unwrap_or(0);
        ConnectionId {
            processor: self.processor,
            slot,
            generation,
        }
    }

    /// Stores `value` under `id`, which must be [`Slab::vacant_id`].
    pub fn insert(&mut self, id: ConnectionId, value: T) {
        assert_eq!(id, self.vacant_id(), "insert must use the vacant id");
        let slot = id.slot as usize;
        if slot == self.entries.len() {
            self.entries.push(Some(value));
            self.generations.push(id.generation);
        } else {
            assert_eq!(self.free.pop(), Some(id.slot));
            assert!(self.entries[slot].is_none());
            self.entries[slot] = Some(value);
        }
        self.len += 1;
    }

    /// The value of `id`, if that connection is still open.
    pub fn get_mut(&mut self, id: ConnectionId) -> Option<&mut T> {
        if id.processor != self.processor
            || self.generations.get(id.slot as usize) != Some(&id.generation)
        {
            return None;
        }
        self.entries.get_mut(id.slot as usize)?.as_mut()
    }

    /// The value in `slot`, whatever its generation (for readiness events).
    pub fn get_by_slot_mut(&mut self, slot: usize) -> Option<&mut T> {
        self.entries.get_mut(slot)?.as_mut()
    }

    /// Removes `id`, bumping the slot's generation.
    pub fn remove(&mut self, id: ConnectionId) -> Option<T> {
        self.get_mut(id)?;
        let slot = id.slot as usize;
        let value = self.entries[slot].take();
        assert!(value.is_some());
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        self.free.push(id.slot);
        self.len -= 1;
        value
    }

    /// Ids of all occupied slots.
    pub fn ids(&self) -> Vec<ConnectionId> {
        let processor = self.processor;
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.is_some())
            .map(|(slot, _)| ConnectionId {
                processor,
                slot: slot as u32,
                generation: self.generations[slot],
            })
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().flatten()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.entries.iter_mut().flatten()
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

/// A processor's connections.
pub(crate) type ConnectionSlab = Slab<Connection>;

/// Why a connection was closed; decides the log level.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CloseReason {
    #[error("peer closed the connection")]
    PeerClosed,
    #[error("socket error: {0}")]
    SocketError(String),
    #[error("read failed: {0}")]
    ReadFailed(io::Error),
    #[error("frame rejected: {0}")]
    InvalidFrame(FrameError),
    #[error("idle for {idle_ms} ms (connections.max.idle.ms)")]
    Idle { idle_ms: u64 },
    #[error("handler asked to close")]
    ResponseClose,
    #[error("responder dropped without a response")]
    ResponderDropped,
    #[error("handler panicked")]
    HandlerPanicked,
    #[error("invalid response from the broker: {0}")]
    BadResponse(ResponseError),
    #[error("{0}")]
    WriteFailed(WriteError),
    #[error("request channel closed")]
    RequestChannelClosed,
    #[error("reactor shutting down")]
    Shutdown,
}

impl CloseReason {
    /// Degradation is a warning, a broker bug an error, ordinary endings debug.
    pub fn log_level(&self) -> log::Level {
        match self {
            CloseReason::InvalidFrame(_) | CloseReason::HandlerPanicked => log::Level::Warn,
            CloseReason::WriteFailed(WriteError::FileShrank { .. }) => log::Level::Warn,
            CloseReason::BadResponse(_) => log::Level::Error,
            _ => log::Level::Debug,
        }
    }
}

/// Where a connection is in its request cycle.
#[derive(Debug)]
pub(crate) enum ConnState {
    /// Unmuted: reading and decoding frames.
    Reading,
    /// Muted: a complete request waits for room in the request channel.
    Pending(Box<RequestEnvelope>),
    /// Muted: the request is in the channel or with a handler.
    AwaitingResponse,
    /// Muted: the response is being written.
    Sending {
        send: ResponseSend,
        timings: RequestTimings,
    },
    /// Muted: the response is written (or was `NoResponse`); unmuted by the processor's
    /// "process completed sends" step.
    Sent(RequestTimings),
}

/// What reading produced.
#[derive(Debug)]
pub(crate) enum ReceiveOutcome {
    /// A complete request frame.
    Frame(Bytes),
    /// The socket is drained; wait for it to be readable.
    WouldBlock,
    /// The connection cannot continue.
    Closed(CloseReason),
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub id: ConnectionId,
    pub peer: SocketAddr,
    pub stream: TcpStream,
    pub state: ConnState,
    /// Sequence number of the latest request read; replies carry it.
    pub request_seq: u64,
    /// Last byte read or written.
    pub last_activity: Instant,
    /// Queued for "process disconnected"; no more I/O.
    pub closing: bool,
    receiver: FrameReceiver,
    _permit: ConnectionPermit,
}

impl Connection {
    pub fn new(
        id: ConnectionId,
        stream: TcpStream,
        peer: SocketAddr,
        permit: ConnectionPermit,
        frame_bytes_max: usize,
    ) -> Connection {
        Connection {
            id,
            peer,
            stream,
            state: ConnState::Reading,
            request_seq: 0,
            last_activity: Instant::now(),
            closing: false,
            receiver: FrameReceiver::new(frame_bytes_max),
            _permit: permit,
        }
    }

    /// Whether a request is in flight (the connection is muted).
    pub fn is_muted(&self) -> bool {
        !matches!(self.state, ConnState::Reading)
    }

    /// The sequence number of the request a reply may answer, if one is outstanding.
    pub fn in_flight_seq(&self) -> Option<u64> {
        match self.state {
            ConnState::AwaitingResponse | ConnState::Sending { .. } => Some(self.request_seq),
            _ => None,
        }
    }

    /// Decodes a buffered frame or reads until one is complete or the socket is drained.
    pub fn receive(&mut self, stats: &ReactorStats) -> ReceiveOutcome {
        assert!(
            matches!(self.state, ConnState::Reading),
            "receive on a muted connection"
        );
        loop {
            match self.receiver.decode() {
                Decoded::Frame(frame) => return ReceiveOutcome::Frame(frame),
                Decoded::Invalid(error) => {
                    stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                    return ReceiveOutcome::Closed(CloseReason::InvalidFrame(error));
                }
                Decoded::Incomplete => {}
            }
            match self.receiver.read_from(&mut self.stream) {
                Ok(0) => return ReceiveOutcome::Closed(CloseReason::PeerClosed),
                Ok(read_bytes) => {
                    stats
                        .bytes_in
                        .fetch_add(read_bytes as u64, Ordering::Relaxed);
                    self.last_activity = Instant::now();
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return ReceiveOutcome::WouldBlock
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return ReceiveOutcome::Closed(CloseReason::ReadFailed(error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_gets_a_new_generation_and_old_ids_miss() {
        let mut slab: Slab<&str> = Slab::new(3);
        let first = slab.vacant_id();
        assert_eq!(
            first,
            ConnectionId {
                processor: 3,
                slot: 0,
                generation: 0
            }
        );
        slab.insert(first, "first");
        let second = slab.vacant_id();
        slab.insert(second, "second");
        assert_eq!(second.slot, 1);
        assert_eq!(slab.len(), 2);

        assert_eq!(slab.remove(first), Some("first"));
        assert_eq!(slab.remove(first), None, "removing twice is a miss");
        let reused = slab.vacant_id();
        assert_eq!((reused.slot, reused.generation), (0, 1));
        slab.insert(reused, "reused");
        assert_eq!(
            slab.get_mut(first),
            None,
            "the old id must not reach the new occupant"
        );
        assert_eq!(slab.get_mut(reused).copied(), Some("reused"));
        assert_eq!(slab.get_by_slot_mut(0).copied(), Some("reused"));
        let other_processor = ConnectionId {
            processor: 4,
            ..reused
        };
        assert_eq!(slab.get_mut(other_processor), None);
        assert_eq!(slab.ids(), vec![reused, second]);
        assert_eq!(slab.iter().count(), 2);
    }

    #[test]
    #[should_panic(expected = "vacant id")]
    fn inserting_under_a_stale_id_is_a_bug() {
        let mut slab: Slab<u8> = Slab::new(0);
        let id = slab.vacant_id();
        slab.insert(id, 1);
        slab.insert(id, 2);
    }

    #[test]
    fn connection_ids_display_processor_slot_generation() {
        let id = ConnectionId {
            processor: 2,
            slot: 17,
            generation: 5,
        };
        assert_eq!(id.to_string(), "2-17-5");
    }
}

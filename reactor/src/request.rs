//! What the broker sees: [`Request`], [`Response`], [`Responder`], [`RequestHandler`] and the
//! stage timestamps of one request ([`RequestTimings`]).
//!
//! Lifecycle of one request, with the timestamp taken at each step:
//!
//! ```text
//! processor reads the complete frame ............ received_at
//! a handler thread takes it from the channel .... dequeued_at      request-queue time
//! the broker calls Responder::respond ........... responded_at     local + remote time
//! the owning processor picks the response up .... send_started_at  response-queue time
//! its last byte is written (or NoResponse) ...... completed_at     response-send time
//! ```
//!
//! Thread safety: a [`Responder`] is `Send` and may be answered from any thread (a delayed
//! operation's timer, another request's handler). Dropping it unanswered closes the
//! connection, so a forgotten request never leaves a connection muted for ever.

use std::fs::File;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::channel::{Reply, ReplyTo};
use crate::connection::ConnectionId;

/// One request frame, as read from a connection.
#[derive(Debug, Clone)]
pub struct Request {
    /// The connection it came on; responses go back there.
    pub connection: ConnectionId,
    /// The client's address.
    pub peer: SocketAddr,
    /// The request bytes (header and body) without the 4-byte size prefix; at least 8 bytes.
    pub frame: Bytes,
    /// When the processor had the complete frame.
    pub received_at: Instant,
    /// When a handler thread took it from the request channel.
    pub dequeued_at: Instant,
}

impl Request {
    /// The request's api key: the frame's first two bytes, big-endian.
    pub fn api_key(&self) -> i16 {
        api_key_of(&self.frame)
    }
}

/// The api key in a frame's first two bytes, or -1 if the frame is shorter.
pub(crate) fn api_key_of(frame: &[u8]) -> i16 {
    match frame.get(..2) {
        Some(&[high, low]) => i16::from_be_bytes([high, low]),
        _ => -1,
    }
}

/// One piece of a response, written in order.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Bytes written with write/writev.
    Bytes(Bytes),
    /// A file region written with sendfile(2) straight from the page cache. If the file is
    /// shorter than `offset + len` when it is sent, the connection is closed (the client
    /// cannot be told the response is short: its size prefix is already on the wire).
    File {
        /// The file; kept open until the region is written.
        file: Arc<File>,
        /// Where the region starts.
        offset: u64,
        /// How many bytes to send.
        len: usize,
    },
}

impl Chunk {
    /// Bytes this chunk puts on the wire.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(bytes) => bytes.len(),
            Chunk::File { len, .. } => *len,
        }
    }

    /// Whether the chunk puts nothing on the wire.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The broker's answer to one request.
#[derive(Debug)]
pub enum Response {
    /// The whole response including its 4-byte size prefix. The prefix must be in the
    /// leading `Bytes` chunk(s) and must equal the length of everything after it; a response
    /// that breaks this is a broker bug, logged as an error, and closes the connection.
    Send(Vec<Chunk>),
    /// Nothing is written (Produce with acks=0); the connection is unmuted at once.
    NoResponse,
    /// Close the connection (e.g. the request could not be parsed).
    Close,
}

/// Stage timestamps of one completed request, given to [`RequestHandler::on_complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTimings {
    /// The connection the request came on.
    pub connection: ConnectionId,
    /// The frame's first two bytes (the api key), or -1.
    pub api_key: i16,
    /// Request frame length, without the size prefix.
    pub request_bytes: usize,
    /// Response length including its size prefix; 0 for `NoResponse`.
    pub response_bytes: usize,
    /// Complete frame read.
    pub received_at: Instant,
    /// Taken by a handler thread.
    pub dequeued_at: Instant,
    /// `Responder::respond` called.
    pub responded_at: Instant,
    /// The processor picked the response up.
    pub send_started_at: Instant,
    /// Last byte written (for `NoResponse`: picked up).
    pub completed_at: Instant,
    /// When `RequestHandler::handle` returned, if it had by `responded_at`: a response
    /// given later was completed by someone else (a purgatory timer, another request), and
    /// the time from here to `responded_at` is Kafka's remote time.
    pub handle_returned_at: Option<Instant>,
    /// The broker said this was a follower's Fetch ([`Responder::mark_follower_fetch`]).
    pub from_follower: bool,
}

impl RequestTimings {
    /// Kafka's `RequestQueueTimeMs`: received → dequeued.
    pub fn request_queue_time(&self) -> Duration {
        self.dequeued_at.saturating_duration_since(self.received_at)
    }

    /// Kafka's `LocalTimeMs` + `RemoteTimeMs`: dequeued → responded. The broker splits it.
    pub fn handler_time(&self) -> Duration {
        self.responded_at
            .saturating_duration_since(self.dequeued_at)
    }

    /// Kafka's `ResponseQueueTimeMs`: responded → picked up by the processor.
    pub fn response_queue_time(&self) -> Duration {
        self.send_started_at
            .saturating_duration_since(self.responded_at)
    }

    /// Kafka's `ResponseSendTimeMs`: picked up → last byte written.
    pub fn response_send_time(&self) -> Duration {
        self.completed_at
            .saturating_duration_since(self.send_started_at)
    }

    /// Kafka's `TotalTimeMs`: received → last byte written.
    pub fn total_time(&self) -> Duration {
        self.completed_at
            .saturating_duration_since(self.received_at)
    }
}

/// The broker's request handling, called on the handler threads.
pub trait RequestHandler: Send + Sync + 'static {
    /// Handles one request. Answer through `responder`, now or later from any thread. Must
    /// not block for long: every handler thread is shared by all connections. A panic is
    /// caught, logged, and closes this connection; the thread keeps serving.
    fn handle(&self, request: Request, responder: Responder);

    /// Called on the processor thread after a response is fully written, or after a
    /// `NoResponse` is picked up; not called for `Close` or a dropped responder. Keep it
    /// cheap (record histograms): it runs inside the network loop.
    fn on_complete(&self, timings: &RequestTimings) {
        let _ = timings;
    }
}

/// A request's timestamps, and what is learnt about it while it is handled, shared by its
/// [`Responder`] and the handler thread that called `handle` (behind one pointer, so a
/// `Responder` stays small: handlers pass it back in their error results).
#[derive(Debug)]
pub(crate) struct RequestMarks {
    request_bytes: usize,
    received_at: Instant,
    dequeued_at: Instant,
    /// When `handle` returned (unset while it runs).
    handle_returned_at: OnceLock<Instant>,
    from_follower: AtomicBool,
}

impl RequestMarks {
    pub(crate) fn handle_returned(&self, at: Instant) {
        let _ = self.handle_returned_at.set(at);
    }
}

/// The one-shot way back to the connection a request came on.
#[derive(Debug)]
pub struct Responder {
    reply: Option<ReplyTo>,
    marks: Arc<RequestMarks>,
    connection: ConnectionId,
    api_key: i16,
}

impl Responder {
    pub(crate) fn new(reply: ReplyTo, request: &Request) -> Responder {
        Responder {
            reply: Some(reply),
            marks: Arc::new(RequestMarks {
                request_bytes: request.frame.len(),
                received_at: request.received_at,
                dequeued_at: request.dequeued_at,
                handle_returned_at: OnceLock::new(),
                from_follower: AtomicBool::new(false),
            }),
            connection: request.connection,
            api_key: request.api_key(),
        }
    }

    /// Sends the response to the owning processor and wakes it. If the connection has been
    /// closed meanwhile (or its slot reused), the processor drops the response.
    pub fn respond(mut self, response: Response) {
        if let Some(reply) = self.reply.take() {
            let timings = self.timings(Instant::now());
            reply.send(self.connection, Reply::Response(response), timings);
        }
    }

    /// The connection the request came on.
    pub fn connection(&self) -> ConnectionId {
        self.connection
    }

    /// Records that this request is a follower's Fetch (metrics count those apart, as
    /// Kafka's `FetchFollower`).
    pub fn mark_follower_fetch(&self) {
        self.marks.from_follower.store(true, Ordering::Release);
    }

    pub(crate) fn marks(&self) -> Arc<RequestMarks> {
        Arc::clone(&self.marks)
    }

    /// The request's api key (first two frame bytes).
    pub fn api_key(&self) -> i16 {
        self.api_key
    }

    /// When the request's frame was complete.
    pub fn received_at(&self) -> Instant {
        self.marks.received_at
    }

    /// When a handler thread took the request.
    pub fn dequeued_at(&self) -> Instant {
        self.marks.dequeued_at
    }

    fn timings(&self, responded_at: Instant) -> RequestTimings {
        RequestTimings {
            connection: self.connection,
            api_key: self.api_key,
            request_bytes: self.marks.request_bytes,
            response_bytes: 0,
            received_at: self.marks.received_at,
            dequeued_at: self.marks.dequeued_at,
            responded_at,
            send_started_at: responded_at,
            completed_at: responded_at,
            handle_returned_at: self.marks.handle_returned_at.get().copied(),
            from_follower: self.marks.from_follower.load(Ordering::Acquire),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        if std::thread::panicking() {
            log::error!(
                "responder dropped by a panic, closing connection connection={} api_key={}",
                self.connection,
                self.api_key
            );
        } else {
            log::warn!(
                "responder dropped without a response, closing connection connection={} api_key={}",
                self.connection,
                self.api_key
            );
        }
        let timings = self.timings(Instant::now());
        reply.send(self.connection, Reply::ResponderDropped, timings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cross_thread_types_are_send() {
        fn send_static<T: Send + 'static>() {}
        send_static::<Responder>();
        send_static::<Request>();
        send_static::<Response>();
        send_static::<crate::SocketServer>();
    }

    #[test]
    fn api_key_is_the_first_two_bytes_big_endian() {
        assert_eq!(api_key_of(&[0x00, 0x12, 0, 3]), 18);
        assert_eq!(api_key_of(&[0xff, 0xff]), -1);
        assert_eq!(api_key_of(&[0x01]), -1);
        assert_eq!(api_key_of(&[]), -1);
    }
}

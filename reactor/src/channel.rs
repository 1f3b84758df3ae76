//! The request channel and the response queues: what travels between threads.
//!
//! Kafka's `RequestChannel`. Processors put [`RequestEnvelope`]s into one bounded crossbeam
//! channel (`queued.max.requests`) with `try_send` — a full channel never blocks a processor,
//! the request stays on its muted connection and is retried. Handler threads `recv` from it.
//! Each envelope carries a [`ReplyTo`]: the owning processor's response queue (unbounded,
//! but never longer than that processor's connection count, because a connection has at
//! most one request in flight) and its `mio::Waker`.
//!
//! A reply names its connection (slot + generation) and the connection's request sequence
//! number. The processor drops a reply whose connection is gone, whose slot was reused
//! (generation differs), or whose request is no longer the one in flight (sequence differs);
//! so late, duplicate or stray replies are harmless.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use mio::Waker;

use crate::connection::ConnectionId;
use crate::request::{Request, RequestTimings, Responder, Response};
use crate::stats::ReactorStats;

/// A request on its way to a handler thread.
#[derive(Debug)]
pub(crate) struct RequestEnvelope {
    pub request: Request,
    pub reply: ReplyTo,
}

impl RequestEnvelope {
    /// Stamps the dequeue time and splits the envelope into what the handler gets, plus a
    /// copy of the way back used to close the connection if the handler panics.
    pub fn into_parts(mut self, dequeued_at: Instant) -> (Request, Responder, ReplyTo) {
        self.request.dequeued_at = dequeued_at;
        let closer = self.reply.clone();
        let responder = Responder::new(self.reply, &self.request);
        (self.request, responder, closer)
    }
}

/// What a reply asks the processor to do.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The broker's response.
    Response(Response),
    /// The responder was dropped unanswered: close.
    ResponderDropped,
    /// The handler panicked: close.
    HandlerPanicked,
}

/// A reply on its way back to the owning processor.
#[derive(Debug)]
pub(crate) struct ResponseEnvelope {
    pub connection: ConnectionId,
    pub request_seq: u64,
    pub reply: Reply,
    pub timings: RequestTimings,
}

/// The way back from a handler to the processor that owns the connection.
#[derive(Debug, Clone)]
pub(crate) struct ReplyTo {
    pub responses: Sender<ResponseEnvelope>,
    pub waker: Arc<Waker>,
    pub stats: Arc<ReactorStats>,
    pub request_seq: u64,
}

impl ReplyTo {
    /// Queues the reply and wakes the processor. A processor that has stopped (shutdown)
    /// no longer receives; the reply is dropped silently.
    pub fn send(self, connection: ConnectionId, reply: Reply, timings: RequestTimings) {
        let envelope = ResponseEnvelope {
            connection,
            request_seq: self.request_seq,
            reply,
            timings,
        };
        self.stats
            .response_queue_size
            .fetch_add(1, Ordering::Relaxed);
        if self.responses.send(envelope).is_err() {
            self.stats
                .response_queue_size
                .fetch_sub(1, Ordering::Relaxed);
            log::debug!("processor stopped, reply dropped connection={connection}");
            return;
        }
        if let Err(error) = self.waker.wake() {
            log::warn!("cannot wake processor connection={connection} error={error}");
        }
    }
}

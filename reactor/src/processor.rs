//! The network processor (`kb-net-<i>`): one mio `Poll` owning a set of connections.
//!
//! Kafka's `Processor.run`, step for step; one turn of the loop is:
//!
//! 1. configure new connections — sockets from the acceptors, registered edge-triggered for
//!    READABLE | WRITABLE and put in the slab;
//! 2. process new responses — replies from handler threads: start writing a `Send`, unmute
//!    on `NoResponse`, close on `Close`; replies for closed or reused slots are dropped;
//! 3. poll — wait for readiness (at most [`POLL_TIMEOUT_MS_MAX`], zero when work is left)
//!    and do the I/O: read until a frame is complete or `WouldBlock`, write until done or
//!    `WouldBlock`; the time blocked here is this processor's idle time;
//! 4. process completed receives — put complete requests into the request channel with
//!    `try_send`; when it is full the rest stay pending, in arrival order, on their muted
//!    connections and are retried next turn after a [`REQUEST_RETRY_POLL_MS`] poll;
//! 5. process completed sends — unmute, report the timings, and decode/read the next
//!    (pipelined) request;
//! 6. process disconnected — close idle connections, then everything marked for closing.
//!
//! Reserved token 0 is the `Waker`, shared through `Arc` with the acceptors (new
//! connections) and every `Responder` (responses). Connection tokens are slot + 1.
//!
//! Shutdown: when the shared draining flag is set the processor stops reading new requests
//! and closes new connections, lets every request in flight complete (its response
//! written), at most [`SHUTDOWN_DRAIN_MS_MAX`], then closes all its connections and returns;
//! dropping it drops its end of the request channel.
//!
//! Thread safety: a processor and its connections belong to its thread; other threads
//! reach it only through its two channels and its waker.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::channel::{Reply, ReplyTo, RequestEnvelope, ResponseEnvelope};
use crate::config::ReactorConfig;
use crate::connection::{
    CloseReason, ConnState, Connection, ConnectionId, ConnectionSlab, ReceiveOutcome,
};
use crate::error::ReactorError;
use crate::quotas::ConnectionPermit;
use crate::request::{Request, RequestHandler, RequestTimings, Response};
use crate::send::{ResponseSend, WriteOutcome};
use crate::stats::{add_duration, ReactorStats};

/// Longest a processor blocks in `poll()`; bounds how late idle expiry and shutdown are seen.
pub const POLL_TIMEOUT_MS_MAX: u64 = 300;
/// Poll timeout while requests wait for room in a full request channel.
pub const REQUEST_RETRY_POLL_MS: u64 = 1;
/// Readiness events taken from one `poll()`.
pub const POLL_EVENTS_MAX: usize = 1024;
/// Consecutive `poll()` failures after which the processor gives up (a bug or a broken OS).
pub const POLL_ERRORS_CONSECUTIVE_MAX: u32 = 100;
/// Capacity of each processor's new-connection queue (Kafka's `connectionQueueSize`).
pub const NEW_CONNECTIONS_QUEUE_MAX: usize = 20;
/// Longest shutdown waits for requests in flight before closing their connections.
pub const SHUTDOWN_DRAIN_MS_MAX: u64 = 10_000;
/// Longest interval between idle-connection scans.
pub const IDLE_CHECK_INTERVAL_MS_MAX: u64 = POLL_TIMEOUT_MS_MAX;

const _: () = assert!(REQUEST_RETRY_POLL_MS < POLL_TIMEOUT_MS_MAX);
const _: () = assert!(POLL_TIMEOUT_MS_MAX < SHUTDOWN_DRAIN_MS_MAX);

const WAKER_TOKEN: Token = Token(0);
const CONNECTION_TOKEN_BASE: usize = 1;

/// A socket accepted for a processor, with its share of the connection limits.
#[derive(Debug)]
pub(crate) struct NewConnection {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub permit: ConnectionPermit,
}

/// What other threads hold of a processor.
#[derive(Debug, Clone)]
pub(crate) struct ProcessorHandle {
    pub new_connections: Sender<NewConnection>,
    pub waker: Arc<Waker>,
}

/// Readiness copied out of `Events` so the connections can be borrowed mutably.
#[derive(Debug, Clone, Copy)]
struct Readiness {
    token: Token,
    readable: bool,
    writable: bool,
    error: bool,
    hung_up: bool,
}

/// Threads and settings shared by every processor of one server.
#[derive(Clone)]
pub(crate) struct ProcessorShared {
    pub requests: Sender<RequestEnvelope>,
    pub handler: Arc<dyn RequestHandler>,
    pub stats: Arc<ReactorStats>,
    pub draining: Arc<AtomicBool>,
}

pub(crate) struct Processor {
    id: u16,
    poll: Poll,
    events: Events,
    readiness: Vec<Readiness>,
    waker: Arc<Waker>,
    new_connections: Receiver<NewConnection>,
    responses: Receiver<ResponseEnvelope>,
    response_sender: Sender<ResponseEnvelope>,
    shared: ProcessorShared,
    frame_bytes_max: usize,
    idle_max: Duration,
    idle_check_interval: Duration,
    idle_check_next: Instant,
    connections: ConnectionSlab,
    pending_requests: VecDeque<ConnectionId>,
    request_channel_full: bool,
    completed_sends: Vec<ConnectionId>,
    disconnected: Vec<(ConnectionId, CloseReason)>,
    poll_errors_consecutive: u32,
    drain_deadline: Option<Instant>,
}

impl Processor {
    pub fn new(
        id: u16,
        config: &ReactorConfig,
        shared: ProcessorShared,
    ) -> Result<(Processor, ProcessorHandle), ReactorError> {
        let thread = format!("kb-net-{id}");
        let poll = Poll::new().map_err(|source| ReactorError::Poll {
            thread: thread.clone(),
            source,
        })?;
        let waker = Waker::new(poll.registry(), WAKER_TOKEN)
            .map_err(|source| ReactorError::Poll { thread, source })?;
        let waker = Arc::new(waker);
        let (new_connection_sender, new_connections) =
            crossbeam_channel::bounded(NEW_CONNECTIONS_QUEUE_MAX);
        let (response_sender, responses) = crossbeam_channel::unbounded();
        let idle_max = Duration::from_millis(config.connections_max_idle_ms);
        let idle_check_interval = (idle_max / 10).clamp(
            Duration::from_millis(1),
            Duration::from_millis(IDLE_CHECK_INTERVAL_MS_MAX),
        );
        let processor = Processor {
            id,
            poll,
            events: Events::with_capacity(POLL_EVENTS_MAX),
            readiness: Vec::with_capacity(POLL_EVENTS_MAX),
            waker: Arc::clone(&waker),
            new_connections,
            responses,
            response_sender,
            shared,
            frame_bytes_max: config.socket_request_max_bytes,
            idle_max,
            idle_check_interval,
            idle_check_next: Instant::now() + idle_check_interval,
            connections: ConnectionSlab::new(id),
            pending_requests: VecDeque::new(),
            request_channel_full: false,
            completed_sends: Vec::new(),
            disconnected: Vec::new(),
            poll_errors_consecutive: 0,
            drain_deadline: None,
        };
        Ok((
            processor,
            ProcessorHandle {
                new_connections: new_connection_sender,
                waker,
            },
        ))
    }

    /// The processor thread's body; returns after shutdown.
    pub fn run(mut self) {
        log::info!("processor started processor={}", self.id);
        while !self.should_stop() {
            self.configure_new_connections();
            self.process_new_responses();
            self.poll();
            self.process_completed_receives();
            self.process_completed_sends();
            self.close_idle_connections();
            self.process_disconnected();
        }
        self.close_all();
        log::info!("processor stopped processor={}", self.id);
    }

    fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    /// True once draining and no request is in flight, or the drain deadline passed.
    fn should_stop(&mut self) -> bool {
        if !self.draining() {
            return false;
        }
        let now = Instant::now();
        let deadline = *self
            .drain_deadline
            .get_or_insert(now + Duration::from_millis(SHUTDOWN_DRAIN_MS_MAX));
        let in_flight = self
            .connections
            .iter()
            .filter(|connection| connection.is_muted())
            .count();
        if in_flight == 0 {
            return true;
        }
        if now >= deadline {
            log::warn!(
                "processor drain deadline passed processor={} in_flight={in_flight}",
                self.id
            );
            return true;
        }
        false
    }

    // Step 1.
    fn configure_new_connections(&mut self) {
        while let Ok(new) = self.new_connections.try_recv() {
            if self.draining() {
                log::debug!("closing new connection during shutdown peer={}", new.peer);
                continue;
            }
            self.configure(new);
        }
    }

    fn configure(&mut self, mut new: NewConnection) {
        let id = self.connections.vacant_id();
        let token = Token(id.slot as usize + CONNECTION_TOKEN_BASE);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(error) = self
            .poll
            .registry()
            .register(&mut new.stream, token, interest)
        {
            log::warn!("cannot register connection peer={} error={error}", new.peer);
            return;
        }
        log::debug!("connection opened connection={id} peer={}", new.peer);
        let connection =
            Connection::new(id, new.stream, new.peer, new.permit, self.frame_bytes_max);
        self.connections.insert(id, connection);
    }

    // Step 2.
    fn process_new_responses(&mut self) {
        while let Ok(envelope) = self.responses.try_recv() {
            self.shared
                .stats
                .response_queue_size
                .fetch_sub(1, Ordering::Relaxed);
            self.process_response(envelope, Instant::now());
        }
    }

    fn process_response(&mut self, envelope: ResponseEnvelope, picked_up_at: Instant) {
        let id = envelope.connection;
        let Some(connection) = self.connections.get_mut(id) else {
            log::debug!("reply for a closed connection dropped connection={id}");
            return;
        };
        if connection.closing || connection.in_flight_seq() != Some(envelope.request_seq) {
            log::debug!(
                "stale reply dropped connection={id} request_seq={}",
                envelope.request_seq
            );
            return;
        }
        let timings = RequestTimings {
            send_started_at: picked_up_at,
            completed_at: picked_up_at,
            ..envelope.timings
        };
        let response = match envelope.reply {
            Reply::Response(response) => response,
            Reply::ResponderDropped => return self.disconnect(id, CloseReason::ResponderDropped),
            Reply::HandlerPanicked => return self.disconnect(id, CloseReason::HandlerPanicked),
        };
        assert!(
            matches!(connection.state, ConnState::AwaitingResponse),
            "second response for one request connection={id}"
        );
        match response {
            Response::Send(chunks) => match ResponseSend::new(chunks) {
                Ok(send) => {
                    connection.state = ConnState::Sending { send, timings };
                    self.write(id);
                }
                Err(error) => self.disconnect(id, CloseReason::BadResponse(error)),
            },
            Response::NoResponse => {
                connection.state = ConnState::Sent(timings);
                self.completed_sends.push(id);
            }
            Response::Close => self.disconnect(id, CloseReason::ResponseClose),
        }
    }

    // Step 3.
    fn poll(&mut self) {
        let timeout = self.poll_timeout();
        let started_at = Instant::now();
        let result = self.poll.poll(&mut self.events, Some(timeout));
        add_duration(
            &self.shared.stats.processor_idle_ns[self.id as usize],
            started_at.elapsed(),
        );
        if let Err(error) = result {
            if error.kind() != std::io::ErrorKind::Interrupted {
                self.poll_errors_consecutive += 1;
                log::error!("poll failed processor={} error={error}", self.id);
                assert!(
                    self.poll_errors_consecutive < POLL_ERRORS_CONSECUTIVE_MAX,
                    "processor {} poll failed {POLL_ERRORS_CONSECUTIVE_MAX} times in a row",
                    self.id
                );
            }
            return;
        }
        self.poll_errors_consecutive = 0;
        self.readiness.clear();
        self.readiness
            .extend(self.events.iter().map(|event| Readiness {
                token: event.token(),
                readable: event.is_readable(),
                writable: event.is_writable(),
                error: event.is_error(),
                hung_up: event.is_read_closed() && event.is_write_closed(),
            }));
        for index in 0..self.readiness.len() {
            let readiness = self.readiness[index];
            self.handle_readiness(readiness);
        }
    }

    fn poll_timeout(&self) -> Duration {
        if !self.completed_sends.is_empty() || !self.disconnected.is_empty() {
            return Duration::ZERO;
        }
        if !self.pending_requests.is_empty() {
            if self.request_channel_full {
                return Duration::from_millis(REQUEST_RETRY_POLL_MS);
            }
            return Duration::ZERO;
        }
        let until_idle_check = self
            .idle_check_next
            .saturating_duration_since(Instant::now());
        until_idle_check.min(Duration::from_millis(POLL_TIMEOUT_MS_MAX))
    }

    fn handle_readiness(&mut self, readiness: Readiness) {
        if readiness.token == WAKER_TOKEN {
            return;
        }
        let Some(slot) = readiness.token.0.checked_sub(CONNECTION_TOKEN_BASE) else {
            return;
        };
        let Some(connection) = self.connections.get_by_slot_mut(slot) else {
            return;
        };
        if connection.closing {
            return;
        }
        let id = connection.id;
        if readiness.error {
            let error = match connection.stream.take_error() {
                Ok(Some(error)) => error.to_string(),
                Ok(None) => "error event".to_string(),
                Err(error) => error.to_string(),
            };
            return self.disconnect(id, CloseReason::SocketError(error));
        }
        if readiness.writable {
            self.write(id);
        }
        if readiness.readable {
            self.receive(id);
        }
        if readiness.hung_up {
            self.disconnect(id, CloseReason::PeerClosed);
        }
    }

    /// Reads the next request of an unmuted connection, if the shutdown allows.
    fn receive(&mut self, id: ConnectionId) {
        let draining = self.draining();
        let Some(connection) = self.connections.get_mut(id) else {
            return;
        };
        if draining || connection.closing || connection.is_muted() {
            return;
        }
        match connection.receive(&self.shared.stats) {
            ReceiveOutcome::Frame(frame) => {
                connection.request_seq += 1;
                let received_at = Instant::now();
                let request = Request {
                    connection: id,
                    peer: connection.peer,
                    frame,
                    received_at,
                    dequeued_at: received_at,
                };
                let reply = ReplyTo {
                    responses: self.response_sender.clone(),
                    waker: Arc::clone(&self.waker),
                    stats: Arc::clone(&self.shared.stats),
                    request_seq: connection.request_seq,
                };
                connection.state = ConnState::Pending(Box::new(RequestEnvelope { request, reply }));
                self.shared
                    .stats
                    .requests_received
                    .fetch_add(1, Ordering::Relaxed);
                self.pending_requests.push_back(id);
            }
            ReceiveOutcome::WouldBlock => {}
            ReceiveOutcome::Closed(reason) => self.disconnect(id, reason),
        }
    }

    /// Continues writing a connection's response.
    fn write(&mut self, id: ConnectionId) {
        let Some(connection) = self.connections.get_mut(id) else {
            return;
        };
        let ConnState::Sending { send, timings } = &mut connection.state else {
            return;
        };
        if connection.closing {
            return;
        }
        let written_before = send.written_bytes();
        let outcome = send.write_to(&mut connection.stream, &self.shared.stats);
        let now = Instant::now();
        if send.written_bytes() > written_before {
            connection.last_activity = now;
        }
        match outcome {
            WriteOutcome::Complete => {
                let timings = RequestTimings {
                    completed_at: now,
                    response_bytes: send.total_bytes(),
                    ..*timings
                };
                connection.state = ConnState::Sent(timings);
                self.completed_sends.push(id);
            }
            WriteOutcome::WouldBlock => {}
            WriteOutcome::Closed(error) => self.disconnect(id, CloseReason::WriteFailed(error)),
        }
    }

    // Step 4.
    fn process_completed_receives(&mut self) {
        self.request_channel_full = false;
        while let Some(id) = self.pending_requests.pop_front() {
            let Some(connection) = self.connections.get_mut(id) else {
                continue;
            };
            if connection.closing {
                continue;
            }
            let ConnState::Pending(envelope) =
                std::mem::replace(&mut connection.state, ConnState::AwaitingResponse)
            else {
                panic!(
                    "pending request list names a connection that is not pending connection={id}"
                );
            };
            let stats = &self.shared.stats;
            stats.request_queue_size.fetch_add(1, Ordering::Relaxed);
            match self.shared.requests.try_send(*envelope) {
                Ok(()) => {}
                Err(TrySendError::Full(envelope)) => {
                    stats.request_queue_size.fetch_sub(1, Ordering::Relaxed);
                    connection.state = ConnState::Pending(Box::new(envelope));
                    self.pending_requests.push_front(id);
                    self.request_channel_full = true;
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    stats.request_queue_size.fetch_sub(1, Ordering::Relaxed);
                    self.disconnect(id, CloseReason::RequestChannelClosed);
                }
            }
        }
    }

    // Step 5.
    fn process_completed_sends(&mut self) {
        let mut completed = std::mem::take(&mut self.completed_sends);
        for &id in &completed {
            let Some(connection) = self.connections.get_mut(id) else {
                continue;
            };
            if connection.closing {
                continue;
            }
            let ConnState::Sent(timings) =
                std::mem::replace(&mut connection.state, ConnState::Reading)
            else {
                panic!("completed send for a connection that has not sent connection={id}");
            };
            self.shared
                .stats
                .responses_completed
                .fetch_add(1, Ordering::Relaxed);
            self.notify_complete(&timings);
            self.receive(id);
        }
        assert!(
            self.completed_sends.is_empty(),
            "receiving never completes a send"
        );
        completed.clear();
        self.completed_sends = completed;
    }

    fn notify_complete(&self, timings: &RequestTimings) {
        let handler = &self.shared.handler;
        if catch_unwind(AssertUnwindSafe(|| handler.on_complete(timings))).is_err() {
            log::error!(
                "on_complete panicked connection={} api_key={}",
                timings.connection,
                timings.api_key
            );
        }
    }

    // Step 6.
    fn close_idle_connections(&mut self) {
        let now = Instant::now();
        if now < self.idle_check_next {
            return;
        }
        self.idle_check_next = now + self.idle_check_interval;
        let idle_ms = self.idle_max.as_millis() as u64;
        for connection in self.connections.iter_mut() {
            let idle = now.saturating_duration_since(connection.last_activity) >= self.idle_max;
            if idle && !connection.closing && !connection.is_muted() {
                connection.closing = true;
                self.disconnected
                    .push((connection.id, CloseReason::Idle { idle_ms }));
            }
        }
    }

    fn process_disconnected(&mut self) {
        let mut disconnected = std::mem::take(&mut self.disconnected);
        for (id, reason) in disconnected.drain(..) {
            self.close(id, &reason);
        }
        self.disconnected = disconnected;
    }

    /// Marks a connection for closing in step 6; no more I/O happens on it.
    fn disconnect(&mut self, id: ConnectionId, reason: CloseReason) {
        let Some(connection) = self.connections.get_mut(id) else {
            return;
        };
        if !connection.closing {
            connection.closing = true;
            self.disconnected.push((id, reason));
        }
    }

    fn close(&mut self, id: ConnectionId, reason: &CloseReason) {
        let Some(mut connection) = self.connections.remove(id) else {
            return;
        };
        if let Err(error) = self.poll.registry().deregister(&mut connection.stream) {
            log::debug!("deregister failed connection={id} error={error}");
        }
        log::log!(
            reason.log_level(),
            "connection closed connection={id} peer={} reason={reason}",
            connection.peer
        );
    }

    fn close_all(&mut self) {
        let ids = self.connections.ids();
        let count = ids.len();
        for id in ids {
            self.close(id, &CloseReason::Shutdown);
        }
        assert_eq!(self.connections.len(), 0);
        if count > 0 {
            log::info!(
                "processor closed its connections processor={} count={count}",
                self.id
            );
        }
    }
}

//! The request handler pool (`kb-handler-<i>`, `num.io.threads` threads): Kafka's
//! `KafkaRequestHandlerPool`.
//!
//! Each thread loops: block on the request channel (that wait is its idle time), stamp
//! `dequeued_at`, call [`RequestHandler::handle`]. A panic in `handle` is caught and logged,
//! the connection is closed (the responder dropped by the unwinding closes it, and the
//! thread also sends its own close in case the handler kept the responder somewhere), and
//! the thread keeps serving.
//!
//! Shutdown: a thread returns when every processor has dropped its end of the request
//! channel. Requests still queued then are discarded (`discard` is set): their connections
//! are already closed. A handler stuck inside `handle` keeps its thread, and shutdown, waiting.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::channel::{Reply, RequestEnvelope};
use crate::error::ReactorError;
use crate::request::{RequestHandler, RequestTimings};
use crate::stats::{add_duration, ReactorStats};

/// What one handler thread needs.
pub(crate) struct HandlerContext {
    pub index: usize,
    pub requests: Receiver<RequestEnvelope>,
    pub handler: Arc<dyn RequestHandler>,
    pub stats: Arc<ReactorStats>,
    pub discard: Arc<AtomicBool>,
}

/// Spawns handler thread `context.index`.
pub(crate) fn spawn_handler(context: HandlerContext) -> Result<JoinHandle<()>, ReactorError> {
    let thread = format!("kb-handler-{}", context.index);
    std::thread::Builder::new()
        .name(thread.clone())
        .spawn(move || run_handler(context))
        .map_err(|source| ReactorError::Spawn { thread, source })
}

fn run_handler(context: HandlerContext) {
    log::debug!("request handler started handler={}", context.index);
    let idle_ns = &context.stats.handler_idle_ns[context.index];
    loop {
        let waiting_since = Instant::now();
        let Ok(envelope) = context.requests.recv() else {
            break;
        };
        let dequeued_at = Instant::now();
        add_duration(idle_ns, dequeued_at - waiting_since);
        context
            .stats
            .request_queue_size
            .fetch_sub(1, Ordering::Relaxed);
        if context.discard.load(Ordering::Acquire) {
            continue;
        }
        handle_one(&context, envelope, dequeued_at);
    }
    log::debug!("request handler stopped handler={}", context.index);
}

fn handle_one(context: &HandlerContext, envelope: RequestEnvelope, dequeued_at: Instant) {
    let (request, responder, closer) = envelope.into_parts(dequeued_at);
    let connection = request.connection;
    let api_key = request.api_key();
    let timings = RequestTimings {
        connection,
        api_key,
        request_bytes: request.frame.len(),
        response_bytes: 0,
        received_at: request.received_at,
        dequeued_at,
        responded_at: dequeued_at,
        send_started_at: dequeued_at,
        completed_at: dequeued_at,
        handle_returned_at: None,
        from_follower: false,
    };
    let handler = &context.handler;
    let marks = responder.marks();
    let handled = catch_unwind(AssertUnwindSafe(|| handler.handle(request, responder)));
    marks.handle_returned(Instant::now());
    if let Err(payload) = handled {
        log::error!(
            "request handler panicked, closing connection handler={} connection={connection} api_key={api_key} panic={}",
            context.index,
            panic_message(payload.as_ref())
        );
        closer.send(connection, Reply::HandlerPanicked, timings);
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&str>() {
        return message;
    }
    if let Some(message) = payload.downcast_ref::<String>() {
        return message;
    }
    "non-string panic payload"
}

//! Counters the reactor keeps for the metrics layer.
//!
//! All fields are atomics updated with `Relaxed` ordering by the thread that does the work
//! (acceptor, processor, handler) and read by anyone holding the `Arc`. Counters only grow;
//! gauges (`connections_active`, `request_queue_size`, `response_queue_size`) go up and down
//! and may be off by one for an instant because the increment and the decrement happen on
//! different threads.
//!
//! Idle ratios, the way Kafka computes them: a processor is idle while blocked in `poll()`,
//! a handler while blocked on the request channel. Sample `processor_idle_ns[i]` twice; the
//! difference divided by the wall-clock nanoseconds between the samples is that processor's
//! idle fraction. `NetworkProcessorAvgIdlePercent` is the mean over processors and
//! `RequestHandlerAvgIdlePercent` the mean over `handler_idle_ns`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Live counters of one [`crate::SocketServer`].
#[derive(Debug)]
pub struct ReactorStats {
    /// Bytes read from client sockets.
    pub bytes_in: AtomicU64,
    /// Bytes written to client sockets, including those sent with sendfile.
    pub bytes_out: AtomicU64,
    /// Bytes written with sendfile(2) (file regions; a subset of `bytes_out`).
    pub sendfile_bytes: AtomicU64,
    /// Connections admitted (within the connection limits) and handed to a processor.
    pub connections_accepted: AtomicU64,
    /// Admitted connections that have been closed since.
    pub connections_closed: AtomicU64,
    /// Connections closed at accept because `max.connections.per.ip` was reached.
    pub connections_rejected: AtomicU64,
    /// Admitted connections not yet closed (gauge).
    pub connections_active: AtomicI64,
    /// Frames refused for their size prefix (negative, too small, over
    /// `socket.request.max.bytes`); each closed its connection.
    pub frames_rejected: AtomicU64,
    /// Complete request frames read.
    pub requests_received: AtomicU64,
    /// Responses fully written, plus `NoResponse` completions.
    pub responses_completed: AtomicU64,
    /// Requests in the request channel, not yet taken by a handler (gauge, Kafka's
    /// `RequestQueueSize`).
    pub request_queue_size: AtomicI64,
    /// Responses queued to processors, not yet picked up (gauge, Kafka's `ResponseQueueSize`).
    pub response_queue_size: AtomicI64,
    /// Per processor: nanoseconds spent blocked in `poll()`.
    pub processor_idle_ns: Box<[AtomicU64]>,
    /// Per handler thread: nanoseconds spent waiting for a request.
    pub handler_idle_ns: Box<[AtomicU64]>,
    /// When the server started; the idle counters count from here.
    pub started_at: Instant,
}

impl ReactorStats {
    pub(crate) fn new(processors: usize, handlers: usize) -> ReactorStats {
        ReactorStats {
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            sendfile_bytes: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_closed: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            connections_active: AtomicI64::new(0),
            frames_rejected: AtomicU64::new(0),
            requests_received: AtomicU64::new(0),
            responses_completed: AtomicU64::new(0),
            request_queue_size: AtomicI64::new(0),
            response_queue_size: AtomicI64::new(0),
            processor_idle_ns: (0..processors).map(|_| AtomicU64::new(0)).collect(),
            handler_idle_ns: (0..handlers).map(|_| AtomicU64::new(0)).collect(),
            started_at: Instant::now(),
        }
    }

    /// Mean idle fraction (0.0..=1.0) of the processors since start.
    pub fn network_processor_avg_idle(&self) -> f64 {
        average_idle(&self.processor_idle_ns, self.started_at.elapsed())
    }

    /// Mean idle fraction (0.0..=1.0) of the handler threads since start.
    pub fn request_handler_avg_idle(&self) -> f64 {
        average_idle(&self.handler_idle_ns, self.started_at.elapsed())
    }
}

fn average_idle(idle_ns: &[AtomicU64], elapsed: Duration) -> f64 {
    let wall_ns = elapsed.as_nanos().max(1) as f64;
    if idle_ns.is_empty() {
        return 0.0;
    }
    let sum: f64 = idle_ns
        .iter()
        .map(|idle| (idle.load(Ordering::Relaxed) as f64 / wall_ns).min(1.0))
        .sum();
    sum / idle_ns.len() as f64
}

/// Adds a duration to a nanosecond counter.
pub(crate) fn add_duration(counter: &AtomicU64, duration: Duration) {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    counter.fetch_add(nanos, Ordering::Relaxed);
}

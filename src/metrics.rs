//! Request-stage metrics and the Prometheus endpoint (`metrics.port`, `metrics.host`).
//!
//! What is recorded, per API (label `request`, Kafka's names; Fetch is split into
//! `FetchConsumer` and `FetchFollower` by the request's `replica_id`, as Kafka does), is
//! Kafka's `RequestMetrics` breakdown of one request's life:
//!
//! ```text
//! request_queue   received → taken by a handler thread          (RequestQueueTimeMs)
//! local           handler thread: decode, act, encode            (LocalTimeMs)
//! remote          parked in a purgatory (delayed Fetch, JoinGroup) (RemoteTimeMs)
//! response_queue  responded → picked up by the processor          (ResponseQueueTimeMs)
//! response_send   picked up → last byte written                   (ResponseSendTimeMs)
//! total           received → last byte written                    (TotalTimeMs)
//! ```
//!
//! The reactor hands every completed request's timestamps to [`Instrumented::on_complete`]
//! on the processor thread, with what the request itself recorded: when the broker's
//! `handle` returned, if before the response (a response given after that was completed by
//! someone else — a purgatory timer, another request's handler — so the time from `handle`
//! returning to the response is remote), and whether the Fetch handler marked it a
//! follower's. No frame is parsed and no table is kept here.
//!
//! Histograms have fixed log-scale buckets ([`BUCKET_BOUNDS_NS`], 10 µs to 60 s) of
//! `AtomicU64`s; recording is a binary search and two relaxed `fetch_add`s per stage. The
//! atomics are striped per network processor, so processors never share a cache line
//! while recording; a scrape sums the stripes. A scrape reads the buckets one by one
//! while they move, so the `+Inf` bucket (rendered as `_count`) is exact and `_sum` may be
//! a request ahead or behind — as with any lock-free Prometheus client.
//!
//! The endpoint: one `kb-metrics` thread with a std `TcpListener` answers `GET /metrics`
//! (Prometheus text format 0.0.4), one connection at a time, `Connection: close`. Requests
//! are bounded ([`HTTP_REQUEST_BYTES_MAX`]) and so is the time a client may take
//! ([`HTTP_IO_TIMEOUT_MS`]); a slow or hostile scraper delays only other scrapes. The thread
//! also samples the idle counters every second for the idle-ratio gauges (a one-minute
//! window, like Kafka's meters). No broker thread ever waits for it, except that reading a
//! partition's offsets takes that log's lock for an instant.
//!
//! Nothing is persisted: counters start at zero with the process, as in Kafka.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use kbroker_reactor::{ReactorStats, Request, RequestHandler, RequestTimings, Responder};

use crate::broker::Broker;

/// Upper bounds (inclusive, Prometheus `le`) of the histogram buckets, in nanoseconds: a
/// 1-2-5 log scale from 10 µs to 60 s. Everything slower lands in `+Inf`.
pub const BUCKET_BOUNDS_NS: [u64; 21] = [
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
    20_000_000_000,
    60_000_000_000,
];
/// Buckets per histogram: one per bound plus `+Inf`.
pub const BUCKETS: usize = BUCKET_BOUNDS_NS.len() + 1;
/// API keys with a slot of their own (Kafka's keys end at 82 today).
pub const API_KEY_SLOTS: usize = 128;
const FETCH_FOLLOWER_SLOT: usize = API_KEY_SLOTS;
const UNKNOWN_SLOT: usize = API_KEY_SLOTS + 1;
const SLOTS: usize = API_KEY_SLOTS + 2;
/// Stripes of the request histograms; processors beyond this share stripes.
pub const STRIPES_MAX: usize = 16;
/// Longest HTTP request head the endpoint reads.
pub const HTTP_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Read and write timeout of one scrape connection.
pub const HTTP_IO_TIMEOUT_MS: u64 = 2_000;
/// How often the endpoint thread looks for a connection, a stop request or a sample due.
const ACCEPT_POLL_MS: u64 = 20;
/// Idle-ratio sampling period and window (Kafka's meters use a one-minute rate).
const IDLE_SAMPLE_INTERVAL_MS: u64 = 1_000;
const IDLE_WINDOW_SAMPLES_MAX: usize = 61;

const _: () = assert!(HTTP_IO_TIMEOUT_MS > ACCEPT_POLL_MS);
const _: () = assert!(BUCKET_BOUNDS_NS[0] > 0);

// ---------------------------------------------------------------------------------------
// Histograms

/// A lock-free histogram of durations over [`BUCKET_BOUNDS_NS`].
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

/// A histogram read at one moment: per-bucket (not cumulative) counts and the sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub buckets: [u64; BUCKETS],
    pub sum_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            sum_ns: AtomicU64::new(0),
        }
    }

    /// The bucket a duration falls in: the first bound `>=` it, or `+Inf`.
    pub fn bucket_of(ns: u64) -> usize {
        BUCKET_BOUNDS_NS.partition_point(|&bound| bound < ns)
    }

    pub fn record(&self, duration: Duration) {
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Histogram::bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Adds this histogram's counts into `into`.
    fn add_to(&self, into: &mut HistogramSnapshot) {
        for (total, bucket) in into.buckets.iter_mut().zip(&self.buckets) {
            *total += bucket.load(Ordering::Relaxed);
        }
        into.sum_ns = into
            .sum_ns
            .wrapping_add(self.sum_ns.load(Ordering::Relaxed));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut snapshot = HistogramSnapshot::default();
        self.add_to(&mut snapshot);
        snapshot
    }
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        HistogramSnapshot {
            buckets: [0; BUCKETS],
            sum_ns: 0,
        }
    }
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// One request's life split into Kafka's stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageTimes {
    pub request_queue: Duration,
    pub local: Duration,
    pub remote: Duration,
    pub response_queue: Duration,
    pub response_send: Duration,
    pub total: Duration,
}

impl StageTimes {
    /// Splits `timings`; `handle_returned_at` is when the broker's `handle` returned, if
    /// it had returned before the request completed (else the response came from inside
    /// `handle`, and remote time is zero).
    pub fn split(timings: &RequestTimings, handle_returned_at: Option<Instant>) -> StageTimes {
        let handler = timings.handler_time();
        let remote = handle_returned_at
            .map_or(Duration::ZERO, |returned| {
                timings.responded_at.saturating_duration_since(returned)
            })
            .min(handler);
        StageTimes {
            request_queue: timings.request_queue_time(),
            local: handler - remote,
            remote,
            response_queue: timings.response_queue_time(),
            response_send: timings.response_send_time(),
            total: timings.total_time(),
        }
    }
}

/// The Prometheus families of the stage histograms, in [`StageHistograms::all`] order:
/// (name, help).
pub const STAGE_FAMILIES: [(&str, &str); 6] = [
    (
        "kafka_network_request_queue_time_ms",
        "Time a request waited in the request channel for a handler thread (RequestQueueTimeMs)",
    ),
    (
        "kafka_network_local_time_ms",
        "Time a handler thread worked on the request (LocalTimeMs)",
    ),
    (
        "kafka_network_remote_time_ms",
        "Time the request was parked in a purgatory after its handler returned (RemoteTimeMs)",
    ),
    (
        "kafka_network_response_queue_time_ms",
        "Time the response waited for its network processor (ResponseQueueTimeMs)",
    ),
    (
        "kafka_network_response_send_time_ms",
        "Time the network processor spent writing the response (ResponseSendTimeMs)",
    ),
    (
        "kafka_network_total_time_ms",
        "Time from the complete request read to the last response byte written (TotalTimeMs)",
    ),
];

/// The six stage histograms and the request counter of one API.
#[derive(Debug, Default)]
pub struct StageHistograms {
    request_queue: Histogram,
    local: Histogram,
    remote: Histogram,
    response_queue: Histogram,
    response_send: Histogram,
    total: Histogram,
    requests: AtomicU64,
}

impl StageHistograms {
    fn all(&self) -> [&Histogram; 6] {
        [
            &self.request_queue,
            &self.local,
            &self.remote,
            &self.response_queue,
            &self.response_send,
            &self.total,
        ]
    }

    fn record(&self, stages: &StageTimes) {
        self.request_queue.record(stages.request_queue);
        self.local.record(stages.local);
        self.remote.record(stages.remote);
        self.response_queue.record(stages.response_queue);
        self.response_send.record(stages.response_send);
        self.total.record(stages.total);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// Per-API stage histograms of one broker, striped per network processor.
#[derive(Debug)]
pub struct RequestMetrics {
    stripes: Box<[Box<[StageHistograms]>]>,
}

/// One API's figures, summed over the stripes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSnapshot {
    /// Kafka's request name (`Produce`, `FetchConsumer`, ...).
    pub request: String,
    pub requests: u64,
    /// In [`STAGE_FAMILIES`] order.
    pub stages: [HistogramSnapshot; 6],
}

impl RequestMetrics {
    /// `processors` is `num.network.threads`; stripes are capped at [`STRIPES_MAX`].
    pub fn new(processors: usize) -> RequestMetrics {
        let stripes = processors.clamp(1, STRIPES_MAX);
        RequestMetrics {
            stripes: (0..stripes)
                .map(|_| (0..SLOTS).map(|_| StageHistograms::default()).collect())
                .collect(),
        }
    }

    /// Records one completed request. Runs on the processor thread: no locks, no allocation.
    pub fn record(&self, timings: &RequestTimings, fetch_from_follower: bool, stages: &StageTimes) {
        let slot = match usize::try_from(timings.api_key) {
            Ok(key) if key == ApiKey::Fetch as usize && fetch_from_follower => FETCH_FOLLOWER_SLOT,
            Ok(key) if key < API_KEY_SLOTS => key,
            _ => UNKNOWN_SLOT,
        };
        let stripe = usize::from(timings.connection.processor) % self.stripes.len();
        self.stripes[stripe][slot].record(stages);
    }

    /// Every API that has served a request, in api-key order (FetchFollower after Fetch's
    /// consumers, unknown keys last).
    pub fn snapshot(&self) -> Vec<ApiSnapshot> {
        let mut out = Vec::new();
        for slot in slot_order() {
            let requests: u64 = self
                .stripes
                .iter()
                .map(|s| s[slot].requests.load(Ordering::Relaxed))
                .sum();
            if requests == 0 {
                continue;
            }
            let mut stages = [HistogramSnapshot::default(); 6];
            for stripe in self.stripes.iter() {
                for (total, histogram) in stages.iter_mut().zip(stripe[slot].all()) {
                    histogram.add_to(total);
                }
            }
            out.push(ApiSnapshot {
                request: slot_name(slot),
                requests,
                stages,
            });
        }
        out
    }
}

fn slot_order() -> impl Iterator<Item = usize> {
    let fetch = ApiKey::Fetch as usize;
    (0..=fetch)
        .chain([FETCH_FOLLOWER_SLOT])
        .chain(fetch + 1..API_KEY_SLOTS)
        .chain([UNKNOWN_SLOT])
}

fn slot_name(slot: usize) -> String {
    match slot {
        FETCH_FOLLOWER_SLOT => "FetchFollower".to_string(),
        UNKNOWN_SLOT => "Unknown".to_string(),
        s if s == ApiKey::Fetch as usize => "FetchConsumer".to_string(),
        s => i16::try_from(s)
            .ok()
            .and_then(|k| ApiKey::try_from(k).ok())
            .map_or_else(|| format!("ApiKey{s}"), |k| format!("{k:?}")),
    }
}

/// Wraps the broker's [`RequestHandler`] and records every request's stages.
pub struct Instrumented<H> {
    inner: H,
    requests: Arc<RequestMetrics>,
}

impl<H: RequestHandler> Instrumented<H> {
    pub fn new(inner: H, requests: Arc<RequestMetrics>) -> Instrumented<H> {
        Instrumented { inner, requests }
    }
}

impl<H: RequestHandler> RequestHandler for Instrumented<H> {
    fn handle(&self, request: Request, responder: Responder) {
        self.inner.handle(request, responder);
    }

    fn on_complete(&self, timings: &RequestTimings) {
        let stages = StageTimes::split(timings, timings.handle_returned_at);
        self.requests
            .record(timings, timings.from_follower, &stages);
        self.inner.on_complete(timings);
    }
}

// ---------------------------------------------------------------------------------------
// Gauges and counters read at scrape time

/// The reactor's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReactorSample {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub sendfile_bytes: u64,
    pub connections_active: i64,
    pub connections_accepted: u64,
    pub connections_closed: u64,
    pub connections_rejected: u64,
    pub frames_rejected: u64,
    pub requests_received: u64,
    pub responses_completed: u64,
    pub request_queue_size: i64,
    pub response_queue_size: i64,
    pub processor_idle_ns: Vec<u64>,
    pub handler_idle_ns: Vec<u64>,
    /// Mean idle fractions (0..=1) over the recent window.
    pub processor_avg_idle: f64,
    pub handler_avg_idle: f64,
}

impl ReactorSample {
    pub fn read(stats: &ReactorStats) -> ReactorSample {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReactorSample {
            bytes_in: load(&stats.bytes_in),
            bytes_out: load(&stats.bytes_out),
            sendfile_bytes: load(&stats.sendfile_bytes),
            connections_active: stats.connections_active.load(Ordering::Relaxed),
            connections_accepted: load(&stats.connections_accepted),
            connections_closed: load(&stats.connections_closed),
            connections_rejected: load(&stats.connections_rejected),
            frames_rejected: load(&stats.frames_rejected),
            requests_received: load(&stats.requests_received),
            responses_completed: load(&stats.responses_completed),
            request_queue_size: stats.request_queue_size.load(Ordering::Relaxed),
            response_queue_size: stats.response_queue_size.load(Ordering::Relaxed),
            processor_idle_ns: stats.processor_idle_ns.iter().map(load).collect(),
            handler_idle_ns: stats.handler_idle_ns.iter().map(load).collect(),
            processor_avg_idle: stats.network_processor_avg_idle(),
            handler_avg_idle: stats.request_handler_avg_idle(),
        }
    }
}

/// Idle counters sampled once a second; the idle ratios are taken over the last minute.
#[derive(Debug, Default)]
struct IdleWindow {
    samples: VecDeque<(Instant, u64, u64)>,
}

impl IdleWindow {
    fn push(&mut self, at: Instant, sample: &ReactorSample) {
        if self.samples.len() == IDLE_WINDOW_SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back((
            at,
            sample.processor_idle_ns.iter().sum(),
            sample.handler_idle_ns.iter().sum(),
        ));
    }

    /// Replaces the since-start ratios in `sample` with the ratios since the oldest sample.
    fn apply(&self, now: Instant, sample: &mut ReactorSample) {
        let Some(&(then, processor_then, handler_then)) = self.samples.front() else {
            return;
        };
        let wall_ns = now.saturating_duration_since(then).as_nanos() as f64;
        if wall_ns < 1e6 {
            return;
        }
        let ratio = |now_ns: u64, then_ns: u64, threads: usize| {
            let idle = now_ns.saturating_sub(then_ns) as f64 / threads.max(1) as f64;
            (idle / wall_ns).clamp(0.0, 1.0)
        };
        sample.processor_avg_idle = ratio(
            sample.processor_idle_ns.iter().sum(),
            processor_then,
            sample.processor_idle_ns.len(),
        );
        sample.handler_avg_idle = ratio(
            sample.handler_idle_ns.iter().sum(),
            handler_then,
            sample.handler_idle_ns.len(),
        );
    }
}

/// One partition's log gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSample {
    pub topic: String,
    pub partition: i32,
    pub log_end_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
}

fn partition_samples(broker: &Broker) -> Vec<PartitionSample> {
    let mut out: Vec<PartitionSample> = broker
        .replicas
        .logs
        .all()
        .into_iter()
        .map(|(tp, log)| {
            let log = kbroker_storage::manager::lock_any(&log);
            PartitionSample {
                topic: tp.topic,
                partition: tp.partition,
                log_end_offset: log.log_end_offset(),
                high_watermark: log.high_watermark(),
                size_bytes: log.size_bytes(),
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    out
}

// ---------------------------------------------------------------------------------------
// Prometheus text format 0.0.4

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn render_histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let mut cumulative = 0;
    for (i, count) in h.buckets.iter().enumerate() {
        cumulative += count;
        match BUCKET_BOUNDS_NS.get(i) {
            Some(&bound) => {
                let le = ns_to_ms(bound);
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let sum = ns_to_ms(h.sum_ns);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

/// The per-API families.
pub fn render_requests(out: &mut String, apis: &[ApiSnapshot]) {
    family(
        out,
        "kafka_network_requests_total",
        "counter",
        "Requests completed (response written, or none due), by API",
    );
    for api in apis {
        let request = escape_label(&api.request);
        let _ = writeln!(
            out,
            "kafka_network_requests_total{{request=\"{request}\"}} {}",
            api.requests
        );
    }
    for (stage, (name, help)) in STAGE_FAMILIES.iter().enumerate() {
        family(out, name, "histogram", help);
        for api in apis {
            let labels = format!("request=\"{}\"", escape_label(&api.request));
            render_histogram(out, name, &labels, &api.stages[stage]);
        }
    }
}

fn gauge_or_counter(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    value: impl std::fmt::Display,
) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The network and server families.
pub fn render_reactor(out: &mut String, s: &ReactorSample) {
    let rows: [(&str, &str, &str, String); 14] = [
        ("kafka_network_request_queue_size", "gauge", "Requests waiting in the request channel (RequestQueueSize)", s.request_queue_size.to_string()),
        ("kafka_network_response_queue_size", "gauge", "Responses waiting for their network processor (ResponseQueueSize)", s.response_queue_size.to_string()),
        ("kafka_network_processor_avg_idle_percent", "gauge", "Mean idle fraction (0-1, as Kafka's NetworkProcessorAvgIdlePercent) of the network processors over the last minute", s.processor_avg_idle.to_string()),
        ("kafka_server_request_handler_avg_idle_percent", "gauge", "Mean idle fraction (0-1, as Kafka's RequestHandlerAvgIdlePercent) of the request handler threads over the last minute", s.handler_avg_idle.to_string()),
        ("kafka_server_bytes_in_total", "counter", "Bytes read from client sockets (all requests, not only produced records)", s.bytes_in.to_string()),
        ("kafka_server_bytes_out_total", "counter", "Bytes written to client sockets, sendfile included", s.bytes_out.to_string()),
        ("kbroker_sendfile_bytes_total", "counter", "Bytes written with sendfile(2) from segment files (a subset of bytes out)", s.sendfile_bytes.to_string()),
        ("kafka_server_connections", "gauge", "Open client connections", s.connections_active.to_string()),
        ("kbroker_connections_accepted_total", "counter", "Connections admitted within the connection limits", s.connections_accepted.to_string()),
        ("kbroker_connections_closed_total", "counter", "Admitted connections closed since", s.connections_closed.to_string()),
        ("kbroker_connections_rejected_total", "counter", "Connections refused by max.connections.per.ip", s.connections_rejected.to_string()),
        ("kbroker_frames_rejected_total", "counter", "Request frames refused for their size prefix (each closed its connection)", s.frames_rejected.to_string()),
        ("kbroker_requests_received_total", "counter", "Complete request frames read", s.requests_received.to_string()),
        ("kbroker_responses_completed_total", "counter", "Responses fully written, plus requests that need no response", s.responses_completed.to_string()),
    ];
    for (name, kind, help, value) in &rows {
        gauge_or_counter(out, name, kind, help, value);
    }
    let per_thread: [(&str, &str, &str, &[u64]); 2] = [
        (
            "kbroker_network_processor_idle_seconds_total",
            "processor",
            "Seconds each network processor spent blocked in poll()",
            &s.processor_idle_ns,
        ),
        (
            "kbroker_request_handler_idle_seconds_total",
            "handler",
            "Seconds each request handler thread spent waiting for a request",
            &s.handler_idle_ns,
        ),
    ];
    for (name, label, help, values) in per_thread {
        family(out, name, "counter", help);
        for (i, ns) in values.iter().enumerate() {
            let seconds = *ns as f64 / 1e9;
            let _ = writeln!(out, "{name}{{{label}=\"{i}\"}} {seconds}");
        }
    }
}

/// The per-partition log gauges.
pub fn render_partitions(out: &mut String, partitions: &[PartitionSample]) {
    type Gauge = fn(&PartitionSample) -> String;
    let families: [(&str, &str, Gauge); 3] = [
        (
            "kafka_log_log_end_offset",
            "Offset of the next record appended (LogEndOffset)",
            |p| p.log_end_offset.to_string(),
        ),
        (
            "kafka_log_high_watermark",
            "Offset below which records are committed and readable by consumers",
            |p| p.high_watermark.to_string(),
        ),
        (
            "kafka_log_size_bytes",
            "Bytes of the partition's segment files (Size)",
            |p| p.size_bytes.to_string(),
        ),
    ];
    for (name, help, value) in families {
        family(out, name, "gauge", help);
        for p in partitions {
            let topic = escape_label(&p.topic);
            let _ = writeln!(
                out,
                "{name}{{topic=\"{topic}\",partition=\"{}\"}} {}",
                p.partition,
                value(p)
            );
        }
    }
}

/// What the endpoint reads at every scrape.
pub struct Sources {
    pub requests: Arc<RequestMetrics>,
    pub reactor: Arc<ReactorStats>,
    pub broker: Arc<Broker>,
}

/// What the `kb-metrics` thread serves: a periodic tick and the page.
trait Page: Send + 'static {
    /// Called on every turn of the thread (at least every [`ACCEPT_POLL_MS`]).
    fn tick(&mut self, now: Instant);
    fn render(&mut self, out: &mut String);
}

struct BrokerPage {
    sources: Sources,
    window: IdleWindow,
    next_sample: Instant,
}

impl Page for BrokerPage {
    fn tick(&mut self, now: Instant) {
        if now >= self.next_sample {
            self.next_sample = now + Duration::from_millis(IDLE_SAMPLE_INTERVAL_MS);
            self.window
                .push(now, &ReactorSample::read(&self.sources.reactor));
        }
    }

    fn render(&mut self, out: &mut String) {
        let mut reactor = ReactorSample::read(&self.sources.reactor);
        self.window.apply(Instant::now(), &mut reactor);
        render_requests(out, &self.sources.requests.snapshot());
        render_reactor(out, &reactor);
        render_partitions(out, &partition_samples(&self.sources.broker));
        render_windows(out);
        render_fetch_sessions(out, &self.sources.broker.fetch_sessions.stats());
        render_replication_quotas(
            out,
            &self.sources.broker.replicas.quotas,
            crate::broker::now_ms(),
        );
    }
}

/// The replication throttles (Kafka's LeaderReplication / FollowerReplication byte-rate),
/// with what they counted and held back.
fn render_replication_quotas(
    out: &mut String,
    q: &crate::replication_quota::ReplicationQuotas,
    now_ms: i64,
) {
    for (side, quota) in [("leader", &q.leader), ("follower", &q.follower)] {
        let (bytes, held) = quota.totals();
        let rows = [
            (
                format!("kafka_server_{side}_replication_byte_rate"),
                "gauge",
                format!(
                    "Bytes per second of throttled replicas, {side} side (the throttle's measure)"
                ),
                format!("{:.1}", quota.rate_per_second(now_ms)),
            ),
            (
                format!("kbroker_{side}_replication_throttled_bytes_total"),
                "counter",
                format!("Bytes of throttled replicas counted by the {side} throttle"),
                bytes.to_string(),
            ),
            (
                format!("kbroker_{side}_replication_throttled_total"),
                "counter",
                format!("Times the {side} throttle held a replica's partition back"),
                held.to_string(),
            ),
        ];
        for (name, kind, help, value) in rows {
            gauge_or_counter(out, &name, kind, &help, value);
        }
    }
}

/// The fetch session cache (KIP-227), under Kafka's FetchSessionCache metric names.
fn render_fetch_sessions(out: &mut String, s: &crate::fetch_session::SessionStats) {
    let rows = [
        (
            "kafka_server_fetch_session_cache_num_incremental_fetch_sessions",
            "gauge",
            "Incremental fetch sessions cached (NumIncrementalFetchSessions)",
            s.sessions as u64,
        ),
        (
            "kafka_server_fetch_session_cache_num_incremental_fetch_partitions_cached",
            "gauge",
            "Partitions held by all fetch sessions (NumIncrementalFetchPartitionsCached)",
            s.partitions as u64,
        ),
        (
            "kafka_server_fetch_session_cache_incremental_fetch_session_evictions_total",
            "counter",
            "Sessions evicted to make room for new ones (IncrementalFetchSessionEvictionsPerSec)",
            s.evictions,
        ),
        (
            "kbroker_fetch_incremental_total",
            "counter",
            "Fetch requests served as incremental fetches of a session",
            s.incremental_fetches,
        ),
    ];
    for (name, kind, help, value) in rows {
        gauge_or_counter(out, name, kind, help, value);
    }
}

/// The active segments' mapped windows (storage/src/window.rs).
fn render_windows(out: &mut String) {
    use kbroker_storage::window::STATS;
    let rows = [
        (
            "kbroker_segment_windows_prefaulted_total",
            "Active-segment windows the prefault thread mapped and populated ahead of the writer",
            &STATS.prefaulted,
        ),
        (
            "kbroker_segment_window_prefaulted_bytes_total",
            "Bytes of those windows",
            &STATS.prefaulted_bytes,
        ),
        (
            "kbroker_segment_windows_mapped_inline_total",
            "Windows a writer mapped itself because the prepared one was not ready",
            &STATS.mapped_inline,
        ),
        (
            "kbroker_segment_dropped_behind_bytes_total",
            "Written bytes dropped from the page cache behind their writer (log.segment.drop.behind.bytes)",
            &STATS.dropped_bytes,
        ),
        (
            "kbroker_segment_drop_behind_deferred_total",
            "Drop-behind requests put off because the drop-behind thread was behind",
            &STATS.drop_behind_deferred,
        ),
    ];
    for (name, help, value) in rows {
        gauge_or_counter(out, name, "counter", help, value.load(Ordering::Relaxed));
    }
}

// ---------------------------------------------------------------------------------------
// The HTTP endpoint

/// The `kb-metrics` thread and its listener.
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and starts answering `GET /metrics` with the broker's figures.
    pub fn start(addr: SocketAddr, sources: Sources) -> io::Result<MetricsServer> {
        let page = BrokerPage {
            sources,
            window: IdleWindow::default(),
            next_sample: Instant::now(),
        };
        MetricsServer::start_page(addr, page)
    }

    fn start_page(addr: SocketAddr, mut page: impl Page) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("kb-metrics".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    page.tick(Instant::now());
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            if let Err(e) = serve(stream, &mut page) {
                                log::debug!("metrics scrape failed peer={peer}: {e}");
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(ACCEPT_POLL_MS));
                        }
                        Err(e) => {
                            log::warn!("metrics accept failed: {e}");
                            std::thread::sleep(Duration::from_millis(ACCEPT_POLL_MS));
                        }
                    }
                }
            })?;
        log::info!("metrics endpoint listening addr=http://{local_addr}/metrics");
        Ok(MetricsServer {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the thread (within [`HTTP_IO_TIMEOUT_MS`] if a scrape is in progress).
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Answers one HTTP/1.x request on `stream` and closes it.
fn serve(mut stream: TcpStream, page: &mut impl Page) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(HTTP_IO_TIMEOUT_MS)))?;
    stream.set_write_timeout(Some(Duration::from_millis(HTTP_IO_TIMEOUT_MS)))?;
    let head = match read_head(&mut stream)? {
        Some(head) => head,
        None => {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                false,
            )
        }
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_ascii_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let mut body = String::with_capacity(64 * 1024);
            page.render(&mut body);
            respond(&mut stream, "200 OK", &body, method == "HEAD")
        }
        ("GET" | "HEAD", _) => respond(&mut stream, "404 Not Found", "see /metrics\n", false),
        _ => respond(&mut stream, "405 Method Not Allowed", "", false),
    }
}

/// Reads up to the blank line ending the request head; `None` if it exceeds the limit.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut buf = vec![0u8; HTTP_REQUEST_BYTES_MAX];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || buf[..len].ends_with(b"\n\n") {
            return Ok(Some(String::from_utf8_lossy(&buf[..len]).into_owned()));
        }
    }
    if len == buf.len() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&buf[..len]).into_owned()))
}

fn respond(stream: &mut TcpStream, status: &str, body: &str, head_only: bool) -> io::Result<()> {
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes())?;
    if !head_only {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbroker_reactor::ConnectionId;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timings(api_key: i16, processor: u16, base: Instant, steps_ms: [u64; 4]) -> RequestTimings {
        let [queue, handler, response_queue, send] = steps_ms;
        let dequeued_at = base + ms(queue);
        let responded_at = dequeued_at + ms(handler);
        let send_started_at = responded_at + ms(response_queue);
        RequestTimings {
            connection: ConnectionId {
                processor,
                slot: 7,
                generation: 1,
            },
            api_key,
            request_bytes: 100,
            response_bytes: 50,
            received_at: base,
            dequeued_at,
            responded_at,
            send_started_at,
            completed_at: send_started_at + ms(send),
            handle_returned_at: None,
            from_follower: false,
        }
    }

    #[test]
    fn buckets_are_inclusive_upper_bounds_and_overflow_goes_to_inf() {
        assert_eq!(Histogram::bucket_of(0), 0);
        assert_eq!(Histogram::bucket_of(10_000), 0, "le is inclusive");
        assert_eq!(Histogram::bucket_of(10_001), 1);
        assert_eq!(Histogram::bucket_of(1_000_000), 6, "1 ms");
        assert_eq!(Histogram::bucket_of(60_000_000_000), BUCKETS - 2);
        assert_eq!(Histogram::bucket_of(60_000_000_001), BUCKETS - 1);
        assert_eq!(Histogram::bucket_of(u64::MAX), BUCKETS - 1);
        assert!(BUCKET_BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn histogram_counts_and_sums_what_it_records() {
        let h = Histogram::new();
        for d in [
            Duration::from_micros(5),
            ms(1),
            ms(1),
            ms(3),
            Duration::from_secs(100),
        ] {
            h.record(d);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum_ns, 5_000 + 2_000_000 + 3_000_000 + 100_000_000_000);
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[6], 2);
        assert_eq!(s.buckets[8], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(s.buckets[BUCKETS - 1], 1);
    }

    #[test]
    fn histogram_is_exact_under_concurrent_recording() {
        let h = Arc::new(Histogram::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = Arc::clone(&h);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.record(Duration::from_micros(i % 100 + t));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recorder");
        }
        assert_eq!(h.snapshot().count(), 40_000);
    }

    #[test]
    fn stage_split_puts_time_after_handle_returned_into_remote() {
        let base = Instant::now();
        let t = timings(1, 0, base, [2, 500, 1, 3]);
        let immediate = StageTimes::split(&t, None);
        assert_eq!(immediate.request_queue, ms(2));
        assert_eq!(
            (immediate.local, immediate.remote),
            (ms(500), Duration::ZERO)
        );
        assert_eq!(immediate.response_queue, ms(1));
        assert_eq!(immediate.response_send, ms(3));
        assert_eq!(immediate.total, ms(506));
        let parked = StageTimes::split(&t, Some(t.dequeued_at + ms(4)));
        assert_eq!((parked.local, parked.remote), (ms(4), ms(496)));
        // handle returned after the response (it was immediate): no remote time.
        let late = StageTimes::split(&t, Some(t.responded_at + ms(1)));
        assert_eq!((late.local, late.remote), (ms(500), Duration::ZERO));
    }

    #[test]
    fn request_metrics_split_fetch_by_replica_and_sum_stripes() {
        let m = RequestMetrics::new(3);
        let base = Instant::now();
        for processor in 0..3 {
            let t = timings(0, processor, base, [0, 1, 0, 0]);
            m.record(&t, false, &StageTimes::split(&t, None));
        }
        let consumer = timings(1, 0, base, [0, 1, 0, 0]);
        m.record(&consumer, false, &StageTimes::split(&consumer, None));
        let follower = timings(1, 1, base, [0, 1, 0, 0]);
        m.record(&follower, true, &StageTimes::split(&follower, None));
        let unknown = timings(-1, 1, base, [0, 1, 0, 0]);
        m.record(&unknown, false, &StageTimes::split(&unknown, None));
        let snapshot = m.snapshot();
        let names: Vec<&str> = snapshot.iter().map(|a| a.request.as_str()).collect();
        assert_eq!(
            names,
            ["Produce", "FetchConsumer", "FetchFollower", "Unknown"]
        );
        assert_eq!(snapshot[0].requests, 3);
        assert_eq!(snapshot[0].stages[5].count(), 3);
        assert_eq!(snapshot[0].stages[1].sum_ns, 3_000_000);
        assert_eq!(snapshot[2].requests, 1);
    }

    /// Checks the text format line by line; returns (name with labels, value) samples.
    fn parse_exposition(text: &str) -> Vec<(String, f64)> {
        let mut samples = Vec::new();
        let mut typed = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().expect("name");
                assert!(typed.insert(name.to_string()), "TYPE {name} twice");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let name = series.split('{').next().expect("name");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad name {name}"
            );
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "{name} has no TYPE line before it");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            samples.push((series.to_string(), value));
        }
        samples
    }

    #[test]
    fn rendering_is_valid_prometheus_text_with_cumulative_buckets() {
        let m = RequestMetrics::new(2);
        let base = Instant::now();
        for (i, handler_ms) in [1, 3, 700].into_iter().enumerate() {
            let t = timings(0, i as u16, base, [0, handler_ms, 0, 0]);
            m.record(&t, false, &StageTimes::split(&t, None));
        }
        let mut text = String::new();
        render_requests(&mut text, &m.snapshot());
        let reactor = ReactorSample {
            bytes_in: 10,
            sendfile_bytes: 7,
            processor_idle_ns: vec![1_500_000_000, 0],
            handler_idle_ns: vec![0],
            processor_avg_idle: 0.25,
            ..ReactorSample::default()
        };
        render_reactor(&mut text, &reactor);
        render_partitions(
            &mut text,
            &[PartitionSample {
                topic: "we\"ird".into(),
                partition: 2,
                log_end_offset: 12,
                high_watermark: 11,
                size_bytes: 4096,
            }],
        );
        let samples = parse_exposition(&text);
        let get = |series: &str| {
            samples
                .iter()
                .find(|(s, _)| s == series)
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
                .1
        };
        let local = "kafka_network_local_time_ms";
        let buckets: Vec<f64> = samples
            .iter()
            .filter(|(s, _)| s.starts_with(&format!("{local}_bucket{{request=\"Produce\"")))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(buckets.len(), BUCKETS);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "cumulative");
        assert_eq!(
            get(&format!("{local}_bucket{{request=\"Produce\",le=\"1\"}}")),
            1.0
        );
        assert_eq!(
            get(&format!("{local}_bucket{{request=\"Produce\",le=\"5\"}}")),
            2.0
        );
        assert_eq!(
            get(&format!(
                "{local}_bucket{{request=\"Produce\",le=\"+Inf\"}}"
            )),
            3.0
        );
        assert_eq!(get(&format!("{local}_count{{request=\"Produce\"}}")), 3.0);
        assert_eq!(get(&format!("{local}_sum{{request=\"Produce\"}}")), 704.0);
        assert_eq!(
            get("kafka_network_requests_total{request=\"Produce\"}"),
            3.0
        );
        assert_eq!(get("kbroker_sendfile_bytes_total"), 7.0);
        assert_eq!(get("kafka_network_processor_avg_idle_percent"), 0.25);
        assert_eq!(
            get("kbroker_network_processor_idle_seconds_total{processor=\"0\"}"),
            1.5
        );
        assert_eq!(
            get("kafka_log_log_end_offset{topic=\"we\\\"ird\",partition=\"2\"}"),
            12.0
        );
        assert_eq!(
            get("kafka_log_size_bytes{topic=\"we\\\"ird\",partition=\"2\"}"),
            4096.0
        );
        assert!(text.contains("le=\"0.01\"") && text.contains("le=\"60000\""));
    }

    #[test]
    fn idle_window_reports_the_ratio_since_the_oldest_sample() {
        let mut window = IdleWindow::default();
        let t0 = Instant::now();
        let mut sample = ReactorSample {
            processor_idle_ns: vec![0, 0],
            handler_idle_ns: vec![0],
            processor_avg_idle: 0.9,
            handler_avg_idle: 0.9,
            ..ReactorSample::default()
        };
        window.apply(t0, &mut sample);
        assert_eq!(sample.processor_avg_idle, 0.9, "no sample yet: since start");
        window.push(t0, &sample);
        sample.processor_idle_ns = vec![1_000_000_000, 0];
        sample.handler_idle_ns = vec![500_000_000];
        window.apply(t0 + Duration::from_secs(2), &mut sample);
        assert!((sample.processor_avg_idle - 0.25).abs() < 1e-9);
        assert!((sample.handler_avg_idle - 0.25).abs() < 1e-9);
        for i in 0..200 {
            window.push(t0 + Duration::from_secs(i), &sample);
        }
        assert_eq!(window.samples.len(), IDLE_WINDOW_SAMPLES_MAX);
    }

    struct FixedPage(&'static str);

    impl Page for FixedPage {
        fn tick(&mut self, _now: Instant) {}
        fn render(&mut self, out: &mut String) {
            out.push_str(self.0);
        }
    }

    fn http(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(request).expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn endpoint_answers_get_metrics_and_refuses_the_rest() {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let server = MetricsServer::start_page(addr, FixedPage("up 1\n")).expect("start");
        let addr = server.local_addr();
        let ok = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Length: 5\r\n") && ok.ends_with("\r\n\r\nup 1\n"),
            "{ok}"
        );
        let head = http(addr, b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(http(addr, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(http(addr, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(HTTP_REQUEST_BYTES_MAX, b'a');
        assert!(http(addr, &huge).starts_with("HTTP/1.1 431"));
        // A client that connects and says nothing costs at most the timeout.
        let silent = TcpStream::connect(addr).expect("connect");
        let started = Instant::now();
        assert!(http(addr, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        assert!(started.elapsed() < Duration::from_millis(HTTP_IO_TIMEOUT_MS + 1_000));
        drop(silent);
        server.shutdown();
        assert!(TcpStream::connect(addr).is_err(), "listener closed");
    }
}

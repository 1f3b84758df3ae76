//! Load from librdkafka (the `rdkafka` crate): a producer that records each record's
//! delivery-report latency, and a consumer (`assign`, no group) that records end-to-end
//! latency from the send time the producer wrote into the record's first 8 bytes.
//!
//! Both use the blocking `BaseProducer` / `BaseConsumer` on the calling thread; librdkafka
//! adds its own broker threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::latency::{now_ns, Latencies};

const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest sleep of a paced producer between checks of what is due.
const PACING_SLEEP_MAX: Duration = Duration::from_micros(200);
/// Size of the send-time stamp at the start of every value.
pub const STAMP_BYTES: usize = 8;

/// Delivery reports land here (on the producing thread, inside `poll`).
struct DeliveryContext {
    latencies: Mutex<Latencies>,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    /// The send time, [`now_ns`].
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        match result {
            Ok(_) => {
                let latency = now_ns().saturating_sub(sent_ns as u64);
                if let Ok(mut l) = self.latencies.lock() {
                    l.record_ns(latency);
                }
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// One producer run.
#[derive(Debug, Clone, Copy)]
pub struct Produce {
    pub value_bytes: usize,
    pub acks: i16,
    pub linger_ms: u32,
    pub duration: Duration,
    /// Records per second; `None` is as fast as librdkafka takes them.
    pub rate: Option<f64>,
}

#[derive(Debug, Default)]
pub struct ProduceResult {
    pub delivered: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub value_bytes: u64,
    /// From the first send to the last delivery report.
    pub elapsed: Duration,
    pub latencies: Latencies,
}

fn producer_config(bootstrap: &str, spec: &Produce) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("acks", spec.acks.to_string())
        .set("linger.ms", spec.linger_ms.to_string())
        .set("enable.idempotence", "false")
        .set("compression.type", "none")
        // The Java producer's buffer.memory (32 MiB) and librdkafka's default message cap:
        // at full speed, latency is then mostly this queue draining, as with real clients.
        .set("queue.buffering.max.messages", "100000")
        .set("queue.buffering.max.kbytes", "32768")
        .set("batch.size", "1000000")
        .set("message.timeout.ms", "30000")
        .set("client.id", "kbroker-bench");
    c
}

/// Produces to `topic` (partitioned by librdkafka, no keys) for `spec.duration`, then
/// flushes. Each value starts with its send time for end-to-end latency.
pub fn produce(bootstrap: &str, topic: &str, spec: Produce) -> Result<ProduceResult, String> {
    let context = DeliveryContext {
        latencies: Mutex::new(Latencies::with_capacity(1 << 20)),
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_error: Mutex::new(None),
    };
    let producer: BaseProducer<DeliveryContext> = producer_config(bootstrap, &spec)
        .create_with_context(context)
        .map_err(|e| format!("creating a producer: {e}"))?;
    let mut value = vec![0u8; spec.value_bytes.max(STAMP_BYTES)];
    let started = Instant::now();
    let deadline = started + spec.duration;
    let mut sent: u64 = 0;
    let interval_ns = spec.rate.map(|r| 1e9 / r);
    let started_ns = now_ns();
    while Instant::now() < deadline {
        // Send every record due by now; when paced and nothing is due, sleep a little
        // instead of spinning (the broker and librdkafka share the CPUs with this thread).
        let now = now_ns();
        let due_ns = match interval_ns {
            Some(interval) => started_ns + (sent as f64 * interval) as u64,
            None => now,
        };
        if due_ns > now {
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_nanos(due_ns - now).min(PACING_SLEEP_MAX));
            continue;
        }
        // Latency counts from when the record was due, not when it was finally sent.
        value[..STAMP_BYTES].copy_from_slice(&due_ns.to_be_bytes());
        let mut record = BaseRecord::with_opaque_to(topic, due_ns as usize).payload(&value[..]);
        loop {
            match producer.send::<[u8], [u8]>(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(format!("produce: {e}")),
            }
        }
        sent += 1;
        if sent.is_multiple_of(1024) {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(FLUSH_TIMEOUT)
        .map_err(|e| format!("flush: {e}"))?;
    let elapsed = started.elapsed();
    let context = producer.context();
    let delivered = context.delivered.load(Ordering::Relaxed);
    let latencies = std::mem::take(&mut *context.latencies.lock().map_err(|_| "poisoned")?);
    Ok(ProduceResult {
        delivered,
        failed: context.failed.load(Ordering::Relaxed),
        first_error: context.first_error.lock().ok().and_then(|e| e.clone()),
        value_bytes: delivered * value.len() as u64,
        elapsed,
        latencies,
    })
}

/// `producers` producers, each in its own thread, running `spec` at once against `topic`;
/// their results summed (elapsed: the longest).
pub fn produce_parallel(
    bootstrap: &str,
    topic: &str,
    spec: Produce,
    producers: usize,
) -> Result<ProduceResult, String> {
    let results: Vec<Result<ProduceResult, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..producers)
            .map(|_| scope.spawn(move || produce(bootstrap, topic, spec)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a producer thread panicked".into()))
            })
            .collect()
    });
    let mut total = ProduceResult::default();
    for r in results {
        let r = r?;
        total.delivered += r.delivered;
        total.failed += r.failed;
        total.first_error = total.first_error.or(r.first_error);
        total.value_bytes += r.value_bytes;
        total.elapsed = total.elapsed.max(r.elapsed);
        total.latencies.extend(r.latencies);
    }
    Ok(total)
}

#[derive(Debug, Default)]
pub struct ConsumeResult {
    pub records: u64,
    pub value_bytes: u64,
    /// From the first poll to the last record.
    pub elapsed: Duration,
    pub end_to_end: Latencies,
}

/// A consumer tailing a topic while it is produced to.
#[derive(Debug, Clone)]
pub struct Tail {
    /// Set by the consumer when its first record arrives (it is fetching).
    pub ready: Arc<AtomicBool>,
    /// Records sent before this [`now_ns`] are warm-up: neither counted nor timed. Nothing
    /// is measured until it is set.
    pub measure_from_ns: Arc<AtomicU64>,
    /// Set when the producer is done; the consumer stops once nothing more arrives.
    pub stop: Arc<AtomicBool>,
}

impl Tail {
    pub fn new() -> Tail {
        Tail {
            ready: Arc::default(),
            measure_from_ns: Arc::new(AtomicU64::new(u64::MAX)),
            stop: Arc::default(),
        }
    }
}

/// When a consumer stops.
#[derive(Debug, Clone)]
pub enum Until {
    /// After this many records (a pre-filled topic), or the time limit.
    Records(u64, Duration),
    /// When `stop` is set and nothing more arrived for a moment, or the time limit.
    Tailing(Tail, Duration),
}

/// Reads every partition of `topic` from the beginning with `assign` (no group).
pub fn consume(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    until: Until,
) -> Result<ConsumeResult, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kbroker-bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("max.partition.fetch.bytes", "8388608")
        .set("fetch.max.bytes", "67108864")
        .set("queued.max.messages.kbytes", "262144")
        .set("client.id", "kbroker-bench")
        .create()
        .map_err(|e| format!("creating a consumer: {e}"))?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("assign: {e}"))?;
    let mut result = ConsumeResult {
        end_to_end: Latencies::with_capacity(1 << 20),
        ..ConsumeResult::default()
    };
    let started = Instant::now();
    let (limit, target, tail) = match &until {
        Until::Records(n, limit) => (*limit, Some(*n), None),
        Until::Tailing(tail, limit) => (*limit, None, Some(tail)),
    };
    let mut quiet_since: Option<Instant> = None;
    let mut last_record = started;
    while started.elapsed() < limit {
        if target.is_some_and(|n| result.records >= n) {
            break;
        }
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(message)) => {
                let payload = message.payload().unwrap_or_default();
                let sent_ns = payload
                    .get(..STAMP_BYTES)
                    .map_or(0, |s| u64::from_be_bytes(s.try_into().unwrap_or_default()));
                if let Some(tail) = tail {
                    tail.ready.store(true, Ordering::Release);
                    if sent_ns < tail.measure_from_ns.load(Ordering::Acquire) {
                        continue;
                    }
                }
                result
                    .end_to_end
                    .record_ns(now_ns().saturating_sub(sent_ns));
                result.records += 1;
                result.value_bytes += payload.len() as u64;
                last_record = Instant::now();
                quiet_since = None;
            }
            Some(Err(e)) => return Err(format!("consume: {e}")),
            None => {
                if let Some(Tail { stop, .. }) = tail {
                    if stop.load(Ordering::Acquire) {
                        let since = *quiet_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_millis(500) {
                            break;
                        }
                    }
                }
            }
        }
    }
    result.elapsed = last_record.saturating_duration_since(started);
    Ok(result)
}

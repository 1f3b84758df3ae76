//! Raw Kafka clients: pre-encoded Produce requests, Fetch requests whose records are only
//! skimmed, and hundreds of small producers on their own connections.
//!
//! These measure the broker rather than a client library: librdkafka parses every record
//! on the same two cores the broker runs on, so its figures are bounded by the client.
//! Messages are encoded with the `kafka-protocol` crate; record batches (v2, uncompressed)
//! are built here, CRC32C included, once per run and sent again and again (the broker
//! assigns offsets by patching the batch header).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::latency::Latencies;

/// Largest response frame read.
const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;
const PRODUCE_VERSION: i16 = 7;
const FETCH_VERSION: i16 = 11;
const METADATA_VERSION: i16 = 4;
const CREATE_TOPICS_VERSION: i16 = 4;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const CLIENT_ID: &str = "kbroker-bench";

fn put_unsigned_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    put_unsigned_varint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// An uncompressed v2 record batch of `records` values of `value_bytes` each, no keys.
pub fn record_batch(records: usize, value_bytes: usize, timestamp_ms: i64) -> Bytes {
    assert!(records > 0);
    let value: Vec<u8> = (0..value_bytes).map(|i| (i % 251) as u8).collect();
    let mut body = BytesMut::new();
    for i in 0..records {
        let mut record = BytesMut::new();
        record.put_i8(0); // attributes
        put_varint(&mut record, 0); // timestamp delta
        put_varint(&mut record, i as i64); // offset delta
        put_varint(&mut record, -1); // no key
        put_varint(&mut record, value_bytes as i64);
        record.put_slice(&value);
        put_varint(&mut record, 0); // no headers
        put_varint(&mut body, record.len() as i64);
        body.put_slice(&record);
    }
    // From attributes to the end: what the CRC covers.
    let mut tail = BytesMut::new();
    tail.put_i16(0); // attributes: no compression, CreateTime
    tail.put_i32(records as i32 - 1); // last offset delta
    tail.put_i64(timestamp_ms);
    tail.put_i64(timestamp_ms);
    tail.put_i64(-1); // producer id
    tail.put_i16(-1); // producer epoch
    tail.put_i32(-1); // base sequence
    tail.put_i32(records as i32);
    tail.put_slice(&body);
    let mut batch = BytesMut::new();
    batch.put_i64(0); // base offset
    batch.put_i32((4 + 1 + 4 + tail.len()) as i32); // batch length
    batch.put_i32(-1); // partition leader epoch
    batch.put_i8(2); // magic
    batch.put_u32(crc32c::crc32c(&tail));
    batch.put_slice(&tail);
    batch.freeze()
}

/// `size | header | body` of one request.
pub(crate) fn frame(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &impl Encodable,
) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, api.request_header_version(version))
        .expect("encoding a request header");
    body.encode(&mut buf, version).expect("encoding a request");
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf.to_vec()
}

pub(crate) fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

pub fn produce_frame(topic: &str, partition: i32, batch: &Bytes, acks: i16) -> Vec<u8> {
    produce_frame_for(topic, partition..=partition, batch, acks)
}

/// A Produce request with `batch` for each of `partitions`.
fn produce_frame_for(
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
    batch: &Bytes,
    acks: i16,
) -> Vec<u8> {
    let data = partitions
        .into_iter()
        .map(|p| {
            PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(batch.clone()))
        })
        .collect();
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(data)]);
    frame(ApiKey::Produce, PRODUCE_VERSION, 1, &request)
}

fn fetch_frame(topic: &str, offsets: &[(i32, i64)], partition_max_bytes: i32) -> Vec<u8> {
    let partitions = offsets
        .iter()
        .map(|&(partition, offset)| {
            FetchPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(offset)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(partition_max_bytes)
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(64 * 1024 * 1024)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(partitions)]);
    frame(ApiKey::Fetch, FETCH_VERSION, 2, &request)
}

fn metadata_frame(topic: &str) -> Vec<u8> {
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
    ]));
    frame(ApiKey::Metadata, METADATA_VERSION, 3, &request)
}

/// Reads one size-prefixed response into `buf`; returns its length (without the prefix).
fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .map_err(|e| format!("reading a response size: {e}"))?;
    let size = usize::try_from(i32::from_be_bytes(size))
        .ok()
        .filter(|&s| (4..=RESPONSE_BYTES_MAX).contains(&s))
        .ok_or("bad response size")?;
    buf.resize(size, 0);
    stream
        .read_exact(buf)
        .map_err(|e| format!("reading a response: {e}"))?;
    Ok(size)
}

/// The body of a response (after its v0 header).
pub(crate) fn decode<T: Decodable>(frame: &[u8], version: i16) -> Result<T, String> {
    let mut bytes = Bytes::copy_from_slice(frame);
    ResponseHeader::decode(&mut bytes, 0).map_err(|e| e.to_string())?;
    T::decode(&mut bytes, version).map_err(|e| e.to_string())
}

pub(crate) fn connect(bootstrap: &str) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(bootstrap).map_err(|e| format!("connect {bootstrap}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

pub(crate) fn round_trip(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<usize, String> {
    stream
        .write_all(request)
        .map_err(|e| format!("sending a request: {e}"))?;
    read_frame(stream, buf)
}

/// Creates `topic` with `partitions` (an existing topic is fine) and waits for leaders.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<(), String> {
    let mut stream = connect(bootstrap)?;
    let mut buf = Vec::new();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    round_trip(
        &mut stream,
        &frame(ApiKey::CreateTopics, CREATE_TOPICS_VERSION, 4, &request),
        &mut buf,
    )?;
    let response: CreateTopicsResponse = decode(&buf, CREATE_TOPICS_VERSION)?;
    for t in &response.topics {
        if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
            return Err(format!("creating {topic}: error code {}", t.error_code));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        round_trip(&mut stream, &metadata_frame(topic), &mut buf)?;
        let metadata: MetadataResponse = decode(&buf, METADATA_VERSION)?;
        let ready = metadata.topics.iter().any(|t| {
            t.error_code == 0
                && t.partitions.len() == partitions as usize
                && t.partitions.iter().all(|p| p.leader_id.0 >= 0)
        });
        if ready {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("topic {topic} has no leaders after 20 s"))
}

/// Error codes of every partition in a Produce response.
fn produce_errors(frame: &[u8]) -> Result<usize, String> {
    let response: ProduceResponse = decode(frame, PRODUCE_VERSION)?;
    Ok(response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .filter(|p| p.error_code != 0)
        .count())
}

#[derive(Debug, Default)]
pub struct RawProduceResult {
    pub requests: u64,
    pub records: u64,
    pub record_bytes: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
}

/// What one raw producer sends.
#[derive(Debug, Clone, Copy)]
pub struct RawProduce {
    pub connections: usize,
    pub partitions: i32,
    pub records_per_batch: usize,
    pub value_bytes: usize,
    pub acks: i16,
    pub pipeline_depth: usize,
    pub duration: Duration,
}

/// `connections` producers, each sending the same pre-built batch to its partition as fast
/// as responses come back, `pipeline_depth` requests in flight.
pub fn raw_produce(
    bootstrap: &str,
    topic: &str,
    spec: RawProduce,
) -> Result<RawProduceResult, String> {
    assert!(spec.acks != 0, "acks=0 has no responses to pace by");
    let batch = record_batch(spec.records_per_batch, spec.value_bytes, now_ms());
    let started = Instant::now();
    let deadline = started + spec.duration;
    let threads: Vec<_> = (0..spec.connections)
        .map(|i| {
            let request = produce_frame(topic, i as i32 % spec.partitions, &batch, spec.acks);
            let bootstrap = bootstrap.to_string();
            std::thread::spawn(move || {
                produce_loop(&bootstrap, &request, spec.pipeline_depth, deadline)
            })
        })
        .collect();
    let mut total = RawProduceResult::default();
    for t in threads {
        let (requests, errors, latencies) = t.join().map_err(|_| "producer thread panicked")??;
        total.requests += requests;
        total.errors += errors;
        total.latencies.extend(latencies);
    }
    total.elapsed = started.elapsed();
    total.records = total.requests * spec.records_per_batch as u64;
    total.record_bytes = total.requests * batch.len() as u64;
    Ok(total)
}

fn produce_loop(
    bootstrap: &str,
    request: &[u8],
    depth: usize,
    deadline: Instant,
) -> Result<(u64, u64, Latencies), String> {
    let mut stream = connect(bootstrap)?;
    let mut buf = Vec::new();
    let mut in_flight = VecDeque::with_capacity(depth);
    let mut latencies = Latencies::with_capacity(1 << 16);
    let (mut requests, mut errors) = (0u64, 0u64);
    loop {
        while in_flight.len() < depth.max(1) && Instant::now() < deadline {
            stream
                .write_all(request)
                .map_err(|e| format!("sending a produce: {e}"))?;
            in_flight.push_back(Instant::now());
        }
        let Some(sent_at) = in_flight.pop_front() else {
            break;
        };
        read_frame(&mut stream, &mut buf)?;
        latencies.record(sent_at.elapsed());
        requests += 1;
        errors += produce_errors(&buf)? as u64;
    }
    Ok((requests, errors, latencies))
}

/// A paced raw producer: what a client library batching with a 1 ms linger would send at
/// `records_per_s`, without the library's own queue. One connection; every `tick` one
/// Produce request carrying one batch per partition, the records of that tick split among
/// them. Requests are sent on schedule whether or not earlier ones were answered, and each
/// latency is counted from when its request was due (a late send counts against the
/// broker side, as a stalled broker would make a client send late).
#[derive(Debug, Clone, Copy)]
pub struct PacedProduce {
    pub partitions: i32,
    pub records_per_s: f64,
    pub value_bytes: usize,
    pub tick: Duration,
    pub duration: Duration,
}

#[derive(Debug, Default)]
pub struct PacedProduceResult {
    pub requests: u64,
    pub records: u64,
    pub record_bytes: u64,
    pub errors: u64,
    /// Requests sent more than one tick after they were due (the sender fell behind).
    pub late: u64,
    pub records_per_request: usize,
    pub elapsed: Duration,
    pub latencies: Latencies,
}

pub fn paced_produce(
    bootstrap: &str,
    topic: &str,
    spec: PacedProduce,
) -> Result<PacedProduceResult, String> {
    assert!(spec.partitions > 0 && !spec.tick.is_zero());
    let per_tick = spec.records_per_s * spec.tick.as_secs_f64();
    let per_batch = ((per_tick / spec.partitions as f64).round() as usize).max(1);
    let batch = record_batch(per_batch, spec.value_bytes, now_ms());
    let request = produce_frame_for(topic, 0..spec.partitions, &batch, 1);
    let mut reader = connect(bootstrap)?;
    let mut writer = reader.try_clone().map_err(|e| e.to_string())?;
    let ticks = (spec.duration.as_secs_f64() / spec.tick.as_secs_f64()).ceil() as u64;
    // Due times travel from the sender to the reader; responses come back in order.
    let (due_tx, due_rx) = std::sync::mpsc::channel::<Instant>();
    let started = Instant::now();
    let trace_slow = std::env::var_os("KBROKER_BENCH_TRACE_SLOW").is_some();
    let mono_at_start = {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec to write into.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    };
    let tick = spec.tick;
    let sender = std::thread::spawn(move || -> Result<u64, String> {
        let mut late = 0;
        for k in 0..ticks {
            let due = started + tick.mul_f64(k as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else if now - due > tick {
                late += 1;
            }
            writer
                .write_all(&request)
                .map_err(|e| format!("sending a produce: {e}"))?;
            if due_tx.send(due).is_err() {
                break;
            }
        }
        Ok(late)
    });
    let mut result = PacedProduceResult {
        records_per_request: per_batch * spec.partitions as usize,
        latencies: Latencies::with_capacity(ticks as usize),
        ..PacedProduceResult::default()
    };
    let mut buf = Vec::new();
    let mut failure = None;
    for due in due_rx.iter() {
        if let Err(e) = read_frame(&mut reader, &mut buf) {
            failure = Some(e);
            break;
        }
        let latency = due.elapsed();
        if trace_slow && latency > Duration::from_millis(5) {
            let at = mono_at_start + due.duration_since(started).as_secs_f64();
            eprintln!(
                "slow request: due at {at:.6} (CLOCK_MONOTONIC s), {:.2} ms",
                latency.as_secs_f64() * 1e3
            );
        }
        result.latencies.record(latency);
        result.requests += 1;
        match produce_errors(&buf) {
            Ok(n) => result.errors += n as u64,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    result.elapsed = started.elapsed();
    // Unblocks a sender stuck on a full socket if the reader stopped early.
    let _ = reader.shutdown(std::net::Shutdown::Both);
    let sent = sender.join().map_err(|_| "sender thread panicked")?;
    // The reader's failure first: the sender's is then only the closed socket.
    if let Some(e) = failure {
        return Err(e);
    }
    result.late = sent?;
    result.records = result.requests * result.records_per_request as u64;
    result.record_bytes = result.requests * spec.partitions as u64 * batch.len() as u64;
    Ok(result)
}

#[derive(Debug, Default)]
pub struct RawConsumeResult {
    pub fetches: u64,
    pub records: u64,
    pub record_bytes: u64,
    pub wire_bytes: u64,
    pub elapsed: Duration,
}

/// Walks the v2 batch headers of a partition's records: (next offset, records, whole
/// batches' bytes). A partial batch at the end (a fetch cut at its size limit) is skipped.
pub fn skim_batches(records: &[u8]) -> Option<(i64, u64, u64)> {
    let (mut at, mut next, mut count, mut bytes) = (0usize, None, 0u64, 0u64);
    while records.len() >= at + 61 {
        let b = &records[at..];
        let base_offset = i64::from_be_bytes(b[0..8].try_into().ok()?);
        let batch_length = i32::from_be_bytes(b[8..12].try_into().ok()?);
        let total = 12 + usize::try_from(batch_length).ok()?;
        if b.len() < total {
            break;
        }
        let last_offset_delta = i32::from_be_bytes(b[23..27].try_into().ok()?);
        count += u64::try_from(i32::from_be_bytes(b[57..61].try_into().ok()?)).ok()?;
        next = Some(base_offset + i64::from(last_offset_delta) + 1);
        bytes += total as u64;
        at += total;
    }
    next.map(|n| (n, count, bytes))
}

/// One partition of a Fetch v11 response: (partition, error code, high watermark, records).
type FetchedPartition<'a> = (i32, i16, i64, &'a [u8]);

/// Reads a Fetch v11 response in place (no copy of the records): the parts a consumer
/// needs to go on. `None` if it is malformed.
fn parse_fetch_v11(frame: &[u8]) -> Option<Vec<FetchedPartition<'_>>> {
    struct Cursor<'a>(&'a [u8], usize);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let bytes = self.0.get(self.1..self.1.checked_add(n)?)?;
            self.1 += n;
            Some(bytes)
        }
        fn i16(&mut self) -> Option<i16> {
            Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
        }
        fn i32(&mut self) -> Option<i32> {
            Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
        }
        fn i64(&mut self) -> Option<i64> {
            Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
        }
    }
    let mut c = Cursor(frame, 0);
    c.take(4 + 4 + 2 + 4)?; // correlation id, throttle time, error code, session id
    let mut out = Vec::new();
    for _ in 0..c.i32()?.max(0) {
        let name_len = usize::try_from(c.i16()?).ok()?;
        c.take(name_len)?;
        for _ in 0..c.i32()?.max(0) {
            let partition = c.i32()?;
            let error_code = c.i16()?;
            let high_watermark = c.i64()?;
            c.take(8 + 8)?; // last stable offset, log start offset
            let aborted = c.i32()?;
            c.take(usize::try_from(aborted.max(0)).ok()? * 16)?;
            c.i32()?; // preferred read replica
            let records = match c.i32()? {
                -1 => &[][..],
                n => c.take(usize::try_from(n).ok()?)?,
            };
            out.push((partition, error_code, high_watermark, records));
        }
    }
    Some(out)
}

/// One consumer connection reading every partition of `topic` from offset 0 until it has
/// reached the high watermarks it is told about, or `duration` ends.
pub fn raw_consume(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    partition_max_bytes: i32,
    duration: Duration,
) -> Result<RawConsumeResult, String> {
    let mut stream = connect(bootstrap)?;
    let mut buf = Vec::new();
    let mut offsets: Vec<(i32, i64)> = (0..partitions).map(|p| (p, 0)).collect();
    let mut result = RawConsumeResult::default();
    let started = Instant::now();
    let deadline = started + duration;
    while Instant::now() < deadline {
        let size = round_trip(
            &mut stream,
            &fetch_frame(topic, &offsets, partition_max_bytes),
            &mut buf,
        )?;
        result.fetches += 1;
        result.wire_bytes += 4 + size as u64;
        let partitions = parse_fetch_v11(&buf).ok_or("malformed fetch response")?;
        let mut caught_up = true;
        for (partition, error_code, high_watermark, records) in partitions {
            if error_code != 0 {
                return Err(format!("fetch partition {partition}: error {error_code}"));
            }
            let Some(slot) = offsets.iter_mut().find(|(i, _)| *i == partition) else {
                continue;
            };
            if let Some((next, records, bytes)) = skim_batches(records) {
                slot.1 = next;
                result.records += records;
                result.record_bytes += bytes;
            }
            caught_up &= slot.1 >= high_watermark;
        }
        if caught_up {
            break;
        }
    }
    result.elapsed = started.elapsed();
    Ok(result)
}

#[derive(Debug, Default)]
pub struct ManyResult {
    pub connections: usize,
    pub connect_all: Duration,
    pub requests: u64,
    pub records: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
}

/// What the many-connections workload sends.
#[derive(Debug, Clone, Copy)]
pub struct Many {
    pub connections: usize,
    pub partitions: i32,
    pub requests_per_second_each: f64,
    pub records_per_batch: usize,
    pub value_bytes: usize,
    pub duration: Duration,
}

/// `connections` small producers, each on its own connection and thread: Metadata once,
/// then one acks=1 Produce every `1 / requests_per_second_each` s, phases spread evenly.
/// Latency counts from the scheduled send time, so a slow broker is not hidden by the
/// producer waiting for it (no coordinated omission).
pub fn many_connections(bootstrap: &str, topic: &str, spec: Many) -> Result<ManyResult, String> {
    let batch = record_batch(spec.records_per_batch, spec.value_bytes, now_ms());
    let connected = Arc::new(Barrier::new(spec.connections + 1));
    let start = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let go = Arc::new(Barrier::new(spec.connections + 1));
    let interval = Duration::from_secs_f64(1.0 / spec.requests_per_second_each);
    let mut threads = Vec::new();
    let connect_started = Instant::now();
    for i in 0..spec.connections {
        let request = produce_frame(topic, i as i32 % spec.partitions, &batch, 1);
        let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
        let (connected, go, start) = (connected.clone(), go.clone(), start.clone());
        let phase = interval.mul_f64(i as f64 / spec.connections as f64);
        let duration = spec.duration;
        let thread = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || -> Result<(u64, u64, Latencies), String> {
                let setup = || -> Result<TcpStream, String> {
                    let mut stream = connect(&bootstrap)?;
                    round_trip(&mut stream, &metadata_frame(&topic), &mut Vec::new())?;
                    Ok(stream)
                };
                let stream = setup();
                connected.wait();
                go.wait();
                let mut stream = stream?;
                let t0 = start.lock().map_err(|_| "poisoned")?.ok_or("no start")?;
                let mut buf = Vec::new();
                let mut latencies = Latencies::default();
                let (mut requests, mut errors) = (0u64, 0u64);
                let mut next = t0 + phase;
                while next < t0 + duration {
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    round_trip(&mut stream, &request, &mut buf)?;
                    latencies.record(next.elapsed());
                    requests += 1;
                    errors += produce_errors(&buf)? as u64;
                    next += interval;
                }
                Ok((requests, errors, latencies))
            })
            .map_err(|e| format!("spawning producer {i}: {e}"))?;
        threads.push(thread);
    }
    connected.wait();
    let connect_all = connect_started.elapsed();
    let t0 = Instant::now();
    *start.lock().map_err(|_| "poisoned")? = Some(t0);
    go.wait();
    let mut total = ManyResult {
        connections: spec.connections,
        connect_all,
        ..ManyResult::default()
    };
    let mut failures = Vec::new();
    for t in threads {
        match t
            .join()
            .map_err(|_| "producer thread panicked".to_string())?
        {
            Ok((requests, errors, latencies)) => {
                total.requests += requests;
                total.errors += errors;
                total.latencies.extend(latencies);
            }
            Err(e) => failures.push(e),
        }
    }
    if let Some(first) = failures.first() {
        return Err(format!(
            "{} of {} connections failed; first: {first}",
            failures.len(),
            spec.connections
        ));
    }
    total.elapsed = t0.elapsed();
    total.records = total.requests * spec.records_per_batch as u64;
    Ok(total)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batches_are_walked_back_by_the_skimmer() {
        let batch = record_batch(10, 100, 1_700_000_000_000);
        assert_eq!(batch[16], 2, "magic");
        let crc = u32::from_be_bytes(batch[17..21].try_into().expect("crc"));
        assert_eq!(crc, crc32c::crc32c(&batch[21..]));
        let mut two = batch.to_vec();
        let mut second = batch.to_vec();
        second[..8].copy_from_slice(&10i64.to_be_bytes());
        two.extend_from_slice(&second);
        assert_eq!(skim_batches(&two), Some((20, 20, two.len() as u64)));
        // A cut-off second batch is not counted.
        assert_eq!(
            skim_batches(&two[..two.len() - 1]),
            Some((10, 10, batch.len() as u64))
        );
        assert_eq!(skim_batches(&[]), None);
    }

    #[test]
    fn fetch_v11_responses_parse_in_place() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::FetchResponse;
        let batch = record_batch(3, 10, 0);
        let response =
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(topic_name("t"))
                .with_partitions(vec![
                    PartitionData::default()
                        .with_partition_index(0)
                        .with_high_watermark(3)
                        .with_records(Some(batch.clone())),
                    PartitionData::default()
                        .with_partition_index(1)
                        .with_error_code(6),
                ])]);
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(9)
            .encode(&mut buf, 0)
            .expect("header");
        response.encode(&mut buf, FETCH_VERSION).expect("body");
        let parsed = parse_fetch_v11(&buf).expect("parses");
        assert_eq!(parsed, vec![(0, 0, 3, &batch[..]), (1, 6, 0, &[][..])]);
        assert_eq!(parse_fetch_v11(&buf[..buf.len() - 1]), None);
    }

    #[test]
    fn a_paced_request_carries_one_batch_per_partition() {
        let batch = record_batch(3, 10, 0);
        let f = produce_frame_for("t", 0..4, &batch, 1);
        let mut body = Bytes::copy_from_slice(&f[4..]);
        RequestHeader::decode(
            &mut body,
            ApiKey::Produce.request_header_version(PRODUCE_VERSION),
        )
        .expect("header");
        let request = ProduceRequest::decode(&mut body, PRODUCE_VERSION).expect("body");
        let partitions = &request.topic_data[0].partition_data;
        let indexes: Vec<i32> = partitions.iter().map(|p| p.index).collect();
        assert_eq!(indexes, [0, 1, 2, 3]);
        assert!(partitions
            .iter()
            .all(|p| p.records.as_ref() == Some(&batch)));
    }

    #[test]
    fn frames_carry_their_size() {
        let f = produce_frame("t", 0, &record_batch(1, 10, 0), 1);
        assert_eq!(
            i32::from_be_bytes(f[..4].try_into().expect("size")) as usize,
            f.len() - 4
        );
        assert_eq!(i16::from_be_bytes([f[4], f[5]]), ApiKey::Produce as i16);
    }
}

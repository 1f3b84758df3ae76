//! Fetch: read whole batches below the high watermark (or the last stable offset for
//! read_committed — equal while there are no transactions) and send them with sendfile.
//! A follower (replica id >= 0) reads up to the log end, and its fetch offset tells the
//! leader how far it got (the high watermark and ISR follow, see the replica manager).
//!
//! If fewer than `min_bytes` are available and `max_wait_ms` > 0, the fetch becomes a
//! delayed operation in the fetch purgatory, watched by each requested partition: a produce
//! to any of them re-checks it, the timer expires it, and either way the response is built
//! from a fresh read. Limits: `max_bytes` for the response, `partition_max_bytes` per
//! partition, and the first partition with data always returns at least one whole batch.
//! Fetch sessions (KIP-227, see `crate::fetch_session`) decide which partitions are read
//! (an incremental fetch reads its whole session) and which are answered. From v13 topics
//! are named by topic id (KIP-516): an id the metadata does not know answers
//! UNKNOWN_TOPIC_ID for its partitions; from v15 a follower's id comes in the replica state
//! instead of the replica id field. From v11 consumers may read from a follower, and a
//! leader with the rack-aware selector sends them to one in their rack (KIP-392).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::ResponseError;
use kbroker_reactor::{Responder, Response};
use kbroker_replication::purgatory::DelayedOperation;
use kbroker_storage::manager::lock;
use kbroker_storage::TopicPartition;

use super::fetch_writer::{self, FetchResponseData, PartitionData, Records, TopicData};
use super::{
    decode, leader_epoch_error, lookup_error_code, storage_error_code, HandlerResult,
    RequestContext,
};
use crate::broker::Broker;
use crate::fetch_session::{Context, PartitionFetch, SessionRequest, TopicFetch, TopicKey};

/// Longest wait a client may ask for (Kafka bounds it by the request timeout).
pub const FETCH_WAIT_MS_MAX: i32 = 60_000;
const READ_COMMITTED: i8 = 1;

/// A fetch as the broker needs it, independent of the wire version.
struct FetchSpec {
    correlation_id: i32,
    version: i16,
    max_bytes: usize,
    min_bytes: usize,
    read_committed: bool,
    /// A follower's broker id (it reads up to the log end, not the high watermark); -1
    /// for consumers.
    replica_id: i32,
    /// A consumer at Fetch v11+ (KIP-392): it may read from a follower, and is sent to one
    /// in its rack (`rack`) when the broker has the rack-aware selector.
    rack_aware: Option<String>,
    /// What the fetch session makes of this fetch (KIP-227).
    context: Context,
    /// What is read: the request's partitions, or an incremental fetch's whole session.
    topics: Vec<TopicFetch>,
}

pub fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<FetchRequest>(&mut body, ctx.version, responder)?;
    let replica_id = if ctx.version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    if replica_id >= 0 {
        // Counted as Kafka's FetchFollower in the request metrics.
        responder.mark_follower_fetch();
    }
    // Topic ids (v13+) are resolved through the metadata image; older versions name topics.
    let image = (ctx.version >= 13).then(|| broker.metadata.image());
    let key = |name: &str, id: &uuid::Uuid| match &image {
        Some(_) => TopicKey::Id(*id.as_bytes()),
        None => TopicKey::Name(Arc::from(name)),
    };
    let session_request = SessionRequest {
        version: ctx.version,
        session_id: request.session_id,
        epoch: request.session_epoch,
        privileged: replica_id >= 0,
        topics: request
            .topics
            .iter()
            .map(|t| TopicFetch {
                key: key(&t.topic.0, &t.topic_id),
                name: String::new(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| PartitionFetch {
                        partition: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes.max(0) as usize,
                        current_leader_epoch: p.current_leader_epoch,
                    })
                    .collect(),
            })
            .collect(),
        forgotten: request
            .forgotten_topics_data
            .iter()
            .map(|t| (key(&t.topic.0, &t.topic_id), t.partitions.clone()))
            .collect(),
    };
    let (context, mut topics) = broker
        .fetch_sessions
        .open(session_request, crate::broker::now_ms());
    for topic in &mut topics {
        topic.name = match (&topic.key, &image) {
            (TopicKey::Name(name), _) => name.to_string(),
            (TopicKey::Id(id), Some(image)) => image
                .topic_by_id(id)
                .map_or_else(String::new, |info| info.name.clone()),
            (TopicKey::Id(_), None) => String::new(),
        };
    }
    let spec = FetchSpec {
        correlation_id: ctx.header.correlation_id,
        version: ctx.version,
        max_bytes: request.max_bytes.max(0) as usize,
        min_bytes: request.min_bytes.max(0) as usize,
        read_committed: request.isolation_level == READ_COMMITTED,
        replica_id: replica_id.max(-1),
        rack_aware: (replica_id < 0 && ctx.version >= 11).then(|| {
            if broker.config.rack_aware_replica_selector {
                request.rack_id.to_string()
            } else {
                String::new()
            }
        }),
        context,
        topics,
    };
    let max_wait_ms = request.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX);
    let keys: Vec<TopicPartition> = spec
        .topics
        .iter()
        .filter(|t| t.resolved())
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| TopicPartition::new(&t.name, p.partition))
        })
        .collect();
    if spec.replica_id >= 0 {
        record_follower_fetches(broker, &spec);
    }
    let (data, bytes, errors) = read(broker, &spec);
    if max_wait_ms == 0 || bytes >= spec.min_bytes.max(1) || errors || keys.is_empty() {
        respond(broker, &spec, data, responder);
        return Ok(());
    }
    let op = DelayedFetch {
        broker: Arc::clone(broker),
        spec,
        responder: Mutex::new(Some(responder)),
    };
    broker.replicas.fetch_purgatory.try_complete_else_watch(
        Box::new(op),
        &keys,
        Duration::from_millis(max_wait_ms as u64),
    );
    Ok(())
}

/// Reads every requested partition; returns the response, its record bytes, and whether
/// any partition failed (an error answers at once).
fn read(broker: &Broker, spec: &FetchSpec) -> (FetchResponseData, usize, bool) {
    let mut remaining = spec.max_bytes;
    let mut first_with_data = true;
    let mut total = 0;
    let mut errors = false;
    let mut topics = Vec::with_capacity(spec.topics.len());
    for topic in &spec.topics {
        let mut out = Vec::with_capacity(topic.partitions.len());
        for f in &topic.partitions {
            if !topic.resolved() {
                errors = true;
                out.push(PartitionData::error(
                    f.partition,
                    ResponseError::UnknownTopicId.code(),
                ));
                continue;
            }
            let p = read_partition(
                broker,
                spec,
                &topic.name,
                f,
                f.max_bytes.min(remaining),
                first_with_data,
            );
            // An error, or a replica to read from instead, is answered at once.
            errors |= p.error_code != 0 || p.preferred_read_replica >= 0;
            let n = p.records.len();
            if n > 0 {
                first_with_data = false;
                remaining = remaining.saturating_sub(n);
                total += n;
            }
            out.push(p);
        }
        topics.push(TopicData {
            name: topic.name.clone(),
            id: topic.key.id(),
            partitions: out,
        });
    }
    (
        FetchResponseData {
            throttle_time_ms: 0,
            error_code: 0,
            session_id: 0,
            topics,
        },
        total,
        errors,
    )
}

fn read_partition(
    broker: &Broker,
    spec: &FetchSpec,
    topic: &str,
    f: &PartitionFetch,
    max_bytes: usize,
    min_one: bool,
) -> PartitionData {
    let PartitionFetch {
        partition,
        offset,
        current_leader_epoch,
        ..
    } = *f;
    let (view, preferred) = match replica_to_read(broker, spec, topic, f) {
        Ok(found) => found,
        Err(e) => return PartitionData::error(partition, lookup_error_code(e)),
    };
    if let Some(code) = leader_epoch_error(current_leader_epoch, view.leader_epoch) {
        return PartitionData::error(partition, code);
    }
    let shared = view.log;
    let log = match lock(&shared) {
        Ok(log) => log,
        Err(e) => return PartitionData::error(partition, storage_error_code(&e)),
    };
    let high_watermark = log.high_watermark();
    let upper = readable_end(&log, spec);
    let mut data = PartitionData {
        index: partition,
        error_code: 0,
        high_watermark,
        last_stable_offset: high_watermark,
        log_start_offset: log.log_start_offset(),
        aborted_transactions: spec.read_committed.then(Vec::new),
        preferred_read_replica: -1,
        records: Records::Empty,
    };
    if let Some(replica) = preferred {
        // Kafka: no records, only where to read them (the client fetches from there next).
        data.preferred_read_replica = replica;
        return data;
    }
    if leader_throttles(broker, spec, partition, &view.config, &view.isr) {
        // Kafka: a throttled follower's partition is answered with its offsets only.
        return data;
    }
    // A rolled segment's headers are read after the lock is released (producers to this
    // partition do not wait for them); the offsets in the answer are the ones taken here.
    let plan = log.plan_read(offset, upper, max_bytes, min_one);
    drop(log);
    let read = plan
        .and_then(|plan| plan.finish(|| lock(&shared)?.read(offset, upper, max_bytes, min_one)));
    match read {
        Ok(read) => {
            if let Some(region) = read.region {
                data.records = Records::Region(region);
            }
        }
        Err(e) => data.error_code = storage_error_code(&e),
    }
    data
}

/// The replica this fetch reads `topic`/`f` from: the leader's log, or a follower's for a
/// v11+ consumer (KIP-392); and, from a leader with the rack-aware selector, the follower in
/// the consumer's rack it should read from instead.
fn replica_to_read(
    broker: &Broker,
    spec: &FetchSpec,
    topic: &str,
    f: &PartitionFetch,
) -> Result<(crate::replica_manager::LeaderView, Option<i32>), crate::replica_manager::LookupError>
{
    let (view, is_leader) =
        broker
            .replicas
            .readable_log(topic, f.partition, spec.rack_aware.is_some())?;
    let preferred = match &spec.rack_aware {
        Some(rack) if is_leader => broker.replicas.preferred_read_replica(
            &TopicPartition::new(topic, f.partition),
            rack,
            f.offset,
        ),
        _ => None,
    };
    Ok((view, preferred))
}

/// Whether this leader holds back a follower's fetch of `topic`/`partition` now (Kafka's
/// `shouldLeaderThrottle`: a throttled replica, out of the ISR, while the leader's
/// replication rate is over `leader.replication.throttled.rate`).
fn leader_throttles(
    broker: &Broker,
    spec: &FetchSpec,
    partition: i32,
    config: &crate::metadata_cache::TopicConfig,
    isr: &[i32],
) -> bool {
    let quota = &broker.replicas.quotas.leader;
    spec.replica_id >= 0
        && quota.bound() != crate::replication_quota::UNLIMITED
        && quota.holds_back(
            leader_throttled(broker, config, partition),
            isr.contains(&spec.replica_id),
            crate::broker::now_ms(),
        )
}

/// Whether the topic's `leader.replication.throttled.replicas` names `partition` on this
/// broker.
fn leader_throttled(
    broker: &Broker,
    config: &crate::metadata_cache::TopicConfig,
    partition: i32,
) -> bool {
    crate::replication_quota::names_replica(
        config,
        crate::replication_quota::LEADER_THROTTLED_REPLICAS,
        partition,
        broker.config.broker_id,
    )
}

/// Counts what a follower's fetch answer sends of throttled partitions into the leader's
/// replication rate (Kafka: once, when the answer is sent; in sync or not).
fn record_throttled_bytes(broker: &Broker, spec: &FetchSpec, data: &FetchResponseData) {
    let quota = &broker.replicas.quotas.leader;
    if spec.replica_id < 0 || quota.bound() == crate::replication_quota::UNLIMITED {
        return;
    }
    let mut bytes = 0u64;
    for topic in &data.topics {
        let config = broker.replicas.topic_config(&topic.name);
        for p in &topic.partitions {
            if leader_throttled(broker, &config, p.index) {
                bytes += p.records.len() as u64;
            }
        }
    }
    quota.record(bytes, crate::broker::now_ms());
}

/// A follower's fetch offsets are its log end offsets: the leader's view of its progress,
/// the high watermark and the ISR move on them (once per request, not per re-read).
fn record_follower_fetches(broker: &Broker, spec: &FetchSpec) {
    let now = crate::broker::now_ms();
    for topic in spec.topics.iter().filter(|t| t.resolved()) {
        for f in &topic.partitions {
            let tp = TopicPartition::new(&topic.name, f.partition);
            if let Err(e) = broker.replicas.record_follower_fetch(
                &tp,
                spec.replica_id,
                f.offset,
                f.current_leader_epoch,
                now,
            ) {
                log::debug!(
                    "fetch of {tp} by replica {}: {e:?} (answered in the response)",
                    spec.replica_id
                );
            }
        }
    }
}

/// Applies the fetch session to the response (session id; only what changed for an
/// incremental fetch) and sends it.
fn respond(broker: &Broker, spec: &FetchSpec, mut data: FetchResponseData, responder: Responder) {
    record_throttled_bytes(broker, spec, &data);
    broker.fetch_sessions.finish(
        spec.context,
        &spec.topics,
        &mut data,
        crate::broker::now_ms(),
    );
    responder.respond(Response::Send(fetch_writer::write(
        spec.correlation_id,
        spec.version,
        &data,
    )));
}

struct DelayedFetch {
    broker: Arc<Broker>,
    spec: FetchSpec,
    responder: Mutex<Option<Responder>>,
}

/// Where this fetch may read up to: a follower copies everything the leader has;
/// consumers see what is committed.
fn readable_end(log: &kbroker_storage::Log, spec: &FetchSpec) -> i64 {
    if spec.replica_id >= 0 {
        log.log_end_offset()
    } else {
        log.high_watermark()
    }
}

/// Whether a parked fetch can complete, judged from offsets alone where that suffices:
/// Some(false) while no partition has anything past its fetch offset (the usual state of a
/// tailing consumer: nothing is read), Some(true) on an error to report or, with
/// `min_bytes` ≤ 1, as soon as one partition has a batch to send; None when only a byte
/// count can tell (`min_bytes` > 1 and something arrived).
fn ready_by_offsets(broker: &Broker, spec: &FetchSpec) -> Option<bool> {
    let mut any_data = false;
    for topic in &spec.topics {
        if !topic.resolved() {
            return Some(true);
        }
        for f in &topic.partitions {
            let Ok((view, preferred)) = replica_to_read(broker, spec, &topic.name, f) else {
                return Some(true);
            };
            if leader_epoch_error(f.current_leader_epoch, view.leader_epoch).is_some()
                || preferred.is_some()
            {
                return Some(true);
            }
            let Ok(log) = lock(&view.log) else {
                return Some(true);
            };
            if f.offset < log.log_start_offset() || f.offset > log.log_end_offset() {
                return Some(true);
            }
            // A throttled partition's records are not sent: they do not complete the wait.
            any_data |= readable_end(&log, spec) > f.offset
                && !leader_throttles(broker, spec, f.partition, &view.config, &view.isr);
        }
    }
    match (any_data, spec.min_bytes <= 1) {
        (false, _) => Some(false),
        (true, true) => Some(true),
        (true, false) => None,
    }
}

impl DelayedOperation for DelayedFetch {
    fn can_complete(&self) -> bool {
        ready_by_offsets(&self.broker, &self.spec).unwrap_or_else(|| {
            let (_, bytes, errors) = read(&self.broker, &self.spec);
            errors || bytes >= self.spec.min_bytes.max(1)
        })
    }

    fn complete(&self, _expired: bool) {
        let (data, _, _) = read(&self.broker, &self.spec);
        if let Some(responder) = self
            .responder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            respond(&self.broker, &self.spec, data, responder);
        }
    }
}

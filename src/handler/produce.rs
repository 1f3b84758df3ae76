//! Produce: validate and append each partition's batch, answer with base offsets.
//!
//! Validation runs before the partition lock is taken: Kafka's per-version rules first
//! (v3+: exactly one batch of magic 2; zstd only from v7, else UNSUPPORTED_COMPRESSION_TYPE),
//! then the storage validator, which parses every record — decompressing compressed batches
//! with bounded memory — and refuses unparseable batches with CORRUPT_MESSAGE and
//! well-formed ones a client may not write with INVALID_RECORD. Nothing invalid reaches the
//! log. A disk error answers KAFKA_STORAGE_ERROR for that partition only. The topic's
//! `message.timestamp.before/after.max.ms` bound CreateTime timestamps (INVALID_TIMESTAMP),
//! and a `compression.type` other than `producer` recompresses batches in another codec
//! before they are appended (Kafka's LogValidator does the same).
//!
//! acks=1 answers after the leader's append. acks=-1 first checks `min.insync.replicas`
//! against the ISR (NOT_ENOUGH_REPLICAS, nothing appended), then waits in the produce
//! purgatory until the high watermark passes the appended records — every ISR member has
//! them — or `timeout_ms` passes (REQUEST_TIMED_OUT: the records may still commit, as in
//! Kafka). On a partition whose ISR is its leader alone (every partition of a single node)
//! that is at once. acks=0 sends nothing back — unless a partition failed, in which case
//! the connection is closed, as Kafka does, so the producer notices. Each append wakes
//! fetches waiting on that partition.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_reactor::{Responder, Response};
use kbroker_replication::purgatory::DelayedOperation;
use kbroker_storage::batch::{BatchError, BatchHeader};
use kbroker_storage::compression::ZSTD;
use kbroker_storage::manager::lock;
use kbroker_storage::validate::{
    recompress, validate_client_records, ProduceRules, ValidatedRecords,
};
use kbroker_storage::{StorageError, TopicPartition};

use super::{
    decode, lookup_error_code, respond, respond_later, storage_error_code, HandlerResult,
    RequestContext,
};
use crate::broker::{now_ms, Broker};
use crate::replica_manager::ReplicaManager;

/// Longest acks=-1 wait a client may ask for.
pub const PRODUCE_TIMEOUT_MS_MAX: i32 = 300_000;

/// An acks=-1 partition append waiting for the high watermark.
struct Pending {
    /// Where its answer goes: (topic index, partition index) in the response.
    at: (usize, usize),
    tp: TopicPartition,
    leader_epoch: i32,
    /// The high watermark that covers the appended records.
    required: i64,
    min_isr: i32,
}

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<ProduceRequest>(&mut body, ctx.version, responder)?;
    let acks = request.acks;
    if has_transactional_batches(&request) {
        // Kafka: transactional records need a transactional id (and its ACL); kbroker has no
        // transaction coordinator, so no producer can hold a transactional id.
        return refuse_all(
            ctx,
            responder,
            &request,
            ResponseError::TransactionalIdAuthorizationFailed,
        );
    }
    let mut any_error = false;
    let mut pending = Vec::new();
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for (ti, topic) in request.topic_data.iter().enumerate() {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for (pi, p) in topic.partition_data.iter().enumerate() {
            let mut r = PartitionProduceResponse::default()
                .with_index(p.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            if !matches!(acks, -1..=1) {
                r.error_code = ResponseError::InvalidRequiredAcks.code();
            } else if let Some(wait) = append(
                broker,
                ctx.version,
                &name,
                p.index,
                p.records.as_ref(),
                acks,
                &mut r,
            ) {
                pending.push(Pending {
                    at: (ti, pi),
                    ..wait
                });
            }
            any_error |= r.error_code != 0;
            partitions.push(r);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name.clone())
                .with_partition_responses(partitions),
        );
    }
    if acks == 0 {
        responder.respond(if any_error {
            Response::Close
        } else {
            Response::NoResponse
        });
        return Ok(());
    }
    let response = ProduceResponse::default().with_responses(responses);
    if pending.is_empty() {
        return respond(ctx, responder, &response);
    }
    let keys: Vec<TopicPartition> = pending.iter().map(|p| p.tp.clone()).collect();
    let timeout = request.timeout_ms.clamp(0, PRODUCE_TIMEOUT_MS_MAX) as u64;
    let op = DelayedProduce {
        replicas: Arc::clone(&broker.replicas),
        pending,
        answer: Mutex::new(Some((response, Box::new(respond_later(ctx, responder))))),
    };
    broker.replicas.produce_purgatory.try_complete_else_watch(
        Box::new(op),
        &keys,
        Duration::from_millis(timeout),
    );
    Ok(())
}

type Answer = (ProduceResponse, Box<dyn FnOnce(ProduceResponse) + Send>);

/// Kafka's `DelayedProduce`: completes when every waiting partition is replicated or
/// failed; on expiry the rest answer REQUEST_TIMED_OUT.
struct DelayedProduce {
    replicas: Arc<ReplicaManager>,
    pending: Vec<Pending>,
    answer: Mutex<Option<Answer>>,
}

impl DelayedProduce {
    fn status(&self, p: &Pending) -> Option<i16> {
        self.replicas
            .produce_status(&p.tp, p.leader_epoch, p.required, p.min_isr)
    }
}

impl DelayedOperation for DelayedProduce {
    fn can_complete(&self) -> bool {
        self.pending.iter().all(|p| self.status(p).is_some())
    }

    fn complete(&self, _expired: bool) {
        let Some((mut response, send)) =
            self.answer.lock().unwrap_or_else(|p| p.into_inner()).take()
        else {
            return;
        };
        for p in &self.pending {
            let code = self
                .status(p)
                .unwrap_or(ResponseError::RequestTimedOut.code());
            let (ti, pi) = p.at;
            if let Some(r) = response
                .responses
                .get_mut(ti)
                .and_then(|t| t.partition_responses.get_mut(pi))
            {
                r.error_code = code;
            }
        }
        send(response);
    }
}

/// Kafka's `ProduceRequest.validateRecords`: what each Produce version may carry.
fn check_version_rules(version: i16, records: &[u8]) -> Result<(), BatchError> {
    let magic = records
        .get(kbroker_storage::batch::MAGIC_OFFSET)
        .map(|m| *m as i8);
    if version >= 3 && magic.is_some_and(|m| m != kbroker_storage::batch::MAGIC_V2) {
        return Err(BatchError::Invalid(
            "Produce v3 and later carry record batches of magic 2 only",
        ));
    }
    let header = BatchHeader::parse(records)?;
    if version < 7 && header.compression() == ZSTD {
        return Err(BatchError::UnsupportedCompression);
    }
    Ok(())
}

fn append(
    broker: &Broker,
    version: i16,
    topic: &str,
    partition: i32,
    records: Option<&Bytes>,
    acks: i16,
    r: &mut PartitionProduceResponse,
) -> Option<Pending> {
    let view = match broker.replicas.leader_log(topic, partition) {
        Ok(found) => found,
        Err(e) => {
            r.error_code = lookup_error_code(e);
            return None;
        }
    };
    let (log, leader_epoch) = (&view.log, view.leader_epoch);
    let Some(records) = records.filter(|b| !b.is_empty()) else {
        r.error_code = ResponseError::InvalidRecord.code();
        r.error_message = Some(StrBytes::from_static_str(
            "a produce request needs one record batch per partition",
        ));
        return None;
    };
    // `min.insync.replicas` matters to acks=-1 only (a map lookup per partition).
    let min_isr = if acks == -1 {
        let min_isr =
            ReplicaManager::min_insync_replicas(&view.config, broker.min_insync_replicas());
        if (view.isr.len() as i32) < min_isr {
            r.error_code = ResponseError::NotEnoughReplicas.code();
            return None;
        }
        min_isr
    } else {
        0
    };
    let rules = ProduceRules {
        max_message_bytes: view.config.log_config.max_message_bytes,
        compacted: view.config.log_config.cleanup_compact,
    };
    let validated = check_version_rules(version, records)
        .and_then(|()| validate_client_records(records, &rules));
    let refuse = |r: &mut PartitionProduceResponse, e: BatchError| {
        log::debug!("produce to {topic}-{partition} refused: {e}");
        r.error_code = storage_error_code(&StorageError::InvalidBatch(e));
        r.error_message = Some(StrBytes::from_string(e.to_string()));
    };
    let validated = match validated {
        Ok(v) => v,
        Err(e) => {
            refuse(r, e);
            return None;
        }
    };
    let log_config = &view.config.log_config;
    if let Some(message) = timestamp_out_of_bounds(log_config, &validated, now_ms()) {
        r.error_code = ResponseError::InvalidTimestamp.code();
        r.error_message = Some(StrBytes::from_string(message));
        return None;
    }
    // `compression.type` other than `producer`: batches in another codec are stored
    // recompressed (and validated again: the result must fit max.message.bytes too).
    let recompressed = match log_config.compression {
        Some(codec) if validated.batches()[0].header.compression() != codec => {
            match recompress(records, codec, log_config.compression_level(codec)) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    refuse(r, e);
                    return None;
                }
            }
        }
        _ => None,
    };
    let validated = match &recompressed {
        Some(bytes) => match validate_client_records(bytes, &rules) {
            Ok(v) => v,
            Err(e) => {
                refuse(r, e);
                return None;
            }
        },
        None => validated,
    };
    let tp = TopicPartition::new(topic, partition);
    let appended = broker
        .replicas
        .append(&tp, log, &validated, leader_epoch, now_ms());
    match appended {
        Ok(info) => {
            r.base_offset = info.first_offset;
            r.log_append_time_ms = info.log_append_time;
            r.log_start_offset = info.log_start_offset;
            if info.duplicate {
                log::debug!(
                    "produce to {tp}: a retried batch, answered with base offset {}",
                    info.first_offset
                );
            }
            if acks == -1 {
                return Some(Pending {
                    at: (0, 0),
                    tp,
                    leader_epoch,
                    required: info.last_offset + 1,
                    min_isr,
                });
            }
        }
        Err(StorageError::Producer(e)) => {
            // Kafka: no error message, and the log start offset (clients use it).
            log::info!("produce to {topic}-{partition} refused: {e}");
            r.error_code = storage_error_code(&StorageError::Producer(e));
            r.log_start_offset = lock(log).map_or(-1, |l| l.log_start_offset());
        }
        Err(e) => {
            log::debug!("produce to {topic}-{partition} failed: {e}");
            r.error_code = storage_error_code(&e);
            r.error_message = Some(StrBytes::from_string(e.to_string()));
        }
    }
    None
}

/// Kafka's CreateTime timestamp check (`message.timestamp.before/after.max.ms`): the reason
/// if a record's timestamp lies further behind or ahead of `now` than the topic allows.
fn timestamp_out_of_bounds(
    config: &kbroker_storage::LogConfig,
    validated: &ValidatedRecords<'_>,
    now: i64,
) -> Option<String> {
    if config.log_append_time {
        return None;
    }
    let (before, after) = config.timestamp_bounds();
    let b = validated.batches().first()?;
    let too_old = b.min_timestamp != i64::MAX && now.saturating_sub(b.min_timestamp) > before;
    let too_new = b.max_timestamp.saturating_sub(now) > after;
    (too_old || too_new).then(|| {
        let ts = if too_old {
            b.min_timestamp
        } else {
            b.max_timestamp
        };
        format!(
            "Timestamp {ts} of a record is out of range. The timestamp should be within [{}, {}]",
            now.saturating_sub(before),
            now.saturating_add(after)
        )
    })
}

/// True if a partition's first batch has the transactional bit (Kafka checks the first).
fn has_transactional_batches(request: &ProduceRequest) -> bool {
    request
        .topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .filter_map(|p| p.records.as_deref())
        .filter_map(|r| BatchHeader::parse(r).ok())
        .any(|h| h.is_transactional())
}

/// Answers every partition with `error` (acks=0: closes the connection).
fn refuse_all(
    ctx: &RequestContext,
    responder: Responder,
    request: &ProduceRequest,
    error: ResponseError,
) -> HandlerResult {
    if request.acks == 0 {
        responder.respond(Response::Close);
        return Ok(());
    }
    let responses = request
        .topic_data
        .iter()
        .map(|t| {
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_partition_responses(
                    t.partition_data
                        .iter()
                        .map(|p| {
                            PartitionProduceResponse::default()
                                .with_index(p.index)
                                .with_error_code(error.code())
                                .with_base_offset(-1)
                                .with_log_append_time_ms(-1)
                                .with_log_start_offset(-1)
                        })
                        .collect(),
                )
        })
        .collect();
    respond(
        ctx,
        responder,
        &ProduceResponse::default().with_responses(responses),
    )
}

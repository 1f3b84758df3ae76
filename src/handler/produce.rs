//! Produce: validate and append each partition's batches, answer with base offsets.
//!
//! acks=1 and acks=-1 answer after the leader's append; on a partition whose ISR is only
//! its leader (every partition of a single node) that is also when -1 is satisfied, and
//! `min.insync.replicas` is checked against the ISR. acks=0 sends nothing back — unless a
//! partition failed, in which case the connection is closed, as Kafka does, so the producer
//! notices. Each append wakes fetches waiting on that partition.

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_reactor::{Responder, Response};
use kbroker_storage::manager::lock;
use kbroker_storage::TopicPartition;

use super::{
    decode, lookup_error_code, respond, storage_error_code, HandlerResult, RequestContext,
};
use crate::broker::{now_ms, Broker};

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<ProduceRequest>(&mut body, ctx.version, responder)?;
    let acks = request.acks;
    let mut any_error = false;
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic in &request.topic_data {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for p in &topic.partition_data {
            let mut r = PartitionProduceResponse::default()
                .with_index(p.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            if !matches!(acks, -1..=1) {
                r.error_code = ResponseError::InvalidRequiredAcks.code();
            } else {
                append(broker, &name, p.index, p.records.as_ref(), acks, &mut r);
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
    respond(
        ctx,
        responder,
        &ProduceResponse::default().with_responses(responses),
    )
}

fn append(
    broker: &Broker,
    topic: &str,
    partition: i32,
    records: Option<&Bytes>,
    acks: i16,
    r: &mut PartitionProduceResponse,
) {
    let (info, log, leader_epoch) = match broker.leader_log(topic, partition) {
        Ok(found) => found,
        Err(e) => {
            r.error_code = lookup_error_code(e);
            return;
        }
    };
    let Some(records) = records.filter(|b| !b.is_empty()) else {
        r.error_code = ResponseError::CorruptMessage.code();
        return;
    };
    if acks == -1 {
        let min_isr = info
            .configs
            .get("min.insync.replicas")
            .and_then(|v| v.parse().ok())
            .unwrap_or(broker.config.min_insync_replicas);
        let isr = info
            .partitions
            .get(partition as usize)
            .map_or(0, |p| p.isr.len()) as i32;
        if isr < min_isr {
            r.error_code = ResponseError::NotEnoughReplicas.code();
            return;
        }
    }
    let appended = {
        let mut log = lock(&log);
        let result = log.append_as_leader(records, leader_epoch, now_ms());
        if result.is_ok() {
            // The ISR is this broker alone: the high watermark follows the log end.
            let end = log.log_end_offset();
            log.set_high_watermark(end);
        }
        result
    };
    match appended {
        Ok(info) => {
            r.base_offset = info.first_offset;
            r.log_append_time_ms = info.log_append_time;
            r.log_start_offset = info.log_start_offset;
            broker
                .fetch_purgatory
                .check_and_complete(&TopicPartition::new(topic, partition));
        }
        Err(e) => {
            log::debug!("produce to {topic}-{partition} rejected: {e}");
            r.error_code = storage_error_code(&e);
            r.error_message = Some(StrBytes::from_string(e.to_string()));
        }
    }
}

//! DeleteRecords: advance partitions' log start offsets (`kafka-delete-records`, the admin
//! client's `deleteRecords`), freeing the segments wholly below them.
//!
//! Kafka's rules: offset -1 means the high watermark; an offset above the high watermark
//! is OFFSET_OUT_OF_RANGE; the answer carries the new low watermark (the log start offset).
//! Segments go at once, so on a full disk this makes room like deleting a topic does.

use bytes::Bytes;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;
use kbroker_storage::manager::lock;

use super::{
    decode, lookup_error_code, respond, storage_error_code, HandlerResult, RequestContext,
};
use crate::broker::Broker;

/// The high watermark, as a DeleteRecords target.
const HIGH_WATERMARK: i64 = -1;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<DeleteRecordsRequest>(&mut body, ctx.version, responder)?;
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| delete_below(broker, &t.name.0, p.partition_index, p.offset))
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    respond(
        ctx,
        responder,
        &DeleteRecordsResponse::default().with_topics(topics),
    )
}

fn delete_below(
    broker: &Broker,
    topic: &str,
    partition: i32,
    offset: i64,
) -> DeleteRecordsPartitionResult {
    let mut r = DeleteRecordsPartitionResult::default()
        .with_partition_index(partition)
        .with_low_watermark(-1);
    let log = match broker.replicas.leader_log(topic, partition) {
        Ok(view) => view.log,
        Err(e) => {
            r.error_code = lookup_error_code(e);
            return r;
        }
    };
    if offset < HIGH_WATERMARK {
        r.error_code = ResponseError::OffsetOutOfRange.code();
        return r;
    }
    let result = lock(&log).and_then(|mut log| {
        let target = if offset == HIGH_WATERMARK {
            log.high_watermark()
        } else {
            offset
        };
        log.advance_log_start_offset(target)?;
        Ok(log.log_start_offset())
    });
    match result {
        Ok(low_watermark) => {
            r.low_watermark = low_watermark;
            log::info!("deleted records topic={topic} partition={partition} log_start_offset={low_watermark}");
        }
        Err(e) => r.error_code = storage_error_code(&e),
    }
    r
}

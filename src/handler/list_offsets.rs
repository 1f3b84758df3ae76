//! ListOffsets: earliest (-2), latest (-1: the high watermark, or the last stable offset for
//! read_committed), by timestamp (the first offset whose timestamp is >= the target,
//! through the time index), and from v7–v9 Kafka 3.9's other special timestamps: the record
//! with the greatest timestamp (-3, KIP-734), the earliest local offset (-4: the log start,
//! all of a kbroker log is local) and the latest tiered offset (-5: -1, nothing is tiered —
//! what Kafka answers with remote storage off). v0 answers in its old form: a list of
//! offsets. A follower's latest is the log end offset.

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;
use kbroker_storage::manager::lock;

use super::{
    decode, leader_epoch_error, lookup_error_code, respond, storage_error_code, HandlerResult,
    RequestContext,
};
use crate::broker::Broker;

pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
pub const LATEST_TIERED_TIMESTAMP: i64 = -5;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<ListOffsetsRequest>(&mut body, ctx.version, responder)?;
    // A follower (replica id >= 0) asks for the leader's log end, not its high watermark.
    let from_follower = request.replica_id.0 >= 0;
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    list_partition(
                        broker,
                        ctx.version,
                        &name,
                        p.partition_index,
                        p.timestamp,
                        p.current_leader_epoch,
                        from_follower,
                    )
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    respond(
        ctx,
        responder,
        &ListOffsetsResponse::default().with_topics(topics),
    )
}

fn list_partition(
    broker: &Broker,
    version: i16,
    topic: &str,
    partition: i32,
    timestamp: i64,
    current_leader_epoch: i32,
    from_follower: bool,
) -> ListOffsetsPartitionResponse {
    // Fields a version lacks stay at their defaults (the encoder refuses anything else).
    let mut r = ListOffsetsPartitionResponse::default().with_partition_index(partition);
    let (log, leader_epoch) = match broker.replicas.leader_log(topic, partition) {
        Ok(view) => (view.log, view.leader_epoch),
        Err(e) => {
            r.error_code = lookup_error_code(e);
            return r;
        }
    };
    if let Some(code) = leader_epoch_error(current_leader_epoch, leader_epoch) {
        r.error_code = code;
        return r;
    }
    let log = match lock(&log).and_then(|l| l.check_online().map(|()| l)) {
        Ok(log) => log,
        Err(e) => {
            r.error_code = storage_error_code(&e);
            return r;
        }
    };
    let found = match timestamp {
        LATEST_TIMESTAMP if from_follower => Ok(Some((log.log_end_offset(), -1))),
        LATEST_TIMESTAMP => Ok(Some((log.high_watermark(), -1))),
        EARLIEST_TIMESTAMP => Ok(Some((log.log_start_offset(), -1))),
        EARLIEST_LOCAL_TIMESTAMP if version >= 8 => Ok(Some((log.log_start_offset(), -1))),
        LATEST_TIERED_TIMESTAMP if version >= 9 => Ok(Some((-1, -1))),
        MAX_TIMESTAMP if version >= 7 => log.max_timestamp_record(),
        t if t < 0 => {
            r.error_code = ResponseError::UnsupportedVersion.code();
            return r;
        }
        t => log.offset_for_timestamp(t),
    };
    match found {
        Ok(Some((offset, _))) if version == 0 => r.old_style_offsets = vec![offset],
        Ok(Some((offset, ts))) => {
            r.offset = offset;
            r.timestamp = ts;
            if version >= 4 && timestamp != LATEST_TIERED_TIMESTAMP {
                r.leader_epoch = leader_epoch;
            }
        }
        Ok(None) => {}
        Err(e) => r.error_code = storage_error_code(&e),
    }
    r
}

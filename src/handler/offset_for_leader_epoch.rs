//! OffsetForLeaderEpoch (KIP-101/279/320): where a leader epoch ends in the leader's log —
//! the log end for its current epoch, else the start of the next later epoch — and the
//! largest epoch at or below the one asked for. Followers ask it before fetching to find
//! where their log diverges from the leader's; consumers ask it after a leader change to
//! detect truncation. Only the leader answers (NOT_LEADER_OR_FOLLOWER otherwise), and a
//! `current_leader_epoch` other than the leader's is fenced as in Fetch. An epoch the log
//! does not know answers -1/-1 with no error, as Kafka does.

use bytes::Bytes;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kbroker_reactor::Responder;
use kbroker_storage::manager::lock;

use super::{
    decode, leader_epoch_error, lookup_error_code, respond, storage_error_code, HandlerResult,
    RequestContext,
};
use crate::broker::Broker;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) =
        decode::<OffsetForLeaderEpochRequest>(&mut body, ctx.version, responder)?;
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    end_offset(
                        broker,
                        ctx.version,
                        &t.topic.0,
                        p.partition,
                        p.current_leader_epoch,
                        p.leader_epoch,
                    )
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    respond(
        ctx,
        responder,
        &OffsetForLeaderEpochResponse::default().with_topics(topics),
    )
}

fn end_offset(
    broker: &Broker,
    version: i16,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> EpochEndOffset {
    let mut r = EpochEndOffset::default()
        .with_partition(partition)
        .with_leader_epoch(-1)
        .with_end_offset(-1);
    let view = match broker.replicas.leader_log(topic, partition) {
        Ok(view) => view,
        Err(e) => {
            r.error_code = lookup_error_code(e);
            return r;
        }
    };
    // v0-1 carry no current leader epoch (it decodes as -1: not checked).
    if let Some(code) = leader_epoch_error(current_leader_epoch, view.leader_epoch) {
        r.error_code = code;
        return r;
    }
    match lock(&view.log).and_then(|l| l.check_online().map(|()| l)) {
        Ok(log) => {
            let (epoch, offset) = log.end_offset_for_epoch(leader_epoch);
            r.end_offset = offset;
            // v0 answers the offset only.
            if version >= 1 {
                r.leader_epoch = epoch;
            }
        }
        Err(e) => r.error_code = storage_error_code(&e),
    }
    r
}

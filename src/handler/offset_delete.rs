//! OffsetDelete: remove committed offsets of topics the group is not subscribed to.

use bytes::Bytes;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;
use kbroker_coordinator::offsets::subscription_topics;
use kbroker_reactor::Responder;

use super::find_coordinator::check_coordinator;
use super::{decode, respond, HandlerResult, RequestContext};
use crate::broker::Broker;
use crate::groups::offset_tombstones;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<OffsetDeleteRequest>(&mut body, ctx.version, responder)?;
    let group_id = request.group_id.0.to_string();
    let mut response = OffsetDeleteResponse::default();
    if let Some(code) = check_coordinator(broker, &group_id) {
        response.error_code = code;
        return respond(ctx, responder, &response);
    }
    let coordinator = &broker.groups;
    let found = coordinator.with_group(&group_id, |entry| {
        let subscribed: Vec<String> = entry
            .group
            .members()
            .flat_map(|m| {
                m.protocols
                    .first()
                    .and_then(|(_, meta)| subscription_topics(meta).ok())
                    .unwrap_or_default()
            })
            .collect();
        let mut deleted = Vec::new();
        for t in &request.topics {
            let topic = t.name.0.to_string();
            let busy = subscribed.contains(&topic);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = if busy {
                        ResponseError::GroupSubscribedToTopic.code()
                    } else {
                        0
                    };
                    if !busy {
                        deleted.push((topic.clone(), p.partition_index));
                    }
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            response.topics.push(
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions),
            );
        }
        let present = deleted.iter().filter(|k| entry.offsets.contains_key(*k));
        let records = offset_tombstones(&group_id, present);
        match coordinator.append(&group_id, records) {
            Ok(_) => {
                for k in &deleted {
                    entry.offsets.remove(k);
                }
            }
            Err(e) => {
                log::warn!("offset delete group={group_id} failed: {e}");
                response.error_code = ResponseError::CoordinatorNotAvailable.code();
            }
        }
    });
    if found.is_none() {
        response.error_code = ResponseError::GroupIdNotFound.code();
    }
    respond(ctx, responder, &response)
}

//! FindCoordinator: the coordinator of a group is the leader of its `__consumer_offsets`
//! partition, as the controller published it. The topic is created on first use (queued
//! through the admin component, answered COORDINATOR_NOT_AVAILABLE until it has leaders —
//! clients ask again, as with Kafka). Transaction coordinators are not supported
//! (COORDINATOR_NOT_AVAILABLE).

use bytes::Bytes;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;

use super::{decode, respond, HandlerResult, RequestContext};
use crate::broker::Broker;
use crate::groups::OFFSETS_TOPIC;

const KEY_TYPE_GROUP: i8 = 0;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<FindCoordinatorRequest>(&mut body, ctx.version, responder)?;
    let mut response = FindCoordinatorResponse::default()
        .with_node_id(BrokerId(-1))
        .with_port(-1);
    let error = if request.key_type != KEY_TYPE_GROUP {
        Some((
            ResponseError::CoordinatorNotAvailable,
            "transactions are not supported".to_string(),
        ))
    } else if request.key.is_empty() {
        Some((ResponseError::InvalidGroupId, "empty group id".to_string()))
    } else {
        match coordinator_of(broker, &request.key) {
            Ok(id) => {
                match broker.metadata.image().brokers.get(&id) {
                    Some(b) => {
                        response.node_id = BrokerId(id);
                        response.host = StrBytes::from_string(b.host.clone());
                        response.port = b.port;
                    }
                    None => {
                        response.error_code = ResponseError::CoordinatorNotAvailable.code();
                    }
                }
                None
            }
            Err(e) => Some((ResponseError::CoordinatorNotAvailable, e)),
        }
    };
    if let Some((code, message)) = error {
        response.error_code = code.code();
        if ctx.version >= 1 {
            response.error_message = Some(StrBytes::from_string(message));
        }
    }
    respond(ctx, responder, &response)
}

/// The broker leading the group's offsets partition.
pub fn coordinator_of(broker: &Broker, group: &str) -> Result<i32, String> {
    broker
        .groups
        .ensure_offsets_topic(
            &broker.metadata,
            &broker.admin,
            broker.config.zookeeper_connect.is_some(),
        )
        .map_err(|e| e.to_string())?;
    let info = broker
        .metadata
        .topic(OFFSETS_TOPIC)
        .ok_or("the offsets topic is being created")?;
    let p = broker.groups.partition_for(group);
    info.partition(p)
        .map(|p| p.leader)
        .filter(|l| *l >= 0)
        .ok_or_else(|| "the group's offsets partition has no leader".to_string())
}

/// None if this broker coordinates `group`, else the error code to answer with.
pub fn check_coordinator(broker: &Broker, group: &str) -> Option<i16> {
    if group.is_empty() {
        return Some(ResponseError::InvalidGroupId.code());
    }
    match coordinator_of(broker, group) {
        Ok(id) if id == broker.config.broker_id => {
            if broker.groups.is_loaded(broker.groups.partition_for(group)) {
                None
            } else {
                Some(ResponseError::CoordinatorLoadInProgress.code())
            }
        }
        Ok(_) => Some(ResponseError::NotCoordinator.code()),
        Err(_) => Some(ResponseError::CoordinatorNotAvailable.code()),
    }
}

//! FindCoordinator: the coordinator of a group is the leader of its `__consumer_offsets`
//! partition, as the controller published it. The topic is created on first use (queued
//! through the admin component, answered COORDINATOR_NOT_AVAILABLE until it has leaders —
//! clients ask again, as with Kafka). Transaction coordinators are not supported
//! (COORDINATOR_NOT_AVAILABLE). From v4 one request names several keys (KIP-699).

use bytes::Bytes;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;

use super::{decode, respond, HandlerResult, RequestContext};
use crate::broker::Broker;
use crate::groups::OFFSETS_TOPIC;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// Where one key's coordinator is: node id, host and port, or an error and its message.
struct Found {
    node_id: i32,
    host: String,
    port: i32,
    error: Option<(ResponseError, String)>,
}

fn find(broker: &Broker, key_type: i8, key: &str) -> Found {
    let mut found = Found {
        node_id: -1,
        host: String::new(),
        port: -1,
        error: None,
    };
    found.error = match key_type {
        KEY_TYPE_GROUP if key.is_empty() => {
            Some((ResponseError::InvalidGroupId, "empty group id".to_string()))
        }
        KEY_TYPE_GROUP => match coordinator_of(broker, key) {
            Ok(id) => match broker.metadata.image().brokers.get(&id) {
                Some(b) => {
                    found.node_id = id;
                    found.host = b.host.clone();
                    found.port = b.port;
                    None
                }
                None => Some((
                    ResponseError::CoordinatorNotAvailable,
                    format!("broker {id} is not known yet"),
                )),
            },
            Err(e) => Some((ResponseError::CoordinatorNotAvailable, e)),
        },
        KEY_TYPE_TRANSACTION => Some((
            ResponseError::CoordinatorNotAvailable,
            "transactions are not supported".to_string(),
        )),
        // Share groups (KIP-932, v6) and unknown types: Kafka answers INVALID_REQUEST.
        other => Some((
            ResponseError::InvalidRequest,
            format!("unsupported coordinator key type {other}"),
        )),
    };
    found
}

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<FindCoordinatorRequest>(&mut body, ctx.version, responder)?;
    if ctx.version >= 4 {
        // Batched (KIP-699): one answer per key.
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let f = find(broker, request.key_type, key);
                let (code, message) = f.error.map_or((0, None), |(e, m)| {
                    (e.code(), Some(StrBytes::from_string(m)))
                });
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(f.node_id))
                    .with_host(StrBytes::from_string(f.host))
                    .with_port(f.port)
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect();
        return respond(
            ctx,
            responder,
            &FindCoordinatorResponse::default().with_coordinators(coordinators),
        );
    }
    let f = find(broker, request.key_type, &request.key);
    let mut response = FindCoordinatorResponse::default()
        .with_node_id(BrokerId(f.node_id))
        .with_host(StrBytes::from_string(f.host))
        .with_port(f.port);
    if let Some((code, message)) = f.error {
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

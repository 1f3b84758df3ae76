//! Heartbeat: keeps a member's session alive; tells it when a rebalance is under way.

use bytes::Bytes;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use kafka_protocol::ResponseError;
use kbroker_coordinator::group::GroupError;
use kbroker_reactor::Responder;

use super::find_coordinator::check_coordinator;
use super::group_error_code;
use super::{decode, respond, HandlerResult, RequestContext};
use crate::broker::{now_ms, Broker};

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<HeartbeatRequest>(&mut body, ctx.version, responder)?;
    let group_id = request.group_id.0.to_string();
    let code = match check_coordinator(broker, &group_id) {
        Some(code) => not_coordinating_code(code),
        None => {
            let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
            let result = broker
                .groups
                .with_group(&group_id, |entry| {
                    entry.group.heartbeat(
                        &request.member_id,
                        request.generation_id,
                        instance.as_deref(),
                        now_ms(),
                    )
                })
                .unwrap_or(Err(GroupError::UnknownMemberId));
            result.err().map_or(0, group_error_code)
        }
    };
    respond(
        ctx,
        responder,
        &HeartbeatResponse::default().with_error_code(code),
    )
}

/// Heartbeat's answer when this broker does not coordinate the group now (`code` from
/// `check_coordinator`). As Kafka's: while the group is still loading the heartbeat is
/// answered NONE, blindly — the member keeps its session and generation, and finds out
/// what the loaded group says at its next heartbeat.
fn not_coordinating_code(code: i16) -> i16 {
    if code == ResponseError::CoordinatorLoadInProgress.code() {
        0
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loading_coordinator_answers_heartbeats_blindly() {
        assert_eq!(
            not_coordinating_code(ResponseError::CoordinatorLoadInProgress.code()),
            0
        );
        for e in [
            ResponseError::NotCoordinator,
            ResponseError::CoordinatorNotAvailable,
            ResponseError::InvalidGroupId,
        ] {
            assert_eq!(not_coordinating_code(e.code()), e.code());
        }
    }
}

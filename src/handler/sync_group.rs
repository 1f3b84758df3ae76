//! SyncGroup: the leader's assignment is installed and handed to every member; followers'
//! replies wait for it.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_coordinator::group::SyncResult;
use kbroker_reactor::Responder;

use super::find_coordinator::check_coordinator;
use super::group_error_code;
use super::join_group::reply;
use super::{decode, HandlerResult, RequestContext};
use crate::broker::{now_ms, Broker};
use crate::groups::PendingReply;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<SyncGroupRequest>(&mut body, ctx.version, responder)?;
    let pending = PendingReply {
        responder,
        correlation_id: ctx.header.correlation_id,
        version: ctx.version,
    };
    let group_id = request.group_id.0.to_string();
    if let Some(code) = check_coordinator(broker, &group_id) {
        send_code(
            pending,
            not_coordinating_code(code),
            &SyncResult {
                error: None,
                protocol_type: None,
                protocol_name: None,
                assignment: Vec::new(),
            },
        );
        return Ok(());
    }
    let coordinator = &broker.groups;
    let assignments = request
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
        .collect();
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
    let mut pending = Some(pending);
    let done = coordinator.with_group(&group_id, |entry| {
        let replies = match pending.take() {
            Some(pending) => entry.group.sync_with_protocol(
                &request.member_id,
                request.generation_id,
                instance.as_deref(),
                (
                    request.protocol_type.as_ref().map(|s| s.as_str()),
                    request.protocol_name.as_ref().map(|s| s.as_str()),
                ),
                assignments,
                pending,
                now_ms(),
            ),
            None => Vec::new(),
        };
        coordinator.record_if_due(&group_id, entry);
        (replies, entry.group.drain_events())
    });
    let Some((replies, events)) = done else {
        if let Some(pending) = pending {
            send_code(
                pending,
                group_error_code(kbroker_coordinator::group::GroupError::UnknownMemberId),
                &SyncResult {
                    error: None,
                    protocol_type: None,
                    protocol_name: None,
                    assignment: Vec::new(),
                },
            );
        }
        return Ok(());
    };
    coordinator.mirror_events(&group_id, events);
    coordinator.send_replies(replies);
    Ok(())
}

pub fn send(p: PendingReply, result: &SyncResult) {
    let code = result.error.map_or(0, group_error_code);
    send_code(p, code, result);
}

/// SyncGroup's answer when this broker does not coordinate the group now (`code` from
/// `check_coordinator`). As Kafka's: a coordinator still loading the group has lost the
/// rebalance in progress, and REBALANCE_IN_PROGRESS sends the member back to JoinGroup
/// without looking the coordinator up again (clients do not expect LOAD_IN_PROGRESS here).
fn not_coordinating_code(code: i16) -> i16 {
    if code == ResponseError::CoordinatorLoadInProgress.code() {
        ResponseError::RebalanceInProgress.code()
    } else {
        code
    }
}

fn send_code(p: PendingReply, code: i16, result: &SyncResult) {
    let v5 = p.version >= 5;
    let response = SyncGroupResponse::default()
        .with_error_code(code)
        .with_protocol_type(if v5 {
            result.protocol_type.clone().map(StrBytes::from_string)
        } else {
            None
        })
        .with_protocol_name(if v5 {
            result.protocol_name.clone().map(StrBytes::from_string)
        } else {
            None
        })
        .with_assignment(Bytes::from(result.assignment.clone()));
    reply(p, ApiKey::SyncGroup, &response);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loading_coordinator_sends_the_member_back_to_join_group() {
        assert_eq!(
            not_coordinating_code(ResponseError::CoordinatorLoadInProgress.code()),
            ResponseError::RebalanceInProgress.code()
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

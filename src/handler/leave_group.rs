//! LeaveGroup: one member (v0–2) or a batch of members by id or instance id (v3+).

use bytes::Bytes;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::StrBytes;
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
    let (request, responder) = decode::<LeaveGroupRequest>(&mut body, ctx.version, responder)?;
    let group_id = request.group_id.0.to_string();
    let mut response = LeaveGroupResponse::default();
    if let Some(code) = check_coordinator(broker, &group_id) {
        response.error_code = code;
        return respond(ctx, responder, &response);
    }
    let leaving: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let coordinator = &broker.groups;
    let mut replies = Vec::new();
    let mut results = Vec::new();
    let events = coordinator
        .with_group(&group_id, |entry| {
            for (member, instance) in &leaving {
                let (result, r) = entry.group.leave(
                    member,
                    instance.as_deref(),
                    &coordinator.config.group,
                    now_ms(),
                );
                replies.extend(r);
                results.push(result);
            }
            entry.group.drain_events()
        })
        .unwrap_or_else(|| {
            results = leaving
                .iter()
                .map(|_| Err(GroupError::UnknownMemberId))
                .collect();
            Vec::new()
        });
    coordinator.mirror_events(&group_id, events);
    coordinator.send_replies(replies);
    if ctx.version >= 3 {
        response.members = leaving
            .iter()
            .zip(&results)
            .map(|((m, i), r)| {
                MemberResponse::default()
                    .with_member_id(StrBytes::from_string(m.clone()))
                    .with_group_instance_id(i.clone().map(StrBytes::from_string))
                    .with_error_code(r.err().map_or(0, group_error_code))
            })
            .collect();
    } else if let Some(Err(e)) = results.first() {
        response.error_code = group_error_code(*e);
    }
    respond(ctx, responder, &response)
}

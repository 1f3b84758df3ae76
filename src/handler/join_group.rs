//! JoinGroup: hand the request to the group's state machine; the reply may come later
//! (when the rebalance completes), from another handler thread or the group timer.

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{ApiKey, JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;
use kbroker_coordinator::group::{JoinRequest, JoinResult};
use kbroker_reactor::{Chunk, Responder, Response};

use super::find_coordinator::check_coordinator;
use super::group_error_code;
use super::{decode, encode_with_header, HandlerResult, RequestContext};
use crate::broker::{now_ms, Broker};
use crate::groups::PendingReply;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<JoinGroupRequest>(&mut body, ctx.version, responder)?;
    let pending = PendingReply {
        responder,
        correlation_id: ctx.header.correlation_id,
        version: ctx.version,
    };
    let group_id = request.group_id.0.to_string();
    if let Some(code) = check_coordinator(broker, &group_id) {
        send_error(pending, code, &request.member_id);
        return Ok(());
    }
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: ctx
            .header
            .client_id
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", ctx.peer.ip()),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if ctx.version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.to_vec()))
            .collect(),
        require_known_member_id: ctx.version >= 4,
    };
    let coordinator = &broker.groups;
    let (replies, events) = coordinator.with_group_or_create(&group_id, |entry| {
        let replies = entry
            .group
            .join(join, pending, &coordinator.config.group, now_ms());
        coordinator.record_if_due(&group_id, entry);
        (replies, entry.group.drain_events())
    });
    coordinator.mirror_events(&group_id, events);
    coordinator.send_replies(replies);
    Ok(())
}

fn send_error(p: PendingReply, code: i16, member_id: &StrBytes) {
    let result = JoinResult {
        error: None,
        generation_id: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        member_id: member_id.to_string(),
        members: Vec::new(),
    };
    send_with_code(p, &result, code);
}

pub fn send(p: PendingReply, result: &JoinResult) {
    let code = result.error.map_or(0, group_error_code);
    send_with_code(p, result, code);
}

fn send_with_code(p: PendingReply, result: &JoinResult, code: i16) {
    let v = p.version;
    let members = result
        .members
        .iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(m.member_id.clone()))
                .with_group_instance_id(if v >= 5 {
                    m.group_instance_id.clone().map(StrBytes::from_string)
                } else {
                    None
                })
                .with_metadata(Bytes::from(m.metadata.clone()))
        })
        .collect();
    let response = JoinGroupResponse::default()
        .with_error_code(code)
        .with_generation_id(result.generation_id)
        .with_protocol_type(if v >= 7 {
            result.protocol_type.clone().map(StrBytes::from_string)
        } else {
            None
        })
        .with_protocol_name(if v >= 7 {
            result.protocol_name.clone().map(StrBytes::from_string)
        } else {
            Some(StrBytes::from_string(
                result.protocol_name.clone().unwrap_or_default(),
            ))
        })
        .with_leader(StrBytes::from_string(result.leader.clone()))
        .with_member_id(StrBytes::from_string(result.member_id.clone()))
        .with_members(members);
    reply(p, ApiKey::JoinGroup, &response);
}

/// Encodes and sends a deferred response.
pub fn reply<T: kafka_protocol::protocol::Encodable>(p: PendingReply, api: ApiKey, body: &T) {
    match encode_with_header(
        p.correlation_id,
        api.response_header_version(p.version),
        p.version,
        body,
    ) {
        Ok(bytes) => p
            .responder
            .respond(Response::Send(vec![Chunk::Bytes(bytes)])),
        Err(e) => {
            log::error!("encoding {api:?} v{} failed: {e}", p.version);
            p.responder.respond(Response::Close);
        }
    }
}

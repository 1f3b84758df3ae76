//! DescribeGroups: state, protocol, members with their metadata and assignment.

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;
use kbroker_coordinator::group::GroupState;
use kbroker_reactor::Responder;

use super::find_coordinator::check_coordinator;
use super::{decode, respond, HandlerResult, RequestContext};
use crate::broker::Broker;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<DescribeGroupsRequest>(&mut body, ctx.version, responder)?;
    let s = |x: &str| StrBytes::from_string(x.to_string());
    let described = request
        .groups
        .iter()
        .map(|g| {
            let id = g.0.to_string();
            let mut out = DescribedGroup::default().with_group_id(g.clone());
            if ctx.version >= 3 {
                out.authorized_operations = i32::MIN;
            }
            if let Some(code) = check_coordinator(broker, &id) {
                out.error_code = code;
                return out;
            }
            let found = broker.groups.with_group(&id, |entry| {
                let group = &entry.group;
                out.group_state = s(group.state().name());
                out.protocol_type = s(group.protocol_type().unwrap_or_default());
                let protocol = group.protocol_name().unwrap_or_default().to_string();
                out.protocol_data = s(&protocol);
                out.members = group
                    .members()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(s(&m.member_id))
                            .with_group_instance_id(if ctx.version >= 4 {
                                m.group_instance_id.as_deref().map(s)
                            } else {
                                None
                            })
                            .with_client_id(s(&m.client_id))
                            .with_client_host(s(&m.client_host))
                            .with_member_metadata(Bytes::from(
                                if group.state() == GroupState::Stable {
                                    m.metadata(&protocol)
                                } else {
                                    Vec::new()
                                },
                            ))
                            .with_member_assignment(Bytes::from(
                                if group.state() == GroupState::Stable {
                                    m.assignment.clone()
                                } else {
                                    Vec::new()
                                },
                            ))
                    })
                    .collect();
            });
            if found.is_none() {
                out.group_state = s(GroupState::Dead.name());
            }
            out
        })
        .collect();
    respond(
        ctx,
        responder,
        &DescribeGroupsResponse::default().with_groups(described),
    )
}

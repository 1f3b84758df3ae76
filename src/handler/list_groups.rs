//! ListGroups: every group this broker coordinates, optionally filtered by state (v4) and
//! by type (v5, KIP-848): every kbroker group is a `classic` one.

use bytes::Bytes;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;
use kbroker_reactor::Responder;

use super::{decode, respond, HandlerResult, RequestContext};
use crate::broker::Broker;

const GROUP_TYPE_CLASSIC: &str = "classic";

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<ListGroupsRequest>(&mut body, ctx.version, responder)?;
    let filter: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let mut listed: Vec<ListedGroup> = Vec::new();
    if !types.is_empty() && !types.iter().any(|t| t == GROUP_TYPE_CLASSIC) {
        return respond(ctx, responder, &ListGroupsResponse::default());
    }
    broker.groups.for_each_group(|id, e| {
        let state = e.group.state().name();
        if !filter.is_empty() && !filter.contains(&state.to_lowercase()) {
            return;
        }
        let mut g = ListedGroup::default()
            .with_group_id(GroupId(StrBytes::from_string(id.to_string())))
            .with_protocol_type(StrBytes::from_string(
                e.group.protocol_type().unwrap_or_default().to_string(),
            ));
        if ctx.version >= 4 {
            g.group_state = StrBytes::from_string(state.to_string());
        }
        if ctx.version >= 5 {
            g.group_type = StrBytes::from_static_str(GROUP_TYPE_CLASSIC);
        }
        listed.push(g);
    });
    listed.sort_by(|a, b| a.group_id.0.as_str().cmp(b.group_id.0.as_str()));
    respond(
        ctx,
        responder,
        &ListGroupsResponse::default().with_groups(listed),
    )
}

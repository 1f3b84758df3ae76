//! ListGroups: every group this broker coordinates, optionally filtered by state (v4).

use bytes::Bytes;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;
use kbroker_reactor::Responder;

use super::{decode, respond, HandlerResult, RequestContext};
use crate::broker::Broker;

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
    let groups = broker.groups.lock();
    let mut listed: Vec<ListedGroup> = groups
        .iter()
        .filter(|(_, e)| {
            filter.is_empty() || filter.contains(&e.group.state().name().to_lowercase())
        })
        .map(|(id, e)| {
            let mut g = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(id.clone())))
                .with_protocol_type(StrBytes::from_string(
                    e.group.protocol_type().unwrap_or_default().to_string(),
                ));
            if ctx.version >= 4 {
                g.group_state = StrBytes::from_string(e.group.state().name().to_string());
            }
            g
        })
        .collect();
    drop(groups);
    listed.sort_by(|a, b| a.group_id.0.as_str().cmp(b.group_id.0.as_str()));
    respond(
        ctx,
        responder,
        &ListGroupsResponse::default().with_groups(listed),
    )
}

//! DeleteGroups: an empty group's offsets and metadata are tombstoned and it is forgotten.

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use kafka_protocol::ResponseError;
use kbroker_coordinator::group::GroupState;
use kbroker_coordinator::offsets::OffsetsKey;
use kbroker_reactor::Responder;

use super::find_coordinator::check_coordinator;
use super::{decode, respond, HandlerResult, RequestContext};
use crate::broker::Broker;
use crate::groups::{offset_tombstones, MirrorOp};

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<DeleteGroupsRequest>(&mut body, ctx.version, responder)?;
    let coordinator = &broker.groups;
    let results = request
        .groups_names
        .iter()
        .map(|g| {
            let id = g.0.to_string();
            let code = check_coordinator(broker, &id).unwrap_or_else(|| {
                coordinator
                    .with_group(&id, |e| {
                        if e.group.state() != GroupState::Empty || !e.group.is_empty() {
                            return ResponseError::NonEmptyGroup.code();
                        }
                        let mut records = offset_tombstones(&id, e.offsets.keys());
                        records.push((OffsetsKey::Group { group: id.clone() }, None));
                        match coordinator.append(&id, records) {
                            Ok(_) => {
                                coordinator.remove_group(&id, e);
                                coordinator.mirror(MirrorOp::GroupDeleted { group: id.clone() });
                                0
                            }
                            Err(e) => {
                                log::warn!("deleting group={id} failed: {e}");
                                ResponseError::CoordinatorNotAvailable.code()
                            }
                        }
                    })
                    .unwrap_or(ResponseError::GroupIdNotFound.code())
            });
            DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(code)
        })
        .collect();
    respond(
        ctx,
        responder,
        &DeleteGroupsResponse::default().with_results(results),
    )
}

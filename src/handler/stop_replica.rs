//! StopReplica (controller → broker): stop serving partitions, deleting their logs when the
//! topic is deleted. Applied in order on the replica manager's state thread.

use bytes::Bytes;
use kafka_protocol::messages::{StopReplicaRequest, StopReplicaResponse};
use kbroker_reactor::Responder;

use super::{decode, respond_later, HandlerResult, RequestContext};
use crate::broker::Broker;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<StopReplicaRequest>(&mut body, ctx.version, responder)?;
    let send = respond_later::<StopReplicaResponse>(ctx, responder);
    broker
        .replicas
        .submit_stop_replica(request, Box::new(send), false);
    Ok(())
}

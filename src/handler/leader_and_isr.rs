//! LeaderAndIsr (controller → broker): which partitions this broker leads and follows.
//! Applied in order on the replica manager's state thread (it may read topic configs from
//! the metadata store); the response is sent when it is done.

use bytes::Bytes;
use kafka_protocol::messages::{LeaderAndIsrRequest, LeaderAndIsrResponse};
use kbroker_reactor::Responder;

use super::{decode, respond_later, HandlerResult, RequestContext};
use crate::broker::Broker;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<LeaderAndIsrRequest>(&mut body, ctx.version, responder)?;
    let version = ctx.version;
    let send = respond_later::<LeaderAndIsrResponse>(ctx, responder);
    broker.replicas.submit_leader_and_isr(
        request,
        Box::new(move |mut response| {
            // Each version carries the partition errors in one field only.
            if version >= 5 {
                response.partition_errors.clear();
            } else {
                response.topics.clear();
            }
            send(response);
        }),
        false,
    );
    Ok(())
}

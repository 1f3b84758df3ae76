//! UpdateMetadata (controller → broker): the live brokers and partition states this broker
//! answers Metadata with. Refused from an older controller epoch (STALE_CONTROLLER_EPOCH) or
//! for an older registration of this broker (STALE_BROKER_EPOCH).

use bytes::Bytes;
use kafka_protocol::messages::{UpdateMetadataRequest, UpdateMetadataResponse};
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;

use super::{decode, respond, HandlerResult, RequestContext};
use crate::broker::Broker;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<UpdateMetadataRequest>(&mut body, ctx.version, responder)?;
    let code = apply(broker, &request);
    respond(
        ctx,
        responder,
        &UpdateMetadataResponse::default().with_error_code(code),
    )
}

/// Applies an UpdateMetadata (from the wire or the local controller); the error code.
pub fn apply(broker: &Broker, request: &UpdateMetadataRequest) -> i16 {
    let mine = broker.replicas.broker_epoch();
    if request.broker_epoch >= 0 && mine >= 0 && request.broker_epoch < mine {
        return ResponseError::StaleBrokerEpoch.code();
    }
    if broker.apply_update_metadata(request) {
        0
    } else {
        ResponseError::StaleControllerEpoch.code()
    }
}

//! InitProducerId: a producer id and epoch for an idempotent producer (no transactional id).
//!
//! As Kafka does for a null transactional id: any broker answers, with a fresh producer id
//! (unique in the cluster, see `producer_ids`) and epoch 0; the transaction timeout and,
//! from v3, the producer id and epoch in the request are ignored — except that exactly one
//! of them being -1 is INVALID_REQUEST. The Java client bumps epochs itself (KIP-360: same
//! id, epoch + 1, sequence 0), which the partitions' producer state accepts. Transactions
//! are not supported: a transactional id is answered TRANSACTIONAL_ID_AUTHORIZATION_FAILED
//! (FindCoordinator for a transaction coordinator already answers COORDINATOR_NOT_AVAILABLE).
//! While no id block is available, COORDINATOR_LOAD_IN_PROGRESS, which clients retry.

use bytes::Bytes;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;

use super::{decode, respond, HandlerResult, RequestContext};
use crate::broker::Broker;
use crate::producer_ids::ProducerIdError;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<InitProducerIdRequest>(&mut body, ctx.version, responder)?;
    let mut response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let (id, epoch) = (request.producer_id.0, request.producer_epoch);
    let error = if request.transactional_id.is_some() {
        Some(ResponseError::TransactionalIdAuthorizationFailed)
    } else if (id == -1) != (epoch == -1) {
        Some(ResponseError::InvalidRequest)
    } else {
        match broker.producer_ids.next_id() {
            Ok(producer_id) => {
                response.producer_id = ProducerId(producer_id);
                response.producer_epoch = 0;
                log::debug!("producer id {producer_id} given to peer={}", ctx.peer);
                None
            }
            Err(ProducerIdError::Unavailable) => Some(ResponseError::CoordinatorLoadInProgress),
        }
    };
    if let Some(e) = error {
        response.error_code = e.code();
    }
    respond(ctx, responder, &response)
}

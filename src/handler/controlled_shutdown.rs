//! ControlledShutdown (broker → controller): a broker stopping asks the controller to move
//! its leaderships away first. Answered by the controller with the partitions the broker
//! still leads (empty when all moved); NOT_CONTROLLER from any other broker.

use bytes::Bytes;
use kafka_protocol::messages::controlled_shutdown_response::RemainingPartition;
use kafka_protocol::messages::{ControlledShutdownRequest, ControlledShutdownResponse};
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;

use super::{decode, respond_later, topic_name, HandlerResult, RequestContext};
use crate::broker::Broker;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) =
        decode::<ControlledShutdownRequest>(&mut body, ctx.version, responder)?;
    let send = respond_later::<ControlledShutdownResponse>(ctx, responder);
    let Some(controller) = broker.controller().filter(|c| c.is_active()) else {
        send(
            ControlledShutdownResponse::default()
                .with_error_code(ResponseError::NotController.code()),
        );
        return Ok(());
    };
    controller.controlled_shutdown(
        request.broker_id.0,
        request.broker_epoch,
        Box::new(move |result| {
            let response = match result {
                Ok(remaining) => ControlledShutdownResponse::default().with_remaining_partitions(
                    remaining
                        .iter()
                        .map(|tp| {
                            RemainingPartition::default()
                                .with_topic_name(topic_name(&tp.topic))
                                .with_partition_index(tp.partition)
                        })
                        .collect(),
                ),
                Err(code) => ControlledShutdownResponse::default().with_error_code(code),
            };
            send(response);
        }),
    );
    Ok(())
}

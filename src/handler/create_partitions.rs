//! CreatePartitions: grow a topic's partition count (never shrink).

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kbroker_reactor::Responder;

use super::{admin_error_code, decode, respond, HandlerResult, RequestContext};
use crate::broker::Broker;
use crate::topics;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) =
        decode::<CreatePartitionsRequest>(&mut body, ctx.version, responder)?;
    let results = request
        .topics
        .iter()
        .map(|t| {
            let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let assignments = t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            });
            if let Err(e) = topics::create_partitions(
                broker,
                &t.name.0,
                t.count,
                assignments,
                request.validate_only,
            ) {
                r.error_code = admin_error_code(&e);
                r.error_message = Some(StrBytes::from_string(e.to_string()));
            }
            r
        })
        .collect();
    respond(
        ctx,
        responder,
        &CreatePartitionsResponse::default().with_results(results),
    )
}

//! CreatePartitions: grow a topic's partition count (never shrink) — the assignment is
//! rewritten through the admin component; answered once the new partitions have leaders or
//! at `timeout_ms`.

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kbroker_reactor::Responder;

use super::{admin_error_code, decode, respond_later, topic_name, HandlerResult, RequestContext};
use crate::admin::PartitionGrowth;
use crate::broker::Broker;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) =
        decode::<CreatePartitionsRequest>(&mut body, ctx.version, responder)?;
    let items = request
        .topics
        .iter()
        .map(|t| PartitionGrowth {
            name: t.name.0.to_string(),
            count: t.count,
            assignments: t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            }),
        })
        .collect();
    let send = respond_later::<CreatePartitionsResponse>(ctx, responder);
    broker.admin.create_partitions(
        items,
        request.validate_only,
        request.timeout_ms,
        Box::new(move |outcomes| {
            let results = outcomes
                .into_iter()
                .map(|(name, outcome)| {
                    let mut r = CreatePartitionsTopicResult::default().with_name(topic_name(&name));
                    if let Err(e) = outcome {
                        r.error_code = admin_error_code(&e);
                        r.error_message = Some(StrBytes::from_string(e.to_string()));
                    }
                    r
                })
                .collect();
            send(CreatePartitionsResponse::default().with_results(results));
        }),
    );
    Ok(())
}

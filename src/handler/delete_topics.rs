//! DeleteTopics: by name (v0–6) or by topic id (v6) — marked in `/admin/delete_topics`
//! through the admin component; answered once the controller removed the topic (it is gone
//! from this broker's metadata) or at `timeout_ms`.

use bytes::Bytes;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;

use super::{admin_error_code, decode, respond_later, topic_name, HandlerResult, RequestContext};
use crate::broker::Broker;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<DeleteTopicsRequest>(&mut body, ctx.version, responder)?;
    let mut names: Vec<String> = request
        .topic_names
        .iter()
        .map(|n| n.0.to_string())
        .collect();
    let mut unknown_ids = Vec::new();
    let image = broker.metadata.image();
    for t in &request.topics {
        match (&t.name, t.topic_id) {
            (Some(n), _) => names.push(n.0.to_string()),
            (None, id) => match image
                .topics
                .values()
                .find(|m| uuid::Uuid::from_bytes(m.id) == id && !id.is_nil())
            {
                Some(m) => names.push(m.name.clone()),
                None => unknown_ids.push(id),
            },
        }
    }
    let send = respond_later::<DeleteTopicsResponse>(ctx, responder);
    broker.admin.delete_topics(
        names,
        request.timeout_ms,
        Box::new(move |outcomes| {
            let mut responses: Vec<DeletableTopicResult> = outcomes
                .into_iter()
                .map(|(name, outcome)| {
                    let mut r = DeletableTopicResult::default().with_name(Some(topic_name(&name)));
                    match outcome {
                        Ok(id) => r.topic_id = uuid::Uuid::from_bytes(id),
                        Err(e) => {
                            r.error_code = admin_error_code(&e);
                            r.error_message = Some(StrBytes::from_string(e.to_string()));
                        }
                    }
                    r
                })
                .collect();
            for id in unknown_ids {
                responses.push(
                    DeletableTopicResult::default()
                        .with_topic_id(id)
                        .with_error_code(ResponseError::UnknownTopicId.code()),
                );
            }
            send(DeleteTopicsResponse::default().with_responses(responses));
        }),
    );
    Ok(())
}

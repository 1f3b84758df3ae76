//! DeleteTopics: by name (v0–6) or by topic id (v6).

use bytes::Bytes;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;

use super::metadata::topic_name;
use super::{admin_error_code, decode, respond, HandlerResult, RequestContext};
use crate::broker::Broker;
use crate::topics;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<DeleteTopicsRequest>(&mut body, ctx.version, responder)?;
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = request
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
        .collect();
    targets.extend(
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let name = name.or_else(|| {
            broker
                .all_topics()
                .iter()
                .find(|t| uuid::Uuid::from_bytes(t.id) == id && !id.is_nil())
                .map(|t| t.name.clone())
        });
        let mut r = DeletableTopicResult::default().with_topic_id(id);
        match name {
            None => r.error_code = ResponseError::UnknownTopicId.code(),
            Some(name) => {
                r.name = Some(topic_name(&name));
                match topics::delete_topic(broker, &name) {
                    Ok(info) => r.topic_id = uuid::Uuid::from_bytes(info.id),
                    Err(e) => {
                        r.error_code = admin_error_code(&e);
                        r.error_message = Some(StrBytes::from_string(e.to_string()));
                    }
                }
            }
        }
        responses.push(r);
    }
    respond(
        ctx,
        responder,
        &DeleteTopicsResponse::default().with_responses(responses),
    )
}

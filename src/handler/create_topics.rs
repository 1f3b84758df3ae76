//! CreateTopics: validate names, partitions, replication factor, assignments and configs;
//! create (or, with validate_only, only check) each topic independently.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;

use super::describe_configs::topic_config_entries;
use super::{admin_error_code, decode, respond, HandlerResult, RequestContext};
use crate::broker::Broker;
use crate::topics::{self, AdminError, TopicSpec};

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<CreateTopicsRequest>(&mut body, ctx.version, responder)?;
    let mut seen = std::collections::HashSet::new();
    let mut results = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let name = t.name.0.to_string();
        let mut r = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        if !seen.insert(name.clone()) {
            r.error_code = ResponseError::InvalidRequest.code();
            r.error_message = Some(StrBytes::from_string(format!(
                "Create topics request from client contains duplicate topic {name}"
            )));
            results.push(r);
            continue;
        }
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            if let Some(v) = &c.value {
                configs.insert(c.name.to_string(), v.to_string());
            }
        }
        let assignments = t
            .assignments
            .iter()
            .map(|a| {
                (
                    a.partition_index,
                    a.broker_ids.iter().map(|b| b.0).collect(),
                )
            })
            .collect();
        let spec = TopicSpec {
            name: name.clone(),
            num_partitions: Some(t.num_partitions),
            replication_factor: Some(t.replication_factor),
            assignments,
            configs,
        };
        match topics::create_topic(broker, &spec, request.validate_only) {
            Ok(info) => {
                r.topic_id = uuid::Uuid::from_bytes(info.id);
                let partitions = if request.validate_only {
                    spec_partitions(broker, &spec)
                } else {
                    info.partitions.len() as i32
                };
                r.num_partitions = partitions;
                r.replication_factor = info.partitions.first().map_or(
                    broker
                        .config
                        .default_replication_factor
                        .max(spec.replication_factor.unwrap_or(-1)),
                    |p| p.replicas.len() as i16,
                );
                if ctx.version >= 5 {
                    r.configs = Some(
                        topic_config_entries(
                            &info.log_config,
                            broker.config.min_insync_replicas,
                            &info.configs,
                        )
                        .into_iter()
                        .map(|(k, v, s)| {
                            CreatableTopicConfigs::default()
                                .with_name(StrBytes::from_string(k))
                                .with_value(Some(StrBytes::from_string(v)))
                                .with_config_source(s)
                        })
                        .collect(),
                    );
                }
            }
            Err(e) => {
                if !matches!(e, AdminError::TopicExists(_)) {
                    log::info!("create topic {name} refused: {e}");
                }
                r.error_code = admin_error_code(&e);
                r.error_message = Some(StrBytes::from_string(e.to_string()));
            }
        }
        results.push(r);
    }
    respond(
        ctx,
        responder,
        &CreateTopicsResponse::default().with_topics(results),
    )
}

fn spec_partitions(broker: &Broker, spec: &TopicSpec) -> i32 {
    if !spec.assignments.is_empty() {
        return spec.assignments.len() as i32;
    }
    match spec.num_partitions {
        None | Some(-1) => broker.config.num_partitions,
        Some(n) => n,
    }
}

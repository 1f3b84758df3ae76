//! CreateTopics: validate names, partitions, replication factor, assignments and configs;
//! create (or, with validate_only, only check) each topic independently — through the admin
//! component, answered once the controller gave every partition a leader or at `timeout_ms`.

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
use super::{admin_error_code, decode, respond_later, topic_name, HandlerResult, RequestContext};
use crate::admin::{AdminError, TopicSpec};
use crate::broker::Broker;
use crate::config::topic_log_config;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<CreateTopicsRequest>(&mut body, ctx.version, responder)?;
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = Vec::new();
    let mut specs = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let name = t.name.0.to_string();
        if !seen.insert(name.clone()) {
            duplicates.push(name);
            continue;
        }
        let configs: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
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
        specs.push(TopicSpec {
            name,
            num_partitions: Some(t.num_partitions),
            replication_factor: Some(t.replication_factor),
            assignments,
            configs,
        });
    }
    let send = respond_later::<CreateTopicsResponse>(ctx, responder);
    let version = ctx.version;
    let defaults = broker.metadata.defaults().clone();
    let config = broker.config.clone();
    let dynamic = broker.dynamic_state();
    let by_name: BTreeMap<String, BTreeMap<String, String>> = specs
        .iter()
        .map(|s| (s.name.clone(), s.configs.clone()))
        .collect();
    broker.admin.create_topics(
        specs,
        request.validate_only,
        request.timeout_ms,
        Box::new(move |outcomes| {
            let mut results = Vec::new();
            for (name, outcome) in outcomes {
                let mut r = CreatableTopicResult::default()
                    .with_name(topic_name(&name))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1);
                match outcome {
                    Ok(created) => {
                        r.topic_id = uuid::Uuid::from_bytes(created.id);
                        r.num_partitions = created.partitions;
                        r.replication_factor = created.replication_factor;
                        if version >= 5 {
                            let overrides = by_name.get(&name).cloned().unwrap_or_default();
                            let log_config = topic_log_config(&defaults, &overrides)
                                .unwrap_or_else(|_| (*defaults).clone());
                            r.configs = Some(
                                topic_config_entries(&config, &dynamic, &log_config, &overrides)
                                    .into_iter()
                                    .map(|t| {
                                        CreatableTopicConfigs::default()
                                            .with_name(StrBytes::from_static_str(t.def.name))
                                            .with_value(Some(StrBytes::from_string(t.value)))
                                            .with_config_source(t.source)
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
            for name in duplicates {
                results.push(
                    CreatableTopicResult::default()
                        .with_name(topic_name(&name))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "Create topics request from client contains duplicate topic {name}"
                        )))),
                );
            }
            send(CreateTopicsResponse::default().with_topics(results));
        }),
    );
    Ok(())
}

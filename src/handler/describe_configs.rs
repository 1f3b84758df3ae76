//! DescribeConfigs: a topic's effective log configs (overrides marked as dynamic topic
//! configs) and the broker's settings.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;
use kbroker_storage::LogConfig;

use super::{decode, respond, HandlerResult, RequestContext};
use crate::broker::Broker;
use crate::config::KNOWN;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// (key, value, source) of every topic config.
pub fn topic_config_entries(
    c: &LogConfig,
    min_isr: i32,
    overrides: &BTreeMap<String, String>,
) -> Vec<(String, String, i8)> {
    let policy = match (c.cleanup_delete, c.cleanup_compact) {
        (true, true) => "compact,delete",
        (false, true) => "compact",
        _ => "delete",
    };
    let flush = |v: i64| v.to_string();
    let values: Vec<(&str, String)> = vec![
        ("cleanup.policy", policy.to_string()),
        ("retention.ms", c.retention_ms.to_string()),
        ("retention.bytes", c.retention_bytes.to_string()),
        ("segment.bytes", c.segment_bytes.to_string()),
        ("segment.ms", c.segment_ms.to_string()),
        ("segment.index.bytes", c.segment_index_bytes.to_string()),
        ("index.interval.bytes", c.index_interval_bytes.to_string()),
        ("max.message.bytes", c.max_message_bytes.to_string()),
        ("flush.messages", flush(c.flush_messages)),
        ("flush.ms", flush(c.flush_ms)),
        (
            "message.timestamp.type",
            if c.log_append_time {
                "LogAppendTime"
            } else {
                "CreateTime"
            }
            .to_string(),
        ),
        (
            "min.insync.replicas",
            overrides
                .get("min.insync.replicas")
                .cloned()
                .unwrap_or_else(|| min_isr.to_string()),
        ),
    ];
    values
        .into_iter()
        .map(|(k, v)| {
            let source = if overrides.contains_key(k) {
                SOURCE_DYNAMIC_TOPIC
            } else {
                SOURCE_DEFAULT
            };
            (k.to_string(), v, source)
        })
        .collect()
}

fn entry(version: i16, key: &str, value: &str, source: i8) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(key.to_string()))
        .with_value(Some(StrBytes::from_string(value.to_string())))
        .with_read_only(false);
    if version == 0 {
        e.is_default = source == SOURCE_DEFAULT;
    } else {
        e.config_source = source;
    }
    e
}

fn wanted(keys: &Option<Vec<StrBytes>>, key: &str) -> bool {
    keys.as_ref()
        .is_none_or(|ks| ks.is_empty() || ks.iter().any(|k| k.as_str() == key))
}

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<DescribeConfigsRequest>(&mut body, ctx.version, responder)?;
    let mut results = Vec::with_capacity(request.resources.len());
    for resource in &request.resources {
        let name = resource.resource_name.to_string();
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        match resource.resource_type {
            RESOURCE_TOPIC => match broker.topic(&name) {
                Some(info) => {
                    result.configs = topic_config_entries(
                        &info.log_config,
                        broker.config.min_insync_replicas,
                        &info.configs,
                    )
                    .iter()
                    .filter(|(k, _, _)| wanted(&resource.configuration_keys, k))
                    .map(|(k, v, s)| entry(ctx.version, k, v, *s))
                    .collect();
                }
                None => {
                    result.error_code = ResponseError::UnknownTopicOrPartition.code();
                    result.error_message = Some(StrBytes::from_string(format!(
                        "Topic '{name}' does not exist."
                    )));
                }
            },
            RESOURCE_BROKER if name.is_empty() || name == broker.config.broker_id.to_string() => {
                result.configs = broker
                    .config
                    .raw
                    .iter()
                    .filter(|(k, _)| wanted(&resource.configuration_keys, k))
                    .map(|(k, v)| {
                        let is_default = KNOWN.iter().any(|(dk, dv)| dk == k && dv == v);
                        entry(
                            ctx.version,
                            k,
                            v,
                            if is_default {
                                SOURCE_DEFAULT
                            } else {
                                SOURCE_STATIC_BROKER
                            },
                        )
                    })
                    .collect();
            }
            RESOURCE_BROKER => {
                result.error_code = ResponseError::InvalidRequest.code();
                result.error_message = Some(StrBytes::from_string(format!(
                    "Unexpected broker id, expected {} but received {name}",
                    broker.config.broker_id
                )));
            }
            other => {
                result.error_code = ResponseError::InvalidRequest.code();
                result.error_message = Some(StrBytes::from_string(format!(
                    "Unsupported resource type {other}"
                )));
            }
        }
        results.push(result);
    }
    respond(
        ctx,
        responder,
        &DescribeConfigsResponse::default().with_results(results),
    )
}

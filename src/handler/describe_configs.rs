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

use super::{decode, HandlerResult, RequestContext};
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
    // Topic configs live in the store: read on the admin thread, answered from there.
    let topics: Vec<String> = request
        .resources
        .iter()
        .filter(|r| r.resource_type == RESOURCE_TOPIC)
        .map(|r| r.resource_name.to_string())
        .collect();
    let send = super::respond_later::<DescribeConfigsResponse>(ctx, responder);
    let config = broker.config.clone();
    let defaults = broker.metadata.defaults().clone();
    let version = ctx.version;
    broker.admin.read_topic_configs(
        topics,
        Box::new(move |configs| {
            let results = request
                .resources
                .iter()
                .map(|r| describe(&config, &defaults, version, r, &configs))
                .collect();
            send(DescribeConfigsResponse::default().with_results(results));
        }),
    );
    Ok(())
}

fn describe(
    config: &crate::config::Config,
    defaults: &LogConfig,
    version: i16,
    resource: &kafka_protocol::messages::describe_configs_request::DescribeConfigsResource,
    topics: &Result<crate::admin::TopicConfigs, crate::admin::AdminError>,
) -> DescribeConfigsResult {
    let name = resource.resource_name.to_string();
    let mut result = DescribeConfigsResult::default()
        .with_resource_type(resource.resource_type)
        .with_resource_name(resource.resource_name.clone());
    match resource.resource_type {
        RESOURCE_TOPIC => match topics.as_ref().map(|t| t.get(&name).cloned().flatten()) {
            Ok(Some(overrides)) => {
                let log_config = crate::config::topic_log_config(defaults, &overrides)
                    .unwrap_or_else(|_| defaults.clone());
                result.configs =
                    topic_config_entries(&log_config, config.min_insync_replicas, &overrides)
                        .iter()
                        .filter(|(k, _, _)| wanted(&resource.configuration_keys, k))
                        .map(|(k, v, s)| entry(version, k, v, *s))
                        .collect();
            }
            Ok(None) => {
                result.error_code = ResponseError::UnknownTopicOrPartition.code();
                result.error_message = Some(StrBytes::from_string(format!(
                    "Topic '{name}' does not exist."
                )));
            }
            Err(e) => {
                result.error_code = super::admin_error_code(e);
                result.error_message = Some(StrBytes::from_string(e.to_string()));
            }
        },
        RESOURCE_BROKER if name.is_empty() || name == config.broker_id.to_string() => {
            result.configs = config
                .raw
                .iter()
                .filter(|(k, _)| wanted(&resource.configuration_keys, k))
                .map(|(k, v)| {
                    let is_default = KNOWN.iter().any(|(dk, dv)| dk == k && dv == v);
                    entry(
                        version,
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
                config.broker_id
            )));
        }
        other => {
            result.error_code = ResponseError::InvalidRequest.code();
            result.error_message = Some(StrBytes::from_string(format!(
                "Unsupported resource type {other}"
            )));
        }
    }
    result
}

//! DescribeConfigs: every Kafka topic config of a topic with its effective value and source
//! (an override is a dynamic topic config; a broker key set in the broker's config a static
//! broker config; else the default), with synonyms (v1+, when asked: the override, the broker
//! keys, the default, as Kafka lists them), type and documentation (v3+); and the broker's
//! settings.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;
use kbroker_storage::LogConfig;

use super::{decode, HandlerResult, RequestContext};
use crate::broker::Broker;
use crate::config::{Config, KNOWN};
use crate::dynamic_config::{DynamicState, SOURCE_DYNAMIC_BROKER, SOURCE_DYNAMIC_DEFAULT_BROKER};
use crate::topic_configs::{TopicConfigDef, COMPRESSION_CODECS, TOPIC_CONFIGS};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// One topic config as DescribeConfigs (and CreateTopics v5+) describe it.
pub struct TopicEntry {
    pub def: &'static TopicConfigDef,
    pub value: String,
    pub source: i8,
    /// Where the value could come from, highest precedence first: the topic's override,
    /// broker keys set in the broker's config, the default (Kafka's synonyms).
    pub synonyms: Vec<(String, String, i8)>,
}

/// Every Kafka topic config of a topic whose log config is `c` and overrides `overrides`,
/// on a broker whose static config is `config` under the dynamic layers of `dynamic`.
pub fn topic_config_entries(
    config: &Config,
    dynamic: &DynamicState,
    c: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<TopicEntry> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let mut synonyms = Vec::new();
            if let Some(v) = overrides.get(def.name) {
                synonyms.push((def.name.to_string(), v.clone(), SOURCE_DYNAMIC_TOPIC));
            }
            // Kafka's order: each layer over all the broker synonyms, highest layer first.
            for source in [SOURCE_DYNAMIC_BROKER, SOURCE_DYNAMIC_DEFAULT_BROKER] {
                for key in def.synonyms {
                    for (s, v) in dynamic.layers.all(key) {
                        if s == source {
                            synonyms.push((key.to_string(), v.to_string(), s));
                        }
                    }
                }
            }
            for key in def.synonyms {
                if let Some(v) = broker_value_set(config, key) {
                    synonyms.push((key.to_string(), v, SOURCE_STATIC_BROKER));
                }
            }
            // Kafka names the default by the first broker synonym that has a default of its
            // own (`log.retention.hours=168` for retention.ms), else by the topic key.
            let (default_name, default_value) = def
                .synonyms
                .iter()
                .find_map(|k| {
                    KNOWN
                        .iter()
                        .find(|(known, d)| known == k && !d.is_empty())
                        .map(|(known, d)| (*known, *d))
                })
                .unwrap_or((def.name, def.default));
            synonyms.push((
                default_name.to_string(),
                default_value.to_string(),
                SOURCE_DEFAULT,
            ));
            let source = synonyms[0].2;
            // The highest setting as written (a broker key's in the topic key's unit), as
            // Kafka shows it; else what the log acts on; else the default.
            let min_isr = dynamic.effective.min_insync_replicas;
            let value = synonyms
                .iter()
                .find(|(_, _, s)| *s != SOURCE_DEFAULT)
                .map(|(k, v, _)| in_ms(k, v))
                .or_else(|| log_config_value(def.name, c, min_isr))
                .unwrap_or_else(|| def.default.to_string());
            TopicEntry {
                def,
                value,
                source,
                synonyms,
            }
        })
        .collect()
}

/// A broker key's value if the broker's config sets it to something else than its default.
fn broker_value_set(config: &Config, key: &str) -> Option<String> {
    let v = config.raw.get(key).filter(|v| !v.is_empty())?;
    let default = KNOWN.iter().find(|(k, _)| *k == key).map(|(_, d)| *d);
    (default != Some(v.as_str())).then(|| v.clone())
}

/// A broker synonym's value in the topic key's unit (`log.roll.hours` → ms).
fn in_ms(key: &str, value: &str) -> String {
    let scale = if key.ends_with(".hours") {
        3_600_000
    } else if key.ends_with(".minutes") {
        60_000
    } else {
        return value.to_string();
    };
    value.trim().parse::<i64>().map_or_else(
        |_| value.to_string(),
        |v| v.saturating_mul(scale).to_string(),
    )
}

/// The value the log acts on, for the keys kbroker keeps in its log config.
fn log_config_value(key: &str, c: &LogConfig, min_isr: i32) -> Option<String> {
    Some(match key {
        "cleanup.policy" => match (c.cleanup_delete, c.cleanup_compact) {
            (true, true) => "compact,delete",
            (false, true) => "compact",
            _ => "delete",
        }
        .to_string(),
        "retention.ms" => c.retention_ms.to_string(),
        "retention.bytes" => c.retention_bytes.to_string(),
        "segment.bytes" => c.segment_bytes.to_string(),
        "segment.ms" => c.segment_ms.to_string(),
        "segment.index.bytes" => c.segment_index_bytes.to_string(),
        "index.interval.bytes" => c.index_interval_bytes.to_string(),
        "max.message.bytes" => c.max_message_bytes.to_string(),
        "flush.messages" => c.flush_messages.to_string(),
        "flush.ms" => c.flush_ms.to_string(),
        "delete.retention.ms" => c.delete_retention_ms.to_string(),
        "message.timestamp.type" => if c.log_append_time {
            "LogAppendTime"
        } else {
            "CreateTime"
        }
        .to_string(),
        "min.insync.replicas" => min_isr.to_string(),
        "compression.type" => COMPRESSION_CODECS
            .iter()
            .find(|(_, codec)| *codec == c.compression)?
            .0
            .to_string(),
        "compression.gzip.level" => c.gzip_level.to_string(),
        "compression.lz4.level" => c.lz4_level.to_string(),
        "compression.zstd.level" => c.zstd_level.to_string(),
        "message.timestamp.before.max.ms" => c.timestamp_before_max_ms.to_string(),
        "message.timestamp.after.max.ms" => c.timestamp_after_max_ms.to_string(),
        "message.timestamp.difference.max.ms" => c.timestamp_difference_max_ms.to_string(),
        _ => return None,
    })
}

/// What a DescribeConfigs request asks to be included.
#[derive(Clone, Copy)]
struct Include {
    synonyms: bool,
    documentation: bool,
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

fn topic_entry(version: i16, include: Include, t: &TopicEntry) -> DescribeConfigsResourceResult {
    let mut e = entry(version, t.def.name, &t.value, t.source);
    if version >= 1 && include.synonyms {
        e.synonyms = t
            .synonyms
            .iter()
            .map(|(k, v, s)| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_value(Some(StrBytes::from_string(v.clone())))
                    .with_source(*s)
            })
            .collect();
    }
    if version >= 3 {
        e.config_type = t.def.kind.config_type();
        if include.documentation {
            e.documentation = Some(StrBytes::from_static_str(t.def.doc));
        }
    }
    e
}

/// Where a broker key's value can come from, Kafka's way: every layer over the key's
/// synonym group (`log.retention.ms`, `.minutes`, `.hours`), highest layer first — the
/// broker's own dynamic layer (only with `per_broker`), the cluster-wide one, the static
/// config where it sets a key to something else than its default, the defaults — then
/// whatever precedes the key's own name dropped. The default resource shows only the
/// cluster-wide layer.
fn broker_synonyms(
    config: &Config,
    dynamic: &DynamicState,
    key: &str,
    per_broker: bool,
) -> Vec<DescribeConfigsSynonym> {
    let names: Vec<&str> = crate::topic_configs::for_broker_key(key)
        .map_or_else(|| vec![key], |def| def.synonyms.to_vec());
    let mut found: Vec<(&str, String, i8)> = Vec::new();
    for source in [SOURCE_DYNAMIC_BROKER, SOURCE_DYNAMIC_DEFAULT_BROKER] {
        for name in &names {
            for (s, v) in dynamic.layers.all(name) {
                if s == source {
                    found.push((name, v.to_string(), s));
                }
            }
        }
    }
    for name in &names {
        if let Some(v) = broker_value_set(config, name) {
            found.push((name, v, SOURCE_STATIC_BROKER));
        }
    }
    for name in &names {
        if let Some((_, d)) = KNOWN.iter().find(|(k, d)| k == name && !d.is_empty()) {
            found.push((name, d.to_string(), SOURCE_DEFAULT));
        }
    }
    found
        .into_iter()
        .skip_while(|(name, _, _)| *name != key)
        .filter(|(_, _, s)| per_broker || *s == SOURCE_DYNAMIC_DEFAULT_BROKER)
        .map(|(name, v, s)| {
            DescribeConfigsSynonym::default()
                .with_name(StrBytes::from_string(name.to_string()))
                .with_value(Some(StrBytes::from_string(v)))
                .with_source(s)
        })
        .collect()
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
    let dynamic = broker.dynamic_state();
    let defaults = broker.metadata.defaults();
    let version = ctx.version;
    let include = Include {
        synonyms: request.include_synonyms,
        documentation: request.include_documentation,
    };
    broker.admin.read_topic_configs(
        topics,
        Box::new(move |configs| {
            let results = request
                .resources
                .iter()
                .map(|r| describe(&config, &dynamic, &defaults, version, include, r, &configs))
                .collect();
            send(DescribeConfigsResponse::default().with_results(results));
        }),
    );
    Ok(())
}

fn describe(
    config: &crate::config::Config,
    dynamic: &DynamicState,
    defaults: &LogConfig,
    version: i16,
    include: Include,
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
                result.configs = topic_config_entries(config, dynamic, &log_config, &overrides)
                    .iter()
                    .filter(|t| wanted(&resource.configuration_keys, t.def.name))
                    .map(|t| topic_entry(version, include, t))
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
        // The cluster-wide dynamic layer alone, as Kafka describes the default resource.
        RESOURCE_BROKER if name.is_empty() => {
            result.configs = dynamic
                .layers
                .cluster_default
                .iter()
                .filter(|(k, _)| wanted(&resource.configuration_keys, k))
                .map(|(k, v)| {
                    let mut e = entry(version, k, v, SOURCE_DYNAMIC_DEFAULT_BROKER);
                    if version >= 1 && include.synonyms {
                        e.synonyms = broker_synonyms(config, dynamic, k, false);
                    }
                    e
                })
                .collect();
        }
        RESOURCE_BROKER if name == config.broker_id.to_string() => {
            result.configs = dynamic
                .effective
                .raw
                .iter()
                .filter(|(k, _)| wanted(&resource.configuration_keys, k))
                .map(|(k, v)| {
                    let synonyms = broker_synonyms(config, dynamic, k, true);
                    let source = synonyms.first().map_or(SOURCE_DEFAULT, |s| s.source);
                    let mut e = entry(version, k, v, source);
                    e.read_only = !crate::dynamic_config::is_dynamic(k);
                    if version >= 1 && include.synonyms {
                        e.synonyms = synonyms;
                    }
                    e
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

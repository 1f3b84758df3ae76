//! AlterConfigs and IncrementalAlterConfigs (`kafka-configs --alter`, the admin clients'
//! `alterConfigs` / `incrementalAlterConfigs`) for topics, the way a ZooKeeper-mode Kafka
//! does it: the new overrides are checked with Kafka's rules for every key, written to
//! `/config/topics/<topic>`, and announced under `/config/changes`; every broker (this one
//! included) reads the topic's config again when it sees the notification and applies it
//! to its logs (within a second).
//!
//! AlterConfigs replaces a topic's overrides with the ones given; IncrementalAlterConfigs
//! applies SET, DELETE, APPEND and SUBTRACT (the last two for list-typed keys only, from the
//! current value or the default). Errors per resource, as Kafka answers them: an unknown
//! topic UNKNOWN_TOPIC_OR_PARTITION, a bad key or value INVALID_CONFIG naming the key, a key
//! named twice INVALID_REQUEST. BROKER resources change the dynamic broker configs
//! (`/config/brokers/<default>` for the name `""`, `/config/brokers/<id>` for this broker;
//! see `crate::dynamic_config`), announced the same way. `validate_only` checks without
//! writing.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_coordinator::{cluster, MetadataStore};
use kbroker_reactor::Responder;
use kbroker_storage::LogConfig;

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{decode, respond_later, HandlerResult, RequestContext};
use crate::broker::Broker;
use crate::config::{Config, KNOWN};
use crate::dynamic_config;
use crate::topic_configs::{self, Kind};

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// One resource's requested change, independent of the API.
struct Change {
    resource_type: i8,
    name: String,
    /// (key, operation, value); AlterConfigs' entries are SETs on an emptied config.
    ops: Vec<(String, i8, Option<String>)>,
    replace: bool,
}

impl Change {
    fn new<'a>(
        resource_type: i8,
        name: &StrBytes,
        ops: impl Iterator<Item = (&'a StrBytes, i8, &'a Option<StrBytes>)>,
        replace: bool,
    ) -> Change {
        Change {
            resource_type,
            name: name.to_string(),
            ops: ops
                .map(|(k, op, v)| (k.to_string(), op, v.as_ref().map(|v| v.to_string())))
                .collect(),
            replace,
        }
    }
}

/// One resource's answer: (error, message).
type Outcome = (i16, Option<String>);

/// The per-resource entries of either API's response (two generated types, same fields).
macro_rules! resource_responses {
    ($entry:ty, $outcomes:expr) => {
        $outcomes
            .into_iter()
            .map(|(t, name, (code, message)): (i8, String, Outcome)| {
                <$entry>::default()
                    .with_resource_type(t)
                    .with_resource_name(StrBytes::from_string(name))
                    .with_error_code(code)
                    .with_error_message(message.map(StrBytes::from_string))
            })
            .collect()
    };
}

pub fn handle_incremental(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) =
        decode::<IncrementalAlterConfigsRequest>(&mut body, ctx.version, responder)?;
    let changes: Vec<Change> = request
        .resources
        .iter()
        .map(|r| {
            let ops = r
                .configs
                .iter()
                .map(|c| (&c.name, c.config_operation, &c.value));
            Change::new(r.resource_type, &r.resource_name, ops, false)
        })
        .collect();
    let send = respond_later::<IncrementalAlterConfigsResponse>(ctx, responder);
    run(broker, changes, request.validate_only, move |outcomes| {
        use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
        let responses = resource_responses!(AlterConfigsResourceResponse, outcomes);
        send(IncrementalAlterConfigsResponse::default().with_responses(responses));
    });
    Ok(())
}

pub fn handle_alter(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<AlterConfigsRequest>(&mut body, ctx.version, responder)?;
    // AlterConfigs replaces the overrides: SETs on an emptied config.
    let changes: Vec<Change> = request
        .resources
        .iter()
        .map(|r| {
            let ops = r.configs.iter().map(|c| (&c.name, OP_SET, &c.value));
            Change::new(r.resource_type, &r.resource_name, ops, true)
        })
        .collect();
    let send = respond_later::<AlterConfigsResponse>(ctx, responder);
    run(broker, changes, request.validate_only, move |outcomes| {
        use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
        let responses = resource_responses!(AlterConfigsResourceResponse, outcomes);
        send(AlterConfigsResponse::default().with_responses(responses));
    });
    Ok(())
}

/// Applies `changes` on the admin thread (the store is not touched on a handler thread) and
/// gives `reply` one outcome per resource, in order.
fn run(
    broker: &Broker,
    changes: Vec<Change>,
    validate_only: bool,
    reply: impl FnOnce(Vec<(i8, String, Outcome)>) + Send + 'static,
) {
    let defaults = broker.metadata.defaults();
    let static_config = broker.config.clone();
    broker.admin.with_store(Box::new(move |store| {
        let outcomes = changes
            .iter()
            .map(|c| {
                let outcome = match store {
                    None => (
                        ResponseError::RequestTimedOut.code(),
                        Some("the broker's admin queue is full".to_string()),
                    ),
                    Some(store) => match c.resource_type {
                        RESOURCE_BROKER => apply_broker(store, &static_config, c, validate_only),
                        _ => apply(store, &defaults, c, validate_only),
                    },
                };
                (c.resource_type, c.name.clone(), outcome)
            })
            .collect();
        reply(outcomes);
    }));
}

fn apply(
    store: &dyn MetadataStore,
    defaults: &LogConfig,
    change: &Change,
    validate_only: bool,
) -> Outcome {
    let error = |e: ResponseError, m: String| (e.code(), Some(m));
    match change.resource_type {
        RESOURCE_TOPIC => {}
        other => {
            return error(
                ResponseError::InvalidRequest,
                format!("Unsupported resource type {other}"),
            )
        }
    }
    let topic = &change.name;
    let current = match cluster::read_topic(store, topic) {
        Ok(Some((_, config))) => config,
        Ok(None) => {
            return error(
                ResponseError::UnknownTopicOrPartition,
                format!("Topic {topic} does not exist"),
            )
        }
        Err(e) => return error(ResponseError::UnknownServerError, e.to_string()),
    };
    if let Some(outcome) = duplicate_keys(change) {
        return outcome;
    }
    let mut overrides = if change.replace {
        BTreeMap::new()
    } else {
        current.config.clone()
    };
    for (key, op, value) in &change.ops {
        let applied = topic_configs::find(key)
            .ok_or_else(|| format!("unknown config key {key}"))
            .and_then(|def| {
                let is_list = matches!(def.kind, Kind::ListOf(_) | Kind::ThrottledReplicas);
                let list_default = is_list.then_some(def.default);
                apply_op(&mut overrides, key, *op, value.as_deref(), list_default)
            });
        if let Err(m) = applied {
            return error(ResponseError::InvalidConfig, m);
        }
    }
    if let Err(e) = crate::config::topic_log_config(defaults, &overrides) {
        return error(ResponseError::InvalidConfig, e.to_string());
    }
    if validate_only || overrides == current.config {
        return (0, None);
    }
    let config = kbroker_coordinator::layout::EntityConfig { config: overrides };
    match cluster::change_topic_config(store, topic, &config) {
        Ok(()) => {
            log::info!("topic {topic}: config overrides now {:?}", config.config);
            (0, None)
        }
        Err(e) => error(ResponseError::UnknownServerError, e.to_string()),
    }
}

/// A key named twice in one resource: INVALID_REQUEST, as Kafka answers it.
fn duplicate_keys(change: &Change) -> Option<Outcome> {
    let mut keys: Vec<&str> = change.ops.iter().map(|(k, _, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.windows(2).find(|w| w[0] == w[1]).map(|w| {
        (
            ResponseError::InvalidRequest.code(),
            Some(format!("Error due to duplicate config keys: {}", w[0])),
        )
    })
}

/// A BROKER resource: `""` is the cluster-wide layer (`/config/brokers/<default>`), this
/// broker's id its own layer (another id INVALID_REQUEST, as Kafka: the admin client
/// sends a broker's resource to that broker). Only keys kbroker changes at run time are
/// taken ([`crate::dynamic_config`]); the layers together must make a valid config.
fn apply_broker(
    store: &dyn MetadataStore,
    static_config: &Config,
    change: &Change,
    validate_only: bool,
) -> Outcome {
    let error = |e: ResponseError, m: String| (e.code(), Some(m));
    let name = &change.name;
    let broker_id = static_config.broker_id;
    let per_broker = match name.parse::<i32>() {
        _ if name.is_empty() => false,
        Ok(id) if id == broker_id => true,
        Ok(_) => {
            return error(
                ResponseError::InvalidRequest,
                format!("Unexpected broker id, expected {broker_id}, but received {name}"),
            )
        }
        Err(_) => {
            return error(
                ResponseError::InvalidRequest,
                format!("Broker id must be an integer, but it is: {name}"),
            )
        }
    };
    if let Some(outcome) = duplicate_keys(change) {
        return outcome;
    }
    let mut layers = match dynamic_config::Layers::read(store, broker_id) {
        Ok(l) => l,
        Err(e) => return error(ResponseError::UnknownServerError, e.to_string()),
    };
    let layer = if per_broker {
        &mut layers.per_broker
    } else {
        &mut layers.cluster_default
    };
    let before = layer.clone();
    if change.replace {
        layer.clear();
    }
    let invalid = |m: String| {
        error(
            ResponseError::InvalidConfig,
            format!(
                "Invalid config value for resource ConfigResource(type=BROKER, name='{name}'): {m}"
            ),
        )
    };
    for (key, op, value) in &change.ops {
        let list_default = topic_configs::for_broker_key(key)
            .filter(|def| matches!(def.kind, Kind::ListOf(_)))
            .map(|_| KNOWN.iter().find(|(k, _)| k == key).map_or("", |(_, d)| *d));
        if let Err(m) = apply_op(layer, key, *op, value.as_deref(), list_default) {
            return invalid(m);
        }
    }
    let keys: Vec<&str> = layer.keys().map(String::as_str).collect();
    if let Some(m) = dynamic_config::refused(&keys) {
        return invalid(m);
    }
    let updated = layer.clone();
    if let Err(e) = dynamic_config::effective(static_config, &layers) {
        return invalid(e.to_string());
    }
    if validate_only || updated == before {
        return (0, None);
    }
    let entity = dynamic_config::entity_path(per_broker.then_some(broker_id));
    let config = kbroker_coordinator::layout::EntityConfig { config: updated };
    match cluster::change_entity_config(store, &entity, &config) {
        Ok(()) => {
            log::info!("dynamic broker config {entity}: now {:?}", config.config);
            (0, None)
        }
        Err(e) => error(ResponseError::UnknownServerError, e.to_string()),
    }
}

/// One incremental operation on a config map; `list_default` is the value APPEND and
/// SUBTRACT start from when the key is list-typed (None: the key is not, and they are
/// refused). The error names the key.
fn apply_op(
    overrides: &mut BTreeMap<String, String>,
    key: &str,
    op: i8,
    value: Option<&str>,
    list_default: Option<&str>,
) -> Result<(), String> {
    let is_list = list_default.is_some();
    match op {
        OP_SET => {
            let v = value.ok_or_else(|| format!("Null value not supported for : {key}"))?;
            overrides.insert(key.to_string(), v.to_string());
        }
        OP_DELETE => {
            overrides.remove(key);
        }
        OP_APPEND | OP_SUBTRACT if !is_list => {
            return Err(format!(
                "Config value append/subtract is not allowed for config key: {key}"
            ));
        }
        OP_APPEND | OP_SUBTRACT => {
            let current = overrides
                .get(key)
                .map(String::as_str)
                .or(list_default)
                .unwrap_or("");
            let mut items: Vec<String> = split_list(current);
            let given = split_list(value.unwrap_or(""));
            if op == OP_APPEND {
                for v in given {
                    if !items.contains(&v) {
                        items.push(v);
                    }
                }
            } else {
                items.retain(|v| !given.contains(v));
            }
            overrides.insert(key.to_string(), items.join(","));
        }
        other => return Err(format!("unknown config operation {other} for {key}")),
    }
    Ok(())
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apply_op` for a topic key, as `apply` calls it.
    fn topic_op(
        o: &mut BTreeMap<String, String>,
        key: &str,
        op: i8,
        value: Option<&str>,
    ) -> Result<(), String> {
        let def = topic_configs::find(key).ok_or_else(|| format!("unknown config key {key}"))?;
        let list = matches!(def.kind, Kind::ListOf(_)).then_some(def.default);
        apply_op(o, key, op, value, list)
    }

    #[test]
    fn incremental_operations_as_kafka_applies_them() {
        let mut o = BTreeMap::new();
        topic_op(&mut o, "retention.ms", OP_SET, Some("1000")).unwrap();
        assert_eq!(o["retention.ms"], "1000");
        topic_op(&mut o, "retention.ms", OP_DELETE, None).unwrap();
        assert!(o.is_empty());
        // APPEND starts from the default ("delete") when there is no override.
        topic_op(&mut o, "cleanup.policy", OP_APPEND, Some("compact")).unwrap();
        assert_eq!(o["cleanup.policy"], "delete,compact");
        topic_op(&mut o, "cleanup.policy", OP_APPEND, Some("compact")).unwrap();
        assert_eq!(o["cleanup.policy"], "delete,compact", "no duplicates");
        topic_op(&mut o, "cleanup.policy", OP_SUBTRACT, Some("delete")).unwrap();
        assert_eq!(o["cleanup.policy"], "compact");
        assert!(topic_op(&mut o, "retention.ms", OP_APPEND, Some("1")).is_err());
        assert!(topic_op(&mut o, "no.such.key", OP_SET, Some("1")).is_err());
        assert!(topic_op(&mut o, "retention.ms", OP_SET, None).is_err());
        assert!(topic_op(&mut o, "retention.ms", 9, Some("1")).is_err());
    }
}

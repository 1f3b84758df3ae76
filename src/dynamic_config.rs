//! Dynamic broker configs, as a ZooKeeper-mode Kafka keeps them: `/config/brokers/<id>`
//! (one broker) and `/config/brokers/<default>` (every broker), written by AlterConfigs /
//! IncrementalAlterConfigs on BROKER resources (`kafka-configs --entity-type brokers`) and
//! announced under `/config/changes`. A broker's effective config is its static config
//! (file and `--override`s) under the cluster-wide layer under its own layer; it is read at
//! start and again whenever a notification names either layer.
//!
//! Which keys: the broker-level defaults of topic configs (Kafka's DynamicLogConfig —
//! `log.retention.ms`, `log.segment.bytes`, `log.cleanup.policy`, `compression.type`,
//! `message.max.bytes`, `min.insync.replicas`, `unclean.leader.election.enable`, ...),
//! which kbroker applies at once to every topic that does not override them — and the
//! replication throttles (`leader.replication.throttled.rate`,
//! `follower.replication.throttled.rate`; src/replication_quota.rs). The other
//! keys Kafka can change at run time (thread pools, listeners, connection limits, the
//! cleaner's threads and buffers) are refused with INVALID_CONFIG: kbroker would not act on
//! them until a restart, and the thread-model settings are fixed by design for the life of
//! the process. Keys no broker can change (e.g. `broker.id`) are refused as Kafka refuses
//! them.

use std::collections::BTreeMap;
use std::sync::Arc;

use kbroker_coordinator::{cluster, MetadataStore, StoreError};

use crate::config::{Config, ConfigError};

/// The entity name of the cluster-wide layer (Kafka's ZooKeeperInternals.DEFAULT_STRING).
pub const DEFAULT_ENTITY: &str = "<default>";

/// The store path (under `/config`) of a broker's own layer, or of the default layer.
pub fn entity_path(broker: Option<i32>) -> String {
    match broker {
        Some(id) => format!("brokers/{id}"),
        None => format!("brokers/{DEFAULT_ENTITY}"),
    }
}

/// Whether kbroker changes `key` at run time: a broker synonym of a topic config, except
/// `log.message.format.version` (Kafka's one non-reconfigurable log config), and the
/// replication throttles.
pub fn is_dynamic(key: &str) -> bool {
    REPLICATION_THROTTLES.contains(&key)
        || (key != "log.message.format.version"
            && crate::topic_configs::for_broker_key(key).is_some())
}

/// Kafka's broker-level throttle keys, which `kafka-reassign-partitions --throttle` sets
/// and `--verify` clears. The log-dir one is taken and kept, with nothing to throttle:
/// kbroker moves no replica between its log dirs.
const REPLICATION_THROTTLES: &[&str] = &[
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
    "replica.alter.log.dirs.io.max.bytes.per.second",
];

/// Kafka's dynamic broker keys that kbroker does not change at run time (refused with a
/// reason of their own, so a user knows Kafka would take them).
const KAFKA_ONLY_DYNAMIC: &[&str] = &[
    "num.io.threads",
    "num.network.threads",
    "num.replica.fetchers",
    "num.recovery.threads.per.data.dir",
    "background.threads",
    "max.connections",
    "max.connections.per.ip",
    "max.connections.per.ip.overrides",
    "max.connection.creation.rate",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "log.cleaner.threads",
    "log.cleaner.io.max.bytes.per.second",
    "log.cleaner.dedupe.buffer.size",
    "log.cleaner.io.buffer.size",
    "log.cleaner.io.buffer.load.factor",
    "log.cleaner.backoff.ms",
    "producer.id.expiration.ms",
    "metric.reporters",
    "sasl.enabled.mechanisms",
];

/// Why `keys` cannot be set dynamically, if any of them cannot (Kafka's message, with
/// kbroker's reason for the keys Kafka would take).
pub fn refused(keys: &[&str]) -> Option<String> {
    let not_dynamic: Vec<&str> = keys.iter().copied().filter(|k| !is_dynamic(k)).collect();
    if not_dynamic.is_empty() {
        return None;
    }
    let (kafka_would, never): (Vec<&str>, Vec<&str>) = not_dynamic
        .iter()
        .partition(|k| KAFKA_ONLY_DYNAMIC.contains(k) || k.starts_with("listener.name."));
    Some(if never.is_empty() {
        format!(
            "kbroker cannot update these configs dynamically (set them in the broker's \
             config and restart): Set({})",
            kafka_would.join(", ")
        )
    } else {
        format!(
            "Cannot update these configs dynamically: Set({})",
            never.join(", ")
        )
    })
}

/// The two dynamic layers as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layers {
    pub per_broker: BTreeMap<String, String>,
    pub cluster_default: BTreeMap<String, String>,
}

impl Layers {
    /// Reads both layers of `broker_id` from the store.
    pub fn read(store: &dyn MetadataStore, broker_id: i32) -> Result<Layers, StoreError> {
        Ok(Layers {
            per_broker: cluster::read_entity_config(store, &entity_path(Some(broker_id)))?.config,
            cluster_default: cluster::read_entity_config(store, &entity_path(None))?.config,
        })
    }

    /// The layer a key's value comes from: Kafka's config source (2 per broker, 3 the
    /// cluster default) and the value.
    pub fn lookup(&self, key: &str) -> Option<(i8, &str)> {
        self.per_broker
            .get(key)
            .map(|v| (SOURCE_DYNAMIC_BROKER, v.as_str()))
            .or_else(|| {
                self.cluster_default
                    .get(key)
                    .map(|v| (SOURCE_DYNAMIC_DEFAULT_BROKER, v.as_str()))
            })
    }

    /// Every layer that sets `key`, highest precedence first.
    pub fn all(&self, key: &str) -> Vec<(i8, &str)> {
        let mut out = Vec::new();
        if let Some(v) = self.per_broker.get(key) {
            out.push((SOURCE_DYNAMIC_BROKER, v.as_str()));
        }
        if let Some(v) = self.cluster_default.get(key) {
            out.push((SOURCE_DYNAMIC_DEFAULT_BROKER, v.as_str()));
        }
        out
    }
}

pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;

/// `static_config` with `layers` on top (cluster default, then the broker's own), checked
/// as the broker checks its config at start; the error names the key.
pub fn effective(static_config: &Config, layers: &Layers) -> Result<Config, ConfigError> {
    let mut raw = static_config.raw.clone();
    for layer in [&layers.cluster_default, &layers.per_broker] {
        for (k, v) in layer {
            if !is_dynamic(k) {
                return Err(ConfigError::Invalid {
                    key: k.clone(),
                    reason: "cannot be updated dynamically".to_string(),
                });
            }
            raw.insert(k.clone(), v.clone());
        }
    }
    Config::from_map(raw)
}

/// The dynamic layers in force and the config they make.
#[derive(Debug, Clone)]
pub struct DynamicState {
    pub layers: Layers,
    pub effective: Arc<Config>,
}

impl DynamicState {
    /// No dynamic layers: the static config.
    pub fn none(static_config: &Config) -> DynamicState {
        DynamicState {
            layers: Layers::default(),
            effective: Arc::new(static_config.clone()),
        }
    }

    /// The state `layers` make, or the static config (logged) if the stored layers are not
    /// a valid config — as Kafka ignores an invalid dynamic config.
    pub fn from_layers(static_config: &Config, layers: Layers) -> DynamicState {
        match effective(static_config, &layers) {
            Ok(config) => DynamicState {
                layers,
                effective: Arc::new(config),
            },
            Err(e) => {
                log::error!("ignoring the dynamic broker config in the store ({e}): {layers:?}");
                DynamicState::none(static_config)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(per: &[(&str, &str)], default: &[(&str, &str)]) -> Layers {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Layers {
            per_broker: map(per),
            cluster_default: map(default),
        }
    }

    #[test]
    fn layers_stack_over_the_static_config() {
        let base = Config::load(None, &["log.retention.ms=1000".to_string()]).unwrap();
        let l = layers(
            &[("log.segment.bytes", "2097152")],
            &[
                ("log.segment.bytes", "1048576"),
                ("min.insync.replicas", "2"),
            ],
        );
        let c = effective(&base, &l).unwrap();
        assert_eq!(
            c.log_segment_bytes, 2_097_152,
            "the broker's own layer wins"
        );
        assert_eq!(c.min_insync_replicas, 2, "the cluster default applies");
        assert_eq!(c.log_retention_ms, 1000, "the static config underneath");
        assert_eq!(l.lookup("log.segment.bytes"), Some((2, "2097152")));
        assert_eq!(l.lookup("min.insync.replicas"), Some((3, "2")));
        assert_eq!(l.all("log.segment.bytes").len(), 2);
        assert!(effective(&base, &layers(&[("log.segment.bytes", "x")], &[])).is_err());
        assert!(effective(&base, &layers(&[("broker.id", "3")], &[])).is_err());
        let bad = DynamicState::from_layers(&base, layers(&[("broker.id", "3")], &[]));
        assert_eq!(
            bad.layers,
            Layers::default(),
            "an invalid stored layer is ignored"
        );
    }

    #[test]
    fn which_keys_are_dynamic() {
        for k in [
            "log.retention.ms",
            "log.retention.hours",
            "log.cleanup.policy",
            "compression.type",
            "message.max.bytes",
            "min.insync.replicas",
            "unclean.leader.election.enable",
            "log.cleaner.min.cleanable.ratio",
            "leader.replication.throttled.rate",
            "follower.replication.throttled.rate",
        ] {
            assert!(is_dynamic(k), "{k}");
        }
        for k in [
            "broker.id",
            "num.io.threads",
            "log.message.format.version",
            "log.dirs",
        ] {
            assert!(!is_dynamic(k), "{k}");
        }
        assert!(refused(&["log.retention.ms"]).is_none());
        assert!(refused(&["num.io.threads"])
            .unwrap()
            .starts_with("kbroker cannot"));
        assert!(refused(&["broker.id", "num.io.threads"])
            .unwrap()
            .starts_with("Cannot update these configs dynamically: Set(broker.id)"));
    }
}

//! The broker's view of the cluster: live brokers, the controller, every topic's partitions
//! (leader, leader epoch, replicas, ISR) — what UpdateMetadata from the controller fills,
//! and what Metadata, FindCoordinator and DescribeCluster answer from. Plus topic configs,
//! read from `/config/topics/<t>` by the admin and controller threads.
//!
//! Copy-on-write: readers take an `Arc` snapshot (no lock held while answering); the one
//! writer (the UpdateMetadata path) swaps in a new image and then wakes everything waiting
//! for the cluster to change (admin requests answered when the controller has acted).
//! Thread safe.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use std::sync::atomic::{AtomicI32, Ordering};

use kafka_protocol::messages::UpdateMetadataRequest;
use kbroker_replication::purgatory::Purgatory;
use kbroker_storage::LogConfig;

/// One live broker, as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerNode {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// One partition as the controller last published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMeta {
    pub index: i32,
    /// -1: no leader (offline).
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    /// The state znode's version (Kafka's partition epoch).
    pub partition_epoch: i32,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: Vec<PartitionMeta>,
    pub internal: bool,
}

impl TopicMeta {
    pub fn partition(&self, index: i32) -> Option<&PartitionMeta> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
            .filter(|p| p.index == index)
    }
}

/// Everything at one moment.
#[derive(Debug, Clone, Default)]
pub struct ClusterImage {
    pub brokers: BTreeMap<i32, BrokerNode>,
    /// -1 while unknown.
    pub controller_id: i32,
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    /// Topic id -> name, for requests naming topics by id (Fetch v13+ does on every
    /// request); kept by [`MetadataCache`] with `topics`. Topics without an id are not in it.
    topic_names: HashMap<[u8; 16], String>,
}

impl ClusterImage {
    /// The topic whose id is `id`; never a topic without one (the all-zero id).
    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<&Arc<TopicMeta>> {
        self.topics.get(self.topic_names.get(id)?)
    }

    fn index_topic_ids(&mut self) {
        self.topic_names = self
            .topics
            .values()
            .filter(|t| t.id != [0; 16])
            .map(|t| (t.id, t.name.clone()))
            .collect();
    }
}

/// A topic's config overrides and the log config they make.
#[derive(Debug, Clone)]
pub struct TopicConfig {
    pub overrides: BTreeMap<String, String>,
    pub log_config: LogConfig,
}

/// The leader of a partition being deleted, in UpdateMetadata (Kafka's LeaderDuringDelete).
pub const LEADER_DURING_DELETE: i32 = -2;

/// Key of the waiters woken on every change.
pub const CHANGED: &str = "cluster";

pub struct MetadataCache {
    image: RwLock<Arc<ClusterImage>>,
    /// The highest controller epoch an update came with.
    controller_epoch: AtomicI32,
    configs: RwLock<BTreeMap<String, Arc<TopicConfig>>>,
    /// Every topic's log config before its overrides (static and dynamic broker configs).
    defaults: RwLock<Arc<LogConfig>>,
    /// Operations waiting for the cluster to change (admin requests, auto-creation).
    pub waiters: Purgatory<&'static str>,
}

/// Waiting admin operations at most.
pub const METADATA_WAITERS_MAX: usize = 10_000;

impl MetadataCache {
    pub fn new(defaults: LogConfig) -> MetadataCache {
        MetadataCache {
            image: RwLock::new(Arc::new(ClusterImage {
                controller_id: -1,
                ..ClusterImage::default()
            })),
            controller_epoch: AtomicI32::new(-1),
            configs: RwLock::new(BTreeMap::new()),
            defaults: RwLock::new(Arc::new(defaults)),
            waiters: Purgatory::new("metadata", METADATA_WAITERS_MAX),
        }
    }

    pub fn image(&self) -> Arc<ClusterImage> {
        Arc::clone(&self.image.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn topic(&self, name: &str) -> Option<Arc<TopicMeta>> {
        self.image().topics.get(name).cloned()
    }

    pub fn brokers(&self) -> Vec<BrokerNode> {
        self.image().brokers.values().cloned().collect()
    }

    /// Replaces the whole image (the controller's full UpdateMetadata).
    pub fn replace(&self, mut image: ClusterImage) {
        image.index_topic_ids();
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(image);
        self.waiters.check_and_complete(&CHANGED);
    }

    /// Applies an incremental update: brokers and controller replaced, the given topics'
    /// partitions updated (and topics listed in `deleted` removed).
    pub fn update(
        &self,
        brokers: BTreeMap<i32, BrokerNode>,
        controller_id: i32,
        topics: Vec<TopicMeta>,
        deleted: &[String],
    ) {
        {
            let mut guard = self.image.write().unwrap_or_else(|p| p.into_inner());
            let mut next = (**guard).clone();
            next.brokers = brokers;
            next.controller_id = controller_id;
            for name in deleted {
                next.topics.remove(name);
            }
            for t in topics {
                let merged = match next.topics.get(&t.name) {
                    Some(old) => merge_partitions(old, t),
                    None => t,
                };
                next.topics.insert(merged.name.clone(), Arc::new(merged));
            }
            next.index_topic_ids();
            *guard = Arc::new(next);
        }
        self.waiters.check_and_complete(&CHANGED);
    }

    /// Applies the controller's UpdateMetadata; `listener` picks the endpoint clients are
    /// given. A request from an older controller epoch is refused (returns false).
    pub fn apply_update_metadata(&self, request: &UpdateMetadataRequest, listener: &str) -> bool {
        if request.controller_epoch < self.controller_epoch.load(Ordering::Acquire) {
            return false;
        }
        self.controller_epoch
            .fetch_max(request.controller_epoch, Ordering::AcqRel);
        let brokers: BTreeMap<i32, BrokerNode> = request
            .live_brokers
            .iter()
            .filter_map(|b| {
                let e = b
                    .endpoints
                    .iter()
                    .find(|e| e.listener.as_str() == listener)
                    .or_else(|| b.endpoints.first())?;
                Some((
                    b.id.0,
                    BrokerNode {
                        id: b.id.0,
                        host: e.host.to_string(),
                        port: e.port,
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                    },
                ))
            })
            .collect();
        let mut topics = Vec::new();
        let mut deleted = Vec::new();
        for t in &request.topic_states {
            let name = t.topic_name.0.to_string();
            if t.partition_states
                .iter()
                .any(|p| p.leader.0 == LEADER_DURING_DELETE)
            {
                deleted.push(name);
                continue;
            }
            let partitions = t
                .partition_states
                .iter()
                .map(|p| PartitionMeta {
                    index: p.partition_index,
                    leader: p.leader.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas.iter().map(|b| b.0).collect(),
                    isr: p.isr.iter().map(|b| b.0).collect(),
                    offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                    partition_epoch: p.zk_version,
                })
                .collect();
            topics.push(TopicMeta {
                internal: name.starts_with("__"),
                name,
                id: *t.topic_id.as_bytes(),
                partitions,
            });
        }
        for name in &deleted {
            self.remove_topic_config(name);
        }
        self.update(brokers, request.controller_id.0, topics, &deleted);
        true
    }

    /// The log config of `topic` (broker defaults when it has no overrides known).
    pub fn topic_config(&self, topic: &str) -> Arc<TopicConfig> {
        self.configs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .cloned()
            .unwrap_or_else(|| {
                Arc::new(TopicConfig {
                    overrides: BTreeMap::new(),
                    log_config: (*self.defaults()).clone(),
                })
            })
    }

    pub fn set_topic_config(&self, topic: &str, config: TopicConfig) {
        self.configs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_string(), Arc::new(config));
    }

    pub fn remove_topic_config(&self, topic: &str) {
        self.configs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(topic);
    }

    pub fn defaults(&self) -> Arc<LogConfig> {
        Arc::clone(&self.defaults.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// New defaults (a dynamic broker config changed): every cached topic config is
    /// rebuilt on them; a topic whose overrides no longer make a valid config keeps its
    /// old one (logged). Returns the topics, for their logs to be updated.
    pub fn set_defaults(&self, defaults: LogConfig) -> Vec<String> {
        let defaults = Arc::new(defaults);
        *self.defaults.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&defaults);
        let mut configs = self.configs.write().unwrap_or_else(|p| p.into_inner());
        for (topic, config) in configs.iter_mut() {
            match crate::config::topic_log_config(&defaults, &config.overrides) {
                Ok(log_config) => {
                    *config = Arc::new(TopicConfig {
                        overrides: config.overrides.clone(),
                        log_config,
                    })
                }
                Err(e) => {
                    log::error!("topic {topic}: keeps its config, the new one is invalid: {e}")
                }
            }
        }
        configs.keys().cloned().collect()
    }
}

/// `update`'s partitions replace the old ones at their index; others stay.
fn merge_partitions(old: &TopicMeta, new: TopicMeta) -> TopicMeta {
    let mut by_index: BTreeMap<i32, PartitionMeta> = old
        .partitions
        .iter()
        .map(|p| (p.index, p.clone()))
        .collect();
    for p in new.partitions {
        by_index.insert(p.index, p);
    }
    TopicMeta {
        name: new.name,
        id: if new.id == [0; 16] { old.id } else { new.id },
        partitions: by_index.into_values().collect(),
        internal: new.internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, id: [u8; 16]) -> TopicMeta {
        TopicMeta {
            name: name.to_string(),
            id,
            partitions: Vec::new(),
            internal: false,
        }
    }

    #[test]
    fn topics_are_found_by_id_as_the_image_changes() {
        let cache = MetadataCache::new(LogConfig::default());
        let update = |topics, deleted: &[String]| {
            cache.update(BTreeMap::new(), 0, topics, deleted);
        };
        update(vec![topic("a", [1; 16]), topic("no-id", [0; 16])], &[]);
        let image = cache.image();
        assert_eq!(
            image.topic_by_id(&[1; 16]).map(|t| t.name.as_str()),
            Some("a")
        );
        assert!(
            image.topic_by_id(&[0; 16]).is_none(),
            "a topic without an id"
        );
        update(vec![topic("b", [2; 16])], &["a".to_string()]);
        let image = cache.image();
        assert!(image.topic_by_id(&[1; 16]).is_none(), "deleted");
        assert_eq!(
            image.topic_by_id(&[2; 16]).map(|t| t.name.as_str()),
            Some("b")
        );
    }
}

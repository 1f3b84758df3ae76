//! Topic administration, as the controller does it: validate, write Kafka's znodes through
//! the metadata store in one multi-op, create the local logs, publish the new metadata.
//!
//! Single-node: every replica is this broker, the leader is this broker, the ISR is the
//! replica set. Called from handler threads; `Broker::admin_lock` serializes changes so two
//! concurrent creates of one name cannot both succeed. Errors are domain values; the
//! handlers map them to Kafka error codes.

use std::collections::BTreeMap;
use std::sync::Arc;

use kbroker_coordinator::{cluster, layout};
use kbroker_storage::TopicPartition;

use crate::broker::{now_ms, random_bytes, Broker, PartitionInfo, TopicInfo};
use crate::config::topic_log_config;

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_LENGTH_MAX: usize = 249;
/// Partitions per topic at most (a limit Kafka does not have; keeps one request bounded).
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("Topic '{0}' already exists.")]
    TopicExists(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("This server does not host this topic-partition.")]
    UnknownTopic,
    #[error("Topic deletion is disabled.")]
    DeletionDisabled,
    #[error("metadata store: {0}")]
    Store(#[from] kbroker_coordinator::StoreError),
    #[error("storage: {0}")]
    Storage(#[from] kbroker_storage::StorageError),
}

/// Kafka's `Topic.validate`: legal characters, length, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), AdminError> {
    if name.is_empty() {
        return Err(AdminError::InvalidTopic(
            "Topic name is illegal, it can't be empty".into(),
        ));
    }
    if name == "." || name == ".." {
        return Err(AdminError::InvalidTopic(
            "Topic name cannot be \".\" or \"..\"".into(),
        ));
    }
    if name.len() > TOPIC_NAME_LENGTH_MAX {
        return Err(AdminError::InvalidTopic(format!("Topic name is illegal, it can't be longer than {TOPIC_NAME_LENGTH_MAX} characters, topic name: {name}")));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(AdminError::InvalidTopic(format!("Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'")));
    }
    Ok(())
}

/// What a create asks for; `None` means the broker default.
pub struct TopicSpec {
    pub name: String,
    pub num_partitions: Option<i32>,
    pub replication_factor: Option<i16>,
    pub assignments: BTreeMap<i32, Vec<i32>>,
    pub configs: BTreeMap<String, String>,
}

pub(crate) fn live_brokers(broker: &Broker) -> Vec<i32> {
    vec![broker.config.broker_id]
}

fn plan(broker: &Broker, spec: &TopicSpec) -> Result<BTreeMap<i32, Vec<i32>>, AdminError> {
    validate_topic_name(&spec.name)?;
    topic_log_config(&broker.config.default_log_config(), &spec.configs)
        .map_err(|e| AdminError::InvalidConfig(e.to_string()))?;
    let brokers = live_brokers(broker);
    if !spec.assignments.is_empty() {
        if spec.num_partitions.is_some_and(|n| n != -1)
            || spec.replication_factor.is_some_and(|r| r != -1)
        {
            return Err(AdminError::InvalidReplicaAssignment("Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into()));
        }
        let n = spec.assignments.len() as i32;
        for (i, (p, replicas)) in spec.assignments.iter().enumerate() {
            if *p != i as i32 {
                return Err(AdminError::InvalidReplicaAssignment(
                    "Partitions should be a consecutive 0-based integer sequence".into(),
                ));
            }
            if replicas.is_empty() || replicas.iter().any(|r| !brokers.contains(r)) {
                return Err(AdminError::InvalidReplicaAssignment(format!(
                    "Unknown broker in replica assignment {replicas:?}"
                )));
            }
            let mut dedup = replicas.clone();
            dedup.sort_unstable();
            dedup.dedup();
            if dedup.len() != replicas.len() {
                return Err(AdminError::InvalidReplicaAssignment(
                    "Duplicate replica assignment".into(),
                ));
            }
        }
        if n > PARTITIONS_PER_TOPIC_MAX {
            return Err(AdminError::InvalidPartitions(format!(
                "Number of partitions {n} exceeds the limit {PARTITIONS_PER_TOPIC_MAX}"
            )));
        }
        return Ok(spec.assignments.clone());
    }
    let partitions = match spec.num_partitions {
        None | Some(-1) => broker.config.num_partitions,
        Some(n) => n,
    };
    if partitions <= 0 {
        return Err(AdminError::InvalidPartitions(
            "Number of partitions must be larger than 0.".into(),
        ));
    }
    if partitions > PARTITIONS_PER_TOPIC_MAX {
        return Err(AdminError::InvalidPartitions(format!(
            "Number of partitions {partitions} exceeds the limit {PARTITIONS_PER_TOPIC_MAX}"
        )));
    }
    let rf = match spec.replication_factor {
        None | Some(-1) => broker.config.default_replication_factor,
        Some(r) => r,
    };
    if rf <= 0 {
        return Err(AdminError::InvalidReplicationFactor(
            "Replication factor must be larger than 0.".into(),
        ));
    }
    if rf as usize > brokers.len() {
        return Err(AdminError::InvalidReplicationFactor(format!(
            "Replication factor: {rf} larger than available brokers: {}.",
            brokers.len()
        )));
    }
    Ok(assign_replicas(&brokers, 0, partitions, rf as usize))
}

/// Round-robin replica placement starting at `first_partition` (Kafka's rack-unaware form).
fn assign_replicas(
    brokers: &[i32],
    first_partition: i32,
    count: i32,
    rf: usize,
) -> BTreeMap<i32, Vec<i32>> {
    assert!(!brokers.is_empty() && rf <= brokers.len());
    (first_partition..first_partition + count)
        .map(|p| {
            let start = p as usize % brokers.len();
            (
                p,
                (0..rf)
                    .map(|r| brokers[(start + r) % brokers.len()])
                    .collect(),
            )
        })
        .collect()
}

/// New partitions' state: the first replica leads, every replica is in sync, epoch 0.
fn initial_states(
    broker: &Broker,
    assignment: &BTreeMap<i32, Vec<i32>>,
) -> Vec<(i32, layout::PartitionState)> {
    assignment
        .iter()
        .map(|(p, replicas)| {
            let state = layout::PartitionState {
                leader: replicas[0],
                leader_epoch: 0,
                isr: replicas.clone(),
                controller_epoch: broker.controller_epoch,
                zk_version: 0,
            };
            (*p, state)
        })
        .collect()
}

fn assignment_znode(
    topic_id: [u8; 16],
    partitions: BTreeMap<i32, Vec<i32>>,
) -> layout::TopicAssignment {
    layout::TopicAssignment {
        topic_id,
        partitions,
        adding_replicas: BTreeMap::new(),
        removing_replicas: BTreeMap::new(),
    }
}

/// Creates a topic (or only validates it). Returns the created topic's metadata.
pub fn create_topic(
    broker: &Broker,
    spec: &TopicSpec,
    validate_only: bool,
) -> Result<Arc<TopicInfo>, AdminError> {
    let _guard = broker.admin_lock.lock().unwrap_or_else(|p| p.into_inner());
    if broker.topic(&spec.name).is_some() {
        return Err(AdminError::TopicExists(spec.name.clone()));
    }
    let assignment = plan(broker, spec)?;
    let log_config = topic_log_config(&broker.config.default_log_config(), &spec.configs)
        .map_err(|e| AdminError::InvalidConfig(e.to_string()))?;
    let topic_id = random_bytes::<16>();
    if validate_only {
        return Ok(Arc::new(TopicInfo {
            name: spec.name.clone(),
            id: topic_id,
            partitions: Vec::new(),
            configs: spec.configs.clone(),
            log_config,
            internal: false,
        }));
    }
    let states = initial_states(broker, &assignment);
    let znode = assignment_znode(topic_id, assignment.clone());
    let config_znode = layout::EntityConfig {
        config: spec.configs.clone(),
    };
    match cluster::create_topic(&*broker.store, &spec.name, &znode, &config_znode, &states) {
        Ok(()) => {}
        Err(kbroker_coordinator::StoreError::NodeExists(_)) => {
            return Err(AdminError::TopicExists(spec.name.clone()))
        }
        Err(e) => return Err(e.into()),
    }
    let partitions = open_partitions(broker, &spec.name, &assignment, &log_config)?;
    let info = Arc::new(TopicInfo {
        name: spec.name.clone(),
        id: topic_id,
        partitions,
        configs: spec.configs.clone(),
        log_config,
        internal: spec.name.starts_with("__"),
    });
    broker
        .topics
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(spec.name.clone(), Arc::clone(&info));
    log::info!(
        "created topic name={} partitions={} replication_factor={}",
        spec.name,
        assignment.len(),
        assignment.values().next().map_or(0, Vec::len)
    );
    Ok(info)
}

fn open_partitions(
    broker: &Broker,
    topic: &str,
    assignment: &BTreeMap<i32, Vec<i32>>,
    log_config: &kbroker_storage::LogConfig,
) -> Result<Vec<PartitionInfo>, AdminError> {
    let me = broker.config.broker_id;
    let mut out = Vec::with_capacity(assignment.len());
    for (p, replicas) in assignment {
        let log = if replicas.contains(&me) {
            Some(broker.logs.get_or_create(
                &TopicPartition::new(topic, *p),
                log_config.clone(),
                now_ms(),
                true,
            )?)
        } else {
            None
        };
        out.push(PartitionInfo {
            index: *p,
            leader: replicas[0],
            leader_epoch: 0,
            replicas: replicas.clone(),
            isr: replicas.clone(),
            log,
            offline: false,
        });
    }
    Ok(out)
}

/// Deletes a topic: marks it in `/admin/delete_topics`, removes its logs, then its znodes.
pub fn delete_topic(broker: &Broker, name: &str) -> Result<Arc<TopicInfo>, AdminError> {
    if !broker.config.delete_topic_enable {
        return Err(AdminError::DeletionDisabled);
    }
    let _guard = broker.admin_lock.lock().unwrap_or_else(|p| p.into_inner());
    let info = broker.topic(name).ok_or(AdminError::UnknownTopic)?;
    cluster::mark_topic_for_deletion(&*broker.store, name)?;
    broker
        .topics
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .remove(name);
    for p in &info.partitions {
        let tp = TopicPartition::new(name, p.index);
        broker.logs.delete(&tp)?;
        broker.fetch_purgatory.check_and_complete(&tp);
    }
    cluster::delete_topic_znodes(&*broker.store, name)?;
    log::info!("deleted topic name={name}");
    Ok(info)
}

/// Grows a topic to `count` partitions.
pub fn create_partitions(
    broker: &Broker,
    name: &str,
    count: i32,
    assignments: Option<Vec<Vec<i32>>>,
    validate_only: bool,
) -> Result<(), AdminError> {
    let _guard = broker.admin_lock.lock().unwrap_or_else(|p| p.into_inner());
    let info = broker.topic(name).ok_or(AdminError::UnknownTopic)?;
    let current = info.partitions.len() as i32;
    if count <= current {
        return Err(AdminError::InvalidPartitions(if count == current {
            format!("Topic already has {current} partitions.")
        } else {
            format!("Topic currently has {current} partitions, which is higher than the requested {count}.")
        }));
    }
    if count > PARTITIONS_PER_TOPIC_MAX {
        return Err(AdminError::InvalidPartitions(format!(
            "Number of partitions {count} exceeds the limit {PARTITIONS_PER_TOPIC_MAX}"
        )));
    }
    let rf = info.partitions.first().map_or(1, |p| p.replicas.len());
    let brokers = live_brokers(broker);
    let added: BTreeMap<i32, Vec<i32>> = match assignments {
        Some(a) => {
            if a.len() as i32 != count - current {
                return Err(AdminError::InvalidReplicaAssignment(format!(
                    "Increasing the number of partitions by {} but {} assignments provided.",
                    count - current,
                    a.len()
                )));
            }
            for r in &a {
                if r.is_empty() || r.iter().any(|b| !brokers.contains(b)) {
                    return Err(AdminError::InvalidReplicaAssignment(format!(
                        "Unknown broker in replica assignment {r:?}"
                    )));
                }
            }
            a.into_iter()
                .enumerate()
                .map(|(i, r)| (current + i as i32, r))
                .collect()
        }
        None => assign_replicas(&brokers, current, count - current, rf.min(brokers.len())),
    };
    if validate_only {
        return Ok(());
    }
    let mut full: BTreeMap<i32, Vec<i32>> = info
        .partitions
        .iter()
        .map(|p| (p.index, p.replicas.clone()))
        .collect();
    full.extend(added.clone());
    let states = initial_states(broker, &added);
    let znode = assignment_znode(info.id, full);
    cluster::add_partitions(&*broker.store, name, &znode, &states)?;
    let mut partitions = info.partitions.clone();
    partitions.extend(open_partitions(broker, name, &added, &info.log_config)?);
    let updated = Arc::new(TopicInfo {
        name: info.name.clone(),
        id: info.id,
        partitions,
        configs: info.configs.clone(),
        log_config: info.log_config.clone(),
        internal: info.internal,
    });
    broker
        .topics
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_string(), updated);
    log::info!("added partitions topic={name} from={current} to={count}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        for ok in ["a", "orders.v1", "A_b-c", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn round_robin_assignment() {
        let a = assign_replicas(&[1, 2, 3], 0, 4, 2);
        assert_eq!(a[&0], vec![1, 2]);
        assert_eq!(a[&3], vec![1, 2]);
        assert_eq!(a[&2], vec![3, 1]);
    }
}

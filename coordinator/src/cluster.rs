//! Broker-side operations on Kafka's znode layout, over any [`MetadataStore`].
//!
//! The same functions run against the embedded store (single node) and ZooKeeper (cluster),
//! following what Kafka 2.8's `KafkaZkClient` does: the cluster id is created once and then
//! read; brokers register an ephemeral `/brokers/ids/{id}` whose `czxid` is the broker epoch;
//! the controller is whoever creates the ephemeral `/controller`, in the same multi-op that
//! bumps `/controller_epoch` (so winning and bumping cannot be separated); topic creation is
//! one multi-op; controller writes of partition state can be fenced by a check of
//! `/controller_epoch`'s znode version in the same multi-op.
//!
//! Format: see `layout.rs`. Thread safety: stateless functions; the store does the locking,
//! and races between brokers are settled by versioned writes and `NodeExists`, retried a
//! bounded number of times ([`CLUSTER_ATTEMPTS_MAX`]). Crash behaviour: every function is
//! safe to repeat after a crash; multi-op writes are all-or-nothing.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::layout::{
    self, BrokerRegistration, ClusterId, ConsumerOffset, ControllerZnode, EntityConfig,
    PartitionState, ProducerIdBlock, TopicAssignment, BROKER_IDS_PATH, BROKER_TOPICS_PATH,
    CLUSTER_ID_PATH, CONTROLLER_EPOCH_PATH, CONTROLLER_PATH, DELETE_TOPICS_PATH, PERSISTENT_PATHS,
    PRODUCER_ID_BLOCK_PATH,
};
use crate::store::{
    create_recursive, delete_recursive, ensure_persistent_path, get_opt, CreateMode, MetadataStore,
    Op, OpResult, StoreError,
};

/// Attempts of an operation that lost a race with another broker before it gives up.
pub const CLUSTER_ATTEMPTS_MAX: usize = 16;

/// The controller epoch and the version of its znode, which fences controller writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerEpoch {
    pub epoch: i32,
    pub zk_version: i32,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn too_many_races(what: String) -> StoreError {
    StoreError::ConnectionLoss(format!(
        "{what}: still racing other writers after {CLUSTER_ATTEMPTS_MAX} attempts"
    ))
}

/// Creates Kafka's top-level persistent paths (`/brokers/ids`, `/config/changes`, ...).
pub fn ensure_persistent_paths<S: MetadataStore + ?Sized>(store: &S) -> Result<(), StoreError> {
    for path in PERSISTENT_PATHS {
        ensure_persistent_path(store, path)?;
    }
    Ok(())
}

/// Producer ids claimed per block (Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
/// Conflicting claims retried before giving up (another broker keeps winning).
const PRODUCER_ID_BLOCK_ATTEMPTS_MAX: usize = 100;

/// Claims the next block of producer ids for `broker_id` in `/latest_producer_id_block`, as
/// Kafka's ZooKeeper-mode broker does: read the last block, write the next one with a
/// version check, retry if another broker got there first. The first block is 0..=999.
pub fn allocate_producer_id_block<S: MetadataStore + ?Sized>(
    store: &S,
    broker_id: i32,
) -> Result<ProducerIdBlock, StoreError> {
    for _ in 0..PRODUCER_ID_BLOCK_ATTEMPTS_MAX {
        let (data, stat) = match store.get(PRODUCER_ID_BLOCK_PATH) {
            Ok(found) => found,
            Err(StoreError::NoNode(_)) => {
                ensure_persistent_path(store, PRODUCER_ID_BLOCK_PATH)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let block_start = if data.is_empty() {
            0
        } else {
            let current = ProducerIdBlock::from_json(&data)?;
            if current.block_end > i64::MAX - PRODUCER_ID_BLOCK_SIZE {
                return Err(StoreError::LimitExceeded {
                    what: "producer ids allocated".into(),
                    value: usize::try_from(current.block_end).unwrap_or(usize::MAX),
                    max: usize::try_from(i64::MAX - PRODUCER_ID_BLOCK_SIZE).unwrap_or(usize::MAX),
                });
            }
            current.block_end + 1
        };
        let block = ProducerIdBlock {
            broker_id,
            block_start,
            block_end: block_start + PRODUCER_ID_BLOCK_SIZE - 1,
        };
        match store.set(PRODUCER_ID_BLOCK_PATH, &block.to_json(), Some(stat.version)) {
            Ok(_) => {
                log::info!(
                    "producer id block claimed broker_id={broker_id} block_start={} block_end={}",
                    block.block_start,
                    block.block_end
                );
                return Ok(block);
            }
            Err(StoreError::BadVersion { .. } | StoreError::NoNode(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::LimitExceeded {
        what: "conflicting producer id block claims".into(),
        value: PRODUCER_ID_BLOCK_ATTEMPTS_MAX,
        max: PRODUCER_ID_BLOCK_ATTEMPTS_MAX - 1,
    })
}

/// Returns the cluster id, creating `/cluster/id` with `generate()` if there is none.
pub fn ensure_cluster_id<S: MetadataStore + ?Sized>(
    store: &S,
    generate: impl FnOnce() -> String,
) -> Result<String, StoreError> {
    if let Some(id) = read_cluster_id(store)? {
        return Ok(id);
    }
    let id = generate();
    let data = ClusterId { id: id.clone() }.to_json();
    match create_recursive(store, CLUSTER_ID_PATH, &data, CreateMode::Persistent) {
        Ok(_) => {
            log::info!("cluster id created cluster_id={id}");
            Ok(id)
        }
        // Another broker won the race: its id is the cluster's.
        Err(StoreError::NodeExists(_)) => {
            read_cluster_id(store)?.ok_or_else(|| StoreError::NoNode(CLUSTER_ID_PATH.to_string()))
        }
        Err(e) => Err(e),
    }
}

pub fn read_cluster_id<S: MetadataStore + ?Sized>(store: &S) -> Result<Option<String>, StoreError> {
    match get_opt(store, CLUSTER_ID_PATH)? {
        Some((data, _)) => ClusterId::from_json(&data)
            .map(|c| Some(c.id))
            .map_err(|e| e.at_path(CLUSTER_ID_PATH)),
        None => Ok(None),
    }
}

/// Registers the broker with an ephemeral `/brokers/ids/{id}` and returns its broker epoch
/// (the znode's `czxid`, as in Kafka). A registration already held by this session (a
/// retried call) counts as success; one held by another session is
/// `BrokerAlreadyRegistered`.
pub fn register_broker<S: MetadataStore + ?Sized>(
    store: &S,
    registration: &BrokerRegistration,
) -> Result<i64, StoreError> {
    let path = layout::broker_id_path(registration.id);
    // A registration of an expiring session may vanish between our create and our look:
    // then create again (a few times: each vanishing is a session ending).
    for _ in 0..REGISTER_ATTEMPTS {
        match create_recursive(store, &path, &registration.to_json(), CreateMode::Ephemeral) {
            Ok(_) | Err(StoreError::NodeExists(_)) => {}
            Err(e) => return Err(e),
        }
        match store.exists(&path)? {
            Some(stat) if stat.ephemeral_owner == store.session_id() => {
                log::info!(
                    "broker registered broker_id={} broker_epoch={}",
                    registration.id,
                    stat.czxid
                );
                return Ok(stat.czxid);
            }
            Some(_) => {
                return Err(StoreError::BrokerAlreadyRegistered {
                    broker_id: registration.id,
                })
            }
            None => continue,
        }
    }
    Err(StoreError::NoNode(path))
}

/// Create-then-look rounds of [`register_broker`] at most.
const REGISTER_ATTEMPTS: usize = 10;

/// Every registered broker, by id. Registrations that vanish while reading are skipped.
pub fn read_brokers<S: MetadataStore + ?Sized>(
    store: &S,
) -> Result<BTreeMap<i32, BrokerRegistration>, StoreError> {
    let mut brokers = BTreeMap::new();
    for name in children_or_empty(store, BROKER_IDS_PATH)? {
        let Ok(broker_id) = name.parse::<i32>() else {
            log::warn!(
                "ignoring znode with a non-numeric name under {BROKER_IDS_PATH} name={name}"
            );
            continue;
        };
        let path = layout::broker_id_path(broker_id);
        if let Some((data, _)) = get_opt(store, &path)? {
            let broker =
                BrokerRegistration::from_json(broker_id, &data).map_err(|e| e.at_path(&path))?;
            brokers.insert(broker_id, broker);
        }
    }
    Ok(brokers)
}

/// Tries to become controller; returns the new controller epoch if this broker won,
/// `None` if another broker is controller.
pub fn elect_controller<S: MetadataStore + ?Sized>(
    store: &S,
    broker_id: i32,
) -> Result<Option<i32>, StoreError> {
    Ok(elect_controller_at(store, broker_id, now_ms())?.map(|e| e.epoch))
}

/// [`elect_controller`] with the registration timestamp given and the epoch's znode version
/// returned (to fence later writes). Like Kafka, creates `/controller_epoch` as `0` if
/// absent, then creates `/controller` and sets the epoch to `epoch + 1` in one multi-op
/// conditional on the epoch's version, so the first controller gets epoch 1.
pub fn elect_controller_at<S: MetadataStore + ?Sized>(
    store: &S,
    broker_id: i32,
    timestamp_ms: i64,
) -> Result<Option<ControllerEpoch>, StoreError> {
    let controller = ControllerZnode {
        broker_id,
        timestamp_ms,
    }
    .to_json();
    for _ in 0..CLUSTER_ATTEMPTS_MAX {
        let Some(current) = read_controller_epoch(store)? else {
            let initial = layout::encode_controller_epoch(0);
            match store.create(CONTROLLER_EPOCH_PATH, &initial, CreateMode::Persistent) {
                Ok(_) | Err(StoreError::NodeExists(_)) => continue,
                Err(e) => return Err(e),
            }
        };
        let epoch = current
            .epoch
            .checked_add(1)
            .ok_or_else(|| StoreError::LimitExceeded {
                what: "controller epoch".to_string(),
                value: i32::MAX as usize,
                max: i32::MAX as usize,
            })?;
        let ops = [
            Op::Create {
                path: CONTROLLER_PATH.to_string(),
                data: controller.clone(),
                mode: CreateMode::Ephemeral,
            },
            Op::SetData {
                path: CONTROLLER_EPOCH_PATH.to_string(),
                data: layout::encode_controller_epoch(epoch),
                version: Some(current.zk_version),
            },
        ];
        match store.multi(&ops) {
            Ok(results) => {
                let Some(OpResult::SetData(stat)) = results.get(1) else {
                    unreachable!("multi returned {results:?}");
                };
                log::info!("controller elected broker_id={broker_id} controller_epoch={epoch}");
                return Ok(Some(ControllerEpoch {
                    epoch,
                    zk_version: stat.version,
                }));
            }
            Err(StoreError::NodeExists(_)) => return already_controller(store, broker_id),
            // The epoch moved or vanished under us: read it again.
            Err(StoreError::BadVersion { .. }) | Err(StoreError::NoNode(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(too_many_races(format!(
        "electing broker {broker_id} controller"
    )))
}

/// After losing the create of `/controller`: the current epoch if this very session holds
/// it (a retried election), otherwise `None`.
fn already_controller<S: MetadataStore + ?Sized>(
    store: &S,
    broker_id: i32,
) -> Result<Option<ControllerEpoch>, StoreError> {
    let Some((data, stat)) = get_opt(store, CONTROLLER_PATH)? else {
        return Ok(None);
    };
    let holder = ControllerZnode::from_json(&data).map_err(|e| e.at_path(CONTROLLER_PATH))?;
    if stat.ephemeral_owner == store.session_id() && holder.broker_id == broker_id {
        return read_controller_epoch(store);
    }
    Ok(None)
}

/// The broker id in `/controller`, if any.
pub fn current_controller<S: MetadataStore + ?Sized>(store: &S) -> Result<Option<i32>, StoreError> {
    match get_opt(store, CONTROLLER_PATH)? {
        Some((data, _)) => ControllerZnode::from_json(&data)
            .map(|c| Some(c.broker_id))
            .map_err(|e| e.at_path(CONTROLLER_PATH)),
        None => Ok(None),
    }
}

pub fn read_controller_epoch<S: MetadataStore + ?Sized>(
    store: &S,
) -> Result<Option<ControllerEpoch>, StoreError> {
    match get_opt(store, CONTROLLER_EPOCH_PATH)? {
        Some((data, stat)) => {
            let epoch = layout::decode_controller_epoch(&data)
                .map_err(|e| e.at_path(CONTROLLER_EPOCH_PATH))?;
            Ok(Some(ControllerEpoch {
                epoch,
                zk_version: stat.version,
            }))
        }
        None => Ok(None),
    }
}

/// Deletes `/controller` if this session holds it (controlled shutdown); returns whether
/// it did.
pub fn resign_controller<S: MetadataStore + ?Sized>(store: &S) -> Result<bool, StoreError> {
    let Some(stat) = store.exists(CONTROLLER_PATH)? else {
        return Ok(false);
    };
    if stat.ephemeral_owner != store.session_id() {
        return Ok(false);
    }
    match store.delete(CONTROLLER_PATH, Some(stat.version)) {
        Ok(()) => Ok(true),
        Err(StoreError::NoNode(_)) | Err(StoreError::BadVersion { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates a topic's znodes in one multi-op: `/brokers/topics/{t}` (assignment), its
/// `partitions` node, each `partitions/{p}` and `partitions/{p}/state`, and
/// `/config/topics/{t}` (created, or overwritten if a stale one is left over).
/// `NodeExists(/brokers/topics/{t})` if the topic exists.
pub fn create_topic<S: MetadataStore + ?Sized>(
    store: &S,
    topic: &str,
    assignment: &TopicAssignment,
    config: &EntityConfig,
    states: &[(i32, PartitionState)],
) -> Result<(), StoreError> {
    ensure_persistent_path(store, BROKER_TOPICS_PATH)?;
    ensure_persistent_path(store, layout::CONFIG_TOPICS_PATH)?;
    let topic_path = layout::topic_path(topic);
    let config_path = layout::topic_config_path(topic);
    for _ in 0..CLUSTER_ATTEMPTS_MAX {
        let mut ops = vec![Op::Create {
            path: topic_path.clone(),
            data: assignment.to_json(),
            mode: CreateMode::Persistent,
        }];
        ops.push(match store.exists(&config_path)? {
            Some(stat) => Op::SetData {
                path: config_path.clone(),
                data: config.to_json(),
                version: Some(stat.version),
            },
            None => Op::Create {
                path: config_path.clone(),
                data: config.to_json(),
                mode: CreateMode::Persistent,
            },
        });
        ops.push(Op::Create {
            path: layout::topic_partitions_path(topic),
            data: Vec::new(),
            mode: CreateMode::Persistent,
        });
        push_partition_creates(&mut ops, topic, states);
        match store.multi(&ops) {
            Ok(_) => {
                log::info!(
                    "topic znodes created topic={topic} partitions={}",
                    assignment.partitions.len()
                );
                return Ok(());
            }
            // The leftover config changed or vanished between our read and the multi.
            Err(StoreError::BadVersion { path, .. }) | Err(StoreError::NoNode(path))
                if path == config_path => {}
            Err(StoreError::NodeExists(path)) if path == config_path => {}
            Err(e) => return Err(e),
        }
    }
    Err(too_many_races(format!("creating topic {topic}")))
}

fn push_partition_creates(ops: &mut Vec<Op>, topic: &str, states: &[(i32, PartitionState)]) {
    for (partition, state) in states {
        ops.push(Op::Create {
            path: layout::topic_partition_path(topic, *partition),
            data: Vec::new(),
            mode: CreateMode::Persistent,
        });
        ops.push(Op::Create {
            path: layout::partition_state_path(topic, *partition),
            data: state.to_json(),
            mode: CreateMode::Persistent,
        });
    }
}

/// Every topic's assignment and config (empty if it has no config znode). Topics deleted
/// while reading are skipped.
pub fn read_topics<S: MetadataStore + ?Sized>(
    store: &S,
) -> Result<BTreeMap<String, (TopicAssignment, EntityConfig)>, StoreError> {
    let mut topics = BTreeMap::new();
    for topic in children_or_empty(store, BROKER_TOPICS_PATH)? {
        if let Some(found) = read_topic(store, &topic)? {
            topics.insert(topic, found);
        }
    }
    Ok(topics)
}

/// One topic's assignment and config, `None` if the topic does not exist.
pub fn read_topic<S: MetadataStore + ?Sized>(
    store: &S,
    topic: &str,
) -> Result<Option<(TopicAssignment, EntityConfig)>, StoreError> {
    let topic_path = layout::topic_path(topic);
    let Some((data, _)) = get_opt(store, &topic_path)? else {
        return Ok(None);
    };
    let assignment = TopicAssignment::from_json(&data).map_err(|e| e.at_path(&topic_path))?;
    Ok(Some((assignment, read_topic_config(store, topic)?)))
}

/// Sets `/config/topics/{t}` to `config`, then announces the change with a sequential
/// `/config/changes/config_change_` node, as Kafka's admin does for AlterConfigs: every
/// broker reads the topic's config again when it sees the notification.
pub fn change_topic_config<S: MetadataStore + ?Sized>(
    store: &S,
    topic: &str,
    config: &EntityConfig,
) -> Result<(), StoreError> {
    change_entity_config(store, &format!("topics/{topic}"), config)
}

/// Sets `/config/<entity_path>` (`topics/t`, `users/u`, `clients/c`, `users/u/clients/c`,
/// `ips/i`; names already sanitized) to `config` and announces the change under
/// `/config/changes`, as Kafka's `AdminZkClient.changeConfigs` does.
pub fn change_entity_config<S: MetadataStore + ?Sized>(
    store: &S,
    entity_path: &str,
    config: &EntityConfig,
) -> Result<(), StoreError> {
    let path = format!("/config/{entity_path}");
    match store.set(&path, &config.to_json(), None) {
        Ok(_) => {}
        Err(StoreError::NoNode(_)) => {
            create_recursive(store, &path, &config.to_json(), CreateMode::Persistent)?;
        }
        Err(e) => return Err(e),
    }
    ensure_persistent_path(store, layout::CONFIG_CHANGES_PATH)?;
    store.create(
        &format!(
            "{}/{}",
            layout::CONFIG_CHANGES_PATH,
            layout::CONFIG_CHANGE_SEQUENCE_PREFIX
        ),
        &layout::encode_config_change(entity_path),
        CreateMode::PersistentSequential,
    )?;
    Ok(())
}

/// A config change notification: its sequence number, znode path, the entity it names
/// (`topics/<t>`) and when it was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    pub sequence: i64,
    pub path: String,
    pub entity: String,
    pub created_ms: i64,
}

/// Config change notifications with a sequence number above `after`, oldest first. One that
/// does not parse is skipped (logged).
pub fn config_changes_after<S: MetadataStore + ?Sized>(
    store: &S,
    after: i64,
) -> Result<Vec<ConfigChange>, StoreError> {
    let mut names: Vec<(i64, String)> = match store.children(layout::CONFIG_CHANGES_PATH) {
        Ok(names) => names,
        Err(StoreError::NoNode(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    .into_iter()
    .filter_map(|name| {
        let seq = name
            .strip_prefix(layout::CONFIG_CHANGE_SEQUENCE_PREFIX)?
            .parse::<i64>()
            .ok()?;
        (seq > after).then_some((seq, name))
    })
    .collect();
    names.sort_unstable();
    let mut out = Vec::with_capacity(names.len());
    for (seq, name) in names {
        let path = format!("{}/{name}", layout::CONFIG_CHANGES_PATH);
        if let Some((data, stat)) = get_opt(store, &path)? {
            match layout::decode_config_change(&data) {
                Ok(entity) => out.push(ConfigChange {
                    sequence: seq,
                    path,
                    entity,
                    created_ms: stat.ctime_ms,
                }),
                Err(e) => log::warn!("skipping config change {path}: {e}"),
            }
        }
    }
    Ok(out)
}

/// The config of `/config/<entity_path>` (empty if the znode is absent, or has no data: a
/// parent created on the way to `users/<u>/clients/<c>`).
pub fn read_entity_config<S: MetadataStore + ?Sized>(
    store: &S,
    entity_path: &str,
) -> Result<EntityConfig, StoreError> {
    let path = format!("/config/{entity_path}");
    match get_opt(store, &path)? {
        Some((data, _)) if !data.is_empty() => {
            EntityConfig::from_json(&data).map_err(|e| e.at_path(&path))
        }
        _ => Ok(EntityConfig::default()),
    }
}

/// The children of `/config/<entity_path>` (none if it is absent).
pub fn entity_children<S: MetadataStore + ?Sized>(
    store: &S,
    entity_path: &str,
) -> Result<Vec<String>, StoreError> {
    match store.children(&format!("/config/{entity_path}")) {
        Ok(names) => Ok(names),
        Err(StoreError::NoNode(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// `/config/topics/{t}`: a topic's config overrides (none if the znode is absent).
pub fn read_topic_config<S: MetadataStore + ?Sized>(
    store: &S,
    topic: &str,
) -> Result<EntityConfig, StoreError> {
    read_entity_config(store, &format!("topics/{topic}"))
}

/// A partition's leader and ISR with `zk_version` set from the znode, `None` if absent.
pub fn read_partition_state<S: MetadataStore + ?Sized>(
    store: &S,
    topic: &str,
    partition: i32,
) -> Result<Option<PartitionState>, StoreError> {
    let path = layout::partition_state_path(topic, partition);
    match get_opt(store, &path)? {
        Some((data, stat)) => {
            let mut state = PartitionState::from_json(&data).map_err(|e| e.at_path(&path))?;
            state.zk_version = stat.version;
            Ok(Some(state))
        }
        None => Ok(None),
    }
}

/// The states of many partitions (None where there is none), read pipelined.
pub fn read_partition_states<S: MetadataStore + ?Sized>(
    store: &S,
    partitions: &[(String, i32)],
) -> Result<Vec<Option<PartitionState>>, StoreError> {
    let paths: Vec<String> = partitions
        .iter()
        .map(|(t, p)| layout::partition_state_path(t, *p))
        .collect();
    store
        .get_many(&paths)
        .into_iter()
        .zip(&paths)
        .map(|(found, path)| match found? {
            Some((data, stat)) => {
                let mut state = PartitionState::from_json(&data).map_err(|e| e.at_path(path))?;
                state.zk_version = stat.version;
                Ok(Some(state))
            }
            None => Ok(None),
        })
        .collect()
}

/// Overwrites a partition's state if its znode still has version `state.zk_version` (`-1`
/// for any) and, when `controller_epoch_zk_version` is given, only if `/controller_epoch`
/// still has that version (the controller fencing check, in the same multi-op). Returns
/// the new `zk_version`. A stale writer gets `BadVersion` naming the path that moved.
pub fn write_partition_state<S: MetadataStore + ?Sized>(
    store: &S,
    topic: &str,
    partition: i32,
    state: &PartitionState,
    controller_epoch_zk_version: Option<i32>,
) -> Result<i32, StoreError> {
    let mut ops = Vec::with_capacity(2);
    if let Some(version) = controller_epoch_zk_version {
        ops.push(Op::Check {
            path: CONTROLLER_EPOCH_PATH.to_string(),
            version,
        });
    }
    ops.push(Op::SetData {
        path: layout::partition_state_path(topic, partition),
        data: state.to_json(),
        version: Some(state.zk_version),
    });
    let results = store.multi(&ops)?;
    match results.last() {
        Some(OpResult::SetData(stat)) => Ok(stat.version),
        other => unreachable!("multi returned {other:?}"),
    }
}

/// Replaces a topic's assignment with `new_assignment` and creates the state znodes of the
/// new partitions, in one multi-op. `NoNode` if the topic does not exist, `NodeExists` if a
/// partition in `new_states` already exists.
pub fn add_partitions<S: MetadataStore + ?Sized>(
    store: &S,
    topic: &str,
    new_assignment: &TopicAssignment,
    new_states: &[(i32, PartitionState)],
) -> Result<(), StoreError> {
    let topic_path = layout::topic_path(topic);
    let partitions_path = layout::topic_partitions_path(topic);
    for _ in 0..CLUSTER_ATTEMPTS_MAX {
        let Some(topic_stat) = store.exists(&topic_path)? else {
            return Err(StoreError::NoNode(topic_path));
        };
        let mut ops = vec![Op::SetData {
            path: topic_path.clone(),
            data: new_assignment.to_json(),
            version: Some(topic_stat.version),
        }];
        if store.exists(&partitions_path)?.is_none() {
            ops.push(Op::Create {
                path: partitions_path.clone(),
                data: Vec::new(),
                mode: CreateMode::Persistent,
            });
        }
        push_partition_creates(&mut ops, topic, new_states);
        match store.multi(&ops) {
            Ok(_) => {
                log::info!(
                    "topic partitions added topic={topic} new_partitions={} partitions={}",
                    new_states.len(),
                    new_assignment.partitions.len()
                );
                return Ok(());
            }
            // The assignment or the partitions node changed under us: try again.
            Err(StoreError::BadVersion { path, .. }) if path == topic_path => {}
            Err(StoreError::NodeExists(path)) if path == partitions_path => {}
            Err(e) => return Err(e),
        }
    }
    Err(too_many_races(format!(
        "adding partitions to topic {topic}"
    )))
}

/// Creates `/admin/delete_topics/{t}`; returns false if the topic was already marked.
pub fn mark_topic_for_deletion<S: MetadataStore + ?Sized>(
    store: &S,
    topic: &str,
) -> Result<bool, StoreError> {
    let path = layout::delete_topic_path(topic);
    match create_recursive(store, &path, &[], CreateMode::Persistent) {
        Ok(_) => Ok(true),
        Err(StoreError::NodeExists(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Topics under `/admin/delete_topics`, sorted.
pub fn topics_marked_for_deletion<S: MetadataStore + ?Sized>(
    store: &S,
) -> Result<Vec<String>, StoreError> {
    children_or_empty(store, DELETE_TOPICS_PATH)
}

/// Removes `/brokers/topics/{t}` with everything under it, `/config/topics/{t}` and
/// `/admin/delete_topics/{t}`. Absent nodes are fine, so this can be repeated.
pub fn delete_topic_znodes<S: MetadataStore + ?Sized>(
    store: &S,
    topic: &str,
) -> Result<(), StoreError> {
    delete_recursive(store, &layout::topic_path(topic))?;
    delete_recursive(store, &layout::topic_config_path(topic))?;
    delete_recursive(store, &layout::delete_topic_path(topic))?;
    log::info!("topic znodes deleted topic={topic}");
    Ok(())
}

/// Writes `/consumers/{g}/offsets/{t}/{p}` (Kafka 0.8's committed offset), creating it and
/// its parents if needed.
pub fn write_consumer_offset<S: MetadataStore + ?Sized>(
    store: &S,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), StoreError> {
    let path = layout::consumer_offset_path(group, topic, partition);
    let data = ConsumerOffset { offset }.to_json();
    for _ in 0..CLUSTER_ATTEMPTS_MAX {
        match store.set(&path, &data, None) {
            Ok(_) => return Ok(()),
            Err(StoreError::NoNode(_)) => {}
            Err(e) => return Err(e),
        }
        match create_recursive(store, &path, &data, CreateMode::Persistent) {
            Ok(_) => return Ok(()),
            Err(StoreError::NodeExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Err(too_many_races(format!("writing consumer offset {path}")))
}

pub fn read_consumer_offset<S: MetadataStore + ?Sized>(
    store: &S,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, StoreError> {
    let path = layout::consumer_offset_path(group, topic, partition);
    match get_opt(store, &path)? {
        Some((data, _)) => ConsumerOffset::from_json(&data)
            .map(|o| Some(o.offset))
            .map_err(|e| e.at_path(&path)),
        None => Ok(None),
    }
}

fn children_or_empty<S: MetadataStore + ?Sized>(
    store: &S,
    path: &str,
) -> Result<Vec<String>, StoreError> {
    match store.children(path) {
        Ok(children) => Ok(children),
        Err(StoreError::NoNode(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;

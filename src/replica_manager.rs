//! The replica manager: the one owner of this broker's logs, partition roles and high
//! watermarks, and of the fetch purgatory — Kafka's `ReplicaManager`.
//!
//! A partition becomes led or followed here only by a LeaderAndIsr from the controller (in
//! process for the local controller, over the wire otherwise), processed in order on the
//! `kb-replica-state` thread: a request whose controller epoch is older than one already
//! seen is refused (STALE_CONTROLLER_EPOCH), as is one addressed to an older registration of
//! this broker (STALE_BROKER_EPOCH); a partition state whose leader epoch is not newer than
//! the one in force is ignored. Becoming leader or follower creates the log if needed, with
//! the topic's config read from `/config/topics/<t>` — on that thread, never a handler's.
//! StopReplica stops a partition, deleting its log when asked. Produce, Fetch and friends
//! reach a log only through [`ReplicaManager::leader_log`], which answers for partitions this
//! broker leads (NOT_LEADER_OR_FOLLOWER otherwise).
//!
//! High watermark: until replication lands (followers copy nothing yet), a leader's high
//! watermark is its log end, set by the append path here and nowhere else.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use kafka_protocol::messages::leader_and_isr_response::{
    LeaderAndIsrPartitionError, LeaderAndIsrTopicError,
};
use kafka_protocol::messages::stop_replica_response::StopReplicaPartitionError;
use kafka_protocol::messages::{
    LeaderAndIsrRequest, LeaderAndIsrResponse, StopReplicaRequest, StopReplicaResponse,
};
use kafka_protocol::ResponseError;
use kbroker_coordinator::{cluster, MetadataStore};
use kbroker_replication::purgatory::Purgatory;
use kbroker_storage::manager::{lock, SharedLog};
use kbroker_storage::{AppendInfo, LogManager, StorageError, TopicPartition};

use crate::config::topic_log_config;
use crate::metadata_cache::{MetadataCache, TopicConfig};

/// Waiting fetches at most (Kafka bounds purgatory size by request count, too).
pub const DELAYED_FETCH_MAX: usize = 10_000;
/// LeaderAndIsr / StopReplica requests queued for the state thread at most.
pub const STATE_CHANGES_QUEUED_MAX: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    UnknownTopicOrPartition,
    NotLeader,
    /// The replica's log dir is offline.
    Offline,
}

/// What this broker is for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRole {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A partition this broker hosts a replica of.
pub struct Partition {
    pub tp: TopicPartition,
    /// None: the log could not be opened (its dir is offline).
    pub log: Option<SharedLog>,
    role: RwLock<PartitionRole>,
}

impl Partition {
    pub fn role(&self) -> PartitionRole {
        self.role.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A partition this broker leads, as a produce or fetch sees it.
pub struct LeaderView {
    pub log: SharedLog,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub config: Arc<TopicConfig>,
}

/// Called when this broker starts or stops leading a partition (the group coordinator
/// loads and unloads `__consumer_offsets` partitions).
pub trait LeadershipListener: Send + Sync {
    fn became_leader(&self, tp: &TopicPartition, log: &SharedLog);
    fn stopped_leading(&self, tp: &TopicPartition);
}

enum StateChange {
    LeaderAndIsr(
        Box<LeaderAndIsrRequest>,
        Box<dyn FnOnce(LeaderAndIsrResponse) + Send>,
    ),
    StopReplica(
        Box<StopReplicaRequest>,
        Box<dyn FnOnce(StopReplicaResponse) + Send>,
    ),
    Stop,
}

pub struct ReplicaManager {
    pub broker_id: i32,
    pub logs: LogManager,
    pub fetch_purgatory: Purgatory<TopicPartition>,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    metadata: Arc<MetadataCache>,
    store: Arc<dyn MetadataStore>,
    /// The highest controller epoch seen in a state change.
    controller_epoch: AtomicI32,
    /// This broker's registration epoch (the czxid of `/brokers/ids/<id>`).
    broker_epoch: AtomicI64,
    listener: Mutex<Option<Weak<dyn LeadershipListener>>>,
    state_tx: Sender<StateChange>,
    state_thread: Mutex<Option<JoinHandle<()>>>,
}

impl ReplicaManager {
    pub fn start(
        broker_id: i32,
        logs: LogManager,
        metadata: Arc<MetadataCache>,
        store: Arc<dyn MetadataStore>,
    ) -> Arc<ReplicaManager> {
        let (state_tx, state_rx) = crossbeam_channel::bounded(STATE_CHANGES_QUEUED_MAX);
        let manager = Arc::new(ReplicaManager {
            broker_id,
            logs,
            fetch_purgatory: Purgatory::new("fetch", DELAYED_FETCH_MAX),
            partitions: RwLock::new(HashMap::new()),
            metadata,
            store,
            controller_epoch: AtomicI32::new(-1),
            broker_epoch: AtomicI64::new(-1),
            listener: Mutex::new(None),
            state_tx,
            state_thread: Mutex::new(None),
        });
        let weak = Arc::downgrade(&manager);
        let handle = std::thread::Builder::new()
            .name("kb-replica-state".into())
            .spawn(move || run_state_changes(weak, state_rx))
            .expect("spawning the replica state thread");
        *manager
            .state_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(handle);
        manager
    }

    pub fn set_leadership_listener(&self, listener: Weak<dyn LeadershipListener>) {
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }

    fn leadership_listener(&self) -> Option<Arc<dyn LeadershipListener>> {
        self.listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(Weak::upgrade)
    }

    pub fn set_broker_epoch(&self, epoch: i64) {
        self.broker_epoch.store(epoch, Ordering::Release);
    }

    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    pub fn controller_epoch(&self) -> i32 {
        self.controller_epoch.load(Ordering::Acquire)
    }

    /// Stops the state thread after what is queued.
    pub fn shutdown(&self) {
        let _ = self.state_tx.send(StateChange::Stop);
        if let Some(h) = self
            .state_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = h.join();
        }
        self.fetch_purgatory.shutdown();
    }

    /// Queues a LeaderAndIsr; `reply` gets the response once applied. With `wait` (the
    /// local controller) waits for room in the queue; otherwise a full queue answers
    /// REQUEST_TIMED_OUT at once (the controller sends again).
    pub fn submit_leader_and_isr(
        &self,
        request: LeaderAndIsrRequest,
        reply: Box<dyn FnOnce(LeaderAndIsrResponse) + Send>,
        wait: bool,
    ) {
        self.submit(StateChange::LeaderAndIsr(Box::new(request), reply), wait);
    }

    /// Queues a StopReplica, as [`ReplicaManager::submit_leader_and_isr`].
    pub fn submit_stop_replica(
        &self,
        request: StopReplicaRequest,
        reply: Box<dyn FnOnce(StopReplicaResponse) + Send>,
        wait: bool,
    ) {
        self.submit(StateChange::StopReplica(Box::new(request), reply), wait);
    }

    fn submit(&self, change: StateChange, wait: bool) {
        let refused = if wait {
            self.state_tx.send(change).err().map(|e| e.0)
        } else {
            self.state_tx.try_send(change).err().map(|e| e.into_inner())
        };
        let timed_out = ResponseError::RequestTimedOut.code();
        match refused {
            Some(StateChange::LeaderAndIsr(_, reply)) => {
                reply(LeaderAndIsrResponse::default().with_error_code(timed_out))
            }
            Some(StateChange::StopReplica(_, reply)) => {
                reply(StopReplicaResponse::default().with_error_code(timed_out))
            }
            Some(StateChange::Stop) | None => {}
        }
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tp)
            .cloned()
    }

    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The local log of a partition this broker leads.
    pub fn leader_log(&self, topic: &str, partition: i32) -> Result<LeaderView, LookupError> {
        let tp = TopicPartition::new(topic, partition);
        let Some(p) = self.partition(&tp) else {
            return Err(match self.metadata.topic(topic) {
                Some(t) if t.partition(partition).is_some() => LookupError::NotLeader,
                _ => LookupError::UnknownTopicOrPartition,
            });
        };
        let role = p.role();
        if role.leader != self.broker_id {
            return Err(LookupError::NotLeader);
        }
        let log = p.log.clone().ok_or(LookupError::Offline)?;
        Ok(LeaderView {
            log,
            leader_epoch: role.leader_epoch,
            isr: role.isr,
            config: self.metadata.topic_config(topic),
        })
    }

    /// Appends validated records to a led partition and moves its high watermark (the ISR
    /// is the leader alone until replication lands). Wakes fetches waiting on it.
    pub fn append(
        &self,
        tp: &TopicPartition,
        log: &SharedLog,
        records: &kbroker_storage::validate::ValidatedRecords<'_>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let info = lock(log).and_then(|mut log| {
            let info = log.append_as_leader(records, leader_epoch, now_ms)?;
            let end = log.log_end_offset();
            log.set_high_watermark(end);
            Ok(info)
        })?;
        if !info.duplicate {
            self.fetch_purgatory.check_and_complete(tp);
        }
        Ok(info)
    }

    /// Appends a batch the broker itself built (group offsets) to a led partition; like
    /// [`ReplicaManager::append`] for the high watermark and waiting fetches.
    pub fn append_internal(
        &self,
        tp: &TopicPartition,
        log: &SharedLog,
        batch: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        lock(log).and_then(|mut log| {
            log.append_internal(batch, leader_epoch, now_ms)?;
            let end = log.log_end_offset();
            log.set_high_watermark(end);
            Ok(())
        })?;
        self.fetch_purgatory.check_and_complete(tp);
        Ok(())
    }

    fn apply_leader_and_isr(&self, request: &LeaderAndIsrRequest) -> LeaderAndIsrResponse {
        let mut response = LeaderAndIsrResponse::default();
        if request.controller_epoch < self.controller_epoch() {
            log::warn!(
                "LeaderAndIsr from controller {} with stale controller epoch {} < {}",
                request.controller_id.0,
                request.controller_epoch,
                self.controller_epoch()
            );
            response.error_code = ResponseError::StaleControllerEpoch.code();
            return response;
        }
        let my_epoch = self.broker_epoch();
        if request.broker_epoch >= 0 && my_epoch >= 0 && request.broker_epoch < my_epoch {
            response.error_code = ResponseError::StaleBrokerEpoch.code();
            return response;
        }
        self.controller_epoch
            .fetch_max(request.controller_epoch, Ordering::AcqRel);
        for topic in &request.topic_states {
            let name = topic.topic_name.0.to_string();
            let mut errors = Vec::with_capacity(topic.partition_states.len());
            let config = self.load_topic_config(&name);
            for ps in &topic.partition_states {
                let tp = TopicPartition::new(&name, ps.partition_index);
                let role = PartitionRole {
                    leader: ps.leader.0,
                    leader_epoch: ps.leader_epoch,
                    partition_epoch: ps.partition_epoch,
                    replicas: ps.replicas.iter().map(|b| b.0).collect(),
                    isr: ps.isr.iter().map(|b| b.0).collect(),
                };
                let code = self.become_leader_or_follower(&tp, role, &config, ps.is_new);
                errors.push(
                    LeaderAndIsrPartitionError::default()
                        .with_partition_index(ps.partition_index)
                        .with_error_code(code),
                );
            }
            // v0-4 list partitions with their topic names; v5+ under topic ids.
            response.partition_errors.extend(
                errors
                    .iter()
                    .map(|e| e.clone().with_topic_name(topic.topic_name.clone())),
            );
            response.topics.push(
                LeaderAndIsrTopicError::default()
                    .with_topic_id(topic.topic_id)
                    .with_partition_errors(errors),
            );
        }
        response
    }

    /// Reads the topic's config from the store (on the state thread) into the cache.
    fn load_topic_config(&self, topic: &str) -> Arc<TopicConfig> {
        match cluster::read_topic(&*self.store, topic) {
            Ok(Some((_, entity))) => {
                match topic_log_config(self.metadata.defaults(), &entity.config) {
                    Ok(log_config) => self.metadata.set_topic_config(
                        topic,
                        TopicConfig {
                            overrides: entity.config,
                            log_config,
                        },
                    ),
                    Err(e) => log::error!("topic {topic} has an invalid config: {e}"),
                }
            }
            Ok(None) => {}
            Err(e) => log::warn!("reading the config of topic {topic}: {e}"),
        }
        self.metadata.topic_config(topic)
    }

    fn become_leader_or_follower(
        &self,
        tp: &TopicPartition,
        role: PartitionRole,
        config: &TopicConfig,
        is_new: bool,
    ) -> i16 {
        if let Some(existing) = self.partition(tp) {
            let current = existing.role();
            if role.leader_epoch < current.leader_epoch
                || (role.leader_epoch == current.leader_epoch && role == current)
            {
                return if role == current {
                    0
                } else {
                    ResponseError::StaleControllerEpoch.code()
                };
            }
            let was_leader = current.leader == self.broker_id;
            let leads = role.leader == self.broker_id;
            *existing.role.write().unwrap_or_else(|p| p.into_inner()) = role.clone();
            self.after_role_change(tp, &existing, was_leader, leads);
            log::info!(
                "partition {tp} leader={} leader_epoch={} isr={:?} (this broker {})",
                role.leader,
                role.leader_epoch,
                role.isr,
                if leads { "leads" } else { "follows" }
            );
            return 0;
        }
        let created = self.logs.get_or_create(
            tp,
            config.log_config.clone(),
            crate::broker::now_ms(),
            is_new,
        );
        let log = match created {
            Ok(log) => Some(log),
            Err(e) => {
                log::warn!("partition {tp} is offline: {e}");
                None
            }
        };
        let leads = role.leader == self.broker_id;
        let partition = Arc::new(Partition {
            tp: tp.clone(),
            log,
            role: RwLock::new(role.clone()),
        });
        self.partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tp.clone(), Arc::clone(&partition));
        if partition.log.is_none() {
            return ResponseError::KafkaStorageError.code();
        }
        self.after_role_change(tp, &partition, false, leads);
        log::info!(
            "partition {tp} leader={} leader_epoch={} isr={:?} (this broker {})",
            role.leader,
            role.leader_epoch,
            role.isr,
            if leads { "leads" } else { "follows" }
        );
        0
    }

    fn after_role_change(&self, tp: &TopicPartition, p: &Partition, was_leader: bool, leads: bool) {
        if let Some(log) = &p.log {
            if leads {
                if let Ok(mut l) = lock(log) {
                    // No followers copy yet: everything the leader has is committed.
                    let end = l.log_end_offset();
                    l.set_high_watermark(end);
                }
            }
        }
        if let Some(listener) = self.leadership_listener() {
            match (&p.log, was_leader, leads) {
                (Some(log), false, true) => listener.became_leader(tp, log),
                (_, true, false) => listener.stopped_leading(tp),
                _ => {}
            }
        }
        // Waiting fetches on a partition that changed hands answer now.
        self.fetch_purgatory.check_and_complete(tp);
    }

    fn apply_stop_replica(&self, request: &StopReplicaRequest) -> StopReplicaResponse {
        let mut response = StopReplicaResponse::default();
        if request.controller_epoch < self.controller_epoch() {
            response.error_code = ResponseError::StaleControllerEpoch.code();
            return response;
        }
        self.controller_epoch
            .fetch_max(request.controller_epoch, Ordering::AcqRel);
        let mut targets: Vec<(TopicPartition, bool)> = Vec::new();
        for t in &request.topic_states {
            for p in &t.partition_states {
                targets.push((
                    TopicPartition::new(&t.topic_name.0, p.partition_index),
                    p.delete_partition,
                ));
            }
        }
        for p in &request.ungrouped_partitions {
            targets.push((
                TopicPartition::new(&p.topic_name.0, p.partition_index),
                request.delete_partitions,
            ));
        }
        for t in &request.topics {
            for p in &t.partition_indexes {
                targets.push((
                    TopicPartition::new(&t.name.0, *p),
                    request.delete_partitions,
                ));
            }
        }
        for (tp, delete) in targets {
            let removed = self
                .partitions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&tp);
            if let Some(p) = &removed {
                if p.role().leader == self.broker_id {
                    if let Some(l) = self.leadership_listener() {
                        l.stopped_leading(&tp);
                    }
                }
            }
            self.fetch_purgatory.check_and_complete(&tp);
            let mut code = 0;
            if delete {
                if let Err(e) = self.logs.delete(&tp) {
                    log::error!("deleting the log of {tp}: {e}");
                    code = ResponseError::KafkaStorageError.code();
                } else {
                    log::info!("stopped replica {tp} and deleted its log");
                }
            } else {
                log::info!("stopped replica {tp}");
            }
            response.partition_errors.push(
                StopReplicaPartitionError::default()
                    .with_topic_name(crate::handler::topic_name(&tp.topic))
                    .with_partition_index(tp.partition)
                    .with_error_code(code),
            );
        }
        response
    }

    /// Logs on disk of topics the cluster no longer has (deleted while this broker was
    /// down): removed once the controller's first full metadata says so.
    pub fn delete_stray_logs(&self, known_topics: &BTreeMap<String, ()>) {
        for (tp, _) in self.logs.all() {
            if !known_topics.contains_key(&tp.topic) && self.partition(&tp).is_none() {
                log::warn!("deleting log {tp}: its topic is not in the cluster");
                if let Err(e) = self.logs.delete(&tp) {
                    log::error!("deleting stray log {tp}: {e}");
                }
            }
        }
    }
}

fn run_state_changes(manager: Weak<ReplicaManager>, rx: Receiver<StateChange>) {
    while let Ok(change) = rx.recv() {
        let Some(m) = manager.upgrade() else { return };
        match change {
            StateChange::LeaderAndIsr(request, reply) => reply(m.apply_leader_and_isr(&request)),
            StateChange::StopReplica(request, reply) => reply(m.apply_stop_replica(&request)),
            StateChange::Stop => return,
        }
    }
}

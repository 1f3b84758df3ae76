//! The replica manager: the one owner of this broker's logs, partition roles, high
//! watermarks and replication — Kafka's `ReplicaManager` and `Partition`.
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
//! Replication (Kafka 2.8's rules): a follower's fetchers copy the leader's batches as they
//! are ([`crate::replica_fetcher`]). The leader tracks each follower's log end offset and
//! when it was last caught up (from the follower's fetch offsets); its high watermark is the
//! least log end offset over the ISR and only moves forward. A follower that caught up to
//! the high watermark (and the current epoch's start) joins the ISR; one not caught up for
//! `replica.lag.time.max.ms` leaves it. ISR changes are written by the leader to the state
//! znode, fenced by its version ([`crate::isr`]). Produce with acks=-1 waits in the produce
//! purgatory until the high watermark passes its records.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
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
use kbroker_storage::validate::validate_replica_records;
use kbroker_storage::{AppendInfo, Log, LogManager, StorageError, TopicPartition};

use crate::config::topic_log_config;
use crate::isr::{IsrChange, IsrOutcome, IsrWriter};
use crate::metadata_cache::{MetadataCache, TopicConfig};
use crate::replica_fetcher::{FetcherConfig, ReplicaFetcherManager};
use crate::replication_quota::ReplicationQuotas;

/// Waiting fetches at most (Kafka bounds purgatory size by request count, too).
pub const DELAYED_FETCH_MAX: usize = 10_000;
/// Produce requests waiting for acks=-1 at most.
pub const DELAYED_PRODUCE_MAX: usize = 10_000;
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
    /// The state znode's version (Kafka's partition epoch / zkVersion).
    pub partition_epoch: i32,
    pub controller_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// What the leader knows of one follower's progress (Kafka's `Replica`).
#[derive(Debug, Clone, Copy)]
struct FollowerState {
    /// Its log end offset (the offset it last fetched from); -1 until it fetched.
    log_end_offset: i64,
    last_caught_up_ms: i64,
    /// The leader's log end offset at its previous fetch, and when that was.
    last_fetch_leader_end: i64,
    last_fetch_ms: i64,
}

/// A partition this broker hosts a replica of.
pub struct Partition {
    pub tp: TopicPartition,
    /// None: the log could not be opened (its dir is offline).
    pub log: Option<SharedLog>,
    role: RwLock<PartitionRole>,
    /// Leader side: the followers' progress (empty while following).
    followers: Mutex<HashMap<i32, FollowerState>>,
    /// An ISR change of this partition is being written.
    isr_in_flight: AtomicBool,
}

impl Partition {
    pub fn role(&self) -> PartitionRole {
        self.role.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_role(&self, role: PartitionRole) {
        *self.role.write().unwrap_or_else(|p| p.into_inner()) = role;
    }

    fn followers(&self) -> std::sync::MutexGuard<'_, HashMap<i32, FollowerState>> {
        self.followers.lock().unwrap_or_else(|p| p.into_inner())
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
    fn became_leader(&self, tp: &TopicPartition);
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
    /// Work ordered after the state changes queued before it.
    After(Box<dyn FnOnce() + Send>),
    Stop,
}

/// Work run on the replica state thread (see [`ReplicaManager::set_before_leader_and_isr`]).
pub type StateHook = Box<dyn Fn() + Send + Sync>;

/// Replication settings of this broker.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    pub fetcher: FetcherConfig,
    /// `replica.lag.time.max.ms`.
    pub lag_time_max_ms: i64,
    /// The replication throttles' measuring windows: count and length.
    pub quota_windows: usize,
    pub quota_window_ms: i64,
}

pub struct ReplicaManager {
    pub broker_id: i32,
    pub logs: LogManager,
    pub fetch_purgatory: Purgatory<TopicPartition>,
    /// Produce requests with acks=-1 waiting for the high watermark.
    pub produce_purgatory: Purgatory<TopicPartition>,
    /// The replication throttles: what this broker sends as a leader, copies as a follower.
    pub quotas: ReplicationQuotas,
    fetchers: ReplicaFetcherManager,
    isr: IsrWriter,
    config: ReplicationConfig,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    metadata: Arc<MetadataCache>,
    store: Arc<dyn MetadataStore>,
    /// The highest controller epoch seen in a state change.
    controller_epoch: AtomicI32,
    /// This broker's registration epoch (the czxid of `/brokers/ids/<id>`).
    broker_epoch: AtomicI64,
    listener: Mutex<Option<Weak<dyn LeadershipListener>>>,
    /// Run on the state thread before each LeaderAndIsr is applied.
    before_leader_and_isr: Mutex<Option<StateHook>>,
    state_tx: Sender<StateChange>,
    state_thread: Mutex<Option<JoinHandle<()>>>,
    me: Weak<ReplicaManager>,
    /// Set once this broker's controlled shutdown is over: it follows nothing any more.
    leaving: AtomicBool,
}

impl ReplicaManager {
    pub fn start(
        broker_id: i32,
        logs: LogManager,
        metadata: Arc<MetadataCache>,
        store: Arc<dyn MetadataStore>,
        config: ReplicationConfig,
    ) -> Arc<ReplicaManager> {
        let (state_tx, state_rx) = crossbeam_channel::bounded(STATE_CHANGES_QUEUED_MAX);
        let manager = Arc::new_cyclic(|me: &Weak<ReplicaManager>| {
            let isr_me = me.clone();
            ReplicaManager {
                broker_id,
                logs,
                fetch_purgatory: Purgatory::new("fetch", DELAYED_FETCH_MAX),
                produce_purgatory: Purgatory::new("produce", DELAYED_PRODUCE_MAX),
                quotas: ReplicationQuotas::new(config.quota_window_ms, config.quota_windows),
                fetchers: ReplicaFetcherManager::new(config.fetcher.clone(), me.clone()),
                leaving: AtomicBool::new(false),
                isr: IsrWriter::start(
                    Arc::clone(&store),
                    Box::new(move |change, outcome| {
                        if let Some(m) = isr_me.upgrade() {
                            m.isr_outcome(change, outcome);
                        }
                    }),
                ),
                config,
                partitions: RwLock::new(HashMap::new()),
                metadata,
                store,
                controller_epoch: AtomicI32::new(-1),
                broker_epoch: AtomicI64::new(-1),
                listener: Mutex::new(None),
                before_leader_and_isr: Mutex::new(None),
                state_tx,
                state_thread: Mutex::new(None),
                me: me.clone(),
            }
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

    /// `hook` runs on the state thread before each LeaderAndIsr is applied (the broker
    /// applies the config changes it has not seen yet).
    pub fn set_before_leader_and_isr(&self, hook: StateHook) {
        *self
            .before_leader_and_isr
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hook);
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

    /// Stops the state thread after what is queued, the fetchers and the ISR writer.
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
        self.fetchers.shutdown();
        self.isr.shutdown();
        self.fetch_purgatory.shutdown();
        self.produce_purgatory.shutdown();
    }

    /// Partitions this broker is fetching as a follower.
    pub fn fetching(&self) -> usize {
        self.fetchers.fetching()
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

    /// Runs `work` on the state thread once the changes queued before it are applied (the
    /// local controller's UpdateMetadata: a client that sees a new partition in Metadata
    /// finds it led here, as the controller's LeaderAndIsr went first).
    /// The broker is going away (its controlled shutdown is over): stops every fetcher and
    /// starts none for a LeaderAndIsr still on its way — the controller has taken this
    /// broker out of the ISRs, and its fetching with the new epoch would put it back.
    /// Runs in order with the state changes already queued.
    pub fn stop_following(&self) {
        let me = self.me.clone();
        self.submit_after(Box::new(move || {
            if let Some(m) = me.upgrade() {
                m.leaving.store(true, Ordering::Release);
                m.fetchers.shutdown();
            }
        }));
    }

    pub fn submit_after(&self, work: Box<dyn FnOnce() + Send>) {
        if let Err(e) = self.state_tx.send(StateChange::After(work)) {
            if let StateChange::After(work) = e.0 {
                work();
            }
        }
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
            Some(StateChange::After(work)) => work(),
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

    /// A topic's config as the metadata cache has it.
    pub fn topic_config(&self, topic: &str) -> Arc<TopicConfig> {
        self.metadata.topic_config(topic)
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

    /// The log a consumer may read (KIP-392: Fetch v11+ consumers read from followers
    /// too, up to the follower's high watermark): the leader's, or with `allow_follower`
    /// this broker's follower replica. The flag says which.
    pub fn readable_log(
        &self,
        topic: &str,
        partition: i32,
        allow_follower: bool,
    ) -> Result<(LeaderView, bool), LookupError> {
        match self.leader_log(topic, partition) {
            Err(LookupError::NotLeader) if allow_follower => {}
            other => return other.map(|view| (view, true)),
        }
        let tp = TopicPartition::new(topic, partition);
        let p = self.partition(&tp).ok_or(LookupError::NotLeader)?;
        let role = p.role();
        if !role.replicas.contains(&self.broker_id) || role.leader < 0 {
            return Err(LookupError::NotLeader);
        }
        let log = p.log.clone().ok_or(LookupError::Offline)?;
        Ok((
            LeaderView {
                log,
                leader_epoch: role.leader_epoch,
                isr: role.isr,
                config: self.metadata.topic_config(topic),
            },
            false,
        ))
    }

    /// KIP-392's RackAwareReplicaSelector, on the leader: for a consumer in `client_rack`
    /// reading from `fetch_offset`, the follower in that rack to read from instead — the
    /// one furthest along among those that have the offset — unless the leader is in that
    /// rack (or none is). None means "read here".
    pub fn preferred_read_replica(
        &self,
        tp: &TopicPartition,
        client_rack: &str,
        fetch_offset: i64,
    ) -> Option<i32> {
        if client_rack.is_empty() {
            return None;
        }
        let p = self.partition(tp)?;
        let role = p.role();
        if role.leader != self.broker_id {
            return None;
        }
        let image = self.metadata.image();
        let in_rack = |b: i32| {
            image
                .brokers
                .get(&b)
                .is_some_and(|n| n.rack.as_deref() == Some(client_rack))
        };
        if in_rack(self.broker_id) {
            return None;
        }
        let followers = p.followers();
        role.replicas
            .iter()
            .filter(|b| **b != self.broker_id && in_rack(**b))
            .filter_map(|b| followers.get(b).map(|f| (*b, f)))
            .filter(|(_, f)| f.log_end_offset >= fetch_offset)
            .max_by_key(|(b, f)| (f.log_end_offset, f.last_caught_up_ms, -b))
            .map(|(b, _)| b)
    }

    /// Appends validated records to a led partition; the high watermark moves at once if
    /// the ISR is this broker alone, else as followers fetch. Wakes waiting fetches.
    pub fn append(
        &self,
        tp: &TopicPartition,
        log: &SharedLog,
        records: &kbroker_storage::validate::ValidatedRecords<'_>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let info = {
            let mut l = lock(log)?;
            let info = l.append_as_leader(records, leader_epoch, now_ms)?;
            if let Some(p) = self.partition(tp) {
                self.maybe_advance_high_watermark(&p, &mut l);
            }
            info
        };
        if !info.duplicate {
            self.fetch_purgatory.check_and_complete(tp);
            self.produce_purgatory.check_and_complete(tp);
        }
        Ok(info)
    }

    /// Appends a batch the broker itself built (group offsets) to a led partition, as
    /// [`ReplicaManager::append`]; returns the offset after it (what acks=-1 waits for).
    pub fn append_internal(
        &self,
        tp: &TopicPartition,
        log: &SharedLog,
        batch: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<i64, StorageError> {
        let end = {
            let mut l = lock(log)?;
            let info = l.append_internal(batch, leader_epoch, now_ms)?;
            if let Some(p) = self.partition(tp) {
                self.maybe_advance_high_watermark(&p, &mut l);
            }
            info.last_offset + 1
        };
        // Not the produce purgatory: the caller holds the group lock, which completing a
        // waiting commit takes. An append alone moves the high watermark only when the ISR
        // is this broker alone, and then nothing waits.
        self.fetch_purgatory.check_and_complete(tp);
        Ok(end)
    }

    /// Kafka's `maybeIncrementLeaderHW`: the least log end offset over the ISR (a follower
    /// that has not fetched yet holds it where it is); never moves back. True if it moved.
    fn maybe_advance_high_watermark(&self, p: &Partition, log: &mut Log) -> bool {
        let role = p.role();
        if role.leader != self.broker_id {
            return false;
        }
        let mut hw = log.log_end_offset();
        let followers = p.followers();
        for r in role.isr.iter().filter(|r| **r != self.broker_id) {
            match followers.get(r) {
                Some(f) if f.log_end_offset >= 0 => hw = hw.min(f.log_end_offset),
                _ => hw = hw.min(log.high_watermark()),
            }
        }
        drop(followers);
        if hw > log.high_watermark() {
            log.set_high_watermark(hw);
            return true;
        }
        false
    }

    /// The `min.insync.replicas` of a topic (its override, else the broker's).
    pub fn min_insync_replicas(config: &TopicConfig, broker_default: i32) -> i32 {
        config
            .overrides
            .get("min.insync.replicas")
            .and_then(|v| v.parse().ok())
            .unwrap_or(broker_default)
    }

    /// Where an acks=-1 produce to `tp` that needs the high watermark at `required` stands:
    /// None while waiting, else its error code (0 when replicated). Kafka's
    /// `DelayedProduce` check: NOT_LEADER_OR_FOLLOWER once this broker stopped leading,
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below `min_isr` meanwhile.
    pub fn produce_status(
        &self,
        tp: &TopicPartition,
        leader_epoch: i32,
        required: i64,
        min_isr: i32,
    ) -> Option<i16> {
        let Some(p) = self.partition(tp) else {
            return Some(ResponseError::NotLeaderOrFollower.code());
        };
        let role = p.role();
        if role.leader != self.broker_id || role.leader_epoch != leader_epoch {
            return Some(ResponseError::NotLeaderOrFollower.code());
        }
        let log = p.log.as_ref()?;
        let hw = match lock(log) {
            Ok(l) => l.high_watermark(),
            Err(e) => return Some(crate::handler::storage_error_code(&e)),
        };
        if hw < required {
            return None;
        }
        if (role.isr.len() as i32) < min_isr {
            return Some(ResponseError::NotEnoughReplicasAfterAppend.code());
        }
        Some(0)
    }

    /// Calls `done` with [`ReplicaManager::produce_status`]'s code once the high watermark
    /// of `tp` reaches `required` (REQUEST_TIMED_OUT after `timeout`): acks=-1 for records
    /// the broker writes itself (committed offsets).
    pub fn when_replicated(
        &self,
        tp: TopicPartition,
        leader_epoch: i32,
        required: i64,
        timeout: std::time::Duration,
        done: ReplicatedCallback,
    ) {
        let op = WhenReplicated {
            replicas: self.me.clone(),
            tp: tp.clone(),
            leader_epoch,
            required,
            done: Mutex::new(Some(done)),
        };
        self.produce_purgatory
            .try_complete_else_watch(Box::new(op), &[tp], timeout);
    }

    /// The log of a partition this broker follows in `leader_epoch` (for its fetcher).
    pub fn follower_log(&self, tp: &TopicPartition, leader_epoch: i32) -> Option<SharedLog> {
        let p = self.partition(tp)?;
        let role = p.role();
        if role.leader == self.broker_id || role.leader_epoch != leader_epoch {
            return None;
        }
        p.log.clone()
    }

    /// Appends what the fetcher got from the leader (if the log still ends at
    /// `fetch_offset`: else a truncation intervened and the response is stale) and moves the
    /// follower's high watermark and log start after the leader's. Returns the new log end.
    pub fn append_as_follower(
        &self,
        tp: &TopicPartition,
        leader_epoch: i32,
        fetch_offset: i64,
        records: &[u8],
        leader_high_watermark: i64,
        leader_log_start: i64,
    ) -> Result<Option<i64>, StorageError> {
        let Some(log) = self.follower_log(tp, leader_epoch) else {
            return Ok(None);
        };
        let end = self.append_fetched(
            tp,
            &log,
            leader_epoch,
            fetch_offset,
            records,
            (leader_high_watermark, leader_log_start),
        )?;
        if end.is_some() {
            // Consumers reading from this follower (KIP-392) wait in the purgatory too.
            self.fetch_purgatory.check_and_complete(tp);
        }
        Ok(end)
    }

    fn append_fetched(
        &self,
        tp: &TopicPartition,
        log: &SharedLog,
        leader_epoch: i32,
        fetch_offset: i64,
        records: &[u8],
        (leader_high_watermark, leader_log_start): (i64, i64),
    ) -> Result<Option<i64>, StorageError> {
        let mut l = lock(log)?;
        // Again under the log lock: becoming leader changes the role before it takes the
        // lock to begin its epoch, so a fetch that raced with it is dropped here rather than
        // appended to the new leader's log.
        if self.follower_log(tp, leader_epoch).is_none() || l.log_end_offset() != fetch_offset {
            return Ok(None);
        }
        if !records.is_empty() {
            match validate_replica_records(records) {
                Ok(Some(valid)) => {
                    l.append_as_follower(&valid, crate::broker::now_ms())?;
                }
                Ok(None) => {}
                Err(e) => return Err(StorageError::InvalidBatch(e)),
            }
        }
        let hw = leader_high_watermark.min(l.log_end_offset());
        if hw > l.high_watermark() {
            l.set_high_watermark(hw);
        }
        let start = leader_log_start.min(l.high_watermark());
        if start > l.log_start_offset() {
            l.advance_log_start_offset(start)?;
        }
        Ok(Some(l.log_end_offset()))
    }

    /// A follower's fetch from `fetch_offset` (Kafka's `updateFollowerFetchState`): its
    /// log end offset and caught-up time, then the high watermark, and the follower joins
    /// the ISR once caught up. Errors if this broker does not lead `tp` for that replica.
    pub fn record_follower_fetch(
        &self,
        tp: &TopicPartition,
        replica: i32,
        fetch_offset: i64,
        current_leader_epoch: i32,
        now_ms: i64,
    ) -> Result<(), LookupError> {
        let p = self
            .partition(tp)
            .ok_or(LookupError::UnknownTopicOrPartition)?;
        let role = p.role();
        if role.leader != self.broker_id
            || !role.replicas.contains(&replica)
            || replica == self.broker_id
        {
            return Err(LookupError::NotLeader);
        }
        if current_leader_epoch >= 0 && current_leader_epoch != role.leader_epoch {
            // Kafka validates the epoch before it updates the follower's state: a fetch
            // from before the last leadership change (one in flight while the controller
            // took the replica out of the ISR for a controlled shutdown, say) must not
            // count, or it would put a replica that is going away back into the ISR. The
            // response answers FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH.
            return Ok(());
        }
        let log = p.log.clone().ok_or(LookupError::Offline)?;
        let (advanced, expand) = {
            let mut l = lock(&log).map_err(|_| LookupError::Offline)?;
            let leader_end = l.log_end_offset();
            if fetch_offset > leader_end {
                // Beyond this log: a divergent replica (its fetch answers OFFSET_OUT_OF_RANGE
                // and it truncates); its offset says nothing about what it shares with us.
                return Ok(());
            }
            {
                let mut followers = p.followers();
                let f = followers.entry(replica).or_insert(FollowerState {
                    log_end_offset: -1,
                    last_caught_up_ms: 0,
                    last_fetch_leader_end: -1,
                    last_fetch_ms: 0,
                });
                if fetch_offset >= leader_end {
                    f.last_caught_up_ms = now_ms;
                } else if fetch_offset >= f.last_fetch_leader_end && f.last_fetch_leader_end >= 0 {
                    f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
                }
                f.log_end_offset = fetch_offset.min(leader_end);
                f.last_fetch_leader_end = leader_end;
                f.last_fetch_ms = now_ms;
            }
            let advanced = self.maybe_advance_high_watermark(&p, &mut l);
            // Kafka's `isFollowerInSync` for expansion: caught up to the high watermark and
            // into the current leader epoch.
            let epoch_start = l.epoch_start(role.leader_epoch).unwrap_or(0);
            let expand = !role.isr.contains(&replica)
                && fetch_offset >= l.high_watermark()
                && fetch_offset >= epoch_start;
            (advanced, expand)
        };
        if expand {
            let mut isr = role.isr.clone();
            isr.push(replica);
            self.propose_isr(&p, &role, isr);
        }
        if advanced {
            self.produce_purgatory.check_and_complete(tp);
            self.fetch_purgatory.check_and_complete(tp);
        }
        Ok(())
    }

    /// Removes from the ISR of every led partition the followers not caught up for
    /// `replica.lag.time.max.ms` (Kafka's `maybeShrinkIsr`, run periodically).
    pub fn shrink_lagging_isrs(&self, now_ms: i64) {
        for p in self.all_partitions() {
            let role = p.role();
            if role.leader != self.broker_id || role.isr.len() <= 1 {
                continue;
            }
            let lagging: Vec<i32> = {
                let followers = p.followers();
                role.isr
                    .iter()
                    .copied()
                    .filter(|r| *r != self.broker_id)
                    // No state yet: the role changed and `become_leader` has not reset the
                    // followers (it gives every replica a state, the in-sync ones caught
                    // up now). Not lagging: shrinking in that window dropped healthy ones.
                    .filter(|r| {
                        followers.get(r).is_some_and(|f| {
                            now_ms - f.last_caught_up_ms > self.config.lag_time_max_ms
                        })
                    })
                    .collect()
            };
            if lagging.is_empty() {
                continue;
            }
            log::info!(
                "partition {} shrinks its ISR: {lagging:?} not caught up for {} ms",
                p.tp,
                self.config.lag_time_max_ms
            );
            let isr: Vec<i32> = role
                .isr
                .iter()
                .copied()
                .filter(|r| !lagging.contains(r))
                .collect();
            self.propose_isr(&p, &role, isr);
        }
    }

    fn propose_isr(&self, p: &Partition, role: &PartitionRole, isr: Vec<i32>) {
        if p.isr_in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        let change = IsrChange {
            tp: p.tp.clone(),
            leader: self.broker_id,
            leader_epoch: role.leader_epoch,
            controller_epoch: role.controller_epoch,
            isr,
            zk_version: role.partition_epoch,
        };
        if !self.isr.submit(change) {
            p.isr_in_flight.store(false, Ordering::Release);
        }
    }

    /// The ISR writer's outcome: the new ISR in force (the high watermark may move), or the
    /// znode as the controller left it.
    fn isr_outcome(&self, change: &IsrChange, outcome: IsrOutcome) {
        let Some(p) = self.partition(&change.tp) else {
            return;
        };
        let mut role = p.role();
        match outcome {
            IsrOutcome::Written(version) if role.leader_epoch == change.leader_epoch => {
                role.isr = change.isr.clone();
                role.partition_epoch = version;
                p.set_role(role);
            }
            IsrOutcome::Written(_) => {}
            IsrOutcome::Moved(Some(state))
                if state.leader == self.broker_id && state.leader_epoch == role.leader_epoch =>
            {
                // Changed by someone else within this leader epoch: adopt it and go on.
                role.isr = state.isr;
                role.partition_epoch = state.zk_version;
                p.set_role(role);
            }
            IsrOutcome::Moved(_) => {
                log::warn!(
                    "partition {}: the state znode moved on (a new leader or epoch); this broker's \
                     ISR change is fenced until the controller's next LeaderAndIsr",
                    change.tp
                );
            }
            IsrOutcome::Failed(e) => {
                log::warn!("partition {}: writing the ISR failed: {e}", change.tp);
            }
        }
        p.isr_in_flight.store(false, Ordering::Release);
        if let Some(mut l) = p.log.as_ref().and_then(|log| lock(log).ok()) {
            self.maybe_advance_high_watermark(&p, &mut l);
        }
        // Whether or not it moved, the ISR changed: waiting produces re-check
        // min.insync.replicas.
        self.produce_purgatory.check_and_complete(&change.tp);
        self.fetch_purgatory.check_and_complete(&change.tp);
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
        if let Some(hook) = self
            .before_leader_and_isr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            hook();
        }
        // Where the leaders are (their inter-broker endpoints), for the fetchers.
        let leaders: HashMap<i32, String> = request
            .live_leaders
            .iter()
            .map(|l| (l.broker_id.0, format!("{}:{}", l.host_name, l.port)))
            .collect();
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
                    controller_epoch: ps.controller_epoch,
                    replicas: ps.replicas.iter().map(|b| b.0).collect(),
                    isr: ps.isr.iter().map(|b| b.0).collect(),
                };
                let code = self.become_leader_or_follower(
                    &tp,
                    role,
                    &config,
                    ps.is_new,
                    *topic.topic_id.as_bytes(),
                    &leaders,
                );
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

    /// Reads `topic`'s config from the store again (a config change notification said it
    /// changed) and applies it to the cache and to every local log of the topic.
    pub fn reload_topic_config(&self, topic: &str) {
        let config = self.load_topic_config(topic);
        for (tp, log) in self.logs.all() {
            if tp.topic == topic {
                if let Ok(mut log) = lock(&log) {
                    log.set_config(config.log_config.clone());
                }
            }
        }
        log::info!("topic {topic}: config reloaded {:?}", config.overrides);
    }

    /// Gives every log its topic's config as the metadata cache now has it (after the
    /// topic defaults changed).
    pub fn apply_topic_configs(&self) {
        for (tp, log) in self.logs.all() {
            let config = self.metadata.topic_config(&tp.topic);
            if let Ok(mut log) = lock(&log) {
                log.set_config(config.log_config.clone());
            }
        }
    }

    /// Reads the topic's config from the store (on the state thread) into the cache.
    fn load_topic_config(&self, topic: &str) -> Arc<TopicConfig> {
        match cluster::read_topic(&*self.store, topic) {
            Ok(Some((_, entity))) => {
                match topic_log_config(&self.metadata.defaults(), &entity.config) {
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
        topic_id: [u8; 16],
        leaders: &HashMap<i32, String>,
    ) -> i16 {
        let (partition, was_leader) = match self.partition(tp) {
            Some(existing) => {
                let current = existing.role();
                if role.leader_epoch < current.leader_epoch
                    || (role.leader_epoch == current.leader_epoch
                        && role.partition_epoch <= current.partition_epoch)
                {
                    // Not newer than what is in force (the leader's own ISR writes bump the
                    // partition epoch without the controller).
                    return if role.leader_epoch == current.leader_epoch {
                        0
                    } else {
                        ResponseError::StaleControllerEpoch.code()
                    };
                }
                let was_leader = current.leader == self.broker_id;
                existing.set_role(role.clone());
                (existing, was_leader)
            }
            None => {
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
                if let Some(log) = &log {
                    if let Err(code) = check_partition_metadata(tp, log, topic_id) {
                        return code;
                    }
                }
                let partition = Arc::new(Partition {
                    tp: tp.clone(),
                    log,
                    role: RwLock::new(role.clone()),
                    followers: Mutex::new(HashMap::new()),
                    isr_in_flight: AtomicBool::new(false),
                });
                self.partitions
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(tp.clone(), Arc::clone(&partition));
                if partition.log.is_none() {
                    return ResponseError::KafkaStorageError.code();
                }
                (partition, false)
            }
        };
        let leads = role.leader == self.broker_id;
        if leads {
            self.become_leader(&partition, &role);
        } else {
            self.become_follower(&partition, &role, leaders);
        }
        if let Some(listener) = self.leadership_listener() {
            match (&partition.log, was_leader, leads) {
                (Some(_), false, true) => listener.became_leader(tp),
                (_, true, false) => listener.stopped_leading(tp),
                _ => {}
            }
        }
        // Waiting fetches and produces of a partition that changed hands answer now.
        self.fetch_purgatory.check_and_complete(tp);
        self.produce_purgatory.check_and_complete(tp);
        log::info!(
            "partition {tp} leader={} leader_epoch={} isr={:?} (this broker {})",
            role.leader,
            role.leader_epoch,
            role.isr,
            if leads { "leads" } else { "follows" }
        );
        0
    }

    /// Kafka's `makeLeader`: fetching stops, the epoch begins at the log end, every
    /// follower's progress is unknown (ISR members count as caught up now), and the high
    /// watermark stays until followers report.
    fn become_leader(&self, p: &Partition, role: &PartitionRole) {
        self.fetchers.remove(std::slice::from_ref(&p.tp));
        let now = crate::broker::now_ms();
        {
            let mut followers = p.followers();
            followers.clear();
            for r in role.replicas.iter().filter(|r| **r != self.broker_id) {
                followers.insert(
                    *r,
                    FollowerState {
                        log_end_offset: -1,
                        last_caught_up_ms: if role.isr.contains(r) { now } else { 0 },
                        last_fetch_leader_end: -1,
                        last_fetch_ms: 0,
                    },
                );
            }
        }
        if let Some(log) = &p.log {
            match lock(log) {
                Ok(mut l) => {
                    if let Err(e) = l.begin_leader_epoch(role.leader_epoch) {
                        log::error!(
                            "partition {}: recording leader epoch {}: {e}",
                            p.tp,
                            role.leader_epoch
                        );
                    }
                    self.maybe_advance_high_watermark(p, &mut l);
                }
                Err(e) => log::warn!("partition {}: {e}", p.tp),
            }
        }
    }

    /// Kafka's `makeFollower`: follow the new leader, starting with the epoch check.
    fn become_follower(&self, p: &Partition, role: &PartitionRole, leaders: &HashMap<i32, String>) {
        p.followers().clear();
        if role.leader < 0 || p.log.is_none() || self.leaving.load(Ordering::Acquire) {
            self.fetchers.remove(std::slice::from_ref(&p.tp));
            return;
        }
        match leaders.get(&role.leader) {
            Some(addr) => self
                .fetchers
                .add(&p.tp, role.leader, addr, role.leader_epoch),
            None => {
                log::warn!(
                    "partition {}: no endpoint for leader {} in LeaderAndIsr; not fetching",
                    p.tp,
                    role.leader
                );
                self.fetchers.remove(std::slice::from_ref(&p.tp));
            }
        }
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
        let stopping: Vec<TopicPartition> = targets.iter().map(|(tp, _)| tp.clone()).collect();
        self.fetchers.remove(&stopping);
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
            self.produce_purgatory.check_and_complete(&tp);
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

/// Called with an error code (0: replicated).
/// Called with 0 once appended records are on every in-sync replica, else with the
/// produce error code of what went wrong.
pub type ReplicatedCallback = Box<dyn FnOnce(i16) + Send>;

struct WhenReplicated {
    replicas: Weak<ReplicaManager>,
    tp: TopicPartition,
    leader_epoch: i32,
    required: i64,
    done: Mutex<Option<ReplicatedCallback>>,
}

impl WhenReplicated {
    fn status(&self) -> Option<i16> {
        match self.replicas.upgrade() {
            Some(m) => m.produce_status(&self.tp, self.leader_epoch, self.required, 1),
            None => Some(ResponseError::NotLeaderOrFollower.code()),
        }
    }
}

impl kbroker_replication::purgatory::DelayedOperation for WhenReplicated {
    fn can_complete(&self) -> bool {
        self.status().is_some()
    }

    fn complete(&self, _expired: bool) {
        let code = self
            .status()
            .unwrap_or(ResponseError::RequestTimedOut.code());
        if let Some(done) = self.done.lock().unwrap_or_else(|p| p.into_inner()).take() {
            done(code);
        }
    }
}

fn run_state_changes(manager: Weak<ReplicaManager>, rx: Receiver<StateChange>) {
    while let Ok(change) = rx.recv() {
        let Some(m) = manager.upgrade() else { return };
        match change {
            StateChange::LeaderAndIsr(request, reply) => reply(m.apply_leader_and_isr(&request)),
            StateChange::StopReplica(request, reply) => reply(m.apply_stop_replica(&request)),
            StateChange::After(work) => {
                drop(m);
                work();
            }
            StateChange::Stop => return,
        }
    }
}

/// Kafka's INCONSISTENT_TOPIC_ID (newer than the protocol crate's error enum).
const INCONSISTENT_TOPIC_ID: i16 = 103;

/// The partition's `partition.metadata` names the topic id the controller sent (written
/// when the log first hears of it). A different id means the directory belongs to an older
/// topic of the same name: the partition is refused (INCONSISTENT_TOPIC_ID), as in Kafka,
/// rather than serving the old topic's records as the new one's. A file that does not parse
/// is rewritten (it names nothing to compare with).
fn check_partition_metadata(
    tp: &TopicPartition,
    log: &SharedLog,
    topic_id: [u8; 16],
) -> Result<(), i16> {
    if topic_id == [0; 16] {
        return Ok(());
    }
    let wanted = kbroker_coordinator::layout::topic_id_to_string(&topic_id);
    let log = lock(log).map_err(|e| crate::handler::storage_error_code(&e))?;
    match log.partition_metadata_topic_id() {
        Ok(Some(id)) if id == wanted => Ok(()),
        Ok(Some(id)) => {
            log::error!(
                "partition {tp}: partition.metadata names topic id {id}, the controller {wanted}; \
                 refusing the partition (a directory of an older topic of the same name?)"
            );
            Err(INCONSISTENT_TOPIC_ID)
        }
        Ok(None) | Err(StorageError::Corrupt { .. }) => log
            .write_partition_metadata(&wanted)
            .map_err(|e| crate::handler::storage_error_code(&e)),
        Err(e) => Err(crate::handler::storage_error_code(&e)),
    }
}

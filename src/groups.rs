//! The group coordinator's I/O shell around the pure `kbroker_coordinator::group` machine.
//!
//! Each group lives in memory behind its own mutex (the map of groups is locked only to find,
//! add or remove one, never across I/O or while a group is locked); each group's committed
//! offsets are records in
//! `__consumer_offsets` partition `partition_for_group(group)` (created on first use,
//! compacted), appended before the commit is acknowledged and loaded back at start. Parked
//! JoinGroup/SyncGroup replies are completed by other requests or by the `kb-group-timer`
//! thread, which ticks every group (session expiry, rebalance deadlines, initial delay) and
//! expires old offsets of empty groups (`offsets.retention.minutes`). Membership, partition
//! ownership and committed offsets are mirrored asynchronously into Kafka's `/consumers/...`
//! znodes by the `kb-zk-mirror` thread, which also writes a dump of the metadata tree for
//! `kbroker metadata`. No handler thread ever waits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use kbroker_coordinator::group::{Group, GroupConfig, GroupEvent, JoinResult, Reply, SyncResult};
use kbroker_coordinator::offsets::{self, GroupValue, OffsetValue, OffsetsKey};
use kbroker_coordinator::{layout, store, CreateMode, MetadataStore, StoreError};
use kbroker_reactor::Responder;
use kbroker_storage::batch::{self, NewRecord};
use kbroker_storage::TopicPartition;

use crate::admin::{Admin, TopicSpec};
use crate::broker::now_ms;
use crate::metadata_cache::MetadataCache;
use crate::replica_manager::LeadershipListener;
pub use crate::replica_manager::ReplicatedCallback;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Mirror operations queued at most; past that they are dropped with a warning (the
/// mirror is for tools; the log is the source of truth).
pub const MIRROR_QUEUE_MAX: usize = 100_000;
const TICK_MS: u64 = 100;
const DUMP_INTERVAL_MS: i64 = 250;

/// Who to answer when a parked JoinGroup / SyncGroup completes.
pub struct PendingReply {
    pub responder: Responder,
    pub correlation_id: i32,
    pub version: i16,
}

/// Encodes and sends the replies of parked requests (implemented in `src/handler/`: the
/// coordinator decides, the handlers speak the protocol).
pub trait GroupReplies: Send + Sync {
    fn join(&self, pending: PendingReply, result: &JoinResult);
    fn sync(&self, pending: PendingReply, result: &SyncResult);
}

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub group: GroupConfig,
    pub offsets_partitions: i32,
    pub offsets_replication_factor: i16,
    pub offsets_segment_bytes: usize,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: i64,
    pub offsets_commit_timeout_ms: u64,
    pub metadata_dump_path: std::path::PathBuf,
}

pub struct GroupEntry {
    pub group: Group<PendingReply>,
    pub offsets: BTreeMap<(String, i32), OffsetValue>,
    /// Set when the entry leaves the map (deleted, unloaded): a request that found it just
    /// before looks it up again instead of changing a group nobody else sees.
    removed: bool,
    /// Since when the group has had no members (Kafka's currentStateTimestamp of an Empty
    /// group): committed offsets of a consumer group are kept `offsets.retention.minutes`
    /// from then. Restored from the group record; None while it has members.
    empty_since_ms: Option<i64>,
}

impl GroupEntry {
    pub fn new(id: &str) -> Self {
        GroupEntry {
            group: Group::new(id),
            offsets: BTreeMap::new(),
            removed: false,
            empty_since_ms: None,
        }
    }
}

/// One group, locked on its own.
pub type SharedGroup = Arc<Mutex<GroupEntry>>;

fn lock_group(g: &SharedGroup) -> MutexGuard<'_, GroupEntry> {
    g.lock().unwrap_or_else(|p| p.into_inner())
}

pub enum MirrorOp {
    Event {
        group: String,
        event: GroupEvent,
    },
    Offset {
        group: String,
        topic: String,
        partition: i32,
        offset: i64,
    },
    GroupDeleted {
        group: String,
    },
}

pub struct GroupCoordinator {
    pub config: CoordinatorConfig,
    log: Arc<dyn OffsetsLog>,
    replies: Box<dyn GroupReplies>,
    groups: Mutex<HashMap<String, SharedGroup>>,
    /// `__consumer_offsets` partitions this broker leads: true once loaded.
    owned: Mutex<HashMap<i32, bool>>,
    mirror_tx: Sender<MirrorOp>,
    mirror_rx: Receiver<MirrorOp>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Group records written to the leader's log of an offsets partition.
pub struct Appended {
    pub tp: TopicPartition,
    pub leader_epoch: i32,
    /// The offset after them: committed once the high watermark reaches it.
    pub end: i64,
}

/// Receives the key and value of one record read back from the offsets log.
pub type RecordVisitor<'a> = dyn FnMut(Option<&[u8]>, Option<&[u8]>) + 'a;

/// What the group coordinator needs of `__consumer_offsets`, and all it touches of it: the
/// replica manager implements it over the partitions this broker leads (and a test over a
/// model). The coordinator never sees partition state, high watermarks or purgatories.
pub trait OffsetsLog: Send + Sync {
    /// Appends one record batch to this broker's leader log of offsets partition
    /// `partition`; Err(NotCoordinator) when this broker does not lead it.
    fn append_batch(
        &self,
        partition: i32,
        batch: &[u8],
        now_ms: i64,
    ) -> Result<Appended, CoordinatorError>;
    /// Calls `done` once `appended` is replicated to the ISR or `timeout` has passed.
    fn when_replicated(&self, appended: Appended, timeout: Duration, done: ReplicatedCallback);
    /// Visits the key and value of every record of this broker's log of offsets partition
    /// `partition` from its start, in offset order; returns how many were visited.
    fn read_records(
        &self,
        partition: i32,
        visit: &mut RecordVisitor<'_>,
    ) -> Result<usize, CoordinatorError>;
}

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("the offsets topic is not available: {0}")]
    OffsetsTopic(String),
    #[error("writing offsets failed: {0}")]
    Storage(#[from] kbroker_storage::StorageError),
    #[error("not the coordinator for this group")]
    NotCoordinator,
}

impl GroupCoordinator {
    pub fn new(
        config: CoordinatorConfig,
        log: Arc<dyn OffsetsLog>,
        replies: Box<dyn GroupReplies>,
    ) -> Self {
        let (mirror_tx, mirror_rx) = crossbeam_channel::bounded(MIRROR_QUEUE_MAX);
        GroupCoordinator {
            config,
            log,
            replies,
            groups: Mutex::new(HashMap::new()),
            owned: Mutex::new(HashMap::new()),
            mirror_tx,
            mirror_rx,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, SharedGroup>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on group `id` under that group's lock alone; None when there is no such
    /// group.
    pub fn with_group<R>(&self, id: &str, f: impl FnOnce(&mut GroupEntry) -> R) -> Option<R> {
        self.locked(id, false, f)
    }

    /// Runs `f` on group `id` under that group's lock alone, adding an empty group first
    /// if there is none.
    pub fn with_group_or_create<R>(&self, id: &str, f: impl FnOnce(&mut GroupEntry) -> R) -> R {
        self.locked(id, true, f)
            .expect("a group is created when missing")
    }

    fn locked<R>(&self, id: &str, create: bool, f: impl FnOnce(&mut GroupEntry) -> R) -> Option<R> {
        loop {
            let shared = {
                let mut map = self.map();
                match map.get(id) {
                    Some(g) => Arc::clone(g),
                    None if create => {
                        let g = Arc::new(Mutex::new(GroupEntry::new(id)));
                        map.insert(id.to_string(), Arc::clone(&g));
                        g
                    }
                    None => return None,
                }
            };
            let mut entry = lock_group(&shared);
            if entry.removed {
                continue; // removed between the lookup and the lock: look again
            }
            return Some(f(&mut entry));
        }
    }

    /// Every group, each locked in turn (never two at once) while `f` runs on it.
    pub fn for_each_group(&self, mut f: impl FnMut(&str, &mut GroupEntry)) {
        let all: Vec<(String, SharedGroup)> = self
            .map()
            .iter()
            .map(|(id, g)| (id.clone(), Arc::clone(g)))
            .collect();
        for (id, shared) in all {
            let mut entry = lock_group(&shared);
            if !entry.removed {
                f(&id, &mut entry);
            }
        }
    }

    /// Takes group `id`, whose lock the caller holds as `entry`, out of the map.
    pub fn remove_group(&self, id: &str, entry: &mut GroupEntry) {
        entry.removed = true;
        self.map().remove(id);
    }

    pub fn partition_for(&self, group: &str) -> i32 {
        offsets::partition_for_group(group, self.config.offsets_partitions)
    }

    /// Queues the creation of `__consumer_offsets` if this broker's metadata does not have
    /// it yet; Err until it exists (clients ask again, as with Kafka).
    pub fn ensure_offsets_topic(
        &self,
        metadata: &MetadataCache,
        admin: &Admin,
        cluster: bool,
    ) -> Result<(), CoordinatorError> {
        if metadata.topic(OFFSETS_TOPIC).is_some() {
            return Ok(());
        }
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert(
            "segment.bytes".to_string(),
            self.config.offsets_segment_bytes.to_string(),
        );
        // offsets.topic.replication.factor: a cluster refuses to create the topic with fewer
        // live brokers (clients retry FindCoordinator until enough have registered), as
        // Kafka does; a single node caps it at its one replica.
        let replication_factor = if cluster {
            self.config.offsets_replication_factor
        } else {
            1
        };
        let spec = TopicSpec {
            name: OFFSETS_TOPIC.to_string(),
            num_partitions: Some(self.config.offsets_partitions),
            replication_factor: Some(replication_factor),
            assignments: BTreeMap::new(),
            configs,
        };
        admin.create_in_background(spec);
        Err(CoordinatorError::OffsetsTopic(
            "the offsets topic is being created".into(),
        ))
    }

    /// True once this broker leads `__consumer_offsets` partition `partition` and has
    /// loaded its groups.
    pub fn is_loaded(&self, partition: i32) -> bool {
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&partition)
            .is_some_and(|loaded| *loaded)
    }

    /// Loads the committed offsets and groups (generation, members) of one `__consumer_offsets`
    /// partition into memory; returns the records read.
    fn load_partition(&self, partition: i32) -> Result<usize, CoordinatorError> {
        let mut loaded: HashMap<String, GroupEntry> = HashMap::new();
        let now = now_ms();
        let records = self.log.read_records(partition, &mut |key, value| {
            apply_record(&mut loaded, key, value, now)
        })?;
        loaded.retain(|_, g| !g.offsets.is_empty() || g.group.generation_id() > 0);
        let count = loaded.len();
        let mut groups = self.map();
        for (id, entry) in loaded {
            // A group already in memory (created while loading) keeps its live state.
            groups
                .entry(id)
                .or_insert_with(|| Arc::new(Mutex::new(entry)));
        }
        log::info!("loaded {count} groups from {records} records of {OFFSETS_TOPIC}-{partition}");
        Ok(records)
    }

    /// Appends records for `group` to its offsets partition; returns once written to the
    /// leader's log, with where they end (see [`GroupCoordinator::when_replicated`]).
    pub fn append(
        &self,
        group: &str,
        records: Vec<(OffsetsKey, Option<Vec<u8>>)>,
    ) -> Result<Option<Appended>, CoordinatorError> {
        if records.is_empty() {
            return Ok(None);
        }
        let partition = self.partition_for(group);
        if !self.is_loaded(partition) {
            return Err(CoordinatorError::NotCoordinator);
        }
        let now = now_ms();
        let new: Vec<NewRecord> = records
            .into_iter()
            .map(|(k, v)| NewRecord {
                key: Some(k.encode()),
                value: v,
                headers: Vec::new(),
                timestamp: now,
            })
            .collect();
        let bytes = batch::build_batch(0, &new);
        self.log.append_batch(partition, &bytes, now).map(Some)
    }

    /// Calls `done` with 0 once every in-sync replica has `appended`, else with the produce
    /// error of what went wrong (`offsets.commit.timeout.ms` at most); the OffsetCommit
    /// handler maps it to what the client is told.
    pub fn when_replicated(&self, appended: Appended, done: ReplicatedCallback) {
        let timeout = Duration::from_millis(self.config.offsets_commit_timeout_ms);
        self.log.when_replicated(appended, timeout, done);
    }

    pub fn mirror(&self, op: MirrorOp) {
        if self.mirror_tx.try_send(op).is_err() {
            log::warn!("metadata mirror queue full; dropping an update");
        }
    }

    pub fn mirror_events(&self, group: &str, events: Vec<GroupEvent>) {
        for event in events {
            self.mirror(MirrorOp::Event {
                group: group.to_string(),
                event,
            });
        }
    }

    /// Sends replies produced by the state machine.
    pub fn send_replies(&self, replies: Vec<Reply<PendingReply>>) {
        for reply in replies {
            match reply {
                Reply::Join(p, result) => self.replies.join(p, &result),
                Reply::Sync(p, result) => self.replies.sync(p, &result),
            }
        }
    }

    /// The group's record — its generation, and its members and their assignments while
    /// Stable — as written after a rebalance completes and when the group becomes empty.
    pub fn group_record(group: &Group<PendingReply>) -> (OffsetsKey, Option<Vec<u8>>) {
        (
            OffsetsKey::Group {
                group: group.id.clone(),
            },
            Some(group.record(now_ms()).encode()),
        )
    }

    /// Writes the group's record when the state machine says it changed (as Kafka stores
    /// the group after the leader's SyncGroup): the generation, members and assignments a
    /// coordinator that takes the group over loads, so members carry on without a
    /// rebalance. Best effort, as Kafka's: a failed write is logged, and members rejoin
    /// after a move.
    pub fn record_if_due(&self, id: &str, entry: &mut GroupEntry) {
        if entry.group.take_record_due() {
            let record = Self::group_record(&entry.group);
            if let Err(e) = self.append(id, vec![record]) {
                log::warn!("recording the generation of group={id} failed: {e}");
            }
        }
    }

    /// Starts the group timer and the metadata mirror (which also keeps the tree dump for
    /// `kbroker metadata` fresh when `dump_tree`).
    pub fn start_threads(self: &Arc<Self>, store: Arc<dyn MetadataStore>, dump_tree: bool) {
        let me = Arc::clone(self);
        let stop = Arc::clone(&self.stop);
        let timer = std::thread::Builder::new()
            .name("kb-group-timer".into())
            .spawn(move || run_timer(me, stop))
            .expect("spawning the group timer thread");
        let me = Arc::clone(self);
        let stop = Arc::clone(&self.stop);
        let mirror = std::thread::Builder::new()
            .name("kb-zk-mirror".into())
            .spawn(move || run_mirror(me, store, dump_tree, stop))
            .expect("spawning the metadata mirror thread");
        self.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([timer, mirror]);
    }

    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        let handles: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for h in handles {
            let _ = h.join();
        }
        let mut replies = Vec::new();
        self.for_each_group(|_, entry| replies.extend(entry.group.mark_dead()));
        self.send_replies(replies);
    }
}

/// Kafka's group coordinator follows the leadership of `__consumer_offsets` partitions:
/// becoming leader loads the partition's groups (COORDINATOR_LOAD_IN_PROGRESS meanwhile);
/// losing it unloads them (their members are answered NOT_COORDINATOR and rejoin at the
/// new coordinator). Called on the replica state thread, in order.
impl LeadershipListener for GroupCoordinator {
    fn became_leader(&self, tp: &TopicPartition) {
        if tp.topic != OFFSETS_TOPIC {
            return;
        }
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tp.partition, false);
        match self.load_partition(tp.partition) {
            Ok(_) => {
                self.owned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(tp.partition, true);
            }
            Err(e) => log::error!("loading the groups of {tp} failed: {e}"),
        }
    }

    fn stopped_leading(&self, tp: &TopicPartition) {
        if tp.topic != OFFSETS_TOPIC {
            return;
        }
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&tp.partition);
        let mut leaving = Vec::new();
        self.map().retain(|id, g| {
            if offsets::partition_for_group(id, self.config.offsets_partitions) != tp.partition {
                return true;
            }
            leaving.push(Arc::clone(g));
            false
        });
        let unloaded = leaving.len();
        let mut replies = Vec::new();
        for shared in leaving {
            let mut entry = lock_group(&shared);
            entry.removed = true;
            replies.extend(entry.group.mark_not_coordinator());
        }
        self.send_replies(replies);
        log::info!("unloaded {unloaded} groups of {tp}");
    }
}

fn apply_record(
    groups: &mut HashMap<String, GroupEntry>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    now_ms: i64,
) {
    let Some(key) = key else { return };
    let key = match OffsetsKey::decode(key) {
        Ok(k) => k,
        Err(e) => {
            log::warn!("{e}");
            return;
        }
    };
    let entry = groups
        .entry(key.group().to_string())
        .or_insert_with(|| GroupEntry::new(key.group()));
    match (key, value) {
        (
            OffsetsKey::Offset {
                topic, partition, ..
            },
            Some(v),
        ) => match OffsetValue::decode(v) {
            Ok(v) => {
                entry.offsets.insert((topic, partition), v);
            }
            Err(e) => log::warn!("{e}"),
        },
        (
            OffsetsKey::Offset {
                topic, partition, ..
            },
            None,
        ) => {
            entry.offsets.remove(&(topic, partition));
        }
        (OffsetsKey::Group { group }, Some(v)) => match GroupValue::decode(v) {
            Ok(v) => {
                let mut fresh = Group::new(&group);
                fresh.restore(&v, now_ms);
                entry.group = fresh;
                // A record written while the group was empty (no members, no leader) says
                // since when; a record of a group with members whose record predates
                // members being recorded counts as empty from its load.
                entry.empty_since_ms =
                    (v.members.is_empty() && v.state_timestamp_ms > 0 && v.leader.is_none())
                        .then_some(v.state_timestamp_ms);
            }
            Err(e) => log::warn!("{e}"),
        },
        (OffsetsKey::Group { group }, None) => {
            entry.group = Group::new(&group);
        }
    }
}

fn run_timer(coordinator: Arc<GroupCoordinator>, stop: Arc<AtomicBool>) {
    let mut last_expiry = now_ms();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(TICK_MS));
        let now = now_ms();
        let mut replies = Vec::new();
        let check_expiry =
            now - last_expiry >= coordinator.config.offsets_retention_check_interval_ms;
        if check_expiry {
            last_expiry = now;
        }
        coordinator.for_each_group(|id, entry| {
            replies.extend(entry.group.tick(&coordinator.config.group, now));
            let events = entry.group.drain_events();
            coordinator.mirror_events(id, events);
            note_emptiness(&coordinator, id, entry, now);
            if check_expiry && entry.group.is_empty() {
                expire_offsets(&coordinator, id, entry, now);
                remove_if_dead(&coordinator, id, entry);
            }
        });
        coordinator.send_replies(replies);
    }
}

/// Keeps `empty_since_ms` as Kafka keeps an Empty group's state timestamp: set when the
/// last member goes (and written in a group record, so a new coordinator knows it), cleared
/// while there are members.
fn note_emptiness(coordinator: &GroupCoordinator, id: &str, entry: &mut GroupEntry, now: i64) {
    if !entry.group.is_empty() {
        entry.empty_since_ms = None;
    } else if entry.empty_since_ms.is_none() {
        entry.empty_since_ms = Some(now);
        if entry.group.generation_id() > 0 {
            let record = GroupCoordinator::group_record(&entry.group);
            if let Err(e) = coordinator.append(id, vec![record]) {
                log::warn!("recording that group={id} is empty failed: {e}");
            }
        }
    }
}

/// Deletes (tombstones, then forgets) the committed offsets of empty group `id` whose
/// retention has passed — Kafka's rule: for a consumer group (one with a protocol type)
/// `offsets.retention.minutes` from when it became empty, for a group that only stores
/// offsets from each offset's commit. Under the group's lock, so no commit slips in.
fn expire_offsets(coordinator: &GroupCoordinator, id: &str, entry: &mut GroupEntry, now: i64) {
    let cutoff = now - coordinator.config.offsets_retention_ms;
    let empty_since = entry
        .empty_since_ms
        .filter(|_| entry.group.protocol_type().is_some());
    let old: Vec<(String, i32)> = entry
        .offsets
        .iter()
        .filter(|(_, v)| empty_since.unwrap_or(v.commit_timestamp_ms) < cutoff)
        .map(|(k, _)| k.clone())
        .collect();
    if old.is_empty() {
        return;
    }
    match coordinator.append(id, offset_tombstones(id, &old)) {
        Ok(_) => {
            for k in &old {
                entry.offsets.remove(k);
            }
            log::info!("expired {} offsets of group={id}", old.len());
        }
        Err(e) => log::warn!("expiring offsets of group={id} failed: {e}"),
    }
}

/// Kafka's cleanup after an expiry pass: an empty group with no committed offsets left is
/// Dead — its group record is tombstoned and it leaves memory (and ListGroups).
fn remove_if_dead(coordinator: &GroupCoordinator, id: &str, entry: &mut GroupEntry) {
    if entry.group.state() != kbroker_coordinator::group::GroupState::Empty
        || !entry.group.is_empty()
        || !entry.offsets.is_empty()
    {
        return;
    }
    let tombstone = (
        OffsetsKey::Group {
            group: id.to_string(),
        },
        None,
    );
    match coordinator.append(id, vec![tombstone]) {
        Ok(_) => {
            coordinator.remove_group(id, entry);
            log::info!("group={id} is empty and has no offsets: removed");
        }
        Err(e) => log::warn!("removing empty group={id} failed: {e}"),
    }
}

/// The records deleting `group`'s committed offsets of `partitions` (topic, partition).
pub fn offset_tombstones<'a>(
    group: &str,
    partitions: impl IntoIterator<Item = &'a (String, i32)>,
) -> Vec<(OffsetsKey, Option<Vec<u8>>)> {
    partitions
        .into_iter()
        .map(|(topic, partition)| {
            (
                OffsetsKey::Offset {
                    group: group.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                },
                None,
            )
        })
        .collect()
}

/// Applies mirror operations to the metadata store and keeps the tree dump fresh.
fn run_mirror(
    coordinator: Arc<GroupCoordinator>,
    store: Arc<dyn MetadataStore>,
    dump_tree: bool,
    stop: Arc<AtomicBool>,
) {
    let mut owners: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut last_dump = String::new();
    let mut last_dump_ms = 0i64;
    while !stop.load(Ordering::Acquire) {
        let store: &dyn MetadataStore = &*store;
        let mut latest_offsets: BTreeMap<(String, String, i32), i64> = BTreeMap::new();
        let first = coordinator
            .mirror_rx
            .recv_timeout(Duration::from_millis(200))
            .ok();
        for op in first
            .into_iter()
            .chain(coordinator.mirror_rx.try_iter().take(10_000))
        {
            match op {
                MirrorOp::Offset {
                    group,
                    topic,
                    partition,
                    offset,
                } => {
                    latest_offsets.insert((group, topic, partition), offset);
                }
                MirrorOp::Event { group, event } => {
                    if let Err(e) = mirror_event(store, &group, event, &mut owners) {
                        log::debug!("mirroring group={group} failed: {e}");
                    }
                }
                MirrorOp::GroupDeleted { group } => {
                    owners.remove(&group);
                    if let Err(e) =
                        store::delete_recursive(store, &layout::consumer_group_path(&group))
                    {
                        log::debug!("deleting /consumers/{group} failed: {e}");
                    }
                }
            }
        }
        for ((group, topic, partition), offset) in latest_offsets {
            if let Err(e) = kbroker_coordinator::cluster::write_consumer_offset(
                store, &group, &topic, partition, offset,
            ) {
                log::debug!("mirroring offset group={group} failed: {e}");
            }
        }
        // Topics and brokers change outside this thread: re-walk the tree at most twice a
        // second and rewrite the dump only when it differs. Only for the embedded store:
        // ZooKeeper's tree is read with ZooKeeper's tools, and walking it would cost a
        // round trip per znode.
        if dump_tree && now_ms() - last_dump_ms >= DUMP_INTERVAL_MS {
            last_dump_ms = now_ms();
            let text = render_tree(store);
            if text != last_dump {
                if let Err(e) = write_dump(&coordinator.config.metadata_dump_path, &text) {
                    log::warn!("writing the metadata dump failed: {e}");
                }
                last_dump = text;
            }
        }
    }
}

fn ignore_missing(r: Result<(), StoreError>) -> Result<(), StoreError> {
    match r {
        Err(StoreError::NoNode(_)) | Err(StoreError::NodeExists(_)) => Ok(()),
        other => other,
    }
}

fn mirror_event(
    store: &dyn MetadataStore,
    group: &str,
    event: GroupEvent,
    owners: &mut HashMap<String, BTreeSet<String>>,
) -> Result<(), StoreError> {
    match event {
        GroupEvent::MemberAdded {
            member_id,
            subscription,
        } => {
            let topics = offsets::subscription_topics(&subscription).unwrap_or_default();
            let registration = layout::ConsumerRegistration {
                subscription: topics.into_iter().map(|t| (t, 1)).collect(),
                pattern: "static".into(),
                timestamp_ms: now_ms(),
            };
            store::ensure_persistent_path(store, &layout::consumer_ids_path(group))?;
            ignore_missing(
                store
                    .create(
                        &layout::consumer_member_path(group, &member_id),
                        &registration.to_json(),
                        CreateMode::Ephemeral,
                    )
                    .map(|_| ()),
            )
        }
        GroupEvent::MemberRemoved { member_id } => {
            ignore_missing(store.delete(&layout::consumer_member_path(group, &member_id), None))
        }
        GroupEvent::RebalanceStarted => {
            for path in owners.remove(group).unwrap_or_default() {
                ignore_missing(store.delete(&path, None))?;
            }
            Ok(())
        }
        GroupEvent::AssignmentsInstalled { assignments } => {
            for path in owners.remove(group).unwrap_or_default() {
                ignore_missing(store.delete(&path, None))?;
            }
            let mut created = BTreeSet::new();
            for (member_id, assignment) in assignments {
                for (topic, partition) in
                    offsets::assignment_partitions(&assignment).unwrap_or_default()
                {
                    store::ensure_persistent_path(
                        store,
                        &layout::consumer_owners_path(group, &topic),
                    )?;
                    let path = layout::consumer_owner_path(group, &topic, partition);
                    let data = layout::ConsumerOwner {
                        member_id: member_id.clone(),
                    }
                    .to_json();
                    ignore_missing(
                        store
                            .create(&path, &data, CreateMode::Ephemeral)
                            .map(|_| ()),
                    )?;
                    created.insert(path);
                }
            }
            owners.insert(group.to_string(), created);
            Ok(())
        }
    }
}

/// Every node of the tree as `path<TAB>E|P<TAB>data` lines, for `kbroker metadata`.
pub fn render_tree(store: &dyn MetadataStore) -> String {
    let mut out = String::new();
    let mut stack = vec!["/".to_string()];
    let mut visited = 0usize;
    while let Some(p) = stack.pop() {
        visited += 1;
        if visited > 1_000_000 {
            break;
        }
        let (data, stat) = match store.get(&p) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let text = String::from_utf8_lossy(&data);
        out.push_str(&format!(
            "{}\t{}\t{}\n",
            p,
            if stat.ephemeral_owner != 0 { "E" } else { "P" },
            text.replace(['\n', '\t'], " ")
        ));
        if let Ok(children) = store.children(&p) {
            for c in children.into_iter().rev() {
                stack.push(store::join_path(&p, &c));
            }
        }
    }
    out
}

fn write_dump(path: &std::path::Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        // With ZooKeeper nothing else creates `.metadata/`.
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    type Records = Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>;

    /// `__consumer_offsets` as a map of record lists, with the partitions "led" and the
    /// code `when_replicated` answers set by the test.
    #[derive(Default)]
    struct ModelLog {
        partitions: Mutex<HashMap<i32, Records>>,
        led: Mutex<HashSet<i32>>,
        replicated_code: Mutex<i16>,
        /// When set, the next append says it has started and waits to be let go.
        stall: Mutex<Option<(Sender<()>, Receiver<()>)>>,
    }

    impl OffsetsLog for ModelLog {
        fn append_batch(
            &self,
            partition: i32,
            bytes: &[u8],
            _now_ms: i64,
        ) -> Result<Appended, CoordinatorError> {
            if !self.led.lock().unwrap().contains(&partition) {
                return Err(CoordinatorError::NotCoordinator);
            }
            let stall = self.stall.lock().unwrap().take();
            if let Some((started, go)) = stall {
                started.send(()).unwrap();
                go.recv().unwrap();
            }
            let records =
                batch::uncompressed_records(bytes).expect("a batch the coordinator built");
            let mut parts = self.partitions.lock().unwrap();
            let log = parts.entry(partition).or_default();
            for r in records {
                log.push((r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)));
            }
            Ok(Appended {
                tp: TopicPartition::new(OFFSETS_TOPIC, partition),
                leader_epoch: 0,
                end: log.len() as i64,
            })
        }

        fn when_replicated(
            &self,
            _appended: Appended,
            _timeout: Duration,
            done: ReplicatedCallback,
        ) {
            done(*self.replicated_code.lock().unwrap());
        }

        fn read_records(
            &self,
            partition: i32,
            visit: &mut RecordVisitor<'_>,
        ) -> Result<usize, CoordinatorError> {
            let parts = self.partitions.lock().unwrap();
            let log = parts.get(&partition).map(Vec::as_slice).unwrap_or_default();
            for (k, v) in log {
                visit(k.as_deref(), v.as_deref());
            }
            Ok(log.len())
        }
    }

    fn coordinator(log: &Arc<ModelLog>) -> GroupCoordinator {
        GroupCoordinator::new(
            CoordinatorConfig {
                group: GroupConfig::default(),
                offsets_partitions: 3,
                offsets_replication_factor: 1,
                offsets_segment_bytes: 1 << 20,
                offsets_retention_ms: 1_000,
                offsets_retention_check_interval_ms: 1_000,
                offsets_commit_timeout_ms: 1_000,
                metadata_dump_path: std::env::temp_dir().join("kbroker-groups-test-dump"),
            },
            Arc::clone(log) as Arc<dyn OffsetsLog>,
            Box::new(NoReplies),
        )
    }

    /// No request parks in these tests.
    struct NoReplies;

    impl GroupReplies for NoReplies {
        fn join(&self, _: PendingReply, _: &JoinResult) {
            unreachable!("no JoinGroup is parked")
        }
        fn sync(&self, _: PendingReply, _: &SyncResult) {
            unreachable!("no SyncGroup is parked")
        }
    }

    fn commit(group: &str, topic: &str, offset: i64) -> (OffsetsKey, Option<Vec<u8>>) {
        let value = OffsetValue {
            offset,
            leader_epoch: 0,
            metadata: String::new(),
            commit_timestamp_ms: 1,
        };
        let key = OffsetsKey::Offset {
            group: group.into(),
            topic: topic.into(),
            partition: 0,
        };
        (key, Some(value.encode()))
    }

    fn committed(c: &GroupCoordinator, group: &str, topic: &str) -> Option<i64> {
        c.with_group(group, |g| {
            g.offsets.get(&(topic.to_string(), 0)).map(|v| v.offset)
        })
        .flatten()
    }

    #[test]
    fn a_group_appending_to_the_log_holds_up_no_other_group() {
        let log = Arc::new(ModelLog::default());
        let c = Arc::new(coordinator(&log));
        for p in 0..3 {
            log.led.lock().unwrap().insert(p);
            c.became_leader(&TopicPartition::new(OFFSETS_TOPIC, p));
        }
        let (started_tx, started) = crossbeam_channel::bounded(1);
        let (go, go_rx) = crossbeam_channel::bounded(1);
        *log.stall.lock().unwrap() = Some((started_tx, go_rx));
        let writer = {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                c.with_group_or_create("a", |_| c.append("a", vec![commit("a", "t", 1)]).is_ok())
            })
        };
        started.recv().unwrap(); // group "a" is locked, inside its append
        let (done_tx, done) = crossbeam_channel::bounded(1);
        {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                let appended = c.with_group_or_create("b", |_| {
                    c.append("b", vec![commit("b", "t", 2)]).is_ok()
                });
                done_tx.send(appended).unwrap();
            });
        }
        // Not a timing assertion: a generous bound that turns a deadlock into a failure.
        let other = done.recv_timeout(Duration::from_secs(60));
        go.send(()).unwrap();
        assert_eq!(other, Ok(true), "group b waited for group a's append");
        assert!(writer.join().unwrap(), "group a appended");
        // A group taken out of the map while a request held it is looked up afresh.
        c.with_group("a", |e| c.remove_group("a", e));
        assert_eq!(c.with_group("a", |_| ()), None);
        assert_eq!(c.with_group_or_create("a", |e| e.offsets.len()), 0);
    }

    #[test]
    fn groups_follow_the_offsets_log_through_leadership_changes() {
        let log = Arc::new(ModelLog::default());
        let first = coordinator(&log);
        let p = first.partition_for("g");
        let tp = TopicPartition::new(OFFSETS_TOPIC, p);

        // Not loaded: nothing is written.
        assert!(matches!(
            first.append("g", vec![commit("g", "t", 5)]),
            Err(CoordinatorError::NotCoordinator)
        ));
        log.led.lock().unwrap().insert(p);
        first.became_leader(&tp);
        assert!(first.is_loaded(p));
        let appended = first
            .append("g", vec![commit("g", "t", 5), commit("g", "u", 7)])
            .unwrap()
            .expect("two records appended");
        assert_eq!((appended.tp.partition, appended.end), (p, 2));
        // Deleting an offset is a tombstone: the last record for a key wins on load.
        first
            .append("g", vec![(commit("g", "u", 0).0, None)])
            .unwrap();

        // Another broker leading the partition next reads back what was written.
        let second = coordinator(&log);
        second.became_leader(&tp);
        assert_eq!(committed(&second, "g", "t"), Some(5));
        assert_eq!(committed(&second, "g", "u"), None);

        // Losing leadership unloads the groups and refuses writes.
        second.stopped_leading(&tp);
        assert!(!second.is_loaded(p));
        assert!(second.with_group("g", |_| ()).is_none());
        assert!(matches!(
            second.append("g", vec![commit("g", "t", 9)]),
            Err(CoordinatorError::NotCoordinator)
        ));
        assert_eq!(log.partitions.lock().unwrap()[&p].len(), 3);
    }

    #[test]
    fn replication_outcomes_reach_the_caller_as_offset_commit_errors() {
        use kafka_protocol::ResponseError as E;
        let log = Arc::new(ModelLog::default());
        let c = coordinator(&log);
        let p = c.partition_for("g");
        log.led.lock().unwrap().insert(p);
        c.became_leader(&TopicPartition::new(OFFSETS_TOPIC, p));
        for (replica_code, commit_code) in [
            (0, 0),
            (E::NotLeaderOrFollower.code(), E::NotCoordinator.code()),
            (E::RequestTimedOut.code(), E::CoordinatorNotAvailable.code()),
            (
                E::NotEnoughReplicasAfterAppend.code(),
                E::CoordinatorNotAvailable.code(),
            ),
            (E::MessageTooLarge.code(), E::InvalidCommitOffsetSize.code()),
        ] {
            *log.replicated_code.lock().unwrap() = replica_code;
            let appended = c.append("g", vec![commit("g", "t", 1)]).unwrap().unwrap();
            let seen = Arc::new(Mutex::new(None));
            let s = Arc::clone(&seen);
            c.when_replicated(
                appended,
                // The OffsetCommit handler's mapping of what the coordinator passes on.
                Box::new(move |code| *s.lock().unwrap() = Some(crate::handler::commit_error(code))),
            );
            assert_eq!(*seen.lock().unwrap(), Some(commit_code), "{replica_code}");
        }
    }

    #[test]
    fn a_new_coordinator_loads_a_groups_members_and_they_carry_on() {
        let log = Arc::new(ModelLog::default());
        let c = coordinator(&log);
        for p in 0..3 {
            log.led.lock().unwrap().insert(p);
            c.became_leader(&TopicPartition::new(OFFSETS_TOPIC, p));
        }
        let member = offsets::MemberValue {
            member_id: "m-1".into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 30_000,
            session_timeout_ms: 10_000,
            subscription: vec![0, 1],
            assignment: vec![0, 2],
        };
        // An older record of the group, then the one of its current generation.
        for generation_id in [2, 3] {
            let record = GroupValue {
                protocol_type: "consumer".into(),
                generation_id,
                protocol: Some("range".into()),
                leader: Some("m-1".into()),
                state_timestamp_ms: 5,
                members: vec![member.clone()],
            };
            let key = OffsetsKey::Group { group: "g".into() };
            c.append("g", vec![(key, Some(record.encode()))]).unwrap();
        }
        let reloaded = coordinator(&log);
        reloaded.became_leader(&TopicPartition::new(
            OFFSETS_TOPIC,
            reloaded.partition_for("g"),
        ));
        let now = now_ms();
        let (state, heartbeat, empty_since, assignment) = reloaded
            .with_group("g", |e| {
                note_emptiness(&reloaded, "g", e, now);
                let assignment = e
                    .group
                    .members()
                    .map(|m| m.assignment.clone())
                    .collect::<Vec<_>>();
                (
                    e.group.state(),
                    e.group.heartbeat("m-1", 3, None, now),
                    e.empty_since_ms,
                    assignment,
                )
            })
            .expect("loaded");
        assert_eq!(state, kbroker_coordinator::group::GroupState::Stable);
        assert_eq!(
            heartbeat,
            Ok(()),
            "the member's heartbeat of generation 3 is accepted"
        );
        assert_eq!(empty_since, None, "a group with members is not empty");
        assert_eq!(assignment, vec![vec![0, 2]]);
    }

    #[test]
    fn offsets_of_a_consumer_group_are_kept_retention_from_when_it_became_empty() {
        let log = Arc::new(ModelLog::default());
        let c = coordinator(&log); // retention 1 s
        for p in 0..3 {
            log.led.lock().unwrap().insert(p);
            c.became_leader(&TopicPartition::new(OFFSETS_TOPIC, p));
        }
        // A consumer group whose last record was written while it had members, and whose
        // offset was committed long ago (t = 1 ms); and a group that only stores offsets.
        let record = GroupValue {
            protocol_type: "consumer".into(),
            generation_id: 3,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            state_timestamp_ms: 5,
            members: Vec::new(), // as kbroker wrote them before members were recorded
        };
        let key = OffsetsKey::Group { group: "g".into() };
        c.append("g", vec![(key, Some(record.encode())), commit("g", "t", 7)])
            .unwrap();
        c.append("s", vec![commit("s", "t", 8)]).unwrap();
        let reloaded = coordinator(&log);
        for p in 0..3 {
            reloaded.became_leader(&TopicPartition::new(OFFSETS_TOPIC, p));
        }
        let run = |group: &str, now: i64| {
            reloaded.with_group(group, |e| {
                note_emptiness(&reloaded, group, e, now);
                expire_offsets(&reloaded, group, e, now);
            });
        };
        // Seen empty from 10 s on (not from its old record's time): kept for 1 s from then.
        run("g", 10_000);
        run("g", 10_900);
        assert_eq!(
            committed(&reloaded, "g", "t"),
            Some(7),
            "within retention of emptiness"
        );
        run("g", 11_100);
        assert_eq!(
            committed(&reloaded, "g", "t"),
            None,
            "expired a retention after"
        );
        // The standalone group's offset counts from its commit.
        run("s", 10_000);
        assert_eq!(committed(&reloaded, "s", "t"), None);
        // The group record written when it was seen empty names no leader and that time:
        // a coordinator loading it next counts from then.
        let third = coordinator(&log);
        for p in 0..3 {
            third.became_leader(&TopicPartition::new(OFFSETS_TOPIC, p));
        }
        let since = third.with_group("g", |e| e.empty_since_ms).flatten();
        assert!(since.is_some_and(|t| t > 5), "{since:?}");
        // Empty with no offsets left: Dead, tombstoned, gone (also for the next loader).
        third.with_group("g", |e| remove_if_dead(&third, "g", e));
        assert!(third.with_group("g", |_| ()).is_none(), "removed");
        let fourth = coordinator(&log);
        for p in 0..3 {
            fourth.became_leader(&TopicPartition::new(OFFSETS_TOPIC, p));
        }
        assert!(fourth.with_group("g", |_| ()).is_none(), "tombstoned");
    }
}

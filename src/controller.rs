//! The controller — Kafka's ZooKeeper-era `KafkaController`: one broker wins the ephemeral
//! `/controller`, bumps `/controller_epoch`, and from then on runs the cluster's partition
//! state machine through the metadata store, telling brokers what they lead and follow.
//!
//! One thread (`kb-controller`) processes events one at a time: store watches (hints; each
//! handler re-reads what it watches and re-arms the watch), controlled-shutdown requests,
//! the leader-rebalance timer, and session changes. Every write it makes to the store is a
//! multi-op that first checks the version of `/controller_epoch` it set when elected, so a
//! controller that lost its session (a zombie paused past its session timeout) cannot
//! write: the check fails and it resigns. The decisions are pure functions in
//! `kbroker_coordinator::controller`; requests go out through [`ControllerChannel`].
//!
//! Watched: `/controller` (every broker: a new election when it goes), and, while active,
//! `/brokers/ids` (broker changes), `/brokers/topics` and each topic (new topics and
//! partitions), `/admin/delete_topics`, `/admin/preferred_replica_election`,
//! `/admin/reassign_partitions` and `/isr_change_notification`. Znodes written by any ZooKeeper client act as they do on
//! Kafka. On session expiry the broker registers again, the election is re-run and
//! everything is re-read; on a reconnect within the session, everything is re-read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use kafka_protocol::messages::leader_and_isr_request::{
    LeaderAndIsrLiveLeader, LeaderAndIsrPartitionState, LeaderAndIsrTopicState,
};
use kafka_protocol::messages::stop_replica_request::{
    StopReplicaPartitionState, StopReplicaTopicState,
};
use kafka_protocol::messages::update_metadata_request::{
    UpdateMetadataBroker, UpdateMetadataEndpoint, UpdateMetadataPartitionState,
    UpdateMetadataTopicState,
};
use kafka_protocol::messages::{
    BrokerId, LeaderAndIsrRequest, StopReplicaRequest, UpdateMetadataRequest,
};
use kafka_protocol::protocol::StrBytes;
use kbroker_coordinator::controller::{self as decide, Election};
use kbroker_coordinator::layout::{
    self, BrokerRegistration, PartitionState, TopicAssignment, BROKER_IDS_PATH, BROKER_TOPICS_PATH,
    CONTROLLER_EPOCH_PATH, CONTROLLER_PATH, DELETE_TOPICS_PATH, ISR_CHANGE_NOTIFICATION_PATH,
};
use kbroker_coordinator::{cluster, get_opt, MetadataStore, Op, StoreError, WatchEvent};
use kbroker_storage::TopicPartition;

use crate::channel::{ControllerChannel, ControllerRequest};

mod reassign;
pub use reassign::{ListReply, Ongoing, ReassignReply, ReassignResults};

/// `/admin/preferred_replica_election`.
pub const PREFERRED_REPLICA_ELECTION_PATH: &str = "/admin/preferred_replica_election";
/// Leader value in UpdateMetadata for a partition being deleted (Kafka's LeaderDuringDelete).
pub const LEADER_DURING_DELETE: i32 = -2;
/// Events queued at most (watch hints collapse: a burst costs one re-read each).
const EVENTS_QUEUED_MAX: usize = 10_000;

/// What the controller needs of the broker's settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub broker_id: i32,
    /// `unclean.leader.election.enable` (the broker default; topics may override).
    pub unclean_leader_election: bool,
    /// `auto.leader.rebalance.enable`.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`.
    pub leader_imbalance_check_interval: Duration,
    /// `leader.imbalance.per.broker.percentage`.
    pub leader_imbalance_per_broker_percentage: u32,
    /// The listener other brokers are reached on (`inter.broker.listener.name`).
    pub inter_broker_listener: String,
}

/// The result of a controlled shutdown: partitions the broker still leads, or an error code.
pub type ShutdownReply = Box<dyn FnOnce(Result<Vec<TopicPartition>, i16>) + Send>;

/// Per-partition outcomes of an ElectLeaders (error code, message), or a request-level
/// error code.
pub type ElectionResults = Vec<(TopicPartition, i16, Option<String>)>;
pub type ElectReply = Box<dyn FnOnce(Result<ElectionResults, i16>) + Send>;

enum Event {
    Startup,
    ElectLeaders {
        /// None: every partition.
        partitions: Option<Vec<TopicPartition>>,
        unclean: bool,
        reply: ElectReply,
    },
    AlterReassignments {
        /// Partition → target replicas (None: cancel).
        requests: Vec<(TopicPartition, Option<Vec<i32>>)>,
        reply: ReassignReply,
    },
    ListReassignments {
        /// None: every partition.
        filter: Option<Vec<TopicPartition>>,
        reply: ListReply,
    },
    Watch(WatchEvent),
    ControlledShutdown {
        broker_id: i32,
        broker_epoch: i64,
        reply: ShutdownReply,
    },
    Rebalance,
    Resign,
    Stop,
}

/// A live broker as the controller knows it.
#[derive(Debug, Clone)]
struct LiveBroker {
    registration: BrokerRegistration,
    /// The registration's czxid.
    epoch: i64,
}

#[derive(Default)]
struct Context {
    epoch: i32,
    epoch_zk_version: i32,
    brokers: BTreeMap<i32, LiveBroker>,
    shutting_down: BTreeSet<i32>,
    topics: BTreeMap<String, TopicAssignment>,
    states: BTreeMap<TopicPartition, PartitionState>,
    /// Topics whose deletion is under way.
    deleting: BTreeSet<String>,
}

impl Context {
    /// Kafka's `liveBrokerIds`: registered and not shutting down — the brokers that may
    /// become leaders or join an ISR.
    fn live(&self) -> BTreeSet<i32> {
        self.brokers
            .keys()
            .copied()
            .filter(|b| !self.shutting_down.contains(b))
            .collect()
    }
    /// The topic's id (nil for topics of versions without one).
    fn topic_id(&self, topic: &str) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.topics.get(topic).map_or([0; 16], |a| a.topic_id))
    }

    fn assignment(&self, tp: &TopicPartition) -> Vec<i32> {
        self.topics
            .get(&tp.topic)
            .and_then(|a| a.partitions.get(&tp.partition))
            .cloned()
            .unwrap_or_default()
    }
}

/// This broker's part in the cluster's control: the election and, when it wins, the
/// controller's work.
pub struct Controller {
    config: ControllerConfig,
    store: Arc<dyn MetadataStore>,
    channel: Arc<ControllerChannel>,
    tx: Sender<Event>,
    active: AtomicBool,
    epoch: AtomicI32,
    /// The broker epoch of this broker's own registration (updated on re-registration).
    broker_epoch: AtomicI64,
    registration: BrokerRegistration,
    on_registered: Box<dyn Fn(i64) + Send + Sync>,
    thread: Mutex<Option<JoinHandle<()>>>,
    started: Mutex<bool>,
    started_cv: std::sync::Condvar,
}

impl Controller {
    /// Starts the controller thread; it registers nothing until [`Controller::startup`].
    /// `on_registered` gets the broker epoch after every (re-)registration.
    pub fn start(
        config: ControllerConfig,
        store: Arc<dyn MetadataStore>,
        channel: Arc<ControllerChannel>,
        registration: BrokerRegistration,
        broker_epoch: i64,
        on_registered: Box<dyn Fn(i64) + Send + Sync>,
    ) -> Arc<Controller> {
        let (tx, rx) = crossbeam_channel::bounded(EVENTS_QUEUED_MAX);
        let controller = Arc::new(Controller {
            config,
            store,
            channel,
            tx,
            active: AtomicBool::new(false),
            epoch: AtomicI32::new(0),
            broker_epoch: AtomicI64::new(broker_epoch),
            registration,
            on_registered,
            thread: Mutex::new(None),
            started: Mutex::new(false),
            started_cv: std::sync::Condvar::new(),
        });
        let weak = Arc::downgrade(&controller);
        let (watch_tx, watch_rx) = crossbeam_channel::bounded(EVENTS_QUEUED_MAX);
        controller.store.subscribe_session(watch_tx.clone());
        let handle = std::thread::Builder::new()
            .name("kb-controller".into())
            .spawn(move || run(weak, rx, watch_tx, watch_rx))
            .expect("spawning the controller thread");
        *controller.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        controller
    }

    /// Runs the first election; waits up to `wait` for it (and, when this broker wins, its
    /// first round of requests) to be done.
    pub fn startup(&self, wait: Duration) {
        let _ = self.tx.try_send(Event::Startup);
        let guard = self.started.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .started_cv
            .wait_timeout_while(guard, wait, |started| !*started)
            .unwrap_or_else(|p| p.into_inner());
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub fn epoch(&self) -> i32 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    /// Moves leaderships away from `broker_id` (ControlledShutdown); `reply` gets the
    /// partitions it still leads (with other replicas), or an error code.
    pub fn controlled_shutdown(&self, broker_id: i32, broker_epoch: i64, reply: ShutdownReply) {
        if self
            .tx
            .try_send(Event::ControlledShutdown {
                broker_id,
                broker_epoch,
                reply,
            })
            .is_err()
        {
            log::warn!(
                "controller event queue full: controlled shutdown of {broker_id} not queued"
            );
        }
    }

    /// ElectLeaders: preferred (or, with `unclean`, any live replica for leaderless
    /// partitions) leaders for `partitions`, or for every partition if None.
    pub fn elect_leaders(
        &self,
        partitions: Option<Vec<TopicPartition>>,
        unclean: bool,
        reply: ElectReply,
    ) {
        if let Err(crossbeam_channel::TrySendError::Full(Event::ElectLeaders { reply, .. })) =
            self.tx.try_send(Event::ElectLeaders {
                partitions,
                unclean,
                reply,
            })
        {
            reply(Err(kafka_protocol::ResponseError::RequestTimedOut.code()));
        }
    }

    /// AlterPartitionReassignments (see `reassign`).
    pub fn alter_reassignments(
        &self,
        requests: Vec<(TopicPartition, Option<Vec<i32>>)>,
        reply: ReassignReply,
    ) {
        if let Err(crossbeam_channel::TrySendError::Full(Event::AlterReassignments {
            reply, ..
        })) = self
            .tx
            .try_send(Event::AlterReassignments { requests, reply })
        {
            reply(Err(kafka_protocol::ResponseError::RequestTimedOut.code()));
        }
    }

    /// ListPartitionReassignments.
    pub fn list_reassignments(&self, filter: Option<Vec<TopicPartition>>, reply: ListReply) {
        if let Err(crossbeam_channel::TrySendError::Full(Event::ListReassignments {
            reply, ..
        })) = self.tx.try_send(Event::ListReassignments { filter, reply })
        {
            reply(Err(kafka_protocol::ResponseError::RequestTimedOut.code()));
        }
    }

    /// Gives up the controllership (this broker is shutting down).
    pub fn resign(&self) {
        let _ = self.tx.send(Event::Resign);
    }

    pub fn shutdown(&self) {
        let _ = self.tx.send(Event::Stop);
        if let Some(h) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
        self.channel.remove_all();
    }

    fn mark_started(&self) {
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.started_cv.notify_all();
    }
}

/// The controller thread: events and store watch hints, one at a time.
fn run(
    controller: Weak<Controller>,
    events: Receiver<Event>,
    watch_tx: Sender<WatchEvent>,
    watches: Receiver<WatchEvent>,
) {
    let mut state = State {
        ctx: None,
        watch_tx,
        last_rebalance: Instant::now(),
    };
    loop {
        let Some(c) = controller.upgrade() else {
            return;
        };
        let rebalance_every = c.config.leader_imbalance_check_interval;
        let timeout = rebalance_every
            .checked_sub(state.last_rebalance.elapsed())
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_millis(10));
        drop(c);
        let event = select! {
            recv(events) -> e => match e { Ok(e) => e, Err(_) => return },
            recv(watches) -> w => match w { Ok(w) => Event::Watch(w), Err(_) => return },
            default(timeout) => Event::Rebalance,
        };
        let Some(c) = controller.upgrade() else {
            return;
        };
        match event {
            Event::Stop => {
                state.resign(&c);
                return;
            }
            event => state.handle(&c, event),
        }
    }
}

struct State {
    /// Present while this broker is the active controller.
    ctx: Option<Context>,
    watch_tx: Sender<WatchEvent>,
    last_rebalance: Instant,
}

impl State {
    fn handle(&mut self, c: &Controller, event: Event) {
        let result = match event {
            Event::Startup => {
                let r = self.elect(c);
                c.mark_started();
                r
            }
            Event::Watch(w) => self.on_watch(c, w),
            Event::ElectLeaders {
                partitions,
                unclean,
                reply,
            } => self.on_elect_leaders(c, partitions, unclean, reply),
            Event::AlterReassignments { requests, reply } => {
                self.on_alter_reassignments(c, requests, reply)
            }
            Event::ListReassignments { filter, reply } => self.on_list_reassignments(filter, reply),
            Event::ControlledShutdown {
                broker_id,
                broker_epoch,
                reply,
            } => self.on_controlled_shutdown(c, broker_id, broker_epoch, reply),
            Event::Rebalance => {
                self.last_rebalance = Instant::now();
                if c.config.auto_leader_rebalance {
                    self.rebalance(c)
                } else {
                    Ok(())
                }
            }
            Event::Resign => {
                self.resign(c);
                Ok(())
            }
            Event::Stop => Ok(()),
        };
        match result {
            Ok(()) => {}
            Err(ControllerError::Fenced) => {
                log::warn!("controller writes fenced: another controller was elected; resigning");
                self.resign(c);
                let _ = self.watch_controller(c);
            }
            Err(ControllerError::Store(e)) => {
                log::warn!("controller store operation failed: {e}; will retry on the next event");
            }
        }
    }

    /// Resigns (if active): stops sending, forgets the context.
    fn resign(&mut self, c: &Controller) {
        if self.ctx.take().is_some() {
            c.active.store(false, Ordering::Release);
            c.channel.remove_all();
            // Give up /controller if this session holds it (a clean shutdown).
            let _ = cluster::resign_controller(&*c.store);
            log::info!("broker {} resigned as controller", c.config.broker_id);
        }
    }

    fn watch_controller(&self, c: &Controller) -> Result<(), ControllerError> {
        c.store.watch_data(CONTROLLER_PATH, self.watch_tx.clone())?;
        Ok(())
    }

    /// Tries to become the controller; on success runs the failover.
    fn elect(&mut self, c: &Controller) -> Result<(), ControllerError> {
        if self.ctx.is_some() {
            return Ok(());
        }
        self.watch_controller(c)?;
        match cluster::elect_controller_at(&*c.store, c.config.broker_id, crate::broker::now_ms())?
        {
            Some(epoch) => {
                log::info!(
                    "broker {} is the controller controller_epoch={}",
                    c.config.broker_id,
                    epoch.epoch
                );
                c.epoch.store(epoch.epoch, Ordering::Release);
                self.ctx = Some(Context {
                    epoch: epoch.epoch,
                    epoch_zk_version: epoch.zk_version,
                    ..Context::default()
                });
                c.active.store(true, Ordering::Release);
                self.failover(c)
            }
            None => {
                if let Ok(Some(id)) = cluster::current_controller(&*c.store) {
                    log::info!("broker {id} is the controller");
                }
                Ok(())
            }
        }
    }

    fn on_watch(&mut self, c: &Controller, event: WatchEvent) -> Result<(), ControllerError> {
        match event {
            WatchEvent::SessionExpired => return self.on_session_expired(c),
            WatchEvent::Connected => {
                // Watches are hints: after any gap, re-read everything.
                if self.ctx.is_some() {
                    self.resync(c)?;
                } else {
                    self.elect(c)?;
                }
                return Ok(());
            }
            WatchEvent::Disconnected => return Ok(()),
            WatchEvent::NodeCreated(ref p)
            | WatchEvent::NodeDeleted(ref p)
            | WatchEvent::NodeDataChanged(ref p)
                if p == CONTROLLER_PATH =>
            {
                let holder = cluster::current_controller(&*c.store)?;
                if self.ctx.is_some() && holder != Some(c.config.broker_id) {
                    log::warn!("/controller is no longer this broker's; resigning");
                    self.resign(c);
                }
                return self.elect(c);
            }
            _ => {}
        }
        if self.ctx.is_none() {
            return Ok(());
        }
        match event {
            WatchEvent::NodeChildrenChanged(p) if p == BROKER_IDS_PATH => self.on_broker_change(c),
            WatchEvent::NodeChildrenChanged(p) if p == BROKER_TOPICS_PATH => {
                self.on_topic_change(c)
            }
            WatchEvent::NodeDataChanged(p) if p.starts_with("/brokers/topics/") => {
                let topic = p.trim_start_matches("/brokers/topics/").to_string();
                self.on_partition_modification(c, &topic)
            }
            WatchEvent::NodeChildrenChanged(p) if p == DELETE_TOPICS_PATH => {
                self.on_topic_deletion(c)
            }
            WatchEvent::NodeChildrenChanged(p) if p == ISR_CHANGE_NOTIFICATION_PATH => {
                self.on_isr_change(c)
            }
            WatchEvent::NodeCreated(p) | WatchEvent::NodeDataChanged(p)
                if p == PREFERRED_REPLICA_ELECTION_PATH =>
            {
                self.on_preferred_election(c)
            }
            WatchEvent::NodeCreated(p) | WatchEvent::NodeDataChanged(p)
                if p == layout::REASSIGN_PARTITIONS_PATH =>
            {
                self.on_reassign_znode(c)
            }
            WatchEvent::NodeDeleted(p) if p == layout::REASSIGN_PARTITIONS_PATH => {
                c.store
                    .watch_data(layout::REASSIGN_PARTITIONS_PATH, self.watch_tx.clone())?;
                Ok(())
            }
            WatchEvent::NodeDeleted(p) if p == PREFERRED_REPLICA_ELECTION_PATH => {
                c.store
                    .watch_data(PREFERRED_REPLICA_ELECTION_PATH, self.watch_tx.clone())?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_session_expired(&mut self, c: &Controller) -> Result<(), ControllerError> {
        log::warn!(
            "metadata store session expired: re-registering broker {}",
            c.config.broker_id
        );
        if self.ctx.take().is_some() {
            c.active.store(false, Ordering::Release);
            c.channel.remove_all();
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            match c
                .store
                .renew_session()
                .and_then(|()| cluster::register_broker(&*c.store, &c.registration))
            {
                Ok(epoch) => {
                    c.broker_epoch.store(epoch, Ordering::Release);
                    (c.on_registered)(epoch);
                    break;
                }
                Err(e) => {
                    log::warn!("re-registration failed: {e}; retrying in {backoff:?}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        c.store.subscribe_session(self.watch_tx.clone());
        self.elect(c)
    }

    /// Reads the cluster, takes the partitions over, tells every broker.
    fn failover(&mut self, c: &Controller) -> Result<(), ControllerError> {
        let started = Instant::now();
        self.read_brokers(c)?;
        self.read_topics(c)?;
        let read = started.elapsed();
        c.store
            .watch_children(DELETE_TOPICS_PATH, self.watch_tx.clone())?;
        c.store
            .watch_children(ISR_CHANGE_NOTIFICATION_PATH, self.watch_tx.clone())?;
        c.store
            .watch_data(PREFERRED_REPLICA_ELECTION_PATH, self.watch_tx.clone())?;
        let ctx = self.ctx.as_ref().expect("active");
        for (id, b) in &ctx.brokers {
            if let Some((host, port)) = endpoint(&b.registration, &c.config.inter_broker_listener) {
                c.channel.add_broker(*id, &host, port);
            }
        }
        let all: Vec<TopicPartition> = ctx.states.keys().cloned().collect();
        let new_partitions = self.partitions_without_state();
        self.create_partitions(c, &new_partitions)?;
        let elected = self.elect_offline_partitions(c)?.len();
        // Replicas of brokers that are not registered leave the ISRs (Kafka's replica state
        // machine starts them as OfflineReplica): leaders stop waiting for them.
        let ctx = self.ctx.as_ref().expect("active");
        let gone: BTreeSet<i32> = ctx
            .states
            .values()
            .flat_map(|s| s.isr.iter().copied())
            .filter(|r| !ctx.brokers.contains_key(r))
            .collect();
        self.shrink_isr_of(c, &gone)?;
        let elect = started.elapsed();
        let ctx = self.ctx.as_ref().expect("active");
        let mut everything: Vec<TopicPartition> = all;
        everything.extend(new_partitions);
        everything.sort();
        everything.dedup();
        self.update_metadata_everywhere(c, &everything, &[]);
        self.send_leader_and_isr(c, &everything, true);
        log::info!(
            "controller failover: read {} brokers and {} partitions in {read:?}, elected {elected} leaders \
             by {elect:?}, requests queued by {:?}",
            ctx.brokers.len(),
            everything.len(),
            started.elapsed()
        );
        self.on_topic_deletion(c)?;
        self.on_isr_change(c)?;
        self.on_preferred_election(c)?;
        // Reassignments under way carry on (the LeaderAndIsr above named their full sets).
        self.on_reassign_znode(c)?;
        for o in self.ongoing(None) {
            self.maybe_complete(c, &o.tp)?;
        }
        Ok(())
    }

    fn resync(&mut self, c: &Controller) -> Result<(), ControllerError> {
        let epoch = cluster::read_controller_epoch(&*c.store)?;
        let ctx = self.ctx.as_ref().expect("active");
        if epoch.map(|e| (e.epoch, e.zk_version)) != Some((ctx.epoch, ctx.epoch_zk_version)) {
            return Err(ControllerError::Fenced);
        }
        self.watch_controller(c)?;
        self.on_broker_change(c)?;
        self.on_topic_change(c)?;
        self.on_topic_deletion(c)?;
        self.on_isr_change(c)?;
        self.on_preferred_election(c)
    }

    fn read_brokers(&mut self, c: &Controller) -> Result<(), ControllerError> {
        let ids = c
            .store
            .watch_children(BROKER_IDS_PATH, self.watch_tx.clone())?;
        let mut brokers = BTreeMap::new();
        for name in ids {
            let Ok(id) = name.parse::<i32>() else {
                continue;
            };
            let path = layout::broker_id_path(id);
            if let Some((data, stat)) = get_opt(&*c.store, &path)? {
                match BrokerRegistration::from_json(id, &data) {
                    Ok(registration) => {
                        brokers.insert(
                            id,
                            LiveBroker {
                                registration,
                                epoch: stat.czxid,
                            },
                        );
                    }
                    Err(e) => log::warn!("ignoring broker {id}: {e}"),
                }
            }
        }
        let ctx = self.ctx.as_mut().expect("active");
        ctx.brokers = brokers;
        ctx.shutting_down.retain(|b| ctx.brokers.contains_key(b));
        Ok(())
    }

    fn read_topics(&mut self, c: &Controller) -> Result<(), ControllerError> {
        let names = c
            .store
            .watch_children(BROKER_TOPICS_PATH, self.watch_tx.clone())?;
        let mut topics = BTreeMap::new();
        let mut wanted: Vec<(String, i32)> = Vec::new();
        for name in names {
            if let Some(assignment) = self.read_topic(c, &name)? {
                wanted.extend(assignment.partitions.keys().map(|p| (name.clone(), *p)));
                topics.insert(name, assignment);
            }
        }
        let mut states = BTreeMap::new();
        let found = cluster::read_partition_states(&*c.store, &wanted)?;
        for ((topic, p), state) in wanted.into_iter().zip(found) {
            if let Some(s) = state {
                states.insert(TopicPartition::new(&topic, p), s);
            }
        }
        let ctx = self.ctx.as_mut().expect("active");
        ctx.topics = topics;
        ctx.states = states;
        Ok(())
    }

    /// A topic's assignment, watching it for new partitions.
    fn read_topic(
        &self,
        c: &Controller,
        name: &str,
    ) -> Result<Option<TopicAssignment>, ControllerError> {
        let path = layout::topic_path(name);
        if c.store.watch_data(&path, self.watch_tx.clone())?.is_none() {
            return Ok(None);
        }
        let Some((data, _)) = get_opt(&*c.store, &path)? else {
            return Ok(None);
        };
        match TopicAssignment::from_json(&data) {
            Ok(a) => Ok(Some(a)),
            Err(e) => {
                log::warn!("ignoring topic {name}: {e}");
                Ok(None)
            }
        }
    }

    fn partitions_without_state(&self) -> Vec<TopicPartition> {
        let ctx = self.ctx.as_ref().expect("active");
        ctx.topics
            .iter()
            .filter(|(t, _)| !ctx.deleting.contains(*t))
            .flat_map(|(t, a)| a.partitions.keys().map(move |p| TopicPartition::new(t, *p)))
            .filter(|tp| !ctx.states.contains_key(tp))
            .collect()
    }

    /// NewPartition → OnlinePartition: first alive replica leads, alive replicas in sync.
    fn create_partitions(
        &mut self,
        c: &Controller,
        tps: &[TopicPartition],
    ) -> Result<(), ControllerError> {
        let ctx = self.ctx.as_ref().expect("active");
        let live = ctx.live();
        let mut created = Vec::new();
        for tp in tps {
            let assignment = ctx.assignment(tp);
            let Some(state) = decide::initial_state(&assignment, &live, ctx.epoch) else {
                log::warn!(
                    "partition {tp} has no live replica among {assignment:?}; it stays offline"
                );
                continue;
            };
            created.push((tp.clone(), state));
        }
        for chunk in created.chunks(500) {
            let mut ops = Vec::new();
            for (tp, state) in chunk {
                ops.push(Op::Create {
                    path: layout::topic_partitions_path(&tp.topic),
                    data: Vec::new(),
                    mode: kbroker_coordinator::CreateMode::Persistent,
                });
                ops.push(Op::Create {
                    path: layout::topic_partition_path(&tp.topic, tp.partition),
                    data: Vec::new(),
                    mode: kbroker_coordinator::CreateMode::Persistent,
                });
                ops.push(Op::Create {
                    path: layout::partition_state_path(&tp.topic, tp.partition),
                    data: state.to_json(),
                    mode: kbroker_coordinator::CreateMode::Persistent,
                });
            }
            // Parents may exist already: create them one by one, states in one fenced multi.
            for op in ops.iter().filter(|o| !o.path().ends_with("/state")) {
                match c
                    .store
                    .create(op.path(), b"", kbroker_coordinator::CreateMode::Persistent)
                {
                    Ok(_) | Err(StoreError::NodeExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let states: Vec<Op> = ops
                .into_iter()
                .filter(|o| o.path().ends_with("/state"))
                .collect();
            match self.fenced(c, states) {
                Ok(()) => {}
                Err(ControllerError::Store(StoreError::NodeExists(_))) => {
                    // Created by a previous controller: read them instead.
                    for (tp, _) in chunk {
                        if let Some(s) =
                            cluster::read_partition_state(&*c.store, &tp.topic, tp.partition)?
                        {
                            self.ctx
                                .as_mut()
                                .expect("active")
                                .states
                                .insert(tp.clone(), s);
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
            let ctx = self.ctx.as_mut().expect("active");
            for (tp, state) in chunk {
                ctx.states.insert(tp.clone(), state.clone());
            }
        }
        Ok(())
    }

    /// A multi-op conditional on this controller's epoch version.
    fn fenced(&self, c: &Controller, ops: Vec<Op>) -> Result<(), ControllerError> {
        let ctx = self.ctx.as_ref().expect("active");
        let mut all = Vec::with_capacity(ops.len() + 1);
        all.push(Op::Check {
            path: CONTROLLER_EPOCH_PATH.to_string(),
            version: ctx.epoch_zk_version,
        });
        all.extend(ops);
        match c.store.multi(&all) {
            Ok(_) => Ok(()),
            Err(StoreError::BadVersion { path, .. }) if path == CONTROLLER_EPOCH_PATH => {
                Err(ControllerError::Fenced)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes new states for partitions (each conditional on the version read), updating
    /// the context. Partitions whose state changed under us are re-read and skipped.
    fn write_states(
        &mut self,
        c: &Controller,
        changes: Vec<(TopicPartition, PartitionState)>,
    ) -> Result<Vec<TopicPartition>, ControllerError> {
        let mut written = Vec::new();
        for chunk in changes.chunks(500) {
            let ops: Vec<Op> = chunk
                .iter()
                .map(|(tp, s)| Op::SetData {
                    path: layout::partition_state_path(&tp.topic, tp.partition),
                    data: s.to_json(),
                    version: Some(s.zk_version),
                })
                .collect();
            match self.fenced(c, ops) {
                Ok(()) => {
                    let ctx = self.ctx.as_mut().expect("active");
                    for (tp, s) in chunk {
                        let mut s = s.clone();
                        s.zk_version += 1;
                        ctx.states.insert(tp.clone(), s);
                        written.push(tp.clone());
                    }
                }
                Err(ControllerError::Store(
                    StoreError::BadVersion { .. } | StoreError::NoNode(_),
                )) => {
                    // One of them moved (a leader changed its ISR): one at a time.
                    for (tp, s) in chunk {
                        let op = vec![Op::SetData {
                            path: layout::partition_state_path(&tp.topic, tp.partition),
                            data: s.to_json(),
                            version: Some(s.zk_version),
                        }];
                        match self.fenced(c, op) {
                            Ok(()) => {
                                let mut s = s.clone();
                                s.zk_version += 1;
                                self.ctx
                                    .as_mut()
                                    .expect("active")
                                    .states
                                    .insert(tp.clone(), s);
                                written.push(tp.clone());
                            }
                            Err(ControllerError::Fenced) => return Err(ControllerError::Fenced),
                            Err(_) => {
                                if let Some(fresh) = cluster::read_partition_state(
                                    &*c.store,
                                    &tp.topic,
                                    tp.partition,
                                )? {
                                    self.ctx
                                        .as_mut()
                                        .expect("active")
                                        .states
                                        .insert(tp.clone(), fresh);
                                }
                            }
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// Elects leaders for partitions whose leader is gone (OfflinePartition → Online). A
    /// state that moved under the controller (a leader wrote its ISR just before dying) is
    /// re-read by `write_states`; the election runs again on it, a few times at most.
    fn elect_offline_partitions(
        &mut self,
        c: &Controller,
    ) -> Result<Vec<TopicPartition>, ControllerError> {
        let mut written = Vec::new();
        for _ in 0..STALE_STATE_RETRIES {
            let changes = self.offline_elections(c);
            let wanted = changes.len();
            let done = self.write_states(c, changes)?;
            let all_done = done.len() == wanted;
            for tp in &done {
                let s = &self.ctx.as_ref().expect("active").states[tp];
                log::info!(
                    "partition {tp} leader={} leader_epoch={} isr={:?}",
                    s.leader,
                    s.leader_epoch,
                    s.isr
                );
            }
            written.extend(done);
            if all_done {
                break;
            }
        }
        Ok(written)
    }

    fn offline_elections(&self, c: &Controller) -> Vec<(TopicPartition, PartitionState)> {
        let ctx = self.ctx.as_ref().expect("active");
        let live = ctx.live();
        let mut changes = Vec::new();
        let mut unclean_by_topic: BTreeMap<&str, bool> = BTreeMap::new();
        for (tp, state) in &ctx.states {
            // A broker in controlled shutdown still serves what it could not hand over.
            if ctx.deleting.contains(&tp.topic) || ctx.brokers.contains_key(&state.leader) {
                continue;
            }
            let assignment = ctx.assignment(tp);
            let unclean = *unclean_by_topic
                .entry(tp.topic.as_str())
                .or_insert_with(|| unclean_election_enabled(c, &tp.topic));
            match decide::elect_offline(&assignment, &state.isr, &live, unclean) {
                Ok(e) => changes.push((tp.clone(), decide::next_state(state, &e, ctx.epoch))),
                Err(_) => {
                    if state.leader != -1 {
                        // No eligible replica: offline, leader -1 (Kafka's NoLeader).
                        let offline = Election {
                            leader: -1,
                            isr: state.isr.clone(),
                        };
                        changes.push((tp.clone(), decide::next_state(state, &offline, ctx.epoch)));
                    }
                }
            }
        }
        changes
    }

    fn on_broker_change(&mut self, c: &Controller) -> Result<(), ControllerError> {
        let before: BTreeMap<i32, i64> = self
            .ctx
            .as_ref()
            .expect("active")
            .brokers
            .iter()
            .map(|(id, b)| (*id, b.epoch))
            .collect();
        self.read_brokers(c)?;
        let ctx = self.ctx.as_ref().expect("active");
        let now: BTreeMap<i32, i64> = ctx.brokers.iter().map(|(id, b)| (*id, b.epoch)).collect();
        // A broker that re-registered (new epoch) counts as gone and back.
        let dead: Vec<i32> = before
            .iter()
            .filter(|(id, e)| now.get(id) != Some(e))
            .map(|(id, _)| *id)
            .collect();
        let added: Vec<i32> = now
            .iter()
            .filter(|(id, e)| before.get(id) != Some(e))
            .map(|(id, _)| *id)
            .collect();
        if dead.is_empty() && added.is_empty() {
            return Ok(());
        }
        log::info!(
            "broker change: new={added:?} gone={dead:?} live={:?}",
            now.keys().collect::<Vec<_>>()
        );
        for id in &dead {
            if !now.contains_key(id) {
                c.channel.remove_broker(*id);
            }
        }
        for id in &added {
            if let Some(b) = ctx.brokers.get(id) {
                if let Some((host, port)) =
                    endpoint(&b.registration, &c.config.inter_broker_listener)
                {
                    c.channel.add_broker(*id, &host, port);
                }
            }
        }
        // Dead replicas leave the ISR (and leaders move) — Kafka's OfflineReplica transition.
        let gone: BTreeSet<i32> = dead
            .iter()
            .copied()
            .filter(|d| !now.contains_key(d))
            .collect();
        let mut changed = self.elect_offline_partitions(c)?;
        changed.extend(self.shrink_isr_of(c, &gone)?);
        // Partitions that could not get a leader may now.
        let new_partitions = self.partitions_without_state();
        self.create_partitions(c, &new_partitions)?;
        changed.extend(new_partitions);
        changed.sort();
        changed.dedup();
        let ctx = self.ctx.as_ref().expect("active");
        let all_partitions: Vec<TopicPartition> = ctx.states.keys().cloned().collect();
        let all_brokers: Vec<i32> = ctx.brokers.keys().copied().collect();
        // New brokers get everything; the others get what changed.
        if !added.is_empty() {
            self.send_update_metadata(c, &added, &all_partitions, &[]);
            let theirs: Vec<TopicPartition> = all_partitions
                .iter()
                .filter(|tp| ctx.assignment(tp).iter().any(|r| added.contains(r)))
                .cloned()
                .collect();
            self.send_leader_and_isr_to(c, &theirs, &added, true);
        }
        let others: Vec<i32> = all_brokers
            .iter()
            .copied()
            .filter(|b| !added.contains(b))
            .collect();
        self.send_update_metadata(c, &others, &changed, &[]);
        self.send_leader_and_isr(c, &changed, false);
        Ok(())
    }

    /// Removes `gone` brokers from the ISR of partitions they follow, in a new leader epoch
    /// (Kafka's OfflineReplica transition): the leader's high watermark stops waiting for
    /// them. Re-run on states that moved meanwhile, as elections are.
    fn shrink_isr_of(
        &mut self,
        c: &Controller,
        gone: &BTreeSet<i32>,
    ) -> Result<Vec<TopicPartition>, ControllerError> {
        let mut written = Vec::new();
        if gone.is_empty() {
            return Ok(written);
        }
        for _ in 0..STALE_STATE_RETRIES {
            let ctx = self.ctx.as_ref().expect("active");
            let changes: Vec<(TopicPartition, PartitionState)> = ctx
                .states
                .iter()
                .filter(|(tp, s)| {
                    !ctx.deleting.contains(&tp.topic)
                        && s.leader >= 0
                        && s.isr.iter().any(|r| gone.contains(r))
                        && s.isr.iter().any(|r| !gone.contains(r))
                })
                .map(|(tp, s)| {
                    (
                        tp.clone(),
                        without_in_isr(s, |r| gone.contains(&r), ctx.epoch),
                    )
                })
                .collect();
            let wanted = changes.len();
            let done = self.write_states(c, changes)?;
            let all_done = done.len() == wanted;
            written.extend(done);
            if all_done {
                break;
            }
        }
        Ok(written)
    }

    fn on_topic_change(&mut self, c: &Controller) -> Result<(), ControllerError> {
        let names = c
            .store
            .watch_children(BROKER_TOPICS_PATH, self.watch_tx.clone())?;
        let known: BTreeSet<String> = self
            .ctx
            .as_ref()
            .expect("active")
            .topics
            .keys()
            .cloned()
            .collect();
        let current: BTreeSet<String> = names.into_iter().collect();
        let mut fresh = Vec::new();
        for name in current.difference(&known) {
            if let Some(a) = self.read_topic(c, name)? {
                log::info!("new topic {name} partitions={}", a.partitions.len());
                self.ctx
                    .as_mut()
                    .expect("active")
                    .topics
                    .insert(name.clone(), a);
                fresh.push(name.clone());
            }
        }
        // Topics whose znode vanished without the deletion path.
        let vanished: Vec<String> = known.difference(&current).cloned().collect();
        if !vanished.is_empty() {
            let ctx = self.ctx.as_mut().expect("active");
            for t in &vanished {
                ctx.topics.remove(t);
                ctx.states.retain(|tp, _| &tp.topic != t);
                ctx.deleting.remove(t);
            }
        }
        let tps = self.partitions_without_state();
        self.create_partitions(c, &tps)?;
        self.announce_new(c, &tps);
        if !vanished.is_empty() {
            self.update_metadata_everywhere(c, &[], &vanished);
        }
        Ok(())
    }

    fn announce_new(&mut self, c: &Controller, tps: &[TopicPartition]) {
        let ctx = self.ctx.as_ref().expect("active");
        let created: Vec<TopicPartition> = tps
            .iter()
            .filter(|tp| ctx.states.contains_key(*tp))
            .cloned()
            .collect();
        if created.is_empty() {
            return;
        }
        self.send_leader_and_isr(c, &created, true);
        self.update_metadata_everywhere(c, &created, &[]);
    }

    fn on_partition_modification(
        &mut self,
        c: &Controller,
        topic: &str,
    ) -> Result<(), ControllerError> {
        let Some(a) = self.read_topic(c, topic)? else {
            return Ok(());
        };
        let ctx = self.ctx.as_mut().expect("active");
        let before = ctx.topics.get(topic).map_or(0, |t| t.partitions.len());
        ctx.topics.insert(topic.to_string(), a);
        let tps = self.partitions_without_state();
        if !tps.is_empty() {
            log::info!(
                "topic {topic} grows from {before} partitions to {}",
                before + tps.len()
            );
        }
        self.create_partitions(c, &tps)?;
        self.announce_new(c, &tps);
        Ok(())
    }

    fn on_topic_deletion(&mut self, c: &Controller) -> Result<(), ControllerError> {
        let marked = c
            .store
            .watch_children(DELETE_TOPICS_PATH, self.watch_tx.clone())?;
        for topic in marked {
            let known = self
                .ctx
                .as_ref()
                .expect("active")
                .topics
                .contains_key(&topic);
            if !known {
                // Marked for a topic that does not exist: remove the mark.
                let _ = c.store.delete(&layout::delete_topic_path(&topic), None);
                continue;
            }
            self.delete_topic(c, &topic)?;
        }
        Ok(())
    }

    /// StopReplica(delete) to every replica, then the topic's znodes go (fenced).
    fn delete_topic(&mut self, c: &Controller, topic: &str) -> Result<(), ControllerError> {
        let ctx = self.ctx.as_mut().expect("active");
        ctx.deleting.insert(topic.to_string());
        let assignment = ctx
            .topics
            .get(topic)
            .cloned()
            .unwrap_or_else(|| TopicAssignment {
                topic_id: [0; 16],
                partitions: BTreeMap::new(),
                adding_replicas: BTreeMap::new(),
                removing_replicas: BTreeMap::new(),
            });
        let mut per_broker: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
        for (p, replicas) in &assignment.partitions {
            for r in replicas {
                per_broker
                    .entry(*r)
                    .or_default()
                    .push(TopicPartition::new(topic, *p));
            }
        }
        self.send_stop_replicas(c, per_broker, true);
        // The znodes: states and partitions first, then the topic, its config, the mark.
        let mut ops = Vec::new();
        for p in assignment.partitions.keys() {
            let state = layout::partition_state_path(topic, *p);
            if c.store.exists(&state)?.is_some() {
                ops.push(Op::Delete {
                    path: state,
                    version: None,
                });
            }
            let part = layout::topic_partition_path(topic, *p);
            if c.store.exists(&part)?.is_some() {
                ops.push(Op::Delete {
                    path: part,
                    version: None,
                });
            }
        }
        for path in [
            layout::topic_partitions_path(topic),
            layout::topic_path(topic),
            layout::topic_config_path(topic),
            layout::delete_topic_path(topic),
        ] {
            if c.store.exists(&path)?.is_some() {
                ops.push(Op::Delete {
                    path,
                    version: None,
                });
            }
        }
        self.fenced(c, ops)?;
        let ctx = self.ctx.as_mut().expect("active");
        ctx.topics.remove(topic);
        ctx.states.retain(|tp, _| tp.topic != topic);
        ctx.deleting.remove(topic);
        log::info!("deleted topic {topic}");
        self.update_metadata_everywhere(c, &[], &[topic.to_string()]);
        Ok(())
    }

    fn on_isr_change(&mut self, c: &Controller) -> Result<(), ControllerError> {
        let names = c
            .store
            .watch_children(ISR_CHANGE_NOTIFICATION_PATH, self.watch_tx.clone())?;
        if names.is_empty() {
            return Ok(());
        }
        let mut changed = BTreeSet::new();
        for name in &names {
            let path = format!("{ISR_CHANGE_NOTIFICATION_PATH}/{name}");
            if let Some((data, _)) = get_opt(&*c.store, &path)? {
                for (topic, partition) in
                    layout::decode_isr_change_notification(&data).unwrap_or_default()
                {
                    changed.insert(TopicPartition::new(&topic, partition));
                }
            }
        }
        for tp in &changed {
            if let Some(s) = cluster::read_partition_state(&*c.store, &tp.topic, tp.partition)? {
                self.ctx
                    .as_mut()
                    .expect("active")
                    .states
                    .insert(tp.clone(), s);
            }
        }
        for name in names {
            let _ = c
                .store
                .delete(&format!("{ISR_CHANGE_NOTIFICATION_PATH}/{name}"), None);
        }
        let changed: Vec<TopicPartition> = changed.into_iter().collect();
        self.update_metadata_everywhere(c, &changed, &[]);
        // A new replica joining the ISR may complete its partition's reassignment.
        for tp in &changed {
            self.maybe_complete(c, tp)?;
        }
        Ok(())
    }

    fn on_preferred_election(&mut self, c: &Controller) -> Result<(), ControllerError> {
        let Some(_) = c
            .store
            .watch_data(PREFERRED_REPLICA_ELECTION_PATH, self.watch_tx.clone())?
        else {
            return Ok(());
        };
        let Some((data, _)) = get_opt(&*c.store, PREFERRED_REPLICA_ELECTION_PATH)? else {
            return Ok(());
        };
        let requested = layout::decode_partition_list(&data).unwrap_or_default();
        let tps: Vec<TopicPartition> = requested
            .into_iter()
            .map(|(t, p)| TopicPartition::new(&t, p))
            .collect();
        self.elect_preferred(c, &tps)?;
        let _ = c.store.delete(PREFERRED_REPLICA_ELECTION_PATH, None);
        Ok(())
    }

    /// Kafka's ElectLeaders on the controller: preferred election moves leadership to the
    /// first assigned replica if it is alive and in sync (ELECTION_NOT_NEEDED if it leads,
    /// PREFERRED_LEADER_NOT_AVAILABLE if it cannot); unclean election gives a leaderless
    /// partition any live replica (ELECTION_NOT_NEEDED if it has a live leader,
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE if none is alive).
    fn on_elect_leaders(
        &mut self,
        c: &Controller,
        partitions: Option<Vec<TopicPartition>>,
        unclean: bool,
        reply: ElectReply,
    ) -> Result<(), ControllerError> {
        use kafka_protocol::ResponseError as E;
        let Some(ctx) = self.ctx.as_ref() else {
            reply(Err(E::NotController.code()));
            return Ok(());
        };
        let live = ctx.live();
        let targets = partitions.unwrap_or_else(|| ctx.states.keys().cloned().collect());
        let mut results: ElectionResults = Vec::with_capacity(targets.len());
        let mut changes = Vec::new();
        for tp in targets {
            let Some(state) = ctx
                .states
                .get(&tp)
                .filter(|_| !ctx.deleting.contains(&tp.topic))
            else {
                results.push((tp, E::UnknownTopicOrPartition.code(), None));
                continue;
            };
            let assignment = ctx.assignment(&tp);
            let outcome = if unclean {
                if live.contains(&state.leader) {
                    Err((
                        E::ElectionNotNeeded,
                        "Leader election not needed for topic partition.",
                    ))
                } else {
                    decide::elect_offline(&assignment, &state.isr, &live, true).map_err(|_| {
                        (
                            E::EligibleLeadersNotAvailable,
                            "No replica of the partition is alive.",
                        )
                    })
                }
            } else if assignment.first() == Some(&state.leader) {
                Err((
                    E::ElectionNotNeeded,
                    "Leader election not needed for topic partition.",
                ))
            } else {
                decide::elect_preferred(&assignment, &state.isr, &live, state.leader).map_err(
                    |_| {
                        (
                            E::PreferredLeaderNotAvailable,
                            "The preferred replica is either not alive or not in the ISR.",
                        )
                    },
                )
            };
            match outcome {
                Ok(e) => changes.push((tp.clone(), decide::next_state(state, &e, ctx.epoch))),
                Err((code, message)) => results.push((tp, code.code(), Some(message.to_string()))),
            }
        }
        let wanted: Vec<TopicPartition> = changes.iter().map(|(tp, _)| tp.clone()).collect();
        let written = match self.write_states(c, changes) {
            Ok(w) => w,
            Err(e) => {
                reply(Err(E::UnknownServerError.code()));
                return Err(e);
            }
        };
        if !written.is_empty() {
            log::info!(
                "ElectLeaders elected new leaders for {} partitions",
                written.len()
            );
            self.send_leader_and_isr(c, &written, false);
            self.update_metadata_everywhere(c, &written, &[]);
        }
        let written: BTreeSet<TopicPartition> = written.into_iter().collect();
        for tp in wanted {
            if written.contains(&tp) {
                results.push((tp, 0, None));
            } else {
                // Its state changed while electing; the client may ask again.
                results.push((
                    tp,
                    E::UnknownServerError.code(),
                    Some("The partition's state changed during the election.".into()),
                ));
            }
        }
        reply(Ok(results));
        Ok(())
    }

    /// Moves leadership back to each partition's preferred replica where it can lead.
    fn elect_preferred(
        &mut self,
        c: &Controller,
        tps: &[TopicPartition],
    ) -> Result<(), ControllerError> {
        let ctx = self.ctx.as_ref().expect("active");
        let live = ctx.live();
        let mut changes = Vec::new();
        for tp in tps {
            let Some(state) = ctx.states.get(tp) else {
                continue;
            };
            if let Ok(e) =
                decide::elect_preferred(&ctx.assignment(tp), &state.isr, &live, state.leader)
            {
                changes.push((tp.clone(), decide::next_state(state, &e, ctx.epoch)));
            }
        }
        let written = self.write_states(c, changes)?;
        if !written.is_empty() {
            log::info!("preferred leaders elected for {} partitions", written.len());
            self.send_leader_and_isr(c, &written, false);
            self.update_metadata_everywhere(c, &written, &[]);
        }
        Ok(())
    }

    /// Kafka's auto leader rebalance: brokers whose share of partitions led elsewhere (of
    /// those they prefer) passes the threshold get their leaderships back.
    fn rebalance(&mut self, c: &Controller) -> Result<(), ControllerError> {
        let Some(ctx) = self.ctx.as_ref() else {
            return Ok(());
        };
        let mut preferred: BTreeMap<i32, (usize, Vec<TopicPartition>)> = BTreeMap::new();
        for (tp, s) in &ctx.states {
            if let Some(&p) = ctx.assignment(tp).first() {
                let entry = preferred.entry(p).or_default();
                entry.0 += 1;
                if s.leader != p {
                    entry.1.push(tp.clone());
                }
            }
        }
        let threshold = c.config.leader_imbalance_per_broker_percentage as f64 / 100.0;
        let mut to_move = Vec::new();
        for (broker, (total, off)) in preferred {
            if ctx.brokers.contains_key(&broker)
                && !ctx.shutting_down.contains(&broker)
                && total > 0
                && off.len() as f64 / total as f64 > threshold
            {
                to_move.extend(off);
            }
        }
        if to_move.is_empty() {
            return Ok(());
        }
        self.elect_preferred(c, &to_move)
    }

    fn on_controlled_shutdown(
        &mut self,
        c: &Controller,
        broker_id: i32,
        broker_epoch: i64,
        reply: ShutdownReply,
    ) -> Result<(), ControllerError> {
        let Some(ctx) = self.ctx.as_mut() else {
            reply(Err(kafka_protocol::ResponseError::NotController.code()));
            return Ok(());
        };
        let Some(b) = ctx.brokers.get(&broker_id) else {
            reply(Err(kafka_protocol::ResponseError::BrokerNotAvailable.code()));
            return Ok(());
        };
        if broker_epoch >= 0 && broker_epoch != b.epoch {
            reply(Err(kafka_protocol::ResponseError::StaleBrokerEpoch.code()));
            return Ok(());
        }
        log::info!("controlled shutdown of broker {broker_id}");
        ctx.shutting_down.insert(broker_id);
        // Recomputed on states that moved meanwhile (a leader adding the broker back to an
        // ISR just before): Kafka's controller retries such writes the same way.
        let mut written = Vec::new();
        for _ in 0..STALE_STATE_RETRIES {
            let changes = self.shutdown_changes(broker_id);
            let wanted = changes.len();
            let done = match self.write_states(c, changes) {
                Ok(w) => w,
                Err(e) => {
                    reply(Err(kafka_protocol::ResponseError::UnknownServerError.code()));
                    return Err(e);
                }
            };
            let all_done = done.len() == wanted;
            written.extend(done);
            if all_done {
                break;
            }
        }
        // The others hear of their new leaders and ISRs; the broker going away stops its
        // replicas (Kafka's OfflineReplica: StopReplica without delete), so it does not fetch
        // its way back into the ISRs it just left.
        let others: Vec<i32> = self
            .ctx
            .as_ref()
            .expect("active")
            .brokers
            .keys()
            .copied()
            .filter(|b| *b != broker_id)
            .collect();
        self.send_leader_and_isr_to(c, &written, &others, false);
        self.send_stop_replicas(c, BTreeMap::from([(broker_id, written.clone())]), false);
        let ctx = self.ctx.as_ref().expect("active");
        self.update_metadata_everywhere(c, &written, &[]);
        let remaining: Vec<TopicPartition> = ctx
            .states
            .iter()
            .filter(|(tp, s)| s.leader == broker_id && ctx.assignment(tp).len() > 1)
            .map(|(tp, _)| tp.clone())
            .collect();
        reply(Ok(remaining));
        Ok(())
    }

    /// What a controlled shutdown of `broker_id` changes: its leaderships move to another
    /// in-sync replica, and it leaves the ISRs it is in (each a new leader epoch).
    fn shutdown_changes(&self, broker_id: i32) -> Vec<(TopicPartition, PartitionState)> {
        let ctx = self.ctx.as_ref().expect("active");
        let live = ctx.live();
        let mut changes = Vec::new();
        for (tp, s) in &ctx.states {
            let assignment = ctx.assignment(tp);
            if assignment.len() < 2 || ctx.deleting.contains(&tp.topic) {
                continue;
            }
            if s.leader == broker_id {
                if let Ok(e) =
                    decide::elect_for_shutdown(&assignment, &s.isr, &live, &ctx.shutting_down)
                {
                    changes.push((tp.clone(), decide::next_state(s, &e, ctx.epoch)));
                }
            } else if s.isr.contains(&broker_id) && s.isr.len() > 1 {
                changes.push((tp.clone(), without_in_isr(s, |r| r == broker_id, ctx.epoch)));
            }
        }
        changes
    }

    /// UpdateMetadata for `tps` (and the `deleted` topics) to every live broker.
    fn update_metadata_everywhere(
        &self,
        c: &Controller,
        tps: &[TopicPartition],
        deleted: &[String],
    ) {
        let brokers: Vec<i32> = self
            .ctx
            .as_ref()
            .expect("active")
            .brokers
            .keys()
            .copied()
            .collect();
        self.send_update_metadata(c, &brokers, tps, deleted);
    }

    /// LeaderAndIsr for `tps` to every live replica of each.
    fn send_leader_and_isr(&self, c: &Controller, tps: &[TopicPartition], is_new: bool) {
        let ctx = self.ctx.as_ref().expect("active");
        let brokers: Vec<i32> = ctx.brokers.keys().copied().collect();
        self.send_leader_and_isr_to(c, tps, &brokers, is_new);
    }

    fn send_leader_and_isr_to(
        &self,
        c: &Controller,
        tps: &[TopicPartition],
        to: &[i32],
        is_new: bool,
    ) {
        if tps.is_empty() {
            return;
        }
        let ctx = self.ctx.as_ref().expect("active");
        let mut per_broker: BTreeMap<i32, BTreeMap<String, Vec<LeaderAndIsrPartitionState>>> =
            BTreeMap::new();
        for tp in tps {
            let Some(s) = ctx.states.get(tp) else {
                continue;
            };
            let assignment = ctx.assignment(tp);
            // (v2+: the topic name is in the topic state, not here)
            let ps = LeaderAndIsrPartitionState::default()
                .with_partition_index(tp.partition)
                .with_controller_epoch(s.controller_epoch)
                .with_leader(BrokerId(s.leader))
                .with_leader_epoch(s.leader_epoch)
                .with_isr(s.isr.iter().map(|b| BrokerId(*b)).collect())
                .with_partition_epoch(s.zk_version)
                .with_replicas(assignment.iter().map(|b| BrokerId(*b)).collect())
                .with_is_new(is_new);
            for r in &assignment {
                if to.contains(r) && ctx.brokers.contains_key(r) {
                    per_broker
                        .entry(*r)
                        .or_default()
                        .entry(tp.topic.clone())
                        .or_default()
                        .push(ps.clone());
                }
            }
        }
        for (broker, topics) in per_broker {
            let live_leaders: Vec<LeaderAndIsrLiveLeader> = topics
                .values()
                .flatten()
                .map(|ps| ps.leader.0)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter_map(|l| ctx.brokers.get(&l).map(|b| (l, b)))
                .filter_map(|(l, b)| {
                    endpoint(&b.registration, &c.config.inter_broker_listener).map(|(h, p)| {
                        LeaderAndIsrLiveLeader::default()
                            .with_broker_id(BrokerId(l))
                            .with_host_name(StrBytes::from_string(h))
                            .with_port(p as i32)
                    })
                })
                .collect();
            let topic_states = topics
                .into_iter()
                .map(|(t, states)| {
                    LeaderAndIsrTopicState::default()
                        .with_topic_name(crate::handler::topic_name(&t))
                        .with_topic_id(ctx.topic_id(&t))
                        .with_partition_states(states)
                })
                .collect();
            let request = LeaderAndIsrRequest::default()
                .with_controller_id(BrokerId(c.config.broker_id))
                .with_controller_epoch(ctx.epoch)
                .with_broker_epoch(ctx.brokers.get(&broker).map_or(-1, |b| b.epoch))
                .with_topic_states(topic_states)
                .with_live_leaders(live_leaders);
            c.channel
                .send(broker, ControllerRequest::LeaderAndIsr(request));
        }
    }

    /// StopReplica to each live broker for its partitions (deleting their logs if `delete`).
    fn send_stop_replicas(
        &self,
        c: &Controller,
        per_broker: BTreeMap<i32, Vec<TopicPartition>>,
        delete: bool,
    ) {
        let ctx = self.ctx.as_ref().expect("active");
        for (broker, tps) in per_broker {
            let Some(b) = ctx.brokers.get(&broker) else {
                continue;
            };
            let mut by_topic: BTreeMap<&str, Vec<StopReplicaPartitionState>> = BTreeMap::new();
            for tp in &tps {
                by_topic.entry(&tp.topic).or_default().push(
                    StopReplicaPartitionState::default()
                        .with_partition_index(tp.partition)
                        .with_leader_epoch(-2)
                        .with_delete_partition(delete),
                );
            }
            let request = StopReplicaRequest::default()
                .with_controller_id(BrokerId(c.config.broker_id))
                .with_controller_epoch(ctx.epoch)
                .with_broker_epoch(b.epoch)
                .with_topic_states(
                    by_topic
                        .into_iter()
                        .map(|(t, states)| {
                            StopReplicaTopicState::default()
                                .with_topic_name(crate::handler::topic_name(t))
                                .with_partition_states(states)
                        })
                        .collect(),
                );
            c.channel
                .send(broker, ControllerRequest::StopReplica(request));
        }
    }

    /// UpdateMetadata with the live brokers and `tps` (and `deleted` topics' partitions as
    /// LeaderDuringDelete) to `to`.
    fn send_update_metadata(
        &self,
        c: &Controller,
        to: &[i32],
        tps: &[TopicPartition],
        deleted: &[String],
    ) {
        let ctx = self.ctx.as_ref().expect("active");
        let live_brokers: Vec<UpdateMetadataBroker> = ctx
            .brokers
            .iter()
            .map(|(id, b)| {
                UpdateMetadataBroker::default()
                    .with_id(BrokerId(*id))
                    .with_rack(b.registration.rack.clone().map(StrBytes::from_string))
                    .with_endpoints(
                        b.registration
                            .endpoints
                            .iter()
                            .map(|e| {
                                UpdateMetadataEndpoint::default()
                                    .with_host(StrBytes::from_string(e.host.clone()))
                                    .with_port(e.port as i32)
                                    .with_listener(StrBytes::from_string(e.listener_name.clone()))
                                    .with_security_protocol(0)
                            })
                            .collect(),
                    )
            })
            .collect();
        let mut topics: BTreeMap<String, Vec<UpdateMetadataPartitionState>> = BTreeMap::new();
        for tp in tps {
            let Some(s) = ctx.states.get(tp) else {
                continue;
            };
            let assignment = ctx.assignment(tp);
            let offline: Vec<BrokerId> = assignment
                .iter()
                .filter(|r| !ctx.brokers.contains_key(r))
                .map(|r| BrokerId(*r))
                .collect();
            topics.entry(tp.topic.clone()).or_default().push(
                UpdateMetadataPartitionState::default()
                    .with_partition_index(tp.partition)
                    .with_controller_epoch(s.controller_epoch)
                    .with_leader(BrokerId(s.leader))
                    .with_leader_epoch(s.leader_epoch)
                    .with_isr(s.isr.iter().map(|b| BrokerId(*b)).collect())
                    .with_zk_version(s.zk_version)
                    .with_replicas(assignment.iter().map(|b| BrokerId(*b)).collect())
                    .with_offline_replicas(offline),
            );
        }
        for t in deleted {
            topics.entry(t.clone()).or_default().push(
                UpdateMetadataPartitionState::default()
                    .with_partition_index(-1)
                    .with_leader(BrokerId(LEADER_DURING_DELETE)),
            );
        }
        let topic_states: Vec<UpdateMetadataTopicState> = topics
            .into_iter()
            .map(|(t, states)| {
                UpdateMetadataTopicState::default()
                    .with_topic_name(crate::handler::topic_name(&t))
                    .with_topic_id(ctx.topic_id(&t))
                    .with_partition_states(states)
            })
            .collect();
        for broker in to {
            let Some(b) = ctx.brokers.get(broker) else {
                continue;
            };
            let request = UpdateMetadataRequest::default()
                .with_controller_id(BrokerId(c.config.broker_id))
                .with_controller_epoch(ctx.epoch)
                .with_broker_epoch(b.epoch)
                .with_topic_states(topic_states.clone())
                .with_live_brokers(live_brokers.clone());
            c.channel
                .send(*broker, ControllerRequest::UpdateMetadata(request));
        }
    }
}

/// Host and port of `registration`'s listener `name` (or its first).
/// How often an election or ISR change is recomputed on states that moved under it.
const STALE_STATE_RETRIES: usize = 3;

/// `s` with the replicas `drop` picks out of its ISR, in the next leader epoch (Kafka 2.8's
/// `newLeaderAndIsr`: every leader or ISR change by the controller is a new epoch).
fn without_in_isr(
    s: &PartitionState,
    drop: impl Fn(i32) -> bool,
    controller_epoch: i32,
) -> PartitionState {
    let mut next = s.clone();
    next.isr.retain(|r| !drop(*r));
    next.leader_epoch += 1;
    next.controller_epoch = controller_epoch;
    next
}

pub fn endpoint(registration: &BrokerRegistration, name: &str) -> Option<(String, u16)> {
    registration
        .endpoints
        .iter()
        .find(|e| e.listener_name == name)
        .or_else(|| registration.endpoints.first())
        .map(|e| (e.host.clone(), e.port))
}

#[derive(Debug)]
enum ControllerError {
    /// A fenced store write failed because another controller took over.
    Fenced,
    Store(StoreError),
}

impl From<StoreError> for ControllerError {
    fn from(e: StoreError) -> Self {
        ControllerError::Store(e)
    }
}

/// `unclean.leader.election.enable` for `topic`: its override in `/config/topics/<topic>`
/// if it has one, else the controller broker's dynamic config (its own layer, then the
/// cluster default), else its static setting. A store that cannot be read answers false:
/// an election that waits for the ISR loses no acknowledged record.
fn unclean_election_enabled(c: &Controller, topic: &str) -> bool {
    const KEY: &str = "unclean.leader.election.enable";
    let layers = crate::dynamic_config::Layers::read(&*c.store, c.config.broker_id);
    match (cluster::read_topic_config(&*c.store, topic), layers) {
        (Ok(config), Ok(layers)) => config
            .config
            .get(KEY)
            .map(String::as_str)
            .or_else(|| layers.lookup(KEY).map(|(_, v)| v))
            .map_or(c.config.unclean_leader_election, |v| {
                v.trim().eq_ignore_ascii_case("true")
            }),
        (Err(e), _) | (_, Err(e)) => {
            log::warn!("reading the config of {topic} failed ({e}); no unclean election");
            false
        }
    }
}

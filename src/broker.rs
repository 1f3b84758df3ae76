//! The broker: its services wired together, its lifecycle, and the periodic scheduler.
//!
//! Services, with one-way dependencies (handlers → services → crates):
//! - the metadata store: the embedded `LocalStore` (single node) or a ZooKeeper ensemble
//!   (`zookeeper.connect`), holding Kafka's znode tree;
//! - [`MetadataCache`]: brokers and partitions as the controller last published them;
//! - [`ReplicaManager`]: the logs, partition roles, high watermarks and the fetch purgatory;
//! - [`Admin`]: topic changes written through the store, answered once the controller acted;
//! - the group coordinator, over `__consumer_offsets` partitions this broker leads;
//! - [`Controller`] (elected through `/controller`) and its [`ControllerChannel`].
//!
//! Start: open the store, check `/cluster/id` against `meta.properties`, load the logs
//! (recovering after a crash), then — [`Broker::join_cluster`], after the socket server is
//! listening — register `/brokers/ids/{id}` (a live registration of the same id elsewhere is
//! refused) and run for controller. On a single node the election and its first requests
//! (applied in process) complete before the broker is reported started. Shutdown: a
//! controlled shutdown (leaderships moved away, bounded by `controlled.shutdown.*`), resign,
//! stop the services, close the logs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kbroker_coordinator::{cluster, layout, LocalStore, MetadataStore, ZkConfig, ZkStore};
use kbroker_storage::LogManager;

use crate::admin::{Admin, AdminConfig};
use crate::channel::{ControllerChannel, ControllerRequest, LocalDelivery};
use crate::config::{topic_log_config, Config};
use crate::controller::{Controller, ControllerConfig};
use crate::dynamic_config::{DynamicState, Layers};
use crate::groups::{CoordinatorConfig, GroupCoordinator};
use crate::metadata_cache::{MetadataCache, TopicConfig};
use crate::replica_fetcher::FetcherConfig;
use crate::replica_manager::{LeadershipListener, ReplicaManager, ReplicationConfig};
use kbroker_coordinator::group::GroupConfig;

/// The metadata tree dump `kbroker metadata` reads, in `<first log dir>/.metadata/`.
pub const METADATA_DUMP: &str = "tree.dump";
/// How long start-up waits for the local controller's first round (single node).
const LOCAL_STARTUP_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("metadata store: {0}")]
    Store(#[from] kbroker_coordinator::StoreError),
    #[error("storage: {0}")]
    Storage(#[from] kbroker_storage::StorageError),
    #[error("config: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Unsupported(String),
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Random bytes from the OS (topic ids, cluster id).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut out = [0u8; N];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut out));
    if filled.is_err() {
        // Fall back to time and address entropy; ids need uniqueness, not secrecy.
        let seed = now_ms() as u64 ^ (&out as *const _ as u64).rotate_left(17);
        for (i, b) in out.iter_mut().enumerate() {
            *b = (seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(i as u32 * 7)
                >> 24) as u8;
        }
    }
    out
}

pub struct Broker {
    pub config: Config,
    pub cluster_id: String,
    pub store: Arc<dyn MetadataStore>,
    pub metadata: Arc<MetadataCache>,
    pub replicas: Arc<ReplicaManager>,
    pub admin: Admin,
    pub groups: Arc<GroupCoordinator>,
    pub channel: Arc<ControllerChannel>,
    controller: OnceLock<Arc<Controller>>,
    pub registration: layout::BrokerRegistration,
    /// Producer ids for InitProducerId.
    pub producer_ids: Arc<crate::producer_ids::ProducerIdManager>,
    pub started_ms: i64,
    /// The last `/config/changes` notification applied (-1: none yet).
    pub config_changes_seen: AtomicI64,
    /// Incremental fetch sessions (KIP-227).
    pub fetch_sessions: crate::fetch_session::FetchSessions,
    /// The dynamic broker configs in force (`/config/brokers`) and the config they make.
    dynamic: std::sync::RwLock<Arc<DynamicState>>,
    /// True for the embedded store (single node).
    pub single_node: bool,
}

/// Hands the local controller's requests to this broker's services, in order.
struct LocalBroker {
    broker: OnceLock<std::sync::Weak<Broker>>,
}

impl LocalDelivery for LocalBroker {
    fn deliver(&self, request: ControllerRequest, done: Box<dyn FnOnce() + Send>) {
        let Some(broker) = self.broker.get().and_then(std::sync::Weak::upgrade) else {
            done();
            return;
        };
        match request {
            ControllerRequest::UpdateMetadata(r) => {
                // After the LeaderAndIsr queued before it, as a remote broker applies them.
                let weak = Arc::downgrade(&broker);
                broker.replicas.submit_after(Box::new(move || {
                    if let Some(broker) = weak.upgrade() {
                        crate::handler::update_metadata::apply(&broker, &r);
                    }
                    done();
                }));
            }
            ControllerRequest::LeaderAndIsr(r) => {
                // Waits for room: the local controller's requests are never dropped.
                broker
                    .replicas
                    .submit_leader_and_isr(r, Box::new(move |_| done()), true)
            }
            ControllerRequest::StopReplica(r) => {
                broker
                    .replicas
                    .submit_stop_replica(r, Box::new(move |_| done()), true)
            }
        }
    }
}

fn open_store(config: &Config) -> Result<(Arc<dyn MetadataStore>, bool), BrokerError> {
    match &config.zookeeper_connect {
        Some(connect) => {
            let store = ZkStore::connect(ZkConfig {
                connect: connect.clone(),
                session_timeout: Duration::from_millis(config.zookeeper_session_timeout_ms),
                connection_timeout: Duration::from_millis(config.zookeeper_connection_timeout_ms),
            })?;
            Ok((Arc::new(store), false))
        }
        None => {
            let dir = config.log_dirs[0].join(".metadata");
            Ok((Arc::new(LocalStore::open(&dir)?), true))
        }
    }
}

impl Broker {
    /// Opens the store and the logs; joins nothing yet (see [`Broker::join_cluster`]).
    pub fn open(config: Config) -> Result<Arc<Broker>, BrokerError> {
        let first_dir = config.log_dirs[0].clone();
        std::fs::create_dir_all(&first_dir).map_err(|e| {
            kbroker_storage::StorageError::io(format!("creating {}", first_dir.display()), e)
        })?;
        let (store, single_node) = open_store(&config)?;
        if let Err(e) = cluster::ensure_persistent_paths(&*store) {
            // A full disk at start: the paths come when something is written.
            log::warn!("creating Kafka's persistent znodes failed: {e}");
        }
        let cluster_id = cluster::ensure_cluster_id(&*store, || {
            layout::topic_id_to_string(&random_bytes::<16>())
        })?;
        // Dynamic broker configs are part of every topic's defaults from the start.
        let dynamic = match Layers::read(&*store, config.broker_id) {
            Ok(layers) => DynamicState::from_layers(&config, layers),
            Err(e) => {
                log::warn!("reading the dynamic broker configs failed ({e}); static config only");
                DynamicState::none(&config)
            }
        };
        let defaults = dynamic.effective.default_log_config();
        let stored = cluster::read_topics(&*store)?;
        let mut log_configs: BTreeMap<String, TopicConfig> = BTreeMap::new();
        for (name, (_, cfg)) in &stored {
            let log_config = topic_log_config(&defaults, &cfg.config)?;
            log_configs.insert(
                name.clone(),
                TopicConfig {
                    overrides: cfg.config.clone(),
                    log_config,
                },
            );
        }
        let config_for = |topic: &str| {
            log_configs
                .get(topic)
                .map(|c| c.log_config.clone())
                .unwrap_or_else(|| defaults.clone())
        };
        // meta.properties must name this cluster (Kafka's InconsistentClusterIdException).
        let logs = LogManager::open(
            &config.log_dirs,
            config.broker_id,
            &cluster_id,
            &config_for,
            now_ms(),
        )?;
        let metadata = Arc::new(MetadataCache::new(defaults.clone()));
        for (name, c) in log_configs {
            metadata.set_topic_config(&name, c);
        }
        let replicas = ReplicaManager::start(
            config.broker_id,
            logs,
            Arc::clone(&metadata),
            Arc::clone(&store),
            ReplicationConfig {
                fetcher: FetcherConfig {
                    broker_id: config.broker_id,
                    num_fetchers: config.num_replica_fetchers,
                    partition_max_bytes: saturating_i32(config.replica_fetch_max_bytes),
                    response_max_bytes: saturating_i32(config.replica_fetch_response_max_bytes),
                    wait_max_ms: config.replica_fetch_wait_max_ms,
                    min_bytes: config.replica_fetch_min_bytes,
                    backoff: Duration::from_millis(config.replica_fetch_backoff_ms),
                    socket_timeout: Duration::from_millis(config.replica_socket_timeout_ms),
                },
                lag_time_max_ms: config.replica_lag_time_max_ms,
                quota_windows: config.replication_quota_window_num,
                quota_window_ms: config.replication_quota_window_size_seconds * 1000,
            },
        );
        set_replication_throttles(&replicas, &dynamic.effective);
        log::info!(
            "broker opened broker_id={} cluster_id={} topics={} clean_shutdown={}",
            config.broker_id,
            cluster_id,
            stored.len(),
            replicas.logs.had_clean_shutdown()
        );
        let groups = Arc::new(GroupCoordinator::new(
            CoordinatorConfig {
                group: GroupConfig {
                    min_session_timeout_ms: config.group_min_session_timeout_ms,
                    max_session_timeout_ms: config.group_max_session_timeout_ms,
                    initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
                    max_size: config.group_max_size,
                },
                offsets_partitions: config.offsets_topic_num_partitions,
                offsets_replication_factor: config.offsets_topic_replication_factor,
                offsets_segment_bytes: config.offsets_topic_segment_bytes,
                offsets_retention_ms: config.offsets_retention_ms,
                offsets_retention_check_interval_ms: config.offsets_retention_check_interval_ms,
                offsets_commit_timeout_ms: config.offsets_commit_timeout_ms,
                metadata_dump_path: first_dir.join(".metadata").join(METADATA_DUMP),
            },
            Arc::clone(&replicas) as Arc<dyn crate::groups::OffsetsLog>,
            Box::new(crate::handler::GroupReplies),
        ));
        let admin = Admin::start(
            Arc::clone(&store),
            Arc::clone(&metadata),
            AdminConfig {
                num_partitions: config.num_partitions,
                default_replication_factor: config.default_replication_factor,
                delete_topic_enable: config.delete_topic_enable,
            },
        );
        let local = Arc::new(LocalBroker {
            broker: OnceLock::new(),
        });
        let channel = Arc::new(ControllerChannel::new(
            config.broker_id,
            Arc::clone(&local) as Arc<dyn LocalDelivery>,
        ));
        let registration = layout::BrokerRegistration {
            id: config.broker_id,
            endpoints: config
                .advertised_listeners
                .iter()
                .map(|l| layout::Endpoint {
                    listener_name: l.name.clone(),
                    security_protocol: "PLAINTEXT".into(),
                    host: l.host.clone(),
                    port: l.port,
                })
                .collect(),
            rack: config.broker_rack.clone(),
            timestamp_ms: now_ms(),
        };
        let producer_ids =
            crate::producer_ids::ProducerIdManager::start(Arc::clone(&store), config.broker_id);
        let fetch_sessions = crate::fetch_session::FetchSessions::new(
            config.max_incremental_fetch_session_cache_slots,
        );
        let broker = Arc::new(Broker {
            config,
            cluster_id,
            store,
            metadata,
            replicas,
            admin,
            groups,
            channel,
            controller: OnceLock::new(),
            registration,
            producer_ids,
            started_ms: now_ms(),
            config_changes_seen: AtomicI64::new(-1),
            fetch_sessions,
            dynamic: std::sync::RwLock::new(Arc::new(dynamic)),
            single_node,
        });
        let _ = local.broker.set(Arc::downgrade(&broker));
        // A weak reference: the coordinator lives as long as the broker owns it.
        let listener: Arc<dyn LeadershipListener> =
            Arc::clone(&broker.groups) as Arc<dyn LeadershipListener>;
        broker
            .replicas
            .set_leadership_listener(Arc::downgrade(&listener));
        // Config changes written before a LeaderAndIsr (a reassignment's throttles, set by
        // the tool before it starts the move) are in force before the replicas act on it,
        // not up to a config-change poll later.
        let weak = Arc::downgrade(&broker);
        broker.replicas.set_before_leader_and_isr(Box::new(move || {
            if let Some(b) = weak.upgrade() {
                process_config_changes(&b, Some(&*b.store), now_ms());
            }
        }));
        broker
            .groups
            .start_threads(Arc::clone(&broker.store), broker.single_node);
        Ok(broker)
    }

    /// Registers this broker and runs for controller. On a single node, waits for the
    /// controller's first round so the broker starts serving its partitions at once.
    /// The broker's config with the dynamic layers on top (what DescribeConfigs shows and
    /// what the produce path and the topic defaults use).
    pub fn effective_config(&self) -> Arc<Config> {
        Arc::clone(&self.dynamic_state().effective)
    }

    /// The broker-level `min.insync.replicas` (static or dynamic).
    pub fn min_insync_replicas(&self) -> i32 {
        self.dynamic
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .effective
            .min_insync_replicas
    }

    pub fn dynamic_state(&self) -> Arc<DynamicState> {
        Arc::clone(&self.dynamic.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads the dynamic broker configs again and applies them: new topic defaults for
    /// every log that does not override them. An invalid stored config is ignored
    /// (logged), keeping the one in force.
    pub fn reload_dynamic_config(&self, store: &dyn MetadataStore) {
        let layers = match Layers::read(store, self.config.broker_id) {
            Ok(l) => l,
            Err(e) => {
                log::warn!("reading the dynamic broker configs failed: {e}");
                return;
            }
        };
        let effective = match crate::dynamic_config::effective(&self.config, &layers) {
            Ok(c) => c,
            Err(e) => {
                log::error!("ignoring the new dynamic broker config ({e}): {layers:?}");
                return;
            }
        };
        let defaults = effective.default_log_config();
        log::info!(
            "dynamic broker config now broker={:?} default={:?}",
            layers.per_broker,
            layers.cluster_default
        );
        *self.dynamic.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(DynamicState {
            layers,
            effective: Arc::new(effective),
        });
        self.metadata.set_defaults(defaults);
        self.replicas.apply_topic_configs();
        set_replication_throttles(&self.replicas, &self.effective_config());
    }

    pub fn join_cluster(self: &Arc<Self>) -> Result<(), BrokerError> {
        let epoch = self.register()?;
        self.replicas.set_broker_epoch(epoch);
        let weak = Arc::downgrade(self);
        let controller = Controller::start(
            ControllerConfig {
                broker_id: self.config.broker_id,
                unclean_leader_election: self.config.unclean_leader_election_enable,
                auto_leader_rebalance: self.config.auto_leader_rebalance_enable,
                leader_imbalance_check_interval: Duration::from_secs(
                    self.config.leader_imbalance_check_interval_seconds,
                ),
                leader_imbalance_per_broker_percentage: self
                    .config
                    .leader_imbalance_per_broker_percentage,
                inter_broker_listener: self.config.inter_broker_listener_name.clone(),
            },
            Arc::clone(&self.store),
            Arc::clone(&self.channel),
            self.registration.clone(),
            epoch,
            Box::new(move |epoch| {
                if let Some(b) = weak.upgrade() {
                    b.replicas.set_broker_epoch(epoch);
                }
            }),
        );
        let _ = self.controller.set(Arc::clone(&controller));
        let wait = if self.single_node {
            LOCAL_STARTUP_WAIT
        } else {
            Duration::from_millis(0)
        };
        controller.startup(wait);
        if self.single_node && !self.channel.wait_local(LOCAL_STARTUP_WAIT) {
            log::warn!("the controller's first round did not finish within {LOCAL_STARTUP_WAIT:?}");
        }
        Ok(())
    }

    /// Creates `/brokers/ids/{id}`. A registration left by this broker's previous process
    /// (killed, its ZooKeeper session not yet expired) goes away within the session
    /// timeout, so that long is waited for; a registration still there after it belongs to
    /// another live broker, and start-up is refused.
    fn register(&self) -> Result<i64, BrokerError> {
        let patience = if self.single_node {
            Duration::ZERO
        } else {
            Duration::from_millis(self.config.zookeeper_session_timeout_ms) + Duration::from_secs(2)
        };
        let started = std::time::Instant::now();
        let mut warned = false;
        loop {
            match cluster::register_broker(&*self.store, &self.registration) {
                Ok(epoch) => return Ok(epoch),
                Err(kbroker_coordinator::StoreError::BrokerAlreadyRegistered { broker_id })
                    if started.elapsed() < patience =>
                {
                    if !warned {
                        log::warn!(
                            "/brokers/ids/{broker_id} is held by another session; waiting up to {patience:?} \
                             for it to expire"
                        );
                        warned = true;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(kbroker_coordinator::StoreError::BrokerAlreadyRegistered { broker_id }) => {
                    return Err(BrokerError::Unsupported(format!(
                        "broker.id={broker_id} is already registered by another live broker \
                         (/brokers/ids/{broker_id}); each broker needs its own broker.id"
                    )))
                }
                Err(other) => return Err(BrokerError::Store(other)),
            }
        }
    }

    pub fn controller(&self) -> Option<Arc<Controller>> {
        self.controller.get().cloned()
    }

    /// Applies the controller's UpdateMetadata to the cache; false if from a stale epoch.
    pub fn apply_update_metadata(
        &self,
        request: &kafka_protocol::messages::UpdateMetadataRequest,
    ) -> bool {
        let first = self.metadata.image().controller_id < 0;
        let applied = self
            .metadata
            .apply_update_metadata(request, &self.config.advertised_listeners[0].name);
        if applied && first {
            // Logs of topics deleted while this broker was down go once the cluster's topics
            // are known (the controller's first update lists every topic).
            let known: BTreeMap<String, ()> = self
                .metadata
                .image()
                .topics
                .keys()
                .map(|k| (k.clone(), ()))
                .collect();
            if !known.is_empty() || self.single_node {
                self.replicas.delete_stray_logs(&known);
            }
        }
        applied
    }

    /// Asks the controller to move this broker's leaderships away; true once none remain
    /// (or after `controlled.shutdown.max.retries` attempts).
    pub fn controlled_shutdown(&self) -> bool {
        if !self.config.controlled_shutdown_enable {
            return false;
        }
        let moved = crate::shutdown::run(self);
        if self.config.zookeeper_connect.is_some() {
            self.replicas.stop_following();
        }
        moved
    }

    /// Before the socket server stops: resigns as controller and answers every parked
    /// request (waiting fetches, joins, admin operations) so in-flight work drains.
    pub fn stop_serving(&self) {
        if let Some(c) = self.controller() {
            c.shutdown();
        }
        self.replicas.fetch_purgatory.shutdown();
        self.groups.shutdown();
        self.metadata.waiters.shutdown();
    }

    /// After the socket server stopped: stops the remaining threads and closes the logs
    /// (flushed, checkpointed, clean-shutdown marker written).
    pub fn shutdown(&self) -> Result<(), BrokerError> {
        self.admin.shutdown();
        self.replicas.shutdown();
        self.channel.remove_all();
        let closed = self.replicas.logs.shutdown();
        // Last: the registration stays until the logs are closed.
        self.store.close();
        closed?;
        Ok(())
    }
}

/// The periodic work of the broker: retention, flushes, checkpoints, compaction, producer
/// expiry.
pub struct Scheduler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Scheduler {
    pub fn start(broker: Arc<Broker>) -> Scheduler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("kb-scheduler".into())
            .spawn(move || run_scheduler(broker, flag))
            .expect("spawning the scheduler thread");
        Scheduler {
            stop,
            handle: Some(handle),
        }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run_scheduler(broker: Arc<Broker>, flag: Arc<AtomicBool>) {
    let logs = &broker.replicas.logs;
    let retention_every = broker.config.log_retention_check_interval_ms as i64;
    let checkpoint_every = broker
        .config
        .log_flush_offset_checkpoint_interval_ms
        .max(1000) as i64;
    let clean_every = broker.config.log_cleaner_backoff_ms as i64;
    let producer_check_every = broker.config.producer_id_expiration_check_interval_ms as i64;
    // Kafka checks for lagging followers every half replica.lag.time.max.ms, so a follower
    // that stopped leaves the ISR 1 to 1.5 lag times later; checking at least every 250 ms
    // makes that the lag time + 250 ms at most (acks=all to its partitions waits that much
    // less). A check only compares the led partitions' follower times: no I/O unless one
    // shrinks.
    let isr_check_every = (broker.config.replica_lag_time_max_ms / 2).clamp(1, 250);
    let start = now_ms();
    let (mut last_retention, mut last_checkpoint, mut last_clean, mut last_producer_check) =
        (start, start, start, start);
    let mut last_isr_check = start;
    let mut last_config_check = start - CONFIG_CHANGES_CHECK_MS;
    while !flag.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
        let now = now_ms();
        if now - last_retention >= retention_every {
            last_retention = now;
            let deleted = logs.run_retention(now);
            if deleted > 0 {
                log::info!("retention deleted_segments={deleted}");
            }
            broker.replicas.fetch_purgatory.purge_completed();
            broker.replicas.produce_purgatory.purge_completed();
            broker.metadata.waiters.purge_completed();
        }
        if broker.config.log_cleaner_enable && now - last_clean >= clean_every {
            last_clean = now;
            for (tp, log) in logs.all() {
                use kbroker_storage::manager::lock;
                // Planned and installed under the log's lock; the reading, compacting and
                // writing in between without it (produce and fetch go on).
                let job = lock(&log).map(|l| l.prepare_clean(now));
                let cleaned = match job {
                    Ok(Some(job)) => job
                        .run()
                        .and_then(|outcome| lock(&log).and_then(|mut l| l.finish_clean(outcome))),
                    Ok(None) => Ok(0),
                    Err(e) => Err(e),
                };
                match cleaned {
                    Ok(_) | Err(kbroker_storage::StorageError::Offline(_)) => {}
                    Err(e) => log::error!("compaction failed partition={tp}: {e}"),
                }
            }
        }
        if now - last_producer_check >= producer_check_every {
            last_producer_check = now;
            for (_, log) in logs.all() {
                if let Ok(mut l) = kbroker_storage::manager::lock(&log) {
                    l.remove_expired_producers(now);
                }
            }
        }
        if now - last_isr_check >= isr_check_every {
            last_isr_check = now;
            broker.replicas.shrink_lagging_isrs(now);
        }
        if now - last_config_check >= CONFIG_CHANGES_CHECK_MS {
            last_config_check = now;
            let b = Arc::clone(&broker);
            broker.admin.with_store(Box::new(move |store| {
                process_config_changes(&b, store, now)
            }));
        }
        if now - last_checkpoint >= checkpoint_every {
            last_checkpoint = now;
            if let Err(e) = logs.flush_and_checkpoint(now) {
                log::error!("checkpoint failed: {e}");
            }
        }
    }
}

/// How often `/config/changes` is looked at for topic config changes.
const CONFIG_CHANGES_CHECK_MS: i64 = 1000;
/// Notifications older than this are deleted by whichever broker sees them (Kafka: 15 min).
const CONFIG_CHANGE_EXPIRY_MS: i64 = 15 * 60 * 1000;

/// Applies the config change notifications this broker has not seen yet (on the admin
/// thread, and on the replica state thread before each LeaderAndIsr): each names a topic
/// whose `/config/topics/<topic>` is read again and applied to the topic's logs, or a
/// layer of the dynamic broker config. At start every notification left is applied once
/// (harmless: configs are read whole). Expired notifications are removed.
fn process_config_changes(broker: &Broker, store: Option<&dyn MetadataStore>, now: i64) {
    let Some(store) = store else {
        return;
    };
    let after = broker.config_changes_seen.load(Ordering::Acquire);
    let changes = match cluster::config_changes_after(store, after) {
        Ok(c) => c,
        Err(e) => {
            log::debug!("reading /config/changes: {e}");
            return;
        }
    };
    let own = crate::dynamic_config::entity_path(Some(broker.config.broker_id));
    let cluster_default = crate::dynamic_config::entity_path(None);
    for change in changes {
        if let Some(topic) = change.entity.strip_prefix("topics/") {
            broker.replicas.reload_topic_config(topic);
        } else if change.entity == own || change.entity == cluster_default {
            broker.reload_dynamic_config(store);
        }
        // fetch_max: the state thread runs this too (before a LeaderAndIsr).
        broker
            .config_changes_seen
            .fetch_max(change.sequence, Ordering::AcqRel);
        if change.created_ms > 0 && now - change.created_ms > CONFIG_CHANGE_EXPIRY_MS {
            let _ = store.delete(&change.path, None);
        }
    }
}

fn saturating_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The replication throttles' bounds from the config in force (static or dynamic).
fn set_replication_throttles(replicas: &ReplicaManager, config: &Config) {
    let quotas = &replicas.quotas;
    let (leader, follower) = (
        config.leader_replication_throttled_rate,
        config.follower_replication_throttled_rate,
    );
    if quotas.leader.bound() != leader || quotas.follower.bound() != follower {
        log::info!("replication throttles: leader {leader} B/s, follower {follower} B/s");
    }
    quotas.leader.set_bound(leader);
    quotas.follower.set_bound(follower);
}

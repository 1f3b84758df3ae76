//! The broker's shared state and its lifecycle: start, the periodic scheduler, shutdown.
//!
//! Start: open the metadata store (embedded `local` backend in `<first log dir>/.metadata`),
//! make sure `/cluster/id` exists, register `/brokers/ids/{id}` (ephemeral), become the
//! controller through `/controller` (single node: always this broker), read every topic's
//! assignment and config from Kafka's znodes, open the log dirs (recovering after a crash),
//! then start the socket server. Shutdown runs the same steps backwards and leaves
//! `.kafka_cleanshutdown` behind. Everything here is shared by the handler threads through
//! an `Arc<Broker>`; topic metadata is copy-on-write behind an `RwLock`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kbroker_coordinator::{cluster, layout, LocalStore, MetadataStore};
use kbroker_replication::purgatory::Purgatory;
use kbroker_storage::manager::SharedLog;
use kbroker_storage::{LogConfig, LogManager, TopicPartition};

use crate::config::{topic_log_config, Config};
use crate::groups::{CoordinatorConfig, GroupCoordinator};
use kbroker_coordinator::group::GroupConfig;

/// Waiting fetches at most (Kafka bounds purgatory size by request count, too).
pub const DELAYED_FETCH_MAX: usize = 10_000;
/// The metadata tree dump `kbroker metadata` reads, in `<first log dir>/.metadata/`.
pub const METADATA_DUMP: &str = "tree.dump";

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

/// One partition as this broker knows it.
#[derive(Clone)]
pub struct PartitionInfo {
    pub index: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The local log, when this broker hosts a replica.
    pub log: Option<SharedLog>,
    /// This broker hosts a replica whose log dir failed: it answers KAFKA_STORAGE_ERROR.
    pub offline: bool,
}

/// One topic: id, partitions, config overrides.
pub struct TopicInfo {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: Vec<PartitionInfo>,
    pub configs: BTreeMap<String, String>,
    pub log_config: LogConfig,
    pub internal: bool,
}

pub struct Broker {
    pub config: Config,
    pub cluster_id: String,
    pub store: Arc<dyn MetadataStore>,
    pub logs: LogManager,
    pub topics: RwLock<BTreeMap<String, Arc<TopicInfo>>>,
    pub fetch_purgatory: Purgatory<TopicPartition>,
    pub controller_epoch: i32,
    pub groups: Arc<GroupCoordinator>,
    /// Serializes topic creation, deletion and partition changes.
    pub admin_lock: Mutex<()>,
    pub started_ms: i64,
    /// Producer ids for InitProducerId.
    pub producer_ids: Arc<crate::producer_ids::ProducerIdManager>,
}

impl Broker {
    /// Opens the store and the logs; does not start the network.
    pub fn open(config: Config) -> Result<Arc<Broker>, BrokerError> {
        if config.zookeeper_connect.is_some() {
            return Err(BrokerError::Unsupported("zookeeper.connect: the ZooKeeper backend is not implemented yet; remove the key to run with embedded coordination".into()));
        }
        let first_dir = config.log_dirs[0].clone();
        std::fs::create_dir_all(&first_dir).map_err(|e| {
            kbroker_storage::StorageError::io(format!("creating {}", first_dir.display()), e)
        })?;
        let store: Arc<dyn MetadataStore> =
            Arc::new(LocalStore::open(&first_dir.join(".metadata"))?);
        if let Err(e) = cluster::ensure_persistent_paths(&*store) {
            // A full disk at start: the paths come when something is written.
            log::warn!("creating Kafka's persistent znodes failed: {e}");
        }
        let cluster_id = cluster::ensure_cluster_id(&*store, || {
            layout::topic_id_to_string(&random_bytes::<16>())
        })?;
        let endpoints = config
            .advertised_listeners
            .iter()
            .map(|l| layout::Endpoint {
                listener_name: l.name.clone(),
                security_protocol: "PLAINTEXT".into(),
                host: l.host.clone(),
                port: l.port,
            })
            .collect();
        let registration = layout::BrokerRegistration {
            id: config.broker_id,
            endpoints,
            rack: None,
            timestamp_ms: now_ms(),
        };
        cluster::register_broker(&*store, &registration)?;
        let controller_epoch = match cluster::elect_controller(&*store, config.broker_id)? {
            Some(epoch) => {
                log::info!(
                    "elected controller broker_id={} controller_epoch={}",
                    config.broker_id,
                    epoch
                );
                epoch
            }
            None => return Err(BrokerError::Unsupported(
                "another broker holds /controller; multi-broker clusters need zookeeper.connect"
                    .into(),
            )),
        };
        let stored = cluster::read_topics(&*store)?;
        let defaults = config.default_log_config();
        let mut log_configs: BTreeMap<String, LogConfig> = BTreeMap::new();
        for (name, (_, cfg)) in &stored {
            log_configs.insert(name.clone(), topic_log_config(&defaults, &cfg.config)?);
        }
        let config_for = |topic: &str| {
            log_configs
                .get(topic)
                .cloned()
                .unwrap_or_else(|| defaults.clone())
        };
        let logs = LogManager::open(
            &config.log_dirs,
            config.broker_id,
            &cluster_id,
            &config_for,
            now_ms(),
        )?;
        let mut topics = BTreeMap::new();
        for (name, (assignment, cfg)) in stored {
            let log_config = config_for(&name);
            let mut partitions = Vec::new();
            for (p, replicas) in &assignment.partitions {
                let state = cluster::read_partition_state(&*store, &name, *p)?;
                let tp = TopicPartition::new(&name, *p);
                let (log, offline) = if replicas.contains(&config.broker_id) {
                    match logs.get_or_create(&tp, log_config.clone(), now_ms(), false) {
                        Ok(log) => (Some(log), false),
                        Err(e @ kbroker_storage::StorageError::Offline(_)) => {
                            log::warn!("partition {tp} is offline: {e}");
                            (None, true)
                        }
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    (None, false)
                };
                if let Some(Ok(mut l)) = log.as_ref().map(kbroker_storage::manager::lock) {
                    let end = l.log_end_offset();
                    l.set_high_watermark(end); // single replica: everything appended is committed
                }
                let (leader, leader_epoch, isr) = match state {
                    Some(s) => (s.leader, s.leader_epoch, s.isr),
                    None => (config.broker_id, 0, replicas.clone()),
                };
                partitions.push(PartitionInfo {
                    index: *p,
                    leader,
                    leader_epoch,
                    replicas: replicas.clone(),
                    isr,
                    log,
                    offline,
                });
            }
            let internal = name.starts_with("__");
            topics.insert(
                name.clone(),
                Arc::new(TopicInfo {
                    name,
                    id: assignment.topic_id,
                    partitions,
                    configs: cfg.config,
                    log_config,
                    internal,
                }),
            );
        }
        // Logs on disk whose topic is gone (deleted while down) are removed.
        for (tp, _) in logs.all() {
            if !topics.contains_key(&tp.topic) {
                log::warn!("deleting log {tp}: its topic is not in the metadata store");
                logs.delete(&tp)?;
            }
        }
        log::info!(
            "broker opened broker_id={} cluster_id={} topics={} clean_shutdown={}",
            config.broker_id,
            cluster_id,
            topics.len(),
            logs.had_clean_shutdown()
        );
        let groups = Arc::new(GroupCoordinator::new(CoordinatorConfig {
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
            metadata_dump_path: first_dir.join(".metadata").join(METADATA_DUMP),
        }));
        let producer_ids =
            crate::producer_ids::ProducerIdManager::start(Arc::clone(&store), config.broker_id);
        let broker = Arc::new(Broker {
            producer_ids,
            config,
            cluster_id,
            store,
            logs,
            topics: RwLock::new(topics),
            fetch_purgatory: Purgatory::new("fetch", DELAYED_FETCH_MAX),
            controller_epoch,
            admin_lock: Mutex::new(()),
            started_ms: now_ms(),
            groups,
        });
        broker
            .groups
            .load(&broker)
            .map_err(|e| BrokerError::Unsupported(format!("loading group offsets: {e}")))?;
        broker.groups.start_threads(Arc::downgrade(&broker));
        Ok(broker)
    }

    pub fn topic(&self, name: &str) -> Option<Arc<TopicInfo>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn all_topics(&self) -> Vec<Arc<TopicInfo>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The local log of a partition this broker leads.
    pub fn leader_log(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(Arc<TopicInfo>, SharedLog, i32), LookupError> {
        let info = self
            .topic(topic)
            .ok_or(LookupError::UnknownTopicOrPartition)?;
        let p = usize::try_from(partition)
            .ok()
            .and_then(|i| info.partitions.get(i))
            .ok_or(LookupError::UnknownTopicOrPartition)?;
        if p.leader != self.config.broker_id {
            return Err(LookupError::NotLeader);
        }
        if p.offline {
            return Err(LookupError::Offline);
        }
        let log = p.log.clone().ok_or(LookupError::NotLeader)?;
        let epoch = p.leader_epoch;
        Ok((info, log, epoch))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    UnknownTopicOrPartition,
    NotLeader,
    /// The replica's log dir is offline.
    Offline,
}

/// The periodic work of the broker: retention, flushes, checkpoints.
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
            .spawn(move || {
                let retention_every = broker.config.log_retention_check_interval_ms as i64;
                let checkpoint_every = broker
                    .config
                    .log_flush_offset_checkpoint_interval_ms
                    .max(1000) as i64;
                let (mut last_retention, mut last_checkpoint, mut last_clean) =
                    (now_ms(), now_ms(), now_ms());
                let producer_check_every =
                    broker.config.producer_id_expiration_check_interval_ms as i64;
                let mut last_producer_check = now_ms();
                let clean_every = broker.config.log_cleaner_backoff_ms as i64;
                while !flag.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(50));
                    let now = now_ms();
                    if now - last_retention >= retention_every {
                        last_retention = now;
                        let deleted = broker.logs.run_retention(now);
                        if deleted > 0 {
                            log::info!("retention deleted_segments={deleted}");
                        }
                        broker.fetch_purgatory.purge_completed();
                    }
                    if broker.config.log_cleaner_enable && now - last_clean >= clean_every {
                        last_clean = now;
                        for (tp, log) in broker.logs.all() {
                            let cleaned =
                                kbroker_storage::manager::lock(&log).and_then(|mut l| l.clean(now));
                            match cleaned {
                                Ok(_) | Err(kbroker_storage::StorageError::Offline(_)) => {}
                                Err(e) => log::error!("compaction failed partition={tp}: {e}"),
                            }
                        }
                    }
                    if now - last_producer_check >= producer_check_every {
                        last_producer_check = now;
                        for (_, log) in broker.logs.all() {
                            if let Ok(mut l) = kbroker_storage::manager::lock(&log) {
                                l.remove_expired_producers(now);
                            }
                        }
                    }
                    if now - last_checkpoint >= checkpoint_every {
                        last_checkpoint = now;
                        if let Err(e) = broker.logs.flush_and_checkpoint(now) {
                            log::error!("checkpoint failed: {e}");
                        }
                    }
                }
            })
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

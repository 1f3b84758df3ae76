//! Topic administration through the metadata store, as a ZooKeeper-mode Kafka broker does
//! it: CreateTopics writes `/config/topics/<t>` and `/brokers/topics/<t>` (the assignment),
//! DeleteTopics writes `/admin/delete_topics/<t>`, CreatePartitions rewrites the assignment
//! with a version check — and the controller, watching those paths, does the rest.
//!
//! Requests are queued to the `kb-admin` thread (handler threads never wait on the store)
//! and answered, like Kafka's delayed operations, once this broker's metadata shows the
//! controller has acted — the topic with a leader for every partition, gone, or grown — or
//! at `timeout_ms` with REQUEST_TIMED_OUT (a timeout of 0 answers once the znodes are
//! written). Validation errors are domain values; handlers map them to Kafka codes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use kbroker_coordinator::controller::{assign_replicas, AssignmentError};
use kbroker_coordinator::{cluster, layout, MetadataStore, StoreError};
use kbroker_replication::purgatory::DelayedOperation;

use crate::broker::random_bytes;
use crate::config::topic_log_config;
use crate::metadata_cache::{MetadataCache, CHANGED};

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_LENGTH_MAX: usize = 249;
/// Partitions per topic at most (a limit Kafka does not have; keeps one request bounded).
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;
/// Admin requests queued at most.
const ADMIN_QUEUED_MAX: usize = 1_000;

#[derive(Debug, Clone, thiserror::Error)]
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
    #[error("The controller did not act within the request's timeout.")]
    TimedOut,
    #[error("The admin queue is full.")]
    Busy,
    #[error("metadata store: {0}")]
    Store(String),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Store(e.to_string())
    }
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

/// What a create asks for; `None` (or -1) means the broker default.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub num_partitions: Option<i32>,
    pub replication_factor: Option<i16>,
    pub assignments: BTreeMap<i32, Vec<i32>>,
    pub configs: BTreeMap<String, String>,
}

/// What was (or would be) created.
#[derive(Debug, Clone)]
pub struct CreatedTopic {
    pub id: [u8; 16],
    pub partitions: i32,
    pub replication_factor: i16,
}

/// Broker settings the admin component applies.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub delete_topic_enable: bool,
}

pub type Reply<T> = Box<dyn FnOnce(T) + Send>;
pub type CreateResults = Vec<(String, Result<CreatedTopic, AdminError>)>;
pub type DeleteResults = Vec<(String, Result<[u8; 16], AdminError>)>;
pub type PartitionResults = Vec<(String, Result<(), AdminError>)>;
/// Topic name → its config overrides, `None` if the topic does not exist.
pub type TopicConfigs = BTreeMap<String, Option<BTreeMap<String, String>>>;

/// One topic's partition growth.
#[derive(Debug, Clone)]
pub struct PartitionGrowth {
    pub name: String,
    pub count: i32,
    pub assignments: Option<Vec<Vec<i32>>>,
}

enum Task {
    Create {
        specs: Vec<TopicSpec>,
        validate_only: bool,
        timeout_ms: i32,
        reply: Reply<CreateResults>,
    },
    Delete {
        names: Vec<String>,
        timeout_ms: i32,
        reply: Reply<DeleteResults>,
    },
    Grow {
        items: Vec<PartitionGrowth>,
        validate_only: bool,
        timeout_ms: i32,
        reply: Reply<PartitionResults>,
    },
    ReadConfigs {
        names: Vec<String>,
        reply: Reply<Result<TopicConfigs, AdminError>>,
    },
    /// Store work a handler must not wait for (OffsetCommit/OffsetFetch v0's znodes).
    Store(StoreWork),
    Stop,
}

/// A piece of work given the metadata store, run on the admin thread (given None, at
/// once, when the admin queue is full).
pub type StoreWork = Box<dyn FnOnce(Option<&dyn MetadataStore>) + Send>;

pub struct Admin {
    tx: Sender<Task>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Worker {
    store: Arc<dyn MetadataStore>,
    metadata: Arc<MetadataCache>,
    config: AdminConfig,
}

impl Admin {
    pub fn start(
        store: Arc<dyn MetadataStore>,
        metadata: Arc<MetadataCache>,
        config: AdminConfig,
    ) -> Admin {
        let (tx, rx) = crossbeam_channel::bounded(ADMIN_QUEUED_MAX);
        let worker = Worker {
            store,
            metadata,
            config,
        };
        let thread = std::thread::Builder::new()
            .name("kb-admin".into())
            .spawn(move || worker.run(rx))
            .expect("spawning the admin thread");
        Admin {
            tx,
            thread: Mutex::new(Some(thread)),
        }
    }

    pub fn shutdown(&self) {
        let _ = self.tx.send(Task::Stop);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }

    /// Creates topics; `reply` gets one result per spec.
    pub fn create_topics(
        &self,
        specs: Vec<TopicSpec>,
        validate_only: bool,
        timeout_ms: i32,
        reply: Reply<CreateResults>,
    ) {
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let task = Task::Create {
            specs,
            validate_only,
            timeout_ms,
            reply,
        };
        if let Err(crossbeam_channel::TrySendError::Full(Task::Create { reply, .. })) =
            self.tx.try_send(task)
        {
            reply(
                names
                    .into_iter()
                    .map(|n| (n, Err(AdminError::Busy)))
                    .collect(),
            );
        }
    }

    /// Creates a topic with the broker defaults and does not wait (auto-creation).
    pub fn create_in_background(&self, spec: TopicSpec) {
        let name = spec.name.clone();
        self.create_topics(
            vec![spec],
            false,
            0,
            Box::new(move |r| {
                for (_, result) in r {
                    match result {
                        Ok(_) | Err(AdminError::TopicExists(_)) => {}
                        Err(e) => log::warn!("auto-creating topic {name} failed: {e}"),
                    }
                }
            }),
        );
    }

    pub fn delete_topics(&self, names: Vec<String>, timeout_ms: i32, reply: Reply<DeleteResults>) {
        let copy = names.clone();
        if let Err(crossbeam_channel::TrySendError::Full(Task::Delete { reply, .. })) =
            self.tx.try_send(Task::Delete {
                names,
                timeout_ms,
                reply,
            })
        {
            reply(
                copy.into_iter()
                    .map(|n| (n, Err(AdminError::Busy)))
                    .collect(),
            );
        }
    }

    /// Runs `work` with the store on the admin thread (with None at once if the queue is
    /// full), so a handler thread never waits on the store.
    pub fn with_store(&self, work: StoreWork) {
        if let Err(crossbeam_channel::TrySendError::Full(Task::Store(work))) =
            self.tx.try_send(Task::Store(work))
        {
            work(None);
        }
    }

    /// Reads topics' config overrides from the store (DescribeConfigs).
    pub fn read_topic_configs(
        &self,
        names: Vec<String>,
        reply: Reply<Result<TopicConfigs, AdminError>>,
    ) {
        if let Err(crossbeam_channel::TrySendError::Full(Task::ReadConfigs { reply, .. })) =
            self.tx.try_send(Task::ReadConfigs { names, reply })
        {
            reply(Err(AdminError::Busy));
        }
    }

    pub fn create_partitions(
        &self,
        items: Vec<PartitionGrowth>,
        validate_only: bool,
        timeout_ms: i32,
        reply: Reply<PartitionResults>,
    ) {
        let names: Vec<String> = items.iter().map(|i| i.name.clone()).collect();
        if let Err(crossbeam_channel::TrySendError::Full(Task::Grow { reply, .. })) =
            self.tx.try_send(Task::Grow {
                items,
                validate_only,
                timeout_ms,
                reply,
            })
        {
            reply(
                names
                    .into_iter()
                    .map(|n| (n, Err(AdminError::Busy)))
                    .collect(),
            );
        }
    }
}

/// Waits for the metadata to satisfy `done` per name, then replies.
struct AwaitMetadata<T: Send + 'static> {
    metadata: Arc<MetadataCache>,
    /// name → result so far; `Ok` entries are waiting for `done`.
    results: Mutex<Option<Pending<T>>>,
    done: DoneWhen,
}

type NamedResults<T> = Vec<(String, Result<T, AdminError>)>;
/// The results so far and whom to give them.
type Pending<T> = (NamedResults<T>, Reply<NamedResults<T>>);
/// True once the metadata shows the controller acted on the named topic.
type DoneWhen = Box<dyn Fn(&MetadataCache, &str) -> bool + Send + Sync>;

impl<T: Send + 'static> DelayedOperation for AwaitMetadata<T> {
    fn can_complete(&self) -> bool {
        let guard = self.results.lock().unwrap_or_else(|p| p.into_inner());
        let Some((results, _)) = guard.as_ref() else {
            return true;
        };
        results
            .iter()
            .all(|(name, r)| r.is_err() || (self.done)(&self.metadata, name))
    }

    fn complete(&self, _expired: bool) {
        let taken = self
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((results, reply)) = taken {
            let results = results
                .into_iter()
                .map(|(name, r)| {
                    let r = match r {
                        Ok(v) if (self.done)(&self.metadata, &name) => Ok(v),
                        Ok(_) => Err(AdminError::TimedOut),
                        Err(e) => Err(e),
                    };
                    (name, r)
                })
                .collect();
            reply(results);
        }
    }
}

impl Worker {
    fn run(self, rx: Receiver<Task>) {
        while let Ok(task) = rx.recv() {
            match task {
                Task::Create {
                    specs,
                    validate_only,
                    timeout_ms,
                    reply,
                } => {
                    let results: CreateResults = specs
                        .iter()
                        .map(|s| (s.name.clone(), self.create(s, validate_only)))
                        .collect();
                    let wait = !validate_only && timeout_ms > 0;
                    self.answer_when(results, reply, timeout_ms, wait, |m, name| {
                        m.topic(name).is_some_and(|t| {
                            !t.partitions.is_empty() && t.partitions.iter().all(|p| p.leader >= 0)
                        })
                    });
                }
                Task::Delete {
                    names,
                    timeout_ms,
                    reply,
                } => {
                    let results: DeleteResults =
                        names.iter().map(|n| (n.clone(), self.delete(n))).collect();
                    self.answer_when(results, reply, timeout_ms, timeout_ms > 0, |m, name| {
                        m.topic(name).is_none()
                    });
                }
                Task::Grow {
                    items,
                    validate_only,
                    timeout_ms,
                    reply,
                } => {
                    let mut counts = BTreeMap::new();
                    let results: PartitionResults = items
                        .iter()
                        .map(|i| {
                            counts.insert(i.name.clone(), i.count);
                            (i.name.clone(), self.grow(i, validate_only))
                        })
                        .collect();
                    let wait = !validate_only && timeout_ms > 0;
                    self.answer_when(results, reply, timeout_ms, wait, move |m, name| {
                        let want = counts.get(name).copied().unwrap_or(0) as usize;
                        m.topic(name).is_some_and(|t| {
                            t.partitions.len() >= want && t.partitions.iter().all(|p| p.leader >= 0)
                        })
                    });
                }
                Task::ReadConfigs { names, reply } => {
                    let mut out = TopicConfigs::new();
                    let mut failed = None;
                    for name in names {
                        if validate_topic_name(&name).is_err() {
                            // Not a path the store can hold: no such topic.
                            out.insert(name, None);
                            continue;
                        }
                        match cluster::read_topic(&*self.store, &name) {
                            Ok(found) => {
                                out.insert(name, found.map(|(_, c)| c.config));
                            }
                            Err(e) => failed = Some(AdminError::from(e)),
                        }
                    }
                    reply(failed.map_or(Ok(out), Err));
                }
                Task::Store(work) => work(Some(&*self.store)),
                Task::Stop => return,
            }
        }
    }

    fn answer_when<T: Send + 'static>(
        &self,
        results: Vec<(String, Result<T, AdminError>)>,
        reply: Reply<Vec<(String, Result<T, AdminError>)>>,
        timeout_ms: i32,
        wait: bool,
        done: impl Fn(&MetadataCache, &str) -> bool + Send + Sync + 'static,
    ) {
        if !wait {
            reply(results);
            return;
        }
        let op = AwaitMetadata {
            metadata: Arc::clone(&self.metadata),
            results: Mutex::new(Some((results, reply))),
            done: Box::new(done),
        };
        self.metadata.waiters.try_complete_else_watch(
            Box::new(op),
            &[CHANGED],
            Duration::from_millis(timeout_ms.max(1) as u64),
        );
    }

    fn live_brokers(&self) -> BTreeMap<i32, Option<String>> {
        self.metadata
            .brokers()
            .into_iter()
            .map(|b| (b.id, b.rack))
            .collect()
    }

    fn exists(&self, name: &str) -> Result<bool, AdminError> {
        Ok(self.metadata.topic(name).is_some()
            || self.store.exists(&layout::topic_path(name))?.is_some())
    }

    fn plan(&self, spec: &TopicSpec) -> Result<BTreeMap<i32, Vec<i32>>, AdminError> {
        validate_topic_name(&spec.name)?;
        topic_log_config(&self.metadata.defaults(), &spec.configs)
            .map_err(|e| AdminError::InvalidConfig(e.to_string()))?;
        let brokers = self.live_brokers();
        if !spec.assignments.is_empty() {
            if spec.num_partitions.is_some_and(|n| n != -1)
                || spec.replication_factor.is_some_and(|r| r != -1)
            {
                return Err(AdminError::InvalidReplicaAssignment("Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into()));
            }
            let n = spec.assignments.len() as i32;
            if n > PARTITIONS_PER_TOPIC_MAX {
                return Err(AdminError::InvalidPartitions(format!(
                    "Number of partitions {n} exceeds the limit {PARTITIONS_PER_TOPIC_MAX}"
                )));
            }
            for (i, (p, replicas)) in spec.assignments.iter().enumerate() {
                if *p != i as i32 {
                    return Err(AdminError::InvalidReplicaAssignment(
                        "Partitions should be a consecutive 0-based integer sequence".into(),
                    ));
                }
                check_replicas(replicas, &brokers)?;
            }
            return Ok(spec.assignments.clone());
        }
        let partitions = match spec.num_partitions {
            None | Some(-1) => self.config.num_partitions,
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
            None | Some(-1) => self.config.default_replication_factor,
            Some(r) => r,
        };
        if rf <= 0 {
            return Err(AdminError::InvalidReplicationFactor(
                "Replication factor must be larger than 0.".into(),
            ));
        }
        assign(&brokers, 0, partitions, rf as usize)
    }

    fn create(&self, spec: &TopicSpec, validate_only: bool) -> Result<CreatedTopic, AdminError> {
        // Before the name reaches the store as a path.
        validate_topic_name(&spec.name)?;
        if self.exists(&spec.name)? {
            return Err(AdminError::TopicExists(spec.name.clone()));
        }
        let assignment = self.plan(spec)?;
        let created = CreatedTopic {
            id: random_bytes::<16>(),
            partitions: assignment.len() as i32,
            replication_factor: assignment.values().next().map_or(0, |r| r.len() as i16),
        };
        if validate_only {
            return Ok(created);
        }
        let znode = layout::TopicAssignment {
            topic_id: created.id,
            partitions: assignment,
            adding_replicas: BTreeMap::new(),
            removing_replicas: BTreeMap::new(),
        };
        let config = layout::EntityConfig {
            config: spec.configs.clone(),
        };
        match cluster::create_topic(&*self.store, &spec.name, &znode, &config, &[]) {
            Ok(()) => {
                log::info!(
                    "created topic name={} partitions={} replication_factor={}",
                    spec.name,
                    created.partitions,
                    created.replication_factor
                );
                Ok(created)
            }
            Err(StoreError::NodeExists(_)) => Err(AdminError::TopicExists(spec.name.clone())),
            Err(e) => Err(e.into()),
        }
    }

    fn delete(&self, name: &str) -> Result<[u8; 16], AdminError> {
        if !self.config.delete_topic_enable {
            return Err(AdminError::DeletionDisabled);
        }
        if validate_topic_name(name).is_err() {
            return Err(AdminError::UnknownTopic);
        }
        let Some((assignment, _)) = cluster::read_topic(&*self.store, name)? else {
            return Err(AdminError::UnknownTopic);
        };
        cluster::mark_topic_for_deletion(&*self.store, name)?;
        log::info!("topic {name} marked for deletion");
        Ok(assignment.topic_id)
    }

    fn grow(&self, item: &PartitionGrowth, validate_only: bool) -> Result<(), AdminError> {
        if validate_topic_name(&item.name).is_err() {
            return Err(AdminError::UnknownTopic);
        }
        let Some((current, _)) = cluster::read_topic(&*self.store, &item.name)? else {
            return Err(AdminError::UnknownTopic);
        };
        let have = current.partitions.len() as i32;
        let count = item.count;
        if count <= have {
            return Err(AdminError::InvalidPartitions(if count == have {
                format!("Topic already has {have} partitions.")
            } else {
                format!("Topic currently has {have} partitions, which is higher than the requested {count}.")
            }));
        }
        if count > PARTITIONS_PER_TOPIC_MAX {
            return Err(AdminError::InvalidPartitions(format!(
                "Number of partitions {count} exceeds the limit {PARTITIONS_PER_TOPIC_MAX}"
            )));
        }
        let brokers = self.live_brokers();
        let rf = current.partitions.values().next().map_or(1, Vec::len);
        let added: BTreeMap<i32, Vec<i32>> = match &item.assignments {
            Some(a) => {
                if a.len() as i32 != count - have {
                    return Err(AdminError::InvalidReplicaAssignment(format!(
                        "Increasing the number of partitions by {} but {} assignments provided.",
                        count - have,
                        a.len()
                    )));
                }
                for r in a {
                    check_replicas(r, &brokers)?;
                }
                a.iter()
                    .enumerate()
                    .map(|(i, r)| (have + i as i32, r.clone()))
                    .collect()
            }
            None => assign(&brokers, have, count - have, rf)?,
        };
        if validate_only {
            return Ok(());
        }
        let mut full = current.clone();
        full.partitions.extend(added);
        cluster::add_partitions(&*self.store, &item.name, &full, &[])?;
        log::info!(
            "topic {} grows from {have} to {count} partitions",
            item.name
        );
        Ok(())
    }
}

fn check_replicas(
    replicas: &[i32],
    brokers: &BTreeMap<i32, Option<String>>,
) -> Result<(), AdminError> {
    if replicas.is_empty() || replicas.iter().any(|r| !brokers.contains_key(r)) {
        return Err(AdminError::InvalidReplicaAssignment(format!(
            "Unknown broker in replica assignment {replicas:?}"
        )));
    }
    let mut dedup = replicas.to_vec();
    dedup.sort_unstable();
    dedup.dedup();
    if dedup.len() != replicas.len() {
        return Err(AdminError::InvalidReplicaAssignment(
            "Duplicate replica assignment".into(),
        ));
    }
    Ok(())
}

fn assign(
    brokers: &BTreeMap<i32, Option<String>>,
    first: i32,
    count: i32,
    rf: usize,
) -> Result<BTreeMap<i32, Vec<i32>>, AdminError> {
    assign_replicas(brokers, first, count, rf, None).map_err(|e| match e {
        AssignmentError::ReplicationFactor { rf, brokers } => AdminError::InvalidReplicationFactor(
            format!("Replication factor: {rf} larger than available brokers: {brokers}."),
        ),
        AssignmentError::NoBrokers => AdminError::InvalidReplicationFactor(
            "Replication factor: larger than available brokers: 0.".into(),
        ),
        AssignmentError::PartialRacks => AdminError::InvalidReplicaAssignment(
            "Not all brokers have rack information for replica rack aware assignment.".into(),
        ),
    })
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
}

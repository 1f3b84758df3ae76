//! The leader's ISR changes, the ZooKeeper-era way (Kafka before AlterIsr): the leader
//! rewrites its partition's state znode with a version check — the version it last saw,
//! which the controller bumps whenever it changes the partition, so a leader that was
//! replaced (a zombie) cannot write — and then announces the change under
//! `/isr_change_notification/isr_change_<seq>` for the controller to propagate.
//!
//! Changes are queued by the replica manager (from follower fetches and the lag check) and
//! written on the `kb-isr` thread; the outcome goes back to the replica manager. Handler
//! threads never wait on the store.

use std::sync::Arc;
use std::sync::Mutex;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use kbroker_coordinator::layout::{self, PartitionState};
use kbroker_coordinator::{cluster, CreateMode, MetadataStore, StoreError};
use kbroker_storage::TopicPartition;

/// Changes queued at most (one per partition is in flight at a time).
const QUEUED_MAX: usize = 100_000;
/// Where the controller looks for ISR changes.
pub const ISR_CHANGE_PREFIX: &str = "/isr_change_notification/isr_change_";

/// A new ISR proposed by the leader of `tp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub tp: TopicPartition,
    pub leader: i32,
    pub leader_epoch: i32,
    pub controller_epoch: i32,
    pub isr: Vec<i32>,
    /// The state znode's version the leader knows (its partition epoch).
    pub zk_version: i32,
}

/// What became of a proposed change.
#[derive(Debug, Clone)]
pub enum IsrOutcome {
    /// Written; the znode's new version.
    Written(i32),
    /// The znode changed under the leader (the controller acted): what it holds now.
    Moved(Option<PartitionState>),
    /// The store failed; the leader proposes again later.
    Failed(String),
}

pub type OnOutcome = Box<dyn Fn(&IsrChange, IsrOutcome) + Send + Sync>;

pub struct IsrWriter {
    tx: Sender<Option<IsrChange>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl IsrWriter {
    pub fn start(store: Arc<dyn MetadataStore>, on_outcome: OnOutcome) -> IsrWriter {
        let (tx, rx) = crossbeam_channel::bounded(QUEUED_MAX);
        let thread = std::thread::Builder::new()
            .name("kb-isr".into())
            .spawn(move || run(&*store, rx, on_outcome))
            .expect("spawning the ISR writer thread");
        IsrWriter {
            tx,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Queues a change; false if the queue is full (the caller proposes again later).
    pub fn submit(&self, change: IsrChange) -> bool {
        self.tx.try_send(Some(change)).is_ok()
    }

    pub fn shutdown(&self) {
        let _ = self.tx.send(None);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn run(store: &dyn MetadataStore, rx: Receiver<Option<IsrChange>>, on_outcome: OnOutcome) {
    while let Ok(Some(first)) = rx.recv() {
        let mut batch = vec![first];
        let mut stop = false;
        for next in rx.try_iter().take(1_000) {
            match next {
                Some(c) => batch.push(c),
                None => {
                    stop = true;
                    break;
                }
            }
        }
        let mut written = Vec::new();
        for change in &batch {
            let outcome = write(store, change);
            if let IsrOutcome::Written(version) = &outcome {
                log::info!(
                    "partition {} ISR now {:?} (leader {} epoch {}, partition epoch {version})",
                    change.tp,
                    change.isr,
                    change.leader,
                    change.leader_epoch
                );
                written.push((change.tp.topic.clone(), change.tp.partition));
            }
            on_outcome(change, outcome);
        }
        if !written.is_empty() {
            let data = layout::encode_partition_list(&written);
            if let Err(e) = store.create(ISR_CHANGE_PREFIX, &data, CreateMode::PersistentSequential)
            {
                log::warn!(
                    "announcing ISR changes failed: {e}; the controller learns at its next read"
                );
            }
        }
        if stop {
            return;
        }
    }
}

fn write(store: &dyn MetadataStore, change: &IsrChange) -> IsrOutcome {
    let state = PartitionState {
        leader: change.leader,
        leader_epoch: change.leader_epoch,
        isr: change.isr.clone(),
        controller_epoch: change.controller_epoch,
        zk_version: change.zk_version,
    };
    match cluster::write_partition_state(store, &change.tp.topic, change.tp.partition, &state, None)
    {
        Ok(version) => IsrOutcome::Written(version),
        Err(StoreError::BadVersion { .. } | StoreError::NoNode(_)) => {
            match cluster::read_partition_state(store, &change.tp.topic, change.tp.partition) {
                Ok(now) => IsrOutcome::Moved(now),
                Err(e) => IsrOutcome::Failed(e.to_string()),
            }
        }
        Err(e) => IsrOutcome::Failed(e.to_string()),
    }
}

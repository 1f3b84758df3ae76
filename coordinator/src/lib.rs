//! kbroker's metadata store and the cluster coordination built on it.
//!
//! # Layout
//!
//! - `store`: the [`MetadataStore`] trait with ZooKeeper's semantics (persistent, ephemeral
//!   and sequential nodes, versioned compare-and-set, multi-ops, one-shot watches), its
//!   types and errors, path rules, and the `create_recursive` / `delete_recursive` /
//!   `get_opt` helpers.
//! - `local`: [`LocalStore`], the embedded backend of single-node mode: an in-process tree
//!   persisted to a journal in the data dir; ephemerals live as long as the session.
//!   - `tree`: its pure in-memory core (ZooKeeper's rules, undo for atomic multi-ops).
//!   - `journal`: its file format, replay with torn-tail truncation, and compaction.
//! - `layout`: Kafka 2.8's znode paths and JSON formats (`/brokers/ids/{id}`,
//!   `/brokers/topics/{t}`, partition state, configs, controller, consumer mirrors).
//! - `controller`: the controller's decisions as pure functions: leader elections, replica
//!   assignment (rack-aware), new partition states.
//! - `cluster`: broker-side operations over any store: cluster id, broker registration,
//!   controller election with epoch fencing, topic znodes, 0.8 consumer offsets.
//!
//! - `zookeeper`: [`ZkStore`], the backend of cluster mode: a real ZooKeeper ensemble through
//!   `zookeeper-client` behind a blocking facade.
//!
//! Both backends implement the same trait, so everything above `store` runs the same code in
//! single-node and cluster mode.

pub mod cluster;
pub mod controller;
pub mod group;
mod journal;
pub mod layout;
pub mod local;
pub mod offsets;
pub mod store;
#[cfg(test)]
mod testutil;
mod tree;
pub mod zookeeper;

/// Replays metadata-journal bytes the way opening the embedded store does; returns the
/// number of nodes. For the fuzz targets and their regression tests.
#[doc(hidden)]
pub fn replay_journal(bytes: &[u8]) -> Result<usize, StoreError> {
    journal::replay(bytes, std::path::Path::new("<bytes>")).map(|(tree, _)| tree.len())
}

pub use cluster::{
    add_partitions, allocate_producer_id_block, create_topic, current_controller,
    delete_topic_znodes, elect_controller, elect_controller_at, ensure_cluster_id,
    ensure_persistent_paths, mark_topic_for_deletion, read_brokers, read_cluster_id,
    read_consumer_offset, read_controller_epoch, read_partition_state, read_topic, read_topics,
    register_broker, resign_controller, topics_marked_for_deletion, write_consumer_offset,
    write_partition_state, ControllerEpoch,
};
pub use layout::{
    BrokerRegistration, ClusterId, ConsumerOffset, ConsumerOwner, ConsumerRegistration,
    ControllerZnode, Endpoint, EntityConfig, PartitionState, ProducerIdBlock, TopicAssignment,
};
pub use local::LocalStore;
pub use store::{
    create_recursive, delete_recursive, ensure_persistent_path, get_opt, CreateMode, MetadataStore,
    Op, OpResult, Stat, StoreError, WatchEvent,
};
pub use zookeeper::{ZkConfig, ZkStore};

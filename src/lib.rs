//! kbroker: a Kafka-protocol broker with Kafka's thread model, on-disk format and
//! ZooKeeper layout.
//!
//! # Layout
//! - [`config`]: `server.properties` keys, Kafka's defaults, validation naming the key.
//! - [`broker`]: the services wired together (store, metadata cache, replica manager,
//!   admin, groups, controller), start, shutdown and the periodic scheduler.
//! - [`metadata_cache`]: brokers and partitions as the controller published them.
//! - [`replica_manager`]: logs, partition roles (LeaderAndIsr, StopReplica), high
//!   watermarks, the fetch purgatory.
//! - [`admin`]: topic creation, deletion and growth written through the metadata store,
//!   answered when the controller has acted.
//! - [`controller`]: the controller (elected through `/controller`): partition state
//!   machine, leader elections, broker failure, topic creation/deletion, controlled shutdown.
//! - [`channel`]: controller-to-broker requests, one sender thread per broker.
//! - [`inter_broker`]: the Kafka-protocol client brokers use to talk to each other.
//! - [`replica_fetcher`]: follower fetcher threads copying leaders' logs.
//! - [`isr`]: the leader's ISR changes, written to the partition state znode.
//! - [`shutdown`]: a stopping broker's controlled shutdown.
//! - [`handler`]: one file per Kafka API (decode → act → encode) and the Fetch writer;
//!   the only place Kafka error codes are produced.
//! - [`groups`]: the group coordinator's shell: offsets in `__consumer_offsets`, the
//!   group timer, the `/consumers/...` mirror.
//! - [`fuzzing`]: the bodies of the fuzz targets (every parser of outside bytes), shared by
//!   `fuzz/` and the stable regression tests.
//! - [`metadata_tool`]: `kbroker metadata ls|get|dump`, reading the tree the broker dumps.
//! - [`producer_ids`]: producer id blocks for InitProducerId, claimed through the store.
//! - [`metrics`]: per-API request-stage histograms and the Prometheus endpoint
//!   (`metrics.port`).
//! - [`server`]: wiring: broker + socket server (the `reactor` crate) + shutdown.
//!
//! Member crates: `kbroker-reactor` (acceptor, processors, handler pool, sendfile),
//! `kbroker-storage` (segments, indexes, logs), `kbroker-coordinator` (metadata store and
//! Kafka's znodes), `kbroker-replication` (purgatory).

pub mod admin;
pub mod broker;
pub mod channel;
pub mod config;
pub mod controller;
pub mod dynamic_config;
pub mod fetch_session;
pub mod fuzzing;
pub mod groups;
pub mod handler;
pub mod inter_broker;
pub mod isr;
pub mod metadata_cache;
pub mod metadata_tool;
pub mod metrics;
pub mod offsets_log;
pub mod producer_ids;
pub mod replica_fetcher;
pub mod replica_manager;
pub mod replication_quota;
pub mod server;
pub mod shutdown;
pub mod topic_configs;

//! kbroker's storage: Kafka's on-disk log format, one directory per partition.
//!
//! # Layout
//! - [`batch`]: record batch v2 header views, CRC32C validation, offset patching.
//! - [`compression`]: bounded streaming decompression of gzip, snappy, lz4 and zstd records.
//! - [`validate`]: Kafka's produce-time validation of batches and every record in them.
//! - [`disk`]: block reservation ahead of mapped writes; out-of-space vs failed-device errors.
//! - [`failpoint`]: named crash points (`KBROKER_FAILPOINTS`) for crash-consistency tests.
//! - [`index`]: memory-mapped sparse `.index` / `.timeindex` files.
//! - [`segment`]: one `.log` file and its indexes; the active one is preallocated and mapped.
//! - [`log`]: a partition's segments: append, read (as file regions for `sendfile`),
//!   roll, retention, truncation, recovery, leader-epoch checkpoint.
//! - [`cleaner`]: log compaction for `cleanup.policy=compact`.
//! - [`producer_state`]: idempotent producers' epochs and sequences, Kafka's `.snapshot` format.
//! - [`checkpoint`]: the log-dir checkpoint files.
//! - [`manager`]: every log of the broker's log dirs, `meta.properties`, clean-shutdown
//!   marker, checkpoints, retention.
//!
//! This crate knows record batches and files, not sockets or Kafka APIs. Errors are values
//! ([`StorageError`]); the broker maps them to Kafka error codes.

pub mod batch;
pub mod checkpoint;
pub mod cleaner;
pub mod compression;
pub mod disk;
pub mod failpoint;
pub mod index;
pub mod log;
pub mod manager;
pub mod producer_state;
pub mod segment;
pub mod validate;
pub mod window;

use std::path::Path;

pub use crate::log::{
    AppendInfo, CleanJob, CleanOutcome, Cleanable, Log, LogConfig, LogRead, ReadPlan,
};
pub use manager::LogManager;
pub use segment::FileRegion;

/// A topic name and partition number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> Self {
        TopicPartition {
            topic: topic.to_string(),
            partition,
        }
    }
    /// The directory name `<topic>-<partition>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt {path}: {detail}")]
    Corrupt { path: String, detail: &'static str },
    #[error("{0}")]
    InvalidBatch(batch::BatchError),
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    RecordTooLarge { size: usize, max: usize },
    #[error("records of {size} bytes exceed segment.bytes {max}")]
    RecordListTooLarge { size: usize, max: usize },
    #[error("offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("{0} is offline")]
    Offline(String),
    #[error("{0}")]
    Producer(producer_state::ProducerStateError),
    #[error("{0}")]
    Inconsistent(String),
}

impl StorageError {
    pub fn io(context: String, source: std::io::Error) -> Self {
        StorageError::Io { context, source }
    }
    /// True if the device under the log dir failed (the dir goes offline).
    pub fn is_device_failure(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if disk::is_device_failure(source))
    }
    /// True if the disk is full (writes resume once space is freed).
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if disk::is_out_of_space(source))
    }
    pub fn corrupt(path: &Path, detail: &'static str) -> Self {
        StorageError::Corrupt {
            path: path.display().to_string(),
            detail,
        }
    }
}

//! The `MetadataStore` trait: a hierarchical key-value store with ZooKeeper's semantics.
//!
//! Everything the broker keeps in ZooKeeper (broker registrations, the controller, topics,
//! partition states, configs, consumer-group mirrors) goes through this trait, so the same
//! code runs against the embedded [`crate::LocalStore`] and a real ZooKeeper ensemble.
//!
//! Semantics, as ZooKeeper's:
//! - Paths are absolute, `/`-separated, with no trailing slash (except the root `/`), no
//!   empty, `.` or `..` components and no NUL. The root always exists.
//! - A node has data (at most [`DATA_BYTES_MAX`] bytes) and children. Persistent nodes live
//!   until deleted; ephemeral nodes live as long as the session that created them and cannot
//!   have children. Sequential modes append the parent's `cversion` as a 10-digit,
//!   zero-padded suffix (`%010d`) to the requested path.
//! - `version` counts data changes, `cversion` child additions and removals. A `version` of
//!   `None` or `Some(-1)` matches any version, as ZooKeeper's `-1` does.
//! - `multi` applies all of its operations or none of them, as one transaction.
//! - Watches are one-shot: a registered sender receives one event and is then forgotten.
//!   Registering the same channel twice for the same path and kind delivers one event.
//!
//! Format: this module has no wire or disk format of its own; see `local.rs` for the journal.
//! Thread safety: implementations are `Send + Sync` and may be called from any thread.
//! Crash behaviour: defined by each backend (see `local.rs`).

use crossbeam_channel::Sender;

/// Largest data of one node, ZooKeeper's default `jute.maxbuffer` (1 MiB - 1).
pub const DATA_BYTES_MAX: usize = 0xf_ffff;
/// Longest accepted path in bytes.
pub const PATH_BYTES_MAX: usize = 64 * 1024;
/// Most levels `delete_recursive` descends before giving up (the tree is never this deep).
pub const TREE_DEPTH_MAX: usize = 256;
/// Attempts of `delete_recursive` and `create_recursive` against concurrent writers.
pub const RECURSIVE_ATTEMPTS_MAX: usize = 16;

/// How a node is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreateMode {
    Persistent,
    Ephemeral,
    PersistentSequential,
    EphemeralSequential,
}

impl CreateMode {
    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        )
    }

    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential | CreateMode::EphemeralSequential
        )
    }
}

/// A node's metadata, ZooKeeper's `Stat` without `pzxid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    /// Number of data changes since creation.
    pub version: i32,
    /// Number of child additions and removals since creation.
    pub cversion: i32,
    /// Session id of the owner of an ephemeral node, 0 for a persistent node.
    pub ephemeral_owner: i64,
    /// Transaction id of the creation.
    pub czxid: i64,
    /// Transaction id of the last data change.
    pub mzxid: i64,
    pub ctime_ms: i64,
    pub mtime_ms: i64,
    pub num_children: i32,
    pub data_length: i32,
}

/// One operation of a [`MetadataStore::multi`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create {
        path: String,
        data: Vec<u8>,
        mode: CreateMode,
    },
    SetData {
        path: String,
        data: Vec<u8>,
        version: Option<i32>,
    },
    Delete {
        path: String,
        version: Option<i32>,
    },
    /// Fails the whole multi unless `path` exists with exactly `version`.
    Check {
        path: String,
        version: i32,
    },
}

impl Op {
    pub fn path(&self) -> &str {
        match self {
            Op::Create { path, .. }
            | Op::SetData { path, .. }
            | Op::Delete { path, .. }
            | Op::Check { path, .. } => path,
        }
    }
}

/// One znode read by [`MetadataStore::get_many`]: its data and stat, None if missing.
pub type ReadResult = Result<Option<(Vec<u8>, Stat)>, StoreError>;

/// The result of one operation of a successful [`MetadataStore::multi`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The actual path created (with the sequence suffix for sequential modes).
    Created(String),
    SetData(Stat),
    Deleted,
    Checked,
}

/// What a watch reports. Node events carry the watched path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WatchEvent {
    NodeCreated(String),
    NodeDeleted(String),
    NodeDataChanged(String),
    NodeChildrenChanged(String),
    SessionExpired,
    Connected,
    Disconnected,
}

/// The coordinator crate's error. Every message names the path or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("znode {0} does not exist")]
    NoNode(String),
    #[error("znode {0} already exists")]
    NodeExists(String),
    #[error("znode {path} has version {actual}, expected {expected}")]
    BadVersion {
        path: String,
        expected: i32,
        actual: i32,
    },
    #[error("znode {0} has children")]
    NotEmpty(String),
    /// Carries the path whose creation was refused, as ZooKeeper does.
    #[error("cannot create znode {0}: its parent is ephemeral and cannot have children")]
    NoChildrenForEphemerals(String),
    #[error(
        "invalid znode path {0:?}: must be absolute, without trailing slash, empty, '.' or '..' \
         components or NUL"
    )]
    InvalidPath(String),
    #[error("metadata store session expired")]
    SessionExpired,
    #[error("metadata store connection lost: {0}")]
    ConnectionLoss(String),
    #[error("{what} is {value}, more than the limit of {max}")]
    LimitExceeded {
        what: String,
        value: usize,
        max: usize,
    },
    #[error("broker id {broker_id} already registered (/brokers/ids/{broker_id} is held by another session)")]
    BrokerAlreadyRegistered { broker_id: i32 },
    #[error("I/O error {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt {context}: {detail}")]
    Corrupt { context: String, detail: String },
}

impl StoreError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn corrupt(context: impl Into<String>, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            context: context.into(),
            detail: detail.into(),
        }
    }

    /// Adds the znode path to the context of a `Corrupt` error (from parsing its data).
    pub fn at_path(self, path: &str) -> StoreError {
        match self {
            StoreError::Corrupt { context, detail } => StoreError::Corrupt {
                context: format!("{context} in znode {path}"),
                detail,
            },
            other => other,
        }
    }
}

/// A store with ZooKeeper's data model and guarantees; see the module doc.
pub trait MetadataStore: Send + Sync {
    /// Creates a node and returns its actual path (sequential modes add `%010d`).
    /// `NoNode(parent)` if the parent is missing, `NodeExists(path)` if the node exists,
    /// `NoChildrenForEphemerals(path)` if the parent is ephemeral.
    fn create(&self, path: &str, data: &[u8], mode: CreateMode) -> Result<String, StoreError>;
    /// A node's data and stat; `NoNode` if absent.
    fn get(&self, path: &str) -> Result<(Vec<u8>, Stat), StoreError>;
    /// Replaces a node's data if its version matches; returns the new stat.
    fn set(&self, path: &str, data: &[u8], version: Option<i32>) -> Result<Stat, StoreError>;
    /// Deletes a node if its version matches; `NotEmpty` if it has children.
    fn delete(&self, path: &str, version: Option<i32>) -> Result<(), StoreError>;
    fn exists(&self, path: &str) -> Result<Option<Stat>, StoreError>;
    /// Sorted child names (not paths); `NoNode` if absent.
    fn children(&self, path: &str) -> Result<Vec<String>, StoreError>;
    /// Applies every op or none; the error is the first failing op's.
    fn multi(&self, ops: &[Op]) -> Result<Vec<OpResult>, StoreError>;
    /// Returns the node's stat (or `None`) and registers a one-shot watch that fires on the
    /// node's creation, data change or deletion.
    fn watch_data(&self, path: &str, tx: Sender<WatchEvent>) -> Result<Option<Stat>, StoreError>;
    /// Returns the sorted child names and registers a one-shot watch that fires when a child
    /// is added or removed (`NodeChildrenChanged`) or the node is deleted (`NodeDeleted`).
    /// `NoNode` (and no watch) if the node is absent.
    fn watch_children(&self, path: &str, tx: Sender<WatchEvent>)
        -> Result<Vec<String>, StoreError>;
    /// The session that owns this handle's ephemeral nodes.
    fn session_id(&self) -> i64;
    /// Registers `tx` for the session's `Disconnected`, `Connected` and `SessionExpired`
    /// events. The embedded store's session never changes: nothing is sent.
    fn subscribe_session(&self, _tx: Sender<WatchEvent>) {}
    /// Opens a new session after `SessionExpired` (its ephemerals must be made again).
    fn renew_session(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Ends the session at shutdown (its ephemerals go at once).
    fn close(&self) {}
    /// Reads many znodes (None for a missing one), in order. ZooKeeper pipelines them:
    /// a controller taking over reads every partition state in a few round trips.
    fn get_many(&self, paths: &[String]) -> Vec<ReadResult> {
        paths.iter().map(|p| get_opt(self, p)).collect()
    }
}

/// Checks a path against ZooKeeper's rules. A sequential create may end with `/` or any
/// prefix, since the suffix is appended, so it is checked as `path + "0"`.
pub fn validate_path(path: &str, sequential: bool) -> Result<(), StoreError> {
    let invalid = || StoreError::InvalidPath(path.to_string());
    if path.len() > PATH_BYTES_MAX {
        return Err(StoreError::LimitExceeded {
            what: "znode path length in bytes".to_string(),
            value: path.len(),
            max: PATH_BYTES_MAX,
        });
    }
    if !path.starts_with('/') || path.contains('\0') {
        return Err(invalid());
    }
    if path == "/" && !sequential {
        return Ok(());
    }
    let checked = if sequential {
        format!("{path}0")
    } else {
        path.to_string()
    };
    for component in checked[1..].split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return Err(invalid());
        }
    }
    Ok(())
}

/// The parent of a valid path; `None` for the root.
pub fn parent_path(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// The last component of a valid path (empty for the root).
pub fn node_name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// `parent/name`, handling the root.
pub fn join_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// `get` with absence as `None`.
pub fn get_opt<S: MetadataStore + ?Sized>(
    store: &S,
    path: &str,
) -> Result<Option<(Vec<u8>, Stat)>, StoreError> {
    match store.get(path) {
        Ok(found) => Ok(Some(found)),
        Err(StoreError::NoNode(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates `path`, first creating any missing ancestors as persistent nodes with empty data
/// (Kafka's `createRecursive`). `NodeExists` if `path` itself exists.
pub fn create_recursive<S: MetadataStore + ?Sized>(
    store: &S,
    path: &str,
    data: &[u8],
    mode: CreateMode,
) -> Result<String, StoreError> {
    validate_path(path, mode.is_sequential())?;
    for _ in 0..RECURSIVE_ATTEMPTS_MAX {
        match store.create(path, data, mode) {
            Err(StoreError::NoNode(_)) => {}
            other => return other,
        }
        if let Some(parent) = parent_path(path) {
            ensure_persistent_path(store, parent)?;
        }
    }
    Err(StoreError::ConnectionLoss(format!(
        "creating {path}: parents kept disappearing after {RECURSIVE_ATTEMPTS_MAX} attempts"
    )))
}

/// Makes sure `path` and its ancestors exist, creating missing ones as persistent nodes
/// with empty data; existing nodes are left alone (Kafka's `makeSurePersistentPathExists`).
pub fn ensure_persistent_path<S: MetadataStore + ?Sized>(
    store: &S,
    path: &str,
) -> Result<(), StoreError> {
    validate_path(path, false)?;
    if store.exists(path)?.is_some() {
        return Ok(());
    }
    let mut prefix = String::new();
    for component in path[1..].split('/') {
        prefix.push('/');
        prefix.push_str(component);
        match store.create(&prefix, &[], CreateMode::Persistent) {
            Ok(_) | Err(StoreError::NodeExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes `path` and everything under it. An absent node is not an error; children
/// created concurrently are retried a bounded number of times.
pub fn delete_recursive<S: MetadataStore + ?Sized>(
    store: &S,
    path: &str,
) -> Result<(), StoreError> {
    validate_path(path, false)?;
    if path == "/" {
        return Err(StoreError::InvalidPath(path.to_string()));
    }
    delete_subtree(store, path, 0)
}

fn delete_subtree<S: MetadataStore + ?Sized>(
    store: &S,
    path: &str,
    depth: usize,
) -> Result<(), StoreError> {
    if depth > TREE_DEPTH_MAX {
        return Err(StoreError::LimitExceeded {
            what: format!("depth of the tree under {path}"),
            value: depth,
            max: TREE_DEPTH_MAX,
        });
    }
    for _ in 0..RECURSIVE_ATTEMPTS_MAX {
        let children = match store.children(path) {
            Ok(children) => children,
            Err(StoreError::NoNode(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        for child in children {
            delete_subtree(store, &join_path(path, &child), depth + 1)?;
        }
        match store.delete(path, None) {
            Ok(()) | Err(StoreError::NoNode(_)) => return Ok(()),
            Err(StoreError::NotEmpty(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::ConnectionLoss(format!(
        "deleting {path}: children kept appearing after {RECURSIVE_ATTEMPTS_MAX} attempts"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rules() {
        for ok in ["/", "/a", "/a/b", "/a.b/c-d", "/brokers/ids/0"] {
            assert!(validate_path(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "/a/", "//a", "/a//b", "/.", "/a/..", "/a/./b", "/a\0b",
        ] {
            assert!(
                matches!(validate_path(bad, false), Err(StoreError::InvalidPath(_))),
                "{bad:?}"
            );
        }
        assert!(validate_path("/a/", true).is_ok());
        assert!(validate_path("/a/seq-", true).is_ok());
        assert!(validate_path("/", true).is_ok());
        assert!(validate_path("/a//", true).is_err());
        let long = format!("/{}", "x".repeat(PATH_BYTES_MAX));
        assert!(matches!(
            validate_path(&long, false),
            Err(StoreError::LimitExceeded { .. })
        ));
    }

    #[test]
    fn parents_and_names() {
        assert_eq!(parent_path("/"), None);
        assert_eq!(parent_path("/a"), Some("/"));
        assert_eq!(parent_path("/a/b/c"), Some("/a/b"));
        assert_eq!(node_name("/a/b/c"), "c");
        assert_eq!(node_name("/a"), "a");
        assert_eq!(join_path("/", "a"), "/a");
        assert_eq!(join_path("/a", "b"), "/a/b");
    }

    #[test]
    fn error_messages_name_the_path() {
        let e = StoreError::BadVersion {
            path: "/controller_epoch".into(),
            expected: 3,
            actual: 4,
        };
        assert_eq!(
            e.to_string(),
            "znode /controller_epoch has version 4, expected 3"
        );
        let e = StoreError::corrupt("partition state json", "missing field \"isr\"")
            .at_path("/brokers/topics/t/partitions/0/state");
        assert_eq!(
            e.to_string(),
            "corrupt partition state json in znode /brokers/topics/t/partitions/0/state: \
             missing field \"isr\""
        );
        assert_eq!(
            StoreError::BrokerAlreadyRegistered { broker_id: 3 }.to_string(),
            "broker id 3 already registered (/brokers/ids/3 is held by another session)"
        );
    }
}

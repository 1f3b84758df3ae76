//! The in-memory znode tree with ZooKeeper's rules: the pure core of [`crate::LocalStore`].
//!
//! A `BTreeMap` from full path to node, each node holding its sorted child names. Writes run
//! inside a [`Txn`]: each applied operation records an undo step (so a failing `multi` is
//! rolled back whole) and a [`Change`] (what the journal persists and what fires watches).
//! One transaction is one zxid, as in ZooKeeper, and it is consumed only if something
//! changed.
//!
//! Format: none; the journal (`journal.rs`) serialises [`Change`]s and node images.
//! Thread safety: none; the owner keeps the tree behind a mutex.
//! Crash behaviour: memory only; rebuilt from the journal on open.

use std::collections::{BTreeMap, BTreeSet};

use crate::store::{
    node_name, parent_path, validate_path, CreateMode, Op, OpResult, Stat, StoreError,
    DATA_BYTES_MAX,
};

/// Most nodes the tree holds; a create beyond it fails with `LimitExceeded`.
pub const NODES_MAX: usize = 10_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub data: Vec<u8>,
    pub version: i32,
    pub cversion: i32,
    pub ephemeral_owner: i64,
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime_ms: i64,
    pub mtime_ms: i64,
    pub children: BTreeSet<String>,
}

impl Node {
    fn new(data: Vec<u8>, ephemeral_owner: i64, zxid: i64, time_ms: i64) -> Node {
        Node {
            data,
            version: 0,
            cversion: 0,
            ephemeral_owner,
            czxid: zxid,
            mzxid: zxid,
            ctime_ms: time_ms,
            mtime_ms: time_ms,
            children: BTreeSet::new(),
        }
    }

    pub fn stat(&self) -> Stat {
        Stat {
            version: self.version,
            cversion: self.cversion,
            ephemeral_owner: self.ephemeral_owner,
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime_ms: self.ctime_ms,
            mtime_ms: self.mtime_ms,
            num_children: i32::try_from(self.children.len()).unwrap_or(i32::MAX),
            data_length: i32::try_from(self.data.len()).unwrap_or(i32::MAX),
        }
    }

    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral_owner != 0
    }
}

/// One applied mutation, with what the journal needs to redo it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Created {
        path: String,
        data: Vec<u8>,
        ephemeral: bool,
        /// The parent's cversion after the create (ephemeral creates are not journaled,
        /// so replay restores it from here rather than by counting).
        parent_cversion: i32,
    },
    Set {
        path: String,
        data: Vec<u8>,
        ephemeral: bool,
        /// The node's version after the set.
        version: i32,
    },
    Deleted {
        path: String,
        ephemeral: bool,
        parent_cversion: i32,
    },
}

impl Change {
    pub fn is_ephemeral(&self) -> bool {
        match self {
            Change::Created { ephemeral, .. }
            | Change::Set { ephemeral, .. }
            | Change::Deleted { ephemeral, .. } => *ephemeral,
        }
    }
}

#[derive(Debug)]
enum Undo {
    Created(String),
    Set {
        path: String,
        data: Vec<u8>,
        version: i32,
        mzxid: i64,
        mtime_ms: i64,
    },
    Deleted {
        path: String,
        node: Node,
    },
}

/// An open write transaction; finish it with [`Tree::commit`] or [`Tree::rollback`].
#[derive(Debug)]
#[must_use]
pub(crate) struct Txn {
    pub zxid: i64,
    pub time_ms: i64,
    session_id: i64,
    undo: Vec<Undo>,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tree {
    nodes: BTreeMap<String, Node>,
    last_zxid: i64,
}

impl Tree {
    pub fn new() -> Tree {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_string(), Node::new(Vec::new(), 0, 0, 0));
        Tree {
            nodes,
            last_zxid: 0,
        }
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    pub fn set_last_zxid(&mut self, zxid: i64) {
        self.last_zxid = self.last_zxid.max(zxid);
    }

    pub fn nodes(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Paths of the ephemeral nodes owned by `session_id`.
    pub fn ephemerals_of(&self, session_id: i64) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.ephemeral_owner == session_id)
            .map(|(path, _)| path.clone())
            .collect()
    }

    pub fn begin(&self, session_id: i64, time_ms: i64) -> Txn {
        Txn {
            zxid: self.last_zxid + 1,
            time_ms,
            session_id,
            undo: Vec::new(),
            changes: Vec::new(),
        }
    }

    pub fn commit(&mut self, txn: Txn) -> Vec<Change> {
        if !txn.changes.is_empty() {
            assert!(txn.zxid > self.last_zxid, "zxid must grow");
            self.last_zxid = txn.zxid;
        }
        txn.changes
    }

    pub fn rollback(&mut self, txn: Txn) {
        for undo in txn.undo.into_iter().rev() {
            match undo {
                Undo::Created(path) => {
                    let removed = self.nodes.remove(&path);
                    assert!(removed.is_some(), "undo of create of {path}: node missing");
                    let parent = self.parent_mut(&path);
                    assert!(parent.children.remove(node_name(&path)));
                    parent.cversion = parent.cversion.wrapping_sub(1);
                }
                Undo::Set {
                    path,
                    data,
                    version,
                    mzxid,
                    mtime_ms,
                } => {
                    let node = self
                        .nodes
                        .get_mut(&path)
                        .expect("undo of set: node missing");
                    node.data = data;
                    node.version = version;
                    node.mzxid = mzxid;
                    node.mtime_ms = mtime_ms;
                }
                Undo::Deleted { path, node } => {
                    let parent = self.parent_mut(&path);
                    assert!(parent.children.insert(node_name(&path).to_string()));
                    parent.cversion = parent.cversion.wrapping_sub(1);
                    assert!(self.nodes.insert(path, node).is_none());
                }
            }
        }
    }

    fn parent_mut(&mut self, path: &str) -> &mut Node {
        let parent = parent_path(path).expect("the root has no parent");
        self.nodes
            .get_mut(parent)
            .expect("a node's parent always exists")
    }

    fn node(&self, path: &str) -> Result<&Node, StoreError> {
        validate_path(path, false)?;
        self.nodes
            .get(path)
            .ok_or_else(|| StoreError::NoNode(path.to_string()))
    }

    /// Applies one op inside `txn`. On error nothing of this op was applied; the caller
    /// rolls back the earlier ops of the transaction.
    pub fn apply(&mut self, txn: &mut Txn, op: &Op) -> Result<OpResult, StoreError> {
        match op {
            Op::Create { path, data, mode } => {
                self.create(txn, path, data, *mode).map(OpResult::Created)
            }
            Op::SetData {
                path,
                data,
                version,
            } => self.set(txn, path, data, *version).map(OpResult::SetData),
            Op::Delete { path, version } => {
                self.delete(txn, path, *version).map(|()| OpResult::Deleted)
            }
            Op::Check { path, version } => {
                let node = self.node(path)?;
                check_version(path, Some(*version), node.version)?;
                Ok(OpResult::Checked)
            }
        }
    }

    fn create(
        &mut self,
        txn: &mut Txn,
        path: &str,
        data: &[u8],
        mode: CreateMode,
    ) -> Result<String, StoreError> {
        let sequential = mode.is_sequential();
        validate_path(path, sequential)?;
        check_data_len(path, data)?;
        if path == "/" && !sequential {
            return Err(StoreError::NodeExists(path.to_string()));
        }
        let full_for_parent = if sequential {
            format!("{path}0")
        } else {
            path.to_string()
        };
        let parent_path = parent_path(&full_for_parent).expect("checked: not the root");
        let parent = self
            .nodes
            .get(parent_path)
            .ok_or_else(|| StoreError::NoNode(parent_path.to_string()))?;
        let actual = if sequential {
            format!("{path}{:010}", parent.cversion)
        } else {
            path.to_string()
        };
        if self.nodes.contains_key(&actual) {
            return Err(StoreError::NodeExists(actual));
        }
        if parent.is_ephemeral() {
            return Err(StoreError::NoChildrenForEphemerals(actual));
        }
        if self.nodes.len() >= NODES_MAX {
            return Err(StoreError::LimitExceeded {
                what: format!("number of znodes when creating {actual}"),
                value: self.nodes.len() + 1,
                max: NODES_MAX,
            });
        }
        let ephemeral_owner = if mode.is_ephemeral() {
            assert!(txn.session_id != 0, "ephemeral create needs a session");
            txn.session_id
        } else {
            0
        };
        let parent = self.parent_mut(&actual);
        parent.children.insert(node_name(&actual).to_string());
        parent.cversion = parent.cversion.wrapping_add(1);
        let parent_cversion = parent.cversion;
        let node = Node::new(data.to_vec(), ephemeral_owner, txn.zxid, txn.time_ms);
        self.nodes.insert(actual.clone(), node);
        txn.undo.push(Undo::Created(actual.clone()));
        txn.changes.push(Change::Created {
            path: actual.clone(),
            data: data.to_vec(),
            ephemeral: ephemeral_owner != 0,
            parent_cversion,
        });
        Ok(actual)
    }

    fn set(
        &mut self,
        txn: &mut Txn,
        path: &str,
        data: &[u8],
        version: Option<i32>,
    ) -> Result<Stat, StoreError> {
        self.node(path)?;
        check_data_len(path, data)?;
        let node = self.nodes.get_mut(path).expect("checked above");
        check_version(path, version, node.version)?;
        txn.undo.push(Undo::Set {
            path: path.to_string(),
            data: std::mem::replace(&mut node.data, data.to_vec()),
            version: node.version,
            mzxid: node.mzxid,
            mtime_ms: node.mtime_ms,
        });
        node.version = node.version.wrapping_add(1);
        node.mzxid = txn.zxid;
        node.mtime_ms = txn.time_ms;
        txn.changes.push(Change::Set {
            path: path.to_string(),
            data: data.to_vec(),
            ephemeral: node.is_ephemeral(),
            version: node.version,
        });
        Ok(node.stat())
    }

    fn delete(
        &mut self,
        txn: &mut Txn,
        path: &str,
        version: Option<i32>,
    ) -> Result<(), StoreError> {
        if path == "/" {
            return Err(StoreError::InvalidPath(path.to_string()));
        }
        let node = self.node(path)?;
        check_version(path, version, node.version)?;
        if !node.children.is_empty() {
            return Err(StoreError::NotEmpty(path.to_string()));
        }
        let node = self.nodes.remove(path).expect("checked above");
        let ephemeral = node.is_ephemeral();
        let parent = self.parent_mut(path);
        assert!(parent.children.remove(node_name(path)));
        parent.cversion = parent.cversion.wrapping_add(1);
        let parent_cversion = parent.cversion;
        txn.undo.push(Undo::Deleted {
            path: path.to_string(),
            node,
        });
        txn.changes.push(Change::Deleted {
            path: path.to_string(),
            ephemeral,
            parent_cversion,
        });
        Ok(())
    }

    /// Redoes one journaled transaction. Any disagreement with the recorded outcome means
    /// the journal does not describe this tree; the error says which change.
    pub fn replay(&mut self, zxid: i64, time_ms: i64, changes: &[Change]) -> Result<(), String> {
        if zxid <= self.last_zxid {
            return Err(format!("zxid {zxid} does not follow {}", self.last_zxid));
        }
        let mut txn = Txn {
            zxid,
            time_ms,
            session_id: 0,
            undo: Vec::new(),
            changes: Vec::new(),
        };
        for change in changes {
            if let Err(e) = self.replay_one(&mut txn, change) {
                self.rollback(txn);
                return Err(format!("replaying {change:?}: {e}"));
            }
        }
        self.last_zxid = zxid;
        Ok(())
    }

    fn replay_one(&mut self, txn: &mut Txn, change: &Change) -> Result<(), String> {
        if change.is_ephemeral() {
            return Err("ephemeral changes are never journaled".to_string());
        }
        match change {
            Change::Created {
                path,
                data,
                parent_cversion,
                ..
            } => {
                self.create(txn, path, data, CreateMode::Persistent)
                    .map_err(|e| e.to_string())?;
                self.parent_mut(path).cversion = *parent_cversion;
            }
            Change::Set {
                path,
                data,
                version,
                ..
            } => {
                let stat = self
                    .set(txn, path, data, Some(version.wrapping_sub(1)))
                    .map_err(|e| e.to_string())?;
                if stat.version != *version {
                    return Err(format!("version became {}", stat.version));
                }
            }
            Change::Deleted {
                path,
                parent_cversion,
                ..
            } => {
                self.delete(txn, path, None).map_err(|e| e.to_string())?;
                self.parent_mut(path).cversion = *parent_cversion;
            }
        }
        Ok(())
    }

    /// Restores one persistent node from a snapshot image. Parents come before children.
    pub fn restore(&mut self, path: &str, node: Node) -> Result<(), String> {
        validate_path(path, false).map_err(|e| e.to_string())?;
        if node.is_ephemeral() || !node.children.is_empty() {
            return Err(format!("image of {path} is ephemeral or has children"));
        }
        if path == "/" {
            if self.nodes.len() != 1 {
                return Err("image of / after other nodes".to_string());
            }
            self.nodes.insert("/".to_string(), node);
            return Ok(());
        }
        if self.nodes.contains_key(path) {
            return Err(format!("image of {path} repeats a node"));
        }
        let parent = parent_path(path).expect("not the root");
        let parent = self
            .nodes
            .get_mut(parent)
            .ok_or_else(|| format!("image of {path} comes before its parent"))?;
        if parent.is_ephemeral() {
            return Err(format!("image of {path} has an ephemeral parent"));
        }
        parent.children.insert(node_name(path).to_string());
        self.last_zxid = self.last_zxid.max(node.mzxid).max(node.czxid);
        self.nodes.insert(path.to_string(), node);
        Ok(())
    }

    /// The tree without ephemeral nodes: what survives a restart.
    #[cfg(test)]
    pub fn persistent_view(&self) -> BTreeMap<String, (Vec<u8>, Stat)> {
        self.nodes
            .iter()
            .filter(|(_, node)| !node.is_ephemeral())
            .map(|(path, node)| {
                let mut stat = node.stat();
                stat.num_children = node
                    .children
                    .iter()
                    .filter(|c| !self.nodes[&crate::store::join_path(path, c)].is_ephemeral())
                    .count() as i32;
                (path.clone(), (node.data.clone(), stat))
            })
            .collect()
    }
}

fn check_version(path: &str, expected: Option<i32>, actual: i32) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != -1 && expected != actual => Err(StoreError::BadVersion {
            path: path.to_string(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

fn check_data_len(path: &str, data: &[u8]) -> Result<(), StoreError> {
    if data.len() > DATA_BYTES_MAX {
        return Err(StoreError::LimitExceeded {
            what: format!("data length in bytes of znode {path}"),
            value: data.len(),
            max: DATA_BYTES_MAX,
        });
    }
    Ok(())
}

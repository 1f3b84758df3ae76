//! `LocalStore`: the embedded [`MetadataStore`] of single-node mode.
//!
//! An in-process znode tree (`tree.rs`) with ZooKeeper's rules, its persistent nodes kept in
//! a journal in the data dir (`journal.rs` documents the format). Every write that touches a
//! persistent node is appended and `fdatasync`-ed before the call returns; ephemeral nodes
//! are never written and live as long as their session. One `LocalStore` handle is one
//! session; [`LocalStore::new_session`] opens another on the same tree (so tests can run
//! several brokers over one store), and a session ends by [`LocalStore::close_session`] or
//! by dropping its handle, which deletes its ephemerals and fires their watches, as a
//! ZooKeeper session close does.
//!
//! Thread safety: all state is behind one mutex; every call takes it once. Watch events are
//! sent after the mutex is released, so a receiver may call back into the store, and a full
//! bounded channel cannot stall other callers. Events of one write are sent in order, but
//! events of two concurrent writes may interleave: a watch says "look again", it does not
//! carry the new state.
//!
//! Crash behaviour: on open the journal is replayed, a torn tail (incomplete record or bad
//! checksum) is dropped with a warning, and the journal is rewritten as a compact snapshot.
//! A write whose journal append fails is rolled back in memory and returns `Io`; if the
//! file's state is then in doubt (failed fsync) every later write fails until a restart.
//! Since ephemeral changes are not journaled, a parent's `cversion` after a restart is the
//! one recorded with its last persistent child change: ephemeral-sequential names may be
//! reused across restarts (their nodes are gone by then), persistent-sequential ones never.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;

use crate::journal::{self, Journal};
use crate::store::{
    parent_path, validate_path, CreateMode, MetadataStore, Op, OpResult, Stat, StoreError,
    WatchEvent,
};
use crate::tree::{Change, Tree};

/// Most distinct channels watching one path for one kind of event.
pub const WATCHERS_PER_PATH_MAX: usize = 4096;

/// Wall-clock milliseconds used for `ctime_ms`/`mtime_ms`; injectable for tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock in milliseconds since the Unix epoch.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

/// One session's handle on a shared embedded tree. See the module doc.
pub struct LocalStore {
    shared: Arc<Shared>,
    session_id: i64,
}

struct Shared {
    state: Mutex<State>,
    clock: Clock,
}

struct State {
    tree: Tree,
    journal: Option<Journal>,
    data_watches: HashMap<String, Vec<Watcher>>,
    child_watches: HashMap<String, Vec<Watcher>>,
    live_sessions: BTreeSet<i64>,
    next_session_id: i64,
}

struct Watcher {
    session_id: i64,
    tx: Sender<WatchEvent>,
}

type Delivery = Vec<(Sender<WatchEvent>, WatchEvent)>;

impl LocalStore {
    /// Opens (or creates) the store persisted in `dir`, replaying and compacting its journal.
    pub fn open(dir: &Path) -> Result<LocalStore, StoreError> {
        LocalStore::open_with_clock(dir, system_clock())
    }

    pub fn open_with_clock(dir: &Path, clock: Clock) -> Result<LocalStore, StoreError> {
        let (journal, tree) = Journal::open(dir)?;
        Ok(LocalStore::start(tree, Some(journal), clock))
    }

    /// A store that keeps nothing on disk, for tests.
    pub fn in_memory() -> LocalStore {
        LocalStore::in_memory_with_clock(system_clock())
    }

    pub fn in_memory_with_clock(clock: Clock) -> LocalStore {
        LocalStore::start(Tree::new(), None, clock)
    }

    fn start(tree: Tree, journal: Option<Journal>, clock: Clock) -> LocalStore {
        // ZooKeeper-like session ids: time-based so they differ across restarts, never 0.
        let first_session_id = clock().max(0).saturating_mul(4096).saturating_add(1);
        let state = State {
            tree,
            journal,
            data_watches: HashMap::new(),
            child_watches: HashMap::new(),
            live_sessions: BTreeSet::from([first_session_id]),
            next_session_id: first_session_id + 1,
        };
        LocalStore {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                clock,
            }),
            session_id: first_session_id,
        }
    }

    /// Another session on the same tree, with its own ephemerals and watches.
    pub fn new_session(&self) -> LocalStore {
        let mut state = self.lock();
        let session_id = state.next_session_id;
        state.next_session_id += 1;
        state.live_sessions.insert(session_id);
        LocalStore {
            shared: Arc::clone(&self.shared),
            session_id,
        }
    }

    /// Ends this session: deletes its ephemeral nodes (firing their watches), sends
    /// `SessionExpired` to its own outstanding watches, and makes every later call on this
    /// handle fail with `SessionExpired`. Closing twice is a no-op.
    pub fn close_session(&self) {
        let mut state = self.lock();
        let delivery = state.close_session(self.session_id, (self.shared.clock)());
        drop(state);
        deliver(delivery);
    }

    /// The journal file, if this store is persisted.
    pub fn journal_path(&self) -> Option<PathBuf> {
        self.lock().journal.as_ref().map(|j| j.path().to_path_buf())
    }

    #[cfg(test)]
    pub(crate) fn set_compact_bytes_min(&self, bytes: u64) {
        if let Some(journal) = self.lock().journal.as_mut() {
            journal.set_compact_bytes_min(bytes);
        }
    }

    #[cfg(test)]
    pub(crate) fn persistent_view(&self) -> std::collections::BTreeMap<String, (Vec<u8>, Stat)> {
        self.lock().tree.persistent_view()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug that may have left the tree half-changed.
        self.shared
            .state
            .lock()
            .expect("metadata store mutex poisoned by an earlier panic")
    }

    /// Locks the state for a call of this session.
    fn session(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let state = self.lock();
        if state.live_sessions.contains(&self.session_id) {
            Ok(state)
        } else {
            Err(StoreError::SessionExpired)
        }
    }

    fn write(&self, ops: &[Op]) -> Result<Vec<OpResult>, StoreError> {
        let mut state = self.session()?;
        let time_ms = (self.shared.clock)();
        let (results, delivery) = state.write(self.session_id, time_ms, ops)?;
        drop(state);
        deliver(delivery);
        Ok(results)
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        // Never panic in drop: a poisoned mutex already reported its panic.
        let Ok(mut state) = self.shared.state.lock() else {
            return;
        };
        let delivery = state.close_session(self.session_id, (self.shared.clock)());
        drop(state);
        deliver(delivery);
    }
}

impl State {
    /// Applies `ops` as one transaction, journals its persistent changes, and returns the
    /// watch events to send once the lock is released.
    fn write(
        &mut self,
        session_id: i64,
        time_ms: i64,
        ops: &[Op],
    ) -> Result<(Vec<OpResult>, Delivery), StoreError> {
        let mut txn = self.tree.begin(session_id, time_ms);
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            match self.tree.apply(&mut txn, op) {
                Ok(result) => results.push(result),
                Err(e) => {
                    self.tree.rollback(txn);
                    return Err(e);
                }
            }
        }
        if let Some(journal) = self.journal.as_mut() {
            let appended = journal::encode_txn(txn.zxid, txn.time_ms, &txn.changes)
                .and_then(|record| record.map_or(Ok(()), |r| journal.append(&r)));
            if let Err(e) = appended {
                self.tree.rollback(txn);
                return Err(e);
            }
        }
        let changes = self.tree.commit(txn);
        if let Some(journal) = self.journal.as_mut() {
            journal.maybe_compact(&self.tree);
        }
        Ok((results, self.trigger(&changes)))
    }

    fn close_session(&mut self, session_id: i64, time_ms: i64) -> Delivery {
        if !self.live_sessions.remove(&session_id) {
            return Vec::new();
        }
        let mut delivery = Vec::new();
        for watches in [&mut self.data_watches, &mut self.child_watches] {
            for watchers in watches.values_mut() {
                for watcher in watchers.iter().filter(|w| w.session_id == session_id) {
                    push_unique(&mut delivery, &watcher.tx, WatchEvent::SessionExpired);
                }
                watchers.retain(|w| w.session_id != session_id);
            }
            watches.retain(|_, watchers| !watchers.is_empty());
        }
        let ephemerals = self.tree.ephemerals_of(session_id);
        if ephemerals.is_empty() {
            return delivery;
        }
        log::debug!(
            "metadata session closed session_id={session_id:#x} ephemerals={}",
            ephemerals.len()
        );
        let ops: Vec<Op> = ephemerals
            .into_iter()
            .map(|path| Op::Delete {
                path,
                version: None,
            })
            .collect();
        match self.write(session_id, time_ms, &ops) {
            Ok((_, events)) => delivery.extend(events),
            Err(e) => panic!("deleting the ephemerals of session {session_id:#x}: {e}"),
        }
        delivery
    }

    /// Removes and returns the watches `changes` fire.
    fn trigger(&mut self, changes: &[Change]) -> Delivery {
        let mut delivery = Vec::new();
        for change in changes {
            match change {
                Change::Created { path, .. } => {
                    fire(
                        &mut self.data_watches,
                        path,
                        WatchEvent::NodeCreated,
                        &mut delivery,
                    );
                    fire_parent(&mut self.child_watches, path, &mut delivery);
                }
                Change::Set { path, .. } => {
                    fire(
                        &mut self.data_watches,
                        path,
                        WatchEvent::NodeDataChanged,
                        &mut delivery,
                    );
                }
                Change::Deleted { path, .. } => {
                    fire(
                        &mut self.data_watches,
                        path,
                        WatchEvent::NodeDeleted,
                        &mut delivery,
                    );
                    fire(
                        &mut self.child_watches,
                        path,
                        WatchEvent::NodeDeleted,
                        &mut delivery,
                    );
                    fire_parent(&mut self.child_watches, path, &mut delivery);
                }
            }
        }
        delivery
    }
}

fn fire(
    watches: &mut HashMap<String, Vec<Watcher>>,
    path: &str,
    event: fn(String) -> WatchEvent,
    delivery: &mut Delivery,
) {
    for watcher in watches.remove(path).unwrap_or_default() {
        push_unique(delivery, &watcher.tx, event(path.to_string()));
    }
}

fn fire_parent(watches: &mut HashMap<String, Vec<Watcher>>, path: &str, delivery: &mut Delivery) {
    if let Some(parent) = parent_path(path) {
        fire(watches, parent, WatchEvent::NodeChildrenChanged, delivery);
    }
}

/// Adds an event unless the same channel already gets the same event (ZooKeeper delivers a
/// `NodeDeleted` once to a watcher set on both the data and the children of a node).
fn push_unique(delivery: &mut Delivery, tx: &Sender<WatchEvent>, event: WatchEvent) {
    if !delivery
        .iter()
        .any(|(other, e)| *e == event && other.same_channel(tx))
    {
        delivery.push((tx.clone(), event));
    }
}

fn deliver(delivery: Delivery) {
    for (tx, event) in delivery {
        // A dropped receiver has lost interest; that is not an error.
        let _ = tx.send(event);
    }
}

fn add_watcher(
    watches: &mut HashMap<String, Vec<Watcher>>,
    path: &str,
    session_id: i64,
    tx: Sender<WatchEvent>,
) -> Result<(), StoreError> {
    let watchers = watches.entry(path.to_string()).or_default();
    if watchers.iter().any(|w| w.tx.same_channel(&tx)) {
        return Ok(());
    }
    if watchers.len() >= WATCHERS_PER_PATH_MAX {
        return Err(StoreError::LimitExceeded {
            what: format!("number of watchers on {path}"),
            value: watchers.len() + 1,
            max: WATCHERS_PER_PATH_MAX,
        });
    }
    watchers.push(Watcher { session_id, tx });
    Ok(())
}

impl MetadataStore for LocalStore {
    fn create(&self, path: &str, data: &[u8], mode: CreateMode) -> Result<String, StoreError> {
        let op = Op::Create {
            path: path.to_string(),
            data: data.to_vec(),
            mode,
        };
        match self.write(&[op])?.pop() {
            Some(OpResult::Created(actual)) => Ok(actual),
            other => unreachable!("create returned {other:?}"),
        }
    }

    fn get(&self, path: &str) -> Result<(Vec<u8>, Stat), StoreError> {
        validate_path(path, false)?;
        let state = self.session()?;
        let node = state
            .tree
            .get(path)
            .ok_or_else(|| StoreError::NoNode(path.to_string()))?;
        Ok((node.data.clone(), node.stat()))
    }

    fn set(&self, path: &str, data: &[u8], version: Option<i32>) -> Result<Stat, StoreError> {
        let op = Op::SetData {
            path: path.to_string(),
            data: data.to_vec(),
            version,
        };
        match self.write(&[op])?.pop() {
            Some(OpResult::SetData(stat)) => Ok(stat),
            other => unreachable!("set returned {other:?}"),
        }
    }

    fn delete(&self, path: &str, version: Option<i32>) -> Result<(), StoreError> {
        let op = Op::Delete {
            path: path.to_string(),
            version,
        };
        self.write(&[op]).map(|_| ())
    }

    fn exists(&self, path: &str) -> Result<Option<Stat>, StoreError> {
        validate_path(path, false)?;
        let state = self.session()?;
        Ok(state.tree.get(path).map(|node| node.stat()))
    }

    fn children(&self, path: &str) -> Result<Vec<String>, StoreError> {
        validate_path(path, false)?;
        let state = self.session()?;
        let node = state
            .tree
            .get(path)
            .ok_or_else(|| StoreError::NoNode(path.to_string()))?;
        Ok(node.children.iter().cloned().collect())
    }

    fn multi(&self, ops: &[Op]) -> Result<Vec<OpResult>, StoreError> {
        self.write(ops)
    }

    fn watch_data(&self, path: &str, tx: Sender<WatchEvent>) -> Result<Option<Stat>, StoreError> {
        validate_path(path, false)?;
        let mut state = self.session()?;
        let stat = state.tree.get(path).map(|node| node.stat());
        add_watcher(&mut state.data_watches, path, self.session_id, tx)?;
        Ok(stat)
    }

    fn watch_children(
        &self,
        path: &str,
        tx: Sender<WatchEvent>,
    ) -> Result<Vec<String>, StoreError> {
        validate_path(path, false)?;
        let mut state = self.session()?;
        let children: Vec<String> = state
            .tree
            .get(path)
            .ok_or_else(|| StoreError::NoNode(path.to_string()))?
            .children
            .iter()
            .cloned()
            .collect();
        add_watcher(&mut state.child_watches, path, self.session_id, tx)?;
        Ok(children)
    }

    fn session_id(&self) -> i64 {
        self.session_id
    }
}

#[cfg(test)]
mod tests;

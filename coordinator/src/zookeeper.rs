//! `ZkStore`: the [`MetadataStore`] over a real ZooKeeper ensemble (`zookeeper.connect`).
//!
//! A blocking facade over the async `zookeeper-client`: each call runs its request future
//! to completion on the calling thread, bounded by the operation timeout (the session
//! timeout), while the client's session task and the watch forwarders run on smol's global
//! executor. Callers are broker-side threads (controller, admin, registration, group mirror)
//! — never a request handler or a network processor.
//!
//! Semantics are ZooKeeper's own (the trait was written after them). The connect string is
//! Kafka's: `host:port[,host:port...][/chroot]`; the chroot is created if missing, as
//! Kafka does. Watches are one-shot and forwarded to the caller's channel; they are hints:
//! after a disconnection the store reports `Disconnected` and then `Connected` to its
//! session subscribers, who re-read what they watch (ZooKeeper re-arms watches on a
//! reconnect within the session, but a consumer must not rely on seeing every change).
//! When the session expires every ephemeral node of it is gone; subscribers get
//! `SessionExpired`, and [`ZkStore::renew_session`] opens a new session on which the broker
//! registers again.
//!
//! Thread safety: `Send + Sync`; the client handle is swapped under a lock on renewal.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crossbeam_channel::Sender;
use zookeeper_client as zk;

use crate::store::{CreateMode, MetadataStore, Op, OpResult, Stat, StoreError, WatchEvent};

/// Settings of the ZooKeeper backend (Kafka's names in comments).
#[derive(Debug, Clone)]
pub struct ZkConfig {
    /// `zookeeper.connect`: `host:port[,host:port...][/chroot]`.
    pub connect: String,
    /// `zookeeper.session.timeout.ms`.
    pub session_timeout: Duration,
    /// `zookeeper.connection.timeout.ms`: how long start-up waits for a first connection.
    pub connection_timeout: Duration,
}

pub struct ZkStore {
    config: ZkConfig,
    /// None once closed.
    client: RwLock<Option<zk::Client>>,
    subscribers: Arc<Mutex<Vec<Sender<WatchEvent>>>>,
}

fn stat(s: &zk::Stat) -> Stat {
    Stat {
        version: s.version,
        cversion: s.cversion,
        ephemeral_owner: s.ephemeral_owner,
        czxid: s.czxid,
        mzxid: s.mzxid,
        ctime_ms: s.ctime,
        mtime_ms: s.mtime,
        num_children: s.num_children,
        data_length: s.data_length,
    }
}

fn error(e: zk::Error, path: &str, expected: Option<i32>) -> StoreError {
    match e {
        zk::Error::NoNode => StoreError::NoNode(path.to_string()),
        zk::Error::NodeExists => StoreError::NodeExists(path.to_string()),
        zk::Error::BadVersion => StoreError::BadVersion {
            path: path.to_string(),
            expected: expected.unwrap_or(-1),
            actual: -1,
        },
        zk::Error::NotEmpty => StoreError::NotEmpty(path.to_string()),
        zk::Error::NoChildrenForEphemerals => StoreError::NoChildrenForEphemerals(path.to_string()),
        zk::Error::SessionExpired => StoreError::SessionExpired,
        zk::Error::BadArguments(why) => StoreError::InvalidPath(format!("{path}: {why}")),
        other => StoreError::ConnectionLoss(format!("{other} (znode {path})")),
    }
}

fn zk_mode(mode: CreateMode) -> zk::CreateMode {
    match mode {
        CreateMode::Persistent => zk::CreateMode::Persistent,
        CreateMode::Ephemeral => zk::CreateMode::Ephemeral,
        CreateMode::PersistentSequential => zk::CreateMode::PersistentSequential,
        CreateMode::EphemeralSequential => zk::CreateMode::EphemeralSequential,
    }
}

/// Runs `fut` on this thread, failing with `ConnectionLoss` after `timeout`.
fn block<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, zk::Error>>,
) -> Result<T, zk::Error> {
    smol::block_on(smol::future::or(fut, async {
        smol::Timer::after(timeout).await;
        Err(zk::Error::ConnectionLoss)
    }))
}

impl ZkStore {
    /// Connects (waiting up to the connection timeout), creates the chroot if missing.
    pub fn connect(config: ZkConfig) -> Result<ZkStore, StoreError> {
        let client = open_session(&config)?;
        let store = ZkStore {
            config,
            client: RwLock::new(Some(client)),
            subscribers: Arc::new(Mutex::new(Vec::new())),
        };
        store.forward_session_states();
        Ok(store)
    }

    /// Opens a new session after the old one expired; ephemerals must be created again.
    fn renew(&self) -> Result<(), StoreError> {
        if let Ok(current) = self.client() {
            if !current.state().is_terminated() {
                // A late or repeated expiry notice: the session in use is alive (renewing
                // it would close it and drop its ephemerals).
                log::info!(
                    "zookeeper session {:#x} is alive; not renewing",
                    current.session().id().0
                );
                return Ok(());
            }
        }
        let client = open_session(&self.config)?;
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = Some(client);
        self.forward_session_states();
        log::info!(
            "zookeeper session renewed session_id={:#x}",
            self.session_id()
        );
        Ok(())
    }

    fn client(&self) -> Result<zk::Client, zk::Error> {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(zk::Error::ClientClosed)
    }

    /// Closes the session (Kafka does at shutdown): its ephemeral znodes — the broker's
    /// registration, `/controller` — go at once instead of a session timeout later.
    /// Every later call fails with a connection error.
    pub fn close_session(&self) {
        let Some(client) = self
            .client
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let session = client.session().id().0;
        let mut watcher = client.state_watcher();
        drop(client);
        let closed = smol::block_on(smol::future::or(
            async {
                loop {
                    if watcher.changed().await.is_terminated() {
                        return true;
                    }
                }
            },
            async {
                smol::Timer::after(CLOSE_WAIT).await;
                false
            },
        ));
        log::info!("zookeeper session closed session_id={session:#x} confirmed={closed}");
    }

    fn timeout(&self) -> Duration {
        self.config.session_timeout
    }

    /// Forwards the current session's state changes to the subscribers.
    fn forward_session_states(&self) {
        let Ok(client) = self.client() else { return };
        let mut watcher = client.state_watcher();
        let subscribers = Arc::clone(&self.subscribers);
        smol::spawn(async move {
            loop {
                let state = watcher.changed().await;
                let event = match state {
                    zk::SessionState::Disconnected => WatchEvent::Disconnected,
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                        WatchEvent::Connected
                    }
                    zk::SessionState::Expired => WatchEvent::SessionExpired,
                    // Closed by this process (shutdown): nothing to tell.
                    zk::SessionState::Closed => break,
                    _ => {
                        log::warn!("zookeeper session ended state={state:?}");
                        WatchEvent::SessionExpired
                    }
                };
                log::info!("zookeeper session state {state:?}");
                let terminal = event == WatchEvent::SessionExpired;
                subscribers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|tx| tx.send(event.clone()).is_ok());
                if terminal {
                    break;
                }
            }
        })
        .detach();
    }

    /// Forwards a one-shot watcher's event to `tx`. A watch ended by its session's end
    /// says nothing: the session's subscribers hear of the expiry once
    /// ([`ZkStore::forward_session_states`]). Forwarding it from every watch, too, told a
    /// broker with N watches N times, and each told it to renew a session it had just
    /// renewed — closing the new one, whose registration then vanished: a storm.
    fn forward(watcher: zk::OneshotWatcher, tx: Sender<WatchEvent>) {
        smol::spawn(async move {
            let event = watcher.changed().await;
            let path = event.path.clone();
            let mapped = match event.event_type {
                zk::EventType::NodeCreated => WatchEvent::NodeCreated(path),
                zk::EventType::NodeDeleted => WatchEvent::NodeDeleted(path),
                zk::EventType::NodeDataChanged => WatchEvent::NodeDataChanged(path),
                zk::EventType::NodeChildrenChanged => WatchEvent::NodeChildrenChanged(path),
                zk::EventType::Session => return,
            };
            let _ = tx.send(mapped);
        })
        .detach();
    }
}

/// Reads in flight at once in [`MetadataStore::get_many`].
const PIPELINED_READS_MAX: usize = 2_000;
/// How long closing waits for ZooKeeper to confirm.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

fn open_session(config: &ZkConfig) -> Result<zk::Client, StoreError> {
    let (hosts, chroot) = match config.connect.find('/') {
        Some(i) => (&config.connect[..i], &config.connect[i..]),
        None => (config.connect.as_str(), ""),
    };
    let connect = |cluster: &str| {
        let connector = zk::Client::connector()
            .with_session_timeout(config.session_timeout)
            .with_connection_timeout(config.connection_timeout);
        smol::block_on(smol::future::or(connector.connect(cluster), async {
            smol::Timer::after(config.connection_timeout).await;
            Err(zk::Error::Timeout)
        }))
        .map_err(|e| StoreError::ConnectionLoss(format!("connecting to zookeeper {cluster}: {e}")))
    };
    if !chroot.is_empty() && chroot != "/" {
        // Kafka creates its chroot on first start.
        let root = connect(hosts)?;
        let mut path = String::new();
        for part in chroot.trim_matches('/').split('/') {
            path.push('/');
            path.push_str(part);
            let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            match block(config.session_timeout, root.create(&path, b"", &options)) {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(error(e, &path, None)),
            }
        }
    }
    let client = connect(&config.connect)?;
    log::info!(
        "zookeeper session opened connect={} session_id={:#x} timeout_ms={}",
        config.connect,
        client.session().id().0,
        client.session_timeout().as_millis()
    );
    Ok(client)
}

impl MetadataStore for ZkStore {
    fn create(&self, path: &str, data: &[u8], mode: CreateMode) -> Result<String, StoreError> {
        let client = self.client().map_err(|e| error(e, path, None))?;
        let options = zk_mode(mode).with_acls(zk::Acls::anyone_all());
        let (_, sequence) = block(self.timeout(), client.create(path, data, &options))
            .map_err(|e| error(e, path, None))?;
        Ok(if mode.is_sequential() {
            format!("{path}{:010}", sequence.into_i64())
        } else {
            path.to_string()
        })
    }

    fn get(&self, path: &str) -> Result<(Vec<u8>, Stat), StoreError> {
        let client = self.client().map_err(|e| error(e, path, None))?;
        block(self.timeout(), client.get_data(path))
            .map(|(data, s)| (data, stat(&s)))
            .map_err(|e| error(e, path, None))
    }

    fn set(&self, path: &str, data: &[u8], version: Option<i32>) -> Result<Stat, StoreError> {
        let client = self.client().map_err(|e| error(e, path, None))?;
        let version = version.filter(|v| *v >= 0);
        block(self.timeout(), client.set_data(path, data, version))
            .map(|s| stat(&s))
            .map_err(|e| error(e, path, version))
    }

    fn delete(&self, path: &str, version: Option<i32>) -> Result<(), StoreError> {
        let client = self.client().map_err(|e| error(e, path, None))?;
        let version = version.filter(|v| *v >= 0);
        block(self.timeout(), client.delete(path, version)).map_err(|e| error(e, path, version))
    }

    fn exists(&self, path: &str) -> Result<Option<Stat>, StoreError> {
        let client = self.client().map_err(|e| error(e, path, None))?;
        block(self.timeout(), client.check_stat(path))
            .map(|s| s.map(|s| stat(&s)))
            .map_err(|e| error(e, path, None))
    }

    fn children(&self, path: &str) -> Result<Vec<String>, StoreError> {
        let client = self.client().map_err(|e| error(e, path, None))?;
        let mut names =
            block(self.timeout(), client.list_children(path)).map_err(|e| error(e, path, None))?;
        names.sort();
        Ok(names)
    }

    fn multi(&self, ops: &[Op]) -> Result<Vec<OpResult>, StoreError> {
        let client = self.client().map_err(|e| error(e, "/", None))?;
        let mut writer = client.new_multi_writer();
        for op in ops {
            let added = match op {
                Op::Create { path, data, mode } => writer.add_create(
                    path,
                    data,
                    &zk_mode(*mode).with_acls(zk::Acls::anyone_all()),
                ),
                Op::SetData {
                    path,
                    data,
                    version,
                } => writer.add_set_data(path, data, version.filter(|v| *v >= 0)),
                Op::Delete { path, version } => {
                    writer.add_delete(path, version.filter(|v| *v >= 0))
                }
                Op::Check { path, version } => writer.add_check_version(path, *version),
            };
            added.map_err(|e| error(e, op.path(), None))?;
        }
        let results = smol::block_on(smol::future::or(writer.commit(), async {
            smol::Timer::after(self.timeout()).await;
            Err(zk::MultiWriteError::RequestFailed {
                source: zk::Error::ConnectionLoss,
            })
        }));
        match results {
            Ok(results) => Ok(results
                .into_iter()
                .zip(ops)
                .map(|(r, op)| match r {
                    zk::MultiWriteResult::Create { path, .. } => OpResult::Created(path),
                    zk::MultiWriteResult::SetData { stat: s } => OpResult::SetData(stat(&s)),
                    zk::MultiWriteResult::Delete => OpResult::Deleted,
                    zk::MultiWriteResult::Check => OpResult::Checked,
                    #[allow(unreachable_patterns)]
                    _ => OpResult::Created(op.path().to_string()),
                })
                .collect()),
            Err(zk::MultiWriteError::OperationFailed { index, source }) => {
                let op = &ops[index.min(ops.len().saturating_sub(1))];
                let expected = match op {
                    Op::Check { version, .. } => Some(*version),
                    Op::SetData { version, .. } | Op::Delete { version, .. } => *version,
                    Op::Create { .. } => None,
                };
                Err(error(source, op.path(), expected))
            }
            Err(zk::MultiWriteError::RequestFailed { source }) => {
                Err(error(source, ops.first().map_or("/", Op::path), None))
            }
        }
    }

    fn watch_data(&self, path: &str, tx: Sender<WatchEvent>) -> Result<Option<Stat>, StoreError> {
        let client = self.client().map_err(|e| error(e, path, None))?;
        let (s, watcher) = block(self.timeout(), client.check_and_watch_stat(path))
            .map_err(|e| error(e, path, None))?;
        ZkStore::forward(watcher, tx);
        Ok(s.map(|s| stat(&s)))
    }

    fn watch_children(
        &self,
        path: &str,
        tx: Sender<WatchEvent>,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.client().map_err(|e| error(e, path, None))?;
        let (mut names, watcher) = block(self.timeout(), client.list_and_watch_children(path))
            .map_err(|e| error(e, path, None))?;
        ZkStore::forward(watcher, tx);
        names.sort();
        Ok(names)
    }

    fn session_id(&self) -> i64 {
        self.client().map_or(0, |c| c.session().id().0)
    }

    fn subscribe_session(&self, tx: Sender<WatchEvent>) {
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
    }

    fn renew_session(&self) -> Result<(), StoreError> {
        self.renew()
    }

    fn close(&self) {
        self.close_session();
    }

    fn get_many(&self, paths: &[String]) -> Vec<crate::store::ReadResult> {
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                return paths
                    .iter()
                    .map(|p| Err(error(e.clone(), p, None)))
                    .collect()
            }
        };
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(PIPELINED_READS_MAX) {
            // Each call sends its request at once; the responses are awaited in order.
            let pending: Vec<_> = chunk.iter().map(|p| client.get_data(p)).collect();
            for (fut, path) in pending.into_iter().zip(chunk) {
                out.push(match block(self.timeout(), fut) {
                    Ok((data, s)) => Ok(Some((data, stat(&s)))),
                    Err(zk::Error::NoNode) => Ok(None),
                    Err(e) => Err(error(e, path, None)),
                });
            }
        }
        out
    }
}

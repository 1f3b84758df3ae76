//! Every partition log of the broker's `log.dirs`.
//!
//! Each log dir holds `meta.properties` (`version=0`, `broker.id`, `cluster.id`: a dir
//! written by another broker or cluster is refused), the three offset checkpoints, and
//! `.kafka_cleanshutdown`, written last on clean shutdown and removed at start: its absence
//! at start means the previous run crashed and logs are recovered from their recovery
//! points. New partitions go to the dir holding the fewest. Thread safe: the map is behind an
//! `RwLock`, each log behind its own `Mutex`.
//!
//! Failures: a dir whose device fails (at start or later, see [`DirHealth`]) goes offline and
//! the others keep serving; the partitions it held are remembered so that they answer
//! KAFKA_STORAGE_ERROR rather than being created again, empty, elsewhere. A log whose mutex
//! was poisoned (a panic while it was being written) is offline too: [`lock`] refuses it, and
//! shutdown leaves no clean-shutdown marker, so the next start recovers it. Start does not
//! need free space: checkpoints that cannot be written at start are retried later.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::checkpoint;
use crate::disk::DirHealth;
use crate::log::{parse_dir_name, write_atomically, Log, LogConfig};
use crate::{StorageError, TopicPartition};

pub const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";
pub const META_PROPERTIES: &str = "meta.properties";

pub type SharedLog = Arc<Mutex<Log>>;

pub struct LogManager {
    dirs: Vec<PathBuf>,
    health: Vec<Arc<DirHealth>>,
    logs: RwLock<HashMap<TopicPartition, SharedLog>>,
    /// Partitions found in a dir that failed at start (their logs could not be opened).
    offline_partitions: RwLock<HashSet<TopicPartition>>,
    /// Logs per dir, for placing new ones (kept here: counting them means locking each).
    placed: Mutex<HashMap<PathBuf, usize>>,
    clean_shutdown: bool,
}

/// Locks a log for use. A log whose previous holder panicked may be half-written: it is
/// offline from then on.
pub fn lock(log: &SharedLog) -> Result<MutexGuard<'_, Log>, StorageError> {
    log.lock().map_err(|poisoned| {
        let log = poisoned.into_inner();
        StorageError::Offline(format!(
            "partition {}-{} (a write to it failed midway)",
            log.topic(),
            log.partition()
        ))
    })
}

/// Locks a log to look at it (metrics, deletion), whatever state a panic left it in.
pub fn lock_any(log: &SharedLog) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LogManager {
    /// Opens the log dirs, checks `meta.properties`, and loads (recovering if needed) every
    /// partition found. `config_for(topic)` gives each topic's log config.
    pub fn open(
        dirs: &[PathBuf],
        broker_id: i32,
        cluster_id: &str,
        config_for: &dyn Fn(&str) -> LogConfig,
        now_ms: i64,
    ) -> Result<LogManager, StorageError> {
        assert!(!dirs.is_empty(), "at least one log dir");
        let mut logs = HashMap::new();
        let mut offline_partitions = HashSet::new();
        let mut all_clean = true;
        let mut health = Vec::new();
        for dir in dirs {
            let dir_health = Arc::new(DirHealth::new(dir));
            match open_dir(dir, broker_id, cluster_id, config_for, now_ms, &dir_health) {
                Ok((dir_logs, clean)) => {
                    all_clean &= clean;
                    logs.extend(dir_logs);
                }
                Err(e) if e.is_device_failure() && dirs.len() > 1 => {
                    dir_health.mark_offline(&e);
                    offline_partitions.extend(list_partitions(dir));
                }
                Err(e) => return Err(e),
            }
            health.push(dir_health);
        }
        if health.iter().all(|h| h.is_offline()) {
            return Err(StorageError::Offline(format!(
                "every log dir ({} of them)",
                dirs.len()
            )));
        }
        let mut placed: HashMap<PathBuf, usize> = dirs.iter().map(|d| (d.clone(), 0)).collect();
        for log in logs.values() {
            if let Some(parent) = lock_any(log).dir().parent() {
                *placed.entry(parent.to_path_buf()).or_default() += 1;
            }
        }
        let manager = LogManager {
            dirs: dirs.to_vec(),
            health,
            logs: RwLock::new(logs),
            placed: Mutex::new(placed),
            offline_partitions: RwLock::new(offline_partitions),
            clean_shutdown: all_clean,
        };
        // From here on the dir is not fresh: a crash before the first periodic checkpoint
        // must still be recognised as unclean. On a full disk this waits for the next one.
        if let Err(e) = manager.checkpoint() {
            log::warn!("writing checkpoints at start failed: {e}; retried periodically");
        }
        Ok(manager)
    }

    /// Every configured log dir, in configured order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The log dirs that are offline.
    pub fn offline_dirs(&self) -> Vec<PathBuf> {
        self.health
            .iter()
            .filter(|h| h.is_offline())
            .map(|h| h.dir().to_path_buf())
            .collect()
    }

    /// True if `tp` lives in an offline dir (or its log is poisoned).
    pub fn is_offline(&self, tp: &TopicPartition) -> bool {
        if self
            .offline_partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(tp)
        {
            return true;
        }
        self.get(tp)
            .is_some_and(|log| log.is_poisoned() || lock_any(&log).is_offline())
    }

    pub fn had_clean_shutdown(&self) -> bool {
        self.clean_shutdown
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<SharedLog> {
        self.logs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tp)
            .cloned()
    }

    pub fn all(&self) -> Vec<(TopicPartition, SharedLog)> {
        let logs = self.logs.read().unwrap_or_else(|p| p.into_inner());
        logs.iter()
            .map(|(tp, l)| (tp.clone(), Arc::clone(l)))
            .collect()
    }

    /// The log of `tp`, created in the least-loaded online dir if absent. A partition of an
    /// offline dir is refused; so is a missing partition that is not `new` while some dir
    /// is offline (it may be in that dir, and recreating it empty would lose its records).
    pub fn get_or_create(
        &self,
        tp: &TopicPartition,
        config: LogConfig,
        now_ms: i64,
        new: bool,
    ) -> Result<SharedLog, StorageError> {
        if let Some(log) = self.get(tp) {
            return Ok(log);
        }
        let mut logs = self.logs.write().unwrap_or_else(|p| p.into_inner());
        if let Some(log) = logs.get(tp) {
            return Ok(Arc::clone(log));
        }
        let offline = self.offline_dirs();
        let known_offline = self
            .offline_partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(tp);
        if known_offline || (!new && !offline.is_empty()) {
            return Err(StorageError::Offline(format!(
                "partition {tp} (its log dir may be offline)"
            )));
        }
        let dir = self.least_loaded_dir()?;
        let log = Log::open(
            &dir.join(tp.dir_name()),
            &tp.topic,
            tp.partition,
            config,
            0,
            0,
            true,
            now_ms,
        )?;
        log::info!("created log {} in {}", tp, dir.display());
        let mut log = log;
        log.set_dir_health(self.health_of(&dir));
        let log = Arc::new(Mutex::new(log));
        logs.insert(tp.clone(), Arc::clone(&log));
        *self
            .placed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(dir)
            .or_default() += 1;
        Ok(log)
    }

    fn health_of(&self, dir: &Path) -> Arc<DirHealth> {
        self.health
            .iter()
            .find(|h| h.dir() == dir)
            .cloned()
            .unwrap_or_else(|| Arc::new(DirHealth::new(dir)))
    }

    fn least_loaded_dir(&self) -> Result<PathBuf, StorageError> {
        let placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
        self.health
            .iter()
            .filter(|h| !h.is_offline())
            .map(|h| h.dir())
            .min_by_key(|d| placed.get(*d).copied().unwrap_or(0))
            .map(Path::to_path_buf)
            .ok_or_else(|| StorageError::Offline("every log dir".into()))
    }

    /// Removes a partition's log and its files.
    pub fn delete(&self, tp: &TopicPartition) -> Result<(), StorageError> {
        let removed = self
            .logs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tp);
        if let Some(log) = removed {
            if let Some(parent) = lock_any(&log).dir().parent() {
                if let Some(n) = self
                    .placed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(parent)
                {
                    *n = n.saturating_sub(1);
                }
            }
            let log = match Arc::try_unwrap(log) {
                Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
                Err(shared) => {
                    // Someone still holds it (an in-flight read): delete the files anyway;
                    // open descriptors keep in-flight sendfiles valid.
                    let dir = lock_any(&shared).dir().to_path_buf();
                    return std::fs::remove_dir_all(&dir)
                        .map_err(|e| StorageError::io(format!("deleting {}", dir.display()), e));
                }
            };
            log.delete()?;
            log::info!("deleted log {tp}");
        }
        Ok(())
    }

    /// Writes the recovery-point, log-start-offset and replication-offset checkpoints.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        let all = self.all();
        for dir in &self.dirs {
            let mut recovery = Vec::new();
            let mut starts = Vec::new();
            let mut hws = Vec::new();
            if self.health_of(dir).is_offline() {
                continue;
            }
            for (tp, log) in &all {
                let log = lock_any(log);
                if log.dir().parent() != Some(dir.as_path()) {
                    continue;
                }
                recovery.push((tp.clone(), log.recovery_point()));
                starts.push((tp.clone(), log.log_start_offset()));
                hws.push((tp.clone(), log.high_watermark()));
            }
            checkpoint::write(&dir.join(checkpoint::RECOVERY_POINT), &recovery)?;
            checkpoint::write(&dir.join(checkpoint::LOG_START_OFFSET), &starts)?;
            checkpoint::write(&dir.join(checkpoint::REPLICATION_OFFSET), &hws)?;
        }
        Ok(())
    }

    /// Periodic work: flush rolled segments, time-based flushes, then checkpoint.
    pub fn flush_and_checkpoint(&self, now_ms: i64) -> Result<(), StorageError> {
        for (tp, log) in self.all() {
            let Ok(mut log) = lock(&log) else { continue };
            if log.is_offline() {
                continue;
            }
            if let Err(e) = log
                .flush_rolled()
                .and_then(|_| log.maybe_flush_by_time(now_ms))
            {
                log::error!("flush failed partition={tp}: {e}");
            }
        }
        self.checkpoint()
    }

    /// Deletes expired segments of every log; returns how many were deleted.
    pub fn run_retention(&self, now_ms: i64) -> usize {
        let mut deleted = 0;
        for (tp, log) in self.all() {
            match lock(&log).and_then(|mut l| l.delete_expired_segments(now_ms)) {
                Ok(n) => deleted += n,
                Err(StorageError::Offline(_)) => {}
                Err(e) => log::error!("retention failed partition={tp}: {e}"),
            }
        }
        deleted
    }

    /// Clean shutdown: close every log, checkpoint, write the clean-shutdown markers.
    /// A log that is offline or whose indexes are incomplete is not closed cleanly: its dir
    /// gets no marker, so the next start recovers it.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        let mut first_error = None;
        let mut unclean_dirs: HashSet<PathBuf> = self.offline_dirs().into_iter().collect();
        for (tp, log) in self.all() {
            let parent = lock_any(&log).dir().parent().map(Path::to_path_buf);
            let closed = lock(&log).and_then(|mut l| {
                l.check_online()?;
                l.close()?;
                if l.indexes_complete() {
                    Ok(())
                } else {
                    Err(StorageError::Inconsistent(format!(
                        "log {tp} has incomplete indexes"
                    )))
                }
            });
            if let Err(e) = closed {
                log::warn!("log {tp} not closed cleanly: {e}; it is recovered at next start");
                if let Some(p) = parent {
                    unclean_dirs.insert(p);
                }
                if !matches!(e, StorageError::Offline(_) | StorageError::Inconsistent(_)) {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Err(e) = self.checkpoint() {
            first_error.get_or_insert(e);
        }
        for dir in &self.dirs {
            if !unclean_dirs.contains(dir) {
                if let Err(e) = write_atomically(&dir.join(CLEAN_SHUTDOWN_FILE), b"") {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Opens one log dir: checks `meta.properties`, reads its checkpoints and loads every
/// partition in it. Returns the logs and whether the dir was shut down cleanly.
fn open_dir(
    dir: &Path,
    broker_id: i32,
    cluster_id: &str,
    config_for: &dyn Fn(&str) -> LogConfig,
    now_ms: i64,
    health: &Arc<DirHealth>,
) -> Result<(Vec<(TopicPartition, SharedLog)>, bool), StorageError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StorageError::io(format!("creating log dir {}", dir.display()), e))?;
    check_meta_properties(dir, broker_id, cluster_id)?;
    let marker = dir.join(CLEAN_SHUTDOWN_FILE);
    let fresh = !dir.join(checkpoint::RECOVERY_POINT).exists();
    let clean = marker.exists() || fresh;
    crate::index::remove_if_exists(&marker)?;
    let recovery = checkpoint::read(&dir.join(checkpoint::RECOVERY_POINT))?;
    let starts = checkpoint::read(&dir.join(checkpoint::LOG_START_OFFSET))?;
    let hws = checkpoint::read(&dir.join(checkpoint::REPLICATION_OFFSET))?;
    if !clean {
        log::warn!(
            "log dir {} was not shut down cleanly; recovering",
            dir.display()
        );
    }
    let mut logs = Vec::new();
    for (name, path) in list_dir(dir)? {
        if !path.is_dir() || name.starts_with('.') {
            continue;
        }
        if name.ends_with("-delete") {
            let _ = std::fs::remove_dir_all(&path);
            continue;
        }
        let Some((topic, partition)) = parse_dir_name(&name) else {
            log::warn!("ignoring directory {}", path.display());
            continue;
        };
        let tp = TopicPartition { topic, partition };
        let rp = recovery.get(&tp).copied().unwrap_or(0);
        let start = starts.get(&tp).copied().unwrap_or(0);
        let mut log = Log::open(
            &path,
            &tp.topic,
            partition,
            config_for(&tp.topic),
            rp,
            start,
            clean,
            now_ms,
        )?;
        log.set_dir_health(Arc::clone(health));
        log.set_high_watermark(hws.get(&tp).copied().unwrap_or(0));
        log::info!(
            "loaded log {} log_start_offset={} log_end_offset={} high_watermark={} segments={}",
            tp,
            log.log_start_offset(),
            log.log_end_offset(),
            log.high_watermark(),
            log.segment_count()
        );
        logs.push((tp, Arc::new(Mutex::new(log))));
    }
    Ok((logs, clean))
}

fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, StorageError> {
    let listing = |e| StorageError::io(format!("listing {}", dir.display()), e);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(listing)? {
        let entry = entry.map_err(listing)?;
        out.push((
            entry.file_name().to_string_lossy().to_string(),
            entry.path(),
        ));
    }
    Ok(out)
}

/// The partitions whose directories are in `dir`, as far as it can still be listed.
fn list_partitions(dir: &Path) -> Vec<TopicPartition> {
    list_dir(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, _)| parse_dir_name(&name))
        .map(|(topic, partition)| TopicPartition { topic, partition })
        .collect()
}

fn check_meta_properties(dir: &Path, broker_id: i32, cluster_id: &str) -> Result<(), StorageError> {
    let path = dir.join(META_PROPERTIES);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let props: HashMap<&str, &str> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim()))
                .collect();
            if let Some(id) = props.get("broker.id") {
                if id.parse::<i32>().ok() != Some(broker_id) {
                    return Err(StorageError::Inconsistent(format!(
                        "{} has broker.id={id} but this broker is broker.id={broker_id}",
                        path.display()
                    )));
                }
            }
            if let Some(id) = props.get("cluster.id") {
                if *id != cluster_id {
                    return Err(StorageError::Inconsistent(format!(
                        "{} has cluster.id={id} but the cluster is {cluster_id}",
                        path.display()
                    )));
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = format!("#\n#Written by kbroker\ncluster.id={cluster_id}\nversion=0\nbroker.id={broker_id}\n");
            write_atomically(&path, text.as_bytes())
        }
        Err(e) => Err(StorageError::io(format!("reading {}", path.display()), e)),
    }
}

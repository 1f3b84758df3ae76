//! Every partition log of the broker's `log.dirs`.
//!
//! Each log dir holds `meta.properties` (`version=0`, `broker.id`, `cluster.id`: a dir
//! written by another broker or cluster is refused), the three offset checkpoints, and
//! `.kafka_cleanshutdown`, written last on clean shutdown and removed at start: its absence
//! at start means the previous run crashed and logs are recovered from their recovery
//! points. New partitions go to the dir holding the fewest. Thread safe: the map is behind an
//! `RwLock`, each log behind its own `Mutex`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::checkpoint;
use crate::log::{parse_dir_name, write_atomically, Log, LogConfig};
use crate::{StorageError, TopicPartition};

pub const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";
pub const META_PROPERTIES: &str = "meta.properties";

pub type SharedLog = Arc<Mutex<Log>>;

pub struct LogManager {
    dirs: Vec<PathBuf>,
    logs: RwLock<HashMap<TopicPartition, SharedLog>>,
    clean_shutdown: bool,
}

/// Locks a log, surviving a panicked holder (the log's own invariants are asserted).
pub fn lock(log: &SharedLog) -> MutexGuard<'_, Log> {
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
        let mut all_clean = true;
        for dir in dirs {
            std::fs::create_dir_all(dir)
                .map_err(|e| StorageError::io(format!("creating log dir {}", dir.display()), e))?;
            check_meta_properties(dir, broker_id, cluster_id)?;
            let marker = dir.join(CLEAN_SHUTDOWN_FILE);
            let fresh = !dir.join(checkpoint::RECOVERY_POINT).exists();
            let clean = marker.exists() || fresh;
            all_clean &= clean;
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
            let entries = std::fs::read_dir(dir)
                .map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
            for entry in entries {
                let entry =
                    entry.map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
                let name = entry.file_name().to_string_lossy().to_string();
                if !entry.path().is_dir() {
                    continue;
                }
                if name.starts_with('.') {
                    continue;
                }
                if name.ends_with("-delete") {
                    let _ = std::fs::remove_dir_all(entry.path());
                    continue;
                }
                let Some((topic, partition)) = parse_dir_name(&name) else {
                    log::warn!("ignoring directory {}", entry.path().display());
                    continue;
                };
                let tp = TopicPartition { topic, partition };
                let rp = recovery.get(&tp).copied().unwrap_or(0);
                let start = starts.get(&tp).copied().unwrap_or(0);
                let mut log = Log::open(
                    &entry.path(),
                    &tp.topic,
                    partition,
                    config_for(&tp.topic),
                    rp,
                    start,
                    clean,
                    now_ms,
                )?;
                log.set_high_watermark(hws.get(&tp).copied().unwrap_or(0));
                log::info!("loaded log {} log_start_offset={} log_end_offset={} high_watermark={} segments={}", tp, log.log_start_offset(), log.log_end_offset(), log.high_watermark(), log.segment_count());
                logs.insert(tp, Arc::new(Mutex::new(log)));
            }
        }
        let manager = LogManager {
            dirs: dirs.to_vec(),
            logs: RwLock::new(logs),
            clean_shutdown: all_clean,
        };
        // From here on the dir is not fresh: a crash before the first periodic checkpoint
        // must still be recognised as unclean.
        manager.checkpoint()?;
        Ok(manager)
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

    /// The log of `tp`, created in the least-loaded dir if absent.
    pub fn get_or_create(
        &self,
        tp: &TopicPartition,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<SharedLog, StorageError> {
        if let Some(log) = self.get(tp) {
            return Ok(log);
        }
        let mut logs = self.logs.write().unwrap_or_else(|p| p.into_inner());
        if let Some(log) = logs.get(tp) {
            return Ok(Arc::clone(log));
        }
        let dir = self.least_loaded_dir(&logs);
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
        let log = Arc::new(Mutex::new(log));
        logs.insert(tp.clone(), Arc::clone(&log));
        Ok(log)
    }

    fn least_loaded_dir(&self, logs: &HashMap<TopicPartition, SharedLog>) -> PathBuf {
        let mut counts: HashMap<&Path, usize> =
            self.dirs.iter().map(|d| (d.as_path(), 0)).collect();
        for log in logs.values() {
            let log = lock(log);
            if let Some(parent) = log.dir().parent() {
                if let Some(c) = counts.get_mut(parent) {
                    *c += 1;
                }
            }
        }
        self.dirs
            .iter()
            .min_by_key(|d| counts.get(d.as_path()).copied().unwrap_or(0))
            .cloned()
            .expect("at least one log dir")
    }

    /// Removes a partition's log and its files.
    pub fn delete(&self, tp: &TopicPartition) -> Result<(), StorageError> {
        let removed = self
            .logs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tp);
        if let Some(log) = removed {
            let log = match Arc::try_unwrap(log) {
                Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
                Err(shared) => {
                    // Someone still holds it (an in-flight read): delete the files anyway;
                    // open descriptors keep in-flight sendfiles valid.
                    let dir = lock(&shared).dir().to_path_buf();
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
            for (tp, log) in &all {
                let log = lock(log);
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
            let mut log = lock(&log);
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
            match lock(&log).delete_expired_segments(now_ms) {
                Ok(n) => deleted += n,
                Err(e) => log::error!("retention failed partition={tp}: {e}"),
            }
        }
        deleted
    }

    /// Clean shutdown: close every log, checkpoint, write the clean-shutdown markers.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        let mut first_error = None;
        for (tp, log) in self.all() {
            if let Err(e) = lock(&log).close() {
                log::error!("closing log {tp} failed: {e}");
                first_error.get_or_insert(e);
            }
        }
        self.checkpoint()?;
        if let Some(e) = first_error {
            return Err(e);
        }
        for dir in &self.dirs {
            write_atomically(&dir.join(CLEAN_SHUTDOWN_FILE), b"")?;
        }
        Ok(())
    }
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

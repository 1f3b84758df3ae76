//! One partition's log: an ordered set of segments, the last one active.
//!
//! Directory `<log.dirs>/<topic>-<partition>/` holds the segments and a
//! `leader-epoch-checkpoint` (`0\n<count>\n<epoch> <start offset>\n...`, Kafka's format).
//! Offsets: `log_start_offset` <= `high_watermark` <= `log_end_offset`. Appends take records
//! already validated ([`crate::validate`], outside the lock) and reserve disk space before
//! any byte is written, so a rejected or failed produce leaves the log untouched. A failed
//! write is logged once (and once more when writes resume); a failure of the device takes
//! the whole log dir offline ([`DirHealth`]), after which every operation on the log answers
//! `Offline`.
//!
//! Idempotent producers ([`ProducerStateManager`]): a client batch is checked against its
//! producer's state before anything is written (a retried batch is answered with its
//! original offsets and not appended again). The state is snapshotted to
//! `<20-digit offset>.snapshot` at every roll and at close, and rebuilt at open from the
//! newest snapshot plus the batch headers after it — so after kill -9 it is as complete as
//! the log; truncation reloads it, retention deletes the snapshots of deleted segments. The recovery point is the offset below which data is
//! known to be on disk; after an unclean shutdown every segment from the one holding it is
//! rescanned by `Segment::recover`, and segments after a truncation are deleted.
//! A `Log` is used behind a `Mutex` by the partition that owns it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::batch::{BatchError, BatchHeader};
use crate::disk::DirHealth;
use crate::producer_state::{Origin, ProducerEntry, ProducerStateManager};
use crate::segment::{Assign, FileRegion, Found, ReadBounds, RolledRead, Segment};
use crate::validate::{ValidatedBatch, ValidatedRecords};
use crate::StorageError;

pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

/// Per-topic log settings (Kafka's topic config names in comments).
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`
    pub segment_bytes: usize,
    /// `segment.ms`
    pub segment_ms: i64,
    /// `segment.index.bytes`
    pub segment_index_bytes: usize,
    /// `index.interval.bytes`
    pub index_interval_bytes: usize,
    /// `retention.ms` (-1: forever)
    pub retention_ms: i64,
    /// `retention.bytes` (-1: unlimited)
    pub retention_bytes: i64,
    /// `max.message.bytes`: the largest batch accepted
    pub max_message_bytes: usize,
    /// `flush.messages`
    pub flush_messages: i64,
    /// `flush.ms`
    pub flush_ms: i64,
    /// `cleanup.policy` contains `delete`
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`
    pub cleanup_compact: bool,
    /// `message.timestamp.type` = LogAppendTime
    pub log_append_time: bool,
    /// `delete.retention.ms`: how long tombstones survive compaction
    pub delete_retention_ms: i64,
    /// `producer.id.expiration.ms` (broker-wide): idle producers are forgotten after it
    pub producer_id_expiration_ms: i64,
    /// `log.segment.map.window.bytes` and `log.segment.drop.behind.bytes` (broker-wide,
    /// kbroker's): how the active segment is mapped and what becomes of written pages
    pub map_window: crate::window::WindowConfig,
    /// `compression.type`: the codec stored batches are recompressed to; `None` for
    /// `producer` (kept as produced)
    pub compression: Option<i16>,
    /// `compression.gzip.level`, `compression.lz4.level`, `compression.zstd.level`
    pub gzip_level: i32,
    pub lz4_level: i32,
    pub zstd_level: i32,
    /// `message.timestamp.before.max.ms`, `message.timestamp.after.max.ms` and the
    /// deprecated `message.timestamp.difference.max.ms` (see [`LogConfig::timestamp_bounds`])
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub timestamp_difference_max_ms: i64,
    /// `min.cleanable.dirty.ratio`: the share of a compacted log's cleanable bytes that
    /// must be dirty (not yet cleaned) before the cleaner works on it
    pub min_cleanable_ratio: f64,
    /// `min.compaction.lag.ms`: segments holding a record younger than this stay uncleaned
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty record older than this gets its log cleaned
    /// whatever the dirty ratio, and the active segment rolls by then
    pub max_compaction_lag_ms: i64,
}

impl LogConfig {
    /// How long a segment may be active (Kafka's maxSegmentMs): `segment.ms`, or sooner
    /// for a compacted log when `max.compaction.lag.ms` is shorter.
    pub fn max_segment_ms(&self) -> i64 {
        if self.cleanup_compact && self.max_compaction_lag_ms > 0 {
            self.segment_ms.min(self.max_compaction_lag_ms)
        } else {
            self.segment_ms
        }
    }

    /// The level to recompress with for `codec` (None: the codec's default).
    pub fn compression_level(&self, codec: i16) -> Option<i32> {
        match codec {
            crate::compression::GZIP => Some(self.gzip_level).filter(|l| *l != -1),
            crate::compression::LZ4 => Some(self.lz4_level),
            crate::compression::ZSTD => Some(self.zstd_level),
            _ => None,
        }
    }

    /// How far behind and ahead of the broker's clock a CreateTime record's timestamp may
    /// be: `message.timestamp.before/after.max.ms`, each falling back to
    /// `message.timestamp.difference.max.ms` while it is at its default (Kafka 3.6+).
    pub fn timestamp_bounds(&self) -> (i64, i64) {
        let or_difference = |v: i64| {
            if v == i64::MAX {
                self.timestamp_difference_max_ms
            } else {
                v
            }
        };
        (
            or_difference(self.timestamp_before_max_ms),
            or_difference(self.timestamp_after_max_ms),
        )
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3_600_000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 3_600_000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            cleanup_delete: true,
            cleanup_compact: false,
            log_append_time: false,
            delete_retention_ms: 86_400_000,
            producer_id_expiration_ms: 86_400_000,
            map_window: crate::window::WindowConfig::default(),
            compression: None,
            gzip_level: -1,
            lz4_level: 9,
            zstd_level: 3,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            timestamp_difference_max_ms: i64::MAX,
            min_cleanable_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}

/// The cleaner's view of a log ([`Log::cleanable`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cleanable {
    /// Base of the first segment with records not yet compacted.
    pub first_dirty: i64,
    /// Base of the first segment that may not be compacted yet.
    pub end: i64,
    /// Dirty bytes / (clean + dirty bytes) of the segments before `end`.
    pub ratio: f64,
    /// Whether a pass would run now.
    pub due: bool,
}

/// One segment as a [`CleanJob`] found it.
struct SegmentSnapshot {
    base: i64,
    file: Arc<std::fs::File>,
    size: usize,
    max_timestamp: i64,
}

/// A compaction planned under the log's lock ([`Log::prepare_clean`]) that reads the
/// segments and writes their compacted bytes without it ([`CleanJob::run`]): rolled
/// segments below the high watermark are immutable but for truncation, deletion and the
/// cleaner itself, which [`Log::finish_clean`] checks for before installing anything.
pub struct CleanJob {
    dir: PathBuf,
    plan: Cleanable,
    now_ms: i64,
    delete_retention_ms: i64,
    /// Every segment before the plan's end, in order.
    segments: Vec<SegmentSnapshot>,
}

/// What became of one segment.
enum Rewrite {
    Unchanged,
    /// Nothing was left: the segment goes.
    Removed,
    /// Compacted to this many bytes, written to `<base>.log.cleaned`.
    Cleaned(usize),
}

/// A finished [`CleanJob`], for [`Log::finish_clean`].
pub struct CleanOutcome {
    job: CleanJob,
    rewrites: Vec<Rewrite>,
    tombstones_due_ms: i64,
}

impl CleanJob {
    /// Reads the segments (the dirty ones twice: keys, then the rewrite; one segment in
    /// memory at a time) and writes the compacted ones as `.cleaned` files, fsynced.
    pub fn run(self) -> Result<CleanOutcome, StorageError> {
        let mut rewrites: Vec<Rewrite> = Vec::with_capacity(self.segments.len());
        match self.rewrite_all(&mut rewrites) {
            Ok(tombstones_due_ms) => Ok(CleanOutcome {
                job: self,
                rewrites,
                tombstones_due_ms,
            }),
            Err(e) => {
                discard_cleaned_in(&self.dir, &self.segments, &rewrites);
                Err(e)
            }
        }
    }

    fn rewrite_all(&self, rewrites: &mut Vec<Rewrite>) -> Result<i64, StorageError> {
        let mut latest = std::collections::HashMap::new();
        for snap in self
            .segments
            .iter()
            .filter(|s| s.base >= self.plan.first_dirty)
        {
            crate::cleaner::index_keys(&read_whole(snap)?, &mut latest);
        }
        let mut tombstones_due_ms = i64::MAX;
        for snap in &self.segments {
            let bytes = read_whole(snap)?;
            let drop_tombstones = snap.max_timestamp < self.now_ms - self.delete_retention_ms;
            let (compacted, kept_tombstones) =
                crate::cleaner::compact_segment(&bytes, &latest, drop_tombstones);
            if kept_tombstones {
                tombstones_due_ms = tombstones_due_ms
                    .min(snap.max_timestamp.saturating_add(self.delete_retention_ms) + 1);
            }
            rewrites.push(match compacted {
                None => Rewrite::Unchanged,
                Some(new_bytes) if new_bytes.is_empty() => Rewrite::Removed,
                Some(new_bytes) => {
                    write_atomically(&cleaned_path(&self.dir, snap.base), &new_bytes)?;
                    crate::failpoint::hit("cleaner.after_write_cleaned");
                    Rewrite::Cleaned(new_bytes.len())
                }
            });
        }
        Ok(tombstones_due_ms)
    }
}

fn cleaned_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(crate::segment::file_name(base, "log"))
        .with_extension("log.cleaned")
}

/// A segment's bytes as the job found it (`pread` of the size it had then).
fn read_whole(snap: &SegmentSnapshot) -> Result<Vec<u8>, StorageError> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; snap.size];
    snap.file.read_exact_at(&mut buf, 0).map_err(|e| {
        StorageError::io(format!("reading segment {} for compaction", snap.base), e)
    })?;
    Ok(buf)
}

/// Removes the `.cleaned` files a job wrote and will not install.
fn discard_cleaned_in(dir: &Path, segments: &[SegmentSnapshot], rewrites: &[Rewrite]) {
    for (snap, rewrite) in segments.iter().zip(rewrites) {
        if matches!(rewrite, Rewrite::Cleaned(_)) {
            let _ = std::fs::remove_file(cleaned_path(dir, snap.base));
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time: i64,
    pub log_start_offset: i64,
    pub records: i64,
    pub bytes: usize,
    /// The batch was a producer's retry of a batch already in the log: nothing was written
    /// and the offsets (and the append time, Kafka's quirk) are the original's.
    pub duplicate: bool,
}

/// What a read found: at most one file region plus the log's offsets at read time.
#[derive(Debug, Clone)]
pub struct LogRead {
    pub region: Option<FileRegion>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// A read begun under the log's lock ([`Log::plan_read`]) and finished without it.
pub enum ReadPlan {
    /// Read already (in the active segment, or refused).
    Done(LogRead),
    /// In a rolled segment: its headers are read by [`ReadPlan::finish`].
    Rolled {
        offsets: LogRead,
        rolled: RolledRead,
    },
}

impl ReadPlan {
    /// The read's result. `read_again` is the whole read under the lock once more, for the
    /// rare read that must go on past the rolled segment (no batch there reaches the
    /// offset: compaction gaps).
    pub fn finish(
        self,
        read_again: impl FnOnce() -> Result<LogRead, StorageError>,
    ) -> Result<LogRead, StorageError> {
        match self {
            ReadPlan::Done(read) => Ok(read),
            ReadPlan::Rolled {
                mut offsets,
                rolled,
            } => match rolled.read()? {
                Found::Here(region) => {
                    offsets.region = region;
                    Ok(offsets)
                }
                Found::NotHere => read_again(),
            },
        }
    }
}

pub struct Log {
    dir: PathBuf,
    topic: String,
    partition: i32,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    recovery_point: i64,
    high_watermark: i64,
    leader_epochs: Vec<(i32, i64)>,
    unflushed_messages: i64,
    last_flush_ms: i64,
    /// Kafka's cleaner checkpoint: where the part not yet compacted starts (-1: the log
    /// start). Kept in memory: after a restart the whole log counts as dirty.
    first_dirty_offset: i64,
    /// When the earliest tombstone a compaction kept becomes removable (i64::MAX: none).
    tombstones_due_ms: i64,
    /// The log dir's health, shared with every log in the dir.
    dir_health: Arc<DirHealth>,
    /// True while writes fail (the failure is logged once, and the recovery once).
    writes_failing: bool,
    /// Idempotent producers' state, up to the log end.
    producers: ProducerStateManager,
    /// Offset of the newest snapshot written (no second one at the same offset).
    last_snapshot_offset: i64,
}

/// Parses `<topic>-<partition>` into its parts.
pub fn parse_dir_name(name: &str) -> Option<(String, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    let partition: i32 = partition.parse().ok()?;
    if topic.is_empty() || partition < 0 {
        return None;
    }
    Some((topic.to_string(), partition))
}

impl Log {
    /// Opens (or creates) the log in `dir`. `clean_shutdown` false triggers recovery from
    /// `recovery_point`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        dir: &Path,
        topic: &str,
        partition: i32,
        config: LogConfig,
        recovery_point: i64,
        log_start_offset: i64,
        clean_shutdown: bool,
        now_ms: i64,
    ) -> Result<Log, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::io(format!("creating {}", dir.display()), e))?;
        let mut log = Log {
            dir: dir.to_path_buf(),
            topic: topic.to_string(),
            partition,
            config,
            segments: BTreeMap::new(),
            log_start_offset: log_start_offset.max(0),
            recovery_point: 0,
            high_watermark: 0,
            leader_epochs: Vec::new(),
            unflushed_messages: 0,
            last_flush_ms: now_ms,
            first_dirty_offset: -1,
            tombstones_due_ms: i64::MAX,
            dir_health: Arc::new(DirHealth::new(dir.parent().unwrap_or(dir))),
            writes_failing: false,
            producers: ProducerStateManager::new(0),
            last_snapshot_offset: -1,
        };
        let bases = log.scan_segment_files()?;
        for base in &bases {
            let segment = Segment::open(dir, *base)?;
            log.segments.insert(*base, segment);
        }
        log.recover(recovery_point, clean_shutdown)?;
        if log.segments.is_empty() {
            let base = log.log_start_offset;
            let segment = Segment::create(
                dir,
                base,
                log.config.segment_bytes,
                log.config.segment_index_bytes,
                log.config.map_window,
            )?;
            log.segments.insert(base, segment);
        } else {
            let (cap, index_bytes, window) = (
                log.config.segment_bytes,
                log.config.segment_index_bytes,
                log.config.map_window,
            );
            log.active_mut().activate(cap, index_bytes, window)?;
        }
        let first_base = log.first_segment().base_offset;
        log.log_start_offset = log
            .log_start_offset
            .max(first_base)
            .min(log.log_end_offset());
        log.recovery_point = if clean_shutdown {
            log.log_end_offset()
        } else {
            recovery_point.min(log.log_end_offset())
        };
        log.high_watermark = log.log_start_offset;
        log.load_leader_epochs()?;
        log.load_producer_state(now_ms)?;
        Ok(log)
    }

    /// Lists the segment bases, finishing or undoing an interrupted cleaner swap first: a
    /// `.swap` is complete (it was fsynced before its rename), so it replaces its `.log` and
    /// the segment's indexes are rebuilt; a `.cleaned` may be partial and is deleted, as are
    /// `.deleted` and `.tmp` leftovers.
    fn scan_segment_files(&self) -> Result<Vec<i64>, StorageError> {
        let listing_error = |e| StorageError::io(format!("listing {}", self.dir.display()), e);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(listing_error)? {
            names.push(
                entry
                    .map_err(listing_error)?
                    .file_name()
                    .to_string_lossy()
                    .to_string(),
            );
        }
        let mut promoted = false;
        for name in names.iter().filter(|n| n.ends_with(".log.swap")) {
            let swap = self.dir.join(name);
            let log_path = swap.with_extension("");
            log::warn!(
                "completing an interrupted segment swap path={}",
                swap.display()
            );
            for ext in ["index", "timeindex"] {
                crate::index::remove_if_exists(&log_path.with_extension(ext))?;
            }
            std::fs::rename(&swap, &log_path)
                .map_err(|e| StorageError::io(format!("renaming {}", swap.display()), e))?;
            promoted = true;
        }
        if promoted {
            sync_dir(&self.dir)?;
        }
        let mut bases = Vec::new();
        for name in &names {
            if name.ends_with(".deleted") || name.ends_with(".cleaned") || name.ends_with(".tmp") {
                crate::index::remove_if_exists(&self.dir.join(name))?;
                continue;
            }
            let stem = name
                .strip_suffix(".log")
                .or_else(|| name.strip_suffix(".log.swap"));
            if let Some(stem) = stem {
                match stem.parse::<i64>() {
                    Ok(base) if stem.len() == 20 => {
                        if !bases.contains(&base) {
                            bases.push(base);
                        }
                    }
                    _ => log::warn!("ignoring stray file {}", self.dir.join(name).display()),
                }
            }
        }
        bases.sort_unstable();
        Ok(bases)
    }

    /// Validates segments from the recovery point (all of them after an unclean shutdown of
    /// an unknown recovery point) and fixes next offsets.
    fn recover(&mut self, recovery_point: i64, clean_shutdown: bool) -> Result<(), StorageError> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let (interval, index_bytes) = (
            self.config.index_interval_bytes,
            self.config.segment_index_bytes,
        );
        let recover_from = if clean_shutdown {
            i64::MAX
        } else {
            self.segments
                .range(..=recovery_point)
                .next_back()
                .map_or(i64::MIN, |(b, _)| *b)
        };
        let mut truncated_at: Option<usize> = None;
        for (i, base) in bases.iter().enumerate() {
            let is_last = i + 1 == bases.len();
            let segment = self.segments.get_mut(base).expect("listed segment exists");
            let needs_recovery = *base >= recover_from || !segment.indexes_sane();
            if needs_recovery {
                let truncated = segment.recover(interval, index_bytes)?;
                if !is_last {
                    // Write the roll entry and trim the rebuilt indexes, as a roll would.
                    if let Err(e) = segment.deactivate() {
                        log::warn!("after recovering {}: {e}", segment.path().display());
                    }
                }
                if truncated > 0 && !is_last {
                    truncated_at = Some(i);
                    break;
                }
            } else if is_last {
                if let Err(e) = segment.load_tail() {
                    log::warn!("{e}; recovering the segment");
                    segment.recover(interval, index_bytes)?;
                }
            }
            if let Some(next) = bases.get(i + 1) {
                let segment = self.segments.get_mut(base).expect("listed segment exists");
                if segment.next_offset() > *next {
                    return Err(StorageError::corrupt(
                        segment.path(),
                        "segment overlaps the next one",
                    ));
                }
                if !needs_recovery {
                    segment.set_next_offset(*next);
                }
            }
        }
        if let Some(i) = truncated_at {
            for base in &bases[i + 1..] {
                if let Some(s) = self.segments.remove(base) {
                    log::warn!(
                        "recovery deleting segment after a truncation path={}",
                        s.path().display()
                    );
                    s.delete()?;
                }
            }
        }
        // Drop empty non-last segments left by a crash during roll.
        while self.segments.len() > 1 {
            let Some((&base, first)) = self.segments.iter().next() else {
                break;
            };
            if !first.is_empty() {
                break;
            }
            if let Some(s) = self.segments.remove(&base) {
                s.delete()?;
            }
        }
        Ok(())
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
    pub fn partition(&self) -> i32 {
        self.partition
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size() as u64).sum()
    }
    /// Bytes of the active segment mapped now (its window, and the next one if prepared).
    pub fn mapped_bytes(&self) -> usize {
        self.active().mapped_bytes()
    }

    pub fn segment_bases(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }
    pub fn latest_epoch(&self) -> Option<i32> {
        self.leader_epochs.last().map(|(e, _)| *e)
    }
    /// Shares the health of the log dir this log lives in.
    pub fn set_dir_health(&mut self, health: Arc<DirHealth>) {
        self.dir_health = health;
    }
    pub fn is_offline(&self) -> bool {
        self.dir_health.is_offline()
    }
    /// False if some segment's indexes miss entries for lack of space.
    pub fn indexes_complete(&self) -> bool {
        self.segments.values().all(|s| s.indexes_complete())
    }

    /// `Offline` if the log's dir is offline.
    pub fn check_online(&self) -> Result<(), StorageError> {
        if self.dir_health.is_offline() {
            return Err(StorageError::Offline(format!(
                "log dir {}",
                self.dir_health.dir().display()
            )));
        }
        Ok(())
    }

    /// Notes the outcome of a write: a device failure takes the dir offline; other failures
    /// are logged once per episode, and so is the first success after them.
    fn note_write<T>(&mut self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        match &result {
            Err(e) if e.is_device_failure() => self.dir_health.mark_offline(e),
            Err(e @ StorageError::Io { .. }) => {
                if !self.writes_failing {
                    log::error!(
                        "writes to partition {}-{} fail: {e}; answering KAFKA_STORAGE_ERROR until they succeed",
                        self.topic,
                        self.partition
                    );
                }
                self.writes_failing = true;
            }
            Err(_) => {}
            Ok(_) if self.writes_failing => {
                log::info!(
                    "writes to partition {}-{} resumed",
                    self.topic,
                    self.partition
                );
                self.writes_failing = false;
            }
            Ok(_) => {}
        }
        result
    }

    /// Sets the high watermark, clamped to `[log_start_offset, log_end_offset]`.
    pub fn set_high_watermark(&mut self, hw: i64) {
        self.high_watermark = hw.clamp(self.log_start_offset, self.log_end_offset());
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }
    fn first_segment(&self) -> &Segment {
        self.segments
            .values()
            .next()
            .expect("a log always has a segment")
    }

    /// Appends validated records as leader: roll if needed, reserve space, assign offsets.
    pub fn append_as_leader(
        &mut self,
        records: &ValidatedRecords<'_>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.check_online()?;
        let bytes = records.bytes();
        if bytes.len() > self.config.segment_bytes {
            return Err(StorageError::RecordListTooLarge {
                size: bytes.len(),
                max: self.config.segment_bytes,
            });
        }
        // Producer checks before anything is written. A client append is one batch.
        for b in records.batches() {
            match self.producers.check_client_batch(&b.header) {
                Ok(None) => {}
                Ok(Some(original)) => {
                    return Ok(AppendInfo {
                        first_offset: original.first_offset(),
                        last_offset: original.last_offset,
                        log_append_time: original.timestamp,
                        log_start_offset: self.log_start_offset,
                        records: 0,
                        bytes: 0,
                        duplicate: true,
                    })
                }
                Err(e) => return Err(StorageError::Producer(e)),
            }
        }
        let appended = self.append_batches(bytes, records.batches(), leader_epoch, now_ms);
        self.note_write(appended)
    }

    /// Appends batches the broker built itself (offset commits, tests), validating them.
    pub fn append_internal(
        &mut self,
        bytes: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let validated = crate::validate::validate_internal_records(bytes)
            .map_err(StorageError::InvalidBatch)?;
        self.append_as_leader(&validated, leader_epoch, now_ms)
    }

    fn append_batches(
        &mut self,
        bytes: &[u8],
        batches: &[ValidatedBatch],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let offsets: i64 = batches
            .iter()
            .map(|b| b.header.last_offset_delta as i64 + 1)
            .sum();
        self.maybe_roll(bytes.len(), offsets, now_ms)?;
        self.active_mut().reserve(bytes.len(), batches.len())?;
        if self.latest_epoch().is_none_or(|e| leader_epoch > e) && leader_epoch >= 0 {
            let start = self.log_end_offset();
            self.assign_epoch(leader_epoch, start)?;
        }
        let first_offset = self.log_end_offset();
        let interval = self.config.index_interval_bytes;
        let log_append_time = self.config.log_append_time.then_some(now_ms);
        let assign = Assign {
            first_offset,
            leader_epoch,
            log_append_time,
        };
        let next = self
            .active_mut()
            .append(bytes, batches, Some(assign), interval, now_ms);
        let mut offset = first_offset;
        for b in batches {
            let last = offset + b.header.last_offset_delta as i64;
            let max_timestamp = log_append_time.unwrap_or(b.max_timestamp);
            self.producers
                .record(&b.header, offset, last, max_timestamp, Origin::Client);
            offset = last + 1;
        }
        assert_eq!(
            offset, next,
            "offsets assigned as the segment assigned them"
        );
        self.producers.set_map_end_offset(next);
        let count: i64 = batches.iter().map(|b| b.header.records_count as i64).sum();
        self.count_unflushed(count);
        Ok(AppendInfo {
            first_offset,
            last_offset: next - 1,
            log_append_time: log_append_time.unwrap_or(-1),
            log_start_offset: self.log_start_offset,
            records: count,
            bytes: bytes.len(),
            duplicate: false,
        })
    }

    /// Appends what a follower fetched from its leader, batch by batch, keeping the leader's
    /// offsets, epochs and timestamps; producer state and the leader-epoch cache follow the
    /// batches. The first batch must start at or after the log end offset.
    pub fn append_as_follower(
        &mut self,
        records: &ValidatedRecords<'_>,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.check_online()?;
        let first_offset = records
            .batches()
            .first()
            .map_or(self.log_end_offset(), |b| b.header.base_offset);
        if first_offset < self.log_end_offset() {
            return Err(StorageError::InvalidBatch(BatchError::Invalid(
                "a replicated batch starts below the log end offset",
            )));
        }
        let appended = self.append_replicated(records, now_ms);
        self.note_write(appended)
    }

    /// `log.flush.interval.messages`: flushes once that many records are unflushed. The
    /// records are appended and readable either way; a failed flush is retried later.
    fn count_unflushed(&mut self, records: i64) {
        self.unflushed_messages += records;
        if self.unflushed_messages >= self.config.flush_messages {
            if let Err(e) = self.flush() {
                log::error!(
                    "flush failed partition={}-{}: {e}",
                    self.topic,
                    self.partition
                );
            }
        }
    }

    fn append_replicated(
        &mut self,
        records: &ValidatedRecords<'_>,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let bytes = records.bytes();
        let first_offset = self.log_end_offset();
        let mut count = 0i64;
        for b in records.batches() {
            let size = b.header.total_size();
            let whole = &bytes[b.position..b.position + size];
            let one = ValidatedBatch { position: 0, ..*b };
            let offsets = b.header.next_offset() - self.log_end_offset();
            self.maybe_roll(size, offsets, now_ms)?;
            if self.active().is_empty() && self.active().base_offset < b.header.base_offset {
                // A new segment starts where its first batch does (compacted logs have gaps).
                self.rebase_empty_active(b.header.base_offset)?;
            }
            self.active_mut().reserve(size, 1)?;
            let epoch = b.header.partition_leader_epoch;
            if epoch >= 0 && self.latest_epoch().is_none_or(|e| epoch > e) {
                self.assign_epoch(epoch, b.header.base_offset)?;
            }
            let interval = self.config.index_interval_bytes;
            let next =
                self.active_mut()
                    .append(whole, std::slice::from_ref(&one), None, interval, now_ms);
            self.producers.record(
                &b.header,
                b.header.base_offset,
                next - 1,
                b.max_timestamp,
                Origin::Replication,
            );
            self.producers.set_map_end_offset(next);
            count += i64::from(b.header.records_count.max(0));
        }
        self.count_unflushed(count);
        Ok(AppendInfo {
            first_offset,
            last_offset: self.log_end_offset() - 1,
            log_append_time: -1,
            log_start_offset: self.log_start_offset,
            records: count,
            bytes: bytes.len(),
            duplicate: false,
        })
    }

    /// Replaces an empty active segment by one based at `base` (> its base).
    fn rebase_empty_active(&mut self, base: i64) -> Result<(), StorageError> {
        let old = self.active().base_offset;
        debug_assert!(self.active().is_empty() && base > old);
        if let Some(s) = self.segments.remove(&old) {
            s.delete()?;
        }
        let segment = Segment::create(
            &self.dir,
            base,
            self.config.segment_bytes,
            self.config.segment_index_bytes,
            self.config.map_window,
        )?;
        self.segments.insert(base, segment);
        Ok(())
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor`: the end offset of `epoch` in this log —
    /// the log end offset for the latest epoch, else the start offset of the first later
    /// epoch — and the largest epoch at or below `epoch`. `(-1, -1)` if `epoch` is later
    /// than any this log has.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        if epoch < 0 {
            return (-1, -1);
        }
        if self.latest_epoch() == Some(epoch) {
            return (epoch, self.log_end_offset());
        }
        let Some(&(_, higher_start)) = self.leader_epochs.iter().find(|(e, _)| *e > epoch) else {
            return (-1, -1);
        };
        match self.leader_epochs.iter().rev().find(|(e, _)| *e <= epoch) {
            Some(&(floor, _)) => (floor, higher_start),
            None => (epoch, higher_start),
        }
    }

    /// The first offset of `epoch` in this log, if it has that epoch.
    pub fn epoch_start(&self, epoch: i32) -> Option<i64> {
        self.leader_epochs
            .iter()
            .find(|(e, _)| *e == epoch)
            .map(|(_, start)| *start)
    }

    /// Starts the log leading a partition at `leader_epoch`: the epoch begins at the log end
    /// offset (Kafka assigns it when the leader is elected, before any append).
    pub fn begin_leader_epoch(&mut self, leader_epoch: i32) -> Result<(), StorageError> {
        if leader_epoch >= 0 && self.latest_epoch().is_none_or(|e| leader_epoch > e) {
            let start = self.log_end_offset();
            self.assign_epoch(leader_epoch, start)?;
        }
        Ok(())
    }

    /// Empties the log and restarts it at `offset` (a follower whose log ends before its
    /// leader's log start): every segment, epoch and producer goes.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), StorageError> {
        self.check_online()?;
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for base in bases {
            if let Some(s) = self.segments.remove(&base) {
                s.delete()?;
            }
        }
        for snapshot in self.producer_snapshots()? {
            self.delete_producer_snapshot(snapshot)?;
        }
        let segment = Segment::create(
            &self.dir,
            offset,
            self.config.segment_bytes,
            self.config.segment_index_bytes,
            self.config.map_window,
        )?;
        self.segments.insert(offset, segment);
        self.log_start_offset = offset;
        self.high_watermark = offset;
        self.recovery_point = offset;
        self.leader_epochs.clear();
        write_leader_epochs(&self.dir, &self.leader_epochs)?;
        self.last_snapshot_offset = offset;
        self.producers.reset(offset);
        log::info!(
            "truncated partition {}-{} fully; it starts at offset {offset}",
            self.topic,
            self.partition
        );
        Ok(())
    }

    /// Rolls before an append of `incoming` bytes holding `offsets` offsets when the active
    /// segment is full (bytes or index), too old, or its relative offsets would overflow.
    fn maybe_roll(
        &mut self,
        incoming: usize,
        offsets: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let active = self.active();
        let aged = active
            .first_append_ms()
            .is_some_and(|t| now_ms - t >= self.config.max_segment_ms());
        let last_relative = active.next_offset() + offsets - 1 - active.base_offset;
        let offsets_fit = last_relative <= i32::MAX as i64 || active.is_empty();
        if active.fits(incoming)
            && !active.index_full()
            && offsets_fit
            && (!aged || active.is_empty())
        {
            return Ok(());
        }
        if active.is_empty() {
            // An empty active segment that cannot hold the records: grow it rather than roll.
            let (cap, index_bytes, window) = (
                self.config.segment_bytes.max(incoming),
                self.config.segment_index_bytes,
                self.config.map_window,
            );
            let active = self.active_mut();
            active.deactivate()?;
            return active.activate(cap, index_bytes, window);
        }
        self.roll()
    }

    /// Closes the active segment and starts a new one at the log end offset.
    pub fn roll(&mut self) -> Result<(), StorageError> {
        let next = self.log_end_offset();
        self.active_mut().deactivate()?;
        let segment = Segment::create(
            &self.dir,
            next,
            self.config.segment_bytes,
            self.config.segment_index_bytes,
            self.config.map_window,
        )?;
        log::info!(
            "rolled log topic={} partition={} new_segment_base={}",
            self.topic,
            self.partition,
            next
        );
        self.segments.insert(next, segment);
        self.take_producer_snapshot();
        Ok(())
    }

    /// Reads whole batches from `offset`, below `max_offset`, at most `max_bytes` unless
    /// `min_one` lets the first batch exceed it.
    pub fn read(
        &self,
        offset: i64,
        max_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<LogRead, StorageError> {
        let bounds = self.checked_bounds(offset, max_offset, max_bytes, min_one)?;
        self.read_within(&bounds)
    }

    /// [`Log::read`] in two steps, so that the batch headers of a rolled segment are read
    /// after the caller releases the log's lock: this part (under the lock) checks the
    /// offset, takes the log's offsets and, when the offset is in a rolled segment, what
    /// [`ReadPlan::finish`] needs to read it from the shared file; a read in the active
    /// segment (in memory, from its map) is done at once.
    pub fn plan_read(
        &self,
        offset: i64,
        max_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadPlan, StorageError> {
        let bounds = self.checked_bounds(offset, max_offset, max_bytes, min_one)?;
        let floor = self.segments.range(..=offset).next_back().map(|(_, s)| s);
        match floor.and_then(|s| s.rolled_read(bounds)) {
            Some(rolled) => Ok(ReadPlan::Rolled {
                offsets: self.offsets_with(None),
                rolled,
            }),
            None => self.read_within(&bounds).map(ReadPlan::Done),
        }
    }

    /// The read's bounds, once the log is online and `offset` within it.
    fn checked_bounds(
        &self,
        offset: i64,
        max_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadBounds, StorageError> {
        self.check_online()?;
        self.offset_in_range(offset)?;
        Ok(ReadBounds {
            offset,
            max_offset,
            max_bytes,
            min_one,
        })
    }

    /// The read itself, under the lock (bounds already checked).
    fn read_within(&self, bounds: &ReadBounds) -> Result<LogRead, StorageError> {
        let floor = self
            .segments
            .range(..=bounds.offset)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        // On past a segment only if it has no batch reaching `offset` at all (compaction
        // gaps); a batch there that breaks a bound ends the read.
        for segment in self.segments.range(floor..).map(|(_, s)| s) {
            if let Found::Here(region) = segment.read(bounds)? {
                return Ok(self.offsets_with(region));
            }
        }
        Ok(self.offsets_with(None))
    }

    /// A read's answer: `region` with the log's offsets as they are now.
    fn offsets_with(&self, region: Option<FileRegion>) -> LogRead {
        LogRead {
            region,
            high_watermark: self.high_watermark,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset(),
        }
    }

    /// OffsetOutOfRange unless `offset` is within [log start, log end].
    fn offset_in_range(&self, offset: i64) -> Result<(), StorageError> {
        let log_end_offset = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        Ok(())
    }

    /// Batch bytes of a region, read into memory (internal readers and tests).
    pub fn read_region_bytes(&self, region: &FileRegion) -> Result<Vec<u8>, StorageError> {
        let segment = self
            .segments
            .values()
            .find(|s| std::ptr::eq(region_file(s), &*region.file))
            .ok_or_else(|| StorageError::corrupt(&self.dir, "region of a deleted segment"))?;
        segment.read_bytes(region.position as usize, region.len)
    }

    /// The first offset whose timestamp is >= `timestamp`, and that timestamp.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, StorageError> {
        for segment in self.segments.values() {
            if segment.max_timestamp() >= timestamp {
                if let Some(found) =
                    segment.find_offset_by_timestamp(timestamp, self.log_start_offset)?
                {
                    if found.0 < self.high_watermark {
                        return Ok(Some(found));
                    }
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// The topic id recorded in the partition's `partition.metadata` (Kafka 2.8+, KIP-516):
    /// `None` if there is no such file; a file that does not parse is an error.
    pub fn partition_metadata_topic_id(&self) -> Result<Option<String>, StorageError> {
        let path = self.dir.join(PARTITION_METADATA_FILE);
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io(format!("reading {}", path.display()), e)),
        };
        parse_partition_metadata(&String::from_utf8_lossy(&text))
            .map(|id| Some(id.to_string()))
            .ok_or_else(|| StorageError::corrupt(&path, "not version 0 with a topic_id"))
    }

    /// Writes `partition.metadata` naming `topic_id` (Kafka's text form), atomically.
    pub fn write_partition_metadata(&self, topic_id: &str) -> Result<(), StorageError> {
        let text = format!("version: 0\ntopic_id: {topic_id}");
        write_atomically(&self.dir.join(PARTITION_METADATA_FILE), text.as_bytes())?;
        sync_dir(&self.dir)
    }

    /// The offset and timestamp of the first record with the greatest timestamp in the log,
    /// if it is below the high watermark (ListOffsets MAX_TIMESTAMP, as Kafka 3.9 answers it:
    /// the first segment holding the maximum decides).
    pub fn max_timestamp_record(&self) -> Result<Option<(i64, i64)>, StorageError> {
        let mut best: Option<&Segment> = None;
        for segment in self.segments.values() {
            if best.is_none_or(|b| segment.max_timestamp() > b.max_timestamp()) {
                best = Some(segment);
            }
        }
        let Some(segment) = best else {
            return Ok(None);
        };
        Ok(segment.max_timestamp_record()?.filter(|(offset, _)| {
            *offset < self.high_watermark && *offset >= self.log_start_offset
        }))
    }

    /// Deletes segments past `retention.ms` / `retention.bytes`, wholly below the high
    /// watermark; never leaves the log without an active segment. Returns segments deleted.
    pub fn delete_expired_segments(&mut self, now_ms: i64) -> Result<usize, StorageError> {
        if !self.config.cleanup_delete || self.is_offline() {
            return Ok(0);
        }
        let mut deletable: Vec<i64> = Vec::new();
        let total: i64 = self.size_bytes() as i64;
        let mut excess = if self.config.retention_bytes >= 0 {
            total - self.config.retention_bytes
        } else {
            0
        };
        for (base, segment) in &self.segments {
            if segment.is_empty() || segment.next_offset() > self.high_watermark {
                break;
            }
            let expired_by_time = self.config.retention_ms >= 0
                && now_ms - segment.largest_timestamp() > self.config.retention_ms;
            let expired_by_size = excess >= segment.size() as i64;
            if !(expired_by_time || expired_by_size) {
                break;
            }
            if expired_by_size {
                excess -= segment.size() as i64;
            }
            deletable.push(*base);
        }
        if deletable.is_empty() {
            return Ok(0);
        }
        if deletable.len() == self.segments.len() {
            self.roll()?;
        }
        for base in &deletable {
            if let Some(segment) = self.segments.remove(base) {
                log::info!(
                    "retention deleting segment topic={} partition={} base_offset={} size={}",
                    self.topic,
                    self.partition,
                    base,
                    segment.size()
                );
                segment.delete()?;
                self.delete_producer_snapshot(*base)?;
            }
        }
        let first = self.first_segment().base_offset;
        self.log_start_offset = self.log_start_offset.max(first);
        self.high_watermark = self.high_watermark.max(self.log_start_offset);
        self.recovery_point = self.recovery_point.max(self.log_start_offset);
        Ok(deletable.len())
    }

    /// Advances the log start offset (DeleteRecords), deleting segments wholly below it.
    pub fn advance_log_start_offset(&mut self, offset: i64) -> Result<(), StorageError> {
        self.check_online()?;
        if offset <= self.log_start_offset {
            return Ok(());
        }
        if offset > self.high_watermark {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.high_watermark,
            });
        }
        self.log_start_offset = offset;
        while self.segments.len() > 1 {
            let mut iter = self.segments.keys();
            let (Some(&first), Some(&second)) = (iter.next(), iter.next()) else {
                break;
            };
            if second > offset {
                break;
            }
            if let Some(s) = self.segments.remove(&first) {
                s.delete()?;
                self.delete_producer_snapshot(first)?;
            }
        }
        Ok(())
    }

    /// Removes every record at or after `offset` (replication and tests).
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), StorageError> {
        self.check_online()?;
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let offset = offset.max(self.log_start_offset);
        let doomed: Vec<i64> = self.segments.range(offset + 1..).map(|(b, _)| *b).collect();
        let keep_any = self.segments.range(..=offset).next().is_some();
        for base in doomed {
            if keep_any || base != self.first_segment().base_offset {
                if let Some(s) = self.segments.remove(&base) {
                    s.delete()?;
                }
            }
        }
        if self.segments.is_empty() {
            let segment = Segment::create(
                &self.dir,
                offset,
                self.config.segment_bytes,
                self.config.segment_index_bytes,
                self.config.map_window,
            )?;
            self.segments.insert(offset, segment);
        }
        let needs_activation = !self.active().is_active();
        let (cap, index_bytes, window) = (
            self.config.segment_bytes,
            self.config.segment_index_bytes,
            self.config.map_window,
        );
        self.active_mut().truncate_to(offset)?;
        if needs_activation {
            self.active_mut().activate(cap, index_bytes, window)?;
        }
        self.high_watermark = self.high_watermark.min(self.log_end_offset());
        self.recovery_point = self.recovery_point.min(self.log_end_offset());
        // What comes after the truncation point will be new: dirty.
        self.first_dirty_offset = self.first_dirty_offset.min(offset);
        self.leader_epochs.retain(|(_, start)| *start < offset);
        write_leader_epochs(&self.dir, &self.leader_epochs)?;
        let end = self.log_end_offset();
        for snapshot in self.producer_snapshots()? {
            if snapshot > end {
                self.delete_producer_snapshot(snapshot)?;
            }
        }
        self.last_snapshot_offset = self.last_snapshot_offset.min(end);
        self.reload_producer_state(None, end)?;
        Ok(())
    }

    /// What the cleaner would do now (Kafka's LogCleanerManager rules): the cleanable range
    /// of segment bases `[first dirty segment, first uncleanable segment)`, whether the log
    /// is due, and the dirty ratio. The first uncleanable offset is the least of the high
    /// watermark (= last stable offset: no transactions), the active segment and the first
    /// dirty segment holding a record younger than `min.compaction.lag.ms`; cleaning stops
    /// at the segment holding it.
    pub fn cleanable(&self, now_ms: i64) -> Cleanable {
        let active_base = self.active().base_offset;
        let start = self.log_start_offset;
        let first_dirty = match self.first_dirty_offset {
            d if d < start || d > self.log_end_offset() => start,
            d => d,
        };
        let floor = |offset: i64| {
            self.segments
                .range(..=offset)
                .next_back()
                .map_or(offset, |(b, _)| *b)
        };
        let dirty_segments = || {
            self.segments
                .range(floor(first_dirty)..active_base)
                .map(|(_, s)| s)
        };
        let mut uncleanable = self.high_watermark.min(active_base);
        if self.config.min_compaction_lag_ms > 0 {
            let young = now_ms.saturating_sub(self.config.min_compaction_lag_ms);
            if let Some(s) = dirty_segments().find(|s| s.largest_timestamp() > young) {
                uncleanable = uncleanable.min(s.base_offset);
            }
        }
        let end = floor(uncleanable.max(first_dirty)).min(active_base);
        let begin = floor(first_dirty.min(end));
        let size = |range: std::ops::Range<i64>| -> u64 {
            self.segments
                .range(range)
                .map(|(_, s)| s.size() as u64)
                .sum()
        };
        let clean_bytes = size(i64::MIN..begin);
        let cleanable_bytes = if begin < end { size(begin..end) } else { 0 };
        let total = clean_bytes + cleanable_bytes;
        let ratio = if total == 0 {
            0.0
        } else {
            cleanable_bytes as f64 / total as f64
        };
        // KIP-354: a dirty segment whose first batch is older than the max lag forces a pass.
        let max_lag_passed = self.config.max_compaction_lag_ms != i64::MAX
            && dirty_segments().any(|s| {
                let first = s
                    .header_at(0)
                    .ok()
                    .flatten()
                    .map_or(-1, |h| h.max_timestamp);
                first > 0 && first < now_ms.saturating_sub(self.config.max_compaction_lag_ms)
            });
        let due = (max_lag_passed && cleanable_bytes > 0)
            || ratio > self.config.min_cleanable_ratio
            || (self.tombstones_due_ms <= now_ms && end > start);
        Cleanable {
            first_dirty: begin,
            end,
            ratio,
            due,
        }
    }

    /// Compacts the log if it is `compact` and due, all under the caller's borrow: the
    /// three steps of [`Log::prepare_clean`], [`CleanJob::run`] and [`Log::finish_clean`]
    /// (the broker runs the middle one without the log's lock). Returns the bytes removed.
    pub fn clean(&mut self, now_ms: i64) -> Result<usize, StorageError> {
        match self.prepare_clean(now_ms) {
            Some(job) => {
                let outcome = job.run()?;
                self.finish_clean(outcome)
            }
            None => Ok(0),
        }
    }

    /// The compaction to run now, if the log is `compact` and due (see
    /// [`Log::cleanable`]); cheap, so it can be called under the log's lock.
    pub fn prepare_clean(&self, now_ms: i64) -> Option<CleanJob> {
        if !self.config.cleanup_compact || self.is_offline() || self.segments.len() < 2 {
            return None;
        }
        let plan = self.cleanable(now_ms);
        if !plan.due {
            return None;
        }
        Some(CleanJob {
            dir: self.dir.clone(),
            plan,
            now_ms,
            delete_retention_ms: self.config.delete_retention_ms,
            segments: self
                .segments
                .range(..plan.end)
                .map(|(base, s)| SegmentSnapshot {
                    base: *base,
                    file: s.file_arc(),
                    size: s.size(),
                    max_timestamp: s.max_timestamp(),
                })
                .collect(),
        })
    }

    /// Installs what a [`CleanJob`] wrote, if every segment it read is still the one it
    /// read (same file, same size: not truncated, deleted or replaced meanwhile); otherwise
    /// its files are removed and nothing changes (the next pass plans again). Each segment
    /// is swapped crash-safely (see `install_cleaned`). Returns the bytes removed.
    pub fn finish_clean(&mut self, outcome: CleanOutcome) -> Result<usize, StorageError> {
        let CleanOutcome {
            job,
            rewrites,
            tombstones_due_ms,
        } = outcome;
        let unchanged = !self.is_offline()
            && job.segments.iter().all(|snap| {
                self.segments.get(&snap.base).is_some_and(|s| {
                    Arc::ptr_eq(&s.file_arc(), &snap.file)
                        && s.size() == snap.size
                        && !s.is_active()
                })
            });
        if !unchanged {
            log::debug!(
                "compaction of {}-{} dropped: the log changed while it ran",
                self.topic,
                self.partition
            );
            discard_cleaned_in(&job.dir, &job.segments, &rewrites);
            return Ok(0);
        }
        let mut removed = 0usize;
        for (i, rewrite) in rewrites.iter().enumerate() {
            let snap = &job.segments[i];
            match rewrite {
                Rewrite::Unchanged => {}
                Rewrite::Removed => {
                    removed += snap.size;
                    if let Some(old) = self.segments.remove(&snap.base) {
                        old.delete()?;
                    }
                }
                Rewrite::Cleaned(len) => {
                    removed += snap.size - len;
                    if let Err(e) = self.install_cleaned(snap.base) {
                        discard_cleaned_in(&job.dir, &job.segments[i + 1..], &rewrites[i + 1..]);
                        return Err(e);
                    }
                }
            }
        }
        self.first_dirty_offset = job.plan.end;
        self.tombstones_due_ms = tombstones_due_ms;
        if removed > 0 {
            log::info!(
                "compacted log topic={} partition={} removed_bytes={} segments={} \
                 dirty_ratio={:.3}",
                self.topic,
                self.partition,
                removed,
                self.segments.len(),
                job.plan.ratio
            );
        }
        Ok(removed)
    }

    /// Swaps a rolled segment's contents for its `.cleaned` file. Crash-safe at every step
    /// (each has a failpoint): the `.cleaned` file (written and fsynced by the job) is
    /// renamed to `.swap` (from here on the swap wins at recovery), the old indexes are
    /// deleted, the swap is renamed over the `.log` (atomic), and the indexes are rebuilt.
    /// A crash before the `.swap` exists leaves the old segment.
    fn install_cleaned(&mut self, base: i64) -> Result<(), StorageError> {
        let next = self
            .segments
            .range(base + 1..)
            .next()
            .map(|(b, _)| *b)
            .unwrap_or(base);
        let log_path = self.dir.join(crate::segment::file_name(base, "log"));
        let cleaned = log_path.with_extension("log.cleaned");
        let swap = log_path.with_extension("log.swap");
        std::fs::rename(&cleaned, &swap)
            .map_err(|e| StorageError::io(format!("renaming {}", cleaned.display()), e))?;
        sync_dir(&self.dir)?;
        crate::failpoint::hit("cleaner.after_rename_to_swap");
        let Some(old) = self.segments.remove(&base) else {
            return Ok(());
        };
        old.delete_indexes()?;
        crate::failpoint::hit("cleaner.after_delete_indexes");
        std::fs::rename(&swap, &log_path)
            .map_err(|e| StorageError::io(format!("renaming {}", swap.display()), e))?;
        sync_dir(&self.dir)?;
        crate::failpoint::hit("cleaner.after_replace_log");
        let mut segment = Segment::open(&self.dir, base)?;
        segment.recover(
            self.config.index_interval_bytes,
            self.config.segment_index_bytes,
        )?;
        segment.deactivate()?;
        segment.set_next_offset(next.max(segment.next_offset()));
        self.segments.insert(base, segment);
        Ok(())
    }

    /// Flushes rolled segments that are not yet on disk and advances the recovery point to
    /// the active segment's base. Cheap when there is nothing to do.
    pub fn flush_rolled(&mut self) -> Result<(), StorageError> {
        let active_base = self.active().base_offset;
        for segment in self.segments.values_mut() {
            if segment.base_offset != active_base && !segment.is_flushed() {
                segment.flush()?;
            }
        }
        self.recovery_point = self.recovery_point.max(active_base);
        Ok(())
    }

    /// Flushes everything; the recovery point becomes the log end offset.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        for segment in self.segments.values_mut() {
            if !segment.is_flushed() {
                segment.flush()?;
            }
        }
        self.recovery_point = self.log_end_offset();
        self.unflushed_messages = 0;
        Ok(())
    }

    /// Flushes if `flush.ms` has elapsed since the last flush.
    pub fn maybe_flush_by_time(&mut self, now_ms: i64) -> Result<(), StorageError> {
        if self.config.flush_ms != i64::MAX && now_ms - self.last_flush_ms >= self.config.flush_ms {
            self.last_flush_ms = now_ms;
            self.flush()?;
        }
        Ok(())
    }

    /// Clean shutdown: flush, unmap and trim the active segment.
    pub fn close(&mut self) -> Result<(), StorageError> {
        self.flush()?;
        self.take_producer_snapshot();
        self.active_mut().deactivate()
    }

    /// Deletes the log's directory (topic deletion).
    pub fn delete(self) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        drop(self);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(format!("deleting {}", dir.display()), e)),
        }
    }

    /// Records that `epoch` starts at `start_offset`; memory changes only once the
    /// checkpoint is written.
    fn assign_epoch(&mut self, epoch: i32, start_offset: i64) -> Result<(), StorageError> {
        let mut epochs = self.leader_epochs.clone();
        epochs.retain(|(e, s)| *e < epoch && *s < start_offset);
        epochs.push((epoch, start_offset));
        write_leader_epochs(&self.dir, &epochs)?;
        self.leader_epochs = epochs;
        Ok(())
    }

    /// Idempotent producers this partition knows (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerEntry> {
        self.producers.producers()
    }

    /// The state of one producer (tests, diagnostics).
    pub fn producer(&self, producer_id: i64) -> Option<ProducerEntry> {
        self.producers.get(producer_id).cloned()
    }

    /// Forgets producers idle for `producer.id.expiration.ms`; returns how many.
    pub fn remove_expired_producers(&mut self, now_ms: i64) -> usize {
        let removed = self
            .producers
            .remove_expired(now_ms, self.config.producer_id_expiration_ms);
        if removed > 0 {
            log::info!(
                "expired producers topic={} partition={} removed={removed} remaining={}",
                self.topic,
                self.partition,
                self.producers.len()
            );
        }
        removed
    }

    fn producer_snapshot_path(&self, offset: i64) -> PathBuf {
        self.dir.join(crate::segment::file_name(
            offset,
            PRODUCER_SNAPSHOT_EXTENSION,
        ))
    }

    /// Offsets of the producer snapshots in the partition dir, ascending.
    fn producer_snapshots(&self) -> Result<Vec<i64>, StorageError> {
        let listing = |e| StorageError::io(format!("listing {}", self.dir.display()), e);
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(listing)? {
            let name = entry
                .map_err(listing)?
                .file_name()
                .to_string_lossy()
                .to_string();
            let Some(stem) = name.strip_suffix(".snapshot") else {
                continue;
            };
            if let (20, Ok(offset)) = (stem.len(), stem.parse::<i64>()) {
                out.push(offset);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn delete_producer_snapshot(&self, offset: i64) -> Result<(), StorageError> {
        crate::index::remove_if_exists(&self.producer_snapshot_path(offset))
    }

    /// Writes the producer state at the log end (once per offset). A failure only makes a
    /// later rebuild read more of the log: it is logged, not returned.
    fn take_producer_snapshot(&mut self) {
        let end = self.log_end_offset();
        if self.producers.map_end_offset() != end || self.last_snapshot_offset == end {
            return;
        }
        let path = self.producer_snapshot_path(end);
        match write_atomically(&path, &self.producers.encode_snapshot()) {
            Ok(()) => self.last_snapshot_offset = end,
            Err(e) => log::warn!("producer snapshot not written: {e}"),
        }
    }

    /// At open: drops snapshots that belong to no segment (except the newest, taken at the
    /// log end by a clean close), then rebuilds the state up to the log end.
    fn load_producer_state(&mut self, now_ms: i64) -> Result<(), StorageError> {
        let bases = self.segment_bases();
        let last_base = bases.last().copied().unwrap_or(0);
        let snapshots = self.producer_snapshots()?;
        let newest = snapshots.last().copied();
        for s in snapshots {
            let keep = bases.contains(&s) || (Some(s) == newest && s >= last_base);
            if !keep {
                self.delete_producer_snapshot(s)?;
            }
        }
        let end = self.log_end_offset();
        self.reload_producer_state(Some(now_ms), end)
    }

    /// Rebuilds the producer state up to `end`: the newest readable snapshot at or below it
    /// (producers expired at `now_ms` left out), then every batch header after it, as the
    /// log holds them. A damaged snapshot is deleted and the next older one tried.
    fn reload_producer_state(&mut self, now_ms: Option<i64>, end: i64) -> Result<(), StorageError> {
        let expiration_ms = self.config.producer_id_expiration_ms;
        self.producers = ProducerStateManager::new(self.log_start_offset);
        for s in self.producer_snapshots()?.into_iter().rev() {
            if s > end {
                continue;
            }
            let path = self.producer_snapshot_path(s);
            let loaded = crate::checkpoint::read_bounded(&path, PRODUCER_SNAPSHOT_BYTES_MAX)
                .map_err(|_| "unreadable")
                .and_then(|bytes| {
                    ProducerStateManager::from_snapshot(
                        &bytes,
                        s,
                        now_ms.unwrap_or(i64::MIN),
                        expiration_ms,
                    )
                });
            match loaded {
                Ok(state) => {
                    self.producers = state;
                    break;
                }
                Err(why) => {
                    log::warn!("deleting producer snapshot {}: {why}", path.display());
                    self.delete_producer_snapshot(s)?;
                }
            }
        }
        let from = self.producers.map_end_offset().max(self.log_start_offset);
        let producers = &mut self.producers;
        for segment in self.segments.values() {
            if segment.next_offset() <= from || segment.base_offset >= end {
                continue;
            }
            segment.for_each_header_from(from, |h: &BatchHeader| {
                if h.base_offset >= end {
                    return false;
                }
                if h.last_offset() >= from {
                    producers.record(
                        h,
                        h.base_offset,
                        h.last_offset(),
                        h.max_timestamp,
                        Origin::Replication,
                    );
                }
                true
            })?;
        }
        self.producers.set_map_end_offset(end);
        Ok(())
    }

    /// Loads `leader-epoch-checkpoint`. A damaged file is not fatal: the epochs are a cache
    /// (Kafka rebuilds them too); it is logged and the log starts with none.
    fn load_leader_epochs(&mut self) -> Result<(), StorageError> {
        let path = self.dir.join(LEADER_EPOCH_CHECKPOINT);
        let bytes = match crate::checkpoint::read_bounded(&path, LEADER_EPOCH_CHECKPOINT_BYTES_MAX)
        {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::io(format!("reading {}", path.display()), e)),
        };
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|_| "not UTF-8")
            .and_then(parse_leader_epochs);
        match parsed {
            Ok(epochs) => {
                let end = self.log_end_offset();
                self.leader_epochs = epochs.into_iter().filter(|(_, s)| *s <= end).collect();
            }
            Err(why) => log::warn!("ignoring {}: {why}", path.display()),
        }
        Ok(())
    }
}

/// `<20-digit offset>.snapshot`: producer state below that offset.
pub const PRODUCER_SNAPSHOT_EXTENSION: &str = "snapshot";
/// Largest producer snapshot read.
const PRODUCER_SNAPSHOT_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// Largest `leader-epoch-checkpoint` read.
const LEADER_EPOCH_CHECKPOINT_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Parses `leader-epoch-checkpoint` text (`0\n<count>\n<epoch> <start offset>\n...`);
/// epochs must increase and start offsets must not decrease.
pub fn parse_leader_epochs(text: &str) -> Result<Vec<(i32, i64)>, &'static str> {
    let mut lines = text.lines();
    let (Some("0"), Some(count)) = (lines.next(), lines.next()) else {
        return Err("bad header");
    };
    let count: usize = count.trim().parse().map_err(|_| "bad count")?;
    let mut epochs: Vec<(i32, i64)> = Vec::with_capacity(count.min(1024));
    for line in lines.by_ref().take(count) {
        let mut parts = line.split_whitespace();
        let (Some(Ok(epoch)), Some(Ok(start)), None) = (
            parts.next().map(str::parse::<i32>),
            parts.next().map(str::parse::<i64>),
            parts.next(),
        ) else {
            return Err("bad entry");
        };
        if epoch < 0 || start < 0 {
            return Err("negative epoch or offset");
        }
        if epochs
            .last()
            .is_some_and(|(e, s)| epoch <= *e || start < *s)
        {
            return Err("epochs out of order");
        }
        epochs.push((epoch, start));
    }
    if epochs.len() != count {
        return Err("fewer entries than its count");
    }
    Ok(epochs)
}

fn write_leader_epochs(dir: &Path, epochs: &[(i32, i64)]) -> Result<(), StorageError> {
    let mut text = format!("0\n{}\n", epochs.len());
    for (epoch, start) in epochs {
        text.push_str(&format!("{epoch} {start}\n"));
    }
    write_atomically(&dir.join(LEADER_EPOCH_CHECKPOINT), text.as_bytes())
}

fn region_file(segment: &Segment) -> &std::fs::File {
    segment.file_ref()
}

/// Makes renames and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(format!("syncing directory {}", dir.display()), e))
}

/// Writes `bytes` to `path` through a temp file, fsync and rename.
/// Kafka's per-partition file naming the partition's topic id.
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// The topic id of a `partition.metadata` text (`version: 0` and `topic_id: <id>` lines).
pub fn parse_partition_metadata(text: &str) -> Option<&str> {
    let mut version = None;
    let mut topic_id = None;
    for line in text.lines() {
        let (k, v) = line.split_once(':')?;
        match k.trim() {
            "version" => version = Some(v.trim()),
            "topic_id" => topic_id = Some(v.trim()),
            _ => return None,
        }
    }
    topic_id.filter(|id| version == Some("0") && !id.is_empty())
}

pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let tmp = path.with_extension("tmp");
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut file = std::fs::File::create(&tmp).map_err(|e| StorageError::io(ctx("creating"), e))?;
    file.write_all(bytes)
        .map_err(|e| StorageError::io(ctx("writing"), e))?;
    file.sync_all()
        .map_err(|e| StorageError::io(ctx("syncing"), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| StorageError::io(format!("renaming to {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_metadata_is_read_as_kafka_writes_it() {
        use super::parse_partition_metadata as parse;
        assert_eq!(
            parse("version: 0\ntopic_id: Jp5Lq3ZfQCWFB2-e3lHvfw"),
            Some("Jp5Lq3ZfQCWFB2-e3lHvfw")
        );
        assert_eq!(parse("version: 0\ntopic_id: abc\n"), Some("abc"));
        assert_eq!(parse("version: 1\ntopic_id: abc"), None);
        assert_eq!(parse("version: 0"), None);
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse("version: 0\ntopic_id: abc\nextra: 1"), None);
    }
}

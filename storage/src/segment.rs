//! One log segment: `<base offset>.log` plus its `.index` and `.timeindex`.
//!
//! The active segment's `.log` is preallocated to `segment.bytes` by setting its length
//! (sparse) and written through a sliding memory-mapped window of it (`window.rs`, mapped
//! ahead of the writer by the prefault thread); blocks are reserved with `fallocate` in
//! chunks just ahead of the writer ([`Segment::reserve`], before any byte is copied), so a
//! full disk is an error and never a SIGBUS. Appends copy the producer's batches into the
//! map and patch their base offset and leader epoch in place (and the max timestamp, with
//! the CRC, only where the header's claim is wrong or the topic uses LogAppendTime). The
//! page cache is shared between the map and the file descriptor, so readers `sendfile`
//! straight from the fd. On roll and on clean shutdown the map is dropped and the file
//! trimmed to its valid length. After a crash the tail may hold zeros (preallocation) or a
//! torn batch: `recover` rescans, validates every batch (length, magic, CRC32C, increasing
//! offsets), truncates at the first invalid byte and rebuilds both indexes. Owned by one
//! `Log`, behind its mutex.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use crate::window::{ActiveMap, WindowConfig};

use crate::batch::{self, BatchHeader, BATCH_HEADER_BYTES};
use crate::index::{remove_if_exists, OffsetIndex, TimeIndex};
use crate::validate::{self, ValidatedBatch};
use crate::StorageError;

/// Bytes of segment blocks reserved at a time ahead of the writer.
pub const RESERVE_CHUNK_BYTES: usize = 1024 * 1024;

/// A byte range of a segment file, sent to a socket with `sendfile`.
#[derive(Debug, Clone)]
pub struct FileRegion {
    pub file: Arc<File>,
    pub position: u64,
    pub len: usize,
}

/// `00000000000000000042.log` for base offset 42.
pub fn file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// How a leader stamps the batches it appends.
#[derive(Debug, Clone, Copy)]
pub struct Assign {
    pub first_offset: i64,
    pub leader_epoch: i32,
    pub log_append_time: Option<i64>,
}

pub struct Segment {
    pub base_offset: i64,
    log_path: Arc<Path>,
    file: Arc<File>,
    /// The mapped window of the active segment (None once rolled: read with `pread`).
    map: Option<ActiveMap>,
    /// Set by the drop-behind thread when writing back this file's pages failed: the
    /// error it took from the file is given to the next flush instead (see `window.rs`).
    writeback_error: Arc<AtomicI32>,
    size: usize,
    next_offset: i64,
    index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index_entry: usize,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    /// Wall time of the first append, for `segment.ms` rolls.
    first_append_ms: Option<i64>,
    /// True once flushed to disk since its last append.
    flushed: bool,
    /// Bytes from the start of the file known to have disk blocks.
    reserved: usize,
    /// Set when recovery or a roll could not write every index entry for lack of space:
    /// the indexes still answer correctly, but the next start must rebuild them.
    indexes_partial: bool,
}

fn open_file(path: &Path, create_new: bool) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create_new)
        .truncate(create_new)
        .open(path)
        .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))
}

impl Segment {
    /// Creates a new, empty, active segment.
    pub fn create(
        dir: &Path,
        base_offset: i64,
        capacity: usize,
        index_bytes: usize,
        window: WindowConfig,
    ) -> Result<Segment, StorageError> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let file = open_file(&log_path, true)?;
        for ext in ["index", "timeindex"] {
            remove_if_exists(&dir.join(file_name(base_offset, ext)))?;
        }
        let mut segment = Segment::from_parts(dir, base_offset, log_path, file, 0, 0)?;
        segment.activate(capacity, index_bytes, window)?;
        Ok(segment)
    }

    /// Opens an existing segment, inactive; `size` is the file length until `recover` or
    /// `load_tail` says otherwise.
    pub fn open(dir: &Path, base_offset: i64) -> Result<Segment, StorageError> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let file = open_file(&log_path, false)?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io(format!("stat {}", log_path.display()), e))?
            .len();
        let size =
            usize::try_from(len).map_err(|_| StorageError::corrupt(&log_path, "file too large"))?;
        let indexes_exist = ["index", "timeindex"]
            .iter()
            .all(|ext| dir.join(file_name(base_offset, ext)).exists());
        let mut segment = Segment::from_parts(dir, base_offset, log_path, file, size, 0)?;
        // Missing indexes (a crash during a cleaner swap) must be rebuilt, not trusted empty.
        segment.indexes_partial = !indexes_exist && size > 0;
        if let Some((ts, offset)) = segment.time_index.last() {
            segment.max_timestamp = ts;
            segment.offset_of_max_timestamp = offset;
        }
        segment.flushed = true;
        Ok(segment)
    }

    fn from_parts(
        dir: &Path,
        base_offset: i64,
        log_path: PathBuf,
        file: File,
        size: usize,
        index_bytes: usize,
    ) -> Result<Segment, StorageError> {
        let index = OffsetIndex::open(
            &dir.join(file_name(base_offset, "index")),
            base_offset,
            index_bytes,
        )?;
        let time_index = TimeIndex::open(
            &dir.join(file_name(base_offset, "timeindex")),
            base_offset,
            index_bytes,
        )?;
        Ok(Segment {
            base_offset,
            log_path: log_path.into(),
            file: Arc::new(file),
            map: None,
            writeback_error: Arc::new(AtomicI32::new(0)),
            size,
            next_offset: base_offset,
            index,
            time_index,
            bytes_since_index_entry: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            first_append_ms: None,
            flushed: false,
            reserved: 0,
            indexes_partial: false,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn is_active(&self) -> bool {
        self.map.is_some()
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    /// The segment's newest timestamp for retention: its max record timestamp, or the file's
    /// modification time when it has none (Kafka's `largestTimestamp`).
    pub fn largest_timestamp(&self) -> i64 {
        if self.max_timestamp >= 0 {
            return self.max_timestamp;
        }
        self.file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(-1, |d| d.as_millis() as i64)
    }
    pub fn first_append_ms(&self) -> Option<i64> {
        self.first_append_ms
    }
    pub fn is_flushed(&self) -> bool {
        self.flushed && self.writeback_error.load(Ordering::Acquire) == 0
    }
    pub fn path(&self) -> &Path {
        &self.log_path
    }
    /// The segment's file, shared (the cleaner reads a rolled segment without the log's
    /// lock; the same `Arc` later proves the segment was not replaced meanwhile).
    pub(crate) fn file_arc(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }
    pub fn file_ref(&self) -> &File {
        &self.file
    }
    pub fn index_full(&self) -> bool {
        self.index.is_full() || self.time_index.is_full()
    }
    /// Bytes mapped for appends now (0 once rolled).
    pub fn mapped_bytes(&self) -> usize {
        self.map.as_ref().map_or(0, ActiveMap::mapped_bytes)
    }
    pub fn capacity(&self) -> usize {
        self.map.as_ref().map_or(self.size, ActiveMap::capacity)
    }
    /// True if `offset` is expressible relative to this segment's base (as Kafka's indexes
    /// store it: a non-negative 32-bit delta).
    pub fn holds_offset(&self, offset: i64) -> bool {
        (0..=i32::MAX as i64).contains(&(offset - self.base_offset))
    }

    /// False if an index is missing entries for lack of space (rebuilt at the next start).
    pub fn indexes_complete(&self) -> bool {
        !self.indexes_partial
    }
    /// Sets the next offset of a non-last segment (the next segment's base).
    pub fn set_next_offset(&mut self, next: i64) {
        assert!(next >= self.base_offset);
        self.next_offset = next;
    }

    /// Grows the file to `capacity` (sparse) and makes it appendable through a mapped
    /// window (see `window.rs`).
    pub fn activate(
        &mut self,
        capacity: usize,
        index_bytes: usize,
        window: WindowConfig,
    ) -> Result<(), StorageError> {
        assert!(self.map.is_none());
        let capacity = capacity.max(self.size);
        self.file.set_len(capacity as u64).map_err(|e| {
            StorageError::io(format!("preallocating {}", self.log_path.display()), e)
        })?;
        self.map = Some(ActiveMap::new(
            Arc::clone(&self.file),
            capacity,
            window,
            Arc::clone(&self.writeback_error),
        ));
        self.reserved = self.size;
        self.index.resize(index_bytes)?;
        self.time_index.resize(index_bytes)?;
        Ok(())
    }

    /// Reserves disk blocks for `bytes` more log bytes and index entries for `batches` more
    /// batches (plus the time index entry written on roll). Nothing is written.
    pub fn reserve(&mut self, bytes: usize, batches: usize) -> Result<(), StorageError> {
        let before = self.reserved;
        self.reserved = crate::disk::reserve_ahead(
            &self.file,
            &self.log_path,
            self.reserved,
            self.size + bytes,
            RESERVE_CHUNK_BYTES,
            self.capacity(),
        )?;
        if self.reserved == before && bytes > 0 {
            // Already reserved, but one fallocate over the exact range anyway (~1 µs): a no-op
            // for the blocks, it fails on a file system that went read-only or failed, before
            // anything is copied into the map (stores to a map would not notice).
            crate::disk::reserve_blocks(&self.file, self.size as u64, bytes as u64).map_err(
                |e| {
                    StorageError::io(
                        format!("reserving space for {}", self.log_path.display()),
                        e,
                    )
                },
            )?;
        }
        if let Some(map) = self.map.as_mut() {
            if self.size + bytes <= map.capacity() {
                map.make_writable(self.size, self.size + bytes)
                    .map_err(|e| {
                        StorageError::io(format!("mapping {}", self.log_path.display()), e)
                    })?;
            }
        }
        self.index.reserve(batches)?;
        self.time_index.reserve(batches + 1)
    }

    /// Drops the map and trims the file and indexes to their valid length. Every step is
    /// tried; the first error is returned.
    pub fn deactivate(&mut self) -> Result<(), StorageError> {
        let mut first_error = None;
        // Unmapped before the file is trimmed (the written pages stay in the page cache).
        drop(self.map.take());
        if self.max_timestamp >= 0 && self.time_index.has_slot() {
            if self.time_index.make_room_for_final() {
                self.time_index
                    .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
            } else {
                log::warn!(
                    "no space for the last time index entry of {}; rebuilt at next start",
                    self.log_path.display()
                );
                self.indexes_partial = true;
            }
        }
        if let Err(e) = self.file.set_len(self.size as u64) {
            first_error.get_or_insert(StorageError::io(
                format!("trimming {}", self.log_path.display()),
                e,
            ));
        }
        self.reserved = self.reserved.min(self.size);
        for trimmed in [self.index.trim(), self.time_index.trim()] {
            if let Err(e) = trimmed {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// True if `bytes` more fit in the mapped capacity.
    pub fn fits(&self, bytes: usize) -> bool {
        self.map
            .as_ref()
            .is_some_and(|m| self.size + bytes <= m.capacity())
    }

    /// Appends validated batches (positions relative to `records`). As leader (`assign`
    /// given) their offsets are assigned from `first_offset`, their leader epoch set, and
    /// with `log_append_time` they are stamped with the broker's time; as a follower (None)
    /// they are stored exactly as the leader wrote them. The caller has checked
    /// [`Segment::fits`] and called [`Segment::reserve`]. Returns the next offset.
    pub fn append(
        &mut self,
        records: &[u8],
        batches: &[ValidatedBatch],
        assign: Option<Assign>,
        index_interval_bytes: usize,
        now_ms: i64,
    ) -> i64 {
        assert!(
            self.fits(records.len()),
            "append must be preceded by a roll check"
        );
        assert!(
            self.size + records.len() <= self.reserved,
            "append must be preceded by a reservation"
        );
        let first = assign.map_or_else(
            || {
                batches
                    .first()
                    .map_or(self.next_offset, |b| b.header.base_offset)
            },
            |a| a.first_offset,
        );
        assert!(first >= self.next_offset, "offsets only grow");
        let start = self.size;
        let map = self.map.as_mut().expect("active segment is mapped");
        let window = map.slice_mut(start, start + records.len());
        window.copy_from_slice(records);
        let mut offset = first;
        for b in batches {
            let at = start + b.position;
            let header = &b.header;
            let bytes = &mut window[b.position..b.position + header.total_size()];
            let max_timestamp = match assign {
                Some(a) => {
                    batch::patch_base_offset(bytes, offset);
                    batch::patch_leader_epoch(bytes, a.leader_epoch);
                    match a.log_append_time {
                        Some(t) => {
                            batch::patch_max_timestamp(bytes, t, true);
                            t
                        }
                        None => {
                            if b.max_timestamp != header.max_timestamp {
                                batch::patch_max_timestamp(bytes, b.max_timestamp, false);
                            }
                            b.max_timestamp
                        }
                    }
                }
                None => {
                    assert!(header.base_offset >= offset, "replicated offsets only grow");
                    offset = header.base_offset;
                    b.max_timestamp
                }
            };
            let last = offset + header.last_offset_delta as i64;
            if max_timestamp > self.max_timestamp {
                self.max_timestamp = max_timestamp;
                self.offset_of_max_timestamp = last;
            }
            // Kafka's rule: an entry once more than index.interval.bytes were appended since
            // the last, naming the batch's last offset and where the batch starts.
            if self.bytes_since_index_entry > index_interval_bytes && self.index.can_append() {
                self.index.append(last, at as u32);
                if self.time_index.can_append() {
                    self.time_index
                        .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
                }
                self.bytes_since_index_entry = 0;
            }
            self.bytes_since_index_entry += header.total_size();
            offset = last + 1;
        }
        self.size += records.len();
        map.wrote_up_to(self.size);
        self.next_offset = offset;
        self.first_append_ms.get_or_insert(now_ms);
        self.flushed = false;
        offset
    }

    /// Reads up to `buf.len()` bytes at `position` (from the map when active).
    fn read_at(&self, position: usize, buf: &mut [u8]) -> Result<usize, StorageError> {
        if position >= self.size {
            return Ok(0);
        }
        let n = buf.len().min(self.size - position);
        match self
            .map
            .as_ref()
            .and_then(|m| m.slice(position, position + n))
        {
            Some(mapped) => {
                buf[..n].copy_from_slice(mapped);
                Ok(n)
            }
            None => pread_full(&self.file, &self.log_path, position, &mut buf[..n]),
        }
    }

    /// The header of the batch at `position`, if a whole valid-looking one is there.
    pub fn header_at(&self, position: usize) -> Result<Option<BatchHeader>, StorageError> {
        let mut buf = [0u8; BATCH_HEADER_BYTES];
        let n = self.read_at(position, &mut buf)?;
        Ok(whole_header(&buf[..n], position, self.size))
    }

    /// Position and header of the first batch whose last offset is >= `offset`.
    pub fn find_batch(&self, offset: i64) -> Result<Option<(usize, BatchHeader)>, StorageError> {
        let (_, start) = self.index.lookup(offset);
        batch_reaching(|p| self.header_at(p), start as usize, offset)
    }

    /// Calls `f` with the header of every batch from the one holding `offset` to the end of
    /// the segment, until `f` answers false.
    pub fn for_each_header_from(
        &self,
        offset: i64,
        mut f: impl FnMut(&BatchHeader) -> bool,
    ) -> Result<(), StorageError> {
        let Some((mut position, _)) = self.find_batch(offset)? else {
            return Ok(());
        };
        while let Some(h) = self.header_at(position)? {
            if !f(&h) {
                break;
            }
            position += h.total_size();
        }
        Ok(())
    }

    /// What a read of this segment needs once the log's lock is released, if the segment
    /// is rolled (immutable: only the active one is appended to); None for the active one,
    /// which is read in place from its map. The index is consulted now; the batch headers
    /// are read later, by [`RolledRead::read`], from the file alone. The skip-ahead bound is
    /// taken from where the index starts the walk (at or before the batch holding the
    /// offset), so it never lands past what `max_bytes` allows from that batch.
    pub fn rolled_read(&self, bounds: ReadBounds) -> Option<RolledRead> {
        if self.is_active() {
            return None;
        }
        let (_, from) = self.index.lookup(bounds.offset);
        let limit = from.saturating_add(u32::try_from(bounds.max_bytes).unwrap_or(u32::MAX));
        Some(RolledRead {
            file: Arc::clone(&self.file),
            log_path: Arc::clone(&self.log_path),
            size: self.size,
            from: from as usize,
            jump: self.index.last_within(bounds.max_offset, limit),
            bounds,
        })
    }

    /// The region of whole batches starting at the batch holding `bounds.offset`, within
    /// `bounds`; NotHere if no batch of this segment reaches that offset.
    pub fn read(&self, bounds: &ReadBounds) -> Result<Found, StorageError> {
        let (_, from) = self.index.lookup(bounds.offset);
        let jump = |start: usize| {
            let limit = u32::try_from(start.saturating_add(bounds.max_bytes)).unwrap_or(u32::MAX);
            self.index.last_within(bounds.max_offset, limit)
        };
        read_region(
            |p| self.header_at(p),
            &self.file,
            from as usize,
            bounds,
            jump,
        )
    }

    /// Reads whole batch bytes of a region into memory (for internal readers and tests).
    pub fn read_bytes(&self, position: usize, len: usize) -> Result<Vec<u8>, StorageError> {
        let mut buf = vec![0u8; len];
        let n = self.read_at(position, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// First offset whose record timestamp is >= `timestamp`, with that timestamp.
    pub fn find_offset_by_timestamp(
        &self,
        timestamp: i64,
        start_offset: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let (_, indexed_offset) = self.time_index.lookup(timestamp);
        let (_, position) = self.index.lookup(indexed_offset.max(start_offset));
        let mut position_usize = position as usize;
        while let Some(h) = self.header_at(position_usize)? {
            if h.max_timestamp >= timestamp && h.last_offset() >= start_offset {
                let bytes = self.read_bytes(position_usize, h.total_size())?;
                // LogAppendTime: every record has the batch's timestamp.
                let found = (!h.is_log_append_time())
                    .then(|| {
                        validate::find_record(&bytes, |offset, ts| {
                            ts >= timestamp && offset >= start_offset
                        })
                    })
                    .flatten();
                if let Some(found) = found {
                    return Ok(Some(found));
                }
                // Records that do not parse: the batch is the finest grain left.
                return Ok(Some((h.base_offset.max(start_offset), h.max_timestamp)));
            }
            position_usize += h.total_size();
        }
        Ok(None)
    }

    /// The greatest timestamp in the segment and the offset of its first record with it, if
    /// the segment has a timestamp (Kafka's ListOffsets MAX_TIMESTAMP).
    pub fn max_timestamp_record(&self) -> Result<Option<(i64, i64)>, StorageError> {
        if self.max_timestamp < 0 {
            return Ok(None);
        }
        let Some((position, h)) = self.find_batch(self.offset_of_max_timestamp)? else {
            return Ok(None);
        };
        // The batch that set the maximum holds its last offset; its first record with that
        // timestamp is the answer (the batch offset when the records do not parse).
        let bytes = self.read_bytes(position, h.total_size())?;
        let max = self.max_timestamp;
        let found = (!h.is_log_append_time())
            .then(|| validate::find_record(&bytes, |_, ts| ts == max))
            .flatten();
        Ok(Some(found.unwrap_or((h.base_offset, max))))
    }

    /// Rescans the whole segment, validating every batch, rebuilding both indexes and
    /// truncating at the first invalid byte. Returns the number of bytes truncated.
    pub fn recover(
        &mut self,
        index_interval_bytes: usize,
        index_bytes: usize,
    ) -> Result<usize, StorageError> {
        self.index.truncate_to(self.base_offset)?;
        self.time_index.truncate_to(self.base_offset)?;
        self.index.resize(index_bytes)?;
        self.time_index.resize(index_bytes)?;
        self.indexes_partial = false;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = -1;
        self.bytes_since_index_entry = 0;
        let mut position = 0usize;
        let mut next = self.base_offset;
        let mut header_buf = [0u8; BATCH_HEADER_BYTES];
        loop {
            let n = self.read_at(position, &mut header_buf)?;
            let Ok(h) = BatchHeader::parse(&header_buf[..n]) else {
                break;
            };
            if h.base_offset < next
                || position + h.total_size() > self.size
                || !self.holds_offset(h.last_offset())
            {
                break;
            }
            let bytes = self.read_bytes(position, h.total_size())?;
            if batch::validate(&bytes).is_err() {
                break;
            }
            if h.max_timestamp > self.max_timestamp {
                self.max_timestamp = h.max_timestamp;
                self.offset_of_max_timestamp = h.last_offset();
            }
            if self.bytes_since_index_entry > index_interval_bytes
                && !self.index.is_full()
                && h.last_offset() - self.base_offset <= u32::MAX as i64
            {
                // A full index (a smaller segment.index.bytes than when the segment was
                // written) only makes the index sparser; no space makes it incomplete.
                if self.index.can_append() || self.index.reserve(1).is_ok() {
                    self.index.append(h.last_offset(), position as u32);
                    if self.time_index.is_full() {
                        // as sparse as the offset index may be; the last slot waits for roll
                    } else if self.time_index.can_append() || self.time_index.reserve(1).is_ok() {
                        self.time_index
                            .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
                    } else {
                        self.indexes_partial = true;
                    }
                } else {
                    self.indexes_partial = true;
                }
                self.bytes_since_index_entry = 0;
            }
            self.bytes_since_index_entry += h.total_size();
            position += h.total_size();
            next = h.next_offset();
        }
        let truncated = self.size - position;
        if truncated > 0 {
            log::warn!(
                "recovery truncating segment={} valid_bytes={} truncated_bytes={}",
                self.log_path.display(),
                position,
                truncated
            );
            self.truncate_bytes(position)?;
        }
        self.next_offset = next;
        self.flushed = false;
        Ok(truncated)
    }

    /// Scans from the last index entry to find the next offset (clean active segment).
    pub fn load_tail(&mut self) -> Result<(), StorageError> {
        // The last entry names the last offset of the batch at its position (Kafka's index;
        // indexes kbroker wrote before named the base offset: either is accepted).
        let (entry, position) = match self.index.last() {
            Some((offset, position)) => (Some(offset), position),
            None => (None, 0),
        };
        let mut position = position as usize;
        let mut next = self.base_offset;
        let mut first = true;
        while let Some(h) = self.header_at(position)? {
            let in_order = match entry {
                Some(e) if first => h.base_offset <= e && e <= h.last_offset(),
                _ => h.base_offset >= next,
            };
            first = false;
            if !in_order || !self.holds_offset(h.last_offset()) {
                return Err(StorageError::corrupt(
                    &self.log_path,
                    "batch offsets outside the segment",
                ));
            }
            next = h.next_offset();
            if h.max_timestamp > self.max_timestamp {
                self.max_timestamp = h.max_timestamp;
                self.offset_of_max_timestamp = h.last_offset();
            }
            position += h.total_size();
            self.bytes_since_index_entry += h.total_size();
        }
        if position != self.size {
            // A clean shutdown trims the file; anything else needs full recovery.
            return Err(StorageError::corrupt(
                &self.log_path,
                "segment has bytes past its last batch",
            ));
        }
        self.next_offset = next;
        Ok(())
    }

    fn truncate_bytes(&mut self, position: usize) -> Result<(), StorageError> {
        assert!(position <= self.size);
        if self.map.is_some() {
            // The file stays preallocated while active: zeros mark where the log ends (what
            // recovery after a crash looks for). Through the file: the range may lie
            // outside the mapped window; the page cache is the same.
            let zeros = [0u8; 64 * 1024];
            let mut at = position;
            while at < self.size {
                let n = zeros.len().min(self.size - at);
                self.file
                    .write_all_at(&zeros[..n], at as u64)
                    .map_err(|e| {
                        StorageError::io(format!("truncating {}", self.log_path.display()), e)
                    })?;
                at += n;
            }
        } else {
            self.file.set_len(position as u64).map_err(|e| {
                StorageError::io(format!("truncating {}", self.log_path.display()), e)
            })?;
        }
        self.size = position;
        Ok(())
    }

    /// Removes every batch at or after `offset` (which must be a batch boundary or inside
    /// the last kept batch's successor). Returns bytes removed.
    pub fn truncate_to(&mut self, offset: i64) -> Result<usize, StorageError> {
        let Some((position, _)) = self.find_batch(offset)? else {
            return Ok(0);
        };
        let removed = self.size - position;
        self.truncate_bytes(position)?;
        self.index.truncate_to(offset)?;
        self.time_index.truncate_to(offset)?;
        self.next_offset = offset.max(self.base_offset);
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = -1;
        let mut p = 0usize;
        while let Some(h) = self.header_at(p)? {
            if h.max_timestamp > self.max_timestamp {
                self.max_timestamp = h.max_timestamp;
                self.offset_of_max_timestamp = h.last_offset();
            }
            self.next_offset = h.next_offset();
            p += h.total_size();
        }
        self.bytes_since_index_entry = 0;
        Ok(removed)
    }

    /// Writes the valid bytes and both indexes to disk.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        // A failed writeback the drop-behind thread saw (and so took from the file): the
        // pages it failed to write may be gone, so this flush fails as fsync would have.
        let errno = self.writeback_error.swap(0, Ordering::AcqRel);
        if errno != 0 {
            return Err(StorageError::io(
                format!("writing back {}", self.log_path.display()),
                std::io::Error::from_raw_os_error(errno),
            ));
        }
        // Every dirty page of the file, written through this window or an earlier one.
        self.file
            .sync_data()
            .map_err(|e| StorageError::io(format!("syncing {}", self.log_path.display()), e))?;
        self.index.flush()?;
        self.time_index.flush()?;
        self.flushed = true;
        Ok(())
    }

    /// True if both indexes describe this segment.
    pub fn indexes_sane(&self) -> bool {
        !self.indexes_partial
            && self.index.sanity_check(self.size)
            && self.time_index.sanity_check()
    }

    /// Deletes the segment's two index files (the cleaner rebuilds them after a swap).
    pub fn delete_indexes(self) -> Result<(), StorageError> {
        let Segment {
            index,
            time_index,
            map,
            ..
        } = self;
        drop(map);
        index.delete()?;
        time_index.delete()
    }

    /// Deletes the segment's three files. Open file handles (in-flight sendfile) stay valid.
    pub fn delete(self) -> Result<(), StorageError> {
        let Segment {
            log_path,
            index,
            time_index,
            map,
            ..
        } = self;
        drop(map);
        index.delete()?;
        time_index.delete()?;
        remove_if_exists(&log_path)
    }
}

/// One read: whole batches from the one holding `offset`, below `max_offset`, at most
/// `max_bytes` unless `min_one` lets a first batch exceed it.
#[derive(Debug, Clone, Copy)]
pub struct ReadBounds {
    pub offset: i64,
    pub max_offset: i64,
    pub max_bytes: usize,
    pub min_one: bool,
}

/// What a read of one segment found.
pub enum Found {
    /// The segment holds a batch reaching the offset: this is the read (None: that batch
    /// breaks a bound).
    Here(Option<FileRegion>),
    /// No batch of this segment reaches the offset (compaction gaps): read on in the next.
    NotHere,
}

type HeaderAt<'a> = dyn Fn(usize) -> Result<Option<BatchHeader>, StorageError> + 'a;

/// Position and header of the first batch from `from` on whose last offset is >= `offset`.
fn batch_reaching(
    header_at: impl Fn(usize) -> Result<Option<BatchHeader>, StorageError>,
    from: usize,
    offset: i64,
) -> Result<Option<(usize, BatchHeader)>, StorageError> {
    let mut position = from;
    while let Some(h) = header_at(position)? {
        if h.last_offset() >= offset {
            return Ok(Some((position, h)));
        }
        position += h.total_size();
    }
    Ok(None)
}

/// The read shared by a segment read in place and a rolled one read without the lock:
/// the walk from `from` (where the index puts the offset) to the batch holding it, then
/// the bounded run of batches from there. `jump` gives, for the start found, the indexed
/// batch to skip ahead to ([`bounded_end`]).
fn read_region(
    header_at: impl Fn(usize) -> Result<Option<BatchHeader>, StorageError>,
    file: &Arc<File>,
    from: usize,
    bounds: &ReadBounds,
    jump: impl FnOnce(usize) -> Option<(i64, u32)>,
) -> Result<Found, StorageError> {
    let Some((start, first)) = batch_reaching(&header_at, from, bounds.offset)? else {
        return Ok(Found::NotHere);
    };
    if first.next_offset() > bounds.max_offset {
        return Ok(Found::Here(None));
    }
    let end = bounded_end(&header_at, start, first, jump(start), bounds)?;
    Ok(Found::Here((end > start).then(|| FileRegion {
        file: Arc::clone(file),
        position: start as u64,
        len: end - start,
    })))
}

/// The header parsed from `buf` (read at `position`), if the whole batch lies below `size`.
fn whole_header(buf: &[u8], position: usize, size: usize) -> Option<BatchHeader> {
    match BatchHeader::parse(buf) {
        Ok(h) if position + h.total_size() <= size => Some(h),
        _ => None,
    }
}

/// Reads `buf.len()` bytes of `file` at `position` or up to its end.
fn pread_full(
    file: &File,
    path: &Path,
    position: usize,
    buf: &mut [u8],
) -> Result<usize, StorageError> {
    let mut done = 0;
    while done < buf.len() {
        let got = file
            .read_at(&mut buf[done..], (position + done) as u64)
            .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?;
        if got == 0 {
            break;
        }
        done += got;
    }
    Ok(done)
}

/// Where the run of whole batches starting at `start` (header `first`, already within
/// `max_offset`) ends within `bounds`. Every batch before the last indexed one that starts
/// within `max_bytes` and ends below `max_offset` (`jump`: its last offset and position) is
/// wholly inside both bounds, so the walk starts there, if the index is right about it,
/// instead of at `start`: a few headers (one `index.interval.bytes` apart) instead of all.
fn bounded_end(
    header_at: &HeaderAt<'_>,
    start: usize,
    first: BatchHeader,
    jump: Option<(i64, u32)>,
    bounds: &ReadBounds,
) -> Result<usize, StorageError> {
    let mut end = start;
    let mut header = Some(first);
    if let Some((last, position)) = jump {
        let position = position as usize;
        if position > start && position - start <= bounds.max_bytes {
            if let Some(h) = header_at(position)?.filter(|h| h.last_offset() == last) {
                end = position;
                header = Some(h);
            }
        }
    }
    while let Some(h) = header {
        let size = h.total_size();
        if h.next_offset() > bounds.max_offset
            || (end + size - start > bounds.max_bytes && !(bounds.min_one && end == start))
        {
            break;
        }
        end += size;
        header = header_at(end)?;
    }
    Ok(end)
}

/// A read of a rolled segment prepared under the log's lock ([`Segment::rolled_read`]) and
/// done without it: the file is shared (`Arc`), its bytes below `size` never change, and
/// a segment truncated or replaced meanwhile shows up as a shorter read (truncation) or
/// the old file's bytes (compaction renames a new file in; this one stays readable).
pub struct RolledRead {
    file: Arc<File>,
    log_path: Arc<Path>,
    size: usize,
    from: usize,
    jump: Option<(i64, u32)>,
    bounds: ReadBounds,
}

impl RolledRead {
    fn header_at(&self, position: usize) -> Result<Option<BatchHeader>, StorageError> {
        if position >= self.size {
            return Ok(None);
        }
        let mut buf = [0u8; BATCH_HEADER_BYTES];
        let n = buf.len().min(self.size - position);
        let got = pread_full(&self.file, &self.log_path, position, &mut buf[..n])?;
        Ok(whole_header(&buf[..got], position, self.size))
    }

    /// The same as [`Segment::read`] with these bounds.
    pub fn read(&self) -> Result<Found, StorageError> {
        let header_at = |p| self.header_at(p);
        read_region(header_at, &self.file, self.from, &self.bounds, |_| {
            self.jump
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writeback_failure_seen_by_drop_behind_fails_the_next_flush_once() {
        let dir = std::env::temp_dir().join(format!("kb-seg-wb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let mut segment =
            Segment::create(&dir, 0, 1 << 22, 1 << 16, WindowConfig::default()).expect("create");
        segment.flush().expect("a clean flush");
        assert!(segment.is_flushed());
        // What the drop-behind thread records when sync_file_range fails.
        segment
            .writeback_error
            .store(nix::libc::EIO, Ordering::Release);
        assert!(
            !segment.is_flushed(),
            "a failed writeback leaves it unflushed"
        );
        let err = segment
            .flush()
            .expect_err("the flush reports the writeback's failure");
        assert!(err.is_device_failure(), "{err}");
        segment.flush().expect("reported once, as fsync does");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

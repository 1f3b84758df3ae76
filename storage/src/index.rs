//! Sparse offset and time indexes, memory-mapped — Kafka's `.index` and `.timeindex` files.
//!
//! `.index`: 8-byte entries `(relative_offset u32, position u32)`, big-endian, relative to
//! the segment's base offset. `.timeindex`: 12-byte entries `(timestamp i64, relative_offset
//! u32)`. Both are sparse (one entry every `index.interval.bytes` of log) so they stay small
//! enough to live in memory; a lookup finds the greatest entry at or below the target and
//! the log is scanned forward from there. Entries are strictly increasing.
//!
//! The file of the active segment is preallocated to `segment.index.bytes` (sparse) and
//! trimmed to its entries on roll and on clean shutdown. Blocks behind the mapped entries are
//! reserved ([`crate::disk::reserve_blocks`]) in chunks before entries are written, so a full
//! disk fails `reserve` instead of faulting a store into the map. After a crash the entry count of a
//! preallocated file is unknown, so recovery rebuilds indexes from the log; `sanity_check`
//! catches an index that does not describe its segment. Not thread safe on its own: it is
//! owned by a segment, which is owned by a log behind a mutex.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::StorageError;

/// One fixed-size entry kind.
trait EntryFormat {
    const SIZE: usize;
}

/// Bytes of index blocks reserved at a time.
const RESERVE_CHUNK_BYTES: usize = 64 * 1024;

/// An index file mapped into memory. As in Kafka, no descriptor is kept open once the
/// file is mapped (a broker with many partitions would otherwise hold three per segment);
/// the rare operations on the file itself (resize, block reservation, hole punching) open it.
struct MappedIndex {
    path: PathBuf,
    mmap: Option<MmapMut>,
    entries: usize,
    entry_size: usize,
    /// Bytes from the start of the file known to have disk blocks.
    reserved: usize,
}

impl MappedIndex {
    fn open_file(path: &Path) -> Result<File, StorageError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StorageError::io(format!("opening index {}", path.display()), e))
    }

    fn open(path: &Path, entry_size: usize, capacity_bytes: usize) -> Result<Self, StorageError> {
        let file = Self::open_file(path)?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io(format!("stat index {}", path.display()), e))?
            .len() as usize;
        drop(file);
        let entries = len / entry_size;
        let mut index = MappedIndex {
            path: path.to_path_buf(),
            mmap: None,
            entries,
            entry_size,
            // Unknown after a crash (the file may be sparse): reserve() re-checks from 0,
            // which costs nothing where blocks exist.
            reserved: 0,
        };
        index.resize((entries * entry_size).max(capacity_bytes / entry_size * entry_size))?;
        Ok(index)
    }

    fn capacity(&self) -> usize {
        self.mmap.as_ref().map_or(0, |m| m.len() / self.entry_size)
    }

    fn resize(&mut self, bytes: usize) -> Result<(), StorageError> {
        assert!(bytes >= self.entries * self.entry_size);
        self.reserved = self.reserved.min(bytes);
        if let Some(m) = self.mmap.take() {
            m.flush()
                .map_err(|e| StorageError::io(format!("flushing {}", self.path.display()), e))?;
        }
        let file = Self::open_file(&self.path)?;
        file.set_len(bytes as u64)
            .map_err(|e| StorageError::io(format!("resizing {}", self.path.display()), e))?;
        if bytes > 0 {
            // SAFETY: the file is owned by this index and only grows/shrinks through it;
            // no other process is expected to truncate it under us. The mapping outlives
            // the descriptor, as mmap(2) allows.
            let mmap = unsafe { MmapMut::map_mut(&file) }
                .map_err(|e| StorageError::io(format!("mapping {}", self.path.display()), e))?;
            self.mmap = Some(mmap);
        }
        Ok(())
    }

    fn entry(&self, i: usize) -> &[u8] {
        assert!(i < self.entries);
        let m = self.mmap.as_ref().expect("an index with entries is mapped");
        &m[i * self.entry_size..(i + 1) * self.entry_size]
    }

    /// Makes sure `more` entries beyond the current ones have disk blocks (as many as fit).
    fn reserve(&mut self, more: usize) -> Result<(), StorageError> {
        let want = ((self.entries + more) * self.entry_size).min(self.capacity() * self.entry_size);
        if want <= self.reserved {
            return Ok(());
        }
        let file = Self::open_file(&self.path)?;
        self.reserved = crate::disk::reserve_ahead(
            &file,
            &self.path,
            self.reserved,
            want,
            RESERVE_CHUNK_BYTES,
            self.capacity() * self.entry_size,
        )?;
        Ok(())
    }

    /// True if the next entry has a reserved block.
    fn room_reserved(&self) -> bool {
        (self.entries + 1) * self.entry_size <= self.reserved && self.entries < self.capacity()
    }

    fn push(&mut self, bytes: &[u8]) {
        assert_eq!(bytes.len(), self.entry_size);
        assert!(
            self.room_reserved(),
            "index {} entry written without a reserved block",
            self.path.display()
        );
        let at = self.entries * self.entry_size;
        let m = self.mmap.as_mut().expect("a writable index is mapped");
        m[at..at + self.entry_size].copy_from_slice(bytes);
        self.entries += 1;
    }

    /// Index of the last entry whose key is <= target, using a monotonic key.
    fn floor(&self, target: i64, key: impl Fn(&[u8]) -> i64) -> Option<usize> {
        if self.entries == 0 || key(self.entry(0)) > target {
            return None;
        }
        let (mut lo, mut hi) = (0usize, self.entries - 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if key(self.entry(mid)) <= target {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Some(lo)
    }

    /// Drops entries from `entries` on. Their bytes are turned into a hole rather than
    /// overwritten: after a crash the file is sparse, and storing zeros into unallocated
    /// pages of a full disk would fault.
    fn truncate_entries(&mut self, entries: usize) -> Result<(), StorageError> {
        assert!(entries <= self.entries);
        let (from, to) = (entries * self.entry_size, self.entries * self.entry_size);
        if to > from {
            let file = Self::open_file(&self.path)?;
            crate::disk::punch_hole(&file, from as u64, (to - from) as u64).map_err(|e| {
                StorageError::io(format!("truncating index {}", self.path.display()), e)
            })?;
            self.reserved = self.reserved.min(from);
        }
        self.entries = entries;
        Ok(())
    }

    fn trim(&mut self) -> Result<(), StorageError> {
        self.resize(self.entries * self.entry_size)
    }

    fn flush(&self) -> Result<(), StorageError> {
        if let Some(m) = &self.mmap {
            m.flush()
                .map_err(|e| StorageError::io(format!("flushing {}", self.path.display()), e))?;
        }
        Ok(())
    }

    fn delete(self) -> Result<(), StorageError> {
        let path = self.path.clone();
        drop(self);
        remove_if_exists(&path)
    }
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(format!("deleting {}", path.display()), e)),
    }
}

struct OffsetEntry;
impl EntryFormat for OffsetEntry {
    const SIZE: usize = 8;
}
struct TimeEntry;
impl EntryFormat for TimeEntry {
    const SIZE: usize = 12;
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The `.index` file: offset → file position.
pub struct OffsetIndex {
    inner: MappedIndex,
    base_offset: i64,
}

impl OffsetIndex {
    pub fn open(
        path: &Path,
        base_offset: i64,
        capacity_bytes: usize,
    ) -> Result<Self, StorageError> {
        Ok(OffsetIndex {
            inner: MappedIndex::open(path, OffsetEntry::SIZE, capacity_bytes)?,
            base_offset,
        })
    }
    pub fn entries(&self) -> usize {
        self.inner.entries
    }
    pub fn is_full(&self) -> bool {
        self.inner.entries >= self.inner.capacity()
    }
    /// Reserves disk blocks for `more` entries (or as many as the index holds).
    pub fn reserve(&mut self, more: usize) -> Result<(), StorageError> {
        self.inner.reserve(more)
    }
    /// True if one more entry can be written now (room and a reserved block).
    pub fn can_append(&self) -> bool {
        self.inner.room_reserved()
    }
    fn decode(&self, e: &[u8]) -> (i64, u32) {
        (self.base_offset + u32_at(e, 0) as i64, u32_at(e, 4))
    }
    pub fn entry(&self, i: usize) -> (i64, u32) {
        self.decode(self.inner.entry(i))
    }
    pub fn last(&self) -> Option<(i64, u32)> {
        self.inner.entries.checked_sub(1).map(|i| self.entry(i))
    }
    /// Greatest `(offset, position)` with offset <= target, or `(base, 0)`.
    pub fn lookup(&self, target: i64) -> (i64, u32) {
        let base = self.base_offset;
        match self.inner.floor(target, |e| base + u32_at(e, 0) as i64) {
            Some(i) => self.entry(i),
            None => (self.base_offset, 0),
        }
    }
    /// The last entry whose offset is below `max_offset` and whose position is at most
    /// `max_position` (both grow with the entry number: a binary search).
    pub fn last_within(&self, max_offset: i64, max_position: u32) -> Option<(i64, u32)> {
        let ok = |i: usize| {
            let (offset, position) = self.entry(i);
            offset < max_offset && position <= max_position
        };
        let (mut lo, mut hi) = (0usize, self.inner.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if ok(mid) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.entry(i))
    }
    pub fn append(&mut self, offset: i64, position: u32) {
        let relative = offset - self.base_offset;
        assert!(
            (0..=u32::MAX as i64).contains(&relative),
            "offset {offset} outside segment"
        );
        if let Some((last, last_pos)) = self.last() {
            assert!(
                offset > last && position > last_pos,
                "index entries must increase"
            );
        }
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&(relative as u32).to_be_bytes());
        e[4..].copy_from_slice(&position.to_be_bytes());
        self.inner.push(&e);
    }
    /// Drops entries at or above `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), StorageError> {
        let keep = (0..self.inner.entries)
            .take_while(|&i| self.entry(i).0 < offset)
            .count();
        self.inner.truncate_entries(keep)
    }
    /// True if entries increase and stay inside the segment of `log_size` bytes.
    pub fn sanity_check(&self, log_size: usize) -> bool {
        let mut prev: Option<(i64, u32)> = None;
        for i in 0..self.inner.entries {
            let (o, p) = self.entry(i);
            if p as usize >= log_size.max(1) || prev.is_some_and(|(po, pp)| o <= po || p <= pp) {
                return false;
            }
            prev = Some((o, p));
        }
        true
    }
    pub fn resize(&mut self, capacity_bytes: usize) -> Result<(), StorageError> {
        let bytes = (capacity_bytes / OffsetEntry::SIZE * OffsetEntry::SIZE)
            .max(self.inner.entries * OffsetEntry::SIZE);
        self.inner.resize(bytes)
    }
    pub fn trim(&mut self) -> Result<(), StorageError> {
        self.inner.trim()
    }
    pub fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }
    pub fn delete(self) -> Result<(), StorageError> {
        self.inner.delete()
    }
}

/// The `.timeindex` file: max timestamp so far → offset. As in Kafka, the last slot is kept
/// for the entry written on roll (the segment's max timestamp, read back at the next start):
/// the index is "full" one entry early.
pub struct TimeIndex {
    inner: MappedIndex,
    base_offset: i64,
}

impl TimeIndex {
    pub fn open(
        path: &Path,
        base_offset: i64,
        capacity_bytes: usize,
    ) -> Result<Self, StorageError> {
        Ok(TimeIndex {
            inner: MappedIndex::open(path, TimeEntry::SIZE, capacity_bytes)?,
            base_offset,
        })
    }
    pub fn entries(&self) -> usize {
        self.inner.entries
    }
    pub fn is_full(&self) -> bool {
        self.inner.entries + 1 >= self.inner.capacity()
    }
    /// Reserves disk blocks for `more` entries (or as many as the index holds).
    pub fn reserve(&mut self, more: usize) -> Result<(), StorageError> {
        self.inner.reserve(more)
    }
    /// True if one more ordinary entry can be written now (room and a reserved block).
    pub fn can_append(&self) -> bool {
        !self.is_full() && self.inner.room_reserved()
    }
    /// True if the roll entry (the last slot) can be written, reserving its block if needed.
    pub fn make_room_for_final(&mut self) -> bool {
        self.inner.entries < self.inner.capacity()
            && (self.inner.room_reserved() || self.inner.reserve(1).is_ok())
    }
    /// True if the index could hold one more entry at all.
    pub fn has_slot(&self) -> bool {
        self.inner.entries < self.inner.capacity()
    }
    pub fn entry(&self, i: usize) -> (i64, i64) {
        let e = self.inner.entry(i);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&e[..8]);
        (
            i64::from_be_bytes(ts),
            self.base_offset + u32_at(e, 8) as i64,
        )
    }
    pub fn last(&self) -> Option<(i64, i64)> {
        self.inner.entries.checked_sub(1).map(|i| self.entry(i))
    }
    /// Greatest `(timestamp, offset)` with timestamp <= target, or `(-1, base)`.
    pub fn lookup(&self, target: i64) -> (i64, i64) {
        let found = self.inner.floor(target, |e| {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&e[..8]);
            i64::from_be_bytes(ts)
        });
        match found {
            Some(i) => self.entry(i),
            None => (-1, self.base_offset),
        }
    }
    /// Appends if the timestamp is newer than the last entry's.
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64) {
        if self
            .last()
            .is_some_and(|(ts, o)| timestamp <= ts || offset <= o)
        {
            return;
        }
        let relative = offset - self.base_offset;
        assert!(
            (0..=u32::MAX as i64).contains(&relative),
            "offset {offset} outside segment"
        );
        let mut e = [0u8; 12];
        e[..8].copy_from_slice(&timestamp.to_be_bytes());
        e[8..].copy_from_slice(&(relative as u32).to_be_bytes());
        self.inner.push(&e);
    }
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), StorageError> {
        let keep = (0..self.inner.entries)
            .take_while(|&i| self.entry(i).1 < offset)
            .count();
        self.inner.truncate_entries(keep)
    }
    pub fn sanity_check(&self) -> bool {
        (1..self.inner.entries).all(|i| {
            let (pt, po) = self.entry(i - 1);
            let (t, o) = self.entry(i);
            t > pt && o > po
        })
    }
    pub fn resize(&mut self, capacity_bytes: usize) -> Result<(), StorageError> {
        let bytes = (capacity_bytes / TimeEntry::SIZE * TimeEntry::SIZE)
            .max(self.inner.entries * TimeEntry::SIZE);
        self.inner.resize(bytes)
    }
    pub fn trim(&mut self) -> Result<(), StorageError> {
        self.inner.trim()
    }
    pub fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }
    pub fn delete(self) -> Result<(), StorageError> {
        self.inner.delete()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kb-index-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        dir
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The binary-search lookup equals a linear scan over the same entries.
        #[test]
        fn offset_lookup_equals_linear_scan(gaps in proptest::collection::vec(1u32..50, 0..200),
                                            targets in proptest::collection::vec(0i64..12_000, 1..50)) {
            let dir = tmp("prop");
            let path = dir.join(format!("{}.index", gaps.len()));
            let _ = std::fs::remove_file(&path);
            let base = 1000;
            let mut idx = OffsetIndex::open(&path, base, 8 * 256).expect("open");
            idx.reserve(gaps.len()).expect("reserve");
            let mut entries = Vec::new();
            let (mut o, mut p) = (base, 0u32);
            for g in &gaps {
                o += *g as i64; p += g * 10;
                idx.append(o, p);
                entries.push((o, p));
            }
            for t in targets {
                let t = t - 100 + base;
                let expected = entries.iter().rev().find(|(eo, _)| *eo <= t).copied().unwrap_or((base, 0));
                prop_assert_eq!(idx.lookup(t), expected);
            }
            // Reopen after trim: same entries.
            idx.trim().expect("trim");
            drop(idx);
            let idx = OffsetIndex::open(&path, base, 0).expect("reopen");
            prop_assert_eq!(idx.entries(), entries.len());
            prop_assert!(idx.sanity_check(usize::MAX));
        }
    }

    #[test]
    fn time_index_lookup_and_truncate() {
        let dir = tmp("time");
        let path = dir.join("0.timeindex");
        let _ = std::fs::remove_file(&path);
        let mut idx = TimeIndex::open(&path, 0, 12 * 10).expect("open");
        idx.reserve(10).expect("reserve");
        idx.maybe_append(100, 5);
        idx.maybe_append(90, 6); // older timestamp: ignored
        idx.maybe_append(200, 10);
        assert_eq!(idx.entries(), 2);
        assert_eq!(idx.lookup(150), (100, 5));
        assert_eq!(idx.lookup(50), (-1, 0));
        idx.truncate_to(10).expect("truncate");
        assert_eq!(idx.entries(), 1);
        assert!(idx.sanity_check());
    }
}

//! The metadata journal: the on-disk form of [`crate::LocalStore`]'s persistent nodes.
//!
//! Format of `<dir>/metadata.journal`, all integers little-endian:
//!
//! ```text
//! header  : magic "KBMJ" | format version u32 (= 1)
//! record  : payload_len u32 | checksum u64 | payload            (repeated)
//!           checksum = FNV-1a 64 over the 4 length bytes and the payload
//! payload : 1 checkpoint  last_zxid i64
//!         | 2 image       path str | data bytes | version i32 | cversion i32 | czxid i64
//!                         | mzxid i64 | ctime_ms i64 | mtime_ms i64
//!         | 3 txn         zxid i64 | time_ms i64 | count u32 | change * count
//! change  : 1 created     path str | data bytes | parent_cversion i32
//!         | 2 set         path str | data bytes | version i32
//!         | 3 deleted     path str | parent_cversion i32
//! str, bytes : len u32 | bytes (str is UTF-8)
//! ```
//!
//! A fresh journal (written on every open, and when the journal outgrows its last snapshot)
//! holds a checkpoint and one image per persistent node, parents first. Every committed
//! write that touches a persistent node appends one txn record (a `multi` is one record, so
//! it survives a crash whole or not at all) with `write_all` and `fdatasync` before the
//! write returns. Ephemeral nodes are never written.
//!
//! Full disk: the journal keeps [`RESERVE_BYTES`] of disk blocks allocated past its end
//! (`fallocate` with KEEP_SIZE, topped up after appends), so that the few records an
//! operator needs to make room — deleting a topic — still fit when the disk is full. A
//! compaction at open that finds no space keeps the old journal (its torn tail cut off) and
//! appends to it; a failed append is undone and the next one is tried afresh.
//!
//! Crash behaviour: replay stops at the first record that is incomplete, longer than
//! [`RECORD_BYTES_MAX`] or fails its checksum; that torn tail is dropped with a warning and
//! everything before it is kept. A record that passes its checksum but does not decode or
//! does not apply to the tree is not a torn write, so opening fails with `Corrupt` rather
//! than silently discarding later data. Compaction writes a temporary file, fsyncs it,
//! renames it over the journal and fsyncs the directory, so a crash leaves either the old
//! or the new journal. A `metadata.lock` file, locked for the journal's lifetime, keeps a
//! second process off the same directory.
//!
//! Thread safety: none; owned by the `LocalStore` behind its mutex.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::store::StoreError;
use crate::tree::{Change, Node, Tree};

pub const JOURNAL_FILE_NAME: &str = "metadata.journal";
const TEMP_FILE_NAME: &str = "metadata.journal.tmp";
const LOCK_FILE_NAME: &str = "metadata.lock";
const MAGIC: [u8; 4] = *b"KBMJ";
const FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 8;
const RECORD_HEADER_BYTES: usize = 12;
/// Largest record payload; a write whose record would be larger fails with `LimitExceeded`.
pub const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Largest journal read on open (it is read whole into memory).
pub const JOURNAL_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// The running journal is compacted when it exceeds both this and
/// `COMPACT_GROWTH_FACTOR` times the size of its last snapshot.
pub const COMPACT_BYTES_MIN: u64 = 16 * 1024 * 1024;
const COMPACT_GROWTH_FACTOR: u64 = 4;
/// Disk blocks kept allocated past the journal's end for writes on a full disk.
pub const RESERVE_BYTES: u64 = 1024 * 1024;

const RECORD_CHECKPOINT: u8 = 1;
const RECORD_IMAGE: u8 = 2;
const RECORD_TXN: u8 = 3;
const CHANGE_CREATED: u8 = 1;
const CHANGE_SET: u8 = 2;
const CHANGE_DELETED: u8 = 3;

const _: () = assert!(RECORD_BYTES_MAX as u64 <= u32::MAX as u64);
const _: () =
    assert!(crate::store::DATA_BYTES_MAX + crate::store::PATH_BYTES_MAX < RECORD_BYTES_MAX);
const _: () = assert!(COMPACT_BYTES_MIN < JOURNAL_BYTES_MAX / COMPACT_GROWTH_FACTOR);

/// FNV-1a, 64-bit.
pub fn fnv1a64(chunks: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in chunks {
        for byte in *chunk {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// An open journal, positioned for appending.
pub(crate) struct Journal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    len_bytes: u64,
    snapshot_bytes: u64,
    compact_bytes_min: u64,
    /// Set when a failed write could not be undone; every later write is refused.
    broken: Option<String>,
    /// The file offset up to which disk blocks are allocated.
    reserved_to: u64,
    /// The last reservation failed (logged once until one succeeds).
    reserve_failing: bool,
    _lock: File,
}

impl Journal {
    /// Locks `dir`, replays its journal (dropping a torn tail) and compacts it.
    pub fn open(dir: &Path) -> Result<(Journal, Tree), StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(format!("creating metadata dir {}", dir.display()), e))?;
        let lock = lock_dir(dir)?;
        let path = dir.join(JOURNAL_FILE_NAME);
        let (tree, valid_bytes) = match read_file(&path)? {
            Some(bytes) => replay(&bytes, &path)?,
            None => (Tree::new(), 0),
        };
        let (file, len_bytes) = match write_snapshot(dir, &path, &tree) {
            Ok(written) => written,
            Err(SnapshotError::BeforeRename(e)) if valid_bytes >= HEADER_BYTES => {
                // No room for a fresh copy (a full disk): keep appending to the old one.
                log::warn!("metadata journal not compacted at open ({e}); appending to it");
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
                file.set_len(valid_bytes as u64)
                    .map_err(|e| StoreError::io(format!("truncating {}", path.display()), e))?;
                (file, valid_bytes as u64)
            }
            Err(e) => return Err(e.into()),
        };
        log::info!(
            "metadata journal opened path={} nodes={} last_zxid={} bytes={}",
            path.display(),
            tree.len(),
            tree.last_zxid(),
            len_bytes
        );
        let journal = Journal {
            dir: dir.to_path_buf(),
            path,
            file,
            len_bytes,
            snapshot_bytes: len_bytes,
            compact_bytes_min: COMPACT_BYTES_MIN,
            broken: None,
            reserved_to: len_bytes,
            reserve_failing: false,
            _lock: lock,
        };
        let mut journal = journal;
        journal.maintain_reserve();
        Ok((journal, tree))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    pub fn set_compact_bytes_min(&mut self, bytes: u64) {
        self.compact_bytes_min = bytes;
    }

    /// Appends one framed record and syncs it. On error the journal is as before the call
    /// (or, if that cannot be ensured, refuses all later writes).
    pub fn append(&mut self, record: &[u8]) -> Result<(), StoreError> {
        if let Some(reason) = &self.broken {
            return Err(StoreError::io(
                format!("writing {}", self.path.display()),
                std::io::Error::other(format!(
                    "journal unusable since an earlier failure ({reason}); restart to recover"
                )),
            ));
        }
        let context = || format!("appending to {}", self.path.display());
        if let Err(e) = self.file.write_all(record) {
            let undone = self
                .file
                .set_len(self.len_bytes)
                .and_then(|()| self.file.sync_all());
            if let Err(undo) = undone {
                self.broken = Some(format!(
                    "append failed ({e}), truncating back failed ({undo})"
                ));
            }
            return Err(StoreError::io(context(), e));
        }
        if let Err(e) = self.file.sync_data() {
            // After a failed fsync the page cache may not match the disk, and the record may
            // or may not survive a crash: trust nothing more from this file handle.
            self.broken = Some(format!("fdatasync failed ({e})"));
            return Err(StoreError::io(context(), e));
        }
        self.len_bytes += record.len() as u64;
        self.reserved_to = self.reserved_to.max(self.len_bytes);
        self.maintain_reserve();
        Ok(())
    }

    /// Tops the blocks allocated past the end up to [`RESERVE_BYTES`] when half are used.
    fn maintain_reserve(&mut self) {
        use std::os::fd::AsRawFd;
        if self.reserved_to >= self.len_bytes + RESERVE_BYTES / 2 {
            return;
        }
        let reserved = nix::fcntl::fallocate(
            self.file.as_raw_fd(),
            nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            self.len_bytes as i64,
            RESERVE_BYTES as i64,
        );
        match reserved {
            Ok(()) => {
                self.reserved_to = self.len_bytes + RESERVE_BYTES;
                self.reserve_failing = false;
            }
            Err(e) => {
                if !self.reserve_failing {
                    log::warn!(
                        "cannot keep {RESERVE_BYTES} bytes reserved for {}: {e}",
                        self.path.display()
                    );
                }
                self.reserve_failing = true;
            }
        }
    }

    /// Rewrites the journal as a snapshot of `tree` if it has grown enough.
    pub fn maybe_compact(&mut self, tree: &Tree) {
        let threshold = self
            .compact_bytes_min
            .max(self.snapshot_bytes.saturating_mul(COMPACT_GROWTH_FACTOR));
        if self.broken.is_some() || self.len_bytes <= threshold {
            return;
        }
        match write_snapshot(&self.dir, &self.path, tree) {
            Ok((file, len_bytes)) => {
                log::info!(
                    "metadata journal compacted path={} bytes_before={} bytes_after={}",
                    self.path.display(),
                    self.len_bytes,
                    len_bytes
                );
                self.file = file;
                self.len_bytes = len_bytes;
                self.snapshot_bytes = len_bytes;
                self.reserved_to = len_bytes;
                self.maintain_reserve();
            }
            Err(SnapshotError::BeforeRename(e)) => {
                log::warn!("metadata journal compaction failed, keeping the old journal: {e}");
                // Do not retry on every write: wait for the journal to grow again.
                self.snapshot_bytes = self.len_bytes;
            }
            Err(SnapshotError::AfterRename(e)) => {
                log::error!("metadata journal compaction failed after rename: {e}");
                self.broken = Some(format!("compaction failed after rename: {e}"));
            }
        }
    }
}

fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let lock_path = dir.join(LOCK_FILE_NAME);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::io(format!("opening {}", lock_path.display()), e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(StoreError::io(
            format!("locking {}", lock_path.display()),
            std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "another process is using this metadata directory",
            ),
        )),
        Err(TryLockError::Error(e)) => Err(StoreError::io(
            format!("locking {}", lock_path.display()),
            e,
        )),
    }
}

fn read_file(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(format!("opening {}", path.display()), e)),
    };
    let len = file
        .metadata()
        .map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?
        .len();
    if len > JOURNAL_BYTES_MAX {
        return Err(StoreError::LimitExceeded {
            what: format!("size in bytes of {}", path.display()),
            value: usize::try_from(len).unwrap_or(usize::MAX),
            max: JOURNAL_BYTES_MAX as usize,
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
    Ok(Some(bytes))
}

/// Rebuilds the tree from journal bytes, dropping a torn tail; returns it and the length of
/// the valid prefix.
pub(crate) fn replay(bytes: &[u8], path: &Path) -> Result<(Tree, usize), StoreError> {
    let context = || format!("metadata journal {}", path.display());
    let mut tree = Tree::new();
    if bytes.len() < HEADER_BYTES {
        if !bytes.is_empty() {
            log::warn!(
                "metadata journal header torn, starting empty path={} bytes={}",
                path.display(),
                bytes.len()
            );
        }
        return Ok((tree, 0));
    }
    if bytes[..4] != MAGIC {
        return Err(StoreError::corrupt(
            context(),
            "bad magic: not a kbroker metadata journal",
        ));
    }
    let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if version != FORMAT_VERSION {
        return Err(StoreError::corrupt(
            context(),
            format!("format version {version}, expected {FORMAT_VERSION}"),
        ));
    }
    let mut position = HEADER_BYTES;
    let mut records = 0usize;
    while position < bytes.len() {
        let Some(payload) = framed_payload(&bytes[position..]) else {
            log::warn!(
                "metadata journal has a torn or corrupt tail, dropping it path={} \
                 offset={position} dropped_bytes={} records_kept={records}",
                path.display(),
                bytes.len() - position
            );
            break;
        };
        let record = decode_record(payload).and_then(|record| apply_record(&mut tree, record));
        if let Err(detail) = record {
            return Err(StoreError::corrupt(
                context(),
                format!("record at offset {position}: {detail}"),
            ));
        }
        position += RECORD_HEADER_BYTES + payload.len();
        records += 1;
    }
    Ok((tree, position))
}

/// The payload of the record at the start of `bytes`, or `None` if it is torn.
fn framed_payload(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return None;
    }
    let len_bytes: [u8; 4] = bytes[0..4].try_into().ok()?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let checksum = u64::from_le_bytes(bytes[4..12].try_into().ok()?);
    if len > RECORD_BYTES_MAX || bytes.len() - RECORD_HEADER_BYTES < len {
        return None;
    }
    let payload = &bytes[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len];
    (fnv1a64(&[&len_bytes, payload]) == checksum).then_some(payload)
}

enum Record {
    Checkpoint {
        last_zxid: i64,
    },
    Image {
        path: String,
        node: Node,
    },
    Txn {
        zxid: i64,
        time_ms: i64,
        changes: Vec<Change>,
    },
}

fn apply_record(tree: &mut Tree, record: Record) -> Result<(), String> {
    match record {
        Record::Checkpoint { last_zxid } => {
            tree.set_last_zxid(last_zxid);
            Ok(())
        }
        Record::Image { path, node } => tree.restore(&path, node),
        Record::Txn {
            zxid,
            time_ms,
            changes,
        } => tree.replay(zxid, time_ms, &changes),
    }
}

/// Frames the txn record of the persistent changes of one commit; `None` if there are none.
pub(crate) fn encode_txn(
    zxid: i64,
    time_ms: i64,
    changes: &[Change],
) -> Result<Option<Vec<u8>>, StoreError> {
    let persistent: Vec<&Change> = changes.iter().filter(|c| !c.is_ephemeral()).collect();
    if persistent.is_empty() {
        return Ok(None);
    }
    let mut out = Encoder::record(RECORD_TXN);
    out.i64(zxid);
    out.i64(time_ms);
    out.u32(u32::try_from(persistent.len()).unwrap_or(u32::MAX));
    for change in persistent {
        match change {
            Change::Created {
                path,
                data,
                parent_cversion,
                ..
            } => {
                out.u8(CHANGE_CREATED);
                out.bytes(path.as_bytes());
                out.bytes(data);
                out.i32(*parent_cversion);
            }
            Change::Set {
                path,
                data,
                version,
                ..
            } => {
                out.u8(CHANGE_SET);
                out.bytes(path.as_bytes());
                out.bytes(data);
                out.i32(*version);
            }
            Change::Deleted {
                path,
                parent_cversion,
                ..
            } => {
                out.u8(CHANGE_DELETED);
                out.bytes(path.as_bytes());
                out.i32(*parent_cversion);
            }
        }
    }
    out.finish().map(Some)
}

fn encode_snapshot(tree: &Tree) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let mut checkpoint = Encoder::record(RECORD_CHECKPOINT);
    checkpoint.i64(tree.last_zxid());
    out.extend_from_slice(&checkpoint.finish()?);
    // BTreeMap order puts every parent (a prefix) before its children.
    for (path, node) in tree.nodes().filter(|(_, node)| !node.is_ephemeral()) {
        let mut image = Encoder::record(RECORD_IMAGE);
        image.bytes(path.as_bytes());
        image.bytes(&node.data);
        image.i32(node.version);
        image.i32(node.cversion);
        image.i64(node.czxid);
        image.i64(node.mzxid);
        image.i64(node.ctime_ms);
        image.i64(node.mtime_ms);
        out.extend_from_slice(&image.finish()?);
    }
    Ok(out)
}

enum SnapshotError {
    /// The old journal is untouched.
    BeforeRename(StoreError),
    /// The new journal replaced the old one, but the handle or its durability is in doubt.
    AfterRename(StoreError),
}

impl From<SnapshotError> for StoreError {
    fn from(e: SnapshotError) -> StoreError {
        match e {
            SnapshotError::BeforeRename(e) | SnapshotError::AfterRename(e) => e,
        }
    }
}

/// Writes a snapshot of `tree` to a temp file and renames it over `path`; returns the new
/// journal opened for appending and its length.
fn write_snapshot(dir: &Path, path: &Path, tree: &Tree) -> Result<(File, u64), SnapshotError> {
    let bytes = encode_snapshot(tree).map_err(SnapshotError::BeforeRename)?;
    let temp = dir.join(TEMP_FILE_NAME);
    let io = |what: &str, e| StoreError::io(format!("{what} {}", temp.display()), e);
    let written = (|| {
        let mut file = File::create(&temp).map_err(|e| io("creating", e))?;
        file.write_all(&bytes).map_err(|e| io("writing", e))?;
        file.sync_all().map_err(|e| io("syncing", e))?;
        std::fs::rename(&temp, path).map_err(|e| io("renaming", e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(SnapshotError::BeforeRename(e));
    }
    let after = (|| {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(format!("syncing dir {}", dir.display()), e))?;
        OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))
    })();
    after
        .map(|file| (file, bytes.len() as u64))
        .map_err(SnapshotError::AfterRename)
}

struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    fn record(kind: u8) -> Encoder {
        let mut buf = vec![0u8; RECORD_HEADER_BYTES];
        buf.push(kind);
        Encoder { buf }
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(v);
    }

    /// Fills in the length and checksum.
    fn finish(mut self) -> Result<Vec<u8>, StoreError> {
        let len = self.buf.len() - RECORD_HEADER_BYTES;
        if len > RECORD_BYTES_MAX {
            return Err(StoreError::LimitExceeded {
                what: "metadata journal record size in bytes".to_string(),
                value: len,
                max: RECORD_BYTES_MAX,
            });
        }
        let len_bytes = (len as u32).to_le_bytes();
        let checksum = fnv1a64(&[&len_bytes, &self.buf[RECORD_HEADER_BYTES..]]);
        self.buf[0..4].copy_from_slice(&len_bytes);
        self.buf[4..12].copy_from_slice(&checksum.to_le_bytes());
        Ok(self.buf)
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!("needs {n} more bytes, has {}", self.buf.len()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(self.u32()? as i32)
    }

    fn i64(&mut self) -> Result<i64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?).map_err(|e| format!("path is not UTF-8: {e}"))
    }
}

fn decode_record(payload: &[u8]) -> Result<Record, String> {
    let mut d = Decoder { buf: payload };
    let record = match d.u8()? {
        RECORD_CHECKPOINT => Record::Checkpoint {
            last_zxid: d.i64()?,
        },
        RECORD_IMAGE => {
            let path = d.string()?;
            let data = d.bytes()?;
            let node = Node {
                data,
                version: d.i32()?,
                cversion: d.i32()?,
                ephemeral_owner: 0,
                czxid: d.i64()?,
                mzxid: d.i64()?,
                ctime_ms: d.i64()?,
                mtime_ms: d.i64()?,
                children: Default::default(),
            };
            Record::Image { path, node }
        }
        RECORD_TXN => {
            let zxid = d.i64()?;
            let time_ms = d.i64()?;
            let count = d.u32()? as usize;
            // Each change takes at least 9 bytes: do not trust `count` for the allocation.
            let mut changes = Vec::with_capacity(count.min(d.buf.len() / 9));
            for _ in 0..count {
                changes.push(decode_change(&mut d)?);
            }
            Record::Txn {
                zxid,
                time_ms,
                changes,
            }
        }
        other => return Err(format!("unknown record type {other}")),
    };
    if !d.buf.is_empty() {
        return Err(format!("{} trailing bytes", d.buf.len()));
    }
    Ok(record)
}

fn decode_change(d: &mut Decoder<'_>) -> Result<Change, String> {
    Ok(match d.u8()? {
        CHANGE_CREATED => Change::Created {
            path: d.string()?,
            data: d.bytes()?,
            ephemeral: false,
            parent_cversion: d.i32()?,
        },
        CHANGE_SET => Change::Set {
            path: d.string()?,
            data: d.bytes()?,
            ephemeral: false,
            version: d.i32()?,
        },
        CHANGE_DELETED => Change::Deleted {
            path: d.string()?,
            ephemeral: false,
            parent_cversion: d.i32()?,
        },
        other => return Err(format!("unknown change type {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_known_values() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&[b"foobar"]), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a64(&[b"foo", b"bar"]), fnv1a64(&[b"foobar"]));
    }

    #[test]
    fn txn_record_round_trips() {
        let changes = vec![
            Change::Created {
                path: "/a".into(),
                data: b"x".to_vec(),
                ephemeral: false,
                parent_cversion: 7,
            },
            Change::Created {
                path: "/e".into(),
                data: vec![],
                ephemeral: true,
                parent_cversion: 8,
            },
            Change::Set {
                path: "/a".into(),
                data: b"yy".to_vec(),
                ephemeral: false,
                version: 1,
            },
            Change::Deleted {
                path: "/a".into(),
                ephemeral: false,
                parent_cversion: 9,
            },
        ];
        let record = encode_txn(5, 1234, &changes).unwrap().unwrap();
        let payload = framed_payload(&record).unwrap();
        let Record::Txn {
            zxid,
            time_ms,
            changes: decoded,
        } = decode_record(payload).unwrap()
        else {
            panic!("not a txn");
        };
        assert_eq!((zxid, time_ms), (5, 1234));
        let expected: Vec<Change> = changes.into_iter().filter(|c| !c.is_ephemeral()).collect();
        assert_eq!(decoded, expected);
        assert!(encode_txn(6, 0, &[]).unwrap().is_none());
    }

    #[test]
    fn framing_rejects_every_damage() {
        let record = encode_txn(
            1,
            0,
            &[Change::Created {
                path: "/a".into(),
                data: b"data".to_vec(),
                ephemeral: false,
                parent_cversion: 1,
            }],
        )
        .unwrap()
        .unwrap();
        assert!(framed_payload(&record).is_some());
        for cut in 0..record.len() {
            assert!(framed_payload(&record[..cut]).is_none(), "cut at {cut}");
        }
        for flip in 0..record.len() {
            let mut damaged = record.clone();
            damaged[flip] ^= 0x40;
            assert!(framed_payload(&damaged).is_none(), "flip at {flip}");
        }
    }

    #[test]
    fn decode_rejects_garbage_without_panicking() {
        for payload in [
            &[][..],
            &[9][..],
            &[RECORD_TXN, 1, 2][..],
            &[
                RECORD_TXN, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
            ][..],
            &[RECORD_IMAGE, 255, 255, 255, 255][..],
            &[RECORD_CHECKPOINT, 0, 0, 0, 0, 0, 0, 0, 0, 1][..],
        ] {
            assert!(decode_record(payload).is_err(), "{payload:?}");
        }
    }
}

//! The active segment's sliding mapped window.
//!
//! An active segment's file is `segment.bytes` long (sparse), but only a window of it is
//! mapped at a time: the bytes around the write position. As soon as the writer has written
//! into its window, the next window — overlapping the last quarter of this one, so no
//! batch ever straddles two maps — is mapped and pre-faulted writable
//! (`MADV_POPULATE_WRITE`) by the `kb-prefault` thread, off the produce path and without
//! the log lock. When an append no longer fits the current window the writer switches to
//! the prepared one (or, if it is not ready, maps one itself) and the old map is dropped.
//! So the pages a broker has mapped — its resident set, as the kernel and container limits
//! count it — are at most about two windows per partition being written, not every byte of
//! every active segment: written pages live on in the page cache, shared with `sendfile`.
//!
//! With `log.segment.drop.behind.bytes` set, written pages do not stay cached for ever:
//! each time the writer moves to a new window, the `kb-drop-behind` thread starts
//! writeback of what is now below it and, once the writer is that many bytes past a range,
//! waits for the range's writeback and drops it from the page cache
//! (`POSIX_FADV_DONTNEED`). The freed pages are what the next windows are populated with:
//! on a VM whose free memory goes back to its host (free page reporting), a page that was
//! never freed long enough to be handed back costs no fault on the host, and a fresh one
//! does (docs/tuning.md, "Dropping written pages behind the writer"). Dropping never loses
//! data: the kernel drops only clean, unmapped pages, and a later read of a dropped range
//! reads it from disk. A failed writeback is handed to the segment's next flush (waiting
//! for writeback takes the error from the file, so fsync alone would not report it).
//!
//! The prefault thread never touches the mapped memory; a window whose segment was
//! deactivated (and its file trimmed) meanwhile is only unmapped. `MADV_POPULATE_WRITE`
//! reports a failure (a trimmed file, a full file system) as an error, never a SIGBUS; the
//! writer only ever stores into bytes it reserved blocks for first.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use memmap2::{Advice, MmapMut, MmapOptions};

/// Window starts and sizes are multiples of this: 2 MiB, so the kernel can map the page
/// cache's large folios with one page-table entry per 2 MiB (a window at an unaligned file
/// offset is faulted 4 KiB at a time: twice the system CPU per byte, measured).
pub const WINDOW_ALIGN: usize = 2 * 1024 * 1024;
/// Default bytes mapped per active segment (`log.segment.map.window.bytes`); see
/// docs/tuning.md for how it was chosen.
pub const DEFAULT_WINDOW_BYTES: usize = 8 * 1024 * 1024;
/// The smallest window accepted.
pub const MIN_WINDOW_BYTES: usize = 2 * WINDOW_ALIGN;

/// How an active segment is mapped, and what becomes of the pages it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// `log.segment.map.window.bytes`: bytes mapped at a time.
    pub bytes: usize,
    /// `log.segment.drop.behind.bytes`: written pages this far behind the writer are
    /// written back and dropped from the page cache; `None` (-1, the default) keeps them,
    /// as Kafka does (the kernel evicts them under memory pressure).
    pub drop_behind: Option<usize>,
}

impl Default for WindowConfig {
    fn default() -> WindowConfig {
        WindowConfig {
            bytes: DEFAULT_WINDOW_BYTES,
            drop_behind: None,
        }
    }
}

/// Counters of the windows mapped by this process (for the metrics and the bench).
pub struct WindowStats {
    /// Windows the prefault thread mapped and populated ahead of the writer.
    pub prefaulted: AtomicU64,
    /// Bytes it populated.
    pub prefaulted_bytes: AtomicU64,
    /// Windows the writer had to map itself (the prepared one was not ready or too small).
    pub mapped_inline: AtomicU64,
    /// Bytes handed to the drop-behind thread to drop from the page cache.
    pub dropped_bytes: AtomicU64,
    /// Drop-behind requests not made because the thread's queue was full (their ranges
    /// go with the next request).
    pub drop_behind_deferred: AtomicU64,
}

pub static STATS: WindowStats = WindowStats {
    prefaulted: AtomicU64::new(0),
    prefaulted_bytes: AtomicU64::new(0),
    mapped_inline: AtomicU64::new(0),
    dropped_bytes: AtomicU64::new(0),
    drop_behind_deferred: AtomicU64::new(0),
};

/// Cleared once the kernel refuses `MADV_POPULATE_WRITE` (before Linux 5.14): windows are
/// then mapped ahead but faulted by the writer.
static POPULATE_SUPPORTED: AtomicBool = AtomicBool::new(true);

fn align_down(n: usize) -> usize {
    n - n % WINDOW_ALIGN
}

fn align_up(n: usize) -> usize {
    n.div_ceil(WINDOW_ALIGN) * WINDOW_ALIGN
}

/// One mapped range `[start, start + len)` of a segment file.
struct Window {
    start: usize,
    map: MmapMut,
}

impl Window {
    fn map(file: &File, start: usize, len: usize) -> io::Result<Window> {
        debug_assert!(start.is_multiple_of(WINDOW_ALIGN) && len > 0);
        // SAFETY: the segment owns this file and only resizes it (trim on deactivate,
        // growth on activate) after dropping its windows; a window still being prepared by
        // the prefault thread is never dereferenced, only advised and unmapped.
        let map = unsafe {
            MmapOptions::new()
                .offset(start as u64)
                .len(len)
                .map_mut(file)?
        };
        Ok(Window { start, map })
    }

    fn end(&self) -> usize {
        self.start + self.map.len()
    }

    fn covers(&self, from: usize, to: usize) -> bool {
        from >= self.start && to <= self.end()
    }
}

/// A window requested from the prefault thread.
struct Prepared {
    start: usize,
    len: usize,
    file: Arc<File>,
    cancelled: AtomicBool,
    /// Set by the prefault thread when it starts on this window.
    started: AtomicBool,
    result: Mutex<Option<io::Result<Window>>>,
    done: Condvar,
}

/// The thread `name` doing `work` on each job of `jobs` until every sender is gone.
fn spawn_worker<T: Send + 'static>(name: &str, jobs: mpsc::Receiver<T>, work: fn(T)) {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || jobs.into_iter().for_each(work))
        .unwrap_or_else(|e| panic!("spawning the {name} thread: {e}"));
}

fn prefault_queue() -> &'static Sender<Arc<Prepared>> {
    static QUEUE: OnceLock<Sender<Arc<Prepared>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Arc<Prepared>>();
        spawn_worker("kb-prefault", rx, |job| prepare(&job));
        tx
    })
}

fn prepare(job: &Prepared) {
    if job.cancelled.load(Ordering::Acquire) {
        return;
    }
    job.started.store(true, Ordering::Release);
    let result = Window::map(&job.file, job.start, job.len);
    if let Ok(w) = &result {
        if POPULATE_SUPPORTED.load(Ordering::Relaxed) && !job.cancelled.load(Ordering::Acquire) {
            match w.map.advise(Advice::PopulateWrite) {
                Ok(()) => {
                    STATS.prefaulted.fetch_add(1, Ordering::Relaxed);
                    STATS
                        .prefaulted_bytes
                        .fetch_add(job.len as u64, Ordering::Relaxed);
                }
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    log::info!("MADV_POPULATE_WRITE unsupported here ({e}); windows fault lazily");
                    POPULATE_SUPPORTED.store(false, Ordering::Relaxed);
                }
                // A trimmed file or a full file system: the writer finds out for itself
                // when it reserves blocks.
                Err(e) => log::debug!("prefaulting a segment window: {e}"),
            }
        }
    }
    *job.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
    job.done.notify_all();
}

/// Written ranges of one file for the drop-behind thread: `write` is to be written back,
/// `drop` (written back earlier, or waited for now) dropped from the page cache.
struct Behind {
    file: Arc<File>,
    write: (usize, usize),
    drop: (usize, usize),
    /// Where a failure goes: waiting for writeback takes the error from the file, so the
    /// segment's next flush would not see it; the segment gives it to that flush instead.
    error: Arc<AtomicI32>,
}

/// Requests waiting for the drop-behind thread; when it is this far behind, ranges wait in
/// their segment for the next request (cached a little longer, nothing else).
const DROP_BEHIND_QUEUE: usize = 64;

fn drop_behind_queue() -> &'static SyncSender<Behind> {
    static QUEUE: OnceLock<SyncSender<Behind>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel::<Behind>(DROP_BEHIND_QUEUE);
        spawn_worker("kb-drop-behind", rx, |job| write_back_and_drop(&job));
        tx
    })
}

/// `sync_file_range(2)` over `[from, to)`; the first failure is kept in `error` for the
/// segment's next flush.
fn sync_range(
    file: &File,
    (from, to): (usize, usize),
    flags: nix::libc::c_uint,
    error: &AtomicI32,
) {
    if to <= from {
        return;
    }
    // SAFETY: a plain system call on a descriptor the Arc keeps open; no memory is passed.
    let rc = unsafe {
        nix::libc::sync_file_range(
            file.as_raw_fd(),
            from as nix::libc::off64_t,
            (to - from) as nix::libc::off64_t,
            flags,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        log::error!("writing back a segment's pages failed: {e}; its next flush fails");
        let errno = e.raw_os_error().unwrap_or(nix::libc::EIO);
        let _ = error.compare_exchange(0, errno, Ordering::AcqRel, Ordering::Acquire);
    }
}

fn write_back_and_drop(job: &Behind) {
    use nix::libc::{
        SYNC_FILE_RANGE_WAIT_AFTER, SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE,
    };
    // Start the newly written range first, so its writeback runs while this waits.
    sync_range(&job.file, job.write, SYNC_FILE_RANGE_WRITE, &job.error);
    let (from, to) = job.drop;
    if to <= from {
        return;
    }
    // Dirty pages or pages under writeback are not dropped: wait for them to be clean.
    let wait = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
    sync_range(&job.file, job.drop, wait, &job.error);
    if let Err(e) = nix::fcntl::posix_fadvise(
        job.file.as_raw_fd(),
        from as nix::libc::off_t,
        (to - from) as nix::libc::off_t,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    ) {
        log::debug!("dropping written pages from the page cache: {e}");
    }
}

/// The mapped part of an active segment.
pub struct ActiveMap {
    file: Arc<File>,
    /// The file's length while active: nothing is mapped past it.
    capacity: usize,
    window_bytes: usize,
    current: Option<Window>,
    next: Option<Arc<Prepared>>,
    drop_behind: Option<usize>,
    /// Drop-behind: bytes below this were handed to writeback / dropped.
    written_back: usize,
    dropped: usize,
    /// The segment's record of a failed writeback (see [`Behind::error`]).
    writeback_error: Arc<AtomicI32>,
}

impl ActiveMap {
    /// Maps nothing yet: the first window is mapped by the first [`ActiveMap::writable`].
    pub fn new(
        file: Arc<File>,
        capacity: usize,
        config: WindowConfig,
        writeback_error: Arc<AtomicI32>,
    ) -> ActiveMap {
        ActiveMap {
            file,
            capacity,
            window_bytes: align_up(config.bytes.max(MIN_WINDOW_BYTES)),
            current: None,
            next: None,
            drop_behind: config.drop_behind,
            written_back: 0,
            dropped: 0,
            writeback_error,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes mapped now (the current window and a prepared one), for tests and the bench.
    pub fn mapped_bytes(&self) -> usize {
        let prepared = self.next.as_ref().map_or(0, |p| {
            let ready = p.result.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(*ready, Some(Ok(_))) {
                p.len
            } else {
                0
            }
        });
        self.current.as_ref().map_or(0, |w| w.map.len()) + prepared
    }

    /// Makes `[from, to)` mapped, sliding the window if it is not; `to` must be within the
    /// capacity. Called before any byte is copied, so a failed map is an error.
    pub fn make_writable(&mut self, from: usize, to: usize) -> io::Result<()> {
        assert!(
            from <= to && to <= self.capacity,
            "writes stay within the file"
        );
        if to == from || self.current.as_ref().is_some_and(|w| w.covers(from, to)) {
            return Ok(());
        }
        if let Some(next) = self.next.take() {
            let mut result = next.result.lock().unwrap_or_else(|p| p.into_inner());
            // Being populated right now: waiting for the thread costs less than faulting
            // the same pages alongside it. Still queued: the writer maps its own.
            while result.is_none() && next.started.load(Ordering::Acquire) {
                result = next.done.wait(result).unwrap_or_else(|p| p.into_inner());
            }
            match result.take() {
                Some(Ok(w)) if w.covers(from, to) => {
                    self.current = Some(w);
                    self.release_behind(from);
                    return Ok(());
                }
                Some(_) => {}
                // Not started: the thread will skip it.
                None => next.cancelled.store(true, Ordering::Release),
            }
        }
        let start = align_down(from);
        let len = (self.window_bytes.max(align_up(to) - start)).min(self.capacity - start);
        // The old window goes first: at most one window and one prepared stay mapped.
        self.current = None;
        self.current = Some(Window::map(&self.file, start, len)?);
        STATS.mapped_inline.fetch_add(1, Ordering::Relaxed);
        self.release_behind(from);
        Ok(())
    }

    /// Drop-behind, after the writer moved to a new window to write at `position` (every
    /// byte below it written, none of it mapped but by the new window): asks for writeback
    /// of what was written since the last request and for the range now `drop_behind`
    /// bytes behind to be dropped from the page cache.
    fn release_behind(&mut self, position: usize) {
        let Some(behind) = self.drop_behind else {
            return;
        };
        let Some(window_start) = self.current.as_ref().map(|w| w.start) else {
            return;
        };
        // Never a page of the current window; a truncated segment writes below the marks
        // again, so they follow it down.
        let written = align_down(position.min(window_start));
        self.written_back = self.written_back.min(written);
        self.dropped = self.dropped.min(written);
        let drop_to = align_down(written.saturating_sub(behind)).max(self.dropped);
        let job = Behind {
            file: Arc::clone(&self.file),
            write: (self.written_back, written),
            drop: (self.dropped, drop_to),
            error: Arc::clone(&self.writeback_error),
        };
        let dropping = drop_to - self.dropped;
        match drop_behind_queue().try_send(job) {
            Ok(()) => {
                self.written_back = written;
                self.dropped = drop_to;
                STATS
                    .dropped_bytes
                    .fetch_add(dropping as u64, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                STATS.drop_behind_deferred.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// The mapped bytes `[from, to)` (after [`ActiveMap::make_writable`] for that range).
    pub fn slice_mut(&mut self, from: usize, to: usize) -> &mut [u8] {
        let w = self
            .current
            .as_mut()
            .filter(|w| w.covers(from, to))
            .expect("the range was made writable");
        &mut w.map[from - w.start..to - w.start]
    }

    /// The mapped bytes `[from, to)` if the current window holds them.
    pub fn slice(&self, from: usize, to: usize) -> Option<&[u8]> {
        let w = self.current.as_ref().filter(|w| w.covers(from, to))?;
        Some(&w.map[from - w.start..to - w.start])
    }

    /// Called after a write ending at `position`: asks the prefault thread for the window
    /// after the current one as soon as the writer is in it (asked at its middle, the
    /// prefault thread — one for every partition — was late for two windows in three when
    /// eight partitions were written at once, measured; the writer then faults them itself).
    pub fn wrote_up_to(&mut self, position: usize) {
        let Some(w) = &self.current else { return };
        if self.next.is_some() || position < w.start || w.end() >= self.capacity {
            return;
        }
        // The next window overlaps the end of this one by a quarter of a window, so a batch
        // starting in that last quarter fits the next window whole; pages of the overlap are
        // mapped twice (cheap: they are in the page cache by then), the rest once.
        let start = align_down(position.max(w.end() - self.window_bytes / 4));
        let len = self.window_bytes.min(self.capacity - start);
        let job = Arc::new(Prepared {
            start,
            len,
            file: Arc::clone(&self.file),
            cancelled: AtomicBool::new(false),
            started: AtomicBool::new(false),
            result: Mutex::new(None),
            done: Condvar::new(),
        });
        if prefault_queue().send(Arc::clone(&job)).is_ok() {
            self.next = Some(job);
        }
    }

    /// Unmaps everything (a prepared window still being made is dropped by its thread).
    pub fn close(&mut self) {
        if let Some(next) = self.next.take() {
            next.cancelled.store(true, Ordering::Release);
            next.result.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
        self.current = None;
    }
}

impl Drop for ActiveMap {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_writeback_is_kept_for_the_segment_and_only_the_first() {
        // sync_file_range refuses a pipe (ESPIPE): a stand-in for a device's EIO.
        let (read, _write) = nix::unistd::pipe().expect("pipe");
        let job = Behind {
            file: Arc::new(File::from(read)),
            write: (0, WINDOW_ALIGN),
            drop: (0, WINDOW_ALIGN),
            error: Arc::new(AtomicI32::new(0)),
        };
        write_back_and_drop(&job);
        assert_eq!(job.error.load(Ordering::Acquire), nix::libc::ESPIPE);
        job.error.store(nix::libc::EIO, Ordering::Release);
        write_back_and_drop(&job);
        assert_eq!(
            job.error.load(Ordering::Acquire),
            nix::libc::EIO,
            "an error waiting for the flush is not replaced"
        );
    }
}

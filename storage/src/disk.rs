//! Disk space reservation and what an I/O error means for a log directory.
//!
//! Memory-mapped files are written by storing to memory, and a store to a page with no disk
//! block behind it on a full file system is answered by SIGBUS, not by an error. So every
//! mapped file here (the active segment, the two indexes) gets its blocks with `fallocate(2)`
//! before the range is written; a full disk is then `ENOSPC` from a system call, which the
//! caller turns into KAFKA_STORAGE_ERROR for that one partition and retries on the next
//! write. File systems without `fallocate` get the range written with zeros instead (the
//! range is beyond the valid data, so zeros are what it already reads as).
//!
//! Errors are sorted in two: out of space (ENOSPC, EDQUOT) is transient — writes resume by
//! themselves once space is freed; a failing device or file system (EIO, EROFS, EUCLEAN,
//! ENXIO, ENODEV) takes the whole log directory offline, as Kafka's LogDirFailureChannel
//! does. Anything else fails the one operation.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};

/// Zeros written per call when `fallocate` is not supported.
const ZERO_FILL_CHUNK_BYTES: usize = 64 * 1024;

/// Gives `file` disk blocks for `[offset, offset + len)` without changing its length.
pub fn reserve_blocks(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let (Ok(start), Ok(length)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(Errno::EFBIG as i32));
    };
    loop {
        match fallocate(
            file.as_raw_fd(),
            FallocateFlags::FALLOC_FL_KEEP_SIZE,
            start,
            length,
        ) {
            Ok(()) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::EOPNOTSUPP) => return zero_fill(file, offset, len),
            Err(e) => return Err(io::Error::from_raw_os_error(e as i32)),
        }
    }
}

/// Extends the reserved prefix `[0, reserved)` of a mapped file of `capacity` bytes so that
/// it covers `need` bytes: by a whole `chunk` when it fits, else exactly what is needed.
/// Returns the new reserved length; on error nothing changed.
pub fn reserve_ahead(
    file: &File,
    path: &Path,
    reserved: usize,
    need: usize,
    chunk: usize,
    capacity: usize,
) -> Result<usize, crate::StorageError> {
    let need = need.min(capacity);
    if need <= reserved {
        return Ok(reserved);
    }
    let target = need.max(reserved + chunk).min(capacity);
    let reserve = |to: usize| reserve_blocks(file, reserved as u64, (to - reserved) as u64);
    match reserve(target) {
        Ok(()) => Ok(target),
        Err(_) if need < target => reserve(need).map(|()| need),
        Err(e) => Err(e),
    }
    .map_err(|e| crate::StorageError::io(format!("reserving space for {}", path.display()), e))
}

/// Makes `[offset, offset + len)` of `file` read as zeros without writing to it: the blocks
/// are deallocated (a hole), so it needs no free space and cannot fault a map. Falls back to
/// writing zeros where holes are not supported.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let (Ok(start), Ok(length)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(Errno::EFBIG as i32));
    };
    let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    loop {
        match fallocate(file.as_raw_fd(), mode, start, length) {
            Ok(()) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::EOPNOTSUPP) => return zero_fill(file, offset, len),
            Err(e) => return Err(io::Error::from_raw_os_error(e as i32)),
        }
    }
}

fn zero_fill(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let zeros = [0u8; ZERO_FILL_CHUNK_BYTES];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(ZERO_FILL_CHUNK_BYTES as u64) as usize;
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// True for errors that pass once space is freed.
pub fn is_out_of_space(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENOSPC | Errno::EDQUOT)
    )
}

/// True for errors that mean the device or file system under a log dir has failed.
pub fn is_device_failure(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EIO | Errno::EROFS | Errno::EUCLEAN | Errno::ENXIO | Errno::ENODEV)
    )
}

/// Whether a log directory still works; shared by every log in it. Once offline a dir stays
/// offline until the broker restarts (Kafka's rule: the disk needs an operator).
#[derive(Debug)]
pub struct DirHealth {
    dir: PathBuf,
    offline: AtomicBool,
}

impl DirHealth {
    pub fn new(dir: &Path) -> DirHealth {
        DirHealth {
            dir: dir.to_path_buf(),
            offline: AtomicBool::new(false),
        }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }
    /// Takes the dir offline (logged once).
    pub fn mark_offline(&self, cause: &dyn std::fmt::Display) {
        if !self.offline.swap(true, Ordering::AcqRel) {
            log::error!(
                "log dir {} is offline: {cause}; its partitions answer KAFKA_STORAGE_ERROR until restart",
                self.dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_without_changing_the_length() {
        let dir = std::env::temp_dir().join(format!("kb-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("f"))
            .expect("open");
        file.set_len(1 << 20).expect("len");
        reserve_blocks(&file, 4096, 64 * 1024).expect("reserve");
        assert_eq!(file.metadata().expect("stat").len(), 1 << 20);
        assert!(is_out_of_space(&io::Error::from_raw_os_error(
            Errno::ENOSPC as i32
        )));
        assert!(is_device_failure(&io::Error::from_raw_os_error(
            Errno::EROFS as i32
        )));
        assert!(!is_device_failure(&io::Error::from_raw_os_error(
            Errno::ENOSPC as i32
        )));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Offset checkpoint files at the log-dir root, in Kafka's text format:
//!
//! ```text
//! 0                 <- version
//! 2                 <- entry count
//! orders 0 1234     <- topic partition offset
//! orders 1 99
//! ```
//!
//! Used for `recovery-point-offset-checkpoint`, `replication-offset-checkpoint` and
//! `log-start-offset-checkpoint`. Written atomically (temp file, fsync, rename), so a crash
//! leaves either the old or the new file. A malformed file is an error naming the path.

use std::collections::HashMap;
use std::path::Path;

use crate::log::write_atomically;
use crate::{StorageError, TopicPartition};

pub const RECOVERY_POINT: &str = "recovery-point-offset-checkpoint";
pub const REPLICATION_OFFSET: &str = "replication-offset-checkpoint";
pub const LOG_START_OFFSET: &str = "log-start-offset-checkpoint";

/// Largest checkpoint file read (a file of a million partitions is ~40 MB).
pub const CHECKPOINT_BYTES_MAX: u64 = 256 * 1024 * 1024;

pub fn read(path: &Path) -> Result<HashMap<TopicPartition, i64>, StorageError> {
    let bytes = match read_bounded(path, CHECKPOINT_BYTES_MAX) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(StorageError::io(format!("reading {}", path.display()), e)),
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| StorageError::corrupt(path, "checkpoint is not UTF-8"))?;
    parse(text, path)
}

/// Reads a whole file of at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    let mut out = Vec::new();
    file.take(max).read_to_end(&mut out)?;
    Ok(out)
}

/// Parses a checkpoint's text (`path` names it in errors).
pub fn parse(text: &str, path: &Path) -> Result<HashMap<TopicPartition, i64>, StorageError> {
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        return Err(StorageError::corrupt(path, "unknown checkpoint version"));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| StorageError::corrupt(path, "bad entry count"))?;
    let mut out = HashMap::with_capacity(count.min(1 << 16));
    for line in lines.by_ref().take(count) {
        let mut parts = line.split(' ');
        let parsed = (|| {
            let topic = parts.next()?.to_string();
            let partition = parts.next()?.parse().ok()?;
            let offset = parts.next()?.parse().ok()?;
            Some((TopicPartition { topic, partition }, offset))
        })();
        let (tp, offset) = parsed.ok_or_else(|| StorageError::corrupt(path, "bad entry"))?;
        out.insert(tp, offset);
    }
    if out.len() != count {
        return Err(StorageError::corrupt(path, "fewer entries than its count"));
    }
    Ok(out)
}

pub fn write(path: &Path, entries: &[(TopicPartition, i64)]) -> Result<(), StorageError> {
    let mut text = format!("0\n{}\n", entries.len());
    for (tp, offset) in entries {
        text.push_str(&format!("{} {} {}\n", tp.topic, tp.partition, offset));
    }
    write_atomically(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("kb-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(RECOVERY_POINT);
        let entries = vec![
            (TopicPartition::new("a", 0), 5),
            (TopicPartition::new("b-c", 3), 7),
        ];
        write(&path, &entries).expect("write");
        let read_back = read(&path).expect("read");
        assert_eq!(read_back.len(), 2);
        assert_eq!(read_back[&TopicPartition::new("b-c", 3)], 7);
        std::fs::write(&path, "0\n3\na 0 1\n").expect("write");
        assert!(read(&path).is_err());
        assert!(read(&dir.join("absent"))
            .expect("absent is empty")
            .is_empty());
    }
}

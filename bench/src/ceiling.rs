//! The machine's own ceilings, measured in the same run as the broker: `sendfile(2)` of a
//! file in the page cache to a loopback socket, and plain `write(2)` to a loopback socket,
//! each drained by a reader thread into a reused buffer. kbroker's consume path is the
//! first (plus Fetch framing); its produce path is at best the second (plus a copy into
//! the mapped segment).
//!
//! One connection and one writer thread each, as one kbroker connection is served by one
//! processor thread. Socket buffers are left to the kernel's autotuning.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

const FILE_BYTES: usize = 64 * 1024 * 1024;
const CHUNK_BYTES: usize = 1024 * 1024;
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Bytes per second one writer pushes through loopback.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ceilings {
    pub sendfile_bytes_per_s: f64,
    pub tcp_bytes_per_s: f64,
}

/// Rounds of each measurement; the best round is the ceiling (other load on the machine
/// can only lower a round).
const ROUNDS: u32 = 3;

/// Measures both ceilings in alternating rounds of `duration / ROUNDS` and keeps the best.
pub fn measure(dir: &Path, duration: Duration) -> Result<Ceilings, String> {
    let round = duration / ROUNDS;
    let mut best = Ceilings::default();
    for _ in 0..ROUNDS {
        best.sendfile_bytes_per_s = best.sendfile_bytes_per_s.max(sendfile_ceiling(dir, round)?);
        best.tcp_bytes_per_s = best.tcp_bytes_per_s.max(tcp_ceiling(round)?);
    }
    Ok(best)
}

impl Ceilings {
    /// The higher of two measurements of each ceiling.
    pub fn max(self, other: Ceilings) -> Ceilings {
        Ceilings {
            sendfile_bytes_per_s: self.sendfile_bytes_per_s.max(other.sendfile_bytes_per_s),
            tcp_bytes_per_s: self.tcp_bytes_per_s.max(other.tcp_bytes_per_s),
        }
    }
}

/// A connected pair: (writer side, reader thread that counts and drains until EOF).
fn loopback_pair() -> Result<(TcpStream, std::thread::JoinHandle<u64>), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let reader = std::thread::spawn(move || {
        let Ok(mut s) = TcpStream::connect(addr) else {
            return 0;
        };
        let mut buf = vec![0u8; READ_BUFFER_BYTES];
        let mut total = 0u64;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let (writer, _) = listener.accept().map_err(|e| e.to_string())?;
    Ok((writer, reader))
}

fn finish(
    writer: TcpStream,
    reader: std::thread::JoinHandle<u64>,
    started: Instant,
    sent: u64,
) -> Result<f64, String> {
    drop(writer);
    let received = reader.join().map_err(|_| "reader panicked")?;
    let elapsed = started.elapsed().as_secs_f64();
    if received != sent {
        return Err(format!("loopback reader got {received} of {sent} bytes"));
    }
    Ok(sent as f64 / elapsed)
}

fn sendfile_ceiling(dir: &Path, duration: Duration) -> Result<f64, String> {
    let path = dir.join(format!("kbroker-bench-sendfile-{}.bin", std::process::id()));
    let chunk: Vec<u8> = (0..CHUNK_BYTES).map(|i| (i % 253) as u8).collect();
    {
        let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        for _ in 0..FILE_BYTES / CHUNK_BYTES {
            f.write_all(&chunk).map_err(|e| e.to_string())?;
        }
    }
    let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
    let mut sink = Vec::new();
    (&file).read_to_end(&mut sink).map_err(|e| e.to_string())?; // into the page cache
    drop(sink);
    let _ = std::fs::remove_file(&path); // the open descriptor keeps the data
    let (writer, reader) = loopback_pair()?;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut offset: libc::off_t = 0;
    while started.elapsed() < duration {
        if offset as usize >= FILE_BYTES {
            offset = 0;
        }
        let left = FILE_BYTES - offset as usize;
        // SAFETY: both descriptors are open for the call; offset is a valid out-pointer.
        let n = unsafe {
            libc::sendfile(
                writer.as_raw_fd(),
                file.as_raw_fd(),
                &mut offset,
                left.min(CHUNK_BYTES * 8),
            )
        };
        if n < 0 {
            return Err(format!("sendfile: {}", std::io::Error::last_os_error()));
        }
        sent += n as u64;
    }
    finish(writer, reader, started, sent)
}

fn tcp_ceiling(duration: Duration) -> Result<f64, String> {
    let chunk = vec![7u8; CHUNK_BYTES];
    let (mut writer, reader) = loopback_pair()?;
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < duration {
        writer.write_all(&chunk).map_err(|e| e.to_string())?;
        sent += chunk.len() as u64;
    }
    finish(writer, reader, started, sent)
}

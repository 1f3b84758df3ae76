//! Resident memory while writing: 2 GB of raw 1 MiB produce batches to 8 partitions of a
//! broker with 1 GiB segments (Kafka's default `segment.bytes`), the broker's `/proc`
//! status sampled every 20 ms for its resident set (VmRSS) and the anonymous part of it
//! (RssAnon: heap and stacks — the rest is mapped file pages), and its user and system CPU.
//! The active segments are written through a mapped window (`log.segment.map.window.bytes`),
//! so what stays resident is bounded by window × partitions, not by bytes written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::{BrokerProcess, BrokerSpec};
use crate::wire;

pub const TOTAL_BYTES: u64 = 2_000_000_000;
pub const PARTITIONS: i32 = 8;
const SEGMENT_BYTES: u64 = 1 << 30;
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// The write stops here even if 2 GB were not reached (a slow machine).
const MAX_WALL: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Default)]
pub struct MemoryRun {
    pub window: String,
    pub written_bytes: u64,
    pub wall_s: f64,
    pub peak_rss_mb: f64,
    pub peak_anon_mb: f64,
    pub peak_file_mb: f64,
    /// How far the machine's page cache (`Cached` in /proc/meminfo) grew above where it
    /// was at the start: the broker's written pages, with everything else on the machine.
    pub page_cache_growth_mb: f64,
    /// `log.segment.drop.behind.bytes` of the run, if set.
    pub drop_behind: Option<usize>,
    pub user_cpu_s: f64,
    pub system_cpu_s: f64,
    /// Windows the prefault thread prepared / the writers had to map themselves.
    pub windows_prefaulted: f64,
    pub windows_inline: f64,
}

/// (VmRSS, RssAnon, RssFile + RssShmem) in bytes.
fn rss(pid: u32) -> Option<(u64, u64, u64)> {
    let [rss, anon, file, shmem] =
        crate::broker::proc_status_bytes(pid, ["VmRSS", "RssAnon", "RssFile", "RssShmem"])?;
    Some((rss, anon, file + shmem))
}

/// The machine's page cache in bytes.
fn page_cache() -> u64 {
    crate::broker::kib_fields("/proc/meminfo", ["Cached"]).map_or(0, |[c]| c)
}

/// Writes [`TOTAL_BYTES`] to a fresh broker started with `overrides` (besides 1 GiB
/// segments); `window` labels the run.
pub fn measure(
    binary: &std::path::Path,
    window: &str,
    overrides: &[String],
) -> Result<MemoryRun, String> {
    let mut all = vec![format!("log.segment.bytes={SEGMENT_BYTES}")];
    all.extend(overrides.iter().cloned());
    let spec = BrokerSpec {
        binary: binary.to_path_buf(),
        network_threads: 3,
        io_threads: 8,
        overrides: all,
    };
    let broker = BrokerProcess::start(&spec, "memory")?;
    let pid = broker.pid().ok_or("the broker exited")?;
    wire::create_topic(&broker.bootstrap(), "bench-memory", PARTITIONS)?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let cache_before = page_cache();
    let sampler = std::thread::spawn(move || {
        let mut peak = (0u64, 0u64, 0u64, 0u64);
        while !s.load(Ordering::Acquire) {
            if let Some((r, a, f)) = rss(pid) {
                peak = (peak.0.max(r), peak.1.max(a), peak.2.max(f), peak.3);
            }
            peak.3 = peak.3.max(page_cache());
            std::thread::sleep(SAMPLE_EVERY);
        }
        peak
    });
    let (user0, sys0) = crate::broker::proc_cpu_user_system(pid).unwrap_or_default();
    let started = Instant::now();
    let mut written = 0u64;
    while written < TOTAL_BYTES && started.elapsed() < MAX_WALL {
        let spec = wire::RawProduce {
            connections: PARTITIONS as usize,
            partitions: PARTITIONS,
            records_per_batch: crate::RAW_BATCH_RECORDS,
            value_bytes: crate::RAW_VALUE_BYTES,
            acks: 1,
            pipeline_depth: 2,
            duration: Duration::from_millis(500),
        };
        let r = wire::raw_produce(&broker.bootstrap(), "bench-memory", spec)?;
        if r.errors > 0 {
            stop.store(true, Ordering::Release);
            let _ = sampler.join();
            return Err(format!(
                "{} produce errors while writing; log:\n{}",
                r.errors,
                broker.log_tail()
            ));
        }
        written += r.record_bytes;
    }
    let wall_s = started.elapsed().as_secs_f64();
    let (user1, sys1) = crate::broker::proc_cpu_user_system(pid).unwrap_or_default();
    let series = broker.scrape()?.series;
    let counter = |name: &str| series.get(name).copied().unwrap_or(f64::NAN);
    stop.store(true, Ordering::Release);
    let peak = sampler.join().map_err(|_| "sampler panicked")?;
    broker.stop();
    let mb = |b: u64| b as f64 / 1e6;
    Ok(MemoryRun {
        window: window.to_string(),
        written_bytes: written,
        wall_s,
        peak_rss_mb: mb(peak.0),
        peak_anon_mb: mb(peak.1),
        peak_file_mb: mb(peak.2),
        page_cache_growth_mb: mb(peak.3.saturating_sub(cache_before)),
        drop_behind: None,
        user_cpu_s: user1 - user0,
        system_cpu_s: sys1 - sys0,
        windows_prefaulted: counter("kbroker_segment_windows_prefaulted_total"),
        windows_inline: counter("kbroker_segment_windows_mapped_inline_total"),
    })
}

pub fn section(runs: &[MemoryRun]) -> String {
    let mut out = format!(
        "## Memory while writing 2 GB to {PARTITIONS} partitions (1 GiB segments, raw 1 MiB batches, acks=1)\n\n\
         Targets: peak VmRSS ≤ 768 MB, RssAnon ≤ 64 MB. CPU per GB written, user and system separately.\n\n\
         | window | written GB | MB/s | peak VmRSS MB | peak RssAnon MB | peak file pages MB | page cache growth MB | user CPU-s/GB | system CPU-s/GB | windows prefaulted / mapped by the writer |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in runs {
        let gb = r.written_bytes as f64 / 1e9;
        out.push_str(&format!(
            "| {} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} / {:.0} |\n",
            r.window,
            gb,
            r.written_bytes as f64 / 1e6 / r.wall_s.max(1e-9),
            r.peak_rss_mb,
            r.peak_anon_mb,
            r.peak_file_mb,
            r.page_cache_growth_mb,
            r.user_cpu_s / gb.max(1e-9),
            r.system_cpu_s / gb.max(1e-9),
            r.windows_prefaulted,
            r.windows_inline,
        ));
    }
    out
}

/// What the machine charges for new page-cache pages written through a shared mapping,
/// the way an active segment is written, measured in the bench's own thread: CPU seconds
/// (user, system) per GB of 1 MiB copies into a new sparse file, first on whatever pages
/// the kernel hands out, then once more at once on the pages the first pass freed (its
/// file deleted). On a virtual machine whose memory the host backs lazily, and takes back
/// when the guest reports it free (virtio-balloon free page reporting), the first pass
/// costs several times the second: the first write to a page the host does not back is a
/// fault on the host too, and it shows up in the guest as time in the kernel's zero-fill
/// of the new page. That is what a broker pays for every page while its page cache grows.
#[derive(Debug, Clone, Copy, Default)]
pub struct PageFill {
    pub bytes: u64,
    pub first: (f64, f64),
    pub again: (f64, f64),
    /// Whether a virtio-balloon device offers free page reporting (None: no balloon).
    pub free_page_reporting: Option<bool>,
}

/// Bytes each page-fill pass writes.
pub const PAGE_FILL_BYTES: u64 = 1 << 30;

/// VIRTIO_BALLOON_F_REPORTING, a feature bit of the balloon device (virtio device id 5).
const BALLOON_DEVICE_ID: &str = "0x0005";
const BALLOON_F_REPORTING: usize = 5;

/// Whether the machine's virtio-balloon device (if any) has free page reporting on.
fn free_page_reporting() -> Option<bool> {
    let devices = std::fs::read_dir("/sys/bus/virtio/devices").ok()?;
    for d in devices.flatten() {
        let path = d.path();
        let id = std::fs::read_to_string(path.join("device")).unwrap_or_default();
        if id.trim() != BALLOON_DEVICE_ID {
            continue;
        }
        // `features` is one '0'/'1' character per feature bit, bit 0 first.
        let features = std::fs::read_to_string(path.join("features")).unwrap_or_default();
        return Some(features.as_bytes().get(BALLOON_F_REPORTING) == Some(&b'1'));
    }
    None
}

/// This thread's (user, system) CPU seconds.
fn thread_cpu() -> (f64, f64) {
    // SAFETY: getrusage writes only into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD is valid on Linux.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) } != 0 {
        return (f64::NAN, f64::NAN);
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(u.ru_utime), s(u.ru_stime))
}

/// One pass: `bytes` written through a shared mapping of a new file in `dir`, deleted after.
fn page_fill_pass(dir: &std::path::Path, bytes: u64) -> Result<(f64, f64), String> {
    use std::os::fd::AsRawFd;
    let path = dir.join(format!("kbroker-bench-page-fill-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    let result = (|| {
        file.set_len(bytes)
            .map_err(|e| format!("sizing {}: {e}", path.display()))?;
        let len = usize::try_from(bytes).map_err(|_| "page fill larger than the address space")?;
        // SAFETY: a fresh shared mapping of a file this function owns, unmapped below
        // before the file is closed; nothing else maps it.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(format!(
                "mapping {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        let chunk = vec![0xA5u8; 1 << 20];
        let (u0, s0) = thread_cpu();
        let mut at = 0usize;
        while at < len {
            let n = chunk.len().min(len - at);
            // SAFETY: `at + n <= len`, inside the mapping; the source is a separate Vec.
            unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), (map as *mut u8).add(at), n) };
            at += n;
        }
        let (u1, s1) = thread_cpu();
        // SAFETY: `map` and `len` are what mmap returned and was given.
        unsafe { libc::munmap(map, len) };
        let gb = bytes as f64 / 1e9;
        Ok(((u1 - u0) / gb, (s1 - s0) / gb))
    })();
    drop(file);
    let _ = std::fs::remove_file(&path);
    result
}

/// Two page-fill passes in the directory the brokers' log dirs are made in.
pub fn page_fill() -> Result<PageFill, String> {
    let dir = std::env::temp_dir();
    let first = page_fill_pass(&dir, PAGE_FILL_BYTES)?;
    let again = page_fill_pass(&dir, PAGE_FILL_BYTES)?;
    Ok(PageFill {
        bytes: PAGE_FILL_BYTES,
        free_page_reporting: free_page_reporting(),
        first,
        again,
    })
}

pub fn page_fill_section(p: &PageFill) -> String {
    let balloon = match p.free_page_reporting {
        Some(true) => {
            "this machine's virtio-balloon reports free pages to its host, which takes them back"
        }
        Some(false) => "this machine has a virtio-balloon device without free page reporting",
        None => "this machine has no virtio-balloon device",
    };
    format!(
        "## New page-cache pages through a shared mapping (the machine's cost)\n\n\
         {:.1} GB of 1 MiB copies into a new sparse file through one shared mapping, in the bench's \
         own thread: **{:.2} user + {:.2} system CPU-s/GB**; at once again on the pages that pass \
         freed: {:.2} + {:.2}. The first figure is what a broker pays the kernel for every GB it \
         writes while its page cache grows (new pages), the second what a page reused at once \
         costs; {balloon}. The broker's CPU per GB below includes the first.\n",
        p.bytes as f64 / 1e9,
        p.first.0,
        p.first.1,
        p.again.0,
        p.again.1,
    )
}

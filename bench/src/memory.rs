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
    let sampler = std::thread::spawn(move || {
        let mut peak = (0u64, 0u64, 0u64);
        while !s.load(Ordering::Acquire) {
            if let Some((r, a, f)) = rss(pid) {
                peak = (peak.0.max(r), peak.1.max(a), peak.2.max(f));
            }
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
         | window | written GB | MB/s | peak VmRSS MB | peak RssAnon MB | peak file pages MB | user CPU-s/GB | system CPU-s/GB | windows prefaulted / mapped by the writer |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in runs {
        let gb = r.written_bytes as f64 / 1e9;
        out.push_str(&format!(
            "| {} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} / {:.0} |\n",
            r.window,
            gb,
            r.written_bytes as f64 / 1e6 / r.wall_s.max(1e-9),
            r.peak_rss_mb,
            r.peak_anon_mb,
            r.peak_file_mb,
            r.user_cpu_s / gb.max(1e-9),
            r.system_cpu_s / gb.max(1e-9),
            r.windows_prefaulted,
            r.windows_inline,
        ));
    }
    out
}

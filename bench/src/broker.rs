//! The broker under test: `target/release/kbroker` started on free loopback ports with a
//! temporary log dir, its CPU time and peak RSS from `/proc`, and its metrics endpoint.
//!
//! Every process started here is stopped by its PID (SIGTERM, then SIGKILL after
//! [`STOP_TIMEOUT`]) when the [`BrokerProcess`] is stopped or dropped, and its log dir is
//! removed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest metrics page read (a broker with thousands of partitions stays far below).
const SCRAPE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// How to start a broker.
#[derive(Debug, Clone)]
pub struct BrokerSpec {
    pub binary: PathBuf,
    pub network_threads: usize,
    pub io_threads: usize,
    /// Extra `key=value` overrides passed through from the command line.
    pub overrides: Vec<String>,
}

pub struct BrokerProcess {
    child: Option<Child>,
    pub port: u16,
    pub metrics_port: u16,
    dir: PathBuf,
}

impl BrokerProcess {
    pub fn start(spec: &BrokerSpec, tag: &str) -> Result<BrokerProcess, String> {
        let port = free_port()?;
        let metrics_port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("kbroker-bench-{}-{tag}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let log = std::fs::File::create(dir.join("broker.log"))
            .map_err(|e| format!("creating broker.log: {e}"))?;
        let mut overrides = vec![
            format!("listeners=PLAINTEXT://127.0.0.1:{port}"),
            format!("log.dirs={}", dir.join("data").display()),
            format!("num.network.threads={}", spec.network_threads),
            format!("num.io.threads={}", spec.io_threads),
            format!("metrics.port={metrics_port}"),
        ];
        overrides.extend(spec.overrides.iter().cloned());
        let mut command = Command::new(&spec.binary);
        for o in &overrides {
            command.arg("--override").arg(o);
        }
        let child = command
            .env(
                "RUST_LOG",
                std::env::var("KBROKER_BENCH_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", spec.binary.display()))?;
        let mut broker = BrokerProcess {
            child: Some(child),
            port,
            metrics_port,
            dir,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "broker exited with {status}; log:\n{}",
                        self.log_tail()
                    ));
                }
            }
            let up = |p| TcpStream::connect(("127.0.0.1", p)).is_ok();
            if up(self.port) && up(self.metrics_port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "broker not ready after {READY_TIMEOUT:?}; log:\n{}",
            self.log_tail()
        ))
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// User and system CPU seconds the broker has used so far (NaN when unknown).
    pub fn cpu_user_system(&self) -> (f64, f64) {
        self.pid()
            .and_then(proc_cpu_user_system)
            .unwrap_or((f64::NAN, f64::NAN))
    }

    /// Resets the peak RSS (`echo 5 > /proc/PID/clear_refs`); false where not allowed.
    pub fn reset_peak_rss(&self) -> bool {
        self.pid()
            .is_some_and(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok())
    }

    /// Peak resident set (VmHWM) in bytes since start or the last reset.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.pid().and_then(proc_peak_rss_bytes).unwrap_or(0)
    }

    pub fn scrape(&self) -> Result<Scrape, String> {
        scrape(self.metrics_port)
    }

    /// SIGTERM, wait, SIGKILL if needed; removes the log dir. Returns the exit status text.
    pub fn stop(mut self) -> String {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "not running".into();
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: signalling our own child by its PID; it has not been reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    break child
                        .wait()
                        .map_or("killed".into(), |s| format!("killed ({s})"));
                }
            }
        };
        let _ = std::fs::remove_dir_all(&self.dir);
        status
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// User and system CPU seconds of a process so far.
pub fn proc_cpu_user_system(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime / ticks, stime / ticks))
}

/// Bytes of the `/proc/PID/status` fields `names` (given in kB there), in that order;
/// None if the process or a field is gone.
pub fn proc_status_bytes<const N: usize>(pid: u32, names: [&str; N]) -> Option<[u64; N]> {
    kib_fields(&format!("/proc/{pid}/status"), names)
}

/// The `name: N kB` lines of a /proc file (`status`, `meminfo`), in bytes.
pub fn kib_fields<const N: usize>(path: &str, names: [&str; N]) -> Option<[u64; N]> {
    let status = std::fs::read_to_string(path).ok()?;
    let mut out = [0u64; N];
    for (slot, name) in out.iter_mut().zip(names) {
        let line = status
            .lines()
            .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(':')))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        *slot = kib * 1024;
    }
    Some(out)
}

fn proc_peak_rss_bytes(pid: u32) -> Option<u64> {
    proc_status_bytes(pid, ["VmHWM"]).map(|[hwm]| hwm)
}

/// One read of the metrics endpoint: every sample by its series (name and labels).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub series: BTreeMap<String, f64>,
    pub at: Option<Instant>,
}

/// `GET /metrics` over a plain HTTP/1.1 connection.
pub fn scrape(port: u16) -> Result<Scrape, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("metrics: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("metrics: {e}"))?;
    let mut raw = Vec::new();
    s.take(SCRAPE_BYTES_MAX as u64)
        .read_to_end(&mut raw)
        .map_err(|e| format!("metrics: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("metrics: no HTTP header")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("metrics: {}", head.lines().next().unwrap_or("")));
    }
    Ok(Scrape {
        series: parse_exposition(body),
        at: Some(Instant::now()),
    })
}

fn parse_exposition(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

impl Scrape {
    pub fn get(&self, series: &str) -> f64 {
        self.series.get(series).copied().unwrap_or(0.0)
    }

    /// Sum of every series of a family (all label sets).
    pub fn sum_family(&self, name: &str) -> f64 {
        let prefix = format!("{name}{{");
        self.series
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) || *k == name)
            .map(|(_, v)| v)
            .sum()
    }

    /// How many series a family has (e.g. processors).
    pub fn count_family(&self, name: &str) -> usize {
        let prefix = format!("{name}{{");
        self.series
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .count()
    }

    /// Sum of a topic's partition log end offsets (records appended, from offset 0).
    pub fn log_end_offsets(&self, topic: &str) -> f64 {
        let prefix = format!("kafka_log_log_end_offset{{topic=\"{topic}\",");
        self.series
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// The `request` label values seen in `kafka_network_requests_total`.
    pub fn requests(&self) -> Vec<String> {
        let prefix = "kafka_network_requests_total{request=\"";
        self.series
            .keys()
            .filter_map(|k| k.strip_prefix(prefix)?.strip_suffix("\"}"))
            .map(str::to_string)
            .collect()
    }
}

/// Kafka's stage families, in report order, with short column names.
pub const STAGES: [(&str, &str); 6] = [
    ("kafka_network_request_queue_time_ms", "req-queue"),
    ("kafka_network_local_time_ms", "local"),
    ("kafka_network_remote_time_ms", "remote"),
    ("kafka_network_response_queue_time_ms", "resp-queue"),
    ("kafka_network_response_send_time_ms", "send"),
    ("kafka_network_total_time_ms", "total"),
];

/// Mean stage times of one API over a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiStages {
    pub request: String,
    pub requests: u64,
    pub mean_ms: [f64; 6],
    /// Upper bound of the histogram bucket holding the 99th percentile of total time, as
    /// the broker saw it (its buckets are 1-2-5 steps, so this is coarse).
    pub total_p99_le_ms: f64,
}

/// The bucket bound (`le`) at or below which `q` of the interval's requests finished.
fn quantile_le(before: &Scrape, after: &Scrape, family: &str, request: &str, q: f64) -> f64 {
    let prefix = format!("{family}_bucket{{request=\"{request}\",le=\"");
    let mut buckets: Vec<(f64, f64)> = after
        .series
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v - before.get(k)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, cumulative)| *cumulative >= q * total && total > 0.0)
        .map_or(f64::NAN, |b| b.0)
}

/// What the metrics endpoint says happened between two scrapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerDelta {
    pub apis: Vec<ApiStages>,
    pub bytes_in: f64,
    pub bytes_out: f64,
    pub sendfile_bytes: f64,
    /// Mean idle fractions over the interval.
    pub processor_idle: f64,
    pub handler_idle: f64,
}

pub fn delta(before: &Scrape, after: &Scrape) -> BrokerDelta {
    let d = |series: &str| after.get(series) - before.get(series);
    let mut apis: Vec<ApiStages> = after
        .requests()
        .into_iter()
        .filter_map(|request| {
            let label = format!("{{request=\"{request}\"}}");
            let requests = d(&format!("kafka_network_requests_total{label}"));
            if requests < 1.0 {
                return None;
            }
            let mut mean_ms = [0.0; 6];
            for (mean, (family, _)) in mean_ms.iter_mut().zip(STAGES) {
                let count = d(&format!("{family}_count{label}"));
                *mean = if count > 0.0 {
                    d(&format!("{family}_sum{label}")) / count
                } else {
                    0.0
                };
            }
            Some(ApiStages {
                total_p99_le_ms: quantile_le(before, after, STAGES[5].0, &request, 0.99),
                request,
                requests: requests as u64,
                mean_ms,
            })
        })
        .collect();
    apis.sort_by_key(|a| std::cmp::Reverse(a.requests));
    let wall = match (before.at, after.at) {
        (Some(b), Some(a)) => a.saturating_duration_since(b).as_secs_f64(),
        _ => 0.0,
    };
    let idle = |family: &str| {
        let threads = after.count_family(family).max(1) as f64;
        let idle = after.sum_family(family) - before.sum_family(family);
        if wall > 0.0 {
            (idle / (wall * threads)).clamp(0.0, 1.0)
        } else {
            f64::NAN
        }
    };
    BrokerDelta {
        apis,
        bytes_in: d("kafka_server_bytes_in_total"),
        bytes_out: d("kafka_server_bytes_out_total"),
        sendfile_bytes: d("kbroker_sendfile_bytes_total"),
        processor_idle: idle("kbroker_network_processor_idle_seconds_total"),
        handler_idle: idle("kbroker_request_handler_idle_seconds_total"),
    }
}

/// The broker binary: `$KBROKER_BIN`, else `target/release/kbroker` next to this binary.
pub fn default_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("KBROKER_BIN") {
        return PathBuf::from(bin);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("kbroker")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| Path::new("target/release/kbroker").to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_gives_per_api_means_and_idle() {
        let t0 = Instant::now();
        let mut before = Scrape {
            at: Some(t0),
            ..Scrape::default()
        };
        let mut after = Scrape {
            at: Some(t0 + Duration::from_secs(2)),
            ..Scrape::default()
        };
        before.series = parse_exposition(
            "kafka_network_requests_total{request=\"Produce\"} 10\n\
             kafka_network_local_time_ms_sum{request=\"Produce\"} 5\n\
             kafka_network_local_time_ms_count{request=\"Produce\"} 10\n\
             kafka_network_total_time_ms_bucket{request=\"Produce\",le=\"1\"} 5\n\
             kafka_network_total_time_ms_bucket{request=\"Produce\",le=\"2\"} 10\n\
             kafka_network_total_time_ms_bucket{request=\"Produce\",le=\"+Inf\"} 10\n\
             kbroker_network_processor_idle_seconds_total{processor=\"0\"} 1\n\
             kbroker_network_processor_idle_seconds_total{processor=\"1\"} 1\n",
        );
        after.series = parse_exposition(
            "# TYPE x counter\n\
             kafka_network_requests_total{request=\"Produce\"} 30\n\
             kafka_network_requests_total{request=\"Metadata\"} 0\n\
             kafka_network_local_time_ms_sum{request=\"Produce\"} 45\n\
             kafka_network_local_time_ms_count{request=\"Produce\"} 30\n\
             kafka_network_total_time_ms_bucket{request=\"Produce\",le=\"1\"} 24\n\
             kafka_network_total_time_ms_bucket{request=\"Produce\",le=\"2\"} 29\n\
             kafka_network_total_time_ms_bucket{request=\"Produce\",le=\"+Inf\"} 30\n\
             kafka_server_bytes_in_total 100\n\
             kbroker_network_processor_idle_seconds_total{processor=\"0\"} 2\n\
             kbroker_network_processor_idle_seconds_total{processor=\"1\"} 3\n",
        );
        let d = delta(&before, &after);
        assert_eq!(d.apis.len(), 1);
        assert_eq!(d.apis[0].request, "Produce");
        assert_eq!(d.apis[0].requests, 20);
        assert_eq!(d.apis[0].mean_ms[1], 2.0);
        // In the interval 19 of 20 took <= 1 ms and 1 more than 2 ms: p90 <= 1, p99 in +Inf.
        assert_eq!(d.apis[0].total_p99_le_ms, f64::INFINITY);
        assert_eq!(
            quantile_le(&before, &after, STAGES[5].0, "Produce", 0.9),
            1.0
        );
        assert_eq!(d.bytes_in, 100.0);
        assert!((d.processor_idle - 0.75).abs() < 1e-9);
    }
}

//! `kbroker-bench --cluster`: the control plane of a 3-broker cluster on a real ZooKeeper.
//!
//! For each partition count P (1,000 and 10,000 by default), on a fresh cluster:
//! - **CreateTopics to usable**: a topic of P partitions, replication factor 3, created
//!   through broker 1; the time until the CreateTopics response, and until every broker's
//!   Metadata shows every partition with a leader.
//! - **Controller failover**: the controller is killed with SIGKILL. Its loss becomes known
//!   when ZooKeeper expires its session and deletes `/controller` (a ZooKeeper client here
//!   polls for that); from then the figure is the time until a new controller is elected
//!   (`/controller` back) and until the Metadata of both surviving brokers shows every
//!   partition with a live leader (the dead broker's leaderships moved). The session
//!   timeout before the loss is known is reported separately: it is a setting
//!   (`zookeeper.session.timeout.ms`), not work.
//!
//! ZooKeeper is Debian's `zookeeper` package run with the machine's Java
//! (`/usr/share/java/zookeeper.jar`, `KBROKER_ZOOKEEPER_JAR` to override).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse,
};
use kbroker_coordinator::{MetadataStore, ZkConfig, ZkStore};

use crate::broker::free_port;
use crate::wire;

const BROKERS: i32 = 3;
/// Short, so the benchmark does not wait long for a loss to be detected; the figures
/// after detection do not depend on it.
const SESSION_TIMEOUT_MS: u64 = 3000;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest time any one phase may take before the run is declared failed.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
const METADATA_VERSION: i16 = 4;
const CREATE_TOPICS_VERSION: i16 = 4;
const POLL: Duration = Duration::from_millis(5);

/// One measured partition count.
#[derive(Debug, Clone)]
pub struct ClusterRun {
    pub partitions: i32,
    pub create_response: Duration,
    pub create_usable: Duration,
    pub detection: Duration,
    pub election: Duration,
    pub failover: Duration,
    pub moved: usize,
}

struct Process {
    child: Option<Child>,
    name: String,
}

impl Process {
    fn spawn(mut command: Command, log: &Path, name: &str) -> Result<Process, String> {
        let out =
            std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        Ok(Process {
            child: Some(child),
            name: name.to_string(),
        })
    }

    fn signal(&mut self, sig: libc::c_int) {
        if let Some(child) = self.child.as_mut() {
            // SAFETY: signalling our own child by its PID; it has not been reaped yet.
            unsafe {
                libc::kill(child.id() as libc::pid_t, sig);
            }
        }
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL now; waits for the exit.
    fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after 30 s.
    fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.running() {
            eprintln!("  {} did not stop within 30 s; killing it", self.name);
        }
        self.kill9();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

struct ZooKeeper {
    // Stopped (by PID) when dropped.
    _process: Process,
    port: u16,
}

impl ZooKeeper {
    fn start(dir: &Path) -> Result<ZooKeeper, String> {
        let port = free_port()?;
        let data = dir.join("zk-data");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let cfg = dir.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ninitLimit=20\nsyncLimit=10\ndataDir={}\nclientPort={port}\n\
                 clientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=srvr,ruok\nmaxClientCnxns=200\n",
                data.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let jar = std::env::var("KBROKER_ZOOKEEPER_JAR")
            .unwrap_or_else(|_| "/usr/share/java/zookeeper.jar".into());
        if !Path::new(&jar).exists() {
            return Err(format!(
                "{jar} not found: install Debian's zookeeper package (scripts/test does) or set KBROKER_ZOOKEEPER_JAR"
            ));
        }
        let mut command = Command::new("java");
        command
            .arg("-Xmx512m")
            .arg(format!("-Dzookeeper.log.dir={}", dir.display()))
            .arg("-cp")
            .arg(&jar)
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&cfg);
        let process = Process::spawn(command, &dir.join("zookeeper.log"), "zookeeper")?;
        let zk = ZooKeeper {
            _process: process,
            port,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if zk.serving() {
                return Ok(zk);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "zookeeper not serving on port {port} after {READY_TIMEOUT:?}"
        ))
    }

    fn serving(&self) -> bool {
        use std::io::Read;
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"srvr").is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.contains("Mode:")
    }
}

struct Broker {
    id: i32,
    port: u16,
    dir: PathBuf,
    binary: PathBuf,
    connect: String,
    overrides: Vec<String>,
    process: Option<Process>,
}

impl Broker {
    fn start(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let mut command = Command::new(&self.binary);
        let mut overrides = vec![
            format!("broker.id={}", self.id),
            format!("listeners=PLAINTEXT://127.0.0.1:{}", self.port),
            format!("log.dirs={}", self.dir.join("data").display()),
            format!("zookeeper.connect={}", self.connect),
            format!("zookeeper.session.timeout.ms={SESSION_TIMEOUT_MS}"),
            "log.segment.bytes=1048576".to_string(),
            "log.index.size.max.bytes=65536".to_string(),
        ];
        overrides.extend(self.overrides.iter().cloned());
        for o in &overrides {
            command.arg("--override").arg(o);
        }
        command.env(
            "RUST_LOG",
            std::env::var("KBROKER_BENCH_LOG").unwrap_or("warn".into()),
        );
        let log = self.dir.join(format!("broker-{}.log", now_tag()));
        self.process = Some(Process::spawn(
            command,
            &log,
            &format!("broker {}", self.id),
        )?);
        let deadline = Instant::now() + READY_TIMEOUT + Duration::from_millis(SESSION_TIMEOUT_MS);
        while Instant::now() < deadline {
            if !self.process.as_mut().is_some_and(Process::running) {
                return Err(format!(
                    "broker {} exited at start; see {}",
                    self.id,
                    log.display()
                ));
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "broker {} not ready; see {}",
            self.id,
            log.display()
        ))
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn now_tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

struct Cluster {
    brokers: Vec<Broker>,
    // Dropped last: the brokers stop first.
    _zk: ZooKeeper,
    root: PathBuf,
}

impl Cluster {
    fn start(binary: &Path, overrides: &[String], tag: &str) -> Result<Cluster, String> {
        let root = std::env::temp_dir().join(format!(
            "kbroker-bench-cluster-{}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let zk = ZooKeeper::start(&root)?;
        let connect = format!("127.0.0.1:{}/kbroker-bench", zk.port);
        let mut brokers = Vec::new();
        for id in 1..=BROKERS {
            let mut b = Broker {
                id,
                port: free_port()?,
                dir: root.join(format!("b{id}")),
                binary: binary.to_path_buf(),
                connect: connect.clone(),
                overrides: overrides.to_vec(),
                process: None,
            };
            b.start()?;
            brokers.push(b);
        }
        let cluster = Cluster {
            brokers,
            _zk: zk,
            root,
        };
        cluster.wait_brokers(&[1, 2, 3], None)?;
        Ok(cluster)
    }

    fn broker(&self, id: i32) -> &Broker {
        &self.brokers[(id - 1) as usize]
    }

    /// Waits until each of `on` reports exactly these live brokers (and a controller not
    /// `not_controller`).
    fn wait_brokers(&self, on: &[i32], not_controller: Option<i32>) -> Result<i32, String> {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        loop {
            let mut controllers = Vec::new();
            for &id in on {
                if let Ok(m) = metadata(&self.broker(id).bootstrap(), None) {
                    let mut live: Vec<i32> = m.brokers.iter().map(|b| b.node_id.0).collect();
                    live.sort_unstable();
                    if live.len() == BROKERS as usize && m.controller_id.0 >= 0 {
                        controllers.push(m.controller_id.0);
                    }
                }
            }
            if controllers.len() == on.len()
                && controllers
                    .iter()
                    .all(|c| *c == controllers[0] && Some(*c) != not_controller)
            {
                return Ok(controllers[0]);
            }
            if Instant::now() > deadline {
                return Err("the cluster did not converge".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGKILL: the data is thrown away, and a clean stop of the last broker would wait
        // out controlled.shutdown.* retries (no other broker can take its leaderships).
        for b in &mut self.brokers {
            if let Some(mut p) = b.process.take() {
                p.kill9();
            }
        }
        if std::env::var_os("KBROKER_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!("  kept {}", self.root.display());
        }
    }
}

fn metadata(bootstrap: &str, topic: Option<&str>) -> Result<MetadataResponse, String> {
    let mut stream = wire::connect(bootstrap)?;
    let request = MetadataRequest::default().with_topics(
        topic
            .map(|t| vec![MetadataRequestTopic::default().with_name(Some(wire::topic_name(t)))])
            .or(Some(Vec::new())),
    );
    let mut buf = Vec::new();
    wire::round_trip(
        &mut stream,
        &wire::frame(ApiKey::Metadata, METADATA_VERSION, 7, &request),
        &mut buf,
    )?;
    wire::decode(&buf, METADATA_VERSION)
}

/// Partitions of `topic` in `bootstrap`'s Metadata with a leader that is not in `dead`.
fn led_partitions(bootstrap: &str, topic: &str, dead: &[i32]) -> usize {
    metadata(bootstrap, Some(topic)).map_or(0, |m| {
        m.topics
            .iter()
            .filter(|t| t.error_code == 0)
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader_id.0 >= 0 && !dead.contains(&p.leader_id.0))
            .count()
    })
}

fn wait_led(on: &[&Broker], topic: &str, partitions: i32, dead: &[i32]) -> Result<Instant, String> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut pending: Vec<&Broker> = on.to_vec();
    while !pending.is_empty() {
        pending.retain(|b| led_partitions(&b.bootstrap(), topic, dead) < partitions as usize);
        if Instant::now() > deadline {
            return Err(format!(
                "{topic}: not every partition led after {PHASE_TIMEOUT:?}"
            ));
        }
        if !pending.is_empty() {
            std::thread::sleep(POLL);
        }
    }
    Ok(Instant::now())
}

/// Watches `/controller` from outside: when it vanished and when it came back.
struct ControllerWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<(Option<Instant>, Option<Instant>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControllerWatch {
    fn start(connect: &str) -> Result<ControllerWatch, String> {
        let store = ZkStore::connect(ZkConfig {
            connect: connect.to_string(),
            session_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(10),
        })
        .map_err(|e| format!("bench zookeeper client: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new((None, None)));
        let (flag, out) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                let present = store.exists("/controller").ok().flatten().is_some();
                let now = Instant::now();
                let mut s = out.lock().unwrap_or_else(|p| p.into_inner());
                match (s.0, present) {
                    (None, false) => s.0 = Some(now),
                    (Some(_), true) if s.1.is_none() => s.1 = Some(now),
                    _ => {}
                }
                drop(s);
                std::thread::sleep(Duration::from_millis(2));
            }
            store.close();
        });
        Ok(ControllerWatch {
            stop,
            seen,
            thread: Some(thread),
        })
    }

    fn gone_and_back(&self) -> (Option<Instant>, Option<Instant>) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ControllerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<(), String> {
    create_topic_rf(bootstrap, topic, partitions, BROKERS as i16, &[])
}

fn create_topic_rf(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
) -> Result<(), String> {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    let mut stream = wire::connect(bootstrap)?;
    stream
        .set_read_timeout(Some(PHASE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(PHASE_TIMEOUT.as_millis() as i32)
        .with_topics(vec![CreatableTopic::default()
            .with_name(wire::topic_name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(kafka_protocol::protocol::StrBytes::from_string(
                                k.to_string(),
                            ))
                            .with_value(Some(kafka_protocol::protocol::StrBytes::from_string(
                                v.to_string(),
                            )))
                    })
                    .collect(),
            )]);
    let mut buf = Vec::new();
    wire::round_trip(
        &mut stream,
        &wire::frame(ApiKey::CreateTopics, CREATE_TOPICS_VERSION, 4, &request),
        &mut buf,
    )?;
    let response: CreateTopicsResponse = wire::decode(&buf, CREATE_TOPICS_VERSION)?;
    match response.topics.iter().find(|t| t.error_code != 0) {
        Some(t) => Err(format!("creating {topic}: error code {}", t.error_code)),
        None => Ok(()),
    }
}

/// Runs the cluster measurements for every partition count.
pub fn run(
    binary: &Path,
    overrides: &[String],
    partition_counts: &[i32],
) -> Result<Vec<ClusterRun>, String> {
    let mut runs = Vec::new();
    for &partitions in partition_counts {
        eprintln!(
            "  cluster: 3 brokers, a topic of {partitions} partitions (replication factor 3) ..."
        );
        let cluster = Cluster::start(binary, overrides, &partitions.to_string())?;
        let topic = format!("failover-{partitions}");
        let t0 = Instant::now();
        create_topic(&cluster.broker(1).bootstrap(), &topic, partitions)?;
        let create_response = t0.elapsed();
        let all: Vec<&Broker> = cluster.brokers.iter().collect();
        let usable = wait_led(&all, &topic, partitions, &[])?;
        let create_usable = usable - t0;
        eprintln!(
            "    CreateTopics answered in {:.2} s, usable on every broker after {:.2} s",
            create_response.as_secs_f64(),
            create_usable.as_secs_f64()
        );
        let controller = cluster.wait_brokers(&[1, 2, 3], None)?;
        let moved = metadata(&cluster.broker(1).bootstrap(), Some(&topic)).map_or(0, |m| {
            m.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .filter(|p| p.leader_id.0 == controller)
                .count()
        });
        let watch = ControllerWatch::start(&cluster.broker(1).connect)?;
        std::thread::sleep(Duration::from_millis(50));
        let mut cluster = cluster;
        let killed_at = Instant::now();
        if let Some(mut p) = cluster.brokers[(controller - 1) as usize].process.take() {
            p.kill9();
        }
        let survivors: Vec<&Broker> = cluster
            .brokers
            .iter()
            .filter(|b| b.id != controller)
            .collect();
        let all_led = wait_led(&survivors, &topic, partitions, &[controller])?;
        let (gone, back) = watch.gone_and_back();
        drop(watch);
        let gone = gone.ok_or("the /controller znode was never seen gone")?;
        let back = back.unwrap_or(all_led);
        let run = ClusterRun {
            partitions,
            create_response,
            create_usable,
            detection: gone.saturating_duration_since(killed_at),
            election: back.saturating_duration_since(gone),
            failover: all_led.saturating_duration_since(gone),
            moved,
        };
        eprintln!(
            "    controller {controller} killed: loss detected after {:.2} s (session timeout), new controller {:.3} s later, \
             every partition ({} were led by it) led again {:.3} s after the loss",
            run.detection.as_secs_f64(),
            run.election.as_secs_f64(),
            moved,
            run.failover.as_secs_f64()
        );
        runs.push(run);
    }
    Ok(runs)
}

/// The markdown section of the report.
pub fn report(runs: &[ClusterRun]) -> String {
    let mut out = String::from(
        "| partitions (RF 3) | CreateTopics answered | usable on every broker | controller loss detected (session timeout) | new controller after loss | every partition led after loss | partitions the dead controller led |\n|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        out.push_str(&format!(
            "| {} | {:.2} s | {:.2} s | {:.2} s | {:.3} s | **{:.3} s** | {} |\n",
            r.partitions,
            r.create_response.as_secs_f64(),
            r.create_usable.as_secs_f64(),
            r.detection.as_secs_f64(),
            r.election.as_secs_f64(),
            r.failover.as_secs_f64(),
            r.moved
        ));
    }
    out
}

/// One produce run of the replication mode.
#[derive(Debug, Clone)]
pub struct ReplicationRun {
    pub replication_factor: i16,
    pub acks: i16,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub failed: u64,
}

/// Replication cost: on one 3-broker cluster, librdkafka producing 1 KiB records as fast as
/// it can for `duration` to a topic of `partitions` partitions with RF 1 (acks=-1: the
/// leader alone), RF 3 acks=1 and RF 3 acks=-1 (`min.insync.replicas=2`: every ISR member
/// has each record before it is acknowledged).
pub fn run_replication(
    binary: &Path,
    overrides: &[String],
    partitions: i32,
    duration: Duration,
    linger_ms: u32,
) -> Result<Vec<ReplicationRun>, String> {
    let cluster = Cluster::start(binary, overrides, "replication")?;
    let bootstrap: String = cluster
        .brokers
        .iter()
        .map(Broker::bootstrap)
        .collect::<Vec<_>>()
        .join(",");
    let all: Vec<&Broker> = cluster.brokers.iter().collect();
    let mut runs = Vec::new();
    for (rf, acks) in [(1i16, -1i16), (3, 1), (3, -1)] {
        let topic = format!(
            "replication-rf{rf}-acks{}",
            if acks < 0 { "all" } else { "1" }
        );
        create_topic_rf(
            &cluster.broker(1).bootstrap(),
            &topic,
            partitions,
            rf,
            &[("min.insync.replicas", if rf > 1 { "2" } else { "1" })],
        )?;
        wait_led(&all, &topic, partitions, &[])?;
        let spec = crate::rdk::Produce {
            value_bytes: 1024,
            acks,
            linger_ms,
            duration,
            rate: None,
        };
        let mut result = crate::rdk::produce(&bootstrap, &topic, spec)?;
        let secs = result.elapsed.as_secs_f64().max(1e-9);
        let p = result.latencies.percentiles();
        let run = ReplicationRun {
            replication_factor: rf,
            acks,
            records_per_s: result.delivered as f64 / secs,
            mb_per_s: result.value_bytes as f64 / secs / 1e6,
            p50_ms: p.p50_ms,
            p99_ms: p.p99_ms,
            failed: result.failed,
        };
        eprintln!(
            "    RF {rf} acks={acks}: {:.0} rec/s, {:.1} MB/s, p50 {:.2} ms, p99 {:.2} ms, {} failed",
            run.records_per_s, run.mb_per_s, run.p50_ms, run.p99_ms, run.failed
        );
        runs.push(run);
    }
    Ok(runs)
}

pub fn replication_report(runs: &[ReplicationRun]) -> String {
    let mut out = String::from(
        "| topic | acks | records/s | MB/s | p50 delivery | p99 delivery | failed |\n|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        out.push_str(&format!(
            "| RF {} | {} | {:.0} | {:.1} | {:.2} ms | **{:.2} ms** | {} |\n",
            r.replication_factor,
            if r.acks < 0 {
                "all".to_string()
            } else {
                r.acks.to_string()
            },
            r.records_per_s,
            r.mb_per_s,
            r.p50_ms,
            r.p99_ms,
            r.failed
        ));
    }
    out
}

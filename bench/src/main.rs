//! `kbroker-bench`: the thread-model tuning bench.
//!
//! Starts `target/release/kbroker` with a given `num.network.threads` × `num.io.threads`
//! (N×M) on a free loopback port and a temporary log dir, drives it with librdkafka and
//! with raw Kafka requests, and reports per workload: throughput, produce (delivery) and
//! end-to-end latency percentiles, the broker's CPU seconds and peak RSS from `/proc`, and
//! the request-stage breakdown (Kafka's RequestQueue/Local/Remote/ResponseQueue/
//! ResponseSend/Total time) read from the broker's metrics endpoint. In the same run it
//! measures the machine's ceilings (sendfile and plain TCP over loopback) and prints
//! kbroker's consume and produce throughput as fractions of them.
//!
//! Modes: the default runs every workload once at 3×8; `--sweep` runs a shorter set over a
//! grid of N×M and also writes an SVG plot. Results go to `bench-results/`. Every process
//! it starts is stopped by PID; every run is bounded in time; all traffic is on 127.0.0.1.
//!
//! # Layout
//! - `broker.rs` — the broker process, `/proc` readings, the metrics scrape and deltas.
//! - `rdk.rs` — librdkafka producer and consumer workloads.
//! - `wire.rs` — raw Produce / Fetch / many-connection clients.
//! - `ceiling.rs` — sendfile and TCP loopback ceilings.
//! - `latency.rs` — samples and percentiles.
//! - `report.rs` — tables, CSV, SVG.

mod broker;
mod ceiling;
mod cluster;
mod latency;
mod memory;
mod rdk;
mod report;
mod validation;
mod wire;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use broker::{BrokerProcess, BrokerSpec};
use ceiling::Ceilings;
use report::{Panel, Run};

const USAGE: &str = "\
usage: kbroker-bench [--sweep] [options]

  (default)            every workload once at --threads (3x8), ~1 min
  --sweep              a shorter workload set over --grid, plus table, CSV and SVG
  --cluster            3 brokers on a real ZooKeeper: CreateTopics to usable, and controller
                       failover, for each --cluster-partitions count (~2 min)
  --cluster-partitions P,..  partition counts of the cluster mode [1000,10000]
  --replication        3 brokers on a real ZooKeeper: 1 KiB produce throughput and latency to
                       RF 1 and RF 3 (acks=1, acks=all) topics of --partitions partitions
  --memory             only the resident-memory run: 2 GB to 8 partitions with 1 GiB
                       segments: the default window with written pages dropped
                       --drop-behind bytes behind the writer, the default window alone,
                       and a window as large as the segment (kbroker's map before)
  --threads NxM        num.network.threads x num.io.threads for the default mode [3x8]
  --grid N,..xM,..     sweep grid [1,2,4x1,2,4,8]
  --repeat R           sweep rounds; each cell reports its median run [1]
  --seconds S          length of each timed run [3]
  --partitions P       partitions of every topic [4]
  --max-rate R         the half-rate workloads run at R/2 records/s instead of half of
                       what produce 1KiB acks=1 reached (to compare settings at one load)
  --drop-behind BYTES  log.segment.drop.behind.bytes of the memory run's drop-behind row [16 MiB]
  --linger-ms L        librdkafka linger.ms of the producers [1]
  --connections C      clients in the many-connections workload [200]
  --broker PATH        the kbroker binary [$KBROKER_BIN or target/release/kbroker]
  --out DIR            where results go [bench-results]
  --svg-copy PATH      also write the sweep SVG here (e.g. docs/sweep.svg)
  --plot-from DIR      only redraw DIR/sweep.svg from DIR/sweep.csv and DIR/ceilings.txt
  --override key=value passed to every broker (repeatable)
  --only a,b           run only workloads whose name contains one of these (the runs
                       they depend on are kept: produce 1KiB acks=1, raw produce)
";

#[derive(Debug, Clone)]
struct Options {
    sweep: bool,
    cluster: bool,
    replication: bool,
    memory: bool,
    cluster_partitions: Vec<usize>,
    threads: (usize, usize),
    grid: (Vec<usize>, Vec<usize>),
    seconds: f64,
    partitions: i32,
    /// `log.segment.drop.behind.bytes` of the memory run's drop-behind row.
    drop_behind: usize,
    /// Replaces the measured `produce 1KiB acks=1` rate as what the half-rate runs halve.
    max_rate_1k: Option<f64>,
    linger_ms: u32,
    connections: usize,
    broker: PathBuf,
    out: PathBuf,
    svg_copy: Option<PathBuf>,
    overrides: Vec<String>,
    only: Vec<String>,
    repeat: usize,
    plot_from: Option<PathBuf>,
}

fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad number {v:?}"))
        })
        .filter(|v| v.as_ref().map_or(true, |&n| n > 0))
        .collect()
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        sweep: false,
        cluster: false,
        replication: false,
        memory: false,
        cluster_partitions: vec![1000, 10_000],
        threads: (3, 8),
        grid: (vec![1, 2, 4], vec![1, 2, 4, 8]),
        seconds: 3.0,
        partitions: 4,
        drop_behind: 16 << 20,
        max_rate_1k: None,
        linger_ms: 1,
        connections: 200,
        broker: broker::default_binary(),
        out: PathBuf::from("bench-results"),
        svg_copy: None,
        overrides: Vec::new(),
        only: Vec::new(),
        repeat: 1,
        plot_from: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--sweep" => o.sweep = true,
            "--cluster" => o.cluster = true,
            "--replication" => o.replication = true,
            "--memory" => o.memory = true,
            "--cluster-partitions" => o.cluster_partitions = parse_list(&value()?)?,
            "--threads" => {
                let v = value()?;
                let (n, m) = v.split_once('x').ok_or("--threads NxM")?;
                o.threads = (
                    n.parse().map_err(|_| "--threads NxM")?,
                    m.parse().map_err(|_| "--threads NxM")?,
                );
            }
            "--grid" => {
                let v = value()?;
                let (n, m) = v.split_once('x').ok_or("--grid N,..xM,..")?;
                o.grid = (parse_list(n)?, parse_list(m)?);
            }
            "--seconds" => o.seconds = value()?.parse().map_err(|_| "--seconds S")?,
            "--partitions" => o.partitions = value()?.parse().map_err(|_| "--partitions P")?,
            "--max-rate" => {
                o.max_rate_1k = Some(value()?.parse().map_err(|_| "--max-rate RECORDS_PER_S")?)
            }
            "--drop-behind" => {
                o.drop_behind = value()?.parse().map_err(|_| "--drop-behind BYTES")?
            }
            "--linger-ms" => o.linger_ms = value()?.parse().map_err(|_| "--linger-ms L")?,
            "--connections" => o.connections = value()?.parse().map_err(|_| "--connections C")?,
            "--broker" => o.broker = PathBuf::from(value()?),
            "--out" => o.out = PathBuf::from(value()?),
            "--svg-copy" => o.svg_copy = Some(PathBuf::from(value()?)),
            "--override" => o.overrides.push(value()?),
            "--plot-from" => o.plot_from = Some(PathBuf::from(value()?)),
            "--repeat" => o.repeat = value()?.parse().map_err(|_| "--repeat R")?,
            "--only" => o.only = value()?.split(',').map(str::to_string).collect(),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if !(0.5..=60.0).contains(&o.seconds) || o.partitions < 1 || o.connections < 1 || o.repeat < 1 {
        return Err(
            "--seconds must be 0.5..60; --partitions, --connections, --repeat positive".into(),
        );
    }
    if !o.broker.exists() {
        return Err(format!(
            "broker binary {} not found; run `cargo build --release -p kbroker` or set --broker",
            o.broker.display()
        ));
    }
    Ok(o)
}

fn main() {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kbroker-bench: {e}");
            std::process::exit(2);
        }
    };
    latency::now_ns(); // start the shared clock
    let result = if let Some(dir) = &options.plot_from {
        plot_from(&options, dir)
    } else if options.memory {
        memory_mode(&options)
    } else if options.replication {
        replication_mode(&options)
    } else if options.cluster {
        cluster_mode(&options)
    } else if options.sweep {
        sweep(&options)
    } else {
        quick(&options)
    };
    if let Err(e) = result {
        eprintln!("kbroker-bench: {e}");
        std::process::exit(1);
    }
}

/// The workloads, by name (also the `workload` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Produce {
        value_bytes: usize,
        acks: i16,
    },
    /// 1 KiB records, acks=1, from this many producers at once.
    ProduceParallel {
        producers: usize,
    },
    ProduceHalfRate,
    /// The half-rate load from a paced raw client: the broker's side without librdkafka's queue.
    RawProduceHalfRate,
    RawProduce,
    ConsumeRdkafka,
    ConsumeRaw,
    ProduceConsume,
    ManyConnections,
}

impl Workload {
    fn name(&self) -> String {
        match self {
            Workload::Produce { value_bytes, acks } => {
                format!("produce {} acks={acks}", size_name(*value_bytes))
            }
            Workload::ProduceParallel { producers } => {
                format!("produce 1KiB acks=1 ×{producers} producers")
            }
            Workload::ProduceHalfRate => "produce 1KiB acks=1 @50% max".into(),
            Workload::RawProduceHalfRate => "raw paced produce 1KiB acks=1 @50% max".into(),
            Workload::RawProduce => "raw produce 1MiB batches acks=1".into(),
            Workload::ConsumeRdkafka => "consume (librdkafka)".into(),
            Workload::ConsumeRaw => "consume (raw fetch)".into(),
            Workload::ProduceConsume => "produce+consume 1KiB acks=1 @50% max".into(),
            Workload::ManyConnections => "many connections".into(),
        }
    }
}

fn size_name(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}

const MB: f64 = 1e6;
/// Topics the workloads share within one broker.
const TOPIC_PRODUCE_1K: &str = "bench-produce-1k-acks1";
const TOPIC_RAW: &str = "bench-raw";
/// Producers of the parallel-produce workload (the "4 producers × 1 KiB").
const PARALLEL_PRODUCERS: usize = 4;
/// Raw produce: records per batch × value bytes ≈ 1 MiB per request.
const RAW_BATCH_RECORDS: usize = 1024;
const RAW_VALUE_BYTES: usize = 1000;
/// Longest wait for a tailing consumer to receive its first record.
const CONSUMER_READY_MAX: Duration = Duration::from_secs(10);
/// A consume run may take this many times `--seconds` to read a pre-filled topic.
const CONSUME_TIME_FACTOR: f64 = 2.0;

/// State one broker's workloads share: the max produce rate, what was pre-filled.
#[derive(Debug, Default)]
struct Session {
    max_produce_rate_1k: Option<f64>,
    produced_1k: u64,
    raw_produced: bool,
}

struct Bench<'a> {
    options: &'a Options,
    broker: BrokerProcess,
    n: usize,
    m: usize,
    session: Session,
}

impl<'a> Bench<'a> {
    fn start(options: &'a Options, n: usize, m: usize) -> Result<Bench<'a>, String> {
        let spec = BrokerSpec {
            binary: options.broker.clone(),
            network_threads: n,
            io_threads: m,
            overrides: options.overrides.clone(),
        };
        let broker = BrokerProcess::start(&spec, &format!("{n}x{m}"))?;
        Ok(Bench {
            options,
            broker,
            n,
            m,
            session: Session::default(),
        })
    }

    /// The rate `produce 1KiB acks=1` reached (or `--max-rate`), which the half-rate
    /// workloads halve.
    fn max_rate_1k(&self) -> Result<f64, String> {
        if let Some(rate) = self.options.max_rate_1k {
            return Ok(rate);
        }
        self.session
            .max_produce_rate_1k
            .ok_or_else(|| "run produce 1KiB acks=1 first".to_string())
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.options.seconds)
    }

    fn topic(&self, name: &str) -> Result<String, String> {
        wire::create_topic(&self.broker.bootstrap(), name, self.options.partitions)?;
        Ok(name.to_string())
    }

    /// Runs one workload between two scrapes and `/proc` readings.
    fn run(&mut self, workload: Workload) -> Result<Run, String> {
        let name = workload.name();
        eprint!("  {:<34} {}×{} ... ", name, self.n, self.m);
        let before = self.broker.scrape()?;
        let (user_before, sys_before) = self.broker.cpu_user_system();
        self.broker.reset_peak_rss();
        let started = Instant::now();
        let mut run = self.workload(workload)?;
        run.wall_s = started.elapsed().as_secs_f64();
        let (user_after, sys_after) = self.broker.cpu_user_system();
        run.broker_user_s = user_after - user_before;
        run.broker_sys_s = sys_after - sys_before;
        run.broker_cpu_s = run.broker_user_s + run.broker_sys_s;
        run.peak_rss_mb = self.broker.peak_rss_bytes() as f64 / MB;
        let after = self.broker.scrape()?;
        let [prefaulted, inline] = window_counts(&before, &after);
        if prefaulted + inline > 0.0 {
            run.note += &format!(
                "; segment windows: {prefaulted:.0} prefaulted, {inline:.0} mapped by the writer itself"
            );
        }
        run.broker = broker::delta(&before, &after);
        run.workload = name;
        run.network_threads = self.n;
        run.io_threads = self.m;
        eprintln!(
            "{:>9.0} rec/s {:>7.1} MB/s  p99 {:>7.2} ms",
            run.records_per_s, run.mb_per_s, run.latency.p99_ms
        );
        Ok(run)
    }

    fn workload(&mut self, workload: Workload) -> Result<Run, String> {
        let bootstrap = self.broker.bootstrap();
        let duration = self.duration();
        let linger_ms = self.options.linger_ms;
        match workload {
            Workload::Produce { value_bytes, acks } => {
                let name = if value_bytes == 1024 && acks == 1 {
                    TOPIC_PRODUCE_1K.to_string()
                } else {
                    format!("bench-produce-{value_bytes}-acks{acks}")
                };
                let topic = self.topic(&name)?;
                let spec = rdk::Produce {
                    value_bytes,
                    acks,
                    linger_ms,
                    duration,
                    rate: None,
                };
                let mut result = rdk::produce(&bootstrap, &topic, spec)?;
                let run = produce_run(&mut result, acks);
                if value_bytes == 1024 && acks == 1 {
                    self.session.max_produce_rate_1k = Some(run.records_per_s);
                    self.session.produced_1k += result.delivered;
                }
                Ok(run)
            }
            Workload::ProduceParallel { producers } => {
                let topic = self.topic(&format!("bench-produce-1k-x{producers}"))?;
                let spec = rdk::Produce {
                    value_bytes: 1024,
                    acks: 1,
                    linger_ms,
                    duration,
                    rate: None,
                };
                let mut result = rdk::produce_parallel(&bootstrap, &topic, spec, producers)?;
                Ok(produce_run(&mut result, 1))
            }
            Workload::ProduceHalfRate => {
                let max = self.max_rate_1k()?;
                let topic = self.topic("bench-produce-half")?;
                let spec = rdk::Produce {
                    value_bytes: 1024,
                    acks: 1,
                    linger_ms,
                    duration,
                    rate: Some(max / 2.0),
                };
                let mut result = rdk::produce(&bootstrap, &topic, spec)?;
                let mut run = produce_run(&mut result, 1);
                run.note = format!("target rate {:.0} records/s (half of {max:.0})", max / 2.0);
                Ok(run)
            }
            Workload::RawProduceHalfRate => {
                let max = self.max_rate_1k()?;
                let topic = self.topic("bench-produce-half-raw")?;
                let spec = wire::PacedProduce {
                    partitions: self.options.partitions,
                    records_per_s: max / 2.0,
                    value_bytes: 1024,
                    tick: Duration::from_millis(1),
                    duration,
                };
                let mut r = wire::paced_produce(&bootstrap, &topic, spec)?;
                let note = format!(
                    "target rate {:.0} records/s (half of {max:.0}): one connection, a request \
                     of {} records every 1 ms, latency from when it was due; {} sent late, {} errors",
                    max / 2.0,
                    r.records_per_request,
                    r.late,
                    r.errors
                );
                Ok(raw_run(
                    r.records,
                    r.record_bytes,
                    r.elapsed,
                    &mut r.latencies,
                    note,
                ))
            }
            Workload::RawProduce => {
                let topic = self.topic(TOPIC_RAW)?;
                let spec = wire::RawProduce {
                    connections: self.options.partitions as usize,
                    partitions: self.options.partitions,
                    records_per_batch: RAW_BATCH_RECORDS,
                    value_bytes: RAW_VALUE_BYTES,
                    acks: 1,
                    pipeline_depth: 2,
                    duration,
                };
                let mut r = wire::raw_produce(&bootstrap, &topic, spec)?;
                self.session.raw_produced = true;
                let note = format!(
                    "{} connections, 2 requests in flight each, {} errors",
                    spec.connections, r.errors
                );
                Ok(raw_run(
                    r.records,
                    r.record_bytes,
                    r.elapsed,
                    &mut r.latencies,
                    note,
                ))
            }
            Workload::ConsumeRdkafka => {
                let records = self.session.produced_1k;
                if records == 0 {
                    return Err("run produce 1KiB acks=1 first (it fills the topic)".into());
                }
                let limit = duration.mul_f64(CONSUME_TIME_FACTOR);
                let mut r = rdk::consume(
                    &bootstrap,
                    TOPIC_PRODUCE_1K,
                    self.options.partitions,
                    rdk::Until::Records(records, limit),
                )?;
                let secs = r.elapsed.as_secs_f64().max(1e-9);
                Ok(Run {
                    records_per_s: r.records as f64 / secs,
                    mb_per_s: r.value_bytes as f64 / MB / secs,
                    note: format!("{} of {records} pre-filled records read", r.records),
                    end_to_end: None,
                    latency: r.end_to_end.percentiles(),
                    ..Run::default()
                })
            }
            Workload::ConsumeRaw => {
                if !self.session.raw_produced {
                    return Err("run raw produce first (it fills the topic)".into());
                }
                let limit = duration.mul_f64(CONSUME_TIME_FACTOR);
                let r = wire::raw_consume(
                    &bootstrap,
                    TOPIC_RAW,
                    self.options.partitions,
                    16 << 20,
                    limit,
                )?;
                let secs = r.elapsed.as_secs_f64();
                Ok(Run {
                    records_per_s: r.records as f64 / secs,
                    mb_per_s: r.wire_bytes as f64 / MB / secs,
                    note: format!(
                        "one connection, {} fetches, {:.0} MB of batches",
                        r.fetches,
                        r.record_bytes as f64 / MB
                    ),
                    ..Run::default()
                })
            }
            Workload::ProduceConsume => {
                let max = self.max_rate_1k()?;
                let topic = self.topic("bench-produce-consume")?;
                let tail = rdk::Tail::new();
                let consumer = {
                    let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
                    let until =
                        rdk::Until::Tailing(tail.clone(), duration * 3 + CONSUMER_READY_MAX);
                    let partitions = self.options.partitions;
                    std::thread::spawn(move || rdk::consume(&bootstrap, &topic, partitions, until))
                };
                // Warm up until the consumer is fetching, so start-up is not timed.
                let ready_by = Instant::now() + CONSUMER_READY_MAX;
                while !tail.ready.load(Ordering::Acquire) && Instant::now() < ready_by {
                    let warm_up = rdk::Produce {
                        value_bytes: 1024,
                        acks: 1,
                        linger_ms,
                        duration: Duration::from_millis(200),
                        rate: Some(1_000.0),
                    };
                    rdk::produce(&bootstrap, &topic, warm_up)?;
                }
                tail.measure_from_ns
                    .store(latency::now_ns(), Ordering::Release);
                let spec = rdk::Produce {
                    value_bytes: 1024,
                    acks: 1,
                    linger_ms,
                    duration,
                    rate: Some(max / 2.0),
                };
                let produced = rdk::produce(&bootstrap, &topic, spec);
                tail.stop.store(true, Ordering::Release);
                let mut consumed = consumer.join().map_err(|_| "consumer panicked")??;
                let mut produced = produced?;
                let mut run = produce_run(&mut produced, 1);
                run.end_to_end = Some(consumed.end_to_end.percentiles());
                let appended = self.broker.scrape()?.log_end_offsets(&topic);
                run.note = format!(
                    "consumed {} of {} records (after a warm-up until the consumer fetched; \
                     the log holds {appended} with the warm-up)",
                    consumed.records, produced.delivered
                );
                Ok(run)
            }
            Workload::ManyConnections => {
                let topic = self.topic("bench-many")?;
                let spec = wire::Many {
                    connections: self.options.connections,
                    partitions: self.options.partitions,
                    requests_per_second_each: 50.0,
                    records_per_batch: 10,
                    value_bytes: 100,
                    duration,
                };
                let mut r = wire::many_connections(&bootstrap, &topic, spec)?;
                let secs = r.elapsed.as_secs_f64();
                Ok(Run {
                    records_per_s: r.records as f64 / secs,
                    mb_per_s: r.records as f64 * 100.0 / MB / secs,
                    latency_kind: "request",
                    latency: r.latencies.percentiles(),
                    note: format!(
                        "{} connections × 50 Produce/s (10 × 100 B, acks=1), all connected in {} ms, {} errors",
                        r.connections,
                        r.connect_all.as_millis(),
                        r.errors
                    ),
                    ..Run::default()
                })
            }
        }
    }
}

fn produce_run(result: &mut rdk::ProduceResult, acks: i16) -> Run {
    let secs = result.elapsed.as_secs_f64();
    let mut note = format!("{} delivered", result.delivered);
    if result.failed > 0 {
        note += &format!(
            ", {} FAILED (first: {})",
            result.failed,
            result.first_error.clone().unwrap_or_default()
        );
    }
    if acks == 0 {
        note += "; acks=0: the delivery report comes when the request is written";
    }
    Run {
        records_per_s: result.delivered as f64 / secs,
        mb_per_s: result.value_bytes as f64 / MB / secs,
        payload_bytes: result.value_bytes as f64,
        latency_kind: "delivery",
        latency: result.latencies.percentiles(),
        note,
        ..Run::default()
    }
}

/// A run of a raw producer: throughput over its own elapsed time, request latencies.
fn raw_run(
    records: u64,
    record_bytes: u64,
    elapsed: Duration,
    latencies: &mut latency::Latencies,
    note: String,
) -> Run {
    let secs = elapsed.as_secs_f64().max(1e-9);
    Run {
        records_per_s: records as f64 / secs,
        mb_per_s: record_bytes as f64 / MB / secs,
        payload_bytes: record_bytes as f64,
        latency_kind: "request",
        latency: latencies.percentiles(),
        note,
        ..Run::default()
    }
}

/// Active-segment windows prefaulted ahead of their writer, and mapped by the writer itself
/// (the prepared one was not ready), between two scrapes.
fn window_counts(before: &broker::Scrape, after: &broker::Scrape) -> [f64; 2] {
    [
        "kbroker_segment_windows_prefaulted_total",
        "kbroker_segment_windows_mapped_inline_total",
    ]
    .map(|name| {
        let at = |s: &broker::Scrape| s.series.get(name).copied().unwrap_or(0.0);
        at(after) - at(before)
    })
}

fn quick_workloads() -> Vec<Workload> {
    vec![
        Workload::Produce {
            value_bytes: 100,
            acks: 0,
        },
        Workload::Produce {
            value_bytes: 100,
            acks: 1,
        },
        Workload::Produce {
            value_bytes: 1024,
            acks: 0,
        },
        Workload::Produce {
            value_bytes: 1024,
            acks: 1,
        },
        Workload::ProduceParallel {
            producers: PARALLEL_PRODUCERS,
        },
        Workload::ProduceHalfRate,
        Workload::RawProduceHalfRate,
        Workload::RawProduce,
        Workload::ConsumeRdkafka,
        Workload::ConsumeRaw,
        Workload::ProduceConsume,
        Workload::ManyConnections,
    ]
}

fn sweep_workloads() -> Vec<Workload> {
    vec![
        Workload::Produce {
            value_bytes: 1024,
            acks: 1,
        },
        Workload::ProduceHalfRate,
        Workload::RawProduceHalfRate,
        Workload::Produce {
            value_bytes: 100,
            acks: 1,
        },
        Workload::RawProduce,
        Workload::ConsumeRaw,
        Workload::ManyConnections,
    ]
}

/// Rounds behind each cell, as recorded in the median runs' notes ("median of R: ...").
fn runs_per_cell(runs: &[Run]) -> usize {
    runs.iter()
        .filter_map(|r| {
            r.note
                .strip_prefix("median of ")?
                .split(':')
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(1)
}

/// The figure a workload is judged by: throughput, or p99 for the latency workloads.
fn primary(run: &Run) -> f64 {
    let latency_workloads = [
        Workload::ProduceHalfRate.name(),
        Workload::RawProduceHalfRate.name(),
        Workload::ManyConnections.name(),
    ];
    if latency_workloads.contains(&run.workload) {
        run.latency.p99_ms
    } else {
        run.mb_per_s
    }
}

/// Per (workload, N, M): the run with the median primary figure (a whole run, so its stage
/// breakdown belongs to it), its note extended with every round's figure.
fn medians(runs: &[Run], rounds: usize) -> Vec<Run> {
    if rounds <= 1 {
        return runs.to_vec();
    }
    let mut out: Vec<Run> = Vec::new();
    for run in runs {
        let same = |r: &&Run| {
            r.workload == run.workload
                && r.network_threads == run.network_threads
                && r.io_threads == run.io_threads
        };
        if out.iter().any(|r| same(&r)) {
            continue;
        }
        let mut cell: Vec<&Run> = runs.iter().filter(same).collect();
        cell.sort_by(|a, b| primary(a).total_cmp(&primary(b)));
        let mut median = cell[(cell.len() - 1) / 2].clone();
        let figures: Vec<String> = cell.iter().map(|r| format!("{:.1}", primary(r))).collect();
        median.note = format!(
            "median of {}: [{}]; {}",
            cell.len(),
            figures.join(", "),
            median.note
        );
        out.push(median);
    }
    out
}

/// The workloads `--only` keeps, with the runs they depend on.
fn selected(options: &Options, workloads: Vec<Workload>) -> Vec<Workload> {
    if options.only.is_empty() {
        return workloads;
    }
    let wanted = |w: &Workload| options.only.iter().any(|o| w.name().contains(o.as_str()));
    let needs = |w: &Workload, dependency: &Workload| match dependency {
        Workload::Produce {
            value_bytes: 1024,
            acks: 1,
        } => matches!(
            w,
            Workload::ProduceHalfRate
                | Workload::RawProduceHalfRate
                | Workload::ProduceConsume
                | Workload::ConsumeRdkafka
        ),
        Workload::RawProduce => *w == Workload::ConsumeRaw,
        _ => false,
    };
    workloads
        .iter()
        .filter(|d| wanted(d) || workloads.iter().any(|w| wanted(w) && needs(w, d)))
        .copied()
        .collect()
}

fn run_config(
    options: &Options,
    n: usize,
    m: usize,
    workloads: &[Workload],
) -> Result<Vec<Run>, String> {
    let workloads = selected(options, workloads.to_vec());
    let mut bench = Bench::start(options, n, m)?;
    let mut runs = Vec::new();
    for &w in &workloads {
        match bench.run(w) {
            Ok(run) => runs.push(run),
            Err(e) => {
                eprintln!("FAILED: {e}");
                eprintln!("broker log tail:\n{}", bench.broker.log_tail());
                return Err(format!("{} at {n}×{m}: {e}", w.name()));
            }
        }
    }
    let status = bench.broker.stop();
    if !status.contains("exit status: 0") {
        eprintln!("warning: broker {n}×{m} stopped with {status}");
    }
    Ok(runs)
}

fn measure_ceilings(options: &Options) -> Result<Ceilings, String> {
    eprint!("  machine ceilings (sendfile, TCP loopback; best of 3) ... ");
    let c = ceiling::measure(
        &std::env::temp_dir(),
        Duration::from_secs_f64(options.seconds.min(3.0)),
    )?;
    eprintln!(
        "sendfile {:.0} MB/s, TCP {:.0} MB/s",
        c.sendfile_bytes_per_s / MB,
        c.tcp_bytes_per_s / MB
    );
    Ok(c)
}

fn find<'r>(runs: &'r [Run], workload: &Workload, n: usize, m: usize) -> Option<&'r Run> {
    let name = workload.name();
    runs.iter()
        .find(|r| r.workload == name && r.network_threads == n && r.io_threads == m)
}

/// The verdicts the issue asks for, for one N×M.
fn summary(
    runs: &[Run],
    c: &Ceilings,
    fill: &memory::PageFill,
    memory: &[memory::MemoryRun],
    dropping_behind: bool,
    n: usize,
    m: usize,
) -> String {
    let mut out = format!(
        "Machine ceilings (one connection, loopback): sendfile {:.0} MB/s, TCP write/read {:.0} MB/s.\n\n",
        c.sendfile_bytes_per_s / MB,
        c.tcp_bytes_per_s / MB
    );
    let fraction = |w: Workload, ceiling: f64, what: &str| -> Option<String> {
        let r = find(runs, &w, n, m)?;
        Some(format!(
            "- {} at {n}×{m}: {:.0} MB/s = **{:.0} %** of the {what} ceiling\n",
            r.workload,
            r.mb_per_s,
            100.0 * r.mb_per_s * MB / ceiling
        ))
    };
    let lines = [
        fraction(Workload::ConsumeRaw, c.sendfile_bytes_per_s, "sendfile"),
        fraction(Workload::ConsumeRdkafka, c.sendfile_bytes_per_s, "sendfile"),
        fraction(Workload::RawProduce, c.tcp_bytes_per_s, "TCP"),
        fraction(
            Workload::Produce {
                value_bytes: 1024,
                acks: 1,
            },
            c.tcp_bytes_per_s,
            "TCP",
        ),
    ];
    for line in lines.into_iter().flatten() {
        out.push_str(&line);
    }
    let produce_cpu = [
        Workload::ProduceParallel {
            producers: PARALLEL_PRODUCERS,
        },
        Workload::RawProduce,
    ];
    for w in produce_cpu {
        if let Some(r) = find(runs, &w, n, m).filter(|r| r.payload_bytes > 0.0) {
            let gb = r.payload_bytes / 1e9;
            let total = r.broker_cpu_s / gb;
            let verdict = if total <= 1.0 { "met" } else { "NOT met" };
            let new_pages = fill.first.0 + fill.first.1;
            let pages = if dropping_behind {
                "written pages dropped behind the writer and reused, not new".to_string()
            } else {
                format!(
                    "new page-cache pages alone cost this machine {new_pages:.2}, the rest {:.2}",
                    (total - new_pages).max(0.0)
                )
            };
            out += &format!(
                "- broker CPU per GB produced, {}: {:.2} user + {:.2} system = {total:.2} CPU-s/GB \
                 (target ≤ 1.0: {verdict}; {pages})\n",
                r.workload,
                r.broker_user_s / gb,
                r.broker_sys_s / gb,
            );
        }
    }
    if let Some(r) = find(runs, &Workload::ConsumeRaw, n, m) {
        let pct = 100.0 * r.mb_per_s * MB / c.sendfile_bytes_per_s;
        let verdict = if pct >= 80.0 { "met" } else { "NOT met" };
        out += &format!(
            "- target consume ≥ 80 % of the sendfile ceiling (raw fetch): {verdict} ({pct:.1} %)\n"
        );
    }
    if let Some(r) = find(runs, &Workload::RawProduce, n, m) {
        let pct = 100.0 * r.mb_per_s * MB / c.tcp_bytes_per_s;
        let verdict = if pct >= 35.0 { "met" } else { "NOT met" };
        out += &format!("- target raw produce ≥ 35 % of the TCP ceiling: {verdict} ({pct:.1} %)\n");
    }
    // The same raw 1 MiB batches with drop-behind on, from the memory run (8 connections).
    if let Some((r, behind)) = memory.iter().find_map(|r| Some((r, r.drop_behind?))) {
        let gb = r.written_bytes as f64 / 1e9;
        let rate = r.written_bytes as f64 / r.wall_s.max(1e-9);
        let pct = 100.0 * rate / c.tcp_bytes_per_s;
        let cpu = (r.user_cpu_s + r.system_cpu_s) / gb.max(1e-9);
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        out += &format!(
            "- with log.segment.drop.behind.bytes={} (the memory run: raw 1 MiB batches, 8 connections \
             to 8 partitions): {:.0} MB/s = {pct:.1} % of the TCP ceiling (≥ 35 %: {}), {:.2} user + \
             {:.2} system = {cpu:.2} CPU-s/GB (≤ 1.0: {}); the page cache grew {:.0} MB for {gb:.2} GB \
             written\n",
            behind,
            rate / MB,
            met(pct >= 35.0),
            r.user_cpu_s / gb.max(1e-9),
            r.system_cpu_s / gb.max(1e-9),
            met(cpu <= 1.0),
            r.page_cache_growth_mb,
        );
    }
    // The latency target: p99 ≤ 2 ms and p99.9 ≤ 5 ms.
    let latency_ok = |r: &Run| r.latency.p99_ms <= 2.0 && r.latency.p999_ms <= 5.0;
    if let Some(r) = find(runs, &Workload::ProduceHalfRate, n, m) {
        let verdict = if latency_ok(r) { "met" } else { "NOT met" };
        out += &format!(
            "- target produce p99 ≤ 2 ms and p99.9 ≤ 5 ms at half of max throughput, acks=1: {verdict} (p99 {:.2} ms, p99.9 {:.2} ms; {})\n",
            r.latency.p99_ms, r.latency.p999_ms, r.note
        );
    }
    if let Some(r) = find(runs, &Workload::RawProduceHalfRate, n, m) {
        let verdict = if latency_ok(r) {
            "within"
        } else {
            "NOT within"
        };
        out += &format!(
            "- the same load from a paced raw client (no client library queue): {verdict} the target \
             (request p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms)\n",
            r.latency.p50_ms, r.latency.p99_ms, r.latency.p999_ms
        );
    }
    out
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn header(options: &Options, mode: &str, load_at_start: &str) -> String {
    format!(
        "kbroker-bench {mode}: {} s per run, {} round(s), {} partitions, librdkafka {} linger.ms={}, {} CPUs, broker overrides: {}, \
         load average at start {load_at_start}, at end {}\n\
         MB = 10^6 bytes. Latencies: delivery = librdkafka delivery report (from the time the record was due), \
         request = raw request → response, e2e = producer send → consumer receive. Stage columns: mean ms per request \
         from the broker's histograms (req-queue, local, remote = parked in purgatory, resp-queue, send, total). \
         idle = mean idle fraction of the network processors / request handlers during the run.\n",
        options.seconds,
        options.repeat,
        options.partitions,
        rdkafka::util::get_rdkafka_version().1,
        options.linger_ms,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if options.overrides.is_empty() { "none".into() } else { options.overrides.join(" ") },
        load_average(),
    )
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn cluster_mode(options: &Options) -> Result<(), String> {
    let started = Instant::now();
    let load_at_start = load_average();
    eprintln!("kbroker-bench: cluster control plane");
    let counts: Vec<i32> = options
        .cluster_partitions
        .iter()
        .map(|&p| i32::try_from(p).map_err(|_| format!("--cluster-partitions {p} is too large")))
        .collect::<Result<_, _>>()?;
    let runs = cluster::run(&options.broker, &options.overrides, &counts)?;
    let text = format!(
        "# kbroker bench — cluster\n\n3 brokers and one ZooKeeper on this machine ({} CPUs), zookeeper.session.timeout.ms=3000, \
         load average at start {load_at_start}, at end {}; broker overrides: {}.\n\n{}\n\
         \"Usable\": every broker's Metadata lists every partition with a leader. \"After loss\": from the moment \
         ZooKeeper deleted the killed controller's `/controller` (its session expired) to the new controller's znode, \
         and to both survivors' Metadata showing every partition led by a live broker.\n\nTotal bench time {:.0} s.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        if options.overrides.is_empty() { "none".into() } else { options.overrides.join(" ") },
        cluster::report(&runs),
        started.elapsed().as_secs_f64(),
    );
    println!("{text}");
    write_file(&options.out.join("cluster.md"), &text)
}

fn replication_mode(options: &Options) -> Result<(), String> {
    let started = Instant::now();
    let load_at_start = load_average();
    eprintln!("kbroker-bench: replication cost");
    let partitions = options.partitions;
    let runs = cluster::run_replication(
        &options.broker,
        &options.overrides,
        partitions,
        Duration::from_secs_f64(options.seconds),
        options.linger_ms,
    )?;
    let text = format!(
        "# kbroker bench — replication\n\n3 brokers and one ZooKeeper on this machine ({} CPUs; the brokers, ZooKeeper \
         and the producer share them), {partitions} partitions per topic, 1 KiB values, librdkafka {} at full speed for \
         {} s per row, linger.ms={}, load average at start {load_at_start}, at end {}; broker overrides: {}.\n\n{}\n\
         Delivery latency: from the time librdkafka took the record to its delivery report. RF 3 topics have \
         min.insync.replicas=2.\n\nTotal bench time {:.0} s.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        rdkafka::util::get_rdkafka_version().1,
        options.seconds,
        options.linger_ms,
        load_average(),
        if options.overrides.is_empty() { "none".into() } else { options.overrides.join(" ") },
        cluster::replication_report(&runs),
        started.elapsed().as_secs_f64(),
    );
    println!("{text}");
    write_file(&options.out.join("replication.md"), &text)
}

fn quick(options: &Options) -> Result<(), String> {
    let (n, m) = options.threads;
    let started = Instant::now();
    let load_at_start = load_average();
    eprintln!("kbroker-bench: every workload at {n}×{m}");
    let fill = measure_page_fill()?;
    let ceilings = measure_ceilings(options)?;
    let runs = run_config(options, n, m, &quick_workloads())?;
    let ceilings = ceilings.max(measure_ceilings(options)?);
    eprintln!("  produce validation cost (in process) ...");
    let validation = validation::measure(Duration::from_secs(1))?;
    let memory = memory_runs(options)?;
    let raw_cpu_per_gb = runs
        .iter()
        .find(|r| r.workload == Workload::RawProduce.name() && r.mb_per_s > 0.0)
        .filter(|r| r.payload_bytes > 0.0)
        .map(|r| r.broker_cpu_s / (r.payload_bytes / 1e9));
    let text = format!(
        "# kbroker bench — {n}×{m}\n\n{}\n{}\n{}\n## Stage breakdown\n\n{}\n## Against the machine\n\n{}\n\n{}\n{}\nNotes:\n{}\nTotal bench time {:.0} s.\n",
        header(options, "quick", &load_at_start),
        memory::page_fill_section(&fill),
        report::results_table(&runs),
        report::stages_table(&runs),
        summary(&runs, &ceilings, &fill, &memory, drops_behind(options), n, m),
        validation::section(&validation, raw_cpu_per_gb),
        memory::section(&memory),
        runs.iter().map(|r| format!("- {}: {}\n", r.workload, r.note)).collect::<String>(),
        started.elapsed().as_secs_f64(),
    );
    println!("{text}");
    write_file(&options.out.join("latest.md"), &text)?;
    write_file(&options.out.join("latest.csv"), &report::csv(&runs))?;
    write_file(
        &options.out.join("latest-ceilings.txt"),
        &ceilings_text(&ceilings),
    )?;
    Ok(())
}

/// Longer than the kernel's free page reporting delay (2 s) with room to spare.
const MEMORY_PAUSE: Duration = Duration::from_secs(10);

/// Whether `--override` turned drop-behind on for every broker of the run.
fn drops_behind(options: &Options) -> bool {
    options.overrides.iter().rev().find_map(|o| {
        let value = o.strip_prefix("log.segment.drop.behind.bytes=")?;
        Some(value.trim().parse::<i64>().is_ok_and(|v| v >= 0))
    }) == Some(true)
}

/// The resident-memory run with the default window and drop-behind on, the default window
/// alone and a whole-segment window. Each run after the first starts after a pause, so
/// the pages the previous one freed have gone back to a host that takes free pages back
/// (free page reporting) and every configuration starts on the same kind of pages.
fn memory_runs(options: &Options) -> Result<Vec<memory::MemoryRun>, String> {
    let mut runs = Vec::new();
    let behind = options.drop_behind;
    let drop_behind = format!("log.segment.drop.behind.bytes={behind}");
    let label = format!("8 MiB, dropped {} MiB behind", behind >> 20);
    for (i, (label, dropping, overrides)) in [
        (label.as_str(), Some(behind), vec![drop_behind]),
        ("8 MiB (default)", None, vec![]),
        (
            "1 GiB (whole segment, as before)",
            None,
            vec![format!("log.segment.map.window.bytes={}", 1usize << 30)],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            std::thread::sleep(MEMORY_PAUSE);
        }
        eprintln!("  memory: 2 GB to 8 partitions, window {label} ...");
        let overrides = [options.overrides.clone(), overrides].concat();
        let run = memory::MemoryRun {
            drop_behind: dropping,
            ..memory::measure(&options.broker, label, &overrides)?
        };
        eprintln!(
            "    peak VmRSS {:.0} MB, RssAnon {:.0} MB",
            run.peak_rss_mb, run.peak_anon_mb
        );
        runs.push(run);
    }
    Ok(runs)
}

/// The page-fill measurement, with progress on stderr.
fn measure_page_fill() -> Result<memory::PageFill, String> {
    eprint!(
        "  new page-cache pages through a shared mapping ({:.1} GB, twice) ... ",
        memory::PAGE_FILL_BYTES as f64 / 1e9
    );
    let fill = memory::page_fill()?;
    eprintln!(
        "{:.2} then {:.2} CPU-s/GB",
        fill.first.0 + fill.first.1,
        fill.again.0 + fill.again.1
    );
    Ok(fill)
}

fn memory_mode(options: &Options) -> Result<(), String> {
    let fill = measure_page_fill()?;
    let text = format!(
        "# kbroker bench — memory\n\n{}\n{}",
        memory::page_fill_section(&fill),
        memory::section(&memory_runs(options)?)
    );
    println!("{text}");
    write_file(&options.out.join("memory.md"), &text)
}

/// The sweep's plot: four panels, one line per N over M.
fn sweep_svg(options: &Options, runs: &[Run], ceilings: &Ceilings) -> String {
    let points = |w: Workload, value: fn(&Run) -> f64| -> Vec<(usize, usize, f64)> {
        let name = w.name();
        runs.iter()
            .filter(|r| r.workload == name)
            .map(|r| (r.network_threads, r.io_threads, value(r)))
            .collect()
    };
    let produce_1k = Workload::Produce {
        value_bytes: 1024,
        acks: 1,
    };
    let panels = [
        Panel {
            title: "produce 1 KiB acks=1 (librdkafka): throughput",
            unit: "MB/s",
            points: points(produce_1k, |r| r.mb_per_s),
            target: None,
            log: false,
        },
        Panel {
            title: "produce 1 KiB acks=1 at 50 % of max: p99 (log)",
            unit: "ms",
            points: points(Workload::ProduceHalfRate, |r| r.latency.p99_ms),
            target: Some((2.0, "target 2 ms")),
            log: true,
        },
        Panel {
            title: "consume (raw fetch, one connection): throughput",
            unit: "MB/s",
            points: points(Workload::ConsumeRaw, |r| r.mb_per_s),
            target: Some((
                ceilings.sendfile_bytes_per_s * 0.8 / MB,
                "80 % of sendfile ceiling",
            )),
            log: false,
        },
        Panel {
            title: "many connections: Produce request p99 (log)",
            unit: "ms",
            points: points(Workload::ManyConnections, |r| r.latency.p99_ms),
            target: None,
            log: true,
        },
    ];
    let title = format!(
        "kbroker N×M sweep ({} s runs, median of {} round(s), {} CPUs)",
        options.seconds,
        options.repeat.max(runs_per_cell(runs)),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    report::svg(&title, &panels)
}

/// `--plot-from DIR`: redraws DIR/sweep.svg from DIR/sweep.csv and DIR/ceilings.txt.
fn plot_from(options: &Options, dir: &std::path::Path) -> Result<(), String> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| format!("reading {}: {e}", dir.join(name).display()))
    };
    let runs = report::runs_from_csv(&read("sweep.csv")?)?;
    let mut ceilings = Ceilings::default();
    for line in read("ceilings.txt")?.lines() {
        let (key, value) = line
            .split_once('=')
            .ok_or("ceilings.txt: key=value lines")?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| format!("ceilings.txt: {line}"))?;
        match key.trim() {
            "sendfile_mb_per_s" => ceilings.sendfile_bytes_per_s = value * MB,
            "tcp_mb_per_s" => ceilings.tcp_bytes_per_s = value * MB,
            _ => {}
        }
    }
    let svg = sweep_svg(options, &runs, &ceilings);
    write_file(&dir.join("sweep.svg"), &svg)?;
    if let Some(copy) = &options.svg_copy {
        write_file(copy, &svg)?;
    }
    Ok(())
}

fn ceilings_text(c: &Ceilings) -> String {
    format!(
        "sendfile_mb_per_s={:.1}\ntcp_mb_per_s={:.1}\n",
        c.sendfile_bytes_per_s / MB,
        c.tcp_bytes_per_s / MB
    )
}

fn sweep(options: &Options) -> Result<(), String> {
    let started = Instant::now();
    let load_at_start = load_average();
    let (ns, ms) = &options.grid;
    eprintln!("kbroker-bench: sweep over N={ns:?} × M={ms:?}");
    let mut ceilings = measure_ceilings(options)?;
    // Rounds go over the whole grid, so a burst of other load on the machine hits one
    // round of several cells rather than every round of one cell.
    let mut all_runs = Vec::new();
    for round in 1..=options.repeat {
        for &n in ns {
            for &m in ms {
                eprintln!("round {round}/{}: {n}×{m}", options.repeat);
                all_runs.extend(run_config(options, n, m, &sweep_workloads())?);
                // Keep partial results if a later configuration fails.
                write_file(&options.out.join("sweep-all.csv"), &report::csv(&all_runs))?;
            }
        }
        ceilings = ceilings.max(measure_ceilings(options)?);
    }
    let runs = medians(&all_runs, options.repeat);
    let svg = sweep_svg(options, &runs, &ceilings);
    let produce_1k = Workload::Produce {
        value_bytes: 1024,
        acks: 1,
    };
    let best = |w: Workload, higher: bool, value: fn(&Run) -> f64| -> String {
        let name = w.name();
        let mut candidates: Vec<&Run> = runs.iter().filter(|r| r.workload == name).collect();
        candidates.sort_by(|a, b| value(a).total_cmp(&value(b)));
        let pick = if higher {
            candidates.last()
        } else {
            candidates.first()
        };
        pick.map_or("–".into(), |r| {
            format!("{} ({:.2})", r.threads(), value(r))
        })
    };
    let bests = format!(
        "- highest produce 1KiB acks=1 MB/s: {}\n- lowest produce p99 at 50 %: {} ms\n\
         - highest raw consume MB/s: {}\n- lowest many-connections p99: {} ms\n",
        best(produce_1k, true, |r| r.mb_per_s),
        best(Workload::ProduceHalfRate, false, |r| r.latency.p99_ms),
        best(Workload::ConsumeRaw, true, |r| r.mb_per_s),
        best(Workload::ManyConnections, false, |r| r.latency.p99_ms),
    );
    let text = format!(
        "# kbroker N×M sweep\n\n{}\n{}\n## Stage breakdown\n\n{}\n## Best per figure\n\n{}\n## Ceilings\n\n\
         sendfile {:.0} MB/s, TCP {:.0} MB/s (one connection, loopback).\n\nNotes:\n{}\nSweep time {:.0} s.\n",
        header(options, "sweep", &load_at_start),
        report::results_table(&runs),
        report::stages_table(&runs),
        bests,
        ceilings.sendfile_bytes_per_s / MB,
        ceilings.tcp_bytes_per_s / MB,
        runs.iter()
            .map(|r| format!("- {} {}: {}\n", r.workload, r.threads(), r.note))
            .collect::<String>(),
        started.elapsed().as_secs_f64(),
    );
    println!("{text}");
    write_file(&options.out.join("sweep.md"), &text)?;
    write_file(&options.out.join("sweep.csv"), &report::csv(&runs))?;
    write_file(&options.out.join("sweep-all.csv"), &report::csv(&all_runs))?;
    write_file(&options.out.join("ceilings.txt"), &ceilings_text(&ceilings))?;
    write_file(&options.out.join("sweep.svg"), &svg)?;
    if let Some(copy) = &options.svg_copy {
        write_file(copy, &svg)?;
    }
    Ok(())
}

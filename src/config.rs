//! Broker configuration: Kafka's `server.properties` keys and defaults.
//!
//! Sources, later wins: built-in defaults, the properties file, `--override key=value`.
//! Every key is checked against the table below: an unknown key or a value that does not
//! parse or is out of range is refused at start with an error naming the key. A handful of
//! Kafka keys that kbroker accepts but does not act on are listed in `ACCEPTED_IGNORED` and
//! logged at warn level, so a stock Kafka `server.properties` starts.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use kbroker_storage::LogConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("unknown config key {0}")]
    Unknown(String),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected key=value")]
    Syntax { path: String, line: usize },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// A listener `NAME://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Listener {
    pub fn socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            self.host.as_str()
        };
        (host, self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| invalid("listeners", format!("cannot resolve {host}")))
    }
}

fn parse_listeners(key: &str, value: &str) -> Result<Vec<Listener>, ConfigError> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = item
            .split_once("://")
            .ok_or_else(|| invalid(key, format!("{item}: expected NAME://host:port")))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid(key, format!("{item}: missing port")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(key, format!("{item}: bad port")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if name != "PLAINTEXT" {
            return Err(invalid(
                key,
                format!("{item}: only PLAINTEXT listeners are supported"),
            ));
        }
        out.push(Listener {
            name: name.to_string(),
            host,
            port,
        });
    }
    if out.is_empty() {
        return Err(invalid(key, "no listener"));
    }
    Ok(out)
}

/// The broker's settings, typed.
#[derive(Debug, Clone)]
pub struct Config {
    pub broker_id: i32,
    pub listeners: Vec<Listener>,
    pub advertised_listeners: Vec<Listener>,
    pub log_dirs: Vec<PathBuf>,
    pub num_network_threads: usize,
    pub num_io_threads: usize,
    pub queued_max_requests: usize,
    pub socket_request_max_bytes: usize,
    pub socket_send_buffer_bytes: i32,
    pub socket_receive_buffer_bytes: i32,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub connections_max_idle_ms: u64,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub min_insync_replicas: i32,
    pub auto_create_topics_enable: bool,
    pub delete_topic_enable: bool,
    pub message_max_bytes: usize,
    pub log_segment_bytes: usize,
    pub log_roll_ms: i64,
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
    pub log_retention_check_interval_ms: u64,
    pub log_index_size_max_bytes: usize,
    pub log_index_interval_bytes: usize,
    /// kbroker's: bytes of each active segment mapped at a time (docs/tuning.md).
    pub log_segment_map_window_bytes: usize,
    /// kbroker's: written pages this far behind each active segment's writer are written
    /// back and dropped from the page cache; -1 keeps them (docs/tuning.md).
    pub log_segment_drop_behind_bytes: i64,
    pub log_flush_interval_messages: i64,
    pub log_flush_interval_ms: i64,
    pub log_flush_offset_checkpoint_interval_ms: u64,
    pub log_cleanup_policy: String,
    pub log_message_timestamp_type: String,
    pub zookeeper_connect: Option<String>,
    pub zookeeper_session_timeout_ms: u64,
    /// `zookeeper.connection.timeout.ms` (Kafka: the session timeout when unset).
    pub zookeeper_connection_timeout_ms: u64,
    /// `broker.rack`
    pub broker_rack: Option<String>,
    /// `replica.selector.class` is Kafka's RackAwareReplicaSelector (KIP-392): consumers
    /// are sent to a follower in their `client.rack`.
    pub rack_aware_replica_selector: bool,
    /// `inter.broker.listener.name` (the first listener's name when unset).
    pub inter_broker_listener_name: String,
    pub unclean_leader_election_enable: bool,
    pub auto_leader_rebalance_enable: bool,
    pub leader_imbalance_check_interval_seconds: u64,
    pub leader_imbalance_per_broker_percentage: u32,
    pub controlled_shutdown_enable: bool,
    pub controlled_shutdown_max_retries: u32,
    pub controlled_shutdown_retry_backoff_ms: u64,
    pub replica_fetch_max_bytes: usize,
    /// `max.incremental.fetch.session.cache.slots`: fetch sessions (KIP-227) kept.
    pub max_incremental_fetch_session_cache_slots: usize,
    /// `num.replica.fetchers`: fetcher threads per source broker.
    pub num_replica_fetchers: usize,
    pub replica_fetch_response_max_bytes: usize,
    pub replica_fetch_wait_max_ms: i32,
    pub replica_fetch_min_bytes: i32,
    pub replica_fetch_backoff_ms: u64,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    pub replica_socket_timeout_ms: u64,
    /// `leader.replication.throttled.rate` / `follower.replication.throttled.rate`: bytes
    /// per second for throttled replicas (src/replication_quota.rs); Long.MAX: none.
    pub leader_replication_throttled_rate: i64,
    pub follower_replication_throttled_rate: i64,
    /// `replication.quota.window.num` windows of `replication.quota.window.size.seconds`
    /// measure the replication rate.
    pub replication_quota_window_num: usize,
    pub replication_quota_window_size_seconds: i64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub group_initial_rebalance_delay_ms: i32,
    pub group_max_size: usize,
    pub offsets_topic_num_partitions: i32,
    pub offsets_topic_replication_factor: i16,
    pub offsets_topic_segment_bytes: usize,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: i64,
    /// `offsets.commit.timeout.ms`: how long a commit waits for the offsets partition's ISR.
    pub offsets_commit_timeout_ms: u64,
    pub log_cleaner_enable: bool,
    pub log_cleaner_backoff_ms: u64,
    /// `producer.id.expiration.ms`
    pub producer_id_expiration_ms: i64,
    /// `producer.id.expiration.check.interval.ms`
    pub producer_id_expiration_check_interval_ms: u64,
    pub log_cleaner_delete_retention_ms: i64,
    /// The Prometheus endpoint (`metrics.host`:`metrics.port`); `None` when off.
    pub metrics_addr: Option<SocketAddr>,
    /// Every key as finally set, for DescribeConfigs.
    pub raw: BTreeMap<String, String>,
}

/// (key, default) for every key kbroker acts on; the default is Kafka's unless noted.
pub const KNOWN: &[(&str, &str)] = &[
    ("broker.id", "0"),
    ("listeners", "PLAINTEXT://127.0.0.1:9092"), // Kafka binds all interfaces; kbroker loopback
    ("advertised.listeners", ""),
    ("log.dirs", "./data"), // Kafka: /tmp/kafka-logs
    ("log.dir", ""),
    ("num.network.threads", "3"),
    ("num.io.threads", "8"),
    ("queued.max.requests", "500"),
    ("socket.request.max.bytes", "104857600"),
    ("socket.send.buffer.bytes", "102400"),
    ("socket.receive.buffer.bytes", "102400"),
    ("max.connections", "2147483647"),
    ("max.connections.per.ip", "2147483647"),
    ("connections.max.idle.ms", "600000"),
    ("num.partitions", "1"),
    ("default.replication.factor", "1"),
    ("min.insync.replicas", "1"),
    ("auto.create.topics.enable", "true"),
    ("delete.topic.enable", "true"),
    ("message.max.bytes", "1048588"),
    ("log.segment.bytes", "1073741824"),
    ("log.roll.hours", "168"),
    ("log.roll.ms", ""),
    ("log.retention.hours", "168"),
    ("log.retention.minutes", ""),
    ("log.retention.ms", ""),
    ("log.retention.bytes", "-1"),
    ("log.retention.check.interval.ms", "300000"),
    ("log.index.size.max.bytes", "10485760"),
    ("log.index.interval.bytes", "4096"),
    ("log.segment.map.window.bytes", "8388608"),
    ("log.segment.drop.behind.bytes", "-1"),
    ("log.flush.interval.messages", "9223372036854775807"),
    ("log.flush.interval.ms", ""),
    ("log.flush.scheduler.interval.ms", "9223372036854775807"),
    ("log.flush.offset.checkpoint.interval.ms", "60000"),
    ("log.cleanup.policy", "delete"),
    ("log.message.timestamp.type", "CreateTime"),
    ("zookeeper.connect", ""),
    ("zookeeper.session.timeout.ms", "18000"),
    ("zookeeper.connection.timeout.ms", ""),
    ("broker.rack", ""),
    ("replica.selector.class", ""),
    ("inter.broker.listener.name", ""),
    ("unclean.leader.election.enable", "false"),
    ("auto.leader.rebalance.enable", "true"),
    ("leader.imbalance.check.interval.seconds", "300"),
    ("leader.imbalance.per.broker.percentage", "10"),
    ("controlled.shutdown.enable", "true"),
    ("controlled.shutdown.max.retries", "3"),
    ("controlled.shutdown.retry.backoff.ms", "5000"),
    ("replica.fetch.max.bytes", "1048576"),
    ("max.incremental.fetch.session.cache.slots", "1000"),
    ("num.replica.fetchers", "1"),
    ("replica.fetch.response.max.bytes", "10485760"),
    ("replica.fetch.wait.max.ms", "500"),
    ("replica.fetch.min.bytes", "1"),
    ("replica.fetch.backoff.ms", "1000"),
    ("replica.lag.time.max.ms", "30000"),
    ("replica.socket.timeout.ms", "30000"),
    ("leader.replication.throttled.rate", "9223372036854775807"),
    ("follower.replication.throttled.rate", "9223372036854775807"),
    ("replication.quota.window.num", "11"),
    ("replication.quota.window.size.seconds", "1"),
    (
        "replica.alter.log.dirs.io.max.bytes.per.second",
        "9223372036854775807",
    ),
    ("group.min.session.timeout.ms", "6000"),
    ("group.max.session.timeout.ms", "1800000"),
    ("group.initial.rebalance.delay.ms", "3000"),
    ("group.max.size", "2147483647"),
    ("offsets.topic.num.partitions", "50"),
    ("offsets.topic.replication.factor", "3"),
    ("offsets.topic.segment.bytes", "104857600"),
    ("offsets.retention.minutes", "10080"),
    ("offsets.retention.check.interval.ms", "600000"),
    ("offsets.commit.timeout.ms", "5000"),
    ("log.cleaner.enable", "true"),
    ("log.cleaner.backoff.ms", "15000"),
    ("log.cleaner.delete.retention.ms", "86400000"),
    ("log.cleaner.min.cleanable.ratio", "0.5"),
    ("log.cleaner.min.compaction.lag.ms", "0"),
    ("producer.id.expiration.ms", "86400000"),
    ("producer.id.expiration.check.interval.ms", "600000"),
    // Broker defaults of topic configs (see topic_configs.rs): checked with the topic key's
    // rule at start; the first four and the timestamp bounds change behaviour.
    ("compression.type", "producer"),
    ("compression.gzip.level", "-1"),
    ("compression.lz4.level", "9"),
    ("compression.zstd.level", "3"),
    (
        "log.message.timestamp.difference.max.ms",
        "9223372036854775807",
    ),
    ("log.message.timestamp.before.max.ms", "9223372036854775807"),
    ("log.message.timestamp.after.max.ms", "9223372036854775807"),
    ("log.segment.delete.delay.ms", "60000"),
    ("log.local.retention.ms", "-2"),
    ("log.local.retention.bytes", "-2"),
    ("log.cleaner.max.compaction.lag.ms", "9223372036854775807"),
    ("log.message.downconversion.enable", "true"),
    ("log.message.format.version", "3.0-IV1"),
    ("log.preallocate", "false"),
    ("log.roll.jitter.ms", ""),
    ("log.roll.jitter.hours", "0"),
    // kbroker's own (Kafka exports metrics through JMX): the Prometheus endpoint, off when
    // metrics.port is empty.
    ("metrics.port", ""),
    ("metrics.host", "127.0.0.1"),
];

/// Kafka keys accepted for compatibility with stock `server.properties`; not acted on.
pub const ACCEPTED_IGNORED: &[&str] = &[
    "num.recovery.threads.per.data.dir",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
];

/// Broker keys that are only the defaults of topic configs, checked at start with the topic
/// key's rule (the other synonyms are parsed into the broker's own settings).
const TOPIC_DEFAULT_KEYS: &[&str] = &[
    "compression.type",
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.zstd.level",
    "log.message.timestamp.difference.max.ms",
    "log.message.timestamp.before.max.ms",
    "log.message.timestamp.after.max.ms",
    "log.segment.delete.delay.ms",
    "log.local.retention.ms",
    "log.local.retention.bytes",
    "log.cleaner.max.compaction.lag.ms",
    "log.cleaner.min.compaction.lag.ms",
    "log.cleaner.min.cleanable.ratio",
    "log.message.downconversion.enable",
    "log.message.format.version",
    "log.preallocate",
    "log.roll.jitter.ms",
    "log.roll.jitter.hours",
];

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError> {
    v.trim()
        .parse::<T>()
        .map_err(|_| invalid(key, format!("{v:?} is not a valid number")))
}

fn parse_bool(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, format!("{v:?} is not true or false"))),
    }
}

fn at_least<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    v: T,
    min: T,
) -> Result<T, ConfigError> {
    if v < min {
        return Err(invalid(key, format!("{v} is below the minimum {min}")));
    }
    Ok(v)
}

impl Config {
    /// Reads `path` (if any), applies `overrides` (`key=value`), validates.
    pub fn load(path: Option<&str>, overrides: &[String]) -> Result<Config, ConfigError> {
        let mut raw: BTreeMap<String, String> = BTreeMap::new();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_string(),
                source,
            })?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                    continue;
                }
                let (k, v) = line.split_once('=').ok_or(ConfigError::Syntax {
                    path: path.to_string(),
                    line: i + 1,
                })?;
                raw.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| invalid(o, "override must be key=value"))?;
            raw.insert(k.trim().to_string(), v.trim().to_string());
        }
        Config::from_map(raw)
    }

    pub fn from_map(mut raw: BTreeMap<String, String>) -> Result<Config, ConfigError> {
        for key in raw.keys() {
            if ACCEPTED_IGNORED.contains(&key.as_str()) {
                log::warn!("config {key} is accepted but not used by kbroker");
            } else if !KNOWN.iter().any(|(k, _)| k == key) {
                return Err(ConfigError::Unknown(key.clone()));
            }
        }
        for (k, d) in KNOWN {
            if !d.is_empty() {
                raw.entry((*k).to_string())
                    .or_insert_with(|| (*d).to_string());
            }
        }
        let get = |k: &str| raw.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let req = |k: &str| get(k).ok_or_else(|| invalid(k, "missing"));
        for key in TOPIC_DEFAULT_KEYS {
            if let (Some(v), Some(def)) = (get(key), crate::topic_configs::for_broker_key(key)) {
                crate::topic_configs::validate(def, key, v)?;
            }
        }
        let listeners = parse_listeners("listeners", req("listeners")?)?;
        let advertised_listeners = match get("advertised.listeners") {
            Some(v) => parse_listeners("advertised.listeners", v)?,
            None => listeners.clone(),
        };
        let log_dirs: Vec<PathBuf> = get("log.dir")
            .filter(|_| {
                !raw.contains_key("log.dirs")
                    || raw.get("log.dirs").map(String::as_str) == Some("./data")
            })
            .or(get("log.dirs"))
            .unwrap_or("./data")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        if log_dirs.is_empty() {
            return Err(invalid("log.dirs", "no directory"));
        }
        let hours_ms =
            |k: &str| -> Result<i64, ConfigError> { Ok(parse_num::<i64>(k, req(k)?)? * 3_600_000) };
        let log_retention_ms = match (get("log.retention.ms"), get("log.retention.minutes")) {
            (Some(ms), _) => parse_num::<i64>("log.retention.ms", ms)?,
            (None, Some(m)) => parse_num::<i64>("log.retention.minutes", m)? * 60_000,
            (None, None) => hours_ms("log.retention.hours")?,
        };
        if log_retention_ms < -1 {
            return Err(invalid("log.retention.ms", "must be -1 (forever) or >= 0"));
        }
        let log_roll_ms = match get("log.roll.ms") {
            Some(ms) => at_least("log.roll.ms", parse_num::<i64>("log.roll.ms", ms)?, 1)?,
            None => at_least("log.roll.hours", hours_ms("log.roll.hours")?, 1)?,
        };
        let log_flush_interval_ms = match get("log.flush.interval.ms") {
            Some(v) => parse_num("log.flush.interval.ms", v)?,
            None => parse_num(
                "log.flush.scheduler.interval.ms",
                req("log.flush.scheduler.interval.ms")?,
            )?,
        };
        let num = |k: &str| -> Result<i64, ConfigError> { parse_num::<i64>(k, req(k)?) };
        let usize_min = |k: &str, min: i64| -> Result<usize, ConfigError> {
            let v = at_least(k, num(k)?, min)?;
            usize::try_from(v).map_err(|_| invalid(k, "out of range"))
        };
        let i64_min = |k: &str, min: i64| -> Result<i64, ConfigError> { at_least(k, num(k)?, min) };
        // Taken (the reassignment tool sets and clears it) and checked, but kbroker moves no
        // replica between its log dirs: nothing reads it.
        i64_min("replica.alter.log.dirs.io.max.bytes.per.second", 0)?;
        let i32_min = |k: &str, min: i64| -> Result<i32, ConfigError> {
            i32::try_from(at_least(k, num(k)?, min)?).map_err(|_| invalid(k, "out of range"))
        };
        // Kafka's INT-typed sizes: a value past i32::MAX is refused, not clamped.
        let int_size_min =
            |k: &str, min: i64| -> Result<usize, ConfigError> { Ok(i32_min(k, min)? as usize) };
        let cleanup = req("log.cleanup.policy")?.to_string();
        for p in cleanup.split(',') {
            if !matches!(p.trim(), "delete" | "compact") {
                return Err(invalid(
                    "log.cleanup.policy",
                    format!("{p:?} is not delete or compact"),
                ));
            }
        }
        let ts_type = req("log.message.timestamp.type")?.to_string();
        if !matches!(ts_type.as_str(), "CreateTime" | "LogAppendTime") {
            return Err(invalid(
                "log.message.timestamp.type",
                "must be CreateTime or LogAppendTime",
            ));
        }
        let zookeeper_connect = get("zookeeper.connect").map(str::to_string);
        let inter_broker_listener_name = match get("inter.broker.listener.name") {
            Some(name) => {
                if !listeners.iter().any(|l| l.name == name) {
                    return Err(invalid(
                        "inter.broker.listener.name",
                        format!("{name} is not one of the listeners"),
                    ));
                }
                name.to_string()
            }
            None => listeners[0].name.clone(),
        };

        let broker_id = num("broker.id")?;
        if !(0..=i32::MAX as i64).contains(&broker_id) {
            return Err(invalid(
                "broker.id",
                "must be a non-negative 32-bit integer",
            ));
        }
        let config = Config {
            broker_id: broker_id as i32,
            listeners,
            advertised_listeners,
            log_dirs,
            num_network_threads: usize_min("num.network.threads", 1)?,
            num_io_threads: usize_min("num.io.threads", 1)?,
            queued_max_requests: usize_min("queued.max.requests", 1)?,
            socket_request_max_bytes: usize_min("socket.request.max.bytes", 1)?,
            socket_send_buffer_bytes: i32::try_from(num("socket.send.buffer.bytes")?)
                .map_err(|_| invalid("socket.send.buffer.bytes", "out of range"))?,
            socket_receive_buffer_bytes: i32::try_from(num("socket.receive.buffer.bytes")?)
                .map_err(|_| invalid("socket.receive.buffer.bytes", "out of range"))?,
            max_connections: usize_min("max.connections", 0)?,
            max_connections_per_ip: usize_min("max.connections.per.ip", 0)?,
            connections_max_idle_ms: usize_min("connections.max.idle.ms", 1)? as u64,
            num_partitions: i32::try_from(at_least("num.partitions", num("num.partitions")?, 1)?)
                .map_err(|_| invalid("num.partitions", "out of range"))?,
            default_replication_factor: i16::try_from(at_least(
                "default.replication.factor",
                num("default.replication.factor")?,
                1,
            )?)
            .map_err(|_| invalid("default.replication.factor", "out of range"))?,
            min_insync_replicas: i32::try_from(at_least(
                "min.insync.replicas",
                num("min.insync.replicas")?,
                1,
            )?)
            .map_err(|_| invalid("min.insync.replicas", "out of range"))?,
            auto_create_topics_enable: parse_bool(
                "auto.create.topics.enable",
                req("auto.create.topics.enable")?,
            )?,
            delete_topic_enable: parse_bool("delete.topic.enable", req("delete.topic.enable")?)?,
            message_max_bytes: int_size_min("message.max.bytes", 0)?,
            log_segment_bytes: int_size_min("log.segment.bytes", 14)?,
            log_roll_ms,
            log_retention_ms,
            log_retention_bytes: num("log.retention.bytes")?,
            log_retention_check_interval_ms: usize_min("log.retention.check.interval.ms", 1)?
                as u64,
            log_index_size_max_bytes: int_size_min("log.index.size.max.bytes", 4)?,
            log_index_interval_bytes: int_size_min("log.index.interval.bytes", 0)?,
            log_segment_map_window_bytes: int_size_min(
                "log.segment.map.window.bytes",
                kbroker_storage::window::MIN_WINDOW_BYTES as i64,
            )?,
            log_segment_drop_behind_bytes: i64_min("log.segment.drop.behind.bytes", -1)?,
            log_flush_interval_messages: at_least(
                "log.flush.interval.messages",
                num("log.flush.interval.messages")?,
                1,
            )?,
            log_flush_interval_ms,
            log_flush_offset_checkpoint_interval_ms: usize_min(
                "log.flush.offset.checkpoint.interval.ms",
                0,
            )? as u64,
            log_cleanup_policy: cleanup,
            log_message_timestamp_type: ts_type,
            zookeeper_connect,
            zookeeper_session_timeout_ms: usize_min("zookeeper.session.timeout.ms", 1)? as u64,
            zookeeper_connection_timeout_ms: match get("zookeeper.connection.timeout.ms") {
                Some(_) => usize_min("zookeeper.connection.timeout.ms", 1)? as u64,
                None => usize_min("zookeeper.session.timeout.ms", 1)? as u64,
            },
            broker_rack: get("broker.rack").map(str::to_string),
            rack_aware_replica_selector: match get("replica.selector.class") {
                None | Some("org.apache.kafka.common.replica.LeaderSelector") => false,
                Some("org.apache.kafka.common.replica.RackAwareReplicaSelector") => true,
                Some(other) => {
                    return Err(invalid(
                        "replica.selector.class",
                        format!(
                            "{other:?}: kbroker has org.apache.kafka.common.replica.\
                             RackAwareReplicaSelector and LeaderSelector"
                        ),
                    ))
                }
            },
            inter_broker_listener_name,
            unclean_leader_election_enable: parse_bool(
                "unclean.leader.election.enable",
                req("unclean.leader.election.enable")?,
            )?,
            auto_leader_rebalance_enable: parse_bool(
                "auto.leader.rebalance.enable",
                req("auto.leader.rebalance.enable")?,
            )?,
            leader_imbalance_check_interval_seconds: usize_min(
                "leader.imbalance.check.interval.seconds",
                1,
            )? as u64,
            leader_imbalance_per_broker_percentage: i32_min(
                "leader.imbalance.per.broker.percentage",
                0,
            )? as u32,
            controlled_shutdown_enable: parse_bool(
                "controlled.shutdown.enable",
                req("controlled.shutdown.enable")?,
            )?,
            controlled_shutdown_max_retries: i32_min("controlled.shutdown.max.retries", 0)? as u32,
            controlled_shutdown_retry_backoff_ms: usize_min(
                "controlled.shutdown.retry.backoff.ms",
                0,
            )? as u64,
            replica_fetch_max_bytes: usize_min("replica.fetch.max.bytes", 0)?,
            max_incremental_fetch_session_cache_slots: usize_min(
                "max.incremental.fetch.session.cache.slots",
                0,
            )?,
            num_replica_fetchers: usize_min("num.replica.fetchers", 1)?.min(64),
            replica_fetch_response_max_bytes: usize_min("replica.fetch.response.max.bytes", 0)?,
            replica_fetch_wait_max_ms: i32_min("replica.fetch.wait.max.ms", 0)?,
            replica_fetch_min_bytes: i32_min("replica.fetch.min.bytes", 0)?,
            replica_fetch_backoff_ms: usize_min("replica.fetch.backoff.ms", 0)? as u64,
            replica_lag_time_max_ms: usize_min("replica.lag.time.max.ms", 1)? as i64,
            replica_socket_timeout_ms: usize_min("replica.socket.timeout.ms", 1)? as u64,
            leader_replication_throttled_rate: i64_min("leader.replication.throttled.rate", 0)?,
            follower_replication_throttled_rate: i64_min("follower.replication.throttled.rate", 0)?,
            replication_quota_window_num: usize_min("replication.quota.window.num", 1)?.min(1000),
            replication_quota_window_size_seconds: i64_min(
                "replication.quota.window.size.seconds",
                1,
            )?
            .min(86_400),
            group_min_session_timeout_ms: i32_min("group.min.session.timeout.ms", 0)?,
            group_max_session_timeout_ms: i32_min("group.max.session.timeout.ms", 0)?,
            group_initial_rebalance_delay_ms: i32_min("group.initial.rebalance.delay.ms", 0)?,
            group_max_size: usize_min("group.max.size", 1)?,
            offsets_topic_num_partitions: i32_min("offsets.topic.num.partitions", 1)?,
            offsets_topic_replication_factor: i16::try_from(i32_min(
                "offsets.topic.replication.factor",
                1,
            )?)
            .map_err(|_| invalid("offsets.topic.replication.factor", "out of range"))?,
            offsets_topic_segment_bytes: usize_min("offsets.topic.segment.bytes", 14)?,
            offsets_retention_ms: at_least(
                "offsets.retention.minutes",
                num("offsets.retention.minutes")?,
                1,
            )? * 60_000,
            offsets_retention_check_interval_ms: at_least(
                "offsets.retention.check.interval.ms",
                num("offsets.retention.check.interval.ms")?,
                1,
            )?,
            offsets_commit_timeout_ms: usize_min("offsets.commit.timeout.ms", 1)? as u64,
            log_cleaner_enable: parse_bool("log.cleaner.enable", req("log.cleaner.enable")?)?,
            log_cleaner_backoff_ms: usize_min("log.cleaner.backoff.ms", 1)? as u64,
            producer_id_expiration_ms: i32_min("producer.id.expiration.ms", 1)? as i64,
            producer_id_expiration_check_interval_ms: usize_min(
                "producer.id.expiration.check.interval.ms",
                1,
            )? as u64,
            log_cleaner_delete_retention_ms: at_least(
                "log.cleaner.delete.retention.ms",
                num("log.cleaner.delete.retention.ms")?,
                0,
            )?,
            metrics_addr: match get("metrics.port") {
                Some(port) => {
                    let port = u16::try_from(parse_num::<i64>("metrics.port", port)?)
                        .map_err(|_| invalid("metrics.port", "not a port (0-65535)"))?;
                    let host = get("metrics.host").unwrap_or("127.0.0.1");
                    let addr = (host, port)
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.next());
                    Some(
                        addr.ok_or_else(|| {
                            invalid("metrics.host", format!("cannot resolve {host}"))
                        })?,
                    )
                }
                None => None,
            },
            raw: raw.clone(),
        };
        if config.group_min_session_timeout_ms > config.group_max_session_timeout_ms {
            return Err(invalid(
                "group.min.session.timeout.ms",
                "greater than group.max.session.timeout.ms",
            ));
        }
        for l in &config.listeners {
            l.socket_addr()?;
        }
        Ok(config)
    }

    /// The broker-level defaults of every topic's log config.
    pub fn default_log_config(&self) -> LogConfig {
        let mut c = LogConfig {
            segment_bytes: self.log_segment_bytes,
            segment_ms: self.log_roll_ms,
            segment_index_bytes: self.log_index_size_max_bytes,
            index_interval_bytes: self.log_index_interval_bytes,
            map_window: kbroker_storage::window::WindowConfig {
                bytes: self.log_segment_map_window_bytes,
                drop_behind: usize::try_from(self.log_segment_drop_behind_bytes).ok(),
            },
            retention_ms: self.log_retention_ms,
            retention_bytes: self.log_retention_bytes,
            max_message_bytes: self.message_max_bytes,
            flush_messages: self.log_flush_interval_messages,
            flush_ms: self.log_flush_interval_ms,
            cleanup_delete: self.log_cleanup_policy.contains("delete"),
            cleanup_compact: self.log_cleanup_policy.contains("compact"),
            log_append_time: self.log_message_timestamp_type == "LogAppendTime",
            delete_retention_ms: self.log_cleaner_delete_retention_ms,
            producer_id_expiration_ms: self.producer_id_expiration_ms,
            ..LogConfig::default()
        };

        // The broker defaults of topic configs that act on the produce path or the cleaner
        // (validated at start, so applying them cannot fail).
        for (broker_key, topic_key) in [
            ("compression.type", "compression.type"),
            ("compression.gzip.level", "compression.gzip.level"),
            ("compression.lz4.level", "compression.lz4.level"),
            ("compression.zstd.level", "compression.zstd.level"),
            (
                "log.message.timestamp.difference.max.ms",
                "message.timestamp.difference.max.ms",
            ),
            (
                "log.message.timestamp.before.max.ms",
                "message.timestamp.before.max.ms",
            ),
            (
                "log.message.timestamp.after.max.ms",
                "message.timestamp.after.max.ms",
            ),
            (
                "log.cleaner.min.cleanable.ratio",
                "min.cleanable.dirty.ratio",
            ),
            ("log.cleaner.min.compaction.lag.ms", "min.compaction.lag.ms"),
            ("log.cleaner.max.compaction.lag.ms", "max.compaction.lag.ms"),
        ] {
            if let Some(v) = self.raw.get(broker_key) {
                let _ = apply_layered_config(&mut c, topic_key, v);
            }
        }
        c
    }
}

/// Applies topic overrides to the broker defaults; an error names the bad key. Every key
/// is checked with Kafka's rule for it ([`crate::topic_configs`]); those with behaviour in
/// the log or the produce path change `LogConfig`.
pub fn topic_log_config(
    defaults: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<LogConfig, ConfigError> {
    let mut c = defaults.clone();
    for (k, v) in overrides {
        let def = crate::topic_configs::find(k).ok_or_else(|| ConfigError::Unknown(k.clone()))?;
        crate::topic_configs::validate(def, k, v)?;
        let int = || parse_num::<i64>(k, v);
        // Validated: INT-typed values fit in i32 and are not negative where a size is.
        let size = || int().map(|n| n.max(0) as usize);
        match k.as_str() {
            "cleanup.policy" => {
                let parts: Vec<&str> = v.split(',').map(str::trim).collect();
                c.cleanup_delete = parts.contains(&"delete");
                c.cleanup_compact = parts.contains(&"compact");
            }
            "retention.ms" => c.retention_ms = int()?,
            "retention.bytes" => c.retention_bytes = int()?,
            "segment.bytes" => c.segment_bytes = size()?,
            "segment.ms" => c.segment_ms = int()?,
            "segment.index.bytes" => c.segment_index_bytes = size()?,
            "index.interval.bytes" => c.index_interval_bytes = size()?,
            "max.message.bytes" => c.max_message_bytes = size()?,
            "flush.messages" => c.flush_messages = int()?,
            "flush.ms" => c.flush_ms = int()?,
            "message.timestamp.type" => c.log_append_time = v.trim() == "LogAppendTime",
            "delete.retention.ms" => c.delete_retention_ms = int()?,
            other => {
                apply_layered_config(&mut c, other, v)?;
            }
        }
    }
    Ok(c)
}

/// The topic configs whose broker defaults are applied the same way: the produce path's
/// (`compression.type` and its levels, the CreateTime timestamp bounds) and the cleaner's
/// (dirty ratio, compaction lags). Other keys are left alone (`Ok(false)`).
fn apply_layered_config(c: &mut LogConfig, key: &str, value: &str) -> Result<bool, ConfigError> {
    let v = value.trim();
    let int = || parse_num::<i64>(key, v);
    match key {
        "compression.type" => {
            c.compression = crate::topic_configs::COMPRESSION_CODECS
                .iter()
                .find(|(name, _)| *name == v)
                .ok_or_else(|| invalid(key, format!("{v:?} is not a compression type")))?
                .1
        }
        "compression.gzip.level" => c.gzip_level = int()? as i32,
        "compression.lz4.level" => c.lz4_level = int()? as i32,
        "compression.zstd.level" => c.zstd_level = int()? as i32,
        "message.timestamp.before.max.ms" => c.timestamp_before_max_ms = int()?,
        "message.timestamp.after.max.ms" => c.timestamp_after_max_ms = int()?,
        "message.timestamp.difference.max.ms" => c.timestamp_difference_max_ms = int()?,
        "min.cleanable.dirty.ratio" => c.min_cleanable_ratio = parse_num::<f64>(key, v)?,
        "min.compaction.lag.ms" => c.min_compaction_lag_ms = int()?,
        "max.compaction.lag.ms" => c.max_compaction_lag_ms = int()?,
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(overrides: &[&str]) -> Result<Config, ConfigError> {
        Config::load(
            None,
            &overrides.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn defaults_are_kafkas_with_loopback_listener() {
        let c = load(&[]).expect("defaults");
        assert_eq!(c.listeners[0].host, "127.0.0.1");
        assert_eq!(c.listeners[0].port, 9092);
        assert_eq!(c.log_dirs, vec![PathBuf::from("./data")]);
        assert_eq!(
            (
                c.num_network_threads,
                c.num_io_threads,
                c.queued_max_requests
            ),
            (3, 8, 500)
        );
        assert_eq!(c.log_retention_ms, 168 * 3_600_000);
        assert_eq!(c.message_max_bytes, 1_048_588);
    }

    #[test]
    fn bad_input_names_the_key() {
        let e = load(&["no.such.key=1"]).expect_err("unknown");
        assert!(e.to_string().contains("no.such.key"));
        let e = load(&["num.io.threads=abc"]).expect_err("bad number");
        assert!(e.to_string().contains("num.io.threads"));
        let e = load(&["num.io.threads=0"]).expect_err("below min");
        assert!(e.to_string().contains("num.io.threads"));
        let e = load(&["listeners=PLAINTEXT://127.0.0.1"]).expect_err("no port");
        assert!(e.to_string().contains("listeners"));
        let e = load(&["auto.create.topics.enable=yes"]).expect_err("bool");
        assert!(e.to_string().contains("auto.create.topics.enable"));
    }

    #[test]
    fn retention_precedence_ms_over_minutes_over_hours() {
        assert_eq!(
            load(&["log.retention.minutes=2"])
                .expect("ok")
                .log_retention_ms,
            120_000
        );
        assert_eq!(
            load(&["log.retention.minutes=2", "log.retention.ms=5"])
                .expect("ok")
                .log_retention_ms,
            5
        );
        assert_eq!(
            load(&["log.retention.hours=1"])
                .expect("ok")
                .log_retention_ms,
            3_600_000
        );
    }

    #[test]
    fn topic_overrides_validate() {
        let d = LogConfig::default();
        let mut m = BTreeMap::new();
        m.insert("retention.ms".to_string(), "1000".to_string());
        m.insert("cleanup.policy".to_string(), "compact".to_string());
        let c = topic_log_config(&d, &m).expect("ok");
        assert_eq!(c.retention_ms, 1000);
        assert!(c.cleanup_compact && !c.cleanup_delete);
        m.insert("segment.bytes".to_string(), "x".to_string());
        assert!(topic_log_config(&d, &m)
            .expect_err("bad")
            .to_string()
            .contains("segment.bytes"));
        // INT-typed sizes past i32::MAX are refused, not clamped; Kafka's minimums hold.
        for (k, v) in [
            ("segment.bytes", "4294967296"),
            ("segment.bytes", "13"),
            ("segment.index.bytes", "3"),
            ("max.message.bytes", "2147483648"),
            ("index.interval.bytes", "-1"),
        ] {
            let mut m = BTreeMap::new();
            m.insert(k.to_string(), v.to_string());
            let e = topic_log_config(&d, &m).expect_err("refused");
            assert!(e.to_string().contains(k), "{k}={v}: {e}");
        }
        let mut m = BTreeMap::new();
        m.insert("segment.bytes".to_string(), "2147483647".to_string());
        assert_eq!(
            topic_log_config(&d, &m).expect("max int").segment_bytes,
            i32::MAX as usize
        );
    }
}

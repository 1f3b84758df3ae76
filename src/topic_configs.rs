//! Every topic config key of Kafka 3.9, with its type, range, default, broker-level
//! synonyms (in Kafka's order of precedence) and a line of documentation: the one table
//! CreateTopics, the stored overrides and DescribeConfigs go through.
//!
//! A key not in the table is refused (INVALID_CONFIG, "unknown config key"); a value is
//! checked with Kafka's rules for its key (type, range, allowed values). What kbroker does
//! with each one is in [`Effect`]: most change the log's behaviour; a few are kept and
//! described but have nothing to act on in kbroker (no down-conversion, no tiered storage,
//! no replication throttle) — the README lists them.

use crate::config::ConfigError;

/// What a key's values look like, and Kafka's rule for them.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A 64-bit integer at least `min`.
    Long {
        min: i64,
    },
    /// A 32-bit integer within `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    /// gzip's level: -1 (the codec's default) or 1..=9.
    GzipLevel,
    /// A number within `min..=max`.
    Double {
        min: f64,
        max: f64,
    },
    Bool,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of these strings (at least one).
    ListOf(&'static [&'static str]),
    /// `*`, empty, or a list of `partition:broker` pairs.
    ThrottledReplicas,
    /// A Kafka release or inter-broker protocol version, as `message.format.version` takes.
    MessageFormat,
}

impl Kind {
    /// Kafka's ConfigType in DescribeConfigs v3+ (BOOLEAN 1, STRING 2, INT 3, LONG 5,
    /// DOUBLE 6, LIST 7).
    pub fn config_type(self) -> i8 {
        match self {
            Kind::Bool => 1,
            Kind::OneOf(_) | Kind::MessageFormat => 2,
            Kind::Int { .. } | Kind::GzipLevel => 3,
            Kind::Long { .. } => 5,
            Kind::Double { .. } => 6,
            Kind::ListOf(_) | Kind::ThrottledReplicas => 7,
        }
    }
}

/// What kbroker does with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Changes the log, the produce path, the cleaner or the controller.
    Acted,
    /// Validated, stored and described; kbroker has nothing it would change (the reason
    /// is in the README).
    Kept,
}

pub struct TopicConfigDef {
    pub name: &'static str,
    pub kind: Kind,
    /// Kafka's default when no broker synonym is set.
    pub default: &'static str,
    /// Broker keys that set the default for every topic, first wins.
    pub synonyms: &'static [&'static str],
    pub effect: Effect,
    pub doc: &'static str,
}

const LONG_MAX: &str = "9223372036854775807";
const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

/// `compression.type` values and the codec each stores batches in (`None`: as produced).
pub const COMPRESSION_CODECS: &[(&str, Option<i16>)] = {
    use kbroker_storage::compression::{GZIP, LZ4, NONE, SNAPPY, ZSTD};
    &[
        ("uncompressed", Some(NONE)),
        ("zstd", Some(ZSTD)),
        ("lz4", Some(LZ4)),
        ("snappy", Some(SNAPPY)),
        ("gzip", Some(GZIP)),
        ("producer", None),
    ]
};

const fn def(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    synonyms: &'static [&'static str],
    effect: Effect,
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        kind,
        default,
        synonyms,
        effect,
        doc,
    }
}

use Effect::{Acted, Kept};

/// Kafka 3.9's topic configs (`kafka-configs --describe --all` lists the same names), one
/// row each: name, kind, default, broker synonyms, effect, documentation.
#[rustfmt::skip]
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def("cleanup.policy", Kind::ListOf(&["delete", "compact"]), "delete", &["log.cleanup.policy"], Acted,
        "delete: old segments are removed by retention; compact: only the latest record of each key is kept; both may be given."),
    def("compression.type", Kind::OneOf(COMPRESSION_TYPES), "producer", &["compression.type"], Acted,
        "The codec batches are stored in: producer keeps what the producer sent; any other value recompresses batches that differ."),
    def("compression.gzip.level", Kind::GzipLevel, "-1", &["compression.gzip.level"], Acted,
        "Level used when the broker compresses with gzip (-1: the codec's default)."),
    def("compression.lz4.level", Kind::Int { min: 1, max: 17 }, "9", &["compression.lz4.level"], Acted,
        "Level used when the broker compresses with lz4 (kbroker's encoder has a single level)."),
    def("compression.zstd.level", Kind::Int { min: -131_072, max: 22 }, "3", &["compression.zstd.level"], Acted,
        "Level used when the broker compresses with zstd."),
    def("delete.retention.ms", Kind::Long { min: 0 }, "86400000", &["log.cleaner.delete.retention.ms"], Acted,
        "How long tombstones of a compacted topic are kept after their segment was cleaned."),
    def("file.delete.delay.ms", Kind::Long { min: 0 }, "60000", &["log.segment.delete.delay.ms"], Kept,
        "Delay before a deleted segment's files are removed (kbroker unlinks at once; open readers keep their file)."),
    def("flush.messages", Kind::Long { min: 1 }, LONG_MAX, &["log.flush.interval.messages"], Acted,
        "Records appended between forced fsyncs of the log."),
    def("flush.ms", Kind::Long { min: 0 }, LONG_MAX, &["log.flush.interval.ms", "log.flush.scheduler.interval.ms"], Acted,
        "Milliseconds between forced fsyncs of the log."),
    def("follower.replication.throttled.replicas", Kind::ThrottledReplicas, "", &[], Acted,
        "Replicas whose follower fetches are throttled by follower.replication.throttled.rate (partition:broker list or *)."),
    def("index.interval.bytes", Kind::Int { min: 0, max: i32::MAX as i64 }, "4096", &["log.index.interval.bytes"], Acted,
        "Bytes of log between offset index entries."),
    def("leader.replication.throttled.replicas", Kind::ThrottledReplicas, "", &[], Acted,
        "Replicas whose leader-side replication is throttled by leader.replication.throttled.rate (partition:broker list or *)."),
    def("local.retention.bytes", Kind::Long { min: -2 }, "-2", &["log.local.retention.bytes"], Kept,
        "Local retention with tiered storage (-2: retention.bytes); kbroker has no tiered storage."),
    def("local.retention.ms", Kind::Long { min: -2 }, "-2", &["log.local.retention.ms"], Kept,
        "Local retention with tiered storage (-2: retention.ms); kbroker has no tiered storage."),
    def("max.compaction.lag.ms", Kind::Long { min: 1 }, LONG_MAX, &["log.cleaner.max.compaction.lag.ms"], Acted,
        "Longest a record may stay uncompacted: an older dirty record makes the cleaner run whatever the dirty ratio, and the active segment of a compacted log rolls by then."),
    def("max.message.bytes", Kind::Int { min: 0, max: i32::MAX as i64 }, "1048588", &["message.max.bytes"], Acted,
        "The largest record batch accepted, after any recompression."),
    def("message.downconversion.enable", Kind::Bool, "true", &["log.message.downconversion.enable"], Kept,
        "Whether old fetch versions get down-converted batches (kbroker serves Fetch v4+ only, which needs none)."),
    def("message.format.version", Kind::MessageFormat, "3.0-IV1", &["log.message.format.version"], Kept,
        "Deprecated since Kafka 3.0: batches are always stored as record batch v2."),
    def("message.timestamp.after.max.ms", Kind::Long { min: 0 }, LONG_MAX, &["log.message.timestamp.after.max.ms"], Acted,
        "How far ahead of the broker's clock a CreateTime record's timestamp may be (else INVALID_TIMESTAMP)."),
    def("message.timestamp.before.max.ms", Kind::Long { min: 0 }, LONG_MAX, &["log.message.timestamp.before.max.ms"], Acted,
        "How far behind the broker's clock a CreateTime record's timestamp may be (else INVALID_TIMESTAMP)."),
    def("message.timestamp.difference.max.ms", Kind::Long { min: 0 }, LONG_MAX, &["log.message.timestamp.difference.max.ms"], Acted,
        "Deprecated: both of the above, where they are not set."),
    def("message.timestamp.type", Kind::OneOf(&["CreateTime", "LogAppendTime"]), "CreateTime", &["log.message.timestamp.type"], Acted,
        "CreateTime keeps the producer's timestamps; LogAppendTime stamps each batch with the broker's clock."),
    def("min.cleanable.dirty.ratio", Kind::Double { min: 0.0, max: 1.0 }, "0.5", &["log.cleaner.min.cleanable.ratio"], Acted,
        "The cleaner compacts a log once more than this share of its cleanable bytes is dirty (written since the last pass)."),
    def("min.compaction.lag.ms", Kind::Long { min: 0 }, "0", &["log.cleaner.min.compaction.lag.ms"], Acted,
        "Shortest time a record stays uncompacted: segments holding a younger record are not cleaned yet."),
    def("min.insync.replicas", Kind::Int { min: 1, max: i32::MAX as i64 }, "1", &["min.insync.replicas"], Acted,
        "Replicas that must have an acks=all write before it is acknowledged (else NOT_ENOUGH_REPLICAS)."),
    def("preallocate", Kind::Bool, "false", &["log.preallocate"], Kept,
        "Preallocate new segment files (kbroker reserves blocks of every active segment ahead of the writer anyway)."),
    def("remote.log.copy.disable", Kind::Bool, "false", &[], Kept,
        "Tiered storage: stop copying segments to remote storage; kbroker has no tiered storage."),
    def("remote.log.delete.on.disable", Kind::Bool, "false", &[], Kept,
        "Tiered storage: delete remote segments when tiering is disabled; kbroker has no tiered storage."),
    def("remote.storage.enable", Kind::Bool, "false", &[], Kept,
        "Tiered storage for this topic; kbroker refuses true (no remote log storage system)."),
    def("retention.bytes", Kind::Long { min: i64::MIN }, "-1", &["log.retention.bytes"], Acted,
        "Largest size of a partition's log before old segments are deleted (-1: no limit)."),
    def("retention.ms", Kind::Long { min: -1 }, "604800000", &["log.retention.ms", "log.retention.minutes", "log.retention.hours"], Acted,
        "Longest a segment is kept after its last record (-1: forever)."),
    def("segment.bytes", Kind::Int { min: 14, max: i32::MAX as i64 }, "1073741824", &["log.segment.bytes"], Acted,
        "Size at which the active segment is rolled."),
    def("segment.index.bytes", Kind::Int { min: 4, max: i32::MAX as i64 }, "10485760", &["log.index.size.max.bytes"], Acted,
        "Size of each segment's offset and time index files."),
    def("segment.jitter.ms", Kind::Long { min: 0 }, "0", &["log.roll.jitter.ms", "log.roll.jitter.hours"], Kept,
        "Random jitter subtracted from segment.ms (kbroker rolls at segment.ms exactly)."),
    def("segment.ms", Kind::Long { min: 1 }, "604800000", &["log.roll.ms", "log.roll.hours"], Acted,
        "Age of the active segment's first record at which it is rolled."),
    def("unclean.leader.election.enable", Kind::Bool, "false", &["unclean.leader.election.enable"], Acted,
        "Whether the controller may elect a replica outside the ISR when the whole ISR is gone (it may lack acknowledged records)."),
];

pub fn find(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The topic config that broker key `key` is the default of.
pub fn for_broker_key(key: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.synonyms.contains(&key))
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn integer(key: &str, value: &str) -> Result<i64, ConfigError> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| invalid(key, format!("{value:?} is not a valid number")))
}

/// Checks `value` for `def` with Kafka's rule, reporting the error under `key` (the topic
/// key, or the broker synonym being checked).
pub fn validate(def: &TopicConfigDef, key: &str, value: &str) -> Result<(), ConfigError> {
    let v = value.trim();
    match def.kind {
        Kind::Long { min } => {
            let n = integer(key, v)?;
            if n < min {
                return Err(invalid(key, format!("{n} is below the minimum {min}")));
            }
        }
        Kind::Int { min, max } => {
            let n = integer(key, v)?;
            if n < min || n > max {
                return Err(invalid(key, format!("{n} is not within [{min}, {max}]")));
            }
        }
        Kind::GzipLevel => {
            let n = integer(key, v)?;
            if n != -1 && !(1..=9).contains(&n) {
                return Err(invalid(key, format!("{n} is not -1 or within [1, 9]")));
            }
        }
        Kind::Double { min, max } => {
            let x: f64 = v
                .parse()
                .map_err(|_| invalid(key, format!("{value:?} is not a number")))?;
            if !(min..=max).contains(&x) {
                return Err(invalid(key, format!("{x} is not within [{min}, {max}]")));
            }
        }
        Kind::Bool => {
            if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                return Err(invalid(key, format!("{value:?} is not true or false")));
            }
        }
        Kind::OneOf(allowed) => {
            if !allowed.contains(&v) {
                return Err(invalid(key, format!("{value:?} is not one of {allowed:?}")));
            }
        }
        Kind::ListOf(allowed) => {
            let parts: Vec<&str> = v.split(',').map(str::trim).collect();
            if parts.iter().any(|p| !allowed.contains(p)) {
                return Err(invalid(
                    key,
                    format!("{value:?} is not a list of {allowed:?}"),
                ));
            }
        }
        Kind::ThrottledReplicas => {
            let ok = v.is_empty()
                || v == "*"
                || v.split(',').all(|pair| {
                    pair.trim().split_once(':').is_some_and(|(p, b)| {
                        p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
                    })
                });
            if !ok {
                return Err(invalid(
                    key,
                    format!("{value:?} is not * or a list of partition:broker pairs"),
                ));
            }
        }
        Kind::MessageFormat => {
            if !message_format_version_is_valid(v) {
                return Err(invalid(key, format!("{value:?} is not a Kafka version")));
            }
        }
    }
    if def.name == "remote.storage.enable" && v.eq_ignore_ascii_case("true") {
        return Err(invalid(
            key,
            "tiered storage is not available: kbroker has no remote log storage system",
        ));
    }
    Ok(())
}

/// Kafka's MetadataVersion names as `message.format.version` accepts them: `0.8.0` ...
/// `0.11.0`, `1.0` ... `3.9`, optionally with an `-IVn` suffix.
fn message_format_version_is_valid(v: &str) -> bool {
    let base = v
        .split_once("-IV")
        .map_or(v, |(b, iv)| if iv.parse::<u8>().is_ok() { b } else { "" });
    let parts: Vec<&str> = base.split('.').collect();
    let nums: Option<Vec<u32>> = parts.iter().map(|p| p.parse::<u32>().ok()).collect();
    match nums.as_deref() {
        Some([0, minor, _]) | Some([0, minor, _, _]) => (8..=11).contains(minor),
        Some([major, minor]) | Some([major, minor, _]) => match major {
            1 => *minor <= 1,
            2 => *minor <= 8,
            3 => *minor <= 9,
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, value: &str) -> bool {
        validate(find(name).expect("known key"), name, value).is_ok()
    }

    #[test]
    fn kafka_rules_for_each_kind() {
        assert!(check("compression.type", "zstd") && !check("compression.type", "brotli"));
        assert!(check("compression.gzip.level", "-1") && check("compression.gzip.level", "9"));
        assert!(!check("compression.gzip.level", "0") && !check("compression.gzip.level", "10"));
        assert!(
            check("compression.zstd.level", "-131072") && !check("compression.zstd.level", "23")
        );
        assert!(check("segment.bytes", "14") && !check("segment.bytes", "13"));
        assert!(
            !check("segment.bytes", "2147483648"),
            "an INT past i32::MAX"
        );
        assert!(check("retention.ms", "-1") && !check("retention.ms", "-2"));
        assert!(
            check("retention.bytes", "-5"),
            "retention.bytes has no minimum"
        );
        assert!(
            check("min.cleanable.dirty.ratio", "0.1") && !check("min.cleanable.dirty.ratio", "1.5")
        );
        assert!(
            check("cleanup.policy", "compact,delete") && !check("cleanup.policy", "compact,keep")
        );
        assert!(check("preallocate", "TRUE") && !check("preallocate", "yes"));
        assert!(check("leader.replication.throttled.replicas", "0:1,1:2"));
        assert!(check("leader.replication.throttled.replicas", "*"));
        assert!(!check("leader.replication.throttled.replicas", "0-1"));
        assert!(
            check("message.format.version", "3.0-IV1") && check("message.format.version", "0.10.2")
        );
        assert!(check("message.format.version", "2.8") && !check("message.format.version", "5.0"));
        assert!(check("remote.storage.enable", "false") && !check("remote.storage.enable", "true"));
        assert!(find("no.such.key").is_none());
        let names: Vec<&str> = COMPRESSION_CODECS.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names, COMPRESSION_TYPES,
            "one list of compression.type values"
        );
    }

    #[test]
    fn every_key_once_with_a_valid_default_and_known_synonyms() {
        for (i, d) in TOPIC_CONFIGS.iter().enumerate() {
            assert!(
                TOPIC_CONFIGS[..i].iter().all(|o| o.name != d.name),
                "{} listed once",
                d.name
            );
            assert!(
                validate(d, d.name, d.default).is_ok(),
                "{}'s default {:?} passes its own rule",
                d.name,
                d.default
            );
            for s in d.synonyms {
                assert!(
                    crate::config::KNOWN.iter().any(|(k, _)| k == s),
                    "broker synonym {s} of {} is a known broker key",
                    d.name
                );
            }
        }
        assert_eq!(TOPIC_CONFIGS.len(), 36, "Kafka 3.9's topic configs");
    }
}

//! Kafka's ZooKeeper layout: znode paths and the data formats of Kafka 2.8.
//!
//! Tools that read a Kafka cluster's ZooKeeper tree (zkCli, Burrow, kazoo scripts, Kafka's
//! own `kafka-topics --zookeeper`) read ours, so every record here writes exactly what
//! Kafka 2.8's `ZkData.scala` writes: the same field names, versions and value types
//! (timestamps and the cluster id version are JSON strings, the controller epoch and the
//! 0.8 consumer offsets are plain decimal text). JSON is compact, with keys in the order a
//! Kafka broker emits them; readers accept any order, extra fields and older versions.
//!
//! Topic ids are Kafka `Uuid`s: 16 bytes, shown as unpadded base64url (22 characters). The
//! all-zero id is Kafka's `ZERO_UUID`, meaning "no id": it is not written.
//!
//! Thread safety: plain values and pure functions. Crash behaviour: not applicable; data
//! that does not parse is a `StoreError::Corrupt` naming the record kind (callers add the
//! path with [`StoreError::at_path`]).

use std::collections::BTreeMap;
use std::fmt::Display;

use serde_json::{Map, Value};

use crate::store::StoreError;

pub const CLUSTER_ID_PATH: &str = "/cluster/id";
pub const CONTROLLER_PATH: &str = "/controller";
pub const CONTROLLER_EPOCH_PATH: &str = "/controller_epoch";
pub const BROKER_IDS_PATH: &str = "/brokers/ids";
pub const BROKER_TOPICS_PATH: &str = "/brokers/topics";
pub const BROKER_SEQUENCE_ID_PATH: &str = "/brokers/seqid";
pub const CONFIG_TOPICS_PATH: &str = "/config/topics";
pub const CONFIG_CHANGES_PATH: &str = "/config/changes";
pub const DELETE_TOPICS_PATH: &str = "/admin/delete_topics";
pub const ISR_CHANGE_NOTIFICATION_PATH: &str = "/isr_change_notification";
pub const CONSUMERS_PATH: &str = "/consumers";
pub const PRODUCER_ID_BLOCK_PATH: &str = "/latest_producer_id_block";
pub const LOG_DIR_EVENT_NOTIFICATION_PATH: &str = "/log_dir_event_notification";

/// The persistent paths a Kafka broker makes sure exist at startup (`ZkData.PersistentZkPaths`).
pub const PERSISTENT_PATHS: &[&str] = &[
    CONSUMERS_PATH,
    BROKER_IDS_PATH,
    BROKER_TOPICS_PATH,
    CONFIG_CHANGES_PATH,
    "/config/topics",
    "/config/clients",
    "/config/users",
    "/config/brokers",
    "/config/ips",
    DELETE_TOPICS_PATH,
    BROKER_SEQUENCE_ID_PATH,
    ISR_CHANGE_NOTIFICATION_PATH,
    PRODUCER_ID_BLOCK_PATH,
    LOG_DIR_EVENT_NOTIFICATION_PATH,
];

/// Prefix of the sequential znodes under [`ISR_CHANGE_NOTIFICATION_PATH`].
pub const ISR_CHANGE_SEQUENCE_PREFIX: &str = "isr_change_";
/// Prefix of the sequential znodes under [`CONFIG_CHANGES_PATH`].
pub const CONFIG_CHANGE_SEQUENCE_PREFIX: &str = "config_change_";

pub fn broker_id_path(broker_id: i32) -> String {
    format!("{BROKER_IDS_PATH}/{broker_id}")
}

pub fn topic_path(topic: &str) -> String {
    format!("{BROKER_TOPICS_PATH}/{topic}")
}

pub fn topic_partitions_path(topic: &str) -> String {
    format!("{BROKER_TOPICS_PATH}/{topic}/partitions")
}

pub fn topic_partition_path(topic: &str, partition: i32) -> String {
    format!("{BROKER_TOPICS_PATH}/{topic}/partitions/{partition}")
}

pub fn partition_state_path(topic: &str, partition: i32) -> String {
    format!("{BROKER_TOPICS_PATH}/{topic}/partitions/{partition}/state")
}

pub fn delete_topic_path(topic: &str) -> String {
    format!("{DELETE_TOPICS_PATH}/{topic}")
}

pub fn topic_config_path(topic: &str) -> String {
    format!("{CONFIG_TOPICS_PATH}/{topic}")
}

pub fn consumer_group_path(group: &str) -> String {
    format!("{CONSUMERS_PATH}/{group}")
}

pub fn consumer_ids_path(group: &str) -> String {
    format!("{CONSUMERS_PATH}/{group}/ids")
}

pub fn consumer_member_path(group: &str, member_id: &str) -> String {
    format!("{CONSUMERS_PATH}/{group}/ids/{member_id}")
}

pub fn consumer_owners_path(group: &str, topic: &str) -> String {
    format!("{CONSUMERS_PATH}/{group}/owners/{topic}")
}

pub fn consumer_owner_path(group: &str, topic: &str, partition: i32) -> String {
    format!("{CONSUMERS_PATH}/{group}/owners/{topic}/{partition}")
}

pub fn consumer_offsets_path(group: &str, topic: &str) -> String {
    format!("{CONSUMERS_PATH}/{group}/offsets/{topic}")
}

pub fn consumer_offset_path(group: &str, topic: &str, partition: i32) -> String {
    format!("{CONSUMERS_PATH}/{group}/offsets/{topic}/{partition}")
}

/// `/cluster/id`: `{"version":"1","id":"..."}` (the version is a string in Kafka too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterId {
    pub id: String,
}

impl ClusterId {
    pub fn to_json(&self) -> Vec<u8> {
        JsonObject::new()
            .string("version", "1")
            .string("id", &self.id)
            .finish()
    }

    pub fn from_json(bytes: &[u8]) -> Result<ClusterId, StoreError> {
        let json = Json::parse(bytes, "cluster id json")?;
        Ok(ClusterId {
            id: json.string("id")?,
        })
    }
}

/// One advertised listener of a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub listener_name: String,
    pub security_protocol: String,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `LISTENER://host:port`, IPv6 hosts in brackets (Kafka's `connectionString`).
    pub fn connection_string(&self) -> String {
        if self.host.contains(':') {
            format!("{}://[{}]:{}", self.listener_name, self.host, self.port)
        } else {
            format!("{}://{}:{}", self.listener_name, self.host, self.port)
        }
    }

    fn parse(text: &str, protocols: &BTreeMap<String, String>) -> Result<Endpoint, String> {
        let (listener_name, address) = text
            .split_once("://")
            .ok_or_else(|| format!("endpoint {text:?} lacks '://'"))?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("endpoint {text:?} lacks a port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("endpoint {text:?} has an invalid port"))?;
        // An IPv6 literal comes in brackets (the one form `connection_string` adds them
        // to); anything else is kept as written.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .filter(|h| h.contains(':'))
            .unwrap_or(host);
        let security_protocol = protocols
            .get(listener_name)
            .cloned()
            .ok_or_else(|| format!("listener {listener_name} has no security protocol"))?;
        Ok(Endpoint {
            listener_name: listener_name.to_string(),
            security_protocol,
            host: host.to_string(),
            port,
        })
    }
}

/// `/brokers/ids/{id}` (ephemeral), broker registration version 5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub id: i32,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub timestamp_ms: i64,
}

const SECURITY_PROTOCOLS: [&str; 4] = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];

impl BrokerRegistration {
    pub const VERSION: i32 = 5;

    pub fn to_json(&self) -> Vec<u8> {
        let mut protocols = JsonObject::new();
        let mut seen: Vec<&str> = Vec::new();
        for endpoint in &self.endpoints {
            if !seen.contains(&endpoint.listener_name.as_str()) {
                seen.push(&endpoint.listener_name);
                protocols = protocols.string(&endpoint.listener_name, &endpoint.security_protocol);
            }
        }
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|e| Value::from(e.connection_string()))
            .collect();
        // Old clients read the top-level host/port: the first PLAINTEXT endpoint, or none.
        let plaintext = self
            .endpoints
            .iter()
            .find(|e| e.security_protocol == "PLAINTEXT");
        let mut json = JsonObject::new()
            .raw("features", "{}")
            .raw("listener_security_protocol_map", &protocols.finish_string())
            .raw("endpoints", &Value::from(endpoints).to_string());
        if let Some(rack) = &self.rack {
            json = json.string("rack", rack);
        }
        json = json.number("jmx_port", -1);
        json = match plaintext {
            Some(e) => json.number("port", e.port).string("host", &e.host),
            None => json.number("port", -1).raw("host", "null"),
        };
        json.number("version", Self::VERSION)
            .string("timestamp", &self.timestamp_ms.to_string())
            .finish()
    }

    /// Reads versions 1 to 5. The id is the znode's name, not part of the data.
    pub fn from_json(broker_id: i32, bytes: &[u8]) -> Result<BrokerRegistration, StoreError> {
        let json = Json::parse(bytes, "broker registration json")?;
        let version = json.i32("version")?;
        let endpoints = if version < 1 {
            return Err(json.error(format!("unsupported version {version}")));
        } else if version == 1 {
            let port = json.i32("port")?;
            vec![Endpoint {
                listener_name: "PLAINTEXT".to_string(),
                security_protocol: "PLAINTEXT".to_string(),
                host: json.string("host")?,
                port: u16::try_from(port).map_err(|_| json.error(format!("port {port}")))?,
            }]
        } else {
            let protocols = match json.optional("listener_security_protocol_map") {
                Some(_) => json.string_map("listener_security_protocol_map")?,
                None => SECURITY_PROTOCOLS
                    .iter()
                    .map(|p| (p.to_string(), p.to_string()))
                    .collect(),
            };
            json.string_list("endpoints")?
                .iter()
                .map(|e| Endpoint::parse(e, &protocols).map_err(|d| json.error(d)))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(BrokerRegistration {
            id: broker_id,
            endpoints,
            rack: json.optional_string("rack")?,
            timestamp_ms: json.timestamp_ms(),
        })
    }
}

/// `/controller` (ephemeral): `{"version":1,"brokerid":0,"timestamp":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerZnode {
    pub broker_id: i32,
    pub timestamp_ms: i64,
}

impl ControllerZnode {
    pub fn to_json(&self) -> Vec<u8> {
        JsonObject::new()
            .number("version", 1)
            .number("brokerid", self.broker_id)
            .string("timestamp", &self.timestamp_ms.to_string())
            .finish()
    }

    pub fn from_json(bytes: &[u8]) -> Result<ControllerZnode, StoreError> {
        let json = Json::parse(bytes, "controller json")?;
        Ok(ControllerZnode {
            broker_id: json.i32("brokerid")?,
            timestamp_ms: json.timestamp_ms(),
        })
    }
}

/// `/controller_epoch`: the epoch as decimal text.
pub fn encode_controller_epoch(epoch: i32) -> Vec<u8> {
    epoch.to_string().into_bytes()
}

pub fn decode_controller_epoch(bytes: &[u8]) -> Result<i32, StoreError> {
    parse_decimal(bytes, "controller epoch")
}

/// `/brokers/topics/{t}`: the replica assignment, version 3.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicAssignment {
    /// Kafka `Uuid`; all zero means "none" (versions 1 and 2 have no id).
    pub topic_id: [u8; 16],
    /// Partition → replicas, preferred leader first.
    pub partitions: BTreeMap<i32, Vec<i32>>,
    /// Partition → replicas being added by a reassignment (non-empty lists only).
    pub adding_replicas: BTreeMap<i32, Vec<i32>>,
    pub removing_replicas: BTreeMap<i32, Vec<i32>>,
}

impl TopicAssignment {
    pub const VERSION: i32 = 3;

    pub fn to_json(&self) -> Vec<u8> {
        let mut json = JsonObject::new().number("version", Self::VERSION);
        if self.topic_id != [0; 16] {
            json = json.string("topic_id", &topic_id_to_string(&self.topic_id));
        }
        json.raw("partitions", &replica_map_json(&self.partitions))
            .raw("adding_replicas", &replica_map_json(&self.adding_replicas))
            .raw(
                "removing_replicas",
                &replica_map_json(&self.removing_replicas),
            )
            .finish()
    }

    pub fn from_json(bytes: &[u8]) -> Result<TopicAssignment, StoreError> {
        let json = Json::parse(bytes, "topic assignment json")?;
        let topic_id = match json.optional_string("topic_id")? {
            Some(text) => topic_id_from_string(&text).map_err(|e| json.error(e.to_string()))?,
            None => [0; 16],
        };
        Ok(TopicAssignment {
            topic_id,
            partitions: json.replica_map("partitions")?,
            adding_replicas: json.replica_map("adding_replicas")?,
            removing_replicas: json.replica_map("removing_replicas")?,
        })
    }
}

fn replica_map_json(map: &BTreeMap<i32, Vec<i32>>) -> String {
    let mut json = JsonObject::new();
    for (partition, replicas) in map.iter().filter(|(_, r)| !r.is_empty()) {
        json = json.raw(&partition.to_string(), &int_list_json(replicas));
    }
    json.finish_string()
}

fn int_list_json(list: &[i32]) -> String {
    let items: Vec<String> = list.iter().map(i32::to_string).collect();
    format!("[{}]", items.join(","))
}

/// `/brokers/topics/{t}/partitions/{p}/state`: leader and ISR, version 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub controller_epoch: i32,
    /// The znode's version when read (not part of the data): Kafka's partition epoch, the
    /// expected version of the next conditional write. `from_json` sets 0.
    pub zk_version: i32,
}

impl PartitionState {
    pub fn to_json(&self) -> Vec<u8> {
        JsonObject::new()
            .number("controller_epoch", self.controller_epoch)
            .number("leader", self.leader)
            .number("version", 1)
            .number("leader_epoch", self.leader_epoch)
            .raw("isr", &int_list_json(&self.isr))
            .finish()
    }

    pub fn from_json(bytes: &[u8]) -> Result<PartitionState, StoreError> {
        let json = Json::parse(bytes, "partition state json")?;
        Ok(PartitionState {
            leader: json.i32("leader")?,
            leader_epoch: json.i32("leader_epoch")?,
            isr: json.i32_list("isr")?,
            controller_epoch: json.i32("controller_epoch")?,
            zk_version: 0,
        })
    }
}

/// `/config/topics/{t}` (and other entity configs): `{"version":1,"config":{...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntityConfig {
    pub config: BTreeMap<String, String>,
}

impl EntityConfig {
    pub fn to_json(&self) -> Vec<u8> {
        let mut config = JsonObject::new();
        for (key, value) in &self.config {
            config = config.string(key, value);
        }
        JsonObject::new()
            .number("version", 1)
            .raw("config", &config.finish_string())
            .finish()
    }

    /// Missing `config` reads as empty, as in Kafka.
    pub fn from_json(bytes: &[u8]) -> Result<EntityConfig, StoreError> {
        let json = Json::parse(bytes, "entity config json")?;
        let config = match json.optional("config") {
            Some(_) => json.string_map("config")?,
            None => BTreeMap::new(),
        };
        Ok(EntityConfig { config })
    }
}

/// `/consumers/{g}/offsets/{t}/{p}`: the committed offset as decimal text (Kafka 0.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerOffset {
    pub offset: i64,
}

impl ConsumerOffset {
    pub fn to_json(&self) -> Vec<u8> {
        self.offset.to_string().into_bytes()
    }

    pub fn from_json(bytes: &[u8]) -> Result<ConsumerOffset, StoreError> {
        Ok(ConsumerOffset {
            offset: parse_decimal(bytes, "consumer offset")?,
        })
    }
}

/// `/consumers/{g}/ids/{member}` (ephemeral), the 0.8 consumer registration:
/// `{"version":1,"subscription":{"topic":1},"pattern":"static","timestamp":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRegistration {
    /// Topic → number of consumer streams (1 for modern clients).
    pub subscription: BTreeMap<String, i32>,
    /// `static`, `white_list` or `black_list`.
    pub pattern: String,
    pub timestamp_ms: i64,
}

impl ConsumerRegistration {
    pub fn to_json(&self) -> Vec<u8> {
        let mut subscription = JsonObject::new();
        for (topic, streams) in &self.subscription {
            subscription = subscription.number(topic, *streams);
        }
        JsonObject::new()
            .number("version", 1)
            .raw("subscription", &subscription.finish_string())
            .string("pattern", &self.pattern)
            .string("timestamp", &self.timestamp_ms.to_string())
            .finish()
    }

    pub fn from_json(bytes: &[u8]) -> Result<ConsumerRegistration, StoreError> {
        let json = Json::parse(bytes, "consumer registration json")?;
        let mut subscription = BTreeMap::new();
        for (topic, streams) in json.object("subscription")? {
            let streams = streams
                .as_i64()
                .and_then(|s| i32::try_from(s).ok())
                .ok_or_else(|| json.error(format!("subscription of {topic} is not an int")))?;
            subscription.insert(topic.clone(), streams);
        }
        Ok(ConsumerRegistration {
            subscription,
            pattern: json.string("pattern")?,
            timestamp_ms: json.timestamp_ms(),
        })
    }
}

/// `/consumers/{g}/owners/{t}/{p}` (ephemeral): the owning member id as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOwner {
    pub member_id: String,
}

impl ConsumerOwner {
    pub fn to_json(&self) -> Vec<u8> {
        self.member_id.as_bytes().to_vec()
    }

    pub fn from_json(bytes: &[u8]) -> Result<ConsumerOwner, StoreError> {
        let member_id = std::str::from_utf8(bytes)
            .map_err(|_| StoreError::corrupt("consumer owner", "not UTF-8"))?;
        Ok(ConsumerOwner {
            member_id: member_id.to_string(),
        })
    }
}

/// `/latest_producer_id_block`:
/// `{"version":1,"broker":0,"block_start":"0","block_end":"999"}` (bounds are strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub broker_id: i32,
    pub block_start: i64,
    /// Inclusive.
    pub block_end: i64,
}

impl ProducerIdBlock {
    pub fn to_json(&self) -> Vec<u8> {
        JsonObject::new()
            .number("version", 1)
            .number("broker", self.broker_id)
            .string("block_start", &self.block_start.to_string())
            .string("block_end", &self.block_end.to_string())
            .finish()
    }

    pub fn from_json(bytes: &[u8]) -> Result<ProducerIdBlock, StoreError> {
        let json = Json::parse(bytes, "producer id block json")?;
        let bound = |key: &str| -> Result<i64, StoreError> {
            json.string(key)?
                .parse::<i64>()
                .map_err(|_| json.error(format!("{key} is not a decimal i64")))
        };
        Ok(ProducerIdBlock {
            broker_id: json.i32("broker")?,
            block_start: bound("block_start")?,
            block_end: bound("block_end")?,
        })
    }
}

/// `{"version":1,"partitions":[{"topic":"t","partition":0},...]}` — the data of
/// `/admin/preferred_replica_election` and of each `/isr_change_notification/isr_change_*`.
pub fn encode_partition_list(partitions: &[(String, i32)]) -> Vec<u8> {
    let list: Vec<String> = partitions
        .iter()
        .map(|(t, p)| {
            JsonObject::new()
                .string("topic", t)
                .number("partition", p)
                .finish_string()
        })
        .collect();
    versioned_partitions(&list)
}

/// Reads [`encode_partition_list`]'s format (entries that are not topic/partition pairs
/// are an error).
pub fn decode_partition_list(bytes: &[u8]) -> Result<Vec<(String, i32)>, StoreError> {
    let json = Json::parse(bytes, "partition list json")?;
    partitions_array(&json)?
        .iter()
        .map(|entry| {
            let topic = entry.get("topic").and_then(Value::as_str);
            let partition = entry.get("partition").and_then(to_i32);
            match (topic, partition) {
                (Some(t), Some(p)) => Ok((t.to_string(), p)),
                _ => Err(json.error("a partition entry without topic and partition")),
            }
        })
        .collect()
}

/// `/admin/reassign_partitions`: reassignments requested by writing the znode (old
/// `kafka-reassign-partitions.sh --zookeeper`), removed by the controller as they finish.
pub const REASSIGN_PARTITIONS_PATH: &str = "/admin/reassign_partitions";

/// `{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,2,3]},...]}`.
pub fn encode_reassignment(partitions: &[(String, i32, Vec<i32>)]) -> Vec<u8> {
    let list: Vec<String> = partitions
        .iter()
        .map(|(t, p, replicas)| {
            JsonObject::new()
                .string("topic", t)
                .number("partition", p)
                .raw("replicas", &int_list_json(replicas))
                .finish_string()
        })
        .collect();
    versioned_partitions(&list)
}

/// Reads [`encode_reassignment`]'s format (`log_dirs`, if present, is ignored: one log dir
/// choice per broker here).
pub fn decode_reassignment(bytes: &[u8]) -> Result<Vec<(String, i32, Vec<i32>)>, StoreError> {
    let json = Json::parse(bytes, "reassignment json")?;
    partitions_array(&json)?
        .iter()
        .map(|entry| {
            let topic = entry.get("topic").and_then(Value::as_str);
            let partition = entry.get("partition").and_then(to_i32);
            let replicas = entry.get("replicas").and_then(int_list);
            match (topic, partition, replicas) {
                (Some(t), Some(p), Some(r)) => Ok((t.to_string(), p, r)),
                _ => Err(json.error("a reassignment entry without topic, partition and replicas")),
            }
        })
        .collect()
}

/// `{"version":1,"partitions":[...]}` around already-encoded entries.
fn versioned_partitions(entries: &[String]) -> Vec<u8> {
    JsonObject::new()
        .number("version", 1)
        .raw("partitions", &format!("[{}]", entries.join(",")))
        .finish()
}

/// The `partitions` list of [`versioned_partitions`]'s format.
fn partitions_array<'j>(json: &'j Json<'_>) -> Result<&'j Vec<Value>, StoreError> {
    json.required("partitions")?
        .as_array()
        .ok_or_else(|| json.error("\"partitions\" is not a list"))
}

/// A `/config/changes/config_change_<n>` notification naming the entity whose config
/// changed: Kafka's version 2 `{"version":2,"entity_path":"topics/<t>"}`.
pub fn encode_config_change(entity_path: &str) -> Vec<u8> {
    JsonObject::new()
        .number("version", 2)
        .string("entity_path", entity_path)
        .finish()
}

/// The entity path of a config change notification: version 2's `entity_path`, or
/// version 1's `entity_type` and `entity_name` joined (`topics/<t>`).
pub fn decode_config_change(bytes: &[u8]) -> Result<String, StoreError> {
    let json = Json::parse(bytes, "config change notification json")?;
    match json.i32("version")? {
        2 => json.string("entity_path"),
        1 => Ok(format!(
            "{}/{}",
            json.string("entity_type")?,
            json.string("entity_name")?
        )),
        v => Err(json.error(format!("unknown version {v}"))),
    }
}

/// The name of the default entity of a quota config (`/config/users/<default>`).
pub const DEFAULT_ENTITY: &str = "<default>";

/// Kafka's `Sanitizer.sanitize` of an entity name for a znode: URL encoding of its UTF-8
/// bytes (letters, digits, `.`, `-` and `_` kept; a space is `%20`, `*` is `%2A`).
pub fn sanitize_entity_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Kafka's `Sanitizer.desanitize`: the name a sanitized znode name stands for (`None` if
/// it is not valid percent-encoded UTF-8).
pub fn desanitize_entity_name(sanitized: &str) -> Option<String> {
    let bytes = sanitized.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = sanitized.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The data of an ISR change notification: the partitions whose ISR changed.
pub fn decode_isr_change_notification(bytes: &[u8]) -> Result<Vec<(String, i32)>, StoreError> {
    decode_partition_list(bytes)
}

/// Kafka's `Uuid.toString`: unpadded base64url of the 16 bytes.
pub fn topic_id_to_string(id: &[u8; 16]) -> String {
    base64url_encode(id)
}

/// Kafka's `Uuid.fromString`: base64url (padding optional) of exactly 16 bytes.
pub fn topic_id_from_string(text: &str) -> Result<[u8; 16], StoreError> {
    let bytes = base64url_decode(text)
        .ok_or_else(|| StoreError::corrupt("topic id", format!("{text:?} is not base64url")))?;
    <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| {
        StoreError::corrupt(
            "topic id",
            format!("{text:?} decodes to {} bytes, not 16", bytes.len()),
        )
    })
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let bits = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(BASE64URL[((bits >> (18 - 6 * i)) & 0x3f) as usize] as char);
        }
    }
    out
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut bits: u32 = 0;
    let mut bit_count = 0;
    for c in text.bytes() {
        let value = BASE64URL.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | value;
        bit_count += 6;
        if bit_count >= 8 {
            bit_count -= 8;
            out.push((bits >> bit_count) as u8);
            bits &= (1 << bit_count) - 1;
        }
    }
    Some(out)
}

fn parse_decimal<T: std::str::FromStr>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.trim().parse::<T>().ok())
        .ok_or_else(|| {
            StoreError::corrupt(
                what,
                format!("{:?} is not a decimal number", excerpt(bytes)),
            )
        })
}

/// The start of some bytes for an error message.
fn excerpt(bytes: &[u8]) -> String {
    const EXCERPT_BYTES_MAX: usize = 200;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_BYTES_MAX)]);
    if bytes.len() > EXCERPT_BYTES_MAX {
        format!("{text}...")
    } else {
        text.into_owned()
    }
}

/// Writes a compact JSON object with keys in the order given.
struct JsonObject {
    out: String,
}

impl JsonObject {
    fn new() -> JsonObject {
        JsonObject {
            out: String::from("{"),
        }
    }

    /// Adds a field whose value is already JSON text.
    fn raw(mut self, key: &str, value_json: &str) -> JsonObject {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        self.out.push_str(&Value::from(key).to_string());
        self.out.push(':');
        self.out.push_str(value_json);
        self
    }

    fn string(self, key: &str, value: &str) -> JsonObject {
        self.raw(key, &Value::from(value).to_string())
    }

    fn number(self, key: &str, value: impl Display) -> JsonObject {
        self.raw(key, &value.to_string())
    }

    fn finish_string(mut self) -> String {
        self.out.push('}');
        self.out
    }

    fn finish(self) -> Vec<u8> {
        self.finish_string().into_bytes()
    }
}

/// A parsed JSON object and what it is, for error messages.
struct Json<'a> {
    object: Map<String, Value>,
    what: &'static str,
    bytes: &'a [u8],
}

impl<'a> Json<'a> {
    fn parse(bytes: &'a [u8], what: &'static str) -> Result<Json<'a>, StoreError> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(object)) => Ok(Json {
                object,
                what,
                bytes,
            }),
            Ok(_) => Err(StoreError::corrupt(
                what,
                format!("not a JSON object: {}", excerpt(bytes)),
            )),
            Err(e) => Err(StoreError::corrupt(
                what,
                format!("{e}: {}", excerpt(bytes)),
            )),
        }
    }

    fn error(&self, detail: impl Into<String>) -> StoreError {
        StoreError::corrupt(
            self.what,
            format!("{} in {}", detail.into(), excerpt(self.bytes)),
        )
    }

    /// A present, non-null field.
    fn optional(&self, key: &str) -> Option<&Value> {
        self.object.get(key).filter(|v| !v.is_null())
    }

    fn required(&self, key: &str) -> Result<&Value, StoreError> {
        self.optional(key)
            .ok_or_else(|| self.error(format!("missing field {key:?}")))
    }

    fn i32(&self, key: &str) -> Result<i32, StoreError> {
        to_i32(self.required(key)?).ok_or_else(|| self.error(format!("{key:?} is not an int")))
    }

    fn string(&self, key: &str) -> Result<String, StoreError> {
        self.required(key)?
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.error(format!("{key:?} is not a string")))
    }

    fn optional_string(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self.optional(key) {
            None => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    /// Kafka writes timestamps as strings and never reads them back; be lenient.
    fn timestamp_ms(&self) -> i64 {
        match self.optional("timestamp") {
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            Some(v) => v.as_i64().unwrap_or(0),
            None => 0,
        }
    }

    fn i32_list(&self, key: &str) -> Result<Vec<i32>, StoreError> {
        int_list(self.required(key)?)
            .ok_or_else(|| self.error(format!("{key:?} is not a list of ints")))
    }

    fn string_list(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let not_list = || self.error(format!("{key:?} is not a list of strings"));
        self.required(key)?
            .as_array()
            .ok_or_else(not_list)?
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(not_list))
            .collect()
    }

    fn object(&self, key: &str) -> Result<&Map<String, Value>, StoreError> {
        self.required(key)?
            .as_object()
            .ok_or_else(|| self.error(format!("{key:?} is not an object")))
    }

    /// An object of strings; numbers and booleans are taken as their text.
    fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let mut map = BTreeMap::new();
        for (name, value) in self.object(key)? {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(self.error(format!("{key:?}.{name:?} is not a string"))),
            };
            map.insert(name.clone(), text);
        }
        Ok(map)
    }

    /// `{"0":[1,2],...}`; an absent field is empty, empty lists are dropped.
    fn replica_map(&self, key: &str) -> Result<BTreeMap<i32, Vec<i32>>, StoreError> {
        let mut map = BTreeMap::new();
        if self.optional(key).is_none() {
            return Ok(map);
        }
        for (partition, replicas) in self.object(key)? {
            let partition_id = partition
                .parse::<i32>()
                .map_err(|_| self.error(format!("{key:?} has partition {partition:?}")))?;
            let replicas = int_list(replicas)
                .ok_or_else(|| self.error(format!("{key:?}.{partition} is not a list of ints")))?;
            if !replicas.is_empty() {
                map.insert(partition_id, replicas);
            }
        }
        Ok(map)
    }
}

fn to_i32(value: &Value) -> Option<i32> {
    value.as_i64().and_then(|v| i32::try_from(v).ok())
}

fn int_list(value: &Value) -> Option<Vec<i32>> {
    value.as_array()?.iter().map(to_i32).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn entity_names_are_sanitized_as_kafka_does() {
        assert_eq!(sanitize_entity_name("alice"), "alice");
        assert_eq!(sanitize_entity_name("a b*c/d"), "a%20b%2Ac%2Fd");
        assert_eq!(sanitize_entity_name("ü"), "%C3%BC");
        for name in ["alice", "a b*c/d", "ü", "user@example.com", "<default>"] {
            assert_eq!(
                desanitize_entity_name(&sanitize_entity_name(name)).as_deref(),
                Some(name)
            );
        }
        assert_eq!(desanitize_entity_name("a+b").as_deref(), Some("a b"));
        assert_eq!(desanitize_entity_name("%zz"), None);
        assert_eq!(desanitize_entity_name("%C3"), None);
    }

    #[test]
    fn config_change_notifications_as_kafka_writes_them() {
        assert_eq!(
            encode_config_change("topics/t"),
            br#"{"version":2,"entity_path":"topics/t"}"#.to_vec()
        );
        assert_eq!(
            decode_config_change(&encode_config_change("topics/t")).unwrap(),
            "topics/t"
        );
        assert_eq!(
            decode_config_change(br#"{"version":1,"entity_type":"topics","entity_name":"x"}"#)
                .unwrap(),
            "topics/x"
        );
        assert!(decode_config_change(br#"{"version":3,"entity_path":"topics/t"}"#).is_err());
        assert!(decode_config_change(b"not json").is_err());
    }

    use super::*;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn reassignment_round_trip() {
        let list = vec![
            ("t".to_string(), 0, vec![3, 1, 2]),
            ("u".to_string(), 7, vec![2]),
        ];
        let bytes = encode_reassignment(&list);
        assert_eq!(
            text(bytes.clone()),
            r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[3,1,2]},{"topic":"u","partition":7,"replicas":[2]}]}"#
        );
        assert_eq!(decode_reassignment(&bytes).unwrap(), list);
        let with_dirs = br#"{"version":1,"partitions":[{"topic":"t","partition":1,"replicas":[1],"log_dirs":["any"]}]}"#;
        assert_eq!(
            decode_reassignment(with_dirs).unwrap(),
            vec![("t".to_string(), 1, vec![1])]
        );
        assert!(decode_reassignment(br#"{"version":1,"partitions":[{"topic":"t"}]}"#).is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(broker_id_path(3), "/brokers/ids/3");
        assert_eq!(topic_path("t"), "/brokers/topics/t");
        assert_eq!(topic_partitions_path("t"), "/brokers/topics/t/partitions");
        assert_eq!(
            topic_partition_path("t", 2),
            "/brokers/topics/t/partitions/2"
        );
        assert_eq!(
            partition_state_path("t", 2),
            "/brokers/topics/t/partitions/2/state"
        );
        assert_eq!(delete_topic_path("t"), "/admin/delete_topics/t");
        assert_eq!(topic_config_path("t"), "/config/topics/t");
        assert_eq!(consumer_member_path("g", "m-1"), "/consumers/g/ids/m-1");
        assert_eq!(consumer_owner_path("g", "t", 4), "/consumers/g/owners/t/4");
        assert_eq!(
            consumer_offset_path("g", "t", 4),
            "/consumers/g/offsets/t/4"
        );
        for path in PERSISTENT_PATHS {
            crate::store::validate_path(path, false).unwrap();
        }
    }

    #[test]
    fn cluster_id_json() {
        let id = ClusterId {
            id: "abc-DEF_123".into(),
        };
        assert_eq!(text(id.to_json()), r#"{"version":"1","id":"abc-DEF_123"}"#);
        assert_eq!(ClusterId::from_json(&id.to_json()).unwrap(), id);
    }

    fn registration() -> BrokerRegistration {
        BrokerRegistration {
            id: 0,
            endpoints: vec![Endpoint {
                listener_name: "PLAINTEXT".into(),
                security_protocol: "PLAINTEXT".into(),
                host: "localhost".into(),
                port: 9092,
            }],
            rack: None,
            timestamp_ms: 1_600_000_000_123,
        }
    }

    #[test]
    fn broker_registration_json() {
        let broker = registration();
        assert_eq!(
            text(broker.to_json()),
            r#"{"features":{},"listener_security_protocol_map":{"PLAINTEXT":"PLAINTEXT"},"endpoints":["PLAINTEXT://localhost:9092"],"jmx_port":-1,"port":9092,"host":"localhost","version":5,"timestamp":"1600000000123"}"#
        );
        assert_eq!(
            BrokerRegistration::from_json(0, &broker.to_json()).unwrap(),
            broker
        );

        let mut racked = registration();
        racked.id = 7;
        racked.rack = Some("rack-1".into());
        racked.endpoints = vec![
            Endpoint {
                listener_name: "INTERNAL".into(),
                security_protocol: "SSL".into(),
                host: "::1".into(),
                port: 9093,
            },
            Endpoint {
                listener_name: "CLIENT".into(),
                security_protocol: "PLAINTEXT".into(),
                host: "10.0.0.1".into(),
                port: 9092,
            },
        ];
        assert_eq!(
            text(racked.to_json()),
            r#"{"features":{},"listener_security_protocol_map":{"INTERNAL":"SSL","CLIENT":"PLAINTEXT"},"endpoints":["INTERNAL://[::1]:9093","CLIENT://10.0.0.1:9092"],"rack":"rack-1","jmx_port":-1,"port":9092,"host":"10.0.0.1","version":5,"timestamp":"1600000000123"}"#
        );
        assert_eq!(
            BrokerRegistration::from_json(7, &racked.to_json()).unwrap(),
            racked
        );

        let mut ssl_only = racked.clone();
        ssl_only.endpoints.truncate(1);
        let json = text(ssl_only.to_json());
        assert!(json.contains(r#""port":-1,"host":null"#), "{json}");
    }

    #[test]
    fn broker_registration_reads_what_kafka_wrote() {
        // As written by a Kafka 2.4 broker (version 4, different key order, real jmx port).
        let v4 = br#"{"listener_security_protocol_map":{"PLAINTEXT":"PLAINTEXT"},"endpoints":["PLAINTEXT://kafka-1:9092"],"jmx_port":9999,"host":"kafka-1","timestamp":"1590000000000","port":9092,"version":4}"#;
        let broker = BrokerRegistration::from_json(1, v4).unwrap();
        assert_eq!(broker.endpoints[0].host, "kafka-1");
        assert_eq!(broker.timestamp_ms, 1_590_000_000_000);
        let v2 = br#"{"jmx_port":-1,"timestamp":"1","endpoints":["SSL://h:9093"],"host":null,"version":2,"port":-1}"#;
        let broker = BrokerRegistration::from_json(2, v2).unwrap();
        assert_eq!(broker.endpoints[0].security_protocol, "SSL");
        let v1 = br#"{"jmx_port":-1,"timestamp":"1","host":"old","version":1,"port":9092}"#;
        assert_eq!(
            BrokerRegistration::from_json(3, v1).unwrap().endpoints[0].port,
            9092
        );
        for bad in [
            &br#"{"version":0}"#[..],
            br#"{"version":5,"endpoints":["nonsense"]}"#,
            br#"{"version":5,"endpoints":["X://h:1"],"listener_security_protocol_map":{}}"#,
            br#"{"version":5,"endpoints":["PLAINTEXT://h:70000"]}"#,
            br#"[1,2]"#,
            b"\xff\xfe",
        ] {
            let e = BrokerRegistration::from_json(0, bad).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("corrupt broker registration json"),
                "{e}"
            );
        }
    }

    #[test]
    fn controller_json_and_epoch_text() {
        let controller = ControllerZnode {
            broker_id: 0,
            timestamp_ms: 42,
        };
        assert_eq!(
            text(controller.to_json()),
            r#"{"version":1,"brokerid":0,"timestamp":"42"}"#
        );
        assert_eq!(
            ControllerZnode::from_json(&controller.to_json()).unwrap(),
            controller
        );
        // Newer Kafka versions write version 2 with a KRaft epoch: still readable.
        let v2 = br#"{"version":2,"brokerid":3,"timestamp":"1","kraftControllerEpoch":-1}"#;
        assert_eq!(ControllerZnode::from_json(v2).unwrap().broker_id, 3);
        assert_eq!(encode_controller_epoch(17), b"17");
        assert_eq!(decode_controller_epoch(b"17").unwrap(), 17);
        assert!(decode_controller_epoch(b"x").is_err());
        assert!(decode_controller_epoch(b"").is_err());
    }

    #[test]
    fn topic_assignment_json() {
        let mut assignment = TopicAssignment {
            topic_id: [0; 16],
            partitions: BTreeMap::from([(0, vec![0, 1]), (1, vec![1, 0]), (10, vec![0])]),
            adding_replicas: BTreeMap::new(),
            removing_replicas: BTreeMap::new(),
        };
        assert_eq!(
            text(assignment.to_json()),
            r#"{"version":3,"partitions":{"0":[0,1],"1":[1,0],"10":[0]},"adding_replicas":{},"removing_replicas":{}}"#
        );
        assignment.topic_id = topic_id_from_string("Jp5Lq3ZfQCWFB2-e3lHvfw").unwrap();
        assignment.adding_replicas.insert(1, vec![2]);
        assignment.removing_replicas.insert(1, vec![0]);
        assert_eq!(
            text(assignment.to_json()),
            r#"{"version":3,"topic_id":"Jp5Lq3ZfQCWFB2-e3lHvfw","partitions":{"0":[0,1],"1":[1,0],"10":[0]},"adding_replicas":{"1":[2]},"removing_replicas":{"1":[0]}}"#
        );
        assert_eq!(
            TopicAssignment::from_json(&assignment.to_json()).unwrap(),
            assignment
        );

        // Versions 1 and 2 (Kafka before 2.8) have no topic id.
        let v1 = br#"{"version":1,"partitions":{"1":[2,3],"0":[1,2]}}"#;
        let old = TopicAssignment::from_json(v1).unwrap();
        assert_eq!(old.topic_id, [0; 16]);
        assert_eq!(old.partitions[&0], vec![1, 2]);
        let v2 = br#"{"version":2,"partitions":{"0":[1]},"adding_replicas":{"0":[]},"removing_replicas":{}}"#;
        assert!(TopicAssignment::from_json(v2)
            .unwrap()
            .adding_replicas
            .is_empty());
        for bad in [
            &br#"{"version":3,"partitions":{"x":[1]}}"#[..],
            br#"{"version":3,"partitions":{"0":["1"]}}"#,
            br#"{"version":3,"topic_id":"short","partitions":{}}"#,
        ] {
            assert!(TopicAssignment::from_json(bad).is_err());
        }
    }

    #[test]
    fn partition_state_json() {
        let state = PartitionState {
            leader: 0,
            leader_epoch: 0,
            isr: vec![0],
            controller_epoch: 1,
            zk_version: 0,
        };
        assert_eq!(
            text(state.to_json()),
            r#"{"controller_epoch":1,"leader":0,"version":1,"leader_epoch":0,"isr":[0]}"#
        );
        assert_eq!(PartitionState::from_json(&state.to_json()).unwrap(), state);
        let e = PartitionState::from_json(br#"{"leader":0,"leader_epoch":0}"#).unwrap_err();
        assert!(e.to_string().contains("missing field \"isr\""), "{e}");
    }

    #[test]
    fn entity_config_json() {
        let config = EntityConfig {
            config: BTreeMap::from([
                ("retention.ms".to_string(), "1000".to_string()),
                ("cleanup.policy".to_string(), "compact".to_string()),
            ]),
        };
        assert_eq!(
            text(config.to_json()),
            r#"{"version":1,"config":{"cleanup.policy":"compact","retention.ms":"1000"}}"#
        );
        assert_eq!(EntityConfig::from_json(&config.to_json()).unwrap(), config);
        assert_eq!(
            text(EntityConfig::default().to_json()),
            r#"{"version":1,"config":{}}"#
        );
        assert!(EntityConfig::from_json(br#"{"version":1}"#)
            .unwrap()
            .config
            .is_empty());
    }

    #[test]
    fn consumer_formats() {
        let offset = ConsumerOffset { offset: 12345 };
        assert_eq!(offset.to_json(), b"12345");
        assert_eq!(ConsumerOffset::from_json(b"12345").unwrap(), offset);
        assert!(ConsumerOffset::from_json(b"12a").is_err());

        let registration = ConsumerRegistration {
            subscription: BTreeMap::from([("topic".to_string(), 1)]),
            pattern: "static".into(),
            timestamp_ms: 99,
        };
        assert_eq!(
            text(registration.to_json()),
            r#"{"version":1,"subscription":{"topic":1},"pattern":"static","timestamp":"99"}"#
        );
        assert_eq!(
            ConsumerRegistration::from_json(&registration.to_json()).unwrap(),
            registration
        );
        let owner = ConsumerOwner {
            member_id: "consumer-1-abc".into(),
        };
        assert_eq!(owner.to_json(), b"consumer-1-abc");
        assert_eq!(ConsumerOwner::from_json(&owner.to_json()).unwrap(), owner);
    }

    #[test]
    fn partition_lists_round_trip() {
        let list = vec![("orders".to_string(), 0), ("a.b".to_string(), 7)];
        let json = encode_partition_list(&list);
        assert_eq!(
            text(json.clone()),
            r#"{"version":1,"partitions":[{"topic":"orders","partition":0},{"topic":"a.b","partition":7}]}"#
        );
        assert_eq!(decode_partition_list(&json).unwrap(), list);
        assert!(decode_partition_list(br#"{"version":1,"partitions":[{"topic":"x"}]}"#).is_err());
    }

    #[test]
    fn producer_id_block_json() {
        let block = ProducerIdBlock {
            broker_id: 2,
            block_start: 1000,
            block_end: 1999,
        };
        assert_eq!(
            text(block.to_json()),
            r#"{"version":1,"broker":2,"block_start":"1000","block_end":"1999"}"#
        );
        assert_eq!(ProducerIdBlock::from_json(&block.to_json()).unwrap(), block);
    }

    #[test]
    fn json_strings_are_escaped() {
        let id = ClusterId {
            id: "quote\" backslash\\ newline\n".into(),
        };
        let json = text(id.to_json());
        assert_eq!(
            json,
            r#"{"version":"1","id":"quote\" backslash\\ newline\n"}"#
        );
        assert_eq!(ClusterId::from_json(json.as_bytes()).unwrap(), id);
    }

    #[test]
    fn topic_id_base64url() {
        // Kafka's Uuid(msb=0x0123456789abcdef, lsb=0xfedcba9876543210).toString
        // is base64url of those 16 big-endian bytes.
        let id: [u8; 16] = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
            0x32, 0x10,
        ];
        assert_eq!(topic_id_to_string(&id), "ASNFZ4mrze_-3LqYdlQyEA");
        assert_eq!(topic_id_from_string("ASNFZ4mrze_-3LqYdlQyEA").unwrap(), id);
        assert_eq!(
            topic_id_from_string("ASNFZ4mrze_-3LqYdlQyEA==").unwrap(),
            id
        );
        assert_eq!(topic_id_to_string(&[0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        assert!(topic_id_from_string("ASNFZ4mrze/+3LqYdlQyEA").is_err());
        assert!(topic_id_from_string("AAAA").is_err());
        // RFC 4648 test vectors, with the URL alphabet and no padding.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url_encode(plain.as_bytes()), encoded);
            assert_eq!(base64url_decode(encoded).unwrap(), plain.as_bytes());
        }
    }
}

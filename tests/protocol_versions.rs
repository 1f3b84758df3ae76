//! The real binary answering Kafka 3.9's newest request versions, encoded and decoded with
//! the protocol crate: Metadata v12 and Fetch v13–v17 by topic id (KIP-516), Produce v11,
//! ListOffsets v7–v9's special timestamps, batched FindCoordinator (v4+) and OffsetFetch
//! (v8+), ListGroups v5's type filter and DescribeCluster v1's endpoint type.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kbroker_storage::batch::{build_batch, compress_batch, BatchHeader, NewRecord};
use support::process::BrokerProcess;

const UNKNOWN_TOPIC_ID: i16 = 100;
const UNSUPPORTED_VERSION: i16 = 35;
const MISMATCHED_ENDPOINT_TYPE: i16 = 114;
const ILLEGAL_GENERATION: i16 = 22;
const GZIP: i16 = 1;

struct Client {
    stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    fn connect(broker: &BrokerProcess) -> Client {
        let stream = TcpStream::connect(broker.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Client {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends `request` as `api` v`version` and decodes the answer.
    fn call<Req, Resp>(&mut self, api: ApiKey, version: i16, request: &Req) -> Resp
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("protocol-versions")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, Req::header_version(version))
            .expect("header encodes");
        request.encode(&mut buf, version).expect("request encodes");
        let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&buf);
        self.stream.write_all(&frame).expect("send");
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).expect("response size");
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body).expect("response body");
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, Resp::header_version(version))
            .expect("response header");
        assert_eq!(header.correlation_id, self.correlation_id);
        let response = Resp::decode(&mut body, version).expect("response decodes");
        assert!(body.is_empty(), "{api:?} v{version}: no trailing bytes");
        response
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Creates `topic` (CreateTopics v7, replication factor 1); its topic id.
fn create_topic(c: &mut Client, topic: &str, partitions: i32) -> uuid::Uuid {
    let created: CreateTopicsResponse = c.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1)]),
    );
    let t = &created.topics[0];
    assert_eq!(t.error_code, 0, "{:?}", t.error_message);
    t.topic_id
}

fn record(value: &str, timestamp: i64) -> NewRecord {
    NewRecord {
        key: None,
        value: Some(value.as_bytes().to_vec()),
        headers: Vec::new(),
        timestamp,
    }
}

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn produce(c: &mut Client, topic: &str, partition: i32, batch: Vec<u8>) -> i64 {
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(batch)))])]);
    let response: ProduceResponse = c.call(ApiKey::Produce, 11, &request);
    let p = &response.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0, "produce v11");
    p.base_offset
}

fn list_offset(c: &mut Client, version: i16, topic: &str, timestamp: i64) -> (i16, i64, i64) {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let response: ListOffsetsResponse = c.call(ApiKey::ListOffsets, version, &request);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset, p.timestamp)
}

fn fetch_by_id(c: &mut Client, version: i16, id: uuid::Uuid) -> FetchResponse {
    let mut request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    if version < 15 {
        request.replica_id = BrokerId(-1);
    }
    c.call(ApiKey::Fetch, version, &request)
}

#[test]
fn newest_versions_by_topic_id_and_batched() {
    let broker = BrokerProcess::start("protocol-versions", &[]);
    let mut c = Client::connect(&broker);

    let created_id = create_topic(&mut c, "pv", 1);

    // Metadata v12 by name gives the id; by id alone gives the name back.
    let by_name = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name("pv"))),
    ]));
    let id = until("a leader for pv", || {
        let md: MetadataResponse = c.call(ApiKey::Metadata, 12, &by_name);
        let t = &md.topics[0];
        (t.error_code == 0 && t.partitions[0].leader_id.0 >= 0).then_some(t.topic_id)
    });
    assert!(!id.is_nil(), "the topic has an id");
    assert_eq!(id, created_id, "the id CreateTopics gave");
    let unknown = uuid::Uuid::from_bytes([7; 16]);
    let by_id = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default()
            .with_topic_id(id)
            .with_name(None),
        MetadataRequestTopic::default()
            .with_topic_id(unknown)
            .with_name(None),
    ]));
    let md: MetadataResponse = c.call(ApiKey::Metadata, 12, &by_id);
    assert_eq!(md.topics[0].error_code, 0);
    assert_eq!(md.topics[0].name.as_ref().map(|n| n.0.as_str()), Some("pv"));
    assert_eq!(md.topics[0].partitions.len(), 1);
    assert_eq!(md.topics[1].error_code, UNKNOWN_TOPIC_ID);
    assert_eq!(md.topics[1].topic_id, unknown);

    // Produce v11: an uncompressed batch, then a gzip one whose second record has the
    // greatest timestamp of the log.
    let first = produce(
        &mut c,
        "pv",
        0,
        build_batch(0, &[record("a", 1_000), record("b", 3_000)]),
    );
    assert_eq!(first, 0);
    let plain = build_batch(
        0,
        &[
            record("c", 2_000),
            record("d", 9_000),
            record("e", 9_000),
            record("f", 4_000),
        ],
    );
    let second = produce(&mut c, "pv", 0, compress_batch(&plain, GZIP).expect("gzip"));
    assert_eq!(second, 2);

    // Fetch by topic id at every version from 13: the records, under the same id.
    for version in 13..=17 {
        let response = fetch_by_id(&mut c, version, id);
        assert_eq!(response.error_code, 0, "fetch v{version}");
        let t = &response.responses[0];
        assert_eq!(t.topic_id, id, "fetch v{version} answers by id");
        let p = &t.partitions[0];
        assert_eq!(p.error_code, 0, "fetch v{version}");
        assert_eq!(p.high_watermark, 6, "fetch v{version}");
        let records = p.records.clone().unwrap_or_default();
        let first = BatchHeader::parse(&records).expect("a first batch");
        let second = BatchHeader::parse(&records[first.total_size()..]).expect("a second batch");
        assert_eq!(
            (first.base_offset, first.records_count),
            (0, 2),
            "fetch v{version}"
        );
        assert_eq!(
            (
                second.base_offset,
                second.records_count,
                second.compression()
            ),
            (2, 4, GZIP),
            "fetch v{version}"
        );
        assert_eq!(first.total_size() + second.total_size(), records.len());
        let missing = fetch_by_id(&mut c, version, unknown);
        let p = &missing.responses[0].partitions[0];
        assert_eq!(
            p.error_code, UNKNOWN_TOPIC_ID,
            "fetch v{version} unknown id"
        );
        assert_eq!(missing.responses[0].topic_id, unknown);
    }

    // ListOffsets: -3 finds the first record with the greatest timestamp inside the
    // compressed batch; -4 is the log start; -5 is -1 with nothing tiered.
    assert_eq!(list_offset(&mut c, 7, "pv", -3), (0, 3, 9_000));
    assert_eq!(list_offset(&mut c, 9, "pv", -3), (0, 3, 9_000));
    assert_eq!(list_offset(&mut c, 8, "pv", -4), (0, 0, -1));
    assert_eq!(list_offset(&mut c, 9, "pv", -5), (0, -1, -1));
    assert_eq!(list_offset(&mut c, 6, "pv", -3).0, UNSUPPORTED_VERSION);
    // By timestamp, inside the compressed batch: the first record at or after 3500.
    assert_eq!(list_offset(&mut c, 9, "pv", 3_500), (0, 3, 9_000));
    assert_eq!(list_offset(&mut c, 9, "pv", 2_500), (0, 1, 3_000));

    // FindCoordinator v4+: one answer per key.
    let keys = ["g1", "g2"].map(StrBytes::from_static_str).to_vec();
    let request = FindCoordinatorRequest::default().with_coordinator_keys(keys);
    let found: FindCoordinatorResponse = until("both coordinators", || {
        let r: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 6, &request);
        r.coordinators
            .iter()
            .all(|x| x.error_code == 0)
            .then_some(r)
    });
    assert_eq!(found.coordinators.len(), 2);
    for (x, key) in found.coordinators.iter().zip(["g1", "g2"]) {
        assert_eq!(x.key.as_str(), key);
        assert_eq!(x.node_id.0, 0);
        assert_eq!(x.port, i32::from(broker.addr.port()));
    }

    // OffsetCommit v9 (a simple, memberless commit), then OffsetFetch v8 and v9 for two
    // groups at once: the committed offset for one, -1 for the other.
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g1")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(name("pv"))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(5)])]);
    let committed: OffsetCommitResponse = until("the commit", || {
        let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 9, &commit);
        (r.topics[0].partitions[0].error_code == 0).then_some(r)
    });
    assert_eq!(committed.topics[0].partitions[0].partition_index, 0);
    for version in [8, 9] {
        let groups = ["g1", "g2"]
            .map(|g| {
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(StrBytes::from_static_str(g)))
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(name("pv"))
                        .with_partition_indexes(vec![0])]))
            })
            .to_vec();
        let fetched: OffsetFetchResponse = c.call(
            ApiKey::OffsetFetch,
            version,
            &OffsetFetchRequest::default().with_groups(groups),
        );
        let offsets: Vec<(String, i16, i64)> = fetched
            .groups
            .iter()
            .map(|g| {
                (
                    g.group_id.0.to_string(),
                    g.error_code,
                    g.topics[0].partitions[0].committed_offset,
                )
            })
            .collect();
        assert_eq!(
            offsets,
            vec![("g1".to_string(), 0, 5), ("g2".to_string(), 0, -1)],
            "offset fetch v{version}"
        );
    }

    // A commit naming a generation to a group that does not exist: ILLEGAL_GENERATION (as
    // Kafka), and no group is made by it.
    let stray = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g-none")))
        .with_generation_id_or_member_epoch(3)
        .with_member_id(StrBytes::from_static_str("m-1"))
        .with_topics(commit.topics.clone());
    let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &stray);
    assert_eq!(r.topics[0].partitions[0].error_code, ILLEGAL_GENERATION);
    let described: DescribeGroupsResponse = c.call(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_static_str("g-none"))]),
    );
    assert_eq!(described.groups[0].group_state.as_str(), "Dead");

    // ListGroups v5: every group is a classic one.
    let list = |c: &mut Client, types: &[&'static str]| -> Vec<(String, String)> {
        let request = ListGroupsRequest::default()
            .with_types_filter(types.iter().map(|t| StrBytes::from_static_str(t)).collect());
        let r: ListGroupsResponse = c.call(ApiKey::ListGroups, 5, &request);
        assert_eq!(r.error_code, 0);
        r.groups
            .iter()
            .map(|g| (g.group_id.0.to_string(), g.group_type.to_string()))
            .collect()
    };
    assert!(list(&mut c, &["classic"]).contains(&("g1".to_string(), "classic".to_string())));
    assert!(list(&mut c, &[]).contains(&("g1".to_string(), "classic".to_string())));
    assert_eq!(list(&mut c, &["consumer"]), vec![]);

    // DescribeCluster v1: brokers for the broker endpoint type, an error for controllers.
    let described: DescribeClusterResponse = c.call(
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default().with_endpoint_type(1),
    );
    assert_eq!(described.error_code, 0);
    assert_eq!(described.brokers.len(), 1);
    assert_eq!(described.controller_id.0, 0);
    let refused: DescribeClusterResponse = c.call(
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default().with_endpoint_type(2),
    );
    assert_eq!(refused.error_code, MISMATCHED_ENDPOINT_TYPE);
}

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

/// A Fetch of `partitions` (partition, offset) of `topic` (by name before v13, else by
/// `id`) in session `session_id` at `epoch`, forgetting `forget`.
#[allow(clippy::too_many_arguments)]
fn session_fetch(
    c: &mut Client,
    version: i16,
    topic: &str,
    id: uuid::Uuid,
    (session_id, epoch): (i32, i32),
    partitions: &[(i32, i64)],
    forget: &[i32],
    max_wait_ms: i32,
) -> FetchResponse {
    use kafka_protocol::messages::fetch_request::ForgottenTopic;
    let topic_of = |t: FetchTopic| {
        if version >= 13 {
            t.with_topic_id(id)
        } else {
            t.with_topic(name(topic))
        }
    };
    let topics = if partitions.is_empty() {
        Vec::new()
    } else {
        vec![topic_of(FetchTopic::default()).with_partitions(
            partitions
                .iter()
                .map(|&(p, offset)| {
                    FetchPartition::default()
                        .with_partition(p)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20)
                })
                .collect(),
        )]
    };
    let forgotten = if forget.is_empty() {
        Vec::new()
    } else {
        let t = ForgottenTopic::default().with_partitions(forget.to_vec());
        vec![if version >= 13 {
            t.with_topic_id(id)
        } else {
            t.with_topic(name(topic))
        }]
    };
    let mut request = FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten);
    if version < 15 {
        request.replica_id = BrokerId(-1);
    }
    c.call(ApiKey::Fetch, version, &request)
}

/// (partition, has records) of every partition a fetch response answered, in order.
fn answered(r: &FetchResponse) -> Vec<(i32, bool)> {
    r.responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    p.partition_index,
                    p.records.as_ref().is_some_and(|b| !b.is_empty()),
                )
            })
        })
        .collect()
}

#[test]
fn incremental_fetch_sessions() {
    let broker = BrokerProcess::start(
        "fetch-sessions",
        &["max.incremental.fetch.session.cache.slots=2"],
    );
    let mut c = Client::connect(&broker);
    let id = create_topic(&mut c, "fs", 3);
    let batch = |v: &str| build_batch(0, &[record(v, 1_000)]);
    let mut p = Client::connect(&broker);
    until("leaders for fs", || {
        let md: MetadataResponse = p.call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name("fs")))
            ])),
        );
        md.topics[0]
            .partitions
            .iter()
            .all(|p| p.leader_id.0 >= 0)
            .then_some(())
    });
    assert_eq!(produce(&mut p, "fs", 0, batch("a")), 0);

    // A full fetch (epoch 0) opens a session and answers every partition.
    let all = [(0, 0), (1, 0), (2, 0)];
    let r = session_fetch(&mut c, 12, "fs", id, (0, 0), &all, &[], 0);
    assert_eq!(r.error_code, 0);
    let session = r.session_id;
    assert!(session > 0, "a session was made");
    assert_eq!(answered(&r), vec![(0, true), (1, false), (2, false)]);

    // Incremental, partition 0's offset moved past the batch: nothing changed, nothing
    // answered.
    let r = session_fetch(&mut c, 12, "fs", id, (session, 1), &[(0, 1)], &[], 0);
    assert_eq!((r.error_code, r.session_id), (0, session));
    assert_eq!(answered(&r), vec![]);

    // Records on partition 2 only: only partition 2 is answered, although the request
    // named no partition at all.
    assert_eq!(produce(&mut p, "fs", 2, batch("b")), 0);
    let r = session_fetch(&mut c, 12, "fs", id, (session, 2), &[], &[], 0);
    assert_eq!(answered(&r), vec![(2, true)]);

    // A parked incremental fetch completes on a produce to a partition the request did not
    // name (it is in the session).
    let r = session_fetch(&mut c, 12, "fs", id, (session, 3), &[(2, 1)], &[], 0);
    assert_eq!(answered(&r), vec![]);
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        produce(&mut p, "fs", 1, batch("c"));
        p
    });
    let r = session_fetch(&mut c, 12, "fs", id, (session, 4), &[], &[], 20_000);
    let mut p = producer.join().expect("producer");
    assert_eq!(answered(&r), vec![(1, true)]);

    // The wrong epoch, or topic ids against a session by name: errors, session intact.
    let r = session_fetch(&mut c, 12, "fs", id, (session, 9), &[], &[], 0);
    assert_eq!(
        (r.error_code, r.session_id),
        (INVALID_FETCH_SESSION_EPOCH, 0)
    );
    assert_eq!(answered(&r), vec![]);
    let r = session_fetch(&mut c, 13, "fs", id, (session, 5), &[], &[], 0);
    assert_eq!(r.error_code, FETCH_SESSION_TOPIC_ID_ERROR);
    let r = session_fetch(&mut c, 12, "fs", id, (session, 5), &[(1, 1)], &[0], 0);
    assert_eq!((r.error_code, r.session_id), (0, session));

    // Two slots: a second session fits, a third client gets none (both are fresh).
    let mut c2 = Client::connect(&broker);
    let r2 = session_fetch(&mut c2, 17, "fs", id, (0, 0), &[(0, 0)], &[], 0);
    assert!(r2.session_id > 0 && r2.session_id != session);
    assert_eq!(answered(&r2), vec![(0, true)]);
    let mut c3 = Client::connect(&broker);
    let r3 = session_fetch(&mut c3, 12, "fs", id, (0, 0), &all, &[], 0);
    assert_eq!((r3.error_code, r3.session_id), (0, 0));
    assert_eq!(
        answered(&r3).len(),
        3,
        "a full fetch without a session still answers"
    );

    // The session by topic id (v17): a produce to partition 0 shows there.
    assert_eq!(produce(&mut p, "fs", 0, batch("d")), 1);
    let r2 = session_fetch(&mut c2, 17, "fs", id, (r2.session_id, 1), &[(0, 1)], &[], 0);
    assert_eq!(answered(&r2), vec![(0, true)]);
    assert_eq!(r2.responses[0].topic_id, id);

    // Forgetting the last partitions closes a session; its id is then unknown. Epoch -1
    // closes the other.
    let r = session_fetch(&mut c, 12, "fs", id, (session, 6), &[], &[1, 2], 0);
    assert_eq!((r.error_code, r.session_id), (0, 0));
    let r = session_fetch(&mut c, 12, "fs", id, (session, 7), &[], &[], 0);
    assert_eq!(r.error_code, FETCH_SESSION_ID_NOT_FOUND);
    let r = session_fetch(
        &mut c2,
        17,
        "fs",
        id,
        (r2.session_id, -1),
        &[(0, 2)],
        &[],
        0,
    );
    assert_eq!((r.error_code, r.session_id), (0, 0));
    // Both slots free again: a new full fetch gets a session.
    let r3 = session_fetch(&mut c3, 12, "fs", id, (0, 0), &all, &[], 0);
    assert!(r3.session_id > 0);
}

#[test]
fn broker_resources_name_this_broker_or_the_cluster_default() {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    const INVALID_REQUEST: i16 = 42;
    const INVALID_CONFIG: i16 = 40;
    let broker = BrokerProcess::start("broker-resources", &[]);
    let mut c = Client::connect(&broker);
    let resource = |name: &str, key: &str| {
        AlterConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_string(key.to_string()))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_static_str("100000")))])
    };
    let request = IncrementalAlterConfigsRequest::default()
        .with_validate_only(true)
        .with_resources(vec![
            resource("", "message.max.bytes"),
            resource("0", "message.max.bytes"),
            resource("7", "message.max.bytes"),
            resource("x", "message.max.bytes"),
            resource("", "num.io.threads"),
            resource("0", "log.dirs"),
        ]);
    let response: IncrementalAlterConfigsResponse =
        c.call(ApiKey::IncrementalAlterConfigs, 1, &request);
    let codes: Vec<i16> = response.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes,
        vec![
            0,
            0,
            INVALID_REQUEST,
            INVALID_REQUEST,
            INVALID_CONFIG,
            INVALID_CONFIG
        ]
    );
    let message = |i: usize| {
        response.responses[i]
            .error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default()
    };
    assert!(
        message(2).contains("Unexpected broker id, expected 0"),
        "{}",
        message(2)
    );
    assert!(message(4).contains("num.io.threads"), "{}", message(4));
    assert!(message(5).contains("Cannot update these configs dynamically: Set(log.dirs)"));
    // validate_only wrote nothing: the default layer describes empty.
    let described: DescribeConfigsResponse = c.call(
        ApiKey::DescribeConfigs,
        4,
        &DescribeConfigsRequest::default().with_resources(vec![
            kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("")),
        ]),
    );
    assert_eq!(described.results[0].error_code, 0);
    assert!(described.results[0].configs.is_empty());
}

//! Sample requests for every API kbroker advertises, and hostile variants of them.
//!
//! `samples(api, version)` encodes the API's request body twice: all defaults (every array
//! empty) and populated (every array, nested ones included, holds elements) — a variant
//! the version cannot express is skipped. `count_bombs(body)` yields copies of a body with
//! a huge count spliced in at every position, both as a 4-byte INT32 (0x7fffffff) and as a
//! 5-byte unsigned varint (0xffffffff), so every array, string and bytes length of every
//! version is hit without a schema. Shared by the decode-bound test, the hostile-frame test
//! against the real binary and the fuzz seed generator.

#![allow(dead_code)]

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn topic(v: &str) -> TopicName {
    TopicName(s(v))
}

fn populated_bodies(api: ApiKey) -> Vec<Box<dyn Fn(i16) -> Option<Bytes>>> {
    fn enc<T: Encodable + 'static>(
        build: impl Fn() -> T + 'static,
    ) -> Box<dyn Fn(i16) -> Option<Bytes>> {
        Box::new(move |version| {
            let mut buf = BytesMut::new();
            build().encode(&mut buf, version).ok()?;
            Some(buf.freeze())
        })
    }
    let batch = Bytes::from_static(&[0u8; 70]);
    match api {
        ApiKey::Produce => vec![enc(move || {
            use produce_request::*;
            ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic("t"))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch.clone())),
                        PartitionProduceData::default()
                            .with_index(1)
                            .with_records(Some(batch.clone())),
                    ])])
        })],
        ApiKey::Fetch => vec![
            enc(|| {
                use fetch_request::*;
                FetchRequest::default()
                    .with_max_wait_ms(10)
                    .with_topics(vec![FetchTopic::default()
                        .with_topic(topic("t"))
                        .with_partitions(vec![FetchPartition::default()
                            .with_partition(0)
                            .with_partition_max_bytes(1024)])])
                    .with_forgotten_topics_data(vec![ForgottenTopic::default()
                        .with_topic(topic("u"))
                        .with_partitions(vec![0, 1])])
            }),
            enc(|| {
                use fetch_request::*;
                FetchRequest::default().with_topics(vec![FetchTopic::default()
                    .with_topic(topic("t"))
                    .with_partitions(vec![FetchPartition::default().with_partition(0)])])
            }),
        ],
        ApiKey::ListOffsets => vec![enc(|| {
            use list_offsets_request::*;
            ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic("t"))
                .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)])])
        })],
        ApiKey::Metadata => vec![enc(|| {
            use metadata_request::*;
            MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic("t"))),
                MetadataRequestTopic::default().with_name(Some(topic("u"))),
            ]))
        })],
        ApiKey::CreateTopics => vec![enc(|| {
            use create_topics_request::*;
            CreateTopicsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(topic("t"))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(vec![CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(vec![BrokerId(0)])])
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("1000")))])])
        })],
        ApiKey::DeleteTopics => vec![
            enc(|| DeleteTopicsRequest::default().with_topic_names(vec![topic("t"), topic("u")])),
            enc(|| {
                DeleteTopicsRequest::default()
                    .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                        .with_name(Some(topic("t")))])
            }),
        ],
        ApiKey::DescribeConfigs => vec![enc(|| {
            DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t"))
                    .with_configuration_keys(Some(vec![s("retention.ms"), s("segment.bytes")])),
            ])
        })],
        ApiKey::CreatePartitions => vec![enc(|| {
            use create_partitions_request::*;
            CreatePartitionsRequest::default().with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic("t"))
                .with_count(3)
                .with_assignments(Some(vec![
                    CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(0)]),
                    CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(0)]),
                ]))])
        })],
        ApiKey::OffsetCommit => vec![enc(|| {
            use offset_commit_request::*;
            OffsetCommitRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(topic("t"))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default().with_committed_offset(5),
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(1)
                            .with_committed_metadata(Some(s("m"))),
                    ])])
        })],
        ApiKey::OffsetFetch => vec![
            enc(|| {
                use offset_fetch_request::*;
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                        .with_name(topic("t"))
                        .with_partition_indexes(vec![0, 1, 2])]))
            }),
            enc(|| {
                use offset_fetch_request::*;
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(topic("t"))
                        .with_partition_indexes(vec![0, 1])]))])
            }),
        ],
        ApiKey::FindCoordinator => vec![
            enc(|| FindCoordinatorRequest::default().with_key(s("g"))),
            enc(|| FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g"), s("h")])),
        ],
        ApiKey::JoinGroup => vec![enc(|| {
            JoinGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_session_timeout_ms(10000)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(Bytes::from_static(b"meta")),
                    join_group_request::JoinGroupRequestProtocol::default().with_name(s("rr")),
                ])
        })],
        ApiKey::SyncGroup => vec![enc(|| {
            SyncGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_assignments(vec![
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(s("m"))
                        .with_assignment(Bytes::from_static(b"assignment")),
                ])
        })],
        ApiKey::LeaveGroup => vec![
            enc(|| {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_member_id(s("m"))
            }),
            enc(|| {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_members(vec![
                        leave_group_request::MemberIdentity::default().with_member_id(s("m")),
                        leave_group_request::MemberIdentity::default().with_member_id(s("n")),
                    ])
            }),
        ],
        ApiKey::Heartbeat => vec![enc(|| {
            HeartbeatRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s("m"))
        })],
        ApiKey::DescribeGroups => vec![enc(|| {
            DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g")), GroupId(s("h"))])
        })],
        ApiKey::ListGroups => vec![enc(|| {
            ListGroupsRequest::default().with_states_filter(vec![s("Stable"), s("Empty")])
        })],
        ApiKey::DeleteGroups => vec![enc(|| {
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g")), GroupId(s("h"))])
        })],
        ApiKey::OffsetDelete => vec![enc(|| {
            use offset_delete_request::*;
            OffsetDeleteRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(vec![OffsetDeleteRequestTopic::default()
                    .with_name(topic("t"))
                    .with_partitions(vec![OffsetDeleteRequestPartition::default()])])
        })],
        ApiKey::DeleteRecords => vec![enc(|| {
            use delete_records_request::*;
            DeleteRecordsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(topic("t"))
                    .with_partitions(vec![
                        DeleteRecordsPartition::default().with_offset(1)
                    ])])
        })],
        ApiKey::AlterConfigs => vec![enc(|| {
            use alter_configs_request::*;
            AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("1000")))])])
        })],
        ApiKey::IncrementalAlterConfigs => vec![enc(|| {
            use incremental_alter_configs_request::*;
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t"))
                    .with_configs(vec![AlterableConfig::default()
                        .with_name(s("cleanup.policy"))
                        .with_config_operation(2)
                        .with_value(Some(s("compact")))]),
            ])
        })],
        ApiKey::DescribeClientQuotas => vec![enc(|| {
            use describe_client_quotas_request::*;
            DescribeClientQuotasRequest::default().with_components(vec![ComponentData::default()
                .with_entity_type(s("user"))
                .with_match_type(0)
                .with_match(Some(s("alice")))])
        })],
        ApiKey::AlterClientQuotas => vec![enc(|| {
            use alter_client_quotas_request::*;
            AlterClientQuotasRequest::default().with_entries(vec![EntryData::default()
                .with_entity(vec![EntityData::default()
                    .with_entity_type(s("user"))
                    .with_entity_name(Some(s("alice")))])
                .with_ops(vec![OpData::default()
                    .with_key(s("producer_byte_rate"))
                    .with_value(1024.0)])])
        })],
        ApiKey::DescribeUserScramCredentials => vec![enc(|| {
            use describe_user_scram_credentials_request::*;
            DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
                UserName::default().with_name(s("alice")),
                UserName::default().with_name(s("alice")),
            ]))
        })],
        ApiKey::DescribeLogDirs => vec![enc(|| {
            use describe_log_dirs_request::*;
            DescribeLogDirsRequest::default().with_topics(Some(vec![
                DescribableLogDirTopic::default()
                    .with_topic(topic("t"))
                    .with_partitions(vec![0, 1]),
            ]))
        })],
        ApiKey::InitProducerId => vec![enc(|| {
            InitProducerIdRequest::default().with_transaction_timeout_ms(60000)
        })],
        ApiKey::DescribeProducers => vec![enc(|| {
            DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(topic("t"))
                    .with_partition_indexes(vec![0, 1]),
            ])
        })],
        ApiKey::AlterPartitionReassignments => vec![enc(|| {
            use alter_partition_reassignments_request::*;
            AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![ReassignableTopic::default()
                    .with_name(topic("t"))
                    .with_partitions(vec![
                        ReassignablePartition::default()
                            .with_partition_index(0)
                            .with_replicas(Some(vec![BrokerId(1), BrokerId(2)])),
                        ReassignablePartition::default().with_partition_index(1),
                    ])])
        })],
        ApiKey::ListPartitionReassignments => vec![enc(|| {
            use list_partition_reassignments_request::*;
            ListPartitionReassignmentsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(Some(vec![ListPartitionReassignmentsTopics::default()
                    .with_name(topic("t"))
                    .with_partition_indexes(vec![0, 1])]))
        })],
        ApiKey::OffsetForLeaderEpoch => vec![enc(|| {
            use offset_for_leader_epoch_request::*;
            OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![OffsetForLeaderTopic::default()
                    .with_topic(topic("t"))
                    .with_partitions(vec![OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(0)
                        .with_leader_epoch(0)])])
        })],
        // Controller-to-broker requests: one body in the pre-grouping layout (old versions)
        // and one grouped by topic (new versions); each encodes where it can.
        ApiKey::LeaderAndIsr => {
            use leader_and_isr_request::*;
            fn state(p: i32) -> LeaderAndIsrPartitionState {
                LeaderAndIsrPartitionState::default()
                    .with_partition_index(p)
                    .with_leader(BrokerId(1))
                    .with_isr(vec![BrokerId(1), BrokerId(2)])
                    .with_replicas(vec![BrokerId(1), BrokerId(2)])
            }
            fn leaders() -> Vec<LeaderAndIsrLiveLeader> {
                vec![LeaderAndIsrLiveLeader::default()
                    .with_broker_id(BrokerId(1))
                    .with_host_name(s("h"))
                    .with_port(9092)]
            }
            vec![
                enc(|| {
                    LeaderAndIsrRequest::default()
                        .with_ungrouped_partition_states(vec![
                            state(0).with_topic_name(topic("t")),
                            state(1).with_topic_name(topic("t")),
                        ])
                        .with_live_leaders(leaders())
                }),
                enc(|| {
                    LeaderAndIsrRequest::default()
                        .with_topic_states(vec![LeaderAndIsrTopicState::default()
                            .with_topic_name(topic("t"))
                            .with_partition_states(vec![state(0), state(1)])])
                        .with_live_leaders(leaders())
                }),
            ]
        }
        ApiKey::UpdateMetadata => {
            use update_metadata_request::*;
            fn state(p: i32) -> UpdateMetadataPartitionState {
                UpdateMetadataPartitionState::default()
                    .with_partition_index(p)
                    .with_isr(vec![BrokerId(1)])
                    .with_replicas(vec![BrokerId(1), BrokerId(2)])
                    .with_offline_replicas(vec![BrokerId(2)])
            }
            vec![
                enc(|| {
                    UpdateMetadataRequest::default()
                        .with_ungrouped_partition_states(vec![
                            state(0).with_topic_name(topic("t")),
                            state(1).with_topic_name(topic("t")),
                        ])
                        .with_live_brokers(vec![UpdateMetadataBroker::default()
                            .with_v0_host(s("h"))
                            .with_v0_port(9092)])
                }),
                enc(|| {
                    UpdateMetadataRequest::default()
                        .with_ungrouped_partition_states(vec![
                            state(0).with_topic_name(topic("t")),
                            state(1).with_topic_name(topic("t")),
                        ])
                        .with_live_brokers(vec![UpdateMetadataBroker::default()
                            .with_endpoints(vec![UpdateMetadataEndpoint::default()
                                .with_host(s("h"))
                                .with_port(9092)])
                            .with_rack(Some(s("r")))])
                }),
                enc(|| {
                    UpdateMetadataRequest::default()
                        .with_topic_states(vec![UpdateMetadataTopicState::default()
                            .with_topic_name(topic("t"))
                            .with_partition_states(vec![state(0), state(1)])])
                        .with_live_brokers(vec![UpdateMetadataBroker::default()
                            .with_endpoints(vec![UpdateMetadataEndpoint::default()
                                .with_host(s("h"))
                                .with_port(9092)
                                .with_listener(s("PLAINTEXT"))])
                            .with_rack(Some(s("r")))])
                }),
            ]
        }
        ApiKey::StopReplica => {
            use stop_replica_request::*;
            vec![
                enc(|| {
                    StopReplicaRequest::default().with_ungrouped_partitions(vec![
                        StopReplicaPartitionV0::default().with_topic_name(topic("t")),
                        StopReplicaPartitionV0::default()
                            .with_topic_name(topic("t"))
                            .with_partition_index(1),
                    ])
                }),
                enc(|| {
                    StopReplicaRequest::default().with_topics(vec![StopReplicaTopicV1::default()
                        .with_name(topic("t"))
                        .with_partition_indexes(vec![0, 1])])
                }),
                enc(|| {
                    StopReplicaRequest::default().with_topic_states(vec![
                        StopReplicaTopicState::default()
                            .with_topic_name(topic("t"))
                            .with_partition_states(vec![
                                StopReplicaPartitionState::default(),
                                StopReplicaPartitionState::default().with_partition_index(1),
                            ]),
                    ])
                }),
            ]
        }
        ApiKey::ControlledShutdown => vec![enc(|| {
            ControlledShutdownRequest::default()
                .with_broker_id(BrokerId(2))
                .with_broker_epoch(5)
        })],
        ApiKey::ElectLeaders => vec![enc(|| {
            ElectLeadersRequest::default().with_topic_partitions(Some(vec![
                elect_leaders_request::TopicPartitions::default()
                    .with_topic(topic("t"))
                    .with_partitions(vec![0, 1]),
            ]))
        })],
        ApiKey::ApiVersions => vec![enc(|| {
            ApiVersionsRequest::default()
                .with_client_software_name(s("kbroker-test"))
                .with_client_software_version(s("1"))
        })],
        _ => Vec::new(),
    }
}

/// The encoded request bodies for `api` at `version`: defaults first, then populated ones.
pub fn samples(api: ApiKey, version: i16) -> Vec<Bytes> {
    let mut out = Vec::new();
    if let Some(b) = default_body(api, version) {
        out.push(b);
    }
    for build in populated_bodies(api) {
        if let Some(b) = build(version) {
            if !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out
}

fn default_body(api: ApiKey, version: i16) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    let encoded = match api {
        ApiKey::Produce => ProduceRequest::default().encode(&mut buf, version),
        ApiKey::Fetch => FetchRequest::default().encode(&mut buf, version),
        ApiKey::ListOffsets => ListOffsetsRequest::default().encode(&mut buf, version),
        ApiKey::Metadata => MetadataRequest::default().encode(&mut buf, version),
        ApiKey::ApiVersions => ApiVersionsRequest::default().encode(&mut buf, version),
        ApiKey::CreateTopics => CreateTopicsRequest::default().encode(&mut buf, version),
        ApiKey::DeleteTopics => DeleteTopicsRequest::default().encode(&mut buf, version),
        ApiKey::DescribeConfigs => DescribeConfigsRequest::default().encode(&mut buf, version),
        ApiKey::CreatePartitions => CreatePartitionsRequest::default().encode(&mut buf, version),
        ApiKey::DescribeCluster => DescribeClusterRequest::default().encode(&mut buf, version),
        ApiKey::OffsetCommit => OffsetCommitRequest::default().encode(&mut buf, version),
        ApiKey::OffsetFetch => OffsetFetchRequest::default().encode(&mut buf, version),
        ApiKey::FindCoordinator => FindCoordinatorRequest::default().encode(&mut buf, version),
        ApiKey::JoinGroup => JoinGroupRequest::default().encode(&mut buf, version),
        ApiKey::Heartbeat => HeartbeatRequest::default().encode(&mut buf, version),
        ApiKey::LeaveGroup => LeaveGroupRequest::default().encode(&mut buf, version),
        ApiKey::SyncGroup => SyncGroupRequest::default().encode(&mut buf, version),
        ApiKey::DescribeGroups => DescribeGroupsRequest::default().encode(&mut buf, version),
        ApiKey::ListGroups => ListGroupsRequest::default().encode(&mut buf, version),
        ApiKey::DeleteGroups => DeleteGroupsRequest::default().encode(&mut buf, version),
        ApiKey::OffsetDelete => OffsetDeleteRequest::default().encode(&mut buf, version),
        ApiKey::DeleteRecords => DeleteRecordsRequest::default().encode(&mut buf, version),
        ApiKey::DescribeLogDirs => DescribeLogDirsRequest::default().encode(&mut buf, version),
        ApiKey::DescribeClientQuotas => {
            DescribeClientQuotasRequest::default().encode(&mut buf, version)
        }
        ApiKey::AlterClientQuotas => AlterClientQuotasRequest::default().encode(&mut buf, version),
        ApiKey::DescribeUserScramCredentials => {
            DescribeUserScramCredentialsRequest::default().encode(&mut buf, version)
        }
        ApiKey::AlterConfigs => AlterConfigsRequest::default().encode(&mut buf, version),
        ApiKey::IncrementalAlterConfigs => {
            IncrementalAlterConfigsRequest::default().encode(&mut buf, version)
        }
        ApiKey::InitProducerId => InitProducerIdRequest::default().encode(&mut buf, version),
        ApiKey::DescribeProducers => DescribeProducersRequest::default().encode(&mut buf, version),
        ApiKey::OffsetForLeaderEpoch => {
            OffsetForLeaderEpochRequest::default().encode(&mut buf, version)
        }
        ApiKey::AlterPartitionReassignments => {
            AlterPartitionReassignmentsRequest::default().encode(&mut buf, version)
        }
        ApiKey::ListPartitionReassignments => {
            ListPartitionReassignmentsRequest::default().encode(&mut buf, version)
        }
        ApiKey::LeaderAndIsr => LeaderAndIsrRequest::default().encode(&mut buf, version),
        ApiKey::UpdateMetadata => UpdateMetadataRequest::default().encode(&mut buf, version),
        ApiKey::StopReplica => StopReplicaRequest::default().encode(&mut buf, version),
        ApiKey::ControlledShutdown => {
            ControlledShutdownRequest::default().encode(&mut buf, version)
        }
        ApiKey::ElectLeaders => ElectLeadersRequest::default().encode(&mut buf, version),
        _ => return None,
    };
    encoded.ok().map(|()| buf.freeze())
}

/// A whole frame: size prefix, request header of the right version, body.
pub fn frame(api: ApiKey, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(s("hostile")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api.request_header_version(version))
        .expect("request header encodes");
    buf.put_slice(body);
    let mut out = Vec::with_capacity(4 + buf.len());
    out.extend_from_slice(&(buf.len() as i32).to_be_bytes());
    out.extend_from_slice(&buf);
    out
}

/// Copies of `body` with a huge count spliced in at every position, in both encodings.
pub fn count_bombs(body: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for at in 0..=body.len() {
        if at + 4 <= body.len() {
            let mut b = body.to_vec();
            b[at..at + 4].copy_from_slice(&0x7fff_ffffi32.to_be_bytes());
            out.push(b);
        }
        if at < body.len() {
            let mut b = body[..at].to_vec();
            b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
            b.extend_from_slice(&body[at + 1..]);
            out.push(b);
        }
    }
    out
}

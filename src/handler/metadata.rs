//! Metadata: brokers, cluster id, controller, topics and partitions — as the controller
//! last published them (the metadata cache). An unknown topic is created when
//! `auto.create.topics.enable` and the request allow it: as in Kafka, the creation is
//! queued (through the admin component and the controller) and the topic answered
//! LEADER_NOT_AVAILABLE until it has leaders; clients ask again.

use bytes::Bytes;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;

pub use super::topic_name;
use super::{admin_error_code, decode, respond, HandlerResult, RequestContext};
use crate::admin::{self, TopicSpec};
use crate::broker::Broker;
use crate::metadata_cache::TopicMeta;

pub fn topic_metadata(info: &TopicMeta, version: i16) -> MetadataResponseTopic {
    let partitions = info
        .partitions
        .iter()
        .map(|p| {
            let mut m = MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect());
            if version >= 5 {
                m.offline_replicas = p.offline_replicas.iter().map(|r| BrokerId(*r)).collect();
            }
            if p.leader < 0 {
                m.error_code = ResponseError::LeaderNotAvailable.code();
            }
            m
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&info.name)))
        .with_topic_id(uuid::Uuid::from_bytes(info.id))
        .with_is_internal(info.internal)
        .with_partitions(partitions)
}

fn error_topic(name: &str, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_error_code(code)
}

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<MetadataRequest>(&mut body, ctx.version, responder)?;
    let image = broker.metadata.image();
    let all = match &request.topics {
        None => true,
        Some(t) => t.is_empty() && ctx.version == 0,
    };
    let topics = if all {
        image
            .topics
            .values()
            .map(|t| topic_metadata(t, ctx.version))
            .collect()
    } else {
        let auto_create = broker.config.auto_create_topics_enable
            && (ctx.version < 4 || request.allow_auto_topic_creation);
        let mut out = Vec::new();
        for t in request.topics.iter().flatten() {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
                // v12: a topic asked for by id alone (never auto-created, as in Kafka).
                let id = *t.topic_id.as_bytes();
                out.push(match image.topic_by_id(&id) {
                    Some(info) => topic_metadata(info, ctx.version),
                    None => MetadataResponseTopic::default()
                        .with_error_code(ResponseError::UnknownTopicId.code())
                        .with_topic_id(t.topic_id),
                });
                continue;
            };
            out.push(match image.topics.get(&name) {
                Some(info) => topic_metadata(info, ctx.version),
                None => lookup_missing(broker, &name, auto_create),
            });
        }
        out
    };
    let brokers = image
        .brokers
        .values()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(b.port)
                .with_rack(b.rack.clone().map(StrBytes::from_string))
        })
        .collect();
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_controller_id(BrokerId(image.controller_id))
        .with_topics(topics);
    if ctx.version >= 2 {
        response.cluster_id = Some(StrBytes::from_string(broker.cluster_id.clone()));
    }
    respond(ctx, responder, &response)
}

fn lookup_missing(broker: &Broker, name: &str, auto_create: bool) -> MetadataResponseTopic {
    if let Err(e) = admin::validate_topic_name(name) {
        return error_topic(name, admin_error_code(&e));
    }
    if !auto_create {
        return error_topic(name, ResponseError::UnknownTopicOrPartition.code());
    }
    broker.admin.create_in_background(TopicSpec {
        name: name.to_string(),
        num_partitions: None,
        replication_factor: None,
        assignments: Default::default(),
        configs: Default::default(),
    });
    error_topic(name, ResponseError::LeaderNotAvailable.code())
}

//! Metadata: brokers, cluster id, controller, topics and partitions; auto-creates unknown
//! topics when `auto.create.topics.enable` and the request allow it.

use bytes::Bytes;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;

use super::{admin_error_code, decode, respond, HandlerResult, RequestContext};
use crate::broker::{Broker, TopicInfo};
use crate::topics::{self, AdminError, TopicSpec};

/// (id, host, port) of every live broker, from the advertised listener.
pub fn live_brokers(broker: &Broker) -> Vec<(i32, String, i32)> {
    let l = &broker.config.advertised_listeners[0];
    vec![(broker.config.broker_id, l.host.clone(), l.port as i32)]
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub fn topic_metadata(info: &TopicInfo) -> MetadataResponseTopic {
    let partitions = info
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect())
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
    let all = match &request.topics {
        None => true,
        Some(t) => t.is_empty() && ctx.version == 0,
    };
    let topics = if all {
        broker
            .all_topics()
            .iter()
            .map(|t| topic_metadata(t))
            .collect()
    } else {
        let auto_create = broker.config.auto_create_topics_enable
            && (ctx.version < 4 || request.allow_auto_topic_creation);
        let mut out = Vec::new();
        for t in request.topics.iter().flatten() {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
                out.push(
                    MetadataResponseTopic::default()
                        .with_error_code(ResponseError::UnknownTopicId.code())
                        .with_topic_id(t.topic_id),
                );
                continue;
            };
            out.push(match broker.topic(&name) {
                Some(info) => topic_metadata(&info),
                None => lookup_missing(broker, &name, auto_create),
            });
        }
        out
    };
    let brokers = live_brokers(broker)
        .into_iter()
        .map(|(id, host, port)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
        })
        .collect();
    let response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id.clone())))
        .with_controller_id(BrokerId(broker.config.broker_id))
        .with_topics(topics);
    respond(ctx, responder, &response)
}

fn lookup_missing(broker: &Broker, name: &str, auto_create: bool) -> MetadataResponseTopic {
    if let Err(e) = topics::validate_topic_name(name) {
        return error_topic(name, admin_error_code(&e));
    }
    if !auto_create {
        return error_topic(name, ResponseError::UnknownTopicOrPartition.code());
    }
    let spec = TopicSpec {
        name: name.to_string(),
        num_partitions: None,
        replication_factor: None,
        assignments: Default::default(),
        configs: Default::default(),
    };
    match topics::create_topic(broker, &spec, false) {
        Ok(info) => topic_metadata(&info),
        Err(AdminError::TopicExists(_)) => broker.topic(name).map_or_else(
            || error_topic(name, ResponseError::LeaderNotAvailable.code()),
            |i| topic_metadata(&i),
        ),
        Err(e) => {
            log::warn!("auto-creating topic {name} failed: {e}");
            error_topic(name, ResponseError::LeaderNotAvailable.code())
        }
    }
}

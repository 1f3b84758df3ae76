//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455;
//! `kafka-reassign-partitions.sh --bootstrap-server`, `Admin.alterPartitionReassignments`):
//! run by the controller's event thread (see `controller::reassign`). Sent to any other
//! broker they answer NOT_CONTROLLER, as Kafka's ZooKeeper-mode brokers do. A partition's
//! null replica list cancels its reassignment.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;
use kbroker_storage::TopicPartition;

use super::{decode, respond, respond_later, topic_name, HandlerResult, RequestContext};
use crate::broker::Broker;
use crate::controller::{Ongoing, ReassignResults};

pub fn handle_alter(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) =
        decode::<AlterPartitionReassignmentsRequest>(&mut body, ctx.version, responder)?;
    let requests: Vec<(TopicPartition, Option<Vec<i32>>)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    TopicPartition::new(&t.name.0, p.partition_index),
                    p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
                )
            })
        })
        .collect();
    let Some(controller) = broker.controller().filter(|c| c.is_active()) else {
        let response = AlterPartitionReassignmentsResponse::default()
            .with_error_code(ResponseError::NotController.code());
        return respond(ctx, responder, &response);
    };
    let send = respond_later::<AlterPartitionReassignmentsResponse>(ctx, responder);
    controller.alter_reassignments(
        requests,
        Box::new(move |outcome| {
            send(match outcome {
                Ok(results) => alter_response(results),
                Err(code) => AlterPartitionReassignmentsResponse::default().with_error_code(code),
            })
        }),
    );
    Ok(())
}

fn alter_response(results: ReassignResults) -> AlterPartitionReassignmentsResponse {
    let mut by_topic: BTreeMap<String, Vec<ReassignablePartitionResponse>> = BTreeMap::new();
    for (tp, code, message) in results {
        by_topic.entry(tp.topic).or_default().push(
            ReassignablePartitionResponse::default()
                .with_partition_index(tp.partition)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    AlterPartitionReassignmentsResponse::default().with_responses(
        by_topic
            .into_iter()
            .map(|(t, partitions)| {
                ReassignableTopicResponse::default()
                    .with_name(topic_name(&t))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

pub fn handle_list(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) =
        decode::<ListPartitionReassignmentsRequest>(&mut body, ctx.version, responder)?;
    let filter: Option<Vec<TopicPartition>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .map(|p| TopicPartition::new(&t.name.0, *p))
            })
            .collect()
    });
    let Some(controller) = broker.controller().filter(|c| c.is_active()) else {
        let response = ListPartitionReassignmentsResponse::default()
            .with_error_code(ResponseError::NotController.code());
        return respond(ctx, responder, &response);
    };
    let send = respond_later::<ListPartitionReassignmentsResponse>(ctx, responder);
    controller.list_reassignments(
        filter,
        Box::new(move |outcome| {
            send(match outcome {
                Ok(ongoing) => list_response(ongoing),
                Err(code) => ListPartitionReassignmentsResponse::default().with_error_code(code),
            })
        }),
    );
    Ok(())
}

fn list_response(ongoing: Vec<Ongoing>) -> ListPartitionReassignmentsResponse {
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let mut by_topic: BTreeMap<String, Vec<OngoingPartitionReassignment>> = BTreeMap::new();
    for o in ongoing {
        by_topic.entry(o.tp.topic.clone()).or_default().push(
            OngoingPartitionReassignment::default()
                .with_partition_index(o.tp.partition)
                .with_replicas(ids(&o.replicas))
                .with_adding_replicas(ids(&o.adding))
                .with_removing_replicas(ids(&o.removing)),
        );
    }
    ListPartitionReassignmentsResponse::default().with_topics(
        by_topic
            .into_iter()
            .map(|(t, partitions)| {
                OngoingTopicReassignment::default()
                    .with_name(topic_name(&t))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

//! ElectLeaders (Kafka's `kafka-leader-election.sh`, `AdminClient.electLeaders`): preferred
//! or unclean leader election, run by the controller's event thread. Clients send it to the
//! controller; any other broker answers NOT_CONTROLLER for every partition, as Kafka's
//! ZooKeeper-mode brokers do. A request without partitions means every partition, and then
//! partitions that needed no election are left out of the answer.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;
use kbroker_storage::TopicPartition;

use super::{decode, respond, respond_later, topic_name, HandlerResult, RequestContext};
use crate::broker::Broker;
use crate::controller::ElectionResults;

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<ElectLeadersRequest>(&mut body, ctx.version, responder)?;
    // v0 has no election type: preferred.
    let election_type = if ctx.version >= 1 {
        request.election_type
    } else {
        PREFERRED
    };
    let requested: Option<Vec<TopicPartition>> = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| TopicPartition::new(&t.topic.0, *p))
            })
            .collect()
    });
    if election_type != PREFERRED && election_type != UNCLEAN {
        let all = requested.clone().unwrap_or_default();
        let results = all
            .into_iter()
            .map(|tp| {
                (
                    tp,
                    ResponseError::InvalidRequest.code(),
                    Some("unknown election type".to_string()),
                )
            })
            .collect();
        let response = build(results, ResponseError::InvalidRequest.code(), false);
        return respond(ctx, responder, &response);
    }
    let filter_not_needed = requested.is_none();
    let Some(controller) = broker.controller().filter(|c| c.is_active()) else {
        let results = not_controller(requested.unwrap_or_default());
        return respond(ctx, responder, &build(results, 0, false));
    };
    let send = respond_later::<ElectLeadersResponse>(ctx, responder);
    let fallback = requested.clone().unwrap_or_default();
    controller.elect_leaders(
        requested,
        election_type == UNCLEAN,
        Box::new(move |outcome| {
            let results = match outcome {
                Ok(results) => results,
                Err(code) => fallback.into_iter().map(|tp| (tp, code, None)).collect(),
            };
            send(build(results, 0, filter_not_needed));
        }),
    );
    Ok(())
}

fn not_controller(partitions: Vec<TopicPartition>) -> ElectionResults {
    partitions
        .into_iter()
        .map(|tp| (tp, ResponseError::NotController.code(), None))
        .collect()
}

fn build(
    results: ElectionResults,
    error_code: i16,
    filter_not_needed: bool,
) -> ElectLeadersResponse {
    let not_needed = ResponseError::ElectionNotNeeded.code();
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (tp, code, message) in results {
        if filter_not_needed && code == not_needed {
            continue;
        }
        by_topic.entry(tp.topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(tp.partition)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    ElectLeadersResponse::default()
        .with_error_code(error_code)
        .with_replica_election_results(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    ReplicaElectionResult::default()
                        .with_topic(topic_name(&topic))
                        .with_partition_result(partitions)
                })
                .collect(),
        )
}

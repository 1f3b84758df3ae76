//! DescribeProducers (KIP-664): the idempotent producers a partition knows — what
//! `kafka-transactions.sh describe-producers` and the admin client's `describeProducers`
//! show. Answered by any replica holding the log (Kafka does not require the leader).

use bytes::Bytes;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;
use kbroker_storage::manager::lock;

use super::{decode, respond, storage_error_code, HandlerResult, RequestContext};
use crate::broker::Broker;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) =
        decode::<DescribeProducersRequest>(&mut body, ctx.version, responder)?;
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let known = broker.metadata.topic(&t.name.0);
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&index| {
                    let mut r = PartitionResponse::default().with_partition_index(index);
                    let tp = kbroker_storage::TopicPartition::new(&t.name.0, index);
                    let Some(p) = broker.replicas.partition(&tp) else {
                        r.error_code =
                            if known.as_ref().is_some_and(|k| k.partition(index).is_some()) {
                                ResponseError::NotLeaderOrFollower.code()
                            } else {
                                ResponseError::UnknownTopicOrPartition.code()
                            };
                        return r;
                    };
                    let Some(log) = &p.log else {
                        r.error_code = ResponseError::KafkaStorageError.code();
                        return r;
                    };
                    match lock(log).and_then(|l| l.check_online().map(|()| l.producers())) {
                        Ok(producers) => {
                            r.active_producers = producers
                                .iter()
                                .map(|e| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(e.producer_id))
                                        .with_producer_epoch(e.epoch as i32)
                                        .with_last_sequence(e.last_seq())
                                        .with_last_timestamp(e.last_timestamp)
                                        .with_coordinator_epoch(e.coordinator_epoch)
                                        .with_current_txn_start_offset(-1)
                                })
                                .collect();
                        }
                        Err(e) => r.error_code = storage_error_code(&e),
                    }
                    r
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    respond(
        ctx,
        responder,
        &DescribeProducersResponse::default().with_topics(topics),
    )
}

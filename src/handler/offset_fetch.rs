//! OffsetFetch: committed offsets of a group (-1 where nothing was committed); all of them
//! when `topics` is null (v2+). v0 reads Kafka 0.8's ZooKeeper paths (on the admin thread).
//! From v8 one request asks for several groups (KIP-709), each answered with its own error;
//! v9's member id and epoch belong to KIP-848 consumer groups and are not checked for the
//! classic groups kbroker runs (as Kafka 3.9 does not).

use bytes::Bytes;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};
use kafka_protocol::protocol::StrBytes;
use kbroker_reactor::Responder;

use super::find_coordinator::check_coordinator;
use super::metadata::topic_name;
use super::{decode, respond, respond_later, HandlerResult, RequestContext};
use crate::broker::Broker;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<OffsetFetchRequest>(&mut body, ctx.version, responder)?;
    let group_id = request.group_id.0.to_string();
    let v = ctx.version;
    if v == 0 {
        // Kafka 0.8's znodes, read on the admin thread; answered from there.
        let wanted: Vec<(String, Vec<i32>)> = request
            .topics
            .iter()
            .flatten()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect();
        let send = respond_later::<OffsetFetchResponse>(ctx, responder);
        broker.admin.with_store(Box::new(move |store| {
            let committed = |topic: &str, partition: i32| {
                let store = store?;
                kbroker_coordinator::cluster::read_consumer_offset(
                    store, &group_id, topic, partition,
                )
                .ok()
                .flatten()
                .map(|o| (o, -1, String::new()))
            };
            send(response(0, wanted, None, committed));
        }));
        return Ok(());
    }
    if v >= 8 {
        let groups = request
            .groups
            .iter()
            .map(|g| {
                let group_id = g.group_id.0.to_string();
                let wanted = g.topics.as_ref().map(|topics| {
                    topics
                        .iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let (wanted, error) = group_request(broker, &group_id, wanted);
                let single = response(v, wanted, error, |t, p| committed(broker, &group_id, t, p));
                batched_group(g.group_id.clone(), single)
            })
            .collect();
        return respond(
            ctx,
            responder,
            &OffsetFetchResponse::default().with_groups(groups),
        );
    }
    let wanted = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let (wanted, error) = group_request(broker, &group_id, wanted);
    let body = response(v, wanted, error, |t, p| committed(broker, &group_id, t, p));
    respond(ctx, responder, &body)
}

/// What one group is asked for (every committed partition when `wanted` is `None`), and the
/// error it is answered with if this broker cannot answer for it.
fn group_request(
    broker: &Broker,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> (Vec<(String, Vec<i32>)>, Option<i16>) {
    let error = check_coordinator(broker, group_id);
    let wanted = wanted.unwrap_or_else(|| {
        let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
        broker.groups.with_group(group_id, |g| {
            for (t, p) in g.offsets.keys() {
                by_topic.entry(t.clone()).or_default().push(*p);
            }
        });
        by_topic.into_iter().collect()
    });
    (wanted, error)
}

/// The offset, leader epoch and metadata `group_id` committed for a partition.
fn committed(
    broker: &Broker,
    group_id: &str,
    topic: &str,
    partition: i32,
) -> Option<(i64, i32, String)> {
    broker
        .groups
        .with_group(group_id, |g| {
            g.offsets
                .get(&(topic.to_string(), partition))
                .map(|o| (o.offset, o.leader_epoch, o.metadata.clone()))
        })
        .flatten()
}

/// One group of a v8+ response, from the single-group form of the same answer.
fn batched_group(group_id: GroupId, single: OffsetFetchResponse) -> OffsetFetchResponseGroup {
    let topics = single
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(p.partition_index)
                        .with_committed_offset(p.committed_offset)
                        .with_committed_leader_epoch(p.committed_leader_epoch)
                        .with_metadata(p.metadata)
                        .with_error_code(p.error_code)
                })
                .collect();
            OffsetFetchResponseTopics::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponseGroup::default()
        .with_group_id(group_id)
        .with_topics(topics)
        .with_error_code(single.error_code)
}

/// The response for `wanted` partitions, offsets from `committed` (none under `error`).
fn response(
    v: i16,
    wanted: Vec<(String, Vec<i32>)>,
    error: Option<i16>,
    committed: impl Fn(&str, i32) -> Option<(i64, i32, String)>,
) -> OffsetFetchResponse {
    let topics = wanted
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|p| {
                    let (offset, epoch, metadata) = if error.is_some() {
                        None
                    } else {
                        committed(&topic, p)
                    }
                    .unwrap_or((-1, -1, String::new()));
                    let mut r = OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_metadata(Some(StrBytes::from_string(metadata)));
                    if v >= 5 {
                        r.committed_leader_epoch = epoch;
                    }
                    if v < 2 {
                        r.error_code = error.unwrap_or(0);
                    }
                    r
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&topic))
                .with_partitions(partitions)
        })
        .collect();
    let mut response = OffsetFetchResponse::default().with_topics(topics);
    if v >= 2 {
        response.error_code = error.unwrap_or(0);
    }
    response
}

//! OffsetFetch: committed offsets of a group (-1 where nothing was committed); all of them
//! when `topics` is null (v2+). v0 reads Kafka 0.8's ZooKeeper paths (on the admin thread).

use bytes::Bytes;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};
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
    let error = check_coordinator(broker, &group_id);
    let committed = |topic: &str, partition: i32| -> Option<(i64, i32, String)> {
        broker
            .groups
            .with_group(&group_id, |g| {
                g.offsets
                    .get(&(topic.to_string(), partition))
                    .map(|o| (o.offset, o.leader_epoch, o.metadata.clone()))
            })
            .flatten()
    };
    let wanted: Vec<(String, Vec<i32>)> = match &request.topics {
        Some(topics) => topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
            broker.groups.with_group(&group_id, |g| {
                for (t, p) in g.offsets.keys() {
                    by_topic.entry(t.clone()).or_default().push(*p);
                }
            });
            by_topic.into_iter().collect()
        }
    };
    respond(ctx, responder, &response(v, wanted, error, committed))
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

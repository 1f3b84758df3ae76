//! OffsetCommit: validate the member and generation, append the offsets to the group's
//! `__consumer_offsets` partition, then acknowledge once the partition's ISR has them (the
//! cache is updated then, too). v0 writes Kafka 0.8's ZooKeeper paths
//! `/consumers/{group}/offsets/{topic}/{partition}` instead, as Kafka's v0 did.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;
use kbroker_coordinator::group::GroupError;
use kbroker_coordinator::offsets::{OffsetValue, OffsetsKey};
use kbroker_reactor::Responder;

use super::find_coordinator::check_coordinator;
use super::{commit_error, group_error_code};
use super::{decode, respond, respond_later, HandlerResult, RequestContext};
use crate::broker::{now_ms, Broker};
use crate::groups::{GroupCoordinator, GroupEntry, MirrorOp};
use kbroker_coordinator::MetadataStore;

/// Kafka's `offset.metadata.max.bytes` default.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<OffsetCommitRequest>(&mut body, ctx.version, responder)?;
    let group_id = request.group_id.0.to_string();
    let mut group_error = check_coordinator(broker, &group_id).filter(|_| ctx.version > 0);
    let coordinator = &broker.groups;
    let now = now_ms();
    // Per partition: (topic, partition, error code, value to write).
    let mut plan: Plan = Vec::new();
    for t in &request.topics {
        let topic = t.name.0.to_string();
        let known = broker.metadata.topic(&topic);
        for p in &t.partitions {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let code = if known.as_ref().is_none_or(|i| {
                p.partition_index < 0 || p.partition_index as usize >= i.partitions.len()
            }) {
                ResponseError::UnknownTopicOrPartition.code()
            } else if metadata.len() > OFFSET_METADATA_MAX_BYTES {
                ResponseError::OffsetMetadataTooLarge.code()
            } else {
                0
            };
            let timestamp = if ctx.version == 1 && p.commit_timestamp >= 0 {
                p.commit_timestamp
            } else {
                now
            };
            let value = OffsetValue {
                offset: p.committed_offset,
                leader_epoch: if ctx.version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata,
                commit_timestamp_ms: timestamp,
            };
            plan.push((
                topic.clone(),
                p.partition_index,
                code,
                (code == 0).then_some(value),
            ));
        }
    }
    if ctx.version == 0 {
        // Kafka 0.8's znodes, written on the admin thread; answered from there.
        let send = respond_later::<OffsetCommitResponse>(ctx, responder);
        broker.admin.with_store(Box::new(move |store| {
            commit_v0(store, &group_id, &mut plan);
            send(response(plan, None));
        }));
        return Ok(());
    }
    if group_error.is_none() {
        // The group's own lock, held across the append (records of one group go to the
        // log in the order they were validated); no lock is held while replicating.
        let commit = |entry: &mut GroupEntry| {
            validate_member(entry, &request, ctx.version).map_err(group_error_code)?;
            let records: Vec<_> = plan
                .iter()
                .filter_map(|(t, p, _, v)| {
                    v.as_ref().map(|v| {
                        (
                            OffsetsKey::Offset {
                                group: group_id.clone(),
                                topic: t.clone(),
                                partition: *p,
                            },
                            Some(v.encode()),
                        )
                    })
                })
                .collect();
            coordinator.append(&group_id, records).map_err(|e| {
                log::warn!("offset commit group={group_id} failed: {e}");
                ResponseError::CoordinatorNotAvailable.code()
            })
        };
        // Kafka: a commit without a generation to an unknown group makes a group that only
        // stores offsets; one naming a generation is from a group that is not here (an
        // older coordinator's, or expired): ILLEGAL_GENERATION, and no group is made.
        let appended = if ctx.version >= 1 && request.generation_id_or_member_epoch >= 0 {
            coordinator
                .with_group(&group_id, commit)
                .unwrap_or(Err(ResponseError::IllegalGeneration.code()))
        } else {
            coordinator.with_group_or_create(&group_id, commit)
        };
        match appended {
            Ok(Some(appended)) => {
                // Kafka's acks=-1 for offsets: the cache and the answer wait until the
                // offsets partition's ISR has the records.
                let send = respond_later::<OffsetCommitResponse>(ctx, responder);
                let shared = Arc::clone(coordinator);
                coordinator.when_replicated(
                    appended,
                    Box::new(move |code| {
                        let code = commit_error(code);
                        if code == 0 {
                            remember(&shared, &group_id, &plan);
                        } else {
                            log::warn!(
                                "offset commit group={group_id} not replicated: error {code}"
                            );
                        }
                        send(response(plan, (code != 0).then_some(code)));
                    }),
                );
                return Ok(());
            }
            Ok(None) => {}
            Err(code) => group_error = Some(code),
        }
    }
    respond(ctx, responder, &response(plan, group_error))
}

/// Committed offsets go into the cache (and the metadata mirror) once replicated.
fn remember(coordinator: &GroupCoordinator, group_id: &str, plan: &Plan) {
    coordinator.with_group_or_create(group_id, |entry| {
        for (t, p, _, v) in plan {
            if let Some(v) = v {
                entry.offsets.insert((t.clone(), *p), v.clone());
                coordinator.mirror(MirrorOp::Offset {
                    group: group_id.to_string(),
                    topic: t.clone(),
                    partition: *p,
                    offset: v.offset,
                });
            }
        }
    });
}

type Plan = Vec<(String, i32, i16, Option<OffsetValue>)>;

fn response(plan: Plan, group_error: Option<i16>) -> OffsetCommitResponse {
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
    for (t, p, code, _) in plan {
        let code = if code != 0 {
            code
        } else {
            group_error.unwrap_or(0)
        };
        let part = OffsetCommitResponsePartition::default()
            .with_partition_index(p)
            .with_error_code(code);
        match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(super::metadata::topic_name(&t))
                    .with_partitions(vec![part]),
            ),
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}

fn validate_member(
    entry: &mut GroupEntry,
    request: &OffsetCommitRequest,
    version: i16,
) -> Result<(), GroupError> {
    let generation = if version >= 1 {
        request.generation_id_or_member_epoch
    } else {
        -1
    };
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
    entry.group.validate_commit(
        &request.member_id,
        generation,
        instance.as_deref(),
        now_ms(),
    )
}

fn commit_v0(store: Option<&dyn MetadataStore>, group: &str, plan: &mut Plan) {
    for (topic, partition, code, value) in plan.iter_mut() {
        if let Some(v) = value {
            let Some(store) = store else {
                *code = ResponseError::CoordinatorNotAvailable.code();
                continue;
            };
            if let Err(e) = kbroker_coordinator::cluster::write_consumer_offset(
                store, group, topic, *partition, v.offset,
            ) {
                log::warn!("v0 offset commit group={group} failed: {e}");
                *code = ResponseError::UnknownServerError.code();
            }
        }
    }
}

//! DescribeLogDirs (`kafka-log-dirs`, the admin client's `describeLogDirs`): for each
//! configured log dir, the size of every asked-for partition held there, and (v4) the file
//! system's total and usable bytes. An offline dir is answered KAFKA_STORAGE_ERROR with
//! nothing else, as Kafka does. kbroker has no future replicas (no intra-broker moves), so
//! `is_future_key` is false and the offset lag is how far the log end is behind the high
//! watermark (0 once caught up).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use kbroker_reactor::Responder;
use kbroker_storage::manager::lock;
use kbroker_storage::TopicPartition;

use super::{decode, respond, topic_name, HandlerResult, RequestContext};
use crate::broker::Broker;

/// One log dir's partitions: topic -> (partition, size in bytes, offset lag).
type HeldTopics = BTreeMap<String, Vec<(i32, i64, i64)>>;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (request, responder) = decode::<DescribeLogDirsRequest>(&mut body, ctx.version, responder)?;
    // None: every partition this broker holds.
    let wanted: Option<BTreeSet<TopicPartition>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| TopicPartition::new(&t.topic.0, *p))
            })
            .collect()
    });
    let logs = &broker.replicas.logs;
    let offline = logs.offline_dirs();
    let mut held: BTreeMap<std::path::PathBuf, HeldTopics> = BTreeMap::new();
    for (tp, log) in logs.all() {
        if wanted.as_ref().is_some_and(|w| !w.contains(&tp)) {
            continue;
        }
        let Ok(log) = lock(&log) else {
            continue;
        };
        let Some(dir) = log.dir().parent().map(std::path::Path::to_path_buf) else {
            continue;
        };
        let lag = (log.high_watermark() - log.log_end_offset()).max(0);
        held.entry(dir)
            .or_default()
            .entry(tp.topic.clone())
            .or_default()
            .push((tp.partition, log.size_bytes() as i64, lag));
    }
    let results = logs
        .dirs()
        .iter()
        .map(|dir| {
            let path = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            let mut r = DescribeLogDirsResult::default()
                .with_log_dir(StrBytes::from_string(path.display().to_string()));
            if offline.contains(dir) {
                r.error_code = ResponseError::KafkaStorageError.code();
                return r;
            }
            if ctx.version >= 4 {
                let (total, usable) = space(dir);
                r.total_bytes = total;
                r.usable_bytes = usable;
            }
            r.topics = held
                .get(dir)
                .into_iter()
                .flatten()
                .map(|(topic, partitions)| {
                    let mut partitions = partitions.clone();
                    partitions.sort_unstable();
                    DescribeLogDirsTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(index, size, lag)| {
                                    DescribeLogDirsPartition::default()
                                        .with_partition_index(index)
                                        .with_partition_size(size)
                                        .with_offset_lag(lag)
                                })
                                .collect(),
                        )
                })
                .collect();
            r
        })
        .collect();
    respond(
        ctx,
        responder,
        &DescribeLogDirsResponse::default().with_results(results),
    )
}

/// Total and usable bytes of the file system holding `dir` (-1 each if it cannot be read).
fn space(dir: &std::path::Path) -> (i64, i64) {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => {
            let block = s.fragment_size() as i64;
            (
                (s.blocks() as i64).saturating_mul(block),
                (s.blocks_available() as i64).saturating_mul(block),
            )
        }
        Err(_) => (-1, -1),
    }
}

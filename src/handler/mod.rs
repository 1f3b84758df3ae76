//! Request dispatch: decode the header, check the version, hand the body to the API's file,
//! encode the response. The only place Kafka error codes are produced.
//!
//! Each API lives in its own file: decode → act → encode. A request that cannot be decoded,
//! an unknown API key or an unsupported version of anything but ApiVersions closes the
//! connection (as Kafka does); ApiVersions answers UNSUPPORTED_VERSION with a v0 body.

mod alter_configs;
mod api_versions;
mod client_quotas;
mod controlled_shutdown;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_producers;
mod elect_leaders;
pub mod fetch;
pub mod fetch_writer;
mod find_coordinator;
mod heartbeat;
mod init_producer_id;
pub mod join_group;
mod leader_and_isr;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod partition_reassignments;
mod produce;
mod scram_credentials;
mod stop_replica;
pub mod sync_group;
pub mod update_metadata;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;
use kbroker_coordinator::group::{GroupError, JoinResult, SyncResult};
use kbroker_reactor::{Chunk, Request, RequestHandler, Responder, Response};

use crate::admin::AdminError;
use crate::broker::Broker;
use crate::replica_manager::LookupError;

pub use api_versions::SUPPORTED_APIS;

/// What a handler knows about the request it serves.
pub struct RequestContext {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub version: i16,
    pub peer: std::net::SocketAddr,
}

pub struct KafkaHandler {
    pub broker: Arc<Broker>,
}

/// The replies of JoinGroup and SyncGroup requests the group coordinator parked.
pub struct GroupReplies;

impl crate::groups::GroupReplies for GroupReplies {
    fn join(&self, pending: crate::groups::PendingReply, result: &JoinResult) {
        join_group::send(pending, result);
    }

    fn sync(&self, pending: crate::groups::PendingReply, result: &SyncResult) {
        sync_group::send(pending, result);
    }
}

impl RequestHandler for KafkaHandler {
    fn handle(&self, request: Request, responder: Responder) {
        let frame = request.frame.clone();
        if frame.len() < 8 {
            log::debug!("request too short peer={}", request.peer);
            return responder.respond(Response::Close);
        }
        let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let Ok(api_key) = ApiKey::try_from(api_key_raw) else {
            log::warn!(
                "unknown api key {api_key_raw} from peer={}; closing",
                request.peer
            );
            return responder.respond(Response::Close);
        };
        if !api_versions::is_supported(api_key, version) {
            if api_key == ApiKey::ApiVersions {
                let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                return responder
                    .respond(api_versions::unsupported_version_response(correlation_id));
            }
            log::warn!(
                "unsupported version api={api_key:?} version={version} peer={}; closing",
                request.peer
            );
            return responder.respond(Response::Close);
        }
        let mut body = frame;
        let header = match RequestHeader::decode(&mut body, api_key.request_header_version(version))
        {
            Ok(h) => h,
            Err(e) => {
                log::warn!(
                    "bad request header api={api_key:?} peer={}: {e}; closing",
                    request.peer
                );
                return responder.respond(Response::Close);
            }
        };
        let ctx = RequestContext {
            header,
            api_key,
            version,
            peer: request.peer,
        };
        log::trace!(
            "request api={:?} version={} correlation_id={} peer={}",
            api_key,
            version,
            ctx.header.correlation_id,
            ctx.peer
        );
        let broker = &self.broker;
        let outcome = match api_key {
            ApiKey::ApiVersions => api_versions::handle(broker, &ctx, body, responder),
            ApiKey::Metadata => metadata::handle(broker, &ctx, body, responder),
            ApiKey::Produce => produce::handle(broker, &ctx, body, responder),
            ApiKey::Fetch => fetch::handle(broker, &ctx, body, responder),
            ApiKey::ListOffsets => list_offsets::handle(broker, &ctx, body, responder),
            ApiKey::CreateTopics => create_topics::handle(broker, &ctx, body, responder),
            ApiKey::DeleteTopics => delete_topics::handle(broker, &ctx, body, responder),
            ApiKey::DeleteRecords => delete_records::handle(broker, &ctx, body, responder),
            ApiKey::InitProducerId => init_producer_id::handle(broker, &ctx, body, responder),
            ApiKey::DescribeProducers => describe_producers::handle(broker, &ctx, body, responder),
            ApiKey::CreatePartitions => create_partitions::handle(broker, &ctx, body, responder),
            ApiKey::DescribeConfigs => describe_configs::handle(broker, &ctx, body, responder),
            ApiKey::AlterConfigs => alter_configs::handle_alter(broker, &ctx, body, responder),
            ApiKey::IncrementalAlterConfigs => {
                alter_configs::handle_incremental(broker, &ctx, body, responder)
            }
            ApiKey::DescribeClientQuotas => {
                client_quotas::handle_describe(broker, &ctx, body, responder)
            }
            ApiKey::AlterClientQuotas => client_quotas::handle_alter(broker, &ctx, body, responder),
            ApiKey::DescribeUserScramCredentials => {
                scram_credentials::handle(broker, &ctx, body, responder)
            }
            ApiKey::DescribeCluster => describe_cluster::handle(broker, &ctx, body, responder),
            ApiKey::DescribeLogDirs => describe_log_dirs::handle(broker, &ctx, body, responder),
            ApiKey::FindCoordinator => find_coordinator::handle(broker, &ctx, body, responder),
            ApiKey::JoinGroup => join_group::handle(broker, &ctx, body, responder),
            ApiKey::SyncGroup => sync_group::handle(broker, &ctx, body, responder),
            ApiKey::Heartbeat => heartbeat::handle(broker, &ctx, body, responder),
            ApiKey::LeaveGroup => leave_group::handle(broker, &ctx, body, responder),
            ApiKey::OffsetCommit => offset_commit::handle(broker, &ctx, body, responder),
            ApiKey::OffsetFetch => offset_fetch::handle(broker, &ctx, body, responder),
            ApiKey::OffsetDelete => offset_delete::handle(broker, &ctx, body, responder),
            ApiKey::OffsetForLeaderEpoch => {
                offset_for_leader_epoch::handle(broker, &ctx, body, responder)
            }
            ApiKey::DescribeGroups => describe_groups::handle(broker, &ctx, body, responder),
            ApiKey::ListGroups => list_groups::handle(broker, &ctx, body, responder),
            ApiKey::DeleteGroups => delete_groups::handle(broker, &ctx, body, responder),
            ApiKey::LeaderAndIsr => leader_and_isr::handle(broker, &ctx, body, responder),
            ApiKey::UpdateMetadata => update_metadata::handle(broker, &ctx, body, responder),
            ApiKey::StopReplica => stop_replica::handle(broker, &ctx, body, responder),
            ApiKey::ControlledShutdown => {
                controlled_shutdown::handle(broker, &ctx, body, responder)
            }
            ApiKey::ElectLeaders => elect_leaders::handle(broker, &ctx, body, responder),
            ApiKey::AlterPartitionReassignments => {
                partition_reassignments::handle_alter(broker, &ctx, body, responder)
            }
            ApiKey::ListPartitionReassignments => {
                partition_reassignments::handle_list(broker, &ctx, body, responder)
            }
            _ => Err(HandlerError::Unsupported(responder)),
        };
        match outcome {
            Ok(()) => {}
            Err(HandlerError::Decode(responder, e)) => {
                log::warn!(
                    "cannot decode {api_key:?} v{version} from peer={}: {e}; closing",
                    ctx.peer
                );
                responder.respond(Response::Close);
            }
            Err(HandlerError::Unsupported(responder)) => {
                log::warn!(
                    "api {api_key:?} is not implemented; closing peer={}",
                    ctx.peer
                );
                responder.respond(Response::Close);
            }
        }
    }
}

/// A request the handler could not serve at all: the connection is closed.
pub enum HandlerError {
    Decode(Responder, anyhow_free::DecodeError),
    Unsupported(Responder),
}

pub mod anyhow_free {
    /// A body that did not decode, with the decoder's message.
    #[derive(Debug)]
    pub struct DecodeError(pub String);
    impl std::fmt::Display for DecodeError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
}

pub type HandlerResult = Result<(), HandlerError>;

/// Decodes a whole request frame (header and body, no size prefix) the way dispatch does —
/// advertised API and version only — without acting on it. For fuzzing and decode bounds.
pub fn decode_frame(
    frame: Bytes,
) -> Result<(RequestHeader, kafka_protocol::messages::RequestKind), String> {
    if frame.len() < 8 {
        return Err("frame shorter than a request header".into());
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key =
        ApiKey::try_from(api_key_raw).map_err(|_| format!("unknown api key {api_key_raw}"))?;
    if !api_versions::is_supported(api_key, version) {
        return Err(format!("unsupported version {api_key:?} v{version}"));
    }
    let mut body = frame;
    let header = RequestHeader::decode(&mut body, api_key.request_header_version(version))
        .map_err(|e| e.to_string())?;
    let request = kafka_protocol::messages::RequestKind::decode(api_key, &mut body, version)
        .map_err(|e| e.to_string())?;
    Ok((header, request))
}

/// Decodes a request body, or hands back the responder so the caller closes the connection.
pub fn decode<T: Decodable>(
    body: &mut Bytes,
    version: i16,
    responder: Responder,
) -> Result<(T, Responder), HandlerError> {
    match T::decode(body, version) {
        Ok(t) => Ok((t, responder)),
        Err(e) => Err(HandlerError::Decode(
            responder,
            anyhow_free::DecodeError(e.to_string()),
        )),
    }
}

/// Encodes `size | response header | body` into one buffer.
pub fn encode_response<T: Encodable>(ctx: &RequestContext, body: &T) -> Result<Bytes, String> {
    let header_version = if ctx.api_key == ApiKey::ApiVersions {
        0
    } else {
        ctx.api_key.response_header_version(ctx.version)
    };
    encode_with_header(ctx.header.correlation_id, header_version, ctx.version, body)
}

pub fn encode_with_header<T: Encodable>(
    correlation_id: i32,
    header_version: i16,
    version: i16,
    body: &T,
) -> Result<Bytes, String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header
        .compute_size(header_version)
        .map_err(|e| e.to_string())?
        + body.compute_size(version).map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| e.to_string())?;
    body.encode(&mut buf, version).map_err(|e| e.to_string())?;
    assert_eq!(buf.len(), 4 + size, "computed size matches encoded size");
    Ok(buf.freeze())
}

/// A topic name for a response.
pub fn topic_name(name: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(
        name.to_string(),
    ))
}

/// A function that sends the response of the request in `ctx` later (from another thread:
/// a delayed operation, the replica state thread).
pub fn respond_later<T: Encodable>(
    ctx: &RequestContext,
    responder: Responder,
) -> impl FnOnce(T) + Send + 'static {
    let header_version = if ctx.api_key == ApiKey::ApiVersions {
        0
    } else {
        ctx.api_key.response_header_version(ctx.version)
    };
    let (correlation_id, version, api) = (ctx.header.correlation_id, ctx.version, ctx.api_key);
    move |body: T| match encode_with_header(correlation_id, header_version, version, &body) {
        Ok(bytes) => responder.respond(Response::Send(vec![Chunk::Bytes(bytes)])),
        Err(e) => {
            log::error!("encoding {api:?} v{version} response failed: {e}");
            responder.respond(Response::Close);
        }
    }
}

/// Sends an encoded response; an encoding failure is a bug in the handler, logged, and the
/// connection is closed rather than sent garbage.
pub fn respond<T: Encodable>(
    ctx: &RequestContext,
    responder: Responder,
    body: &T,
) -> HandlerResult {
    match encode_response(ctx, body) {
        Ok(bytes) => responder.respond(Response::Send(vec![Chunk::Bytes(bytes)])),
        Err(e) => {
            log::error!(
                "encoding {:?} v{} response failed: {e}",
                ctx.api_key,
                ctx.version
            );
            responder.respond(Response::Close);
        }
    }
    Ok(())
}

/// KIP-320's fencing of a request that names the leader epoch it expects: FENCED_LEADER_EPOCH
/// if the client's is older than the leader's, UNKNOWN_LEADER_EPOCH if newer (-1: not
/// checked, as old versions send).
pub fn leader_epoch_error(current_leader_epoch: i32, leader_epoch: i32) -> Option<i16> {
    use std::cmp::Ordering::*;
    match current_leader_epoch.cmp(&leader_epoch) {
        _ if current_leader_epoch < 0 => None,
        Equal => None,
        Less => Some(ResponseError::FencedLeaderEpoch.code()),
        Greater => Some(ResponseError::UnknownLeaderEpoch.code()),
    }
}

pub fn lookup_error_code(e: LookupError) -> i16 {
    match e {
        LookupError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition.code(),
        LookupError::NotLeader => ResponseError::NotLeaderOrFollower.code(),
        LookupError::Offline => ResponseError::KafkaStorageError.code(),
    }
}

pub fn storage_error_code(e: &kbroker_storage::StorageError) -> i16 {
    use kbroker_storage::batch::BatchError as B;
    use kbroker_storage::StorageError as S;
    match e {
        S::InvalidBatch(b) => match b {
            B::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat.code(),
            B::Incomplete | B::Corrupt(_) => ResponseError::CorruptMessage.code(),
            B::Invalid(_) => ResponseError::InvalidRecord.code(),
            B::InvalidTimestamp(_) => ResponseError::InvalidTimestamp.code(),
            B::UnsupportedCompression => ResponseError::UnsupportedCompressionType.code(),
            B::TooLarge { .. } | B::DecompressedTooLarge => ResponseError::MessageTooLarge.code(),
        },
        S::Producer(p) => match p {
            kbroker_storage::producer_state::ProducerStateError::InvalidProducerEpoch {
                ..
            } => ResponseError::InvalidProducerEpoch.code(),
            kbroker_storage::producer_state::ProducerStateError::OutOfOrderSequence { .. } => {
                ResponseError::OutOfOrderSequenceNumber.code()
            }
        },
        S::RecordTooLarge { .. } => ResponseError::MessageTooLarge.code(),
        S::RecordListTooLarge { .. } => ResponseError::RecordListTooLarge.code(),
        S::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.code(),
        S::Io { .. } | S::Corrupt { .. } | S::Offline(_) | S::Inconsistent(_) => {
            ResponseError::KafkaStorageError.code()
        }
    }
}

pub fn admin_error_code(e: &AdminError) -> i16 {
    match e {
        AdminError::TopicExists(_) => ResponseError::TopicAlreadyExists.code(),
        AdminError::InvalidTopic(_) => ResponseError::InvalidTopicException.code(),
        AdminError::InvalidPartitions(_) => ResponseError::InvalidPartitions.code(),
        AdminError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor.code(),
        AdminError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment.code(),
        AdminError::InvalidConfig(_) => ResponseError::InvalidConfig.code(),
        AdminError::UnknownTopic => ResponseError::UnknownTopicOrPartition.code(),
        AdminError::DeletionDisabled => ResponseError::TopicDeletionDisabled.code(),
        AdminError::TimedOut | AdminError::Busy => ResponseError::RequestTimedOut.code(),
        AdminError::Store(_) => ResponseError::UnknownServerError.code(),
    }
}

/// Maps a group error to Kafka's error code.
pub fn group_error_code(e: GroupError) -> i16 {
    use kafka_protocol::ResponseError as E;
    match e {
        GroupError::UnknownMemberId => E::UnknownMemberId.code(),
        GroupError::MemberIdRequired => E::MemberIdRequired.code(),
        GroupError::IllegalGeneration => E::IllegalGeneration.code(),
        GroupError::RebalanceInProgress => E::RebalanceInProgress.code(),
        GroupError::InconsistentGroupProtocol => E::InconsistentGroupProtocol.code(),
        GroupError::InvalidSessionTimeout => E::InvalidSessionTimeout.code(),
        GroupError::GroupMaxSizeReached => E::GroupMaxSizeReached.code(),
        GroupError::FencedInstanceId => E::FencedInstanceId.code(),
        GroupError::CoordinatorNotAvailable => E::CoordinatorNotAvailable.code(),
        GroupError::NotCoordinator => E::NotCoordinator.code(),
    }
}

/// Kafka's `GroupMetadataManager` mapping of a failed offsets append to what the group's
/// client is told.
pub fn commit_error(code: i16) -> i16 {
    use kafka_protocol::ResponseError as E;
    match E::try_from_code(code) {
        None => 0,
        Some(
            E::UnknownTopicOrPartition
            | E::NotEnoughReplicas
            | E::NotEnoughReplicasAfterAppend
            | E::RequestTimedOut,
        ) => E::CoordinatorNotAvailable.code(),
        Some(E::NotLeaderOrFollower | E::KafkaStorageError) => E::NotCoordinator.code(),
        Some(E::MessageTooLarge | E::RecordListTooLarge | E::InvalidFetchSize) => {
            E::InvalidCommitOffsetSize.code()
        }
        Some(_) => code,
    }
}

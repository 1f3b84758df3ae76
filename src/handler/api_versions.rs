//! ApiVersions: the APIs and version ranges this broker implements.
//!
//! The ranges are a ZooKeeper-mode Kafka 3.9 broker's for every API implemented (clients
//! pick the newest version both sides know: @platformatic/kafka only speaks the newest;
//! kafka-python and aiokafka infer the broker release from the ranges), except Fetch,
//! whose minimum is 4: record batches v2 are the only stored format and kbroker does not
//! down-convert for Fetch v0-3 (Kafka 4.0 has the same minimum). Produce is advertised
//! from v0 because librdkafka disables compression otherwise; batches of magic < 2 are
//! refused per partition. The response header is always v0; an unsupported ApiVersions
//! version gets UNSUPPORTED_VERSION with a v0 body that lists what is supported.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;
use kbroker_reactor::{Chunk, Responder, Response};

use super::{decode, encode_with_header, respond, HandlerResult, RequestContext};
use crate::broker::Broker;

/// (api, min version, max version) — only APIs that work end to end.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 0, 9),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeLogDirs, 0, 4),
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 0, 9),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::OffsetForLeaderEpoch, 0, 4),
    // Inter-broker (controller) APIs, advertised as a ZooKeeper-mode Kafka 2.8 does.
    (ApiKey::LeaderAndIsr, 0, 7),
    (ApiKey::StopReplica, 0, 4),
    (ApiKey::UpdateMetadata, 0, 8),
    (ApiKey::ControlledShutdown, 0, 3),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
];

pub fn is_supported(api: ApiKey, version: i16) -> bool {
    SUPPORTED_APIS
        .iter()
        .any(|(k, min, max)| *k == api && (*min..=*max).contains(&version))
}

fn body(error: ResponseError) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|(k, min, max)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error.code())
        .with_api_keys(api_keys)
}

fn supported_body() -> ApiVersionsResponse {
    let mut b = body(ResponseError::UnsupportedVersion);
    b.error_code = 0;
    b
}

/// UNSUPPORTED_VERSION, v0 header and v0 body.
pub fn unsupported_version_response(correlation_id: i32) -> Response {
    match encode_with_header(
        correlation_id,
        0,
        0,
        &body(ResponseError::UnsupportedVersion),
    ) {
        Ok(bytes) => Response::Send(vec![Chunk::Bytes(bytes)]),
        Err(e) => {
            log::error!("encoding ApiVersions fallback failed: {e}");
            Response::Close
        }
    }
}

pub fn handle(
    _broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (_request, responder) = decode::<ApiVersionsRequest>(&mut body, ctx.version, responder)?;
    respond(ctx, responder, &supported_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertises_kafka_3_9_ranges_for_what_is_implemented() {
        assert!(is_supported(ApiKey::Produce, 0) && is_supported(ApiKey::Produce, 11));
        assert!(!is_supported(ApiKey::Produce, 12));
        assert!(!is_supported(ApiKey::Fetch, 3) && is_supported(ApiKey::Fetch, 17));
        assert!(is_supported(ApiKey::Metadata, 12) && !is_supported(ApiKey::Metadata, 13));
        assert!(is_supported(ApiKey::JoinGroup, 9) && !is_supported(ApiKey::JoinGroup, 10));
        assert!(
            is_supported(ApiKey::InitProducerId, 5) && !is_supported(ApiKey::InitProducerId, 6)
        );
        assert!(is_supported(ApiKey::DescribeProducers, 0));
        for (k, min, max) in SUPPORTED_APIS {
            let valid = k.valid_versions();
            assert!(
                valid.min <= *min && *max <= valid.max,
                "{k:?} within the crate's versions"
            );
        }
    }
}

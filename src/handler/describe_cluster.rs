//! DescribeCluster: cluster id, controller, brokers (from `/brokers/ids`).

use bytes::Bytes;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kbroker_reactor::Responder;

use super::{decode, respond, HandlerResult, RequestContext};
use crate::broker::Broker;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    responder: Responder,
) -> HandlerResult {
    let (_request, responder) =
        decode::<DescribeClusterRequest>(&mut body, ctx.version, responder)?;
    let brokers = super::metadata::live_brokers(broker)
        .into_iter()
        .map(|(id, host, port)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
        })
        .collect();
    let response = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.config.broker_id))
        .with_brokers(brokers);
    respond(ctx, responder, &response)
}

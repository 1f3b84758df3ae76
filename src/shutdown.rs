//! Controlled shutdown, the stopping broker's side: before it stops serving, a broker asks
//! the controller (ControlledShutdown) to move its leaderships to other in-sync replicas,
//! and retries until none remain or `controlled.shutdown.max.retries` attempts failed,
//! `controlled.shutdown.retry.backoff.ms` apart — Kafka's `KafkaServer.controlledShutdown`.
//! Runs on the shutdown thread; it may wait on the store and the network.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ControlledShutdownRequest, ControlledShutdownResponse, RequestHeader,
    ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kbroker_coordinator::cluster;

use crate::broker::Broker;

const VERSION: i16 = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// True once the controller reports no partition left to move.
pub fn run(broker: &Broker) -> bool {
    let attempts = broker.config.controlled_shutdown_max_retries + 1;
    for attempt in 1..=attempts {
        match attempt_once(broker) {
            Ok(0) => {
                log::info!("controlled shutdown succeeded: the controller moved every leadership away");
                return true;
            }
            Ok(remaining) => log::warn!(
                "controlled shutdown attempt {attempt}/{attempts}: {remaining} partitions still led here"
            ),
            Err(e) => log::warn!("controlled shutdown attempt {attempt}/{attempts} failed: {e}"),
        }
        if attempt < attempts {
            std::thread::sleep(Duration::from_millis(
                broker.config.controlled_shutdown_retry_backoff_ms,
            ));
        }
    }
    false
}

fn attempt_once(broker: &Broker) -> Result<usize, String> {
    let controller_id = cluster::current_controller(&*broker.store)
        .map_err(|e| e.to_string())?
        .ok_or("no controller")?;
    let me = broker.config.broker_id;
    let epoch = broker.replicas.broker_epoch();
    if controller_id == me {
        let controller = broker.controller().ok_or("controller not started")?;
        let (tx, rx) = mpsc::channel();
        controller.controlled_shutdown(
            me,
            epoch,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        return match rx.recv_timeout(ATTEMPT_TIMEOUT) {
            Ok(Ok(remaining)) => Ok(remaining.len()),
            Ok(Err(code)) => Err(format!("error code {code}")),
            Err(_) => Err("no answer from the local controller".into()),
        };
    }
    let node = broker
        .metadata
        .brokers()
        .into_iter()
        .find(|b| b.id == controller_id)
        .ok_or_else(|| format!("controller {controller_id} not in the metadata"))?;
    let request = ControlledShutdownRequest::default()
        .with_broker_id(BrokerId(me))
        .with_broker_epoch(epoch);
    let response =
        send(&format!("{}:{}", node.host, node.port), &request).map_err(|e| e.to_string())?;
    if response.error_code != 0 {
        return Err(format!("error code {}", response.error_code));
    }
    Ok(response.remaining_partitions.len())
}

fn send(
    addr: &str,
    request: &ControlledShutdownRequest,
) -> std::io::Result<ControlledShutdownResponse> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(ATTEMPT_TIMEOUT))?;
    s.set_write_timeout(Some(ATTEMPT_TIMEOUT))?;
    let api = ApiKey::ControlledShutdown;
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("controlled-shutdown")));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0u8; 4]);
    header
        .encode(&mut buf, api.request_header_version(VERSION))
        .map_err(|e| invalid(e.to_string()))?;
    request
        .encode(&mut buf, VERSION)
        .map_err(|e| invalid(e.to_string()))?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    s.write_all(&buf)?;
    let mut size = [0u8; 4];
    s.read_exact(&mut size)?;
    let n =
        usize::try_from(i32::from_be_bytes(size)).map_err(|_| invalid("negative size".into()))?;
    if n > 16 * 1024 * 1024 {
        return Err(invalid(format!("response of {n} bytes")));
    }
    let mut body = vec![0u8; n];
    s.read_exact(&mut body)?;
    let mut body = Bytes::from(body);
    ResponseHeader::decode(&mut body, api.response_header_version(VERSION))
        .map_err(|e| invalid(e.to_string()))?;
    ControlledShutdownResponse::decode(&mut body, VERSION).map_err(|e| invalid(e.to_string()))
}

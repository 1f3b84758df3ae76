//! A Kafka-protocol client for broker-to-broker requests (the controller's requests, the
//! follower fetchers): one blocking connection to one broker, one request in flight, Kafka's
//! framing and headers from the `kafka-protocol` crate. A failed exchange closes the
//! connection; the next request reconnects. Responses larger than
//! [`RESPONSE_BYTES_MAX`] are refused.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Largest response read (a fetch response is bounded by `replica.fetch.response.max.bytes`).
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct BrokerConnection {
    addr: String,
    client_id: String,
    timeout: Duration,
    stream: Option<TcpStream>,
    correlation_id: i32,
}

impl BrokerConnection {
    /// A connection to `addr` (`host:port`), opened on first use; `timeout` bounds each
    /// read and write.
    pub fn new(addr: String, client_id: String, timeout: Duration) -> BrokerConnection {
        BrokerConnection {
            addr,
            client_id,
            timeout,
            stream: None,
            correlation_id: 0,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn close(&mut self) {
        self.stream = None;
    }

    /// Sends `request` as `api` v`version` and decodes the response.
    pub fn send<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, String> {
        let mut body = self.exchange(api, version, |buf| {
            request.encode(buf, version).map_err(|e| e.to_string())
        })?;
        Resp::decode(&mut body, version).map_err(|e| format!("decoding the {api:?} response: {e}"))
    }

    /// Sends one request whose body `encode` writes; returns the response body (after its
    /// header). Closes the connection on any failure.
    pub fn exchange(
        &mut self,
        api: ApiKey,
        version: i16,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), String>,
    ) -> Result<Bytes, String> {
        let result = self.try_exchange(api, version, encode);
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn try_exchange(
        &mut self,
        api: ApiKey,
        version: i16,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), String>,
    ) -> Result<Bytes, String> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0u8; 4]);
        header
            .encode(&mut buf, api.request_header_version(version))
            .map_err(|e| e.to_string())?;
        encode(&mut buf)?;
        let size = i32::try_from(buf.len() - 4).map_err(|_| "request too large")?;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        if self.stream.is_none() {
            self.stream = Some(connect(&self.addr, self.timeout)?);
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(&buf).map_err(|e| e.to_string())?;
        let mut size = [0u8; 4];
        stream.read_exact(&mut size).map_err(|e| e.to_string())?;
        let n = usize::try_from(i32::from_be_bytes(size)).map_err(|_| "negative response size")?;
        if n > RESPONSE_BYTES_MAX {
            return Err(format!("a response of {n} bytes"));
        }
        let mut body = vec![0u8; n];
        stream.read_exact(&mut body).map_err(|e| e.to_string())?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|e| e.to_string())?;
        if header.correlation_id != correlation_id {
            return Err("correlation id mismatch".into());
        }
        Ok(body)
    }
}

fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))?;
    let s = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

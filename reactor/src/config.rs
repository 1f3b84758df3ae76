//! Reactor configuration: Kafka's socket-server settings under Kafka's names and defaults,
//! and the hard limits that bound them.
//!
//! [`ReactorConfig::validate`] is called by [`crate::SocketServer::start`]; a value outside
//! its limit is refused with an error naming Kafka's key. The limits are named constants
//! ending in `_MAX` / `_MIN`, with compile-time checks between the related ones.

use std::net::SocketAddr;

use crate::error::ReactorError;
use crate::frame::{FRAME_BYTES_MAX, FRAME_BYTES_MIN};

/// Upper bound on listeners (one acceptor thread each): `kb-acceptor-999` is 15 bytes.
pub const LISTENERS_MAX: usize = 64;
/// Upper bound on `num.network.threads`. Processor ids travel as `u16` in [`crate::ConnectionId`].
pub const NETWORK_THREADS_MAX: usize = 256;
/// Upper bound on `num.io.threads`: `kb-handler-1023` is exactly 15 bytes.
pub const IO_THREADS_MAX: usize = 1024;
/// Upper bound on `queued.max.requests` (the request channel's capacity).
pub const QUEUED_MAX_REQUESTS_MAX: usize = 1 << 20;
/// Upper bound on `connections.max.idle.ms`: one week.
pub const CONNECTIONS_MAX_IDLE_MS_MAX: u64 = 7 * 24 * 3600 * 1000;
/// `max.connections` above this is treated as this (Kafka's default is `i32::MAX`).
pub const CONNECTIONS_MAX: usize = i32::MAX as usize;
/// Linux's thread-name limit (`/proc/PID/task/*/comm`), without the trailing NUL.
pub const THREAD_NAME_BYTES_MAX: usize = 15;

const _: () = assert!("kb-acceptor-".len() + 3 <= THREAD_NAME_BYTES_MAX && LISTENERS_MAX <= 1000);
const _: () = assert!("kb-net-".len() + 3 <= THREAD_NAME_BYTES_MAX && NETWORK_THREADS_MAX <= 1000);
const _: () = assert!("kb-handler-".len() + 4 <= THREAD_NAME_BYTES_MAX && IO_THREADS_MAX <= 10_000);
const _: () = assert!(NETWORK_THREADS_MAX <= u16::MAX as usize);

/// The socket server's settings. Field names follow Kafka's keys with `.` → `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactorConfig {
    /// `listeners`: one acceptor thread each; port 0 picks a free port (see
    /// [`crate::SocketServer::local_addrs`]).
    pub listeners: Vec<SocketAddr>,
    /// `num.network.threads`: processors (Kafka default 3).
    pub num_network_threads: usize,
    /// `num.io.threads`: request handler threads (Kafka default 8).
    pub num_io_threads: usize,
    /// `queued.max.requests`: capacity of the request channel (Kafka default 500).
    pub queued_max_requests: usize,
    /// `socket.request.max.bytes`: the largest frame accepted (Kafka default 100 MiB).
    pub socket_request_max_bytes: usize,
    /// `max.connections`: total across listeners. At the limit acceptors pause and resume
    /// below 90 %.
    pub max_connections: usize,
    /// `max.connections.per.ip`: a new connection over this is closed at once.
    pub max_connections_per_ip: usize,
    /// `connections.max.idle.ms`: a connection with no traffic and no request in flight for
    /// this long is closed (Kafka default 10 minutes).
    pub connections_max_idle_ms: u64,
    /// `socket.send.buffer.bytes`: SO_SNDBUF of accepted sockets; -1 keeps the OS default.
    pub socket_send_buffer_bytes: i32,
    /// `socket.receive.buffer.bytes`: SO_RCVBUF of the listening socket (inherited by
    /// accepted sockets, so it applies to TCP window scaling); -1 keeps the OS default.
    pub socket_receive_buffer_bytes: i32,
}

impl Default for ReactorConfig {
    /// Kafka's defaults, listening on 127.0.0.1:9092.
    fn default() -> Self {
        ReactorConfig {
            listeners: vec![SocketAddr::from(([127, 0, 0, 1], 9092))],
            num_network_threads: 3,
            num_io_threads: 8,
            queued_max_requests: 500,
            socket_request_max_bytes: 104_857_600,
            max_connections: CONNECTIONS_MAX,
            max_connections_per_ip: CONNECTIONS_MAX,
            connections_max_idle_ms: 600_000,
            socket_send_buffer_bytes: 102_400,
            socket_receive_buffer_bytes: 102_400,
        }
    }
}

impl ReactorConfig {
    /// Checks every value against its limit; the error names Kafka's key.
    pub fn validate(&self) -> Result<(), ReactorError> {
        let listeners = self.listeners.len();
        check(
            "listeners",
            listeners,
            (1..=LISTENERS_MAX).contains(&listeners),
            "1 to 64 addresses",
        )?;
        let threads = self.num_network_threads;
        check(
            "num.network.threads",
            threads,
            (1..=NETWORK_THREADS_MAX).contains(&threads),
            "1 to 256",
        )?;
        let threads = self.num_io_threads;
        check(
            "num.io.threads",
            threads,
            (1..=IO_THREADS_MAX).contains(&threads),
            "1 to 1024",
        )?;
        let queued = self.queued_max_requests;
        let queued_ok = (1..=QUEUED_MAX_REQUESTS_MAX).contains(&queued);
        check("queued.max.requests", queued, queued_ok, "1 to 1048576")?;
        let frame = self.socket_request_max_bytes;
        let frame_ok = (FRAME_BYTES_MIN..=FRAME_BYTES_MAX).contains(&frame);
        check(
            "socket.request.max.bytes",
            frame,
            frame_ok,
            "8 to 2147483647",
        )?;
        check(
            "max.connections",
            self.max_connections,
            self.max_connections >= 1,
            "at least 1",
        )?;
        let per_ip = self.max_connections_per_ip;
        check("max.connections.per.ip", per_ip, per_ip >= 1, "at least 1")?;
        let idle = self.connections_max_idle_ms;
        let idle_ok = (1..=CONNECTIONS_MAX_IDLE_MS_MAX).contains(&idle);
        check("connections.max.idle.ms", idle, idle_ok, "1 ms to one week")?;
        let send = self.socket_send_buffer_bytes;
        check(
            "socket.send.buffer.bytes",
            send,
            send == -1 || send > 0,
            "-1 or positive",
        )?;
        let receive = self.socket_receive_buffer_bytes;
        check(
            "socket.receive.buffer.bytes",
            receive,
            receive == -1 || receive > 0,
            "-1 or positive",
        )
    }

    /// `max.connections`, capped at [`CONNECTIONS_MAX`].
    pub(crate) fn connections_total_max(&self) -> usize {
        self.max_connections.min(CONNECTIONS_MAX)
    }
}

fn check(
    key: &'static str,
    value: impl ToString,
    ok: bool,
    reason: &'static str,
) -> Result<(), ReactorError> {
    if ok {
        return Ok(());
    }
    Err(ReactorError::InvalidConfig {
        key,
        value: value.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas_and_valid() {
        let config = ReactorConfig::default();
        assert_eq!(config.num_network_threads, 3);
        assert_eq!(config.num_io_threads, 8);
        assert_eq!(config.queued_max_requests, 500);
        assert_eq!(config.socket_request_max_bytes, 104_857_600);
        config.validate().expect("defaults are valid");
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        let config = ReactorConfig {
            num_io_threads: 0,
            ..ReactorConfig::default()
        };
        let error = config.validate().expect_err("zero io threads");
        assert!(error.to_string().contains("num.io.threads=0"), "{error}");

        let config = ReactorConfig {
            socket_send_buffer_bytes: -2,
            ..ReactorConfig::default()
        };
        let error = config.validate().expect_err("negative buffer");
        assert!(
            error.to_string().contains("socket.send.buffer.bytes=-2"),
            "{error}"
        );

        let config = ReactorConfig {
            socket_request_max_bytes: 4,
            ..ReactorConfig::default()
        };
        let error = config.validate().expect_err("tiny frame limit");
        assert!(
            error.to_string().contains("socket.request.max.bytes"),
            "{error}"
        );
    }
}

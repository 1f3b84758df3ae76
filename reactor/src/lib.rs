//! kbroker's network layer: Kafka's `SocketServer` and `RequestChannel`, literally.
//!
//! One acceptor thread per listener accepts connections and hands them round-robin to
//! `num.network.threads` processors. A processor owns its connections in a mio `Poll`, reads
//! size-delimited frames, and puts each complete request into one bounded request channel
//! (`queued.max.requests`). `num.io.threads` handler threads take requests from it and call
//! the broker's [`RequestHandler`], which answers through a [`Responder`] — at once or later,
//! from any thread. The response goes to the owning processor's queue and wakes it; the
//! processor writes byte chunks with writev and file regions with sendfile(2).
//!
//! One request is in flight per connection: a complete request mutes its connection, and
//! only the written response (or `NoResponse`) unmutes it, so clients that pipeline get
//! their answers strictly in order. A full request channel never blocks a processor. A bad
//! frame, a socket error or a broker bug closes that one connection. The reactor knows
//! frames, not Kafka APIs.
//!
//! Nothing is persisted; after a crash clients reconnect.
//!
//! # Layout
//!
//! - `server.rs` — [`SocketServer`]: start-up and shutdown of all threads.
//! - `acceptor.rs` — `kb-acceptor-<i>`: accept, connection limits, hand-off.
//! - `processor.rs` — `kb-net-<i>`: the six-step network loop.
//! - `connection.rs` — one connection's state machine, the slab, [`ConnectionId`].
//! - `frame.rs` — size-prefixed frame decoding, sans I/O.
//! - `send.rs` — writing a response: writev and sendfile.
//! - `channel.rs` — the request channel and response queues.
//! - `handler_pool.rs` — `kb-handler-<i>`: the request handler threads.
//! - `request.rs` — [`Request`], [`Response`], [`Responder`], [`RequestTimings`].
//! - `quotas.rs` — `max.connections` and `max.connections.per.ip`.
//! - `config.rs`, `stats.rs`, `error.rs` — [`ReactorConfig`], [`ReactorStats`], [`ReactorError`].

#![warn(missing_docs)]

mod acceptor;
mod channel;
mod config;
mod connection;
mod error;
mod frame;
mod handler_pool;
mod processor;
mod quotas;
mod request;
mod send;
mod server;
mod stats;

pub use acceptor::{ACCEPT_PAUSED_POLL_MS, LISTEN_BACKLOG};
pub use config::{
    ReactorConfig, CONNECTIONS_MAX, CONNECTIONS_MAX_IDLE_MS_MAX, IO_THREADS_MAX, LISTENERS_MAX,
    NETWORK_THREADS_MAX, QUEUED_MAX_REQUESTS_MAX,
};
pub use connection::ConnectionId;
pub use error::ReactorError;
pub use frame::{
    Decoded, FrameError, FrameReceiver, FRAME_BYTES_MAX, FRAME_BYTES_MIN, FRAME_SIZE_PREFIX_BYTES,
    READ_CHUNK_BYTES_MAX,
};
pub use processor::{POLL_TIMEOUT_MS_MAX, SHUTDOWN_DRAIN_MS_MAX};
pub use request::{Chunk, Request, RequestHandler, RequestTimings, Responder, Response};
pub use send::ResponseError;
pub use server::SocketServer;
pub use stats::ReactorStats;

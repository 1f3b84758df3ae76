//! The reactor's one error type: what can go wrong while starting the socket server.
//!
//! Only start-up returns errors. Once running, every failure is confined to one connection
//! (bad frame, socket error, bad response): that connection is closed and logged, the rest
//! keep working, and nothing is returned to the caller.

use std::net::SocketAddr;

/// Why [`crate::SocketServer::start`] failed. Every message names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum ReactorError {
    /// A configuration value is outside its limits; `key` is Kafka's name for it.
    #[error("invalid reactor config {key}={value}: {reason}")]
    InvalidConfig {
        /// Kafka's config key, e.g. `num.network.threads`.
        key: &'static str,
        /// The rejected value, rendered.
        value: String,
        /// What the value must be.
        reason: &'static str,
    },
    /// A listener socket could not be created, configured, bound or put in listen mode.
    #[error("cannot listen on {addr}: {step}: {source}")]
    Listen {
        /// The configured listener address.
        addr: SocketAddr,
        /// The failing step (`socket`, `bind`, `listen`, ...).
        step: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A mio `Poll` or `Waker` could not be created for a thread.
    #[error("cannot create poll for {thread}: {source}")]
    Poll {
        /// The thread the poll was meant for.
        thread: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A thread could not be spawned.
    #[error("cannot spawn thread {thread}: {source}")]
    Spawn {
        /// The thread's name.
        thread: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}

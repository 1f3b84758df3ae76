//! The acceptor (`kb-acceptor-<i>`, one per listener): Kafka's `Acceptor`.
//!
//! Its own mio `Poll` watches the listening socket (token 1) and a `Waker` (token 0) used
//! only to stop it. On readiness it accepts until `WouldBlock`; each socket gets
//! TCP_NODELAY, SO_KEEPALIVE and `socket.send.buffer.bytes`, takes a permit from the shared
//! [`ConnectionQuotas`], and goes round-robin to a processor through that processor's
//! bounded new-connection queue and `Waker`. A full queue is skipped for the next processor;
//! if all are full the acceptor waits on its round-robin choice (as Kafka's does).
//!
//! Limits: over `max.connections.per.ip` the new socket is closed at once (debug log,
//! `connections_rejected`). At `max.connections` the acceptor pauses — it stops calling
//! `accept` and the kernel's backlog (`LISTEN_BACKLOG`) holds new clients — and resumes
//! once the total is at or below 90 %, checked every [`ACCEPT_PAUSED_POLL_MS`].
//!
//! The listener is bound with SO_REUSEADDR and `socket.receive.buffer.bytes` set before
//! `listen`, so accepted sockets inherit it and TCP window scaling honours it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::TrySendError;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
};

use crate::error::ReactorError;
use crate::processor::{NewConnection, ProcessorHandle, POLL_TIMEOUT_MS_MAX};
use crate::quotas::{accept_resume_threshold, ConnectionQuotas};
use crate::stats::ReactorStats;

/// Poll timeout while accepting is paused at `max.connections` or backing off an error.
pub const ACCEPT_PAUSED_POLL_MS: u64 = 50;
/// Kafka's `socket.listen.backlog.size` default.
pub const LISTEN_BACKLOG: i32 = 50;
/// Consecutive `poll()` failures after which the acceptor gives up.
pub const ACCEPT_POLL_ERRORS_CONSECUTIVE_MAX: u32 = 100;
/// Readiness events taken from one `poll()`.
const ACCEPT_EVENTS_MAX: usize = 16;

const _: () = assert!(ACCEPT_PAUSED_POLL_MS < POLL_TIMEOUT_MS_MAX);

const WAKER_TOKEN: Token = Token(0);
const LISTENER_TOKEN: Token = Token(1);

/// Binds `addr` with SO_REUSEADDR and, unless -1, SO_RCVBUF = `receive_buffer_bytes`.
pub(crate) fn bind_listener(
    addr: SocketAddr,
    receive_buffer_bytes: i32,
) -> Result<TcpListener, ReactorError> {
    let failed = |step: &'static str| {
        move |error: nix::Error| ReactorError::Listen {
            addr,
            step,
            source: error.into(),
        }
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket::socket(family, SockType::Stream, flags, None).map_err(failed("socket"))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(failed("SO_REUSEADDR"))?;
    if let Ok(bytes) = usize::try_from(receive_buffer_bytes) {
        socket::setsockopt(&fd, sockopt::RcvBuf, &bytes).map_err(failed("SO_RCVBUF"))?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(failed("bind"))?;
    let backlog = Backlog::new(LISTEN_BACKLOG).map_err(failed("backlog"))?;
    socket::listen(&fd, backlog).map_err(failed("listen"))?;
    Ok(TcpListener::from_std(std::net::TcpListener::from(fd)))
}

/// What one round of accepting ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptOutcome {
    /// The backlog is empty.
    Drained,
    /// `max.connections` reached; accepting is paused.
    Paused,
    /// `accept` failed (e.g. out of file descriptors); retry after a pause.
    Backoff,
}

pub(crate) struct Acceptor {
    index: usize,
    listener: TcpListener,
    local_addr: SocketAddr,
    poll: Poll,
    events: Events,
    processors: Vec<ProcessorHandle>,
    next_processor: usize,
    quotas: Arc<ConnectionQuotas>,
    stats: Arc<ReactorStats>,
    stop: Arc<AtomicBool>,
    send_buffer_bytes: i32,
    paused: bool,
}

impl Acceptor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        mut listener: TcpListener,
        processors: Vec<ProcessorHandle>,
        quotas: Arc<ConnectionQuotas>,
        stats: Arc<ReactorStats>,
        stop: Arc<AtomicBool>,
        send_buffer_bytes: i32,
    ) -> Result<(Acceptor, Arc<Waker>), ReactorError> {
        assert!(!processors.is_empty());
        let thread = format!("kb-acceptor-{index}");
        let failed = |source| ReactorError::Poll {
            thread: thread.clone(),
            source,
        };
        let local_addr = listener.local_addr().map_err(failed)?;
        let poll = Poll::new().map_err(failed)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN).map_err(failed)?);
        poll.registry()
            .register(&mut listener, LISTENER_TOKEN, Interest::READABLE)
            .map_err(failed)?;
        let acceptor = Acceptor {
            index,
            listener,
            local_addr,
            poll,
            events: Events::with_capacity(ACCEPT_EVENTS_MAX),
            processors,
            next_processor: 0,
            quotas,
            stats,
            stop,
            send_buffer_bytes,
            paused: false,
        };
        Ok((acceptor, waker))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The acceptor thread's body; returns when `stop` is set (and the waker woken).
    pub fn run(mut self) {
        log::info!(
            "acceptor started acceptor={} listener={}",
            self.index,
            self.local_addr
        );
        let mut outcome = AcceptOutcome::Drained;
        let mut poll_errors_consecutive = 0;
        while !self.stop.load(Ordering::Acquire) {
            let timeout_ms = match outcome {
                AcceptOutcome::Drained => POLL_TIMEOUT_MS_MAX,
                AcceptOutcome::Paused | AcceptOutcome::Backoff => ACCEPT_PAUSED_POLL_MS,
            };
            if let Err(error) = self
                .poll
                .poll(&mut self.events, Some(Duration::from_millis(timeout_ms)))
            {
                if error.kind() != io::ErrorKind::Interrupted {
                    poll_errors_consecutive += 1;
                    log::error!(
                        "acceptor poll failed listener={} error={error}",
                        self.local_addr
                    );
                    assert!(
                        poll_errors_consecutive < ACCEPT_POLL_ERRORS_CONSECUTIVE_MAX,
                        "acceptor poll keeps failing"
                    );
                }
                continue;
            }
            poll_errors_consecutive = 0;
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            // Edge-triggered: try whenever not paused, not only on a fresh event, so a
            // resume or a backoff retry picks up connections waiting in the backlog.
            outcome = self.accept_new_connections();
        }
        log::info!(
            "acceptor stopped acceptor={} listener={}",
            self.index,
            self.local_addr
        );
    }

    fn accept_new_connections(&mut self) -> AcceptOutcome {
        loop {
            if !self.may_accept() {
                return AcceptOutcome::Paused;
            }
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return AcceptOutcome::Drained
                }
                Err(error) if is_transient_accept_error(&error) => {}
                Err(error) => {
                    log::warn!("accept failed listener={} error={error}", self.local_addr);
                    return AcceptOutcome::Backoff;
                }
            }
        }
    }

    /// Pauses at `max.connections`, resumes at or below 90 % of it.
    fn may_accept(&mut self) -> bool {
        let total = self.quotas.total();
        let total_max = self.quotas.total_max();
        if self.paused {
            if total > accept_resume_threshold(total_max) {
                return false;
            }
            self.paused = false;
            log::info!(
                "accepting again listener={} connections={total} max.connections={total_max}",
                self.local_addr
            );
        } else if total >= total_max {
            self.paused = true;
            log::warn!(
                "max.connections reached, accept paused listener={} max.connections={total_max}",
                self.local_addr
            );
            return false;
        }
        true
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        if let Err(error) = configure_socket(&stream, self.send_buffer_bytes) {
            log::warn!("cannot configure accepted socket peer={peer} error={error}");
            return;
        }
        match self.quotas.try_acquire(peer.ip()) {
            Ok(permit) => self.hand_off(NewConnection {
                stream,
                peer,
                permit,
            }),
            Err(exceeded) => {
                // Total can be exceeded here only by a race between acceptors.
                self.stats
                    .connections_rejected
                    .fetch_add(1, Ordering::Relaxed);
                log::debug!("connection refused peer={peer} reason={exceeded}");
            }
        }
    }

    /// Round-robin to a processor, skipping full queues; waits only if every queue is full.
    fn hand_off(&mut self, mut new: NewConnection) {
        let count = self.processors.len();
        for attempt in 0..count {
            let index = (self.next_processor + attempt) % count;
            match self.processors[index].new_connections.try_send(new) {
                Ok(()) => {
                    self.next_processor = (index + 1) % count;
                    wake(&self.processors[index], self.local_addr);
                    return;
                }
                Err(TrySendError::Full(back) | TrySendError::Disconnected(back)) => new = back,
            }
        }
        let index = self.next_processor;
        self.next_processor = (index + 1) % count;
        let peer = new.peer;
        if self.processors[index].new_connections.send(new).is_err() {
            log::debug!("processor stopped, new connection dropped peer={peer}");
            return;
        }
        wake(&self.processors[index], self.local_addr);
    }
}

fn wake(processor: &ProcessorHandle, listener: SocketAddr) {
    if let Err(error) = processor.waker.wake() {
        log::warn!("cannot wake processor listener={listener} error={error}");
    }
}

/// Errors that concern only the connection being accepted, not the listener.
fn is_transient_accept_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Kafka's accepted-socket options: TCP_NODELAY, SO_KEEPALIVE, SO_SNDBUF unless -1.
fn configure_socket(stream: &TcpStream, send_buffer_bytes: i32) -> io::Result<()> {
    stream.set_nodelay(true)?;
    socket::setsockopt(stream, sockopt::KeepAlive, &true)?;
    if let Ok(bytes) = usize::try_from(send_buffer_bytes) {
        socket::setsockopt(stream, sockopt::SndBuf, &bytes)?;
    }
    Ok(())
}

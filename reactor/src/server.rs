//! [`SocketServer`]: starts and stops the acceptors, processors and handler threads.
//!
//! Start-up binds every listener and creates every `Poll` before the first thread is
//! spawned, so a bad address fails without leaving threads behind. Threads are spawned
//! consumers first (handlers, processors, acceptors).
//!
//! Shutdown, in Kafka's order: stop the acceptors (no new connections; listeners close),
//! set the processors draining (no new requests read; requests in flight complete and
//! their responses are written, at most `SHUTDOWN_DRAIN_MS_MAX`), join them, which drops
//! the request channel's senders, then join the handler threads. Dropping a running server
//! shuts it down the same way.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::Waker;

use crate::acceptor::{bind_listener, Acceptor};
use crate::config::ReactorConfig;
use crate::error::ReactorError;
use crate::handler_pool::{spawn_handler, HandlerContext};
use crate::processor::{Processor, ProcessorShared};
use crate::quotas::ConnectionQuotas;
use crate::request::RequestHandler;
use crate::stats::ReactorStats;

/// A running Kafka-style socket server.
pub struct SocketServer {
    local_addrs: Vec<SocketAddr>,
    stats: Arc<ReactorStats>,
    acceptor_stop: Arc<AtomicBool>,
    acceptor_wakers: Vec<Arc<Waker>>,
    acceptor_threads: Vec<JoinHandle<()>>,
    draining: Arc<AtomicBool>,
    processor_wakers: Vec<Arc<Waker>>,
    processor_threads: Vec<JoinHandle<()>>,
    handlers_discard: Arc<AtomicBool>,
    handler_threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for SocketServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketServer")
            .field("local_addrs", &self.local_addrs)
            .field("acceptors", &self.acceptor_threads.len())
            .field("processors", &self.processor_threads.len())
            .field("handlers", &self.handler_threads.len())
            .finish()
    }
}

impl SocketServer {
    /// Validates `config`, binds the listeners, spawns every thread and returns once the
    /// listeners accept connections.
    pub fn start(
        config: ReactorConfig,
        handler: Arc<dyn RequestHandler>,
    ) -> Result<SocketServer, ReactorError> {
        config.validate()?;
        let stats = Arc::new(ReactorStats::new(
            config.num_network_threads,
            config.num_io_threads,
        ));
        let listeners = config
            .listeners
            .iter()
            .map(|&addr| bind_listener(addr, config.socket_receive_buffer_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let (request_sender, request_receiver) =
            crossbeam_channel::bounded(config.queued_max_requests);
        let mut server = SocketServer {
            local_addrs: Vec::new(),
            stats: Arc::clone(&stats),
            acceptor_stop: Arc::new(AtomicBool::new(false)),
            acceptor_wakers: Vec::new(),
            acceptor_threads: Vec::new(),
            draining: Arc::new(AtomicBool::new(false)),
            processor_wakers: Vec::new(),
            processor_threads: Vec::new(),
            handlers_discard: Arc::new(AtomicBool::new(false)),
            handler_threads: Vec::new(),
        };
        let shared = ProcessorShared {
            requests: request_sender,
            handler: Arc::clone(&handler),
            stats: Arc::clone(&stats),
            draining: Arc::clone(&server.draining),
        };
        let mut processors = Vec::with_capacity(config.num_network_threads);
        let mut handles = Vec::with_capacity(config.num_network_threads);
        for id in 0..config.num_network_threads {
            let id = u16::try_from(id).expect("num.network.threads is validated");
            let (processor, handle) = Processor::new(id, &config, shared.clone())?;
            server.processor_wakers.push(Arc::clone(&handle.waker));
            processors.push(processor);
            handles.push(handle);
        }
        drop(shared); // the processors now hold the only request senders
        let quotas = Arc::new(ConnectionQuotas::new(
            config.connections_total_max(),
            config.max_connections_per_ip,
            Arc::clone(&stats),
        ));
        let mut acceptors = Vec::with_capacity(listeners.len());
        for (index, listener) in listeners.into_iter().enumerate() {
            let (acceptor, waker) = Acceptor::new(
                index,
                listener,
                handles.clone(),
                Arc::clone(&quotas),
                Arc::clone(&stats),
                Arc::clone(&server.acceptor_stop),
                config.socket_send_buffer_bytes,
            )?;
            server.local_addrs.push(acceptor.local_addr());
            server.acceptor_wakers.push(waker);
            acceptors.push(acceptor);
        }
        let threads = Threads {
            handlers: config.num_io_threads,
            requests: request_receiver,
            handler,
            processors,
            acceptors,
        };
        if let Err(error) = server.spawn_all(threads) {
            server.shutdown_threads();
            return Err(error);
        }
        log::info!(
            "socket server started listeners={:?} num.network.threads={} num.io.threads={} queued.max.requests={}",
            server.local_addrs,
            config.num_network_threads,
            config.num_io_threads,
            config.queued_max_requests
        );
        Ok(server)
    }

    /// The bound listener addresses, in `listeners` order (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs.clone()
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<ReactorStats> {
        Arc::clone(&self.stats)
    }

    /// Stops accepting, lets requests in flight finish and their responses be written (at
    /// most `SHUTDOWN_DRAIN_MS_MAX`), then stops processors and handlers and joins every
    /// thread.
    pub fn shutdown(mut self) {
        self.shutdown_threads();
    }

    /// Spawns handlers, then processors, then acceptors. Unspawned parts are dropped on
    /// error, which releases their channel ends so the spawned threads can end.
    fn spawn_all(&mut self, threads: Threads) -> Result<(), ReactorError> {
        for index in 0..threads.handlers {
            let context = HandlerContext {
                index,
                requests: threads.requests.clone(),
                handler: Arc::clone(&threads.handler),
                stats: Arc::clone(&self.stats),
                discard: Arc::clone(&self.handlers_discard),
            };
            self.handler_threads.push(spawn_handler(context)?);
        }
        drop(threads.requests);
        for (index, processor) in threads.processors.into_iter().enumerate() {
            self.processor_threads
                .push(spawn(format!("kb-net-{index}"), move || processor.run())?);
        }
        for (index, acceptor) in threads.acceptors.into_iter().enumerate() {
            self.acceptor_threads
                .push(spawn(format!("kb-acceptor-{index}"), move || {
                    acceptor.run()
                })?);
        }
        Ok(())
    }

    fn shutdown_threads(&mut self) {
        let running =
            self.acceptor_threads.len() + self.processor_threads.len() + self.handler_threads.len();
        if running == 0 {
            return;
        }
        log::info!(
            "socket server shutting down listeners={:?}",
            self.local_addrs
        );
        self.acceptor_stop.store(true, Ordering::Release);
        wake_all(&self.acceptor_wakers);
        join_all(&mut self.acceptor_threads);
        self.draining.store(true, Ordering::Release);
        wake_all(&self.processor_wakers);
        join_all(&mut self.processor_threads);
        self.handlers_discard.store(true, Ordering::Release);
        join_all(&mut self.handler_threads);
        log::info!("socket server stopped listeners={:?}", self.local_addrs);
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.shutdown_threads();
    }
}

/// What `spawn_all` turns into threads.
struct Threads {
    handlers: usize,
    requests: crossbeam_channel::Receiver<crate::channel::RequestEnvelope>,
    handler: Arc<dyn RequestHandler>,
    processors: Vec<Processor>,
    acceptors: Vec<Acceptor>,
}

fn spawn(
    thread: String,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, ReactorError> {
    assert!(
        thread.len() <= crate::config::THREAD_NAME_BYTES_MAX,
        "thread name too long: {thread}"
    );
    std::thread::Builder::new()
        .name(thread.clone())
        .spawn(body)
        .map_err(|source| ReactorError::Spawn { thread, source })
}

fn wake_all(wakers: &[Arc<Waker>]) {
    for waker in wakers {
        if let Err(error) = waker.wake() {
            log::warn!("cannot wake thread for shutdown error={error}");
        }
    }
}

fn join_all(threads: &mut Vec<JoinHandle<()>>) {
    for thread in threads.drain(..) {
        let name = thread.thread().name().unwrap_or("unnamed").to_string();
        if thread.join().is_err() {
            log::error!("thread panicked thread={name}");
        }
    }
}

//! Wiring: open the broker, start the scheduler, join the cluster (register, run for
//! controller), start the socket server; shut down in reverse: controlled shutdown (leaderships
//! moved away), resign, answer parked requests, stop accepting and drain in-flight
//! requests, stop the scheduler, flush and checkpoint every log, write the clean-shutdown
//! marker.
//! With `metrics.port` set, the handler is wrapped to record request-stage metrics and a
//! `kb-metrics` thread serves them; it stops first.

use std::sync::Arc;

use kbroker_reactor::{ReactorConfig, RequestHandler, SocketServer};

use crate::broker::{Broker, BrokerError, Scheduler};
use crate::config::Config;
use crate::handler::KafkaHandler;
use crate::metrics::{Instrumented, MetricsServer, RequestMetrics, Sources};

pub struct Server {
    pub broker: Arc<Broker>,
    socket_server: SocketServer,
    scheduler: Scheduler,
    metrics: Option<MetricsServer>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("network: {0}")]
    Network(#[from] kbroker_reactor::ReactorError),
    #[error("config listeners: {0}")]
    Listener(#[from] crate::config::ConfigError),
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl Server {
    pub fn start(config: Config) -> Result<Server, ServerError> {
        let listeners = config
            .listeners
            .iter()
            .map(|l| l.socket_addr())
            .collect::<Result<Vec<_>, _>>()?;
        let reactor_config = ReactorConfig {
            listeners,
            num_network_threads: config.num_network_threads,
            num_io_threads: config.num_io_threads,
            queued_max_requests: config.queued_max_requests,
            socket_request_max_bytes: config.socket_request_max_bytes,
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            connections_max_idle_ms: config.connections_max_idle_ms,
            socket_send_buffer_bytes: config.socket_send_buffer_bytes,
            socket_receive_buffer_bytes: config.socket_receive_buffer_bytes,
        };
        let metrics_addr = config.metrics_addr;
        let requests = Arc::new(RequestMetrics::new(config.num_network_threads));
        let broker = Broker::open(config)?;
        let scheduler = Scheduler::start(Arc::clone(&broker));
        let handler = KafkaHandler {
            broker: Arc::clone(&broker),
        };
        // Recording costs a little on every request; it is done only when someone can read it.
        let handler: Arc<dyn RequestHandler> = match metrics_addr {
            Some(_) => Arc::new(Instrumented::new(handler, Arc::clone(&requests))),
            None => Arc::new(handler),
        };
        // Kafka's order: register and run for controller, then accept. On a single node the
        // controller's first round (applied in process) is done before the first client
        // connects; in a cluster another controller's requests are retried until this
        // broker listens.
        let started = broker
            .join_cluster()
            .map_err(ServerError::from)
            .and_then(|()| SocketServer::start(reactor_config, handler).map_err(ServerError::from));
        let socket_server = match started {
            Ok(s) => s,
            Err(e) => {
                broker.stop_serving();
                scheduler.stop();
                let _ = broker.shutdown();
                return Err(e);
            }
        };
        let metrics = match metrics_addr {
            Some(addr) => {
                let sources = Sources {
                    requests,
                    reactor: socket_server.stats(),
                    broker: Arc::clone(&broker),
                };
                Some(
                    MetricsServer::start(addr, sources)
                        .map_err(|source| ServerError::Metrics { addr, source })?,
                )
            }
            None => None,
        };
        log::info!(
            "kbroker started broker_id={} listeners={:?}",
            broker.config.broker_id,
            socket_server.local_addrs()
        );
        Ok(Server {
            broker,
            socket_server,
            scheduler,
            metrics,
        })
    }

    /// Where the metrics endpoint listens, when `metrics.port` is set.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    pub fn local_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.socket_server.local_addrs()
    }

    /// Bytes sent to consumers with sendfile so far.
    pub fn sendfile_bytes(&self) -> u64 {
        self.socket_server
            .stats()
            .sendfile_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Clean shutdown; returns the bytes sent with sendfile over the broker's life.
    pub fn shutdown(self) -> Result<u64, ServerError> {
        log::info!("shutting down");
        let stats = self.socket_server.stats();
        if let Some(metrics) = self.metrics {
            metrics.shutdown();
        }
        // Leaderships move away first, while this broker still answers the controller.
        self.broker.controlled_shutdown();
        self.broker.stop_serving();
        self.socket_server.shutdown();
        self.scheduler.stop();
        self.broker.shutdown()?;
        Ok(stats
            .sendfile_bytes
            .load(std::sync::atomic::Ordering::Relaxed))
    }
}

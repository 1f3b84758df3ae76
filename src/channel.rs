//! Controller-to-broker requests (LeaderAndIsr, UpdateMetadata, StopReplica) — Kafka's
//! `ControllerChannelManager`: one queue and one sender thread per destination broker,
//! speaking the Kafka protocol on the broker's inter-broker listener.
//!
//! A sender keeps one connection, writes a request, reads its response, and on any error
//! reconnects (with a backoff) and sends the same request again, until it succeeds or the
//! broker is removed (it died, or this broker stopped being the controller); requests to one
//! broker keep their order. The controller's own broker gets its requests in process (no
//! socket), handed to its replica manager and metadata cache in the same order.
//! Thread safe; the senders are `kb-ctrl-send-<id>` threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use kafka_protocol::messages::{
    ApiKey, LeaderAndIsrRequest, StopReplicaRequest, UpdateMetadataRequest,
};
use kafka_protocol::protocol::Encodable;

use crate::inter_broker::BrokerConnection;

/// The versions the controller speaks (Kafka 2.8's newest).
pub const LEADER_AND_ISR_VERSION: i16 = 5;
pub const UPDATE_METADATA_VERSION: i16 = 7;
pub const STOP_REPLICA_VERSION: i16 = 3;
/// Requests queued per destination at most; past it the oldest waiting are dropped
/// (the next full update supersedes them) and the broker is resynced.
pub const QUEUED_PER_BROKER_MAX: usize = 10_000;
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// One request of the controller.
#[derive(Debug, Clone)]
pub enum ControllerRequest {
    LeaderAndIsr(LeaderAndIsrRequest),
    UpdateMetadata(UpdateMetadataRequest),
    StopReplica(StopReplicaRequest),
}

impl ControllerRequest {
    fn api(&self) -> (ApiKey, i16) {
        match self {
            ControllerRequest::LeaderAndIsr(_) => (ApiKey::LeaderAndIsr, LEADER_AND_ISR_VERSION),
            ControllerRequest::UpdateMetadata(_) => {
                (ApiKey::UpdateMetadata, UPDATE_METADATA_VERSION)
            }
            ControllerRequest::StopReplica(_) => (ApiKey::StopReplica, STOP_REPLICA_VERSION),
        }
    }

    fn encode_body(&self, buf: &mut BytesMut) -> Result<(), String> {
        let (_, v) = self.api();
        match self {
            ControllerRequest::LeaderAndIsr(r) => r.encode(buf, v),
            ControllerRequest::UpdateMetadata(r) => r.encode(buf, v),
            ControllerRequest::StopReplica(r) => r.encode(buf, v),
        }
        .map_err(|e| e.to_string())
    }
}

/// Delivers requests to the local broker (in process). `done` is called once applied.
pub trait LocalDelivery: Send + Sync {
    fn deliver(&self, request: ControllerRequest, done: Box<dyn FnOnce() + Send>);
}

struct Destination {
    tx: Sender<ControllerRequest>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Counts requests handed to the local broker and not yet applied.
#[derive(Default)]
struct LocalPending {
    count: Mutex<usize>,
    zero: Condvar,
}

pub struct ControllerChannel {
    local_id: i32,
    local: Arc<dyn LocalDelivery>,
    local_pending: Arc<LocalPending>,
    destinations: Mutex<HashMap<i32, Destination>>,
}

impl ControllerChannel {
    pub fn new(local_id: i32, local: Arc<dyn LocalDelivery>) -> ControllerChannel {
        ControllerChannel {
            local_id,
            local,
            local_pending: Arc::new(LocalPending::default()),
            destinations: Mutex::new(HashMap::new()),
        }
    }

    /// Starts (or restarts, if its address changed) the sender to `broker` at `host:port`.
    pub fn add_broker(&self, broker: i32, host: &str, port: u16) {
        if broker == self.local_id {
            return;
        }
        let mut destinations = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = destinations.remove(&broker) {
            stop_destination(old);
        }
        let (tx, rx) = crossbeam_channel::bounded(QUEUED_PER_BROKER_MAX);
        let stop = Arc::new(AtomicBool::new(false));
        let addr = format!("{host}:{port}");
        let stop2 = Arc::clone(&stop);
        let local_id = self.local_id;
        let thread = std::thread::Builder::new()
            .name(format!("kb-ctrl-send-{broker}"))
            .spawn(move || run_sender(local_id, broker, addr, rx, stop2))
            .expect("spawning a controller sender thread");
        destinations.insert(
            broker,
            Destination {
                tx,
                stop,
                thread: Some(thread),
            },
        );
    }

    /// Stops the sender to `broker`, dropping what it had queued.
    pub fn remove_broker(&self, broker: i32) {
        let removed = self
            .destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&broker);
        if let Some(d) = removed {
            stop_destination(d);
        }
    }

    /// Stops every sender (this broker is no longer the controller).
    pub fn remove_all(&self) {
        let all: Vec<Destination> = self
            .destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, d)| d)
            .collect();
        for d in all {
            stop_destination(d);
        }
    }

    /// Queues `request` for `broker`.
    pub fn send(&self, broker: i32, request: ControllerRequest) {
        if broker == self.local_id {
            let pending = Arc::clone(&self.local_pending);
            *pending.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            self.local.deliver(
                request,
                Box::new(move || {
                    let mut n = pending.count.lock().unwrap_or_else(|p| p.into_inner());
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        pending.zero.notify_all();
                    }
                }),
            );
            return;
        }
        let destinations = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
        match destinations.get(&broker) {
            Some(d) => {
                if d.tx.try_send(request).is_err() {
                    log::warn!("controller queue to broker {broker} is full; request dropped");
                }
            }
            None => log::debug!("no sender for broker {broker}; request dropped"),
        }
    }

    /// Waits until every request handed to the local broker was applied (start-up).
    pub fn wait_local(&self, timeout: Duration) -> bool {
        let pending = &self.local_pending;
        let guard = pending.count.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, result) = pending
            .zero
            .wait_timeout_while(guard, timeout, |n| *n > 0)
            .unwrap_or_else(|p| p.into_inner());
        drop(guard);
        !result.timed_out()
    }
}

/// How long stopping a sender waits for its thread to end before leaving it to end alone.
const STOP_WAIT: Duration = Duration::from_millis(200);

/// Stops a sender without waiting on its broker: a thread blocked in an exchange with a
/// broker that stopped answering (paused, or cut off: the packets go nowhere) ends when
/// that exchange fails or completes — up to the socket timeout later — and sends nothing
/// more. Joining it would hold the controller for as long, with every election behind it
/// (a leader paused past its session was replaced only once it woke up).
fn stop_destination(mut d: Destination) {
    d.stop.store(true, Ordering::Release);
    drop(d.tx);
    if let Some(t) = d.thread.take() {
        let deadline = std::time::Instant::now() + STOP_WAIT;
        while !t.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::info!("a controller request sender is still waiting on its broker; left to end");
        }
    }
}

fn run_sender(
    local_id: i32,
    broker: i32,
    addr: String,
    rx: Receiver<ControllerRequest>,
    stop: Arc<AtomicBool>,
) {
    let mut conn = BrokerConnection::new(
        addr,
        format!("controller-{local_id}-to-broker-{broker}"),
        SOCKET_TIMEOUT,
    );
    loop {
        let request = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::Acquire) => continue,
            Err(_) => return,
        };
        let (api, version) = request.api();
        loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            match conn.exchange(api, version, |buf| request.encode_body(buf)) {
                Ok(body) => {
                    // The error code is the first field of all three responses.
                    if body.len() >= 2 {
                        let code = i16::from_be_bytes([body[0], body[1]]);
                        if code != 0 {
                            log::warn!("{api:?} to broker {broker} answered error {code}");
                        }
                    }
                    break;
                }
                Err(e) => {
                    log::debug!(
                        "controller request to broker {broker} at {} failed: {e}; retrying",
                        conn.addr()
                    );
                    std::thread::sleep(RETRY_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    struct NoLocal;

    impl LocalDelivery for NoLocal {
        fn deliver(&self, _: ControllerRequest, done: Box<dyn FnOnce() + Send>) {
            done();
        }
    }

    #[test]
    fn removing_a_broker_that_stopped_answering_does_not_wait_for_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let channel = Arc::new(ControllerChannel::new(1, Arc::new(NoLocal)));
        channel.add_broker(2, "127.0.0.1", port);
        channel.send(
            2,
            ControllerRequest::UpdateMetadata(UpdateMetadataRequest::default()),
        );
        // The "broker" takes the request and never answers, as a paused process does.
        let (mut peer, _) = listener.accept().unwrap();
        let mut length = [0u8; 4];
        peer.read_exact(&mut length).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let c = Arc::clone(&channel);
        std::thread::spawn(move || {
            c.remove_broker(2);
            let _ = tx.send(());
        });
        // Far within the sender's 30 s socket timeout: only a remove that does not wait
        // on the silent broker comes back before the peer is closed.
        assert!(
            rx.recv_timeout(Duration::from_secs(15)).is_ok(),
            "remove_broker waited on a broker that does not answer"
        );
        drop(peer);
    }
}

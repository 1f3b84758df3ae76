//! Follower fetchers — Kafka's `ReplicaFetcherManager` and `ReplicaFetcherThread`.
//!
//! For each leader this broker follows, `num.replica.fetchers` threads (a partition goes to
//! thread `hash % n`) each keep one connection to the leader's inter-broker listener and
//! loop: partitions that just started following ask the leader where their latest epoch
//! ends (OffsetForLeaderEpoch, KIP-101/279) and truncate a divergent suffix; the rest are
//! fetched (Fetch with this broker's replica id, `replica.fetch.*` limits) and what comes
//! back is appended as the leader wrote it; the follower's high watermark follows the
//! leader's. A leader answering OFFSET_OUT_OF_RANGE has deleted what the follower needs
//! next: the follower starts again at the leader's log start. Partitions whose leader
//! refuses them back off until the controller's next LeaderAndIsr moves them:
//! `replica.fetch.backoff.ms`, or, where the leader only does not know yet that it leads
//! (not leader, unknown epoch or partition), from 25 ms doubling up to it (`retry_delay`).
//!
//! Each thread fetches in an incremental fetch session (KIP-227, as Kafka's fetcher threads
//! do): the first fetch names every partition and gets a session id; later ones name only
//! the partitions whose fetch offset, log start or leader epoch changed (and forget those
//! that left), and the leader answers only partitions with something new. A session the
//! leader does not know (restarted) or whose epoch it does not expect is dropped and the
//! next fetch is full again, at once; any failed exchange does the same.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use kafka_protocol::ResponseError;
use kbroker_storage::manager::lock;
use kbroker_storage::TopicPartition;

use crate::handler::topic_name;
use crate::inter_broker::BrokerConnection;
use crate::replica_manager::ReplicaManager;

const FETCH_VERSION: i16 = 11;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 3;
const LIST_OFFSETS_VERSION: i16 = 4;
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;
/// How long an idle fetcher (no partitions) sleeps between looks.
const IDLE: Duration = Duration::from_millis(50);

/// `replica.fetch.*` and friends.
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    pub broker_id: i32,
    pub num_fetchers: usize,
    pub partition_max_bytes: i32,
    pub response_max_bytes: i32,
    pub wait_max_ms: i32,
    pub min_bytes: i32,
    pub backoff: Duration,
    pub socket_timeout: Duration,
}

#[derive(Debug, Clone)]
struct FetchState {
    leader_epoch: i32,
    fetch_offset: i64,
    /// Asks the leader where its epoch ends before fetching.
    truncating: bool,
    /// Backing off after an error until then.
    delayed_until: Option<Instant>,
    /// Refusals by the leader since this partition last fetched or truncated (see
    /// [`retry_delay`]).
    refusals: u32,
    /// The last answer's high watermark was within what this replica has (Kafka's
    /// `isReplicaInSync`: lag 0); a replica not in sync may be throttled.
    in_sync: bool,
}

/// The first retry after a leader refused a partition for not leading it (yet).
const FIRST_RETRY: Duration = Duration::from_millis(25);

/// How long a partition waits after its leader answered `code` for the `refusals`-th time
/// in a row.
///
/// NOT_LEADER_OR_FOLLOWER, UNKNOWN_LEADER_EPOCH (the leader's epoch is older than this
/// follower's) and UNKNOWN_TOPIC_OR_PARTITION mostly mean the controller's LeaderAndIsr
/// reached this follower a moment before it reached the new leader — the controller sends
/// both at once, and a follower that waited the whole `replica.fetch.backoff.ms` (1 s)
/// held every acks=all produce to that leader for that long after a controlled shutdown
/// (seen in `scripts/chaos`). They are retried after 25 ms, doubling per refusal up to the
/// backoff, so a leader that really is elsewhere costs a handful of requests. Any other
/// error (FENCED_LEADER_EPOCH: this follower is behind; storage errors) waits the backoff.
fn retry_delay(code: i16, refusals: u32, backoff: Duration) -> Duration {
    let not_yet_leading = [
        ResponseError::NotLeaderOrFollower,
        ResponseError::UnknownLeaderEpoch,
        ResponseError::UnknownTopicOrPartition,
    ];
    match ResponseError::try_from_code(code) {
        Some(e) if not_yet_leading.contains(&e) => FIRST_RETRY
            .saturating_mul(1 << refusals.min(16))
            .min(backoff),
        _ => backoff,
    }
}

type States = Arc<Mutex<HashMap<TopicPartition, FetchState>>>;

/// A request's topics from (topic, partition) items: grouped by topic, each group made a
/// topic entry by `topic`.
fn by_topic<P, T>(
    items: impl IntoIterator<Item = (String, P)>,
    topic: impl Fn(kafka_protocol::messages::TopicName, Vec<P>) -> T,
) -> Vec<T> {
    let mut groups: HashMap<String, Vec<P>> = HashMap::new();
    for (t, p) in items {
        groups.entry(t).or_default().push(p);
    }
    groups
        .into_iter()
        .map(|(t, ps)| topic(topic_name(&t), ps))
        .collect()
}

/// Whether the topic's `follower.replication.throttled.replicas` names `tp` on `broker`,
/// while this broker has a follower throttle at all (the common case asks nothing more).
fn follower_throttled(replicas: &ReplicaManager, tp: &TopicPartition, broker: i32) -> bool {
    replicas.quotas.follower.bound() != crate::replication_quota::UNLIMITED
        && crate::replication_quota::names_replica(
            &replicas.topic_config(&tp.topic),
            crate::replication_quota::FOLLOWER_THROTTLED_REPLICAS,
            tp.partition,
            broker,
        )
}

/// What a fetch tells the leader of one partition; an incremental fetch names a partition
/// only when this changed since the session last heard it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    fetch_offset: i64,
    log_start_offset: i64,
    leader_epoch: i32,
}

/// The follower's side of a fetch session (Kafka's FetchSessionHandler), pure: which
/// partitions the next fetch names and forgets, under which session id and epoch.
#[derive(Debug, Default)]
struct FollowerSession {
    /// 0: none. Kept when a session is dropped, so the next full fetch closes it.
    id: i32,
    /// The epoch of the next fetch: 0 asks for a new session with a full fetch.
    epoch: i32,
    /// What the leader's session holds, as of the last answered fetch.
    sent: HashMap<TopicPartition, Sent>,
}

/// One fetch's session fields and partitions.
#[derive(Debug, PartialEq, Eq)]
struct SessionPlan {
    id: i32,
    epoch: i32,
    /// Partitions to name (all of them in a full fetch).
    send: Vec<TopicPartition>,
    forget: Vec<TopicPartition>,
}

impl FollowerSession {
    fn plan(&self, wanted: &HashMap<TopicPartition, Sent>) -> SessionPlan {
        let full = self.epoch == 0;
        let mut send: Vec<TopicPartition> = wanted
            .iter()
            .filter(|(tp, now)| full || self.sent.get(*tp) != Some(*now))
            .map(|(tp, _)| tp.clone())
            .collect();
        let mut forget: Vec<TopicPartition> = if full {
            Vec::new()
        } else {
            self.sent
                .keys()
                .filter(|tp| !wanted.contains_key(*tp))
                .cloned()
                .collect()
        };
        send.sort();
        forget.sort();
        SessionPlan {
            id: self.id,
            epoch: self.epoch,
            send,
            forget,
        }
    }

    /// The leader answered the fetch `plan` (of `wanted`) with `error_code` and
    /// `session_id`. False when the session was dropped over it: fetch (fully) again now.
    fn answered(
        &mut self,
        plan: &SessionPlan,
        wanted: HashMap<TopicPartition, Sent>,
        error_code: i16,
        session_id: i32,
    ) -> bool {
        match ResponseError::try_from_code(error_code) {
            None => {}
            Some(ResponseError::FetchSessionIdNotFound) => {
                *self = FollowerSession::default();
                return false;
            }
            Some(_) => {
                self.drop_session();
                return false;
            }
        }
        if session_id == 0 {
            // No session (the cache was full, or the leader closed it): full fetches.
            *self = FollowerSession::default();
        } else {
            self.id = session_id;
            self.epoch = if plan.epoch == i32::MAX {
                1
            } else {
                plan.epoch + 1
            };
            self.sent = wanted;
        }
        true
    }

    /// After a failed exchange: the next fetch is full, and closes this session.
    fn drop_session(&mut self) {
        self.epoch = 0;
        self.sent.clear();
    }
}

struct Fetcher {
    addr: String,
    states: States,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub struct ReplicaFetcherManager {
    config: FetcherConfig,
    replicas: Weak<ReplicaManager>,
    /// (leader, fetcher index) → its thread.
    fetchers: Mutex<HashMap<(i32, usize), Fetcher>>,
}

impl ReplicaFetcherManager {
    pub fn new(config: FetcherConfig, replicas: Weak<ReplicaManager>) -> ReplicaFetcherManager {
        ReplicaFetcherManager {
            config,
            replicas,
            fetchers: Mutex::new(HashMap::new()),
        }
    }

    fn index_of(&self, tp: &TopicPartition) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        tp.hash(&mut h);
        (h.finish() % self.config.num_fetchers.max(1) as u64) as usize
    }

    /// Starts following `tp` from `leader` (at `addr`, its inter-broker endpoint) in
    /// `leader_epoch`, beginning with the epoch check.
    pub fn add(&self, tp: &TopicPartition, leader: i32, addr: &str, leader_epoch: i32) {
        self.remove(std::slice::from_ref(tp));
        let key = (leader, self.index_of(tp));
        let mut fetchers = self.fetchers.lock().unwrap_or_else(|p| p.into_inner());
        if fetchers.get(&key).is_some_and(|f| f.addr != addr) {
            // The leader moved to another address: a new thread.
            if let Some(old) = fetchers.remove(&key) {
                stop_fetcher(old);
            }
        }
        let fetcher = fetchers.entry(key).or_insert_with(|| {
            let states: States = Arc::new(Mutex::new(HashMap::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let worker = Worker {
                config: self.config.clone(),
                replicas: self.replicas.clone(),
                leader,
                states: Arc::clone(&states),
                stop: Arc::clone(&stop),
                conn: BrokerConnection::new(
                    addr.to_string(),
                    format!(
                        "replica-fetcher-{}-from-{leader}-{}",
                        self.config.broker_id, key.1
                    ),
                    self.config.socket_timeout,
                ),
                failing: false,
                session: FollowerSession::default(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("kb-fetch-{leader}-{}", key.1))
                .spawn(move || worker.run())
                .expect("spawning a replica fetcher thread");
            Fetcher {
                addr: addr.to_string(),
                states,
                stop,
                thread: Some(thread),
            }
        });
        fetcher
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                tp.clone(),
                FetchState {
                    leader_epoch,
                    fetch_offset: -1,
                    truncating: true,
                    delayed_until: None,
                    refusals: 0,
                    in_sync: false,
                },
            );
    }

    /// Stops fetching `tps` (this broker leads them now, or stopped hosting them). Idle
    /// fetcher threads are stopped.
    pub fn remove(&self, tps: &[TopicPartition]) {
        let mut fetchers = self.fetchers.lock().unwrap_or_else(|p| p.into_inner());
        let mut idle = Vec::new();
        for (key, f) in fetchers.iter() {
            let mut states = f.states.lock().unwrap_or_else(|p| p.into_inner());
            for tp in tps {
                states.remove(tp);
            }
            if states.is_empty() {
                idle.push(*key);
            }
        }
        for key in idle {
            if let Some(f) = fetchers.remove(&key) {
                stop_fetcher(f);
            }
        }
    }

    /// Partitions being fetched, by leader (for metrics and tests).
    pub fn fetching(&self) -> usize {
        self.fetchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|f| f.states.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn shutdown(&self) {
        let all: Vec<Fetcher> = self
            .fetchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, f)| f)
            .collect();
        for f in all {
            stop_fetcher(f);
        }
    }
}

fn stop_fetcher(mut f: Fetcher) {
    f.stop.store(true, Ordering::Release);
    if let Some(t) = f.thread.take() {
        // A fetch in flight ends within replica.fetch.wait.max.ms (or the socket timeout).
        let _ = t.join();
    }
}

struct Worker {
    config: FetcherConfig,
    replicas: Weak<ReplicaManager>,
    leader: i32,
    states: States,
    stop: Arc<AtomicBool>,
    conn: BrokerConnection,
    /// The last exchange failed (logged once per episode).
    failing: bool,
    session: FollowerSession,
}

impl Worker {
    fn run(mut self) {
        while !self.stop.load(Ordering::Acquire) {
            let Some(replicas) = self.replicas.upgrade() else {
                return;
            };
            let now = Instant::now();
            let ready: Vec<(TopicPartition, FetchState)> = self
                .states
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(_, s)| s.delayed_until.is_none_or(|t| t <= now))
                .map(|(tp, s)| (tp.clone(), s.clone()))
                .collect();
            if ready.is_empty() {
                drop(replicas);
                std::thread::sleep(IDLE);
                continue;
            }
            let (truncating, fetching): (Vec<_>, Vec<_>) =
                ready.into_iter().partition(|(_, s)| s.truncating);
            let result = if !truncating.is_empty() {
                self.truncate(&replicas, &truncating)
            } else {
                self.fetch(&replicas, &fetching)
            };
            match result {
                Ok(()) => {
                    if self.failing {
                        log::info!("replica fetcher from broker {} recovered", self.leader);
                    }
                    self.failing = false;
                }
                Err(e) => {
                    if !self.failing {
                        log::warn!(
                            "replica fetcher from broker {} at {}: {e}; retrying every {:?}",
                            self.leader,
                            self.conn.addr(),
                            self.config.backoff
                        );
                    }
                    self.failing = true;
                    drop(replicas);
                    self.sleep(self.config.backoff);
                }
            }
        }
    }

    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20).min(d));
        }
    }

    fn update(&self, tp: &TopicPartition, epoch: i32, f: impl FnOnce(&mut FetchState)) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = states.get_mut(tp).filter(|s| s.leader_epoch == epoch) {
            f(s);
        }
    }

    fn back_off(&self, tp: &TopicPartition, epoch: i32) {
        let until = Instant::now() + self.config.backoff;
        self.update(tp, epoch, |s| s.delayed_until = Some(until));
    }

    /// The leader answered `code` for this partition: waits as [`retry_delay`] says.
    fn refused(&self, tp: &TopicPartition, epoch: i32, code: i16) {
        let backoff = self.config.backoff;
        self.update(tp, epoch, |s| {
            s.delayed_until = Some(Instant::now() + retry_delay(code, s.refusals, backoff));
            s.refusals = s.refusals.saturating_add(1);
        });
    }

    /// KIP-279: asks the leader where this replica's latest epoch ends and truncates the
    /// log to the offset both share; then fetching starts at the log end.
    fn truncate(
        &mut self,
        replicas: &ReplicaManager,
        parts: &[(TopicPartition, FetchState)],
    ) -> Result<(), String> {
        let mut asks = Vec::new();
        for (tp, s) in parts {
            let Some(log) = replicas.follower_log(tp, s.leader_epoch) else {
                continue;
            };
            let latest = lock(&log).ok().and_then(|l| l.latest_epoch());
            match latest {
                Some(epoch) => asks.push((tp.clone(), s.leader_epoch, epoch)),
                None => {
                    // No epoch yet (an empty or pre-epoch log): keep what is below the high
                    // watermark, as Kafka does, and fetch from there.
                    let end = lock(&log).map_err(|e| e.to_string()).and_then(|mut l| {
                        let hw = l.high_watermark();
                        l.truncate_to(hw).map_err(|e| e.to_string())?;
                        Ok(l.log_end_offset())
                    });
                    match end {
                        Ok(end) => self.update(tp, s.leader_epoch, |st| {
                            st.truncating = false;
                            st.fetch_offset = end;
                        }),
                        Err(e) => {
                            log::warn!("truncating {tp} failed: {e}");
                            self.back_off(tp, s.leader_epoch);
                        }
                    }
                }
            }
        }
        if asks.is_empty() {
            return Ok(());
        }
        let partitions = asks.iter().map(|(tp, current, epoch)| {
            let p = OffsetForLeaderPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(*current)
                .with_leader_epoch(*epoch);
            (tp.topic.clone(), p)
        });
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(self.config.broker_id))
            .with_topics(by_topic(partitions, |t, ps| {
                OffsetForLeaderTopic::default()
                    .with_topic(t)
                    .with_partitions(ps)
            }));
        let response: OffsetForLeaderEpochResponse = self.conn.send(
            ApiKey::OffsetForLeaderEpoch,
            OFFSET_FOR_LEADER_EPOCH_VERSION,
            &request,
        )?;
        for t in &response.topics {
            for p in &t.partitions {
                let tp = TopicPartition::new(&t.topic.0, p.partition);
                let Some((_, current, asked)) = asks.iter().find(|(x, _, _)| *x == tp) else {
                    continue;
                };
                if p.error_code != 0 {
                    log::debug!("OffsetForLeaderEpoch {tp}: error {}", p.error_code);
                    self.refused(&tp, *current, p.error_code);
                    continue;
                }
                let Some(log) = replicas.follower_log(&tp, *current) else {
                    continue;
                };
                let truncated = lock(&log).map_err(|e| e.to_string()).and_then(|mut l| {
                    let end = l.log_end_offset();
                    let to = if p.end_offset < 0 {
                        // The leader knows no such epoch: keep what was committed.
                        l.high_watermark()
                    } else if p.leader_epoch == *asked {
                        p.end_offset.min(end)
                    } else {
                        // The leader's epoch is older: cut at the end of that epoch here too.
                        let (_, mine) = l.end_offset_for_epoch(p.leader_epoch);
                        let mine = if mine < 0 { end } else { mine };
                        p.end_offset.min(mine).min(end)
                    };
                    if to < end {
                        log::info!(
                            "truncating {tp} from {end} to {to}: the leader's epoch {} ends at {}",
                            p.leader_epoch,
                            p.end_offset
                        );
                        l.truncate_to(to).map_err(|e| e.to_string())?;
                    }
                    Ok(l.log_end_offset())
                });
                match truncated {
                    Ok(end) => self.update(&tp, *current, |st| {
                        st.truncating = false;
                        st.fetch_offset = end;
                        st.refusals = 0;
                    }),
                    Err(e) => {
                        log::warn!("truncating {tp} failed: {e}");
                        self.back_off(&tp, *current);
                    }
                }
            }
        }
        Ok(())
    }

    fn fetch(
        &mut self,
        replicas: &ReplicaManager,
        parts: &[(TopicPartition, FetchState)],
    ) -> Result<(), String> {
        let mut wanted: HashMap<TopicPartition, Sent> = HashMap::new();
        let mut asked: HashMap<TopicPartition, FetchState> = HashMap::new();
        let now_ms = crate::broker::now_ms();
        for (tp, s) in parts {
            let Some(log) = replicas.follower_log(tp, s.leader_epoch) else {
                continue;
            };
            let throttled = follower_throttled(replicas, tp, self.config.broker_id);
            if replicas
                .quotas
                .follower
                .holds_back(throttled, s.in_sync, now_ms)
            {
                // Kafka's `shouldFollowerThrottle`: left out of this fetch (and forgotten by
                // the session) while the follower rate is over its bound.
                continue;
            }
            let log_start_offset = lock(&log).map_or(-1, |l| l.log_start_offset());
            wanted.insert(
                tp.clone(),
                Sent {
                    fetch_offset: s.fetch_offset,
                    log_start_offset,
                    leader_epoch: s.leader_epoch,
                },
            );
            asked.insert(tp.clone(), s.clone());
        }
        if asked.is_empty() {
            self.sleep(IDLE);
            return Ok(());
        }
        let plan = self.session.plan(&wanted);
        let partitions = plan.send.iter().map(|tp| {
            let sent = wanted[tp];
            let p = FetchPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(sent.leader_epoch)
                .with_fetch_offset(sent.fetch_offset)
                .with_log_start_offset(sent.log_start_offset)
                .with_last_fetched_epoch(-1)
                .with_partition_max_bytes(self.config.partition_max_bytes);
            (tp.topic.clone(), p)
        });
        let forgotten = plan
            .forget
            .iter()
            .map(|tp| (tp.topic.clone(), tp.partition));
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(self.config.broker_id))
            .with_max_wait_ms(self.config.wait_max_ms)
            .with_min_bytes(self.config.min_bytes)
            .with_max_bytes(self.config.response_max_bytes)
            .with_isolation_level(0)
            .with_session_id(plan.id)
            .with_session_epoch(plan.epoch)
            .with_topics(by_topic(partitions, |t, ps| {
                FetchTopic::default().with_topic(t).with_partitions(ps)
            }))
            .with_forgotten_topics_data(by_topic(forgotten, |t, ps| {
                ForgottenTopic::default().with_topic(t).with_partitions(ps)
            }));
        let response: FetchResponse = match self.conn.send(ApiKey::Fetch, FETCH_VERSION, &request) {
            Ok(r) => r,
            Err(e) => {
                self.session.drop_session();
                return Err(e);
            }
        };
        if !self
            .session
            .answered(&plan, wanted, response.error_code, response.session_id)
        {
            log::debug!(
                "fetch session {} with broker {} dropped (error {}): fetching in full",
                plan.id,
                self.leader,
                response.error_code
            );
            let session_error = [
                ResponseError::FetchSessionIdNotFound,
                ResponseError::InvalidFetchSessionEpoch,
            ];
            return match ResponseError::try_from_code(response.error_code) {
                Some(e) if session_error.contains(&e) => Ok(()),
                _ => Err(format!("fetch answered error {}", response.error_code)),
            };
        }
        // An incremental answer leaves out the partitions with nothing new. One that could
        // not be handled drops the session: the leader counts what it sent (a high
        // watermark, say) as heard, and only a full fetch makes it send that again.
        for t in &response.responses {
            for p in &t.partitions {
                let tp = TopicPartition::new(&t.topic.0, p.partition_index);
                let Some(s) = asked.get(&tp) else { continue };
                if let Err(e) = self.handle_partition(replicas, &tp, s, p) {
                    self.session.drop_session();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn handle_partition(
        &mut self,
        replicas: &ReplicaManager,
        tp: &TopicPartition,
        s: &FetchState,
        p: &kafka_protocol::messages::fetch_response::PartitionData,
    ) -> Result<(), String> {
        let epoch = s.leader_epoch;
        match ResponseError::try_from_code(p.error_code) {
            None => {
                let records = p.records.as_deref().unwrap_or(&[]);
                if follower_throttled(replicas, tp, self.config.broker_id) {
                    let now_ms = crate::broker::now_ms();
                    replicas
                        .quotas
                        .follower
                        .record(records.len() as u64, now_ms);
                }
                let high_watermark = p.high_watermark;
                match replicas.append_as_follower(
                    tp,
                    epoch,
                    s.fetch_offset,
                    records,
                    p.high_watermark,
                    p.log_start_offset,
                ) {
                    Ok(Some(end)) => self.update(tp, epoch, |st| {
                        if st.fetch_offset == s.fetch_offset {
                            st.fetch_offset = end;
                        }
                        st.refusals = 0;
                        st.in_sync = high_watermark <= st.fetch_offset;
                    }),
                    Ok(None) => self.update(tp, epoch, |st| {
                        st.refusals = 0;
                        st.in_sync = high_watermark <= st.fetch_offset;
                    }),
                    Err(e) => {
                        log::warn!("appending fetched records of {tp} failed: {e}");
                        self.back_off(tp, epoch);
                    }
                }
            }
            Some(ResponseError::OffsetOutOfRange) => self.reset_out_of_range(replicas, tp, s)?,
            Some(e) => {
                log::debug!("fetching {tp} from broker {}: {e:?}", self.leader);
                self.refused(tp, epoch, p.error_code);
            }
        }
        Ok(())
    }

    /// Kafka's `handleOffsetOutOfRange`: a leader whose log ends below this replica's end
    /// (unclean election) makes it truncate there; one whose log starts above it (retention)
    /// makes it start over at the leader's log start.
    fn reset_out_of_range(
        &mut self,
        replicas: &ReplicaManager,
        tp: &TopicPartition,
        s: &FetchState,
    ) -> Result<(), String> {
        let Some(log) = replicas.follower_log(tp, s.leader_epoch) else {
            return Ok(());
        };
        let leader_end = self.leader_offset(tp, s.leader_epoch, LATEST)?;
        let outcome = lock(&log).map_err(|e| e.to_string()).and_then(|mut l| {
            if leader_end < l.log_end_offset() {
                log::warn!(
                    "{tp}: the leader's log ends at {leader_end}, below this replica's {}; truncating",
                    l.log_end_offset()
                );
                l.truncate_to(leader_end).map_err(|e| e.to_string())?;
                return Ok(None);
            }
            Ok(Some(l.log_end_offset()))
        })?;
        let end = match outcome {
            None => leader_end,
            Some(end) => {
                let leader_start = self.leader_offset(tp, s.leader_epoch, EARLIEST)?;
                if end < leader_start {
                    lock(&log)
                        .map_err(|e| e.to_string())?
                        .truncate_fully_and_start_at(leader_start)
                        .map_err(|e| e.to_string())?;
                    leader_start
                } else {
                    end
                }
            }
        };
        self.update(tp, s.leader_epoch, |st| st.fetch_offset = end);
        Ok(())
    }

    /// The leader's earliest or latest offset of `tp` (ListOffsets as a replica).
    fn leader_offset(
        &mut self,
        tp: &TopicPartition,
        epoch: i32,
        which: i64,
    ) -> Result<i64, String> {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(self.config.broker_id))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(&tp.topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(tp.partition)
                    .with_current_leader_epoch(epoch)
                    .with_timestamp(which)])]);
        let response: ListOffsetsResponse =
            self.conn
                .send(ApiKey::ListOffsets, LIST_OFFSETS_VERSION, &request)?;
        let p = response
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == tp.partition)
            .ok_or("ListOffsets answered without the partition")?;
        if p.error_code != 0 {
            return Err(format!(
                "ListOffsets for {tp} answered error {}",
                p.error_code
            ));
        }
        Ok(p.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_that_does_not_know_yet_is_asked_again_soon_then_less_often() {
        let backoff = Duration::from_millis(1000);
        let not_leader = ResponseError::NotLeaderOrFollower.code();
        let delays: Vec<u64> = (0..8)
            .map(|n| retry_delay(not_leader, n, backoff).as_millis() as u64)
            .collect();
        assert_eq!(delays, [25, 50, 100, 200, 400, 800, 1000, 1000]);
        for code in [
            ResponseError::UnknownLeaderEpoch.code(),
            ResponseError::UnknownTopicOrPartition.code(),
        ] {
            assert_eq!(retry_delay(code, 0, backoff), FIRST_RETRY);
        }
        // No overflow however long the refusals go on.
        assert_eq!(retry_delay(not_leader, u32::MAX, backoff), backoff);
        // A shorter configured backoff caps the first retry too.
        assert_eq!(
            retry_delay(not_leader, 0, Duration::from_millis(10)),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn other_refusals_wait_the_whole_backoff() {
        let backoff = Duration::from_millis(1000);
        for code in [
            ResponseError::FencedLeaderEpoch.code(),
            ResponseError::KafkaStorageError.code(),
            ResponseError::UnknownServerError.code(),
        ] {
            assert_eq!(retry_delay(code, 0, backoff), backoff);
        }
    }

    fn sent(offset: i64) -> Sent {
        Sent {
            fetch_offset: offset,
            log_start_offset: 0,
            leader_epoch: 1,
        }
    }

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn a_session_names_only_what_changed_and_forgets_what_left() {
        let mut session = FollowerSession::default();
        let wanted: HashMap<_, _> = [(tp(0), sent(5)), (tp(1), sent(7))].into();
        let full = session.plan(&wanted);
        assert_eq!((full.id, full.epoch, full.send.len()), (0, 0, 2));
        assert!(session.answered(&full, wanted.clone(), 0, 42));
        // Nothing changed: an incremental fetch naming nothing.
        let idle = session.plan(&wanted);
        assert_eq!(
            idle,
            SessionPlan {
                id: 42,
                epoch: 1,
                send: vec![],
                forget: vec![]
            }
        );
        assert!(session.answered(&idle, wanted.clone(), 0, 42));
        // Partition 0 advanced, partition 1 left (delayed or moved), partition 2 joined.
        let next: HashMap<_, _> = [(tp(0), sent(9)), (tp(2), sent(0))].into();
        let plan = session.plan(&next);
        assert_eq!(
            (plan.epoch, plan.send.clone(), plan.forget.clone()),
            (2, vec![tp(0), tp(2)], vec![tp(1)])
        );
        assert!(session.answered(&plan, next.clone(), 0, 42));
        // A leader epoch change is a change too.
        let bumped: HashMap<_, _> = [
            (
                tp(0),
                Sent {
                    leader_epoch: 2,
                    ..sent(9)
                },
            ),
            (tp(2), sent(0)),
        ]
        .into();
        assert_eq!(session.plan(&bumped).send, vec![tp(0)]);
    }

    #[test]
    fn a_dropped_session_starts_over_with_a_full_fetch() {
        let wanted: HashMap<_, _> = [(tp(0), sent(5))].into();
        let established = || {
            let mut s = FollowerSession::default();
            let full = s.plan(&wanted);
            assert!(s.answered(&full, wanted.clone(), 0, 42));
            s
        };
        // The leader lost the session (restarted): a new one, under no id.
        let mut s = established();
        let plan = s.plan(&wanted);
        let not_found = ResponseError::FetchSessionIdNotFound.code();
        assert!(!s.answered(&plan, wanted.clone(), not_found, 0));
        let again = s.plan(&wanted);
        assert_eq!((again.id, again.epoch, again.send.len()), (0, 0, 1));
        // A wrong epoch, or a failed exchange: the full fetch names the old session,
        // which closes it.
        let mut s = established();
        let plan = s.plan(&wanted);
        let bad_epoch = ResponseError::InvalidFetchSessionEpoch.code();
        assert!(!s.answered(&plan, wanted.clone(), bad_epoch, 0));
        assert_eq!((s.plan(&wanted).id, s.plan(&wanted).epoch), (42, 0));
        let mut s = established();
        s.drop_session();
        assert_eq!(s.plan(&wanted).send.len(), 1);
        assert_eq!(s.plan(&wanted).epoch, 0);
        // No session given (the leader's cache is full): full fetches go on.
        let mut s = FollowerSession::default();
        let full = s.plan(&wanted);
        assert!(s.answered(&full, wanted.clone(), 0, 0));
        assert_eq!(s.plan(&wanted).epoch, 0);
        // The epoch wraps to 1, as Kafka's.
        let mut s = established();
        s.epoch = i32::MAX;
        let plan = s.plan(&wanted);
        assert!(s.answered(&plan, wanted.clone(), 0, 42));
        assert_eq!(s.epoch, 1);
    }
}

//! Incremental fetch sessions (KIP-227), Kafka's FetchSessionCache.
//!
//! A client that sends a full fetch with session epoch 0 gets a session id back (when a
//! cache slot is free or can be evicted); from then on it sends only what changed — new
//! partitions, changed fetch offsets, forgotten partitions — with the epoch counting up
//! from 1, and the broker answers only the partitions that have something to say: records,
//! a moved high watermark or log start offset, or an error. Everything else about a fetch
//! (what is read, min bytes, waiting in the purgatory) works on the session's whole
//! partition set, exactly as for a full fetch of the same partitions.
//!
//! The rules are Kafka's (FetchSession.scala):
//! - epoch -1 (final): the named session, if any, is closed and the fetch is sessionless;
//! - epoch 0 (initial): the named session, if any, is closed and a new one is made from
//!   the response, if the cache has room;
//! - epoch > 0: the session must exist (FETCH_SESSION_ID_NOT_FOUND), carry that epoch
//!   (INVALID_FETCH_SESSION_EPOCH) and use topic ids exactly when the request version does
//!   (FETCH_SESSION_TOPIC_ID_ERROR); a session left without partitions is closed and the
//!   fetch answered sessionless. When the response is written the epoch must still be the
//!   one this request moved it to (a duplicate request otherwise), and partitions that
//!   returned records move to the end of the session's order, so that the response size
//!   limit does not starve the partitions at the back.
//! - `max.incremental.fetch.session.cache.slots` bounds the sessions; when it is full a new
//!   session may evict the least recently used session idle for more than two minutes,
//!   or else (followers' sessions being privileged) the smallest session older than that
//!   which sorts before it by (privileged, size).
//!
//! Beyond Kafka: the partitions cached over all sessions are bounded too
//! ([`MAX_CACHED_PARTITIONS`]): incremental requests could otherwise add partitions without
//! end. A session an update would take past it is closed (FETCH_SESSION_ID_NOT_FOUND, after
//! which clients send full fetches), and a full fetch past it gets no session.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use kafka_protocol::ResponseError;

use crate::handler::fetch_writer::FetchResponseData;

pub const FINAL_EPOCH: i32 = -1;
pub const INITIAL_EPOCH: i32 = 0;
/// Kafka's MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS: a session is safe from eviction by
/// an unprivileged newcomer for this long after it was made, and stale once unused for it.
pub const EVICTION_MS: i64 = 120_000;
/// The most partitions all sessions together may hold.
pub const MAX_CACHED_PARTITIONS: usize = 1_000_000;
/// Fetch versions before 7 carry no session fields.
const SESSIONS_FROM: i16 = 7;
const TOPIC_IDS_FROM: i16 = 13;

/// How a session names topics: by id from Fetch v13, by name before.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum TopicKey {
    Id([u8; 16]),
    Name(Arc<str>),
}

impl TopicKey {
    /// The id written in responses (zeros for a topic named by name).
    pub fn id(&self) -> [u8; 16] {
        match self {
            TopicKey::Id(id) => *id,
            TopicKey::Name(_) => [0; 16],
        }
    }
}

/// One partition of a fetch: where to read and how much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionFetch {
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
    pub current_leader_epoch: i32,
}

/// One topic of a fetch: its key, its name (empty while a topic id is unresolved or
/// unknown) and partitions.
#[derive(Clone, Debug)]
pub struct TopicFetch {
    pub key: TopicKey,
    pub name: String,
    pub partitions: Vec<PartitionFetch>,
}

impl TopicFetch {
    pub fn resolved(&self) -> bool {
        !self.name.is_empty()
    }
}

/// A fetch request's session fields and partitions.
pub struct SessionRequest {
    pub version: i16,
    pub session_id: i32,
    pub epoch: i32,
    /// From a follower (its sessions are privileged in eviction).
    pub privileged: bool,
    pub topics: Vec<TopicFetch>,
    /// (topic, partitions) to drop from the session.
    pub forgotten: Vec<(TopicKey, Vec<i32>)>,
}

/// What a fetch is, as far as sessions go; decided when the request arrives, applied to
/// its response by [`FetchSessions::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// Answer every partition; session id 0.
    Sessionless,
    /// Answer every partition and make a session of them if there is room.
    Full {
        privileged: bool,
        uses_topic_ids: bool,
    },
    /// Answer only what changed, if the session is still at `epoch`.
    Incremental { session_id: i32, epoch: i32 },
    /// Answer this error at once, with no partitions and session id 0.
    Error(i16),
}

struct Cached {
    params: PartitionFetch,
    high_watermark: i64,
    log_start_offset: i64,
    /// Position in the session's order.
    seq: u64,
}

type PartitionKey = (TopicKey, i32);

struct Session {
    privileged: bool,
    uses_topic_ids: bool,
    creation_ms: i64,
    last_used_ms: i64,
    /// The epoch the next request must carry.
    epoch: i32,
    partitions: HashMap<PartitionKey, Cached>,
    order: BTreeMap<u64, PartitionKey>,
    next_seq: u64,
}

impl Session {
    fn push(&mut self, key: PartitionKey, params: PartitionFetch, hw: i64, log_start: i64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.clone());
        let cached = Cached {
            params,
            high_watermark: hw,
            log_start_offset: log_start,
            seq,
        };
        // A partition named twice in one request is kept once, at its last place.
        if let Some(old) = self.partitions.insert(key, cached) {
            self.order.remove(&old.seq);
        }
    }

    fn move_to_end(&mut self, key: &PartitionKey) {
        let seq = self.next_seq;
        if let Some(cached) = self.partitions.get_mut(key) {
            self.order.remove(&cached.seq);
            cached.seq = seq;
            self.order.insert(seq, key.clone());
            self.next_seq += 1;
        }
    }

    fn remove(&mut self, key: &PartitionKey) -> bool {
        match self.partitions.remove(key) {
            Some(cached) => {
                self.order.remove(&cached.seq);
                true
            }
            None => false,
        }
    }

    /// The session's partitions in order, consecutive partitions of one topic together
    /// (a topic may appear more than once, as in Kafka's responses).
    fn topics(&self) -> Vec<TopicFetch> {
        let mut out: Vec<TopicFetch> = Vec::new();
        for (topic, partition) in self.order.values() {
            let Some(cached) = self.partitions.get(&(topic.clone(), *partition)) else {
                continue;
            };
            match out.last_mut() {
                Some(last) if &last.key == topic => last.partitions.push(cached.params),
                _ => out.push(TopicFetch {
                    key: topic.clone(),
                    name: match topic {
                        TopicKey::Name(name) => name.to_string(),
                        TopicKey::Id(_) => String::new(),
                    },
                    partitions: vec![cached.params],
                }),
            }
        }
        out
    }

    /// Kafka's EvictableKey: (privileged, size), the id breaking ties.
    fn evictable_key(&self, id: i32) -> (bool, usize, i32) {
        (self.privileged, self.partitions.len(), id)
    }
}

/// The epoch after `epoch` (Kafka's FetchMetadata.nextEpoch).
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

struct Inner {
    sessions: HashMap<i32, Session>,
    cached_partitions: usize,
    rng: u64,
    evictions: u64,
    incremental_fetches: u64,
}

/// Counters for the metrics page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub sessions: usize,
    pub partitions: usize,
    pub evictions: u64,
    pub incremental_fetches: u64,
}

/// The broker's fetch session cache.
pub struct FetchSessions {
    inner: Mutex<Inner>,
    max_slots: usize,
    max_partitions: usize,
}

impl FetchSessions {
    pub fn new(max_slots: usize) -> FetchSessions {
        FetchSessions::with_partition_limit(max_slots, MAX_CACHED_PARTITIONS)
    }

    pub fn with_partition_limit(max_slots: usize, max_partitions: usize) -> FetchSessions {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        FetchSessions {
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                cached_partitions: 0,
                rng: seed,
                evictions: 0,
                incremental_fetches: 0,
            }),
            max_slots,
            max_partitions,
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> SessionStats {
        let inner = self.inner();
        SessionStats {
            sessions: inner.sessions.len(),
            partitions: inner.cached_partitions,
            evictions: inner.evictions,
            incremental_fetches: inner.incremental_fetches,
        }
    }

    /// Decides what a fetch is and returns the partitions it reads: the request's own, or
    /// for an incremental fetch the whole session's after applying the request to it.
    pub fn open(&self, request: SessionRequest, now_ms: i64) -> (Context, Vec<TopicFetch>) {
        if request.version < SESSIONS_FROM {
            return (Context::Sessionless, request.topics);
        }
        let uses_topic_ids = request.version >= TOPIC_IDS_FROM;
        let mut inner = self.inner();
        if request.epoch == INITIAL_EPOCH || request.epoch == FINAL_EPOCH {
            if request.session_id != 0 {
                inner.remove(request.session_id);
            }
            let context = if request.epoch == FINAL_EPOCH {
                Context::Sessionless
            } else {
                Context::Full {
                    privileged: request.privileged,
                    uses_topic_ids,
                }
            };
            return (context, request.topics);
        }
        let error = |e: ResponseError| (Context::Error(e.code()), Vec::new());
        let id = request.session_id;
        let Some(session) = inner.sessions.get_mut(&id) else {
            return error(ResponseError::FetchSessionIdNotFound);
        };
        if session.epoch != request.epoch {
            return error(ResponseError::InvalidFetchSessionEpoch);
        }
        if session.uses_topic_ids != uses_topic_ids {
            return error(ResponseError::FetchSessionTopicIdError);
        }
        let before = session.partitions.len();
        for topic in &request.topics {
            for p in &topic.partitions {
                let key = (topic.key.clone(), p.partition);
                match session.partitions.get_mut(&key) {
                    Some(cached) => cached.params = *p,
                    None => session.push(key, *p, -1, -1),
                }
            }
        }
        for (topic, partitions) in &request.forgotten {
            for &partition in partitions {
                session.remove(&(topic.clone(), partition));
            }
        }
        let after = session.partitions.len();
        let empty = after == 0;
        inner.cached_partitions = inner.cached_partitions + after - before;
        if inner.cached_partitions > self.max_partitions {
            log::info!(
                "fetch session {id}: closed, its {after} partitions would take the cache past \
                 {} partitions",
                self.max_partitions
            );
            inner.remove(id);
            return error(ResponseError::FetchSessionIdNotFound);
        }
        if empty {
            inner.remove(id);
            return (Context::Sessionless, request.topics);
        }
        let Some(session) = inner.sessions.get_mut(&id) else {
            return error(ResponseError::FetchSessionIdNotFound);
        };
        session.last_used_ms = now_ms;
        session.epoch = next_epoch(session.epoch);
        let context = Context::Incremental {
            session_id: id,
            epoch: session.epoch,
        };
        let topics = session.topics();
        inner.incremental_fetches += 1;
        (context, topics)
    }

    /// Applies a fetch's context to its response, built from `read` (the partitions
    /// [`open`](Self::open) returned, in the same order): sets the session id, makes the
    /// session of a full fetch, and keeps only the changed partitions of an incremental one.
    pub fn finish(
        &self,
        context: Context,
        read: &[TopicFetch],
        data: &mut FetchResponseData,
        now_ms: i64,
    ) {
        match context {
            Context::Sessionless => data.session_id = 0,
            Context::Error(code) => {
                data.error_code = code;
                data.session_id = 0;
                data.topics.clear();
            }
            Context::Full {
                privileged,
                uses_topic_ids,
            } => {
                data.session_id = self.create(privileged, uses_topic_ids, read, data, now_ms);
            }
            Context::Incremental { session_id, epoch } => {
                let mut inner = self.inner();
                let Some(session) = inner.sessions.get_mut(&session_id) else {
                    // Evicted while the fetch waited: the client starts over.
                    data.error_code = ResponseError::FetchSessionIdNotFound.code();
                    data.session_id = 0;
                    data.topics.clear();
                    return;
                };
                data.session_id = session_id;
                if session.epoch != epoch {
                    data.error_code = ResponseError::InvalidFetchSessionEpoch.code();
                    data.topics.clear();
                    return;
                }
                for (topic, fetched) in data.topics.iter_mut().zip(read) {
                    topic.partitions.retain(|p| {
                        let key = (fetched.key.clone(), p.index);
                        let Some(cached) = session.partitions.get_mut(&key) else {
                            return true;
                        };
                        let has_records = !p.records.is_empty();
                        let mut respond = has_records || p.error_code != 0;
                        if cached.high_watermark != p.high_watermark {
                            cached.high_watermark = p.high_watermark;
                            respond = true;
                        }
                        if cached.log_start_offset != p.log_start_offset {
                            cached.log_start_offset = p.log_start_offset;
                            respond = true;
                        }
                        if p.error_code != 0 {
                            cached.high_watermark = -1;
                        }
                        respond |= p.preferred_read_replica >= 0;
                        if has_records {
                            session.move_to_end(&key);
                        }
                        respond
                    });
                }
                data.topics.retain(|t| !t.partitions.is_empty());
            }
        }
    }

    /// Makes a session of a full fetch's partitions; its id, or 0 without room.
    fn create(
        &self,
        privileged: bool,
        uses_topic_ids: bool,
        read: &[TopicFetch],
        data: &FetchResponseData,
        now_ms: i64,
    ) -> i32 {
        let size: usize = read.iter().map(|t| t.partitions.len()).sum();
        let mut inner = self.inner();
        if size == 0 || inner.cached_partitions + size > self.max_partitions {
            return 0;
        }
        if inner.sessions.len() >= self.max_slots {
            match inner.evict_for(privileged, size, now_ms) {
                Some(id) => {
                    log::debug!("fetch session {id} evicted");
                    inner.evictions += 1;
                }
                None => return 0,
            }
        }
        let mut session = Session {
            privileged,
            uses_topic_ids,
            creation_ms: now_ms,
            last_used_ms: now_ms,
            epoch: next_epoch(INITIAL_EPOCH),
            partitions: HashMap::with_capacity(size),
            order: BTreeMap::new(),
            next_seq: 0,
        };
        for (topic, response) in read.iter().zip(&data.topics) {
            for (p, r) in topic.partitions.iter().zip(&response.partitions) {
                session.push(
                    (topic.key.clone(), p.partition),
                    *p,
                    r.high_watermark,
                    r.log_start_offset,
                );
            }
        }
        let size = session.partitions.len();
        let id = inner.new_id();
        inner.sessions.insert(id, session);
        inner.cached_partitions += size;
        id
    }
}

impl Inner {
    fn remove(&mut self, id: i32) {
        if let Some(session) = self.sessions.remove(&id) {
            self.cached_partitions -= session.partitions.len();
        }
    }

    fn new_id(&mut self) -> i32 {
        loop {
            // xorshift64*: ids only need to be unpredictable enough not to collide.
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let id = (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as i32;
            if id > 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Kafka's tryEvict: the least recently used session if it is stale, else the smallest
    /// evictable session if the newcomer sorts at or after it. The evicted id, if any.
    fn evict_for(&mut self, privileged: bool, size: usize, now_ms: i64) -> Option<i32> {
        let (&oldest, session) = self
            .sessions
            .iter()
            .min_by_key(|(id, s)| (s.last_used_ms, **id))?;
        let victim = if now_ms - session.last_used_ms > EVICTION_MS {
            Some(oldest)
        } else {
            self.sessions
                .iter()
                .filter(|(_, s)| {
                    let old = now_ms - s.creation_ms > EVICTION_MS;
                    old || (privileged && !s.privileged)
                })
                .map(|(id, s)| s.evictable_key(*id))
                .min()
                .filter(|key| (privileged, size, 0) >= *key)
                .map(|(_, _, id)| id)
        };
        if let Some(id) = victim {
            self.remove(id);
        }
        victim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::fetch_writer::{PartitionData, Records, TopicData};
    use bytes::Bytes;

    fn name(s: &str) -> TopicKey {
        TopicKey::Name(Arc::from(s))
    }

    fn fetch(partition: i32, offset: i64) -> PartitionFetch {
        PartitionFetch {
            partition,
            offset,
            max_bytes: 1024,
            current_leader_epoch: -1,
        }
    }

    fn topic(key: &TopicKey, partitions: &[(i32, i64)]) -> TopicFetch {
        TopicFetch {
            key: key.clone(),
            name: match key {
                TopicKey::Name(n) => n.to_string(),
                TopicKey::Id(_) => String::new(),
            },
            partitions: partitions.iter().map(|&(p, o)| fetch(p, o)).collect(),
        }
    }

    fn request(session_id: i32, epoch: i32, topics: Vec<TopicFetch>) -> SessionRequest {
        SessionRequest {
            version: 12,
            session_id,
            epoch,
            privileged: false,
            topics,
            forgotten: Vec::new(),
        }
    }

    /// The response a read of `read` gives: every partition at high watermark `hw`,
    /// with records for the partitions listed in `with_records`.
    fn response(read: &[TopicFetch], hw: i64, with_records: &[i32]) -> FetchResponseData {
        FetchResponseData {
            topics: read
                .iter()
                .map(|t| TopicData {
                    name: t.name.clone(),
                    id: t.key.id(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| PartitionData {
                            records: if with_records.contains(&p.partition) {
                                Records::Bytes(Bytes::from_static(b"batch"))
                            } else {
                                Records::Empty
                            },
                            high_watermark: hw,
                            log_start_offset: 0,
                            ..PartitionData::error(p.partition, 0)
                        })
                        .collect(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn answered(data: &FetchResponseData) -> Vec<i32> {
        data.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.index))
            .collect()
    }

    /// A full fetch of partitions 0..n of `t`; the new session's id.
    fn start(cache: &FetchSessions, t: &TopicKey, n: i32, now: i64) -> i32 {
        let parts: Vec<_> = (0..n).map(|p| (p, 0)).collect();
        let (ctx, read) = cache.open(request(0, 0, vec![topic(t, &parts)]), now);
        let mut data = response(&read, 10, &[]);
        cache.finish(ctx, &read, &mut data, now);
        data.session_id
    }

    #[test]
    fn incremental_fetches_answer_only_what_changed() {
        let cache = FetchSessions::new(10);
        let t = name("t");
        let id = start(&cache, &t, 3, 0);
        assert!(id > 0);
        // Nothing changed: the whole session is read, nothing is answered.
        let (ctx, read) = cache.open(request(id, 1, vec![]), 1);
        assert_eq!(
            ctx,
            Context::Incremental {
                session_id: id,
                epoch: 2
            }
        );
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].partitions.len(), 3);
        let mut data = response(&read, 10, &[]);
        cache.finish(ctx, &read, &mut data, 1);
        assert_eq!(data.session_id, id);
        assert!(answered(&data).is_empty());
        // Partition 1 has records; the high watermark moved for all.
        let (ctx, read) = cache.open(request(id, 2, vec![]), 2);
        let mut data = response(&read, 11, &[1]);
        cache.finish(ctx, &read, &mut data, 2);
        assert_eq!(answered(&data), vec![0, 1, 2]);
        // Partition 1 moved to the back of the order; the client's new offset is kept.
        let (ctx, read) = cache.open(request(id, 3, vec![topic(&t, &[(1, 5)])]), 3);
        let order: Vec<_> = read.iter().flat_map(|t| t.partitions.clone()).collect();
        assert_eq!(order, vec![fetch(0, 0), fetch(2, 0), fetch(1, 5)]);
        let mut data = response(&read, 11, &[]);
        cache.finish(ctx, &read, &mut data, 3);
        assert!(answered(&data).is_empty());
        // Forgetting every partition closes the session.
        let mut forget = request(id, 4, vec![]);
        forget.forgotten = vec![(t.clone(), vec![0, 1, 2])];
        let (ctx, read) = cache.open(forget, 4);
        assert_eq!(ctx, Context::Sessionless);
        assert!(read.is_empty());
        assert_eq!(cache.stats().sessions, 0);
        assert_eq!(cache.stats().partitions, 0);
        let (ctx, _) = cache.open(request(id, 5, vec![]), 5);
        assert_eq!(
            ctx,
            Context::Error(ResponseError::FetchSessionIdNotFound.code())
        );
    }

    #[test]
    fn errors_answer_every_time_and_sessions_check_epoch_and_id_use() {
        let cache = FetchSessions::new(10);
        let t = name("t");
        let id = start(&cache, &t, 1, 0);
        let (ctx, _) = cache.open(request(id, 7, vec![]), 1);
        assert_eq!(
            ctx,
            Context::Error(ResponseError::InvalidFetchSessionEpoch.code())
        );
        let mut v13 = request(id, 1, vec![]);
        v13.version = 13;
        let (ctx, _) = cache.open(v13, 1);
        assert_eq!(
            ctx,
            Context::Error(ResponseError::FetchSessionTopicIdError.code())
        );
        for epoch in 1..=2 {
            let (ctx, read) = cache.open(request(id, epoch, vec![]), 1);
            let mut data = response(&read, -1, &[]);
            data.topics[0].partitions[0].error_code = 6;
            cache.finish(ctx, &read, &mut data, 1);
            assert_eq!(answered(&data), vec![0], "epoch {epoch}");
        }
        // A duplicate: the session moved on before this response was written.
        let (ctx, read) = cache.open(request(id, 3, vec![]), 2);
        let (ctx2, read2) = cache.open(request(id, 4, vec![]), 2);
        let mut data = response(&read, 10, &[0]);
        cache.finish(ctx, &read, &mut data, 2);
        assert_eq!(
            data.error_code,
            ResponseError::InvalidFetchSessionEpoch.code()
        );
        assert!(answered(&data).is_empty());
        let mut data = response(&read2, 10, &[0]);
        cache.finish(ctx2, &read2, &mut data, 2);
        assert_eq!(answered(&data), vec![0]);
        // Epoch 0 naming the session closes it and opens a new one; -1 just closes.
        let id2 = {
            let (ctx, read) = cache.open(request(id, 0, vec![topic(&t, &[(0, 0)])]), 3);
            let mut data = response(&read, 10, &[]);
            cache.finish(ctx, &read, &mut data, 3);
            data.session_id
        };
        assert!(id2 > 0 && id2 != id);
        assert_eq!(cache.stats().sessions, 1);
        let (ctx, _) = cache.open(request(id2, -1, vec![topic(&t, &[(0, 0)])]), 4);
        assert_eq!(ctx, Context::Sessionless);
        assert_eq!(cache.stats().sessions, 0);
        // Before v7 there are no sessions at all.
        let mut v6 = request(0, 0, vec![topic(&t, &[(0, 0)])]);
        v6.version = 6;
        assert_eq!(cache.open(v6, 5).0, Context::Sessionless);
    }

    #[test]
    fn eviction_follows_kafkas_rules() {
        let cache = FetchSessions::new(2);
        let t = name("t");
        let a = start(&cache, &t, 5, 0);
        let b = start(&cache, &t, 3, 0);
        assert!(a > 0 && b > 0);
        // Full, both fresh: a newcomer gets no session.
        assert_eq!(start(&cache, &t, 10, 1_000), 0);
        assert_eq!(cache.stats().sessions, 2);
        // A follower's session may evict an unprivileged one: the smaller (b).
        let (ctx, read) = cache.open(
            SessionRequest {
                privileged: true,
                ..request(0, 0, vec![topic(&t, &[(0, 0)])])
            },
            2_000,
        );
        let mut data = response(&read, 10, &[]);
        cache.finish(ctx, &read, &mut data, 2_000);
        let c = data.session_id;
        assert!(c > 0);
        assert_eq!(
            cache.open(request(b, 1, vec![]), 2_001).0,
            Context::Error(ResponseError::FetchSessionIdNotFound.code())
        );
        // Past the eviction time, a stale session (a, unused since 0) goes first.
        let d = start(&cache, &t, 1, EVICTION_MS + 1);
        assert!(d > 0);
        assert_eq!(
            cache.open(request(a, 1, vec![]), EVICTION_MS + 2).0,
            Context::Error(ResponseError::FetchSessionIdNotFound.code())
        );
        assert_eq!(cache.stats().evictions, 2);
        // No slots: never a session.
        let none = FetchSessions::new(0);
        assert_eq!(start(&none, &t, 1, 0), 0);
    }

    #[test]
    fn cached_partitions_are_bounded() {
        let cache = FetchSessions::with_partition_limit(10, 4);
        let t = name("t");
        assert_eq!(start(&cache, &t, 5, 0), 0, "larger than the bound");
        let id = start(&cache, &t, 3, 0);
        assert!(id > 0);
        let (ctx, _) = cache.open(request(id, 1, vec![topic(&t, &[(3, 0)])]), 1);
        assert!(matches!(ctx, Context::Incremental { .. }));
        assert_eq!(cache.stats().partitions, 4);
        let (ctx, _) = cache.open(request(id, 2, vec![topic(&t, &[(4, 0)])]), 2);
        assert_eq!(
            ctx,
            Context::Error(ResponseError::FetchSessionIdNotFound.code())
        );
        assert_eq!(
            cache.stats(),
            SessionStats {
                incremental_fetches: 1,
                ..Default::default()
            }
        );
    }

    impl FetchSessions {
        /// The cache's bookkeeping agrees with its sessions.
        fn check(&self) {
            let inner = self.inner();
            let sum: usize = inner.sessions.values().map(|s| s.partitions.len()).sum();
            assert_eq!(inner.cached_partitions, sum);
            assert!(inner.sessions.len() <= self.max_slots);
            assert!(sum <= self.max_partitions);
            for s in inner.sessions.values() {
                assert_eq!(s.order.len(), s.partitions.len());
                for (seq, key) in &s.order {
                    assert_eq!(s.partitions[key].seq, *seq);
                }
            }
        }
    }

    proptest::proptest! {
        /// Any sequence of fetches — full, incremental, closing; right or wrong ids and
        /// epochs; adding and forgetting partitions — keeps the cache consistent, and an
        /// incremental fetch reads exactly the partitions added and not forgotten.
        #[test]
        fn any_fetch_sequence_keeps_the_cache_consistent(
            ops in proptest::collection::vec(
                (0u8..4, 0usize..4, -1i32..4, proptest::collection::vec(0i32..6, 0..4),
                 proptest::collection::vec(0i32..6, 0..3), proptest::bool::ANY),
                1..60,
            )
        ) {
            let cache = FetchSessions::with_partition_limit(3, 12);
            let t = name("t");
            // Session ids handed out, and what each should hold.
            let mut known: Vec<(i32, i32, std::collections::BTreeSet<i32>)> = Vec::new();
            for (now, (kind, which, epoch, add, forget, records)) in ops.into_iter().enumerate() {
                let now = now as i64 * 50_000;
                let target = known.get(which).map(|k| (k.0, k.1));
                let (session_id, epoch) = match (kind, target) {
                    (0, _) | (_, None) => (0, 0),
                    (1, Some((id, e))) => (id, e),
                    (2, Some((id, _))) => (id, epoch),
                    (_, Some((id, _))) => (id, -1),
                };
                let adds: Vec<(i32, i64)> = add.iter().map(|&p| (p, 0)).collect();
                let mut req = request(session_id, epoch, vec![topic(&t, &adds)]);
                req.forgotten = vec![(t.clone(), forget.clone())];
                let (ctx, read) = cache.open(req, now);
                if let Context::Incremental { session_id: id, .. } = ctx {
                    let entry = known.iter_mut().find(|k| k.0 == id).expect("a known session");
                    entry.2.extend(add.iter().copied());
                    for p in &forget {
                        entry.2.remove(p);
                    }
                    let mut got: Vec<i32> =
                        read.iter().flat_map(|t| t.partitions.iter().map(|p| p.partition)).collect();
                    got.sort_unstable();
                    got.dedup();
                    let want: Vec<i32> = entry.2.iter().copied().collect();
                    proptest::prop_assert_eq!(got, want);
                }
                let with: Vec<i32> = if records { add.clone() } else { Vec::new() };
                let mut data = response(&read, now, &with);
                cache.finish(ctx, &read, &mut data, now);
                match ctx {
                    Context::Full { .. } if data.session_id > 0 => {
                        known.push((data.session_id, 1, add.iter().copied().collect()));
                    }
                    Context::Incremental { session_id: id, epoch } => {
                        if let Some(k) = known.iter_mut().find(|k| k.0 == id) {
                            k.1 = epoch;
                        }
                    }
                    _ => {}
                }
                cache.check();
            }
        }
    }

    #[test]
    fn topic_ids_key_sessions_from_v13() {
        let cache = FetchSessions::new(10);
        let t = TopicKey::Id([7; 16]);
        let mut full = request(0, 0, vec![topic(&t, &[(0, 0), (1, 0)])]);
        full.version = 17;
        let (ctx, read) = cache.open(full, 0);
        let mut data = response(&read, 10, &[]);
        cache.finish(ctx, &read, &mut data, 0);
        let id = data.session_id;
        let mut forget = request(id, 1, vec![]);
        forget.version = 17;
        forget.forgotten = vec![(t.clone(), vec![0])];
        let (ctx, read) = cache.open(forget, 1);
        assert!(matches!(ctx, Context::Incremental { .. }));
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].key, t);
        assert!(!read[0].resolved(), "names are resolved by the caller");
        assert_eq!(read[0].partitions, vec![fetch(1, 0)]);
    }
}

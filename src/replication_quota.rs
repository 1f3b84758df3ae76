//! Replication throttles (KIP-73), as a ZooKeeper-mode Kafka has them: a byte rate per
//! broker for what it sends as a leader to followers (`leader.replication.throttled.rate`)
//! and for what it copies as a follower (`follower.replication.throttled.rate`), both
//! dynamic broker configs, applied only to the replicas a topic names in
//! `leader.replication.throttled.replicas` / `follower.replication.throttled.replicas`
//! (`partition:broker` pairs, or `*` for all). `kafka-reassign-partitions --throttle` sets
//! all four around a reassignment.
//!
//! Kafka's rules, kept: the rate is measured over `replication.quota.window.num` windows of
//! `replication.quota.window.size.seconds` (Kafka's SimpleRate); a throttled partition
//! stops moving only while the rate is over the bound *and* the replica is out of the ISR
//! (an in-sync replica is never held back, so a throttle cannot shrink the ISR); the bytes
//! of every throttled partition count toward the rate, in sync or not. A leader answers a
//! throttled partition without records (and a parked fetch does not complete on its
//! data); a follower leaves it out of its next fetch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::metadata_cache::TopicConfig;

/// No throttle (Kafka's default, Long.MAX_VALUE).
pub const UNLIMITED: i64 = i64::MAX;

/// The topic configs naming the throttled replicas.
pub const LEADER_THROTTLED_REPLICAS: &str = "leader.replication.throttled.replicas";
pub const FOLLOWER_THROTTLED_REPLICAS: &str = "follower.replication.throttled.replicas";

/// A byte rate over the last `windows` windows of `window_ms` (Kafka's SimpleRate: the
/// sum of the samples over the time since the oldest one began, at least one window).
#[derive(Debug)]
struct Rate {
    window_ms: i64,
    windows: usize,
    /// (window start, bytes), oldest first; at most `windows`.
    samples: VecDeque<(i64, u64)>,
}

impl Rate {
    fn new(window_ms: i64, windows: usize) -> Rate {
        Rate {
            window_ms: window_ms.max(1),
            windows: windows.max(1),
            samples: VecDeque::new(),
        }
    }

    /// Drops the samples that fell out of the measured span.
    fn purge(&mut self, now_ms: i64) {
        let span = self.window_ms.saturating_mul(self.windows as i64);
        while let Some(&(start, _)) = self.samples.front() {
            if now_ms.saturating_sub(start) >= span {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    fn record(&mut self, bytes: u64, now_ms: i64) {
        self.purge(now_ms);
        match self.samples.back_mut() {
            Some((start, n)) if now_ms.saturating_sub(*start) < self.window_ms => {
                *n = n.saturating_add(bytes);
            }
            _ => {
                if self.samples.len() == self.windows {
                    self.samples.pop_front();
                }
                self.samples.push_back((now_ms, bytes));
            }
        }
    }

    /// Bytes per second.
    fn per_second(&mut self, now_ms: i64) -> f64 {
        self.purge(now_ms);
        let Some(&(oldest, _)) = self.samples.front() else {
            return 0.0;
        };
        let total: u64 = self.samples.iter().map(|(_, n)| n).sum();
        let elapsed = now_ms.saturating_sub(oldest).max(self.window_ms);
        total as f64 * 1000.0 / elapsed as f64
    }
}

/// One direction's throttle on this broker (Kafka's ReplicationQuotaManager).
#[derive(Debug)]
pub struct ReplicationQuota {
    /// Bytes per second; [`UNLIMITED`] for none.
    bound: AtomicI64,
    rate: Mutex<Rate>,
    /// Bytes of throttled partitions counted, and partitions held back, since the start.
    bytes: AtomicU64,
    held: AtomicU64,
}

impl ReplicationQuota {
    pub fn new(window_ms: i64, windows: usize) -> ReplicationQuota {
        ReplicationQuota {
            bound: AtomicI64::new(UNLIMITED),
            rate: Mutex::new(Rate::new(window_ms, windows)),
            bytes: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    pub fn set_bound(&self, bytes_per_second: i64) {
        self.bound.store(bytes_per_second.max(0), Ordering::Relaxed);
    }

    pub fn bound(&self) -> i64 {
        self.bound.load(Ordering::Relaxed)
    }

    /// Counts `bytes` of throttled partitions sent or copied.
    pub fn record(&self, bytes: u64, now_ms: i64) {
        if bytes > 0 {
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            self.rate().record(bytes, now_ms);
        }
    }

    /// The measured rate, bytes per second.
    pub fn rate_per_second(&self, now_ms: i64) -> f64 {
        self.rate().per_second(now_ms)
    }

    /// Whether the measured rate is over the bound (never without one).
    pub fn exceeded(&self, now_ms: i64) -> bool {
        let bound = self.bound();
        bound != UNLIMITED && self.rate_per_second(now_ms) > bound as f64
    }

    /// Kafka's `shouldLeaderThrottle` / `shouldFollowerThrottle`: hold back a replica's
    /// partition now? `throttled`: the topic's list names it ([`is_throttled`]).
    pub fn holds_back(&self, throttled: bool, in_sync: bool, now_ms: i64) -> bool {
        let held = throttled && !in_sync && self.exceeded(now_ms);
        if held {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
        held
    }

    /// (bytes of throttled partitions counted, partitions held back) since the start.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.bytes.load(Ordering::Relaxed),
            self.held.load(Ordering::Relaxed),
        )
    }

    fn rate(&self) -> std::sync::MutexGuard<'_, Rate> {
        self.rate.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The two throttles of a broker.
#[derive(Debug)]
pub struct ReplicationQuotas {
    pub leader: ReplicationQuota,
    pub follower: ReplicationQuota,
}

impl ReplicationQuotas {
    pub fn new(window_ms: i64, windows: usize) -> ReplicationQuotas {
        ReplicationQuotas {
            leader: ReplicationQuota::new(window_ms, windows),
            follower: ReplicationQuota::new(window_ms, windows),
        }
    }
}

/// Whether the topic's list `key` ([`LEADER_THROTTLED_REPLICAS`] or
/// [`FOLLOWER_THROTTLED_REPLICAS`]) names `partition` on `broker`.
pub fn names_replica(config: &TopicConfig, key: &str, partition: i32, broker: i32) -> bool {
    is_throttled(
        config.overrides.get(key).map(String::as_str),
        partition,
        broker,
    )
}

/// Whether a topic's `*.replication.throttled.replicas` value names `partition` on
/// `broker`: `*`, or a `partition:broker` pair of the list (validated when it was set; an
/// entry that does not parse names nothing).
pub fn is_throttled(value: Option<&str>, partition: i32, broker: i32) -> bool {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return false;
    };
    if value == "*" {
        return true;
    }
    value.split(',').any(|entry| {
        let mut parts = entry.trim().splitn(2, ':');
        let p = parts.next().and_then(|p| p.trim().parse::<i32>().ok());
        let b = parts.next().and_then(|b| b.trim().parse::<i32>().ok());
        p == Some(partition) && b == Some(broker)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_the_bytes_over_the_time_since_the_oldest_window() {
        let mut r = Rate::new(1000, 3);
        assert_eq!(r.per_second(0), 0.0);
        r.record(1000, 0);
        assert_eq!(
            r.per_second(0),
            1000.0,
            "at least one window is the divisor"
        );
        assert_eq!(r.per_second(500), 1000.0);
        r.record(1000, 1500);
        assert_eq!(r.per_second(2000), 1000.0, "2000 bytes over 2 s");
        // At 3000 the first window (0..1000) is older than 3 windows: gone.
        r.record(0, 3000);
        let rate = r.per_second(3000);
        assert!(
            (rate - 1000.0 / 1.5).abs() < 1e-6,
            "1000 bytes over 1.5 s: {rate}"
        );
        assert_eq!(r.per_second(10_000), 0.0, "everything expired");
        assert!(r.samples.is_empty());
    }

    #[test]
    fn at_most_the_configured_windows_are_kept() {
        let mut r = Rate::new(10, 4);
        for t in 0..100 {
            r.record(1, t * 10);
            assert!(r.samples.len() <= 4);
        }
    }

    #[test]
    fn a_quota_holds_back_only_throttled_out_of_sync_replicas_over_the_bound() {
        let q = ReplicationQuota::new(1000, 11);
        q.record(1_000_000, 0);
        assert!(!q.exceeded(0), "no bound, never exceeded");
        assert!(!q.holds_back(true, false, 0));
        q.set_bound(100_000);
        assert!(q.exceeded(0));
        assert!(q.holds_back(true, false, 0));
        assert!(!q.holds_back(true, true, 0), "in sync: never");
        assert!(!q.holds_back(false, false, 0), "not throttled");
        assert!(q.holds_back(true, false, 500));
        q.set_bound(10_000_000);
        assert!(!q.holds_back(true, false, 0), "under the bound");
        q.set_bound(100_000);
        assert!(!q.exceeded(20_000), "the bytes expired");
        assert_eq!(
            q.totals(),
            (1_000_000, 2),
            "bytes counted, partitions held back"
        );
    }

    #[test]
    fn throttled_replica_lists() {
        assert!(is_throttled(Some("*"), 7, 3));
        assert!(is_throttled(Some(" 0:1 , 2:3 "), 2, 3));
        assert!(!is_throttled(Some("0:1,2:3"), 2, 1));
        assert!(!is_throttled(Some("0:1,2:3"), 1, 0));
        assert!(!is_throttled(Some(""), 0, 0));
        assert!(!is_throttled(None, 0, 0));
        assert!(
            !is_throttled(Some("x:y,0"), 0, 0),
            "what does not parse names nothing"
        );
    }
}

//! Connection limits: `max.connections` (total) and `max.connections.per.ip`.
//!
//! Shared by all acceptors (`Arc`, one mutex). An acceptor takes a [`ConnectionPermit`]
//! before handing a socket to a processor; the permit travels with the connection and gives
//! the slot back when the connection is dropped, whichever thread drops it, so the counts
//! cannot leak. The same acquire/release keeps `connections_accepted`, `connections_closed`
//! and `connections_active` in [`ReactorStats`].
//!
//! Policy (Kafka's): over the per-IP limit a new connection is closed at once; at the total
//! limit acceptors stop accepting (the kernel's backlog holds new clients) and resume when
//! the count is at or below 90 % of the limit — see [`accept_resume_threshold`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::stats::ReactorStats;

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QuotaExceeded {
    #[error("max.connections {max} reached")]
    Total { max: usize },
    #[error("max.connections.per.ip {max} reached for {ip}")]
    PerIp { ip: IpAddr, max: usize },
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The connection counts of one server.
#[derive(Debug)]
pub(crate) struct ConnectionQuotas {
    total_max: usize,
    per_ip_max: usize,
    counts: Mutex<Counts>,
    stats: Arc<ReactorStats>,
}

impl ConnectionQuotas {
    pub fn new(total_max: usize, per_ip_max: usize, stats: Arc<ReactorStats>) -> ConnectionQuotas {
        assert!(total_max >= 1 && per_ip_max >= 1);
        ConnectionQuotas {
            total_max,
            per_ip_max,
            counts: Mutex::new(Counts::default()),
            stats,
        }
    }

    pub fn total_max(&self) -> usize {
        self.total_max
    }

    /// Connections currently holding a permit.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Takes a slot for a connection from `ip`, or says which limit is reached.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, QuotaExceeded> {
        let mut counts = self.lock();
        if counts.total >= self.total_max {
            return Err(QuotaExceeded::Total {
                max: self.total_max,
            });
        }
        let per_ip = counts.per_ip.entry(ip).or_insert(0);
        if *per_ip >= self.per_ip_max {
            return Err(QuotaExceeded::PerIp {
                ip,
                max: self.per_ip_max,
            });
        }
        *per_ip += 1;
        counts.total += 1;
        self.stats
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        self.stats
            .connections_active
            .fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionPermit {
            quotas: Arc::clone(self),
            ip,
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut counts = self.lock();
        let per_ip = counts
            .per_ip
            .get_mut(&ip)
            .expect("released a permit that was never taken");
        assert!(*per_ip > 0);
        *per_ip -= 1;
        if *per_ip == 0 {
            counts.per_ip.remove(&ip);
        }
        assert!(counts.total > 0);
        counts.total -= 1;
        self.stats
            .connections_closed
            .fetch_add(1, Ordering::Relaxed);
        self.stats
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // The counts are consistent at every unlock, so a panic elsewhere cannot corrupt them.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One admitted connection's share of the limits; released on drop.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    quotas: Arc<ConnectionQuotas>,
    ip: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.quotas.release(self.ip);
    }
}

/// Paused acceptors resume once the total is at or below this: 90 % of the limit.
pub(crate) fn accept_resume_threshold(total_max: usize) -> usize {
    (total_max as u128 * 9 / 10) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(total_max: usize, per_ip_max: usize) -> (Arc<ConnectionQuotas>, Arc<ReactorStats>) {
        let stats = Arc::new(ReactorStats::new(1, 1));
        (
            Arc::new(ConnectionQuotas::new(
                total_max,
                per_ip_max,
                Arc::clone(&stats),
            )),
            stats,
        )
    }

    #[test]
    fn per_ip_and_total_limits_and_release_on_drop() {
        let (quotas, stats) = quotas(3, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = quotas.try_acquire(a).expect("first from a");
        let a2 = quotas.try_acquire(a).expect("second from a");
        assert_eq!(
            quotas.try_acquire(a).unwrap_err(),
            QuotaExceeded::PerIp { ip: a, max: 2 }
        );
        let b1 = quotas.try_acquire(b).expect("first from b");
        assert_eq!(
            quotas.try_acquire(b).unwrap_err(),
            QuotaExceeded::Total { max: 3 }
        );
        assert_eq!(quotas.total(), 3);
        drop(a1);
        assert_eq!(quotas.total(), 2);
        let a3 = quotas.try_acquire(a).expect("a has room again");
        drop((a2, a3, b1));
        assert_eq!(quotas.total(), 0);
        assert_eq!(stats.connections_accepted.load(Ordering::Relaxed), 4);
        assert_eq!(stats.connections_closed.load(Ordering::Relaxed), 4);
        assert_eq!(stats.connections_active.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn resume_threshold_is_ninety_percent() {
        assert_eq!(accept_resume_threshold(1), 0);
        assert_eq!(accept_resume_threshold(2), 1);
        assert_eq!(accept_resume_threshold(100), 90);
        assert_eq!(accept_resume_threshold(i32::MAX as usize), 1_932_735_282);
    }
}

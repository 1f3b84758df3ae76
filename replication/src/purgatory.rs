//! The purgatory: delayed operations watched by key and expired by a timer thread.
//!
//! An operation is first tried at once (`try_complete_else_watch`); if it cannot complete it
//! is registered under each of its keys and with the timer. Whoever changes the state behind
//! a key (an append to a partition, say) calls `check_and_complete(key)`. Exactly one caller
//! wins the right to complete an operation (an atomic flag), whether by completion or by
//! expiry, so a response is sent once. Thread safe; the timer runs on its own thread
//! (`kb-purgatory`). At most `max_operations` are in flight: past that, new operations are
//! completed at once (a bounded purgatory never grows without limit). An operation completed
//! before its deadline leaves the timer's heap soon after: the timer drops finished entries
//! whenever they outnumber the waiting ones, so the heap stays within twice what waits.

use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// What a delayed operation does. `can_complete` is a cheap check; `complete` builds and
/// sends the response (called once, by the purgatory, on success or expiry).
pub trait DelayedOperation: Send + Sync + 'static {
    fn can_complete(&self) -> bool;
    fn complete(&self, expired: bool);
}

struct Entry {
    op: Box<dyn DelayedOperation>,
    done: AtomicBool,
}

impl Entry {
    /// Claims the right to complete; true for exactly one caller.
    fn claim(&self) -> bool {
        self.done
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

struct Timed {
    deadline: Instant,
    entry: Arc<Entry>,
}
impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        self.deadline == o.deadline
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.deadline.cmp(&self.deadline) // min-heap
    }
}

enum TimerMsg {
    Add(Timed),
    ExpireAll,
}

pub struct Purgatory<K: Eq + Hash + Clone + Send + 'static> {
    name: &'static str,
    watchers: Mutex<HashMap<K, Vec<Arc<Entry>>>>,
    in_flight: Arc<AtomicUsize>,
    /// Entries in the timer's heap (waiting, or finished and not yet dropped).
    timed: Arc<AtomicUsize>,
    max_operations: usize,
    timer_tx: Sender<TimerMsg>,
    timer: Mutex<Option<JoinHandle<()>>>,
}

impl<K: Eq + Hash + Clone + Send + 'static> Purgatory<K> {
    pub fn new(name: &'static str, max_operations: usize) -> Self {
        assert!(max_operations > 0);
        let (timer_tx, timer_rx) = crossbeam_channel::unbounded();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let timed = Arc::new(AtomicUsize::new(0));
        let (counter, heap_len) = (Arc::clone(&in_flight), Arc::clone(&timed));
        let timer = std::thread::Builder::new()
            .name("kb-purgatory".into())
            .spawn(move || run_timer(timer_rx, counter, heap_len))
            .expect("spawning the purgatory timer thread");
        Purgatory {
            name,
            watchers: Mutex::new(HashMap::new()),
            in_flight,
            timed,
            max_operations,
            timer_tx,
            timer: Mutex::new(Some(timer)),
        }
    }

    /// Operations waiting now.
    pub fn len(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries the timer holds now, finished ones not yet dropped included.
    pub fn timer_entries(&self) -> usize {
        self.timed.load(Ordering::Acquire)
    }

    /// Completes `op` now if it can (or if the purgatory is full), else watches it under
    /// `keys` until `timeout` expires.
    pub fn try_complete_else_watch(
        &self,
        op: Box<dyn DelayedOperation>,
        keys: &[K],
        timeout: Duration,
    ) {
        let entry = Arc::new(Entry {
            op,
            done: AtomicBool::new(false),
        });
        if entry.op.can_complete() || keys.is_empty() || self.len() >= self.max_operations {
            if self.len() >= self.max_operations {
                log::warn!(
                    "purgatory={} full at {} operations; completing early",
                    self.name,
                    self.max_operations
                );
            }
            if entry.claim() {
                entry.op.complete(false);
            }
            return;
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        {
            let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
            for k in keys {
                watchers
                    .entry(k.clone())
                    .or_default()
                    .push(Arc::clone(&entry));
            }
        }
        // A state change between the first check and the registration must not be missed.
        if entry.op.can_complete() && entry.claim() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            entry.op.complete(false);
            return;
        }
        let timed = Timed {
            deadline: Instant::now() + timeout,
            entry,
        };
        if self.timer_tx.send(TimerMsg::Add(timed)).is_err() {
            log::error!("purgatory={} timer is gone", self.name);
        }
    }

    /// Completes whatever watched under `key` can now complete; drops finished entries.
    pub fn check_and_complete(&self, key: &K) -> usize {
        let candidates: Vec<Arc<Entry>> = {
            let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
            let Some(list) = watchers.get_mut(key) else {
                return 0;
            };
            list.retain(|e| !e.is_done());
            if list.is_empty() {
                watchers.remove(key);
                return 0;
            }
            list.clone()
        };
        let mut completed = 0;
        for entry in candidates {
            if !entry.is_done() && entry.op.can_complete() && entry.claim() {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                entry.op.complete(false);
                completed += 1;
            }
        }
        if completed > 0 {
            let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(list) = watchers.get_mut(key) {
                list.retain(|e| !e.is_done());
                if list.is_empty() {
                    watchers.remove(key);
                }
            }
        }
        completed
    }

    /// Drops finished entries from every watcher list (called periodically).
    pub fn purge_completed(&self) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.retain(|_, list| {
            list.retain(|e| !e.is_done());
            !list.is_empty()
        });
    }

    /// Expires every waiting operation now (shutdown) and stops the timer.
    pub fn shutdown(&self) {
        let _ = self.timer_tx.send(TimerMsg::ExpireAll);
        if let Some(handle) = self.timer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
        self.purge_completed();
    }
}

/// Finished entries the heap may hold before it is compacted regardless of the ratio.
const HEAP_SLACK: usize = 64;

fn run_timer(rx: Receiver<TimerMsg>, in_flight: Arc<AtomicUsize>, heap_len: Arc<AtomicUsize>) {
    let mut heap: BinaryHeap<Timed> = BinaryHeap::new();
    let expire = |t: Timed| {
        if t.entry.claim() {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            t.entry.op.complete(true);
        }
    };
    loop {
        let now = Instant::now();
        while heap
            .peek()
            .is_some_and(|t| t.deadline <= now || t.entry.is_done())
        {
            if let Some(t) = heap.pop() {
                expire(t);
            }
        }
        // Operations completed early sit in the heap until their deadline reaches the top:
        // drop them once they outnumber the waiting ones (amortised O(1) per operation).
        if heap.len() > 2 * in_flight.load(Ordering::Acquire) + HEAP_SLACK {
            heap.retain(|t| !t.entry.is_done());
        }
        heap_len.store(heap.len(), Ordering::Release);
        let wait = heap.peek().map_or(Duration::from_millis(500), |t| {
            t.deadline.saturating_duration_since(now)
        });
        match rx.recv_timeout(wait) {
            Ok(TimerMsg::Add(t)) => heap.push(t),
            Ok(TimerMsg::ExpireAll) | Err(RecvTimeoutError::Disconnected) => {
                while let Some(t) = heap.pop() {
                    expire(t);
                }
                heap_len.store(0, Ordering::Release);
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    struct Op {
        ready: Arc<AtomicI64>,
        completions: Arc<AtomicI64>,
        expired: Arc<AtomicI64>,
    }
    impl DelayedOperation for Op {
        fn can_complete(&self) -> bool {
            self.ready.load(Ordering::SeqCst) > 0
        }
        fn complete(&self, expired: bool) {
            self.completions.fetch_add(1, Ordering::SeqCst);
            if expired {
                self.expired.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn op() -> (Box<Op>, Arc<AtomicI64>, Arc<AtomicI64>, Arc<AtomicI64>) {
        let (r, c, e) = (
            Arc::new(AtomicI64::new(0)),
            Arc::new(AtomicI64::new(0)),
            Arc::new(AtomicI64::new(0)),
        );
        (
            Box::new(Op {
                ready: r.clone(),
                completions: c.clone(),
                expired: e.clone(),
            }),
            r,
            c,
            e,
        )
    }

    #[test]
    fn completes_once_by_key_or_by_timer() {
        let p: Purgatory<u32> = Purgatory::new("test", 100);
        let (o, ready, done, expired) = op();
        p.try_complete_else_watch(o, &[1, 2], Duration::from_secs(60));
        assert_eq!(p.len(), 1);
        assert_eq!(p.check_and_complete(&1), 0);
        ready.store(1, Ordering::SeqCst);
        assert_eq!(p.check_and_complete(&2), 1);
        assert_eq!(p.check_and_complete(&1), 0, "completed once only");
        assert_eq!(
            (done.load(Ordering::SeqCst), expired.load(Ordering::SeqCst)),
            (1, 0)
        );
        let (o, _, done, expired) = op();
        p.try_complete_else_watch(o, &[3], Duration::from_millis(20));
        while done.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(expired.load(Ordering::SeqCst), 1);
        assert!(p.is_empty());
        p.shutdown();
    }

    #[test]
    fn operations_completed_early_leave_the_timer() {
        let p: Purgatory<u32> = Purgatory::new("test", 10_000);
        let mut readies = Vec::new();
        for i in 0..1000 {
            let (o, ready, _, _) = op();
            p.try_complete_else_watch(o, &[i], Duration::from_secs(600));
            readies.push(ready);
        }
        for (i, ready) in readies.iter().enumerate() {
            ready.store(1, Ordering::SeqCst);
            assert_eq!(p.check_and_complete(&(i as u32)), 1);
        }
        assert!(p.is_empty());
        // One more operation wakes the timer, which drops the finished ones (waiting for
        // the timer thread, not for any deadline: theirs are ten minutes away).
        let (o, _, _, _) = op();
        p.try_complete_else_watch(o, &[5000], Duration::from_secs(600));
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.timer_entries() > 1 + HEAP_SLACK {
            assert!(
                Instant::now() < deadline,
                "{} entries kept",
                p.timer_entries()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        p.shutdown();
        assert_eq!(p.timer_entries(), 0);
    }

    #[test]
    fn full_purgatory_completes_at_once_and_shutdown_expires_all() {
        let p: Purgatory<u32> = Purgatory::new("test", 1);
        let (a, _, a_done, _) = op();
        let (b, _, b_done, _) = op();
        p.try_complete_else_watch(a, &[1], Duration::from_secs(60));
        p.try_complete_else_watch(b, &[1], Duration::from_secs(60));
        assert_eq!(
            b_done.load(Ordering::SeqCst),
            1,
            "over the limit: completed at once"
        );
        assert_eq!(a_done.load(Ordering::SeqCst), 0);
        p.shutdown();
        assert_eq!(
            a_done.load(Ordering::SeqCst),
            1,
            "shutdown expires waiting operations"
        );
    }
}

//! Producer ids for InitProducerId: blocks of 1,000 claimed through the metadata store in
//! Kafka's `/latest_producer_id_block` znode (so brokers sharing a ZooKeeper never hand out
//! the same id), handed out one at a time from memory.
//!
//! No handler thread waits on the store: the first block is claimed at start, the next one
//! by a background thread once 90 % of the current block is used. If ids run out before it
//! arrives (or the store cannot be written, e.g. a full disk), `next_id` answers
//! `Unavailable` and InitProducerId answers COORDINATOR_LOAD_IN_PROGRESS, which clients
//! retry. Ids of a block not used up before a restart are skipped: ids are unique, not dense.

use std::sync::{Arc, Mutex};

use kbroker_coordinator::{allocate_producer_id_block, MetadataStore, ProducerIdBlock};

/// The share of a block handed out before the next one is claimed.
const PREFETCH_AT_PERCENT: i64 = 90;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerIdError {
    /// No block is available yet; retry.
    Unavailable,
}

#[derive(Debug, Default)]
struct Ids {
    /// The next id to hand out and the last of the current block; `next > end` when spent.
    next: i64,
    end: i64,
    prefetch_at: i64,
    next_block: Option<ProducerIdBlock>,
    claiming: bool,
}

pub struct ProducerIdManager {
    store: Arc<dyn MetadataStore>,
    broker_id: i32,
    ids: Mutex<Ids>,
}

impl ProducerIdManager {
    /// Claims the first block now (the caller is the start-up thread); a failure is logged
    /// and the block claimed later.
    pub fn start(store: Arc<dyn MetadataStore>, broker_id: i32) -> Arc<ProducerIdManager> {
        let manager = Arc::new(ProducerIdManager {
            store,
            broker_id,
            ids: Mutex::new(Ids {
                next: 0,
                end: -1,
                ..Ids::default()
            }),
        });
        match allocate_producer_id_block(&*manager.store, broker_id) {
            Ok(block) => manager.lock().install(block),
            Err(e) => log::warn!("no producer id block at start: {e}; claimed on first use"),
        }
        manager
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A producer id never handed out before in this cluster.
    pub fn next_id(self: &Arc<Self>) -> Result<i64, ProducerIdError> {
        let mut ids = self.lock();
        if ids.next > ids.end {
            if let Some(block) = ids.next_block.take() {
                ids.install(block);
            }
        }
        let result = if ids.next <= ids.end {
            let id = ids.next;
            ids.next += 1;
            Ok(id)
        } else {
            Err(ProducerIdError::Unavailable)
        };
        if (ids.next >= ids.prefetch_at || ids.next > ids.end)
            && ids.next_block.is_none()
            && !ids.claiming
        {
            ids.claiming = true;
            let manager = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("kb-producer-ids".into())
                .spawn(move || manager.claim_next_block());
            if let Err(e) = spawned {
                log::error!("cannot start the producer id block thread: {e}");
                ids.claiming = false;
            }
        }
        result
    }

    fn claim_next_block(&self) {
        let claimed = allocate_producer_id_block(&*self.store, self.broker_id);
        let mut ids = self.lock();
        ids.claiming = false;
        match claimed {
            Ok(block) => ids.next_block = Some(block),
            Err(e) => log::warn!("claiming a producer id block failed: {e}; retried on next use"),
        }
    }
}

impl Ids {
    fn install(&mut self, block: ProducerIdBlock) {
        assert!(block.block_start <= block.block_end, "a block holds ids");
        self.next = block.block_start;
        self.end = block.block_end;
        let size = block.block_end - block.block_start + 1;
        self.prefetch_at = block.block_start + size * PREFETCH_AT_PERCENT / 100;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_blocks_and_managers() {
        let store: Arc<dyn MetadataStore> = Arc::new(kbroker_coordinator::LocalStore::in_memory());
        kbroker_coordinator::ensure_persistent_paths(&*store).expect("paths");
        let a = ProducerIdManager::start(Arc::clone(&store), 0);
        let b = ProducerIdManager::start(Arc::clone(&store), 1);
        let mut seen = std::collections::HashSet::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while seen.len() < 3_500 {
            assert!(std::time::Instant::now() < deadline, "ids keep coming");
            for m in [&a, &b] {
                match m.next_id() {
                    Ok(id) => assert!(seen.insert(id), "id {id} handed out twice"),
                    Err(ProducerIdError::Unavailable) => std::thread::yield_now(),
                }
            }
        }
        assert!(seen.iter().all(|id| *id >= 0));
    }
}

//! The replica manager as the group coordinator's [`OffsetsLog`]: the one place where
//! group records meet partitions, leader epochs, high watermarks and the produce purgatory.
//! The coordinator (`groups.rs`) sees only this trait; the replica manager knows nothing of
//! groups.

use std::time::Duration;

use kbroker_storage::batch;
use kbroker_storage::manager::lock;
use kbroker_storage::TopicPartition;

use crate::groups::{
    Appended, CoordinatorError, OffsetsLog, RecordVisitor, ReplicatedCallback, OFFSETS_TOPIC,
};
use crate::replica_manager::ReplicaManager;

/// Bytes read from the log at a time while loading a partition's groups.
const LOAD_READ_BYTES: usize = 1 << 20;

impl OffsetsLog for ReplicaManager {
    fn append_batch(
        &self,
        partition: i32,
        batch: &[u8],
        now_ms: i64,
    ) -> Result<Appended, CoordinatorError> {
        let view = self
            .leader_log(OFFSETS_TOPIC, partition)
            .map_err(|_| CoordinatorError::NotCoordinator)?;
        let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
        let end = self.append_internal(&tp, &view.log, batch, view.leader_epoch, now_ms)?;
        Ok(Appended {
            tp,
            leader_epoch: view.leader_epoch,
            end,
        })
    }

    fn when_replicated(&self, appended: Appended, timeout: Duration, done: ReplicatedCallback) {
        ReplicaManager::when_replicated(
            self,
            appended.tp,
            appended.leader_epoch,
            appended.end,
            timeout,
            done,
        );
    }

    fn read_records(
        &self,
        partition: i32,
        visit: &mut RecordVisitor<'_>,
    ) -> Result<usize, CoordinatorError> {
        let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
        let shared = self
            .partition(&tp)
            .and_then(|p| p.log.clone())
            .ok_or(CoordinatorError::NotCoordinator)?;
        let log = lock(&shared)?;
        let mut records = 0usize;
        let mut offset = log.log_start_offset();
        let end = log.log_end_offset();
        while offset < end {
            let read = log.read(offset, end, LOAD_READ_BYTES, true)?;
            let Some(region) = read.region else { break };
            let bytes = log.read_region_bytes(&region)?;
            let mut next = offset;
            for (pos, header) in batch::BatchIter::new(&bytes, true) {
                next = header.next_offset();
                let Some(recs) =
                    batch::uncompressed_records(&bytes[pos..pos + header.total_size()])
                else {
                    log::warn!(
                        "skipping an unreadable batch in {tp} at offset {}",
                        header.base_offset
                    );
                    continue;
                };
                for r in recs {
                    records += 1;
                    visit(r.key, r.value);
                }
            }
            if next <= offset {
                break;
            }
            offset = next;
        }
        Ok(records)
    }
}

//! Partition reassignment — KIP-455 as Kafka 2.8's ZooKeeper controller runs it.
//!
//! A reassignment of a partition from its replicas ORS to a target TRS goes in two steps.
//! First the assignment in `/brokers/topics/<t>` becomes RS = TRS + (ORS − TRS), with
//! `adding_replicas` TRS − ORS and `removing_replicas` ORS − TRS, and a LeaderAndIsr in a
//! new leader epoch tells every replica of RS: the new ones create the log and fetch from the
//! leader, which adds them to the ISR once caught up. When every replica of TRS is in the
//! ISR (checked on each ISR change), the second step makes TRS the assignment: a leader
//! outside TRS hands over to one in it, the ISR keeps only TRS, the removed replicas get
//! StopReplica with delete. Nothing is removed before its data is on the new replicas.
//!
//! Requested through AlterPartitionReassignments (a null target cancels: back to ORS, the
//! added replicas stopped) or by writing `/admin/reassign_partitions` (old tools), whose
//! entries are removed as they finish; ListPartitionReassignments lists what is under way.
//! A controller that takes over finds them in the topic znodes and carries on.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError as E;
use kbroker_coordinator::layout::{self, PartitionState, REASSIGN_PARTITIONS_PATH};
use kbroker_coordinator::{get_opt, Op};
use kbroker_storage::TopicPartition;

use super::{Controller, ControllerError, State};

/// Per-partition outcomes of an AlterPartitionReassignments (error code, message), or a
/// request-level error code.
pub type ReassignResults = Vec<(TopicPartition, i16, Option<String>)>;
pub type ReassignReply = Box<dyn FnOnce(Result<ReassignResults, i16>) + Send>;

/// A reassignment under way, as ListPartitionReassignments reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ongoing {
    pub tp: TopicPartition,
    /// The full replica set RS.
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}
pub type ListReply = Box<dyn FnOnce(Result<Vec<Ongoing>, i16>) + Send>;

impl Ongoing {
    /// ORS: the replicas before the reassignment.
    fn origin(&self) -> Vec<i32> {
        without(&self.replicas, &self.adding)
    }

    /// TRS: the replicas after it.
    fn target(&self) -> Vec<i32> {
        without(&self.replicas, &self.removing)
    }
}

fn without(list: &[i32], drop: &[i32]) -> Vec<i32> {
    list.iter().copied().filter(|r| !drop.contains(r)).collect()
}

/// RS, adding and removing for a move from `origin` to `target`.
fn replica_sets(origin: &[i32], target: &[i32]) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let removing = without(origin, target);
    let mut full = target.to_vec();
    full.extend(&removing);
    (full, without(target, origin), removing)
}

impl State {
    /// The partitions being reassigned, with their replica sets.
    pub(super) fn ongoing(&self, filter: Option<&[TopicPartition]>) -> Vec<Ongoing> {
        let Some(ctx) = self.ctx.as_ref() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (topic, a) in &ctx.topics {
            for (p, replicas) in &a.partitions {
                let adding = a.adding_replicas.get(p).cloned().unwrap_or_default();
                let removing = a.removing_replicas.get(p).cloned().unwrap_or_default();
                if adding.is_empty() && removing.is_empty() {
                    continue;
                }
                let tp = TopicPartition::new(topic, *p);
                if filter.is_some_and(|f| !f.contains(&tp)) {
                    continue;
                }
                out.push(Ongoing {
                    tp,
                    replicas: replicas.clone(),
                    adding,
                    removing,
                });
            }
        }
        out
    }

    pub(super) fn on_list_reassignments(
        &self,
        filter: Option<Vec<TopicPartition>>,
        reply: ListReply,
    ) -> Result<(), ControllerError> {
        if self.ctx.is_none() {
            reply(Err(E::NotController.code()));
            return Ok(());
        }
        reply(Ok(self.ongoing(filter.as_deref())));
        Ok(())
    }

    /// AlterPartitionReassignments: `Some(target)` starts (or replaces) a reassignment,
    /// `None` cancels one.
    pub(super) fn on_alter_reassignments(
        &mut self,
        c: &Controller,
        requests: Vec<(TopicPartition, Option<Vec<i32>>)>,
        reply: ReassignReply,
    ) -> Result<(), ControllerError> {
        if self.ctx.is_none() {
            reply(Err(E::NotController.code()));
            return Ok(());
        }
        let mut results = Vec::with_capacity(requests.len());
        let mut failure = None;
        for (tp, target) in requests {
            let outcome = match &target {
                Some(t) => self.start_reassignment(c, &tp, t),
                None => self.cancel_reassignment(c, &tp),
            };
            match outcome {
                Ok(Ok(())) => results.push((tp, 0, None)),
                Ok(Err((code, message))) => results.push((tp, code, Some(message))),
                Err(e) => {
                    results.push((tp, E::UnknownServerError.code(), Some(format!("{e:?}"))));
                    failure = Some(e);
                    break;
                }
            }
        }
        reply(Ok(results));
        failure.map_or(Ok(()), Err)
    }

    /// `/admin/reassign_partitions` was created or changed: start what it lists; entries
    /// that cannot start are removed from it at once (Kafka's behaviour).
    pub(super) fn on_reassign_znode(&mut self, c: &Controller) -> Result<(), ControllerError> {
        c.store
            .watch_data(REASSIGN_PARTITIONS_PATH, self.watch_tx.clone())?;
        let Some((data, _)) = get_opt(&*c.store, REASSIGN_PARTITIONS_PATH)? else {
            return Ok(());
        };
        let entries = match layout::decode_reassignment(&data) {
            Ok(e) => e,
            Err(e) => {
                log::warn!("ignoring {REASSIGN_PARTITIONS_PATH}: {e}");
                let _ = c.store.delete(REASSIGN_PARTITIONS_PATH, None);
                return Ok(());
            }
        };
        let mut failed = BTreeSet::new();
        for (topic, partition, target) in entries {
            let tp = TopicPartition::new(&topic, partition);
            let in_progress = self.ongoing(Some(std::slice::from_ref(&tp)));
            let (full, _, _) = in_progress
                .first()
                .map(|o| replica_sets(&o.origin(), &target))
                .unwrap_or_default();
            if in_progress.first().is_some_and(|o| o.replicas == full) {
                continue; // already under way: the znode watch fired for our own edit
            }
            if let Err((code, message)) = self.start_reassignment(c, &tp, &target)? {
                log::warn!("reassignment of {tp} from {REASSIGN_PARTITIONS_PATH} refused: error {code}: {message}");
                failed.insert(tp);
            }
        }
        self.remove_from_znode(c, &failed)
    }

    /// Removes finished (or refused) partitions from `/admin/reassign_partitions`; deletes
    /// it when none are left.
    fn remove_from_znode(
        &mut self,
        c: &Controller,
        done: &BTreeSet<TopicPartition>,
    ) -> Result<(), ControllerError> {
        let Some((data, stat)) = get_opt(&*c.store, REASSIGN_PARTITIONS_PATH)? else {
            return Ok(());
        };
        let mut entries = layout::decode_reassignment(&data).unwrap_or_default();
        let before = entries.len();
        let ongoing: BTreeSet<TopicPartition> =
            self.ongoing(None).into_iter().map(|o| o.tp).collect();
        entries.retain(|(t, p, _)| {
            let tp = TopicPartition::new(t, *p);
            !done.contains(&tp) && ongoing.contains(&tp)
        });
        if entries.len() == before {
            return Ok(());
        }
        let op = if entries.is_empty() {
            Op::Delete {
                path: REASSIGN_PARTITIONS_PATH.to_string(),
                version: Some(stat.version),
            }
        } else {
            Op::SetData {
                path: REASSIGN_PARTITIONS_PATH.to_string(),
                data: layout::encode_reassignment(&entries),
                version: Some(stat.version),
            }
        };
        match self.fenced(c, vec![op]) {
            // Someone rewrote it meanwhile: their edit's watch brings us back.
            Err(ControllerError::Store(_)) => Ok(()),
            other => other,
        }
    }

    fn check_target(&self, tp: &TopicPartition, target: &[i32]) -> Result<(), (i16, String)> {
        let ctx = self.ctx.as_ref().expect("active");
        if !ctx.states.contains_key(tp) || ctx.deleting.contains(&tp.topic) {
            return Err((
                E::UnknownTopicOrPartition.code(),
                format!("{tp} does not exist"),
            ));
        }
        let distinct: BTreeSet<i32> = target.iter().copied().collect();
        if target.is_empty() || distinct.len() != target.len() || target.iter().any(|r| *r < 0) {
            return Err((
                E::InvalidReplicaAssignment.code(),
                format!("the replica list {target:?} is empty or has duplicates"),
            ));
        }
        if let Some(r) = target.iter().find(|r| !ctx.brokers.contains_key(r)) {
            return Err((
                E::InvalidReplicaAssignment.code(),
                format!("replica assignment has broker {r}, which is not alive"),
            ));
        }
        Ok(())
    }

    /// Step one (or straight to two if the target is already in sync).
    fn start_reassignment(
        &mut self,
        c: &Controller,
        tp: &TopicPartition,
        target: &[i32],
    ) -> Result<Result<(), (i16, String)>, ControllerError> {
        if let Err(e) = self.check_target(tp, target) {
            return Ok(Err(e));
        }
        let ctx = self.ctx.as_ref().expect("active");
        let a = &ctx.topics[&tp.topic];
        let current = a.partitions.get(&tp.partition).cloned().unwrap_or_default();
        let adding_now = a
            .adding_replicas
            .get(&tp.partition)
            .cloned()
            .unwrap_or_default();
        // A reassignment replacing one under way starts from the original replicas.
        let origin = without(&current, &adding_now);
        let (full, adding, removing) = replica_sets(&origin, target);
        // Replicas the replaced reassignment was adding but this one does not want.
        let dropped = without(&adding_now, &full);
        log::info!(
            "reassigning {tp}: {origin:?} -> {target:?} (replicas {full:?}, adding {adding:?}, removing {removing:?})"
        );
        self.write_assignment(c, tp, &full, &adding, &removing)?;
        if !dropped.is_empty() {
            self.send_stop_replicas(
                c,
                BTreeMap::from_iter(dropped.iter().map(|r| (*r, vec![tp.clone()]))),
                true,
            );
        }
        if !adding.is_empty() || !dropped.is_empty() {
            // A new leader epoch for the new replica set: every replica hears of it.
            let s = self.ctx.as_ref().expect("active").states[tp].clone();
            let isr: Vec<i32> = s.isr.iter().copied().filter(|r| full.contains(r)).collect();
            let next = self.next_epoch(&s, s.leader, isr);
            self.write_states(c, vec![(tp.clone(), next)])?;
            let tps = [tp.clone()];
            self.send_leader_and_isr(c, &tps, true);
            self.update_metadata_everywhere(c, &tps, &[]);
        }
        self.maybe_complete(c, tp)?;
        Ok(Ok(()))
    }

    fn cancel_reassignment(
        &mut self,
        c: &Controller,
        tp: &TopicPartition,
    ) -> Result<Result<(), (i16, String)>, ControllerError> {
        let Some(o) = self.ongoing(Some(std::slice::from_ref(tp))).pop() else {
            let ctx = self.ctx.as_ref().expect("active");
            let code = if ctx.states.contains_key(tp) {
                E::NoReassignmentInProgress.code()
            } else {
                E::UnknownTopicOrPartition.code()
            };
            return Ok(Err((
                code,
                format!("no reassignment of {tp} is in progress"),
            )));
        };
        let origin = o.origin();
        log::info!("cancelling the reassignment of {tp}: back to {origin:?}");
        self.finish(c, tp, &origin, &o.adding)?;
        Ok(Ok(()))
    }

    /// Step two for `tp` once every target replica is in the ISR (called after ISR and
    /// broker changes, and at failover).
    pub(super) fn maybe_complete(
        &mut self,
        c: &Controller,
        tp: &TopicPartition,
    ) -> Result<(), ControllerError> {
        let Some(o) = self.ongoing(Some(std::slice::from_ref(tp))).pop() else {
            return Ok(());
        };
        let target = o.target();
        let ctx = self.ctx.as_ref().expect("active");
        let Some(s) = ctx.states.get(tp) else {
            return Ok(());
        };
        if !target.iter().all(|r| s.isr.contains(r)) {
            return Ok(());
        }
        log::info!("reassignment of {tp} to {target:?} complete: every new replica is in sync");
        self.finish(c, tp, &target, &o.removing)?;
        self.remove_from_znode(c, &BTreeSet::from([tp.clone()]))
    }

    /// Makes `replicas` the assignment of `tp`: leader and ISR within it (a new epoch),
    /// the others stopped and deleted.
    fn finish(
        &mut self,
        c: &Controller,
        tp: &TopicPartition,
        replicas: &[i32],
        stopped: &[i32],
    ) -> Result<(), ControllerError> {
        let ctx = self.ctx.as_ref().expect("active");
        let live = ctx.live();
        let s = ctx.states[tp].clone();
        let mut isr: Vec<i32> = s
            .isr
            .iter()
            .copied()
            .filter(|r| replicas.contains(r))
            .collect();
        let leader = if replicas.contains(&s.leader) && live.contains(&s.leader) {
            s.leader
        } else {
            match replicas
                .iter()
                .find(|r| isr.contains(r) && live.contains(r))
            {
                Some(l) => *l,
                // No replica of the new set is in sync and alive: keep the leader for now.
                None => return Ok(()),
            }
        };
        if isr.is_empty() {
            isr.push(leader);
        }
        self.write_assignment(c, tp, replicas, &[], &[])?;
        let next = self.next_epoch(&s, leader, isr);
        self.write_states(c, vec![(tp.clone(), next)])?;
        let tps = [tp.clone()];
        self.send_leader_and_isr(c, &tps, false);
        self.send_stop_replicas(
            c,
            BTreeMap::from_iter(stopped.iter().map(|r| (*r, vec![tp.clone()]))),
            true,
        );
        self.update_metadata_everywhere(c, &tps, &[]);
        Ok(())
    }

    fn next_epoch(&self, s: &PartitionState, leader: i32, isr: Vec<i32>) -> PartitionState {
        let mut next = s.clone();
        next.leader = leader;
        next.isr = isr;
        next.leader_epoch += 1;
        next.controller_epoch = self.ctx.as_ref().expect("active").epoch;
        next
    }

    /// Writes partition `tp`'s replicas (and its adding/removing lists) into the topic
    /// znode, fenced, and into the context.
    fn write_assignment(
        &mut self,
        c: &Controller,
        tp: &TopicPartition,
        replicas: &[i32],
        adding: &[i32],
        removing: &[i32],
    ) -> Result<(), ControllerError> {
        let ctx = self.ctx.as_ref().expect("active");
        let mut a = ctx.topics[&tp.topic].clone();
        a.partitions.insert(tp.partition, replicas.to_vec());
        for (map, list) in [
            (&mut a.adding_replicas, adding),
            (&mut a.removing_replicas, removing),
        ] {
            if list.is_empty() {
                map.remove(&tp.partition);
            } else {
                map.insert(tp.partition, list.to_vec());
            }
        }
        self.fenced(
            c,
            vec![Op::SetData {
                path: layout::topic_path(&tp.topic),
                data: a.to_json(),
                version: None,
            }],
        )?;
        self.ctx
            .as_mut()
            .expect("active")
            .topics
            .insert(tp.topic.clone(), a);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::replica_sets;

    #[test]
    fn replica_sets_follow_kip_455() {
        // Move [1,2,3] to [2,3,4]: RS lists the target first, then what leaves.
        assert_eq!(
            replica_sets(&[1, 2, 3], &[2, 3, 4]),
            (vec![2, 3, 4, 1], vec![4], vec![1])
        );
        // A reorder adds and removes nothing.
        assert_eq!(
            replica_sets(&[1, 2, 3], &[3, 1, 2]),
            (vec![3, 1, 2], vec![], vec![])
        );
        // Shrinking.
        assert_eq!(
            replica_sets(&[1, 2, 3], &[1]),
            (vec![1, 2, 3], vec![], vec![2, 3])
        );
    }
}

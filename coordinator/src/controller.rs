//! The controller's decisions, as pure functions — Kafka's `PartitionLeaderElectionAlgorithms`,
//! `AdminUtils.assignReplicasToBrokers` and the partition state machine's transitions.
//! No I/O: the controller shell (`src/controller.rs`) feeds them its context (live
//! brokers, assignments, partition states), writes what they decide to the metadata store
//! and sends the resulting requests.
//!
//! Leader elections (a partition's assignment is ordered, the first replica is preferred):
//! - offline: the first assigned replica that is alive and in the ISR; with unclean election
//!   enabled, else the first alive assigned replica (its ISR becomes just itself);
//! - preferred: the first assigned replica, if alive and in the ISR;
//! - controlled shutdown: the first assigned replica alive, in the ISR and not shutting down;
//!   the shutting-down brokers leave the ISR.
//!
//! Every change of leader bumps the leader epoch.

use std::collections::{BTreeMap, BTreeSet};

use crate::layout::PartitionState;

/// Why a partition has no new leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionError {
    /// No alive replica is in the ISR (and unclean election is off).
    NoEligibleLeader,
    /// The preferred replica is the leader already, or cannot lead.
    PreferredNotEligible,
}

/// A new leader and ISR for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    pub leader: i32,
    pub isr: Vec<i32>,
}

/// The state a partition gets when a new leader is chosen: epoch + 1.
pub fn next_state(
    current: &PartitionState,
    election: &Election,
    controller_epoch: i32,
) -> PartitionState {
    PartitionState {
        leader: election.leader,
        leader_epoch: current.leader_epoch + 1,
        isr: election.isr.clone(),
        controller_epoch,
        zk_version: current.zk_version,
    }
}

/// Kafka's offline-partition election.
pub fn elect_offline(
    assignment: &[i32],
    isr: &[i32],
    live: &BTreeSet<i32>,
    unclean: bool,
) -> Result<Election, ElectionError> {
    if let Some(&leader) = assignment
        .iter()
        .find(|r| live.contains(r) && isr.contains(r))
    {
        let isr = isr.iter().copied().filter(|r| live.contains(r)).collect();
        return Ok(Election { leader, isr });
    }
    if unclean {
        if let Some(&leader) = assignment.iter().find(|r| live.contains(r)) {
            return Ok(Election {
                leader,
                isr: vec![leader],
            });
        }
    }
    Err(ElectionError::NoEligibleLeader)
}

/// Kafka's preferred-replica election.
pub fn elect_preferred(
    assignment: &[i32],
    isr: &[i32],
    live: &BTreeSet<i32>,
    current_leader: i32,
) -> Result<Election, ElectionError> {
    match assignment.first() {
        Some(&p) if p != current_leader && live.contains(&p) && isr.contains(&p) => Ok(Election {
            leader: p,
            isr: isr.to_vec(),
        }),
        _ => Err(ElectionError::PreferredNotEligible),
    }
}

/// Kafka's controlled-shutdown election: a leader that is not shutting down.
pub fn elect_for_shutdown(
    assignment: &[i32],
    isr: &[i32],
    live: &BTreeSet<i32>,
    shutting_down: &BTreeSet<i32>,
) -> Result<Election, ElectionError> {
    let isr: Vec<i32> = isr
        .iter()
        .copied()
        .filter(|r| !shutting_down.contains(r))
        .collect();
    assignment
        .iter()
        .find(|r| live.contains(r) && isr.contains(r) && !shutting_down.contains(r))
        .map(|&leader| Election {
            leader,
            isr: isr.clone(),
        })
        .ok_or(ElectionError::NoEligibleLeader)
}

/// The first state of a new partition: the first alive assigned replica leads, every alive
/// assigned replica is in sync, epoch 0. `None` if no replica is alive.
pub fn initial_state(
    assignment: &[i32],
    live: &BTreeSet<i32>,
    controller_epoch: i32,
) -> Option<PartitionState> {
    let alive: Vec<i32> = assignment
        .iter()
        .copied()
        .filter(|r| live.contains(r))
        .collect();
    let leader = *alive.first()?;
    Some(PartitionState {
        leader,
        leader_epoch: 0,
        isr: alive,
        controller_epoch,
        zk_version: 0,
    })
}

/// Why replicas cannot be assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentError {
    ReplicationFactor {
        rf: usize,
        brokers: usize,
    },
    NoBrokers,
    /// Some brokers have a rack and others not.
    PartialRacks,
}

/// Kafka's `assignReplicasToBrokers`: `brokers` (id → rack) get `partitions` partitions of
/// `rf` replicas, numbered from `first_partition`; `start` seeds the placement (Kafka picks it
/// at random; `None` here too). Rack-aware when every broker has a rack.
pub fn assign_replicas(
    brokers: &BTreeMap<i32, Option<String>>,
    first_partition: i32,
    partitions: i32,
    rf: usize,
    start: Option<usize>,
) -> Result<BTreeMap<i32, Vec<i32>>, AssignmentError> {
    if brokers.is_empty() {
        return Err(AssignmentError::NoBrokers);
    }
    if rf == 0 || rf > brokers.len() {
        return Err(AssignmentError::ReplicationFactor {
            rf,
            brokers: brokers.len(),
        });
    }
    let with_rack = brokers.values().filter(|r| r.is_some()).count();
    if with_rack == 0 {
        let ids: Vec<i32> = brokers.keys().copied().collect();
        Ok(rack_unaware(&ids, first_partition, partitions, rf, start))
    } else if with_rack == brokers.len() {
        Ok(rack_aware(brokers, first_partition, partitions, rf, start))
    } else {
        Err(AssignmentError::PartialRacks)
    }
}

fn seed(start: Option<usize>, n: usize) -> usize {
    start.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as usize);
        nanos.wrapping_mul(2_654_435_761)
    }) % n
}

fn replica_index(first: usize, shift: usize, j: usize, n: usize) -> usize {
    let shift = 1 + (shift + j) % (n - 1);
    (first + shift) % n
}

fn rack_unaware(
    brokers: &[i32],
    first_partition: i32,
    partitions: i32,
    rf: usize,
    start: Option<usize>,
) -> BTreeMap<i32, Vec<i32>> {
    let n = brokers.len();
    let start_index = seed(start, n);
    let mut shift = if first_partition >= 0 {
        first_partition as usize % n.max(1)
    } else {
        seed(start.map(|s| s + 1), n)
    };
    let mut out = BTreeMap::new();
    for p in (first_partition.max(0)..).take(usize::try_from(partitions).unwrap_or(0)) {
        if p > 0 && (p as usize).is_multiple_of(n) {
            shift += 1;
        }
        let first = (p as usize + start_index) % n;
        let mut replicas = vec![brokers[first]];
        for j in 0..rf.saturating_sub(1) {
            replicas.push(brokers[replica_index(first, shift, j, n)]);
        }
        out.insert(p, replicas);
    }
    out
}

/// Brokers interleaved by rack: `rack1.b0, rack2.b0, rack3.b0, rack1.b1, ...`.
fn rack_alternated(brokers: &BTreeMap<i32, Option<String>>) -> Vec<i32> {
    let mut by_rack: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (id, rack) in brokers {
        by_rack
            .entry(rack.as_deref().unwrap_or(""))
            .or_default()
            .push(*id);
    }
    let mut out = Vec::with_capacity(brokers.len());
    let mut i = 0;
    while out.len() < brokers.len() {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(i) {
                out.push(*id);
            }
        }
        i += 1;
    }
    out
}

fn rack_aware(
    brokers: &BTreeMap<i32, Option<String>>,
    first_partition: i32,
    partitions: i32,
    rf: usize,
    start: Option<usize>,
) -> BTreeMap<i32, Vec<i32>> {
    let rack_of = |id: i32| brokers.get(&id).cloned().flatten().unwrap_or_default();
    let arranged = rack_alternated(brokers);
    let n = arranged.len();
    let racks: BTreeSet<String> = brokers.values().flatten().cloned().collect();
    let start_index = seed(start, n);
    let mut shift = if first_partition >= 0 {
        first_partition as usize % n
    } else {
        seed(start.map(|s| s + 1), n)
    };
    let mut out = BTreeMap::new();
    for p in (first_partition.max(0)..).take(usize::try_from(partitions).unwrap_or(0)) {
        if p > 0 && (p as usize).is_multiple_of(n) {
            shift += 1;
        }
        let first = (p as usize + start_index) % n;
        let leader = arranged[first];
        let mut replicas = vec![leader];
        let mut used_racks: BTreeSet<String> = BTreeSet::from([rack_of(leader)]);
        let mut used_brokers: BTreeSet<i32> = BTreeSet::from([leader]);
        let mut k = 0;
        while replicas.len() < rf {
            let b = arranged[replica_index(first, shift, k, n)];
            k += 1;
            let rack = rack_of(b);
            // Skip a broker whose rack already has a replica while some rack has none, and a
            // broker already used while some broker has none (Kafka's rule).
            if (!used_racks.contains(&rack) || used_racks.len() == racks.len())
                && (!used_brokers.contains(&b) || used_brokers.len() == n)
                && !replicas.contains(&b)
            {
                replicas.push(b);
                used_racks.insert(rack);
                used_brokers.insert(b);
            }
            if k > 4 * n * n {
                // cannot happen with rf <= n; stay total anyway
                for b in &arranged {
                    if replicas.len() < rf && !replicas.contains(b) {
                        replicas.push(*b);
                    }
                }
            }
        }
        out.insert(p, replicas);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn elections_follow_kafka() {
        // offline: first assigned replica alive and in sync
        assert_eq!(
            elect_offline(&[1, 2, 3], &[2, 3], &live(&[2, 3]), false),
            Ok(Election {
                leader: 2,
                isr: vec![2, 3]
            })
        );
        // the ISR loses dead brokers
        assert_eq!(
            elect_offline(&[1, 2, 3], &[1, 2, 3], &live(&[2, 3]), false),
            Ok(Election {
                leader: 2,
                isr: vec![2, 3]
            })
        );
        // nobody in sync: offline unless unclean
        assert_eq!(
            elect_offline(&[1, 2], &[1], &live(&[2]), false),
            Err(ElectionError::NoEligibleLeader)
        );
        assert_eq!(
            elect_offline(&[1, 2], &[1], &live(&[2]), true),
            Ok(Election {
                leader: 2,
                isr: vec![2]
            })
        );
        // preferred
        assert_eq!(
            elect_preferred(&[1, 2], &[1, 2], &live(&[1, 2]), 2),
            Ok(Election {
                leader: 1,
                isr: vec![1, 2]
            })
        );
        assert!(
            elect_preferred(&[1, 2], &[2], &live(&[1, 2]), 2).is_err(),
            "not in sync"
        );
        assert!(
            elect_preferred(&[1, 2], &[1, 2], &live(&[1, 2]), 1).is_err(),
            "already"
        );
        // controlled shutdown moves away from the stopping broker and drops it from the ISR
        assert_eq!(
            elect_for_shutdown(&[1, 2, 3], &[1, 2, 3], &live(&[1, 2, 3]), &live(&[1])),
            Ok(Election {
                leader: 2,
                isr: vec![2, 3]
            })
        );
        assert!(elect_for_shutdown(&[1], &[1], &live(&[1]), &live(&[1])).is_err());
        // new partitions
        let s = initial_state(&[3, 1, 2], &live(&[1, 2]), 4).expect("state");
        assert_eq!(
            (s.leader, s.isr.clone(), s.leader_epoch, s.controller_epoch),
            (1, vec![1, 2], 0, 4)
        );
        assert!(initial_state(&[3], &live(&[1]), 4).is_none());
        let next = next_state(
            &s,
            &Election {
                leader: 2,
                isr: vec![2],
            },
            5,
        );
        assert_eq!(
            (next.leader, next.leader_epoch, next.controller_epoch),
            (2, 1, 5)
        );
    }

    #[test]
    fn assignments_spread_leaders_and_replicas() {
        let brokers: BTreeMap<i32, Option<String>> = (0..5).map(|b| (b, None)).collect();
        let a = assign_replicas(&brokers, 0, 10, 3, Some(0)).expect("assign");
        assert_eq!(a[&0], vec![0, 1, 2]);
        for replicas in a.values() {
            let distinct: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(distinct.len(), 3, "distinct replicas {replicas:?}");
        }
        let mut leaders = BTreeMap::new();
        for replicas in a.values() {
            *leaders.entry(replicas[0]).or_insert(0) += 1;
        }
        assert!(
            leaders.values().all(|n| *n == 2),
            "leaders spread evenly {leaders:?}"
        );
        assert!(matches!(
            assign_replicas(&brokers, 0, 1, 6, None),
            Err(AssignmentError::ReplicationFactor { .. })
        ));
        // rack aware: replicas of a partition in different racks
        let racked: BTreeMap<i32, Option<String>> =
            [(0, "a"), (1, "a"), (2, "b"), (3, "b"), (4, "c"), (5, "c")]
                .iter()
                .map(|(b, r)| (*b, Some(r.to_string())))
                .collect();
        let a = assign_replicas(&racked, 0, 12, 3, None).expect("rack aware");
        for replicas in a.values() {
            let racks: BTreeSet<_> = replicas.iter().map(|b| racked[b].clone()).collect();
            assert_eq!(racks.len(), 3, "one replica per rack {replicas:?}");
        }
        let mut partial = racked.clone();
        partial.insert(9, None);
        assert_eq!(
            assign_replicas(&partial, 0, 1, 1, None),
            Err(AssignmentError::PartialRacks)
        );
    }
}

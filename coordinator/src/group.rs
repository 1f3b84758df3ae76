//! The consumer group state machine — Kafka's `GroupMetadata` + `GroupCoordinator` logic,
//! pure: no I/O, no threads, time passed in.
//!
//! States: Empty → PreparingRebalance → CompletingRebalance → Stable, and Dead when deleted.
//! A JoinGroup parks its reply until every known member has rejoined (or the rebalance
//! timeout removes the laggards); then a new generation starts, the leader gets every
//! member's metadata and the others an empty list. SyncGroup replies wait for the leader's
//! assignment. Heartbeats keep members alive; `tick` expires sessions, pending members
//! (the MEMBER_ID_REQUIRED round of JoinGroup v4+) and rebalance deadlines, and ends the
//! initial rebalance delay (`group.initial.rebalance.delay.ms`) of a new group. Static
//! members (`group.instance.id`) that rejoin a stable group with unchanged protocols get
//! the current generation back without a rebalance.
//!
//! Replies are returned as values carrying an opaque token `R` (the caller's responder), so
//! the whole machine is testable with plain integers and a simulated clock. Not thread
//! safe: the caller keeps each group behind a lock.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::offsets::{GroupValue, MemberValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's names, as DescribeGroups and ListGroups show them.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Group errors; the broker maps them to Kafka error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupError {
    UnknownMemberId,
    MemberIdRequired,
    IllegalGeneration,
    RebalanceInProgress,
    InconsistentGroupProtocol,
    InvalidSessionTimeout,
    GroupMaxSizeReached,
    FencedInstanceId,
    CoordinatorNotAvailable,
    /// The group's offsets partition moved to another broker.
    NotCoordinator,
}

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: i32,
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX as usize,
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Vec<u8>)>,
    /// JoinGroup v4+: a new member must first learn its id (MEMBER_ID_REQUIRED).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinResult {
    pub error: Option<GroupError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub members: Vec<JoinMember>,
}

impl JoinResult {
    fn error(e: GroupError, member_id: &str) -> Self {
        JoinResult {
            error: Some(e),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncResult {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Vec<u8>,
}

impl SyncResult {
    fn error(e: GroupError) -> Self {
        SyncResult {
            error: Some(e),
            protocol_type: None,
            protocol_name: None,
            assignment: Vec::new(),
        }
    }
}

/// A reply the caller must send.
#[derive(Debug)]
pub enum Reply<R> {
    Join(R, JoinResult),
    Sync(R, SyncResult),
}

/// Membership changes, for mirroring into `/consumers/...`.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupEvent {
    MemberAdded {
        member_id: String,
        subscription: Vec<u8>,
    },
    MemberRemoved {
        member_id: String,
    },
    /// A new assignment was installed (Stable); the previous owners are void.
    AssignmentsInstalled {
        assignments: Vec<(String, Vec<u8>)>,
    },
    /// A rebalance started: partition ownership is void until the next assignment.
    RebalanceStarted,
}

#[derive(Debug)]
pub struct Member<R> {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
    last_heartbeat_ms: i64,
    awaiting_join: Option<R>,
    awaiting_sync: Option<R>,
}

impl<R> Member<R> {
    /// This member's metadata for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Vec<u8> {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

pub struct Group<R> {
    pub id: String,
    state: GroupState,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    generation_id: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member<R>>,
    /// Member ids handed out by MEMBER_ID_REQUIRED, with their expiry.
    pending: HashMap<String, i64>,
    static_members: HashMap<String, String>,
    rebalance_deadline_ms: i64,
    initial_delay_until_ms: Option<i64>,
    /// Members answered by the last join that have not sent their SyncGroup yet, and when
    /// they are out of time (Kafka's DelayedSync: the rebalance timeout after the join).
    pending_sync: HashSet<String>,
    sync_deadline_ms: i64,
    events: Vec<GroupEvent>,
    /// Set when what a group record says of the group changed (a new assignment
    /// installed, a static member's new id in a Stable group); the caller writes the
    /// record (see [`Group::take_record_due`]).
    record_due: bool,
    next_member_seq: u64,
}

impl<R> Group<R> {
    pub fn new(id: &str) -> Self {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: None,
            pending_sync: HashSet::new(),
            sync_deadline_ms: 0,
            events: Vec::new(),
            record_due: false,
            next_member_seq: 0,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }
    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }
    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }
    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }
    pub fn members(&self) -> impl Iterator<Item = &Member<R>> {
        self.members.values()
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }
    /// True once after the group's record changed (Kafka stores the group then): a new
    /// assignment was installed, or a static member took a new id in a Stable group.
    pub fn take_record_due(&mut self) -> bool {
        std::mem::take(&mut self.record_due)
    }
    /// Membership events since the last call.
    pub fn drain_events(&mut self) -> Vec<GroupEvent> {
        std::mem::take(&mut self.events)
    }
    /// Marks the group deleted; waiting replies get COORDINATOR_NOT_AVAILABLE.
    pub fn mark_dead(&mut self) -> Vec<Reply<R>> {
        self.fail_waiting(GroupError::CoordinatorNotAvailable)
    }

    /// Marks the group unloaded (this broker stopped coordinating it); waiting replies get
    /// NOT_COORDINATOR so members find the new coordinator.
    pub fn mark_not_coordinator(&mut self) -> Vec<Reply<R>> {
        self.fail_waiting(GroupError::NotCoordinator)
    }

    fn fail_waiting(&mut self, error: GroupError) -> Vec<Reply<R>> {
        let mut replies = Vec::new();
        for m in self.members.values_mut() {
            if let Some(r) = m.awaiting_join.take() {
                replies.push(Reply::Join(r, JoinResult::error(error, &m.member_id)));
            }
            if let Some(r) = m.awaiting_sync.take() {
                replies.push(Reply::Sync(r, SyncResult::error(error)));
            }
        }
        self.state = GroupState::Dead;
        replies
    }

    /// Restores what a `__consumer_offsets` group record said, as Kafka's coordinator loads
    /// a group: the generation, and its members with their assignments — the group is
    /// Stable, each member's session starting at `now_ms` as if it had just heartbeated, so
    /// members that go on heartbeating keep their generation without a rebalance. With no
    /// members (or no protocol) the group is Empty and the generation continues.
    pub fn restore(&mut self, value: &GroupValue, now_ms: i64) {
        assert_eq!(self.state, GroupState::Empty);
        assert!(self.members.is_empty());
        self.generation_id = value.generation_id;
        self.protocol_type = Some(value.protocol_type.clone()).filter(|s| !s.is_empty());
        self.protocol_name = value.protocol.clone();
        let Some(protocol) = value.protocol.clone() else {
            return;
        };
        for m in &value.members {
            if let Some(instance) = &m.group_instance_id {
                self.static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            self.events.push(GroupEvent::MemberAdded {
                member_id: m.member_id.clone(),
                subscription: m.subscription.clone(),
            });
            self.members.insert(
                m.member_id.clone(),
                Member {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocol_type: value.protocol_type.clone(),
                    protocols: vec![(protocol.clone(), m.subscription.clone())],
                    assignment: m.assignment.clone(),
                    last_heartbeat_ms: now_ms,
                    awaiting_join: None,
                    awaiting_sync: None,
                },
            );
        }
        if self.members.is_empty() {
            return;
        }
        self.state = GroupState::Stable;
        self.leader = value
            .leader
            .clone()
            .filter(|l| self.members.contains_key(l))
            .or_else(|| self.members.keys().next().cloned());
        self.events.push(GroupEvent::AssignmentsInstalled {
            assignments: self
                .members
                .values()
                .map(|m| (m.member_id.clone(), m.assignment.clone()))
                .collect(),
        });
    }

    /// What a group record says of this group now (see [`Group::restore`]): its members
    /// while Stable (Kafka records them once the leader's assignment is installed), none
    /// otherwise.
    pub fn record(&self, state_timestamp_ms: i64) -> GroupValue {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        let members = if self.state == GroupState::Stable {
            self.members
                .values()
                .map(|m| MemberValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(protocol),
                    assignment: m.assignment.clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            protocol: self.protocol_name.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms,
            members,
        }
    }

    /// A member id no member or pending member has (members restored from a record were
    /// named by another coordinator's counter).
    fn new_member_id(&mut self, client_id: &str, now_ms: i64) -> String {
        loop {
            self.next_member_seq += 1;
            let id = format!(
                "{client_id}-{:08x}-{:x}",
                (now_ms as u64).wrapping_mul(0x9E37_79B9) as u32,
                self.next_member_seq
            );
            if !self.members.contains_key(&id) && !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Vec<u8>)]) -> bool {
        if protocols.is_empty() || protocol_type.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        // Some protocol every current member supports must be offered.
        protocols.iter().any(|(p, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(q, _)| q == p))
        })
    }

    pub fn join(
        &mut self,
        req: JoinRequest,
        reply: R,
        cfg: &GroupConfig,
        now_ms: i64,
    ) -> Vec<Reply<R>> {
        let mut out = Vec::new();
        if self.state == GroupState::Dead {
            out.push(Reply::Join(
                reply,
                JoinResult::error(GroupError::CoordinatorNotAvailable, &req.member_id),
            ));
            return out;
        }
        if req.session_timeout_ms < cfg.min_session_timeout_ms
            || req.session_timeout_ms > cfg.max_session_timeout_ms
        {
            out.push(Reply::Join(
                reply,
                JoinResult::error(GroupError::InvalidSessionTimeout, &req.member_id),
            ));
            return out;
        }
        let known = !req.member_id.is_empty();
        let sole_member_rejoining =
            known && self.members.len() == 1 && self.members.contains_key(&req.member_id);
        if !(self.supports_protocols(&req.protocol_type, &req.protocols) || sole_member_rejoining) {
            out.push(Reply::Join(
                reply,
                JoinResult::error(GroupError::InconsistentGroupProtocol, &req.member_id),
            ));
            return out;
        }
        if !known {
            self.join_unknown(req, reply, cfg, now_ms, &mut out);
        } else {
            self.join_known(req, reply, cfg, now_ms, &mut out);
        }
        out
    }

    fn join_unknown(
        &mut self,
        req: JoinRequest,
        reply: R,
        cfg: &GroupConfig,
        now_ms: i64,
        out: &mut Vec<Reply<R>>,
    ) {
        if let Some(instance) = req.group_instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance).cloned() {
                return self.replace_static_member(&old_id, req, reply, cfg, now_ms, out);
            }
        }
        if self.members.len() + self.pending.len() >= cfg.max_size {
            out.push(Reply::Join(
                reply,
                JoinResult::error(GroupError::GroupMaxSizeReached, ""),
            ));
            return;
        }
        let member_id = self.new_member_id(&req.client_id, now_ms);
        if req.require_known_member_id && req.group_instance_id.is_none() {
            self.pending
                .insert(member_id.clone(), now_ms + req.session_timeout_ms as i64);
            out.push(Reply::Join(
                reply,
                JoinResult::error(GroupError::MemberIdRequired, &member_id),
            ));
            return;
        }
        self.add_member_and_rebalance(member_id, req, reply, cfg, now_ms, out);
    }

    fn join_known(
        &mut self,
        req: JoinRequest,
        reply: R,
        cfg: &GroupConfig,
        now_ms: i64,
        out: &mut Vec<Reply<R>>,
    ) {
        let member_id = req.member_id.clone();
        if self.static_member_fenced(&member_id, req.group_instance_id.as_deref()) {
            out.push(Reply::Join(
                reply,
                JoinResult::error(GroupError::FencedInstanceId, &member_id),
            ));
            return;
        }
        if self.pending.remove(&member_id).is_some() {
            return self.add_member_and_rebalance(member_id, req, reply, cfg, now_ms, out);
        }
        let Some(member) = self.members.get(&member_id) else {
            out.push(Reply::Join(
                reply,
                JoinResult::error(GroupError::UnknownMemberId, &member_id),
            ));
            return;
        };
        if member.group_instance_id != req.group_instance_id && req.group_instance_id.is_some() {
            // An instance id no member holds (Kafka's groupInstanceIdNotFound).
            out.push(Reply::Join(
                reply,
                JoinResult::error(GroupError::UnknownMemberId, &member_id),
            ));
            return;
        }
        let unchanged = member.protocols == req.protocols;
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(&member_id, req, Some(reply), now_ms);
                self.maybe_complete_join(now_ms, out);
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if unchanged && !(is_leader && self.state == GroupState::Stable) =>
            {
                if let Some(m) = self.members.get_mut(&member_id) {
                    m.last_heartbeat_ms = now_ms;
                }
                let result = self.join_result_for(&member_id);
                out.push(Reply::Join(reply, result));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member(&member_id, req, Some(reply), now_ms);
                self.prepare_rebalance(cfg, now_ms, out);
                self.maybe_complete_join(now_ms, out);
            }
            GroupState::Empty | GroupState::Dead => {
                out.push(Reply::Join(
                    reply,
                    JoinResult::error(GroupError::UnknownMemberId, &member_id),
                ));
            }
        }
    }

    fn replace_static_member(
        &mut self,
        old_id: &str,
        req: JoinRequest,
        reply: R,
        cfg: &GroupConfig,
        now_ms: i64,
        out: &mut Vec<Reply<R>>,
    ) {
        let new_id = self.new_member_id(&req.client_id, now_ms);
        let Some(mut member) = self.members.remove(old_id) else {
            self.static_members
                .remove(req.group_instance_id.as_deref().unwrap_or_default());
            return self.add_member_and_rebalance(new_id, req, reply, cfg, now_ms, out);
        };
        // The old incarnation's parked replies are fenced.
        if let Some(r) = member.awaiting_join.take() {
            out.push(Reply::Join(
                r,
                JoinResult::error(GroupError::FencedInstanceId, old_id),
            ));
        }
        if let Some(r) = member.awaiting_sync.take() {
            out.push(Reply::Sync(
                r,
                SyncResult::error(GroupError::FencedInstanceId),
            ));
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        member.member_id = new_id.clone();
        member.last_heartbeat_ms = now_ms;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        self.members.insert(new_id.clone(), member);
        if let Some(instance) = &req.group_instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        self.events.push(GroupEvent::MemberRemoved {
            member_id: old_id.to_string(),
        });
        let subscription = self
            .members
            .get(&new_id)
            .map(|m| m.protocols.first().map(|p| p.1.clone()).unwrap_or_default())
            .unwrap_or_default();
        self.events.push(GroupEvent::MemberAdded {
            member_id: new_id.clone(),
            subscription,
        });
        match self.state {
            // Kafka: a Stable group takes the restarted instance's new protocols, and
            // rebalances only if that changes the group's protocol (its metadata bytes
            // change with every restart of a Java client).
            GroupState::Stable => {
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.protocols = req.protocols.clone();
                }
                if self.select_protocol() == self.protocol_name {
                    self.record_due = true;
                    let result = self.join_result_for(&new_id);
                    out.push(Reply::Join(reply, result));
                } else {
                    self.update_member(&new_id, req, Some(reply), now_ms);
                    self.prepare_rebalance(cfg, now_ms, out);
                    self.maybe_complete_join(now_ms, out);
                }
            }
            // Mid-rebalance the leader is assigning to the old id: a new round.
            _ => {
                self.update_member(&new_id, req, Some(reply), now_ms);
                self.prepare_rebalance(cfg, now_ms, out);
                self.maybe_complete_join(now_ms, out);
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        req: JoinRequest,
        reply: R,
        cfg: &GroupConfig,
        now_ms: i64,
        out: &mut Vec<Reply<R>>,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(instance) = &req.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        let subscription = req
            .protocols
            .first()
            .map(|p| p.1.clone())
            .unwrap_or_default();
        self.members.insert(
            member_id.clone(),
            Member {
                member_id: member_id.clone(),
                group_instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocol_type: req.protocol_type,
                protocols: req.protocols,
                assignment: Vec::new(),
                last_heartbeat_ms: now_ms,
                awaiting_join: Some(reply),
                awaiting_sync: None,
            },
        );
        self.events.push(GroupEvent::MemberAdded {
            member_id: member_id.clone(),
            subscription,
        });
        if self.leader.is_none() {
            self.leader = Some(member_id);
        }
        if self.state == GroupState::PreparingRebalance {
            if let Some(until) = self.initial_delay_until_ms {
                // A member joined during the initial delay: wait a little longer, bounded by
                // the rebalance timeout (Kafka's InitialDelayedJoin).
                let extended = (now_ms + cfg.initial_rebalance_delay_ms as i64)
                    .min(self.rebalance_deadline_ms);
                self.initial_delay_until_ms = Some(until.max(extended));
            }
        }
        self.prepare_rebalance(cfg, now_ms, out);
        self.maybe_complete_join(now_ms, out);
    }

    fn update_member(&mut self, member_id: &str, req: JoinRequest, reply: Option<R>, now_ms: i64) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.protocols = req.protocols;
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.client_id = req.client_id;
            m.client_host = req.client_host;
            m.last_heartbeat_ms = now_ms;
            if reply.is_some() {
                m.awaiting_join = reply;
            }
        }
    }

    fn prepare_rebalance(&mut self, cfg: &GroupConfig, now_ms: i64, out: &mut Vec<Reply<R>>) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(r) = m.awaiting_sync.take() {
                    out.push(Reply::Sync(
                        r,
                        SyncResult::error(GroupError::RebalanceInProgress),
                    ));
                }
            }
        }
        self.pending_sync.clear();
        self.rebalance_deadline_ms = now_ms + self.max_rebalance_timeout_ms();
        self.initial_delay_until_ms =
            (self.state == GroupState::Empty && cfg.initial_rebalance_delay_ms > 0).then(|| {
                (now_ms + cfg.initial_rebalance_delay_ms as i64).min(self.rebalance_deadline_ms)
            });
        self.state = GroupState::PreparingRebalance;
        self.events.push(GroupEvent::RebalanceStarted);
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn maybe_complete_join(&mut self, now_ms: i64, out: &mut Vec<Reply<R>>) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self.initial_delay_until_ms.is_some_and(|t| now_ms < t) {
            return;
        }
        if self.all_joined() || now_ms >= self.rebalance_deadline_ms {
            self.complete_join(now_ms, out);
        }
    }

    fn complete_join(&mut self, now_ms: i64, out: &mut Vec<Reply<R>>) {
        // Dynamic members that did not rejoin in time are removed; static ones stay until
        // their session expires (Kafka: a restarting static member keeps its place).
        let laggards: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in laggards {
            self.remove_member(&id);
        }
        if !self.members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_none()) {
            // Only static members that have not rejoined: wait another rebalance timeout.
            self.rebalance_deadline_ms = now_ms + self.max_rebalance_timeout_ms();
            return;
        }
        self.pending.clear();
        self.initial_delay_until_ms = None;
        self.generation_id += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            return;
        }
        self.protocol_name = self.select_protocol();
        // The leader is a member that rejoined.
        let joined =
            |g: &Self, id: &str| g.members.get(id).is_some_and(|m| m.awaiting_join.is_some());
        if self.leader.as_deref().is_none_or(|l| !joined(self, l)) {
            self.leader = self
                .members
                .values()
                .find(|m| m.awaiting_join.is_some())
                .map(|m| m.member_id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        self.pending_sync.clear();
        self.sync_deadline_ms = now_ms + self.max_rebalance_timeout_ms();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id);
            if let Some(m) = self.members.get_mut(&id) {
                if let Some(r) = m.awaiting_join.take() {
                    // Answered now: the session runs from here (Kafka reschedules the
                    // member's heartbeat deadline as it answers).
                    m.last_heartbeat_ms = now_ms;
                    out.push(Reply::Join(r, result));
                    self.pending_sync.insert(id);
                }
            }
        }
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0) as i64
    }

    fn join_result_for(&self, member_id: &str) -> JoinResult {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        let members = if is_leader {
            self.members
                .values()
                .map(|m| JoinMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m.metadata(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
        }
    }

    /// Kafka's selectProtocol: among protocols every member supports, the one most
    /// members list first (ties: the earlier in the leader-most member's list).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(p, _)| p)
            .filter(|p| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(q, _)| q == *p))
            })
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((p, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                *votes.entry(p).or_default() += 1;
            }
        }
        candidates
            .iter()
            .max_by_key(|p| {
                (
                    votes.get(*p).copied().unwrap_or(0),
                    std::cmp::Reverse(candidates.iter().position(|c| c == *p)),
                )
            })
            .map(|p| (*p).clone())
    }

    fn remove_member(&mut self, member_id: &str) -> Option<Member<R>> {
        let m = self.members.remove(member_id)?;
        self.pending_sync.remove(member_id);
        if let Some(instance) = &m.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        self.events.push(GroupEvent::MemberRemoved {
            member_id: member_id.to_string(),
        });
        Some(m)
    }

    /// Kafka's KIP-345 fencing: a request naming a `group.instance.id` that now belongs to
    /// another member id (a newer incarnation joined with it) is from a fenced instance.
    fn static_member_fenced(&self, member_id: &str, group_instance_id: Option<&str>) -> bool {
        group_instance_id
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|current| current != member_id)
    }

    fn check_member(
        &self,
        member_id: &str,
        generation_id: i32,
        group_instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if self.static_member_fenced(member_id, group_instance_id) {
            return Err(GroupError::FencedInstanceId);
        }
        let Some(m) = self.members.get(member_id) else {
            return Err(if self.state == GroupState::Dead {
                GroupError::CoordinatorNotAvailable
            } else {
                GroupError::UnknownMemberId
            });
        };
        if group_instance_id.is_some() && m.group_instance_id.as_deref() != group_instance_id {
            // Named an instance id no member holds: Kafka's UNKNOWN_MEMBER_ID.
            return Err(GroupError::UnknownMemberId);
        }
        if generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    /// SyncGroup v5+, which also names the protocol type and name the member was given:
    /// after the member checks, a mismatch is INCONSISTENT_GROUP_PROTOCOL (as Kafka).
    #[allow(clippy::too_many_arguments)]
    pub fn sync_with_protocol(
        &mut self,
        member_id: &str,
        generation_id: i32,
        group_instance_id: Option<&str>,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Vec<u8>)>,
        reply: R,
        now_ms: i64,
    ) -> Vec<Reply<R>> {
        let (protocol_type, protocol_name) = protocol;
        let mismatch = protocol_type.is_some_and(|t| self.protocol_type.as_deref() != Some(t))
            || protocol_name.is_some_and(|n| self.protocol_name.as_deref() != Some(n));
        if mismatch
            && self
                .check_member(member_id, generation_id, group_instance_id)
                .is_ok()
        {
            return vec![Reply::Sync(
                reply,
                SyncResult::error(GroupError::InconsistentGroupProtocol),
            )];
        }
        self.sync(
            member_id,
            generation_id,
            group_instance_id,
            assignments,
            reply,
            now_ms,
        )
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        generation_id: i32,
        group_instance_id: Option<&str>,
        assignments: Vec<(String, Vec<u8>)>,
        reply: R,
        now_ms: i64,
    ) -> Vec<Reply<R>> {
        let mut out = Vec::new();
        if let Err(e) = self.check_member(member_id, generation_id, group_instance_id) {
            out.push(Reply::Sync(reply, SyncResult::error(e)));
            return out;
        }
        if matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) {
            self.pending_sync.remove(member_id);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => out.push(Reply::Sync(
                reply,
                SyncResult::error(GroupError::UnknownMemberId),
            )),
            GroupState::PreparingRebalance => out.push(Reply::Sync(
                reply,
                SyncResult::error(GroupError::RebalanceInProgress),
            )),
            GroupState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.awaiting_sync = Some(reply);
                    m.last_heartbeat_ms = now_ms;
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Vec<u8>> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.member_id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    self.record_due = true;
                    self.events.push(GroupEvent::AssignmentsInstalled {
                        assignments: self
                            .members
                            .values()
                            .map(|m| (m.member_id.clone(), m.assignment.clone()))
                            .collect(),
                    });
                    for m in self.members.values_mut() {
                        if let Some(r) = m.awaiting_sync.take() {
                            m.last_heartbeat_ms = now_ms;
                            out.push(Reply::Sync(
                                r,
                                SyncResult {
                                    error: None,
                                    protocol_type: self.protocol_type.clone(),
                                    protocol_name: self.protocol_name.clone(),
                                    assignment: m.assignment.clone(),
                                },
                            ));
                        }
                    }
                }
            }
            GroupState::Stable => {
                let assignment = match self.members.get_mut(member_id) {
                    Some(m) => {
                        m.last_heartbeat_ms = now_ms;
                        m.assignment.clone()
                    }
                    None => Vec::new(),
                };
                out.push(Reply::Sync(
                    reply,
                    SyncResult {
                        error: None,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        assignment,
                    },
                ));
            }
        }
        out
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        generation_id: i32,
        group_instance_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Empty {
            return Err(GroupError::UnknownMemberId);
        }
        self.check_member(member_id, generation_id, group_instance_id)?;
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat_ms = now_ms;
        }
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Dead => Err(GroupError::CoordinatorNotAvailable),
            _ => Ok(()),
        }
    }

    /// May this member commit offsets now? Kafka's rules: a "simple" commit (no member,
    /// generation < 0) only to an empty group; otherwise a known member of the current
    /// generation, in Stable or PreparingRebalance (members commit on revocation), not in
    /// CompletingRebalance. A valid commit also counts as a heartbeat.
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        generation_id: i32,
        group_instance_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        // Kafka: an empty group only stores offsets; any member id is taken.
        if generation_id < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if let Some(instance) = group_instance_id {
            if self
                .static_members
                .get(instance)
                .is_some_and(|id| id != member_id)
            {
                return Err(GroupError::FencedInstanceId);
            }
        }
        let Some(m) = self.members.get_mut(member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        m.last_heartbeat_ms = now_ms;
        Ok(())
    }

    /// LeaveGroup for one member, by member id or (static) instance id.
    pub fn leave(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        cfg: &GroupConfig,
        now_ms: i64,
    ) -> (Result<(), GroupError>, Vec<Reply<R>>) {
        let mut out = Vec::new();
        let id = match group_instance_id {
            Some(instance) => match self.static_members.get(instance) {
                Some(id) if member_id.is_empty() || member_id == id => id.clone(),
                Some(_) => return (Err(GroupError::FencedInstanceId), out),
                None => return (Err(GroupError::UnknownMemberId), out),
            },
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            return (Ok(()), out);
        }
        let Some(mut m) = self.remove_member(&id) else {
            return (Err(GroupError::UnknownMemberId), out);
        };
        if let Some(r) = m.awaiting_join.take() {
            out.push(Reply::Join(
                r,
                JoinResult::error(GroupError::UnknownMemberId, &id),
            ));
        }
        if let Some(r) = m.awaiting_sync.take() {
            out.push(Reply::Sync(
                r,
                SyncResult::error(GroupError::UnknownMemberId),
            ));
        }
        self.after_removal(cfg, now_ms, &mut out);
        (Ok(()), out)
    }

    fn after_removal(&mut self, cfg: &GroupConfig, now_ms: i64, out: &mut Vec<Reply<R>>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(cfg, now_ms, out);
                self.initial_delay_until_ms = None;
                self.maybe_complete_join(now_ms, out);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Time passes: expire sessions and pending members, finish due rebalances.
    pub fn tick(&mut self, cfg: &GroupConfig, now_ms: i64) -> Vec<Reply<R>> {
        let mut out = Vec::new();
        self.pending.retain(|_, deadline| *deadline > now_ms);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.awaiting_join.is_none()
                    && m.awaiting_sync.is_none()
                    && now_ms - m.last_heartbeat_ms > m.session_timeout_ms as i64
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in &expired {
            log::info!("group={} member={} session expired", self.id, id);
            self.remove_member(id);
        }
        // Kafka's DelayedSync: members that were given a generation but did not send their
        // SyncGroup within the rebalance timeout are removed, and the group rebalances.
        let mut late: Vec<String> = Vec::new();
        if !self.pending_sync.is_empty()
            && now_ms >= self.sync_deadline_ms
            && matches!(
                self.state,
                GroupState::CompletingRebalance | GroupState::Stable
            )
        {
            late = self.pending_sync.drain().collect();
            late.sort_unstable();
            for id in &late {
                log::info!("group={} member={} sent no SyncGroup in time", self.id, id);
                self.remove_member(id);
            }
        }
        if !expired.is_empty() || !late.is_empty() {
            self.after_removal(cfg, now_ms, &mut out);
        }
        self.maybe_complete_join(now_ms, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        }
    }

    fn req(member_id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            group_instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), vec![1]), ("roundrobin".into(), vec![2])],
            require_known_member_id: true,
        }
    }

    fn join_result(replies: Vec<Reply<u32>>, token: u32) -> JoinResult {
        replies
            .into_iter()
            .find_map(|r| match r {
                Reply::Join(t, j) if t == token => Some(j),
                _ => None,
            })
            .expect("join reply")
    }

    /// Joins a new member through the MEMBER_ID_REQUIRED round; returns its id and replies.
    fn join_new(g: &mut Group<u32>, token: u32, now: i64) -> (String, Vec<Reply<u32>>) {
        let first = join_result(g.join(req("", None), token, &cfg(), now), token);
        assert_eq!(first.error, Some(GroupError::MemberIdRequired));
        let replies = g.join(req(&first.member_id, None), token, &cfg(), now);
        (first.member_id, replies)
    }

    #[test]
    fn single_member_join_sync_heartbeat() {
        let mut g: Group<u32> = Group::new("g");
        let (id, replies) = join_new(&mut g, 1, 0);
        let j = join_result(replies, 1);
        assert_eq!(
            (j.error, j.generation_id, j.leader.as_str()),
            (None, 1, id.as_str())
        );
        assert_eq!(j.members.len(), 1);
        assert_eq!(j.protocol_name.as_deref(), Some("range"));
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        let s = g.sync(&id, 1, None, vec![(id.clone(), vec![9])], 2, 1);
        assert!(matches!(&s[0], Reply::Sync(2, r) if r.assignment == vec![9]));
        assert_eq!(g.state(), GroupState::Stable);
        assert_eq!(g.heartbeat(&id, 1, None, 2), Ok(()));
        assert_eq!(
            g.heartbeat(&id, 0, None, 2),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            g.heartbeat("nobody", 1, None, 2),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn second_member_triggers_rebalance_and_both_rejoin() {
        let mut g: Group<u32> = Group::new("g");
        let (a, r) = join_new(&mut g, 1, 0);
        join_result(r, 1);
        g.sync(&a, 1, None, vec![(a.clone(), vec![1])], 2, 0);
        let (b, r) = join_new(&mut g, 3, 10);
        assert!(r.is_empty(), "b waits for a to rejoin");
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat(&a, 1, None, 11),
            Err(GroupError::RebalanceInProgress)
        );
        let r = g.join(req(&a, None), 4, &cfg(), 12);
        assert_eq!(r.len(), 2, "both joins complete together");
        let ja = r
            .iter()
            .find_map(|x| {
                if let Reply::Join(4, j) = x {
                    Some(j.clone())
                } else {
                    None
                }
            })
            .expect("a");
        let jb = r
            .iter()
            .find_map(|x| {
                if let Reply::Join(3, j) = x {
                    Some(j.clone())
                } else {
                    None
                }
            })
            .expect("b");
        assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
        assert_eq!(ja.leader, a);
        assert_eq!(
            (ja.members.len(), jb.members.len()),
            (2, 0),
            "only the leader sees members"
        );
        let r = g.sync(&b, 2, None, vec![], 5, 13);
        assert!(r.is_empty(), "follower waits for the leader's assignment");
        let r = g.sync(
            &a,
            2,
            None,
            vec![(a.clone(), vec![1]), (b.clone(), vec![2])],
            6,
            14,
        );
        assert_eq!(r.len(), 2);
        assert!(r
            .iter()
            .any(|x| matches!(x, Reply::Sync(5, s) if s.assignment == vec![2])));
    }

    #[test]
    fn session_expiry_and_rebalance_timeout_remove_members() {
        let mut g: Group<u32> = Group::new("g");
        let (a, r) = join_new(&mut g, 1, 0);
        join_result(r, 1);
        g.sync(&a, 1, None, vec![], 2, 0);
        let (b, r) = join_new(&mut g, 3, 100);
        assert!(r.is_empty());
        // a never rejoins: after the rebalance timeout it is dropped and b completes alone.
        let r = g.tick(&cfg(), 100 + 30_001);
        let jb = join_result(r, 3);
        assert_eq!(
            (jb.generation_id, jb.leader.as_str(), jb.members.len()),
            (2, b.as_str(), 1)
        );
        g.sync(&b, 2, None, vec![], 4, 30_200);
        // b stops heartbeating: its session expires and the group becomes empty.
        assert!(g.tick(&cfg(), 30_200 + 10_001).is_empty());
        assert_eq!(g.state(), GroupState::Empty);
        assert_eq!(g.generation_id(), 3);
    }

    #[test]
    fn static_member_rejoins_without_rebalance() {
        let mut g: Group<u32> = Group::new("g");
        let r = g.join(req("", Some("i1")), 1, &cfg(), 0);
        let j = join_result(r, 1);
        assert_eq!(j.error, None, "static members skip MEMBER_ID_REQUIRED");
        g.sync(
            &j.member_id,
            1,
            Some("i1"),
            vec![(j.member_id.clone(), vec![7])],
            2,
            0,
        );
        // Restarted process: unknown member id, same instance id.
        let r = g.join(req("", Some("i1")), 3, &cfg(), 1000);
        let j2 = join_result(r, 3);
        assert_eq!(
            (j2.error, j2.generation_id),
            (None, 1),
            "same generation: no rebalance"
        );
        assert_ne!(j2.member_id, j.member_id);
        assert_eq!(g.state(), GroupState::Stable);
        let s = g.sync(&j2.member_id, 1, Some("i1"), vec![], 4, 1001);
        assert!(matches!(&s[0], Reply::Sync(4, r) if r.assignment == vec![7]));
        // KIP-345: the old incarnation's next request is answered FENCED_INSTANCE_ID (fatal
        // for the client), not UNKNOWN_MEMBER_ID (which would make it rejoin and fence the
        // new one in turn).
        assert_eq!(
            g.heartbeat(&j.member_id, 1, Some("i1"), 1002),
            Err(GroupError::FencedInstanceId),
            "old incarnation fenced"
        );
        let s = g.sync(&j.member_id, 1, Some("i1"), vec![], 5, 1003);
        assert!(
            matches!(&s[0], Reply::Sync(5, r) if r.error == Some(GroupError::FencedInstanceId))
        );
        let r = g.join(req(&j.member_id, Some("i1")), 6, &cfg(), 1004);
        assert_eq!(join_result(r, 6).error, Some(GroupError::FencedInstanceId));
        // The new incarnation is unaffected.
        assert_eq!(g.heartbeat(&j2.member_id, 1, Some("i1"), 1005), Ok(()));
    }

    #[test]
    fn leave_rebalances_and_last_leave_empties() {
        let mut g: Group<u32> = Group::new("g");
        let (a, r) = join_new(&mut g, 1, 0);
        join_result(r, 1);
        g.sync(&a, 1, None, vec![], 2, 0);
        let (res, _) = g.leave(&a, None, &cfg(), 5);
        assert_eq!(res, Ok(()));
        assert_eq!(g.state(), GroupState::Empty);
        assert_eq!(
            g.leave(&a, None, &cfg(), 6).0,
            Err(GroupError::UnknownMemberId)
        );
        let events = g.drain_events();
        assert!(events.contains(&GroupEvent::MemberRemoved {
            member_id: a.clone()
        }));
    }

    #[test]
    fn initial_delay_waits_for_more_members() {
        let c = GroupConfig {
            initial_rebalance_delay_ms: 3000,
            ..GroupConfig::default()
        };
        let mut g: Group<u32> = Group::new("g");
        let mut r1 = req("", None);
        r1.require_known_member_id = false;
        assert!(
            g.join(r1.clone(), 1, &c, 0).is_empty(),
            "first join waits out the delay"
        );
        assert!(g.join(r1, 2, &c, 1000).is_empty());
        assert!(g.tick(&c, 2999).is_empty());
        let r = g.tick(&c, 4001);
        assert_eq!(r.len(), 2, "both members in the first generation");
    }

    #[test]
    fn commits_follow_kafkas_rules() {
        let mut g: Group<u32> = Group::new("g");
        assert_eq!(
            g.validate_commit("", -1, None, 0),
            Ok(()),
            "simple commit to an empty group"
        );
        let (a, r) = join_new(&mut g, 1, 0);
        join_result(r, 1);
        assert_eq!(
            g.validate_commit(&a, 1, None, 0),
            Err(GroupError::RebalanceInProgress),
            "CompletingRebalance"
        );
        g.sync(&a, 1, None, vec![], 2, 0);
        assert_eq!(g.validate_commit(&a, 1, None, 0), Ok(()));
        assert_eq!(
            g.validate_commit("", -1, None, 0),
            Err(GroupError::UnknownMemberId),
            "simple commit to an active group"
        );
        assert_eq!(
            g.validate_commit(&a, 0, None, 0),
            Err(GroupError::IllegalGeneration)
        );
        join_new(&mut g, 3, 1);
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert_eq!(
            g.validate_commit(&a, 1, None, 1),
            Ok(()),
            "commit on revocation while preparing"
        );
    }

    #[test]
    fn inconsistent_protocols_and_bad_timeouts_are_refused() {
        let mut g: Group<u32> = Group::new("g");
        let (a, r) = join_new(&mut g, 1, 0);
        join_result(r, 1);
        let mut other = req("", None);
        other.protocols = vec![("sticky".into(), vec![])];
        assert_eq!(
            join_result(g.join(other, 2, &cfg(), 1), 2).error,
            Some(GroupError::InconsistentGroupProtocol)
        );
        let mut short = req(&a, None);
        short.session_timeout_ms = 10;
        assert_eq!(
            join_result(g.join(short, 3, &cfg(), 1), 3).error,
            Some(GroupError::InvalidSessionTimeout)
        );
    }

    /// Two dynamic members, Stable at generation 2.
    fn stable_pair(g: &mut Group<u32>) -> (String, String) {
        let (a, r) = join_new(g, 1, 0);
        join_result(r, 1);
        g.sync(&a, 1, None, vec![], 2, 0);
        let (b, r) = join_new(g, 3, 0);
        assert!(r.is_empty());
        let r = g.join(req(&a, None), 4, &cfg(), 0);
        assert_eq!(r.len(), 2);
        g.sync(&b, 2, None, vec![], 5, 0);
        g.sync(&a, 2, None, vec![], 6, 0);
        assert_eq!(g.state(), GroupState::Stable);
        (a, b)
    }

    #[test]
    fn a_member_answered_after_a_long_join_is_not_expired_before_its_sync() {
        let mut g: Group<u32> = Group::new("g");
        let (a, b) = stable_pair(&mut g);
        // b rejoins at 1 s (new metadata), a only at 15 s; sessions are 10 s.
        let mut rb = req(&b, None);
        rb.protocols = vec![("range".into(), vec![9]), ("roundrobin".into(), vec![2])];
        assert!(g.join(rb, 7, &cfg(), 1000).is_empty());
        g.heartbeat(&a, 2, None, 9000).ok();
        assert_eq!(
            g.join(req(&a, None), 8, &cfg(), 15_000).len(),
            2,
            "join completes"
        );
        g.tick(&cfg(), 15_100);
        assert!(
            g.members().any(|m| m.member_id == b),
            "b expired before its SyncGroup"
        );
        assert_eq!(g.state(), GroupState::CompletingRebalance);
    }

    #[test]
    fn a_static_restart_with_new_metadata_keeps_a_stable_group_stable() {
        let mut g: Group<u32> = Group::new("g");
        let j = join_result(g.join(req("", Some("i1")), 1, &cfg(), 0), 1);
        g.sync(
            &j.member_id,
            1,
            Some("i1"),
            vec![(j.member_id.clone(), vec![7])],
            2,
            0,
        );
        let mut again = req("", Some("i1"));
        again.protocols = vec![
            ("range".into(), vec![1, 0]),
            ("roundrobin".into(), vec![2, 0]),
        ];
        let j2 = join_result(g.join(again, 3, &cfg(), 1000), 3);
        assert_eq!(
            g.state(),
            GroupState::Stable,
            "same protocol selected: no rebalance"
        );
        assert_eq!((j2.error, j2.generation_id), (None, 1));
        let s = g.sync(&j2.member_id, 1, Some("i1"), vec![], 4, 1001);
        assert!(
            matches!(&s[0], Reply::Sync(4, r) if r.assignment == vec![7]),
            "kept its assignment"
        );
    }

    #[test]
    fn a_static_restart_mid_rebalance_starts_a_new_round() {
        let mut g: Group<u32> = Group::new("g");
        let a = join_result(g.join(req("", Some("ia")), 1, &cfg(), 0), 1).member_id;
        g.sync(&a, 1, Some("ia"), vec![], 2, 0);
        assert!(g.join(req("", Some("ib")), 3, &cfg(), 0).is_empty());
        join_result(g.join(req(&a, Some("ia")), 4, &cfg(), 0), 3);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        // b restarts before it synced: the leader is assigning to its old id.
        let out = g.join(req("", Some("ib")), 5, &cfg(), 1);
        assert!(
            out.iter().all(|r| !matches!(r, Reply::Join(5, _))),
            "parked for a new round"
        );
        assert_eq!(g.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn a_static_member_that_does_not_rejoin_keeps_its_place_until_its_session_ends() {
        let mut g: Group<u32> = Group::new("g");
        let mut r = req("", Some("ia"));
        r.session_timeout_ms = 120_000;
        let a = join_result(g.join(r, 1, &cfg(), 0), 1).member_id;
        g.sync(&a, 1, Some("ia"), vec![], 2, 0);
        let (b, out) = join_new(&mut g, 3, 10);
        assert!(out.is_empty());
        g.tick(&cfg(), 30_011);
        assert!(
            g.members().any(|m| m.member_id == a),
            "kept at the rebalance timeout"
        );
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        assert_eq!(
            g.leader(),
            Some(b.as_str()),
            "the leader is a member that rejoined"
        );
        g.tick(&cfg(), 121_000);
        assert!(
            !g.members().any(|m| m.member_id == a),
            "gone once its session expired"
        );
    }

    #[test]
    fn members_that_send_no_sync_group_in_time_are_removed() {
        let mut g: Group<u32> = Group::new("g");
        let (a, b) = stable_pair(&mut g);
        // A new round: both rejoin, the leader never syncs; the follower's sync is parked.
        let mut rb = req(&b, None);
        rb.protocols = vec![("range".into(), vec![3])];
        assert!(g.join(rb, 7, &cfg(), 1_000).is_empty());
        let out = g.join(req(&a, None), 8, &cfg(), 1_000);
        let leader = join_result(out, 8).leader;
        let follower = if leader == a { b.clone() } else { a.clone() };
        let token = if follower == b { 9 } else { 10 };
        assert!(
            g.sync(&follower, 3, None, vec![], token, 1_100).is_empty(),
            "parked"
        );
        // The leader keeps heartbeating (its session never runs out): only the sync
        // deadline removes it.
        for t in [9_000, 18_000, 27_000] {
            assert_eq!(g.heartbeat(&leader, 3, None, t), Ok(()));
            assert!(
                g.tick(&cfg(), t + 100).is_empty(),
                "within the rebalance timeout"
            );
        }
        assert_eq!(g.heartbeat(&leader, 3, None, 31_000), Ok(()));
        let out = g.tick(&cfg(), 31_001);
        assert!(
            !g.members().any(|m| m.member_id == leader),
            "the leader never synced"
        );
        assert!(out.iter().any(|r| matches!(r, Reply::Sync(t, s)
            if *t == token && s.error == Some(GroupError::RebalanceInProgress))));
        assert_eq!(g.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn sync_v5_checks_the_protocol_it_names() {
        let mut g: Group<u32> = Group::new("g");
        let (a, r) = join_new(&mut g, 1, 0);
        join_result(r, 1);
        let out = g.sync_with_protocol(
            &a,
            1,
            None,
            (Some("consumer"), Some("roundrobin")),
            vec![],
            2,
            0,
        );
        assert!(
            matches!(&out[0], Reply::Sync(2, r) if r.error == Some(GroupError::InconsistentGroupProtocol))
        );
        let out =
            g.sync_with_protocol(&a, 1, None, (Some("consumer"), Some("range")), vec![], 3, 0);
        assert!(matches!(&out[0], Reply::Sync(3, r) if r.error.is_none()));
        assert_eq!(g.state(), GroupState::Stable);
    }

    #[test]
    fn unknown_instance_ids_and_simple_commits_as_kafka() {
        let mut g: Group<u32> = Group::new("g");
        assert_eq!(
            g.validate_commit("whoever", -1, None, 0),
            Ok(()),
            "an empty group stores offsets"
        );
        let (a, r) = join_new(&mut g, 1, 0);
        join_result(r, 1);
        g.sync(&a, 1, None, vec![], 2, 0);
        assert_eq!(
            g.heartbeat(&a, 1, Some("nobody"), 1),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn a_group_restored_from_its_record_keeps_its_generation_members_and_assignments() {
        let mut g: Group<u32> = Group::new("g");
        let (a, r) = join_new(&mut g, 1, 0);
        join_result(r, 1);
        g.sync(&a, 1, None, vec![], 2, 0);
        let (b, r) = join_new(&mut g, 3, 0);
        assert!(r.is_empty());
        g.join(req(&a, None), 4, &cfg(), 0);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        assert!(g.take_record_due(), "the first generation's assignment");
        assert!(g.record(0).members.is_empty(), "not recorded mid-rebalance");
        g.sync(&b, 2, None, vec![], 5, 0);
        assert!(!g.take_record_due());
        let given = vec![(a.clone(), vec![7]), (b.clone(), vec![8, 8])];
        g.sync(&a, 2, None, given, 6, 0);
        assert_eq!(g.state(), GroupState::Stable);
        assert!(g.take_record_due(), "the second generation's assignment");
        assert!(!g.take_record_due(), "once");
        let leader = g.leader().map(str::to_string);

        let record = GroupValue::decode(&g.record(50).encode()).expect("decodes");
        assert_eq!(record.state_timestamp_ms, 50);
        let mut loaded: Group<u32> = Group::new("g");
        loaded.restore(&record, 1_000);
        assert_eq!(loaded.state(), GroupState::Stable);
        assert_eq!(loaded.generation_id(), 2);
        assert_eq!(loaded.protocol_name(), Some("range"));
        assert_eq!(loaded.leader().map(str::to_string), leader);
        // The mirror hears of the members and their assignments.
        let mut assignments = vec![(a.clone(), vec![7]), (b.clone(), vec![8, 8])];
        assignments.sort();
        let events = loaded.drain_events();
        assert!(events.contains(&GroupEvent::AssignmentsInstalled { assignments }));
        // Members carry on: heartbeats and commits of the generation are accepted, a
        // SyncGroup (a member that was mid-sync when the coordinator moved) gets its
        // assignment, and their metadata is the protocol's.
        assert_eq!(loaded.heartbeat(&a, 2, None, 1_500), Ok(()));
        assert_eq!(loaded.validate_commit(&b, 2, None, 1_500), Ok(()));
        assert_eq!(
            loaded.heartbeat(&a, 1, None, 1_500),
            Err(GroupError::IllegalGeneration)
        );
        let r = loaded.sync(&b, 2, None, vec![], 9, 1_500);
        assert!(
            matches!(&r[..], [Reply::Sync(9, s)] if s.error.is_none() && s.assignment == [8, 8])
        );
        let m = loaded.members().find(|m| m.member_id == a).expect("a");
        assert_eq!(
            (m.metadata("range"), m.session_timeout_ms),
            (vec![1], 10_000)
        );
        // Sessions count from the load (10 s sessions): members silent since expire.
        let mut idle: Group<u32> = Group::new("g");
        idle.restore(&record, 1_000);
        idle.tick(&cfg(), 10_900);
        assert_eq!(idle.members().count(), 2);
        idle.tick(&cfg(), 11_100);
        assert_eq!(
            idle.members().count(),
            0,
            "expired a session after the load"
        );
        // A new member never gets a restored member's id.
        let (c, _) = join_new(&mut loaded, 10, 11_100);
        assert!(c != a && c != b);
    }

    #[test]
    fn a_record_without_members_restores_an_empty_group() {
        let value = GroupValue {
            protocol_type: "consumer".into(),
            generation_id: 4,
            protocol: Some("range".into()),
            leader: Some("gone".into()),
            state_timestamp_ms: 1,
            members: Vec::new(),
        };
        let mut g: Group<u32> = Group::new("g");
        g.restore(&value, 0);
        assert_eq!(
            (g.state(), g.generation_id(), g.leader()),
            (GroupState::Empty, 4, None)
        );
        assert_eq!(
            g.heartbeat("gone", 4, None, 0),
            Err(GroupError::UnknownMemberId)
        );
        // A member rejoins: generation 5.
        let (m, r) = join_new(&mut g, 1, 0);
        assert_eq!(join_result(r, 1).generation_id, 5, "{m}");
    }
}

//! The classic consumer group protocol on the coordinator: JoinGroup (KIP-394 member ids,
//! KIP-345 static members, the protocol vote and the initial rebalance delay), SyncGroup,
//! Heartbeat and LeaveGroup, and the classic groups' records in the store. Kafka's
//! GroupMetadataManager (classic part) is the reference.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::classic::{ClassicGroup, GroupState, Member};
use super::records::classic_record;
use super::{new_member_id, GroupCoordinator, GroupError, State};
use crate::clock::now_ms;
use crate::meta::{GroupWrite, MetaError};

/// A JoinGroup as the coordinator sees it.
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: an unknown member first gets MEMBER_ID_REQUIRED with its id (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone)]
pub struct JoinOutcome {
    pub error: Option<GroupError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: (member id, instance id, metadata for the chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// KIP-814: the leader gets the members but must not compute a new assignment (a static
    /// leader rejoining a stable group).
    pub skip_assignment: bool,
}

impl JoinOutcome {
    pub fn error(e: GroupError, member_id: &str) -> JoinOutcome {
        JoinOutcome {
            error: Some(e),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

pub struct SyncRequest {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone)]
pub struct SyncOutcome {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    pub fn error(e: GroupError) -> SyncOutcome {
        SyncOutcome {
            error: Some(e),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

impl GroupCoordinator {
    pub fn join(&self, req: JoinRequest) -> oneshot::Receiver<JoinOutcome> {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let mut state = self.lock();
        // Every path answers through `tx`, now or when the rebalance completes.
        let _ = self.join_locked(&mut state, req, tx, now);
        rx
    }

    fn join_locked(
        &self,
        state: &mut State,
        req: JoinRequest,
        tx: oneshot::Sender<JoinOutcome>,
        now: Instant,
    ) -> Result<(), ()> {
        let fail = |tx: oneshot::Sender<JoinOutcome>, e: GroupError, id: &str| {
            let _ = tx.send(JoinOutcome::error(e, id));
            Err(())
        };
        if req.group_id.is_empty() {
            return fail(tx, GroupError::InvalidGroupId, &req.member_id);
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return fail(tx, GroupError::InvalidSessionTimeout, &req.member_id);
        }
        if let Some(consumer) = state.consumer_groups.get(&req.group_id) {
            // Kafka: a classic member cannot join a live consumer group (no online migration
            // here); an empty one gives way to the classic group.
            if !consumer.members.is_empty() {
                return fail(tx, GroupError::InconsistentGroupProtocol, &req.member_id);
            }
            state.consumer_groups.remove(&req.group_id);
        }
        if !state.groups.contains_key(&req.group_id) {
            if !req.member_id.is_empty() {
                return fail(tx, GroupError::UnknownMemberId, &req.member_id);
            }
            state.groups.insert(
                req.group_id.clone(),
                ClassicGroup::new(req.group_id.clone(), now_ms()),
            );
        }
        let group = state.groups.get_mut(&req.group_id).ok_or(())?;
        if group.state == GroupState::Dead {
            return fail(tx, GroupError::CoordinatorNotAvailable, &req.member_id);
        }
        if !group.supports(&req.protocol_type, &req.protocols) {
            return fail(tx, GroupError::InconsistentGroupProtocol, &req.member_id);
        }
        if req.member_id.is_empty() {
            self.join_new_member(group, req, tx, now)
        } else {
            self.join_existing_member(group, req, tx, now)
        }
    }

    fn join_new_member(
        &self,
        group: &mut ClassicGroup,
        req: JoinRequest,
        tx: oneshot::Sender<JoinOutcome>,
        now: Instant,
    ) -> Result<(), ()> {
        if let Some(instance) = req.instance_id.clone() {
            let new_id = new_member_id(&instance);
            if let Some(old_id) = group.static_members.get(&instance).cloned() {
                return self.replace_static_member(group, &old_id, new_id, req, tx, now);
            }
            group.static_members.insert(instance, new_id.clone());
            self.add_member_and_rebalance(group, new_id, req, tx, now);
            return Ok(());
        }
        let prefix = if req.client_id.is_empty() {
            "member"
        } else {
            req.client_id.as_str()
        };
        let new_id = new_member_id(prefix);
        if req.require_known_member_id {
            // KIP-394: the member retries with this id; until then it is pending, and expires
            // after its session timeout if it never comes back.
            let deadline = now + Duration::from_millis(req.session_timeout_ms.max(0) as u64);
            group.pending_members.insert(new_id.clone(), deadline);
            let _ = tx.send(JoinOutcome::error(GroupError::MemberIdRequired, &new_id));
            return Ok(());
        }
        self.add_member_and_rebalance(group, new_id, req, tx, now);
        Ok(())
    }

    /// KIP-345: a restarted static member takes over its old member id's place. In a stable
    /// group with unchanged protocols it gets its assignment back without a rebalance.
    fn replace_static_member(
        &self,
        group: &mut ClassicGroup,
        old_id: &str,
        new_id: String,
        req: JoinRequest,
        tx: oneshot::Sender<JoinOutcome>,
        now: Instant,
    ) -> Result<(), ()> {
        let instance = req.instance_id.clone().unwrap_or_default();
        let Some(member) = group.member_mut(old_id) else {
            group.static_members.remove(&instance);
            group.static_members.insert(instance, new_id.clone());
            self.add_member_and_rebalance(group, new_id, req, tx, now);
            return Ok(());
        };
        let unchanged = member.protocols == req.protocols;
        // The old incarnation's pending requests are fenced.
        if let Some(w) = member.join_waiter.take() {
            let _ = w.send(JoinOutcome::error(GroupError::FencedInstanceId, old_id));
        }
        if let Some(w) = member.sync_waiter.take() {
            let _ = w.send(SyncOutcome::error(GroupError::FencedInstanceId));
        }
        member.id = new_id.clone();
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.protocols = req.protocols.clone();
        member.touch(now);
        group.static_members.insert(instance, new_id.clone());
        let was_leader = group.leader.as_deref() == Some(old_id);
        if was_leader {
            group.leader = Some(new_id.clone());
        }
        match group.state {
            GroupState::Stable if unchanged => {
                // As Kafka: no rebalance, whether or not it leads. A leader gets the member
                // list (and, from JoinGroup v9, skip_assignment); its SyncGroup in a stable group
                // returns the assignment it already has.
                let outcome = JoinOutcome {
                    skip_assignment: was_leader,
                    ..join_result(group, &new_id)
                };
                let _ = tx.send(outcome);
                self.persist(group);
            }
            GroupState::PreparingRebalance => {
                if let Some(m) = group.member_mut(&new_id) {
                    m.join_waiter = Some(tx);
                }
                self.try_complete_join(group, now);
            }
            _ => {
                if let Some(m) = group.member_mut(&new_id) {
                    m.join_waiter = Some(tx);
                }
                self.prepare_rebalance(group, now);
                self.try_complete_join(group, now);
            }
        }
        Ok(())
    }

    fn join_existing_member(
        &self,
        group: &mut ClassicGroup,
        req: JoinRequest,
        tx: oneshot::Sender<JoinOutcome>,
        now: Instant,
    ) -> Result<(), ()> {
        if group.pending_members.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            self.add_member_and_rebalance(group, id, req, tx, now);
            return Ok(());
        }
        if let Err(e) = check_member(group, &req.member_id, req.instance_id.as_deref()) {
            let _ = tx.send(JoinOutcome::error(e, &req.member_id));
            return Err(());
        }
        let state = group.state;
        let is_leader = group.leader.as_deref() == Some(req.member_id.as_str());
        let member = group.member_mut(&req.member_id).ok_or(())?;
        let unchanged = member.protocols == req.protocols;
        member.protocols = req.protocols;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.touch(now);
        match state {
            GroupState::PreparingRebalance => {
                member.join_waiter = Some(tx);
                self.try_complete_join(group, now);
            }
            GroupState::CompletingRebalance if unchanged => {
                // A repeated JoinGroup (the response was lost): answer as before.
                let _ = tx.send(join_result(group, &req.member_id));
            }
            GroupState::Stable if unchanged && !is_leader => {
                let _ = tx.send(join_result(group, &req.member_id));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.join_waiter = Some(tx);
                self.prepare_rebalance(group, now);
                self.try_complete_join(group, now);
            }
            GroupState::Empty | GroupState::Dead => {
                let _ = tx.send(JoinOutcome::error(GroupError::UnknownMemberId, &req.member_id));
            }
        }
        Ok(())
    }

    fn add_member_and_rebalance(
        &self,
        group: &mut ClassicGroup,
        id: String,
        req: JoinRequest,
        tx: oneshot::Sender<JoinOutcome>,
        now: Instant,
    ) {
        if group.members.is_empty() {
            group.protocol_type = Some(req.protocol_type.clone());
        }
        let mut member = Member {
            id: id.clone(),
            instance_id: req.instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocols: req.protocols,
            assignment: Bytes::new(),
            join_waiter: Some(tx),
            sync_waiter: None,
            session_deadline: now,
        };
        member.touch(now);
        group.members.push(member);
        if group.leader.is_none() {
            group.leader = Some(id);
        }
        if group.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(group, now);
        } else if group.join_not_before.is_some() {
            // Kafka's delayed initial join: each member arriving during the delay extends it,
            // so a fleet starting together lands in one generation; the rebalance timeout caps it.
            let delay = Duration::from_millis(self.config.initial_rebalance_delay_ms.max(0) as u64);
            let extended = now + delay;
            group.join_not_before = Some(group.rebalance_deadline.map_or(extended, |d| extended.min(d)));
        }
        self.try_complete_join(group, now);
    }

    /// Enters PreparingRebalance: members must rejoin within the rebalance timeout. A new
    /// group first waits group.initial.rebalance.delay.ms so that members starting together
    /// land in one generation.
    pub(super) fn prepare_rebalance(&self, group: &mut ClassicGroup, now: Instant) {
        if group.state == GroupState::CompletingRebalance {
            for m in &mut group.members {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncOutcome::error(GroupError::RebalanceInProgress));
                }
            }
        }
        let rebalance_timeout = group.rebalance_timeout();
        group.join_not_before = (group.state == GroupState::Empty).then(|| {
            now + Duration::from_millis(self.config.initial_rebalance_delay_ms.max(0) as u64)
                .min(rebalance_timeout)
        });
        group.rebalance_deadline = Some(now + rebalance_timeout);
        group.sync_deadline = None;
        group.state = GroupState::PreparingRebalance;
        tracing::debug!(group = %group.id, generation = group.generation, "preparing rebalance");
    }

    pub(super) fn try_complete_join(&self, group: &mut ClassicGroup, now: Instant) {
        if group.state == GroupState::PreparingRebalance
            && group.all_joined()
            && group.join_not_before.is_none_or(|t| now >= t)
        {
            self.complete_join(group, now);
        }
    }

    /// Ends PreparingRebalance: members that did not rejoin are removed, a new generation
    /// starts, and every waiting member gets its JoinGroup answer (the leader with the members'
    /// subscriptions, so it can compute the assignment).
    pub(super) fn complete_join(&self, group: &mut ClassicGroup, now: Instant) {
        group.remove_members_where(
            |m| m.join_waiter.is_none(),
            "did not rejoin within the rebalance timeout",
        );
        group.pending_members.clear();
        group.generation += 1;
        group.rebalance_deadline = None;
        group.join_not_before = None;
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.protocol_name = None;
            group.leader = None;
            group.empty_since_ms = Some(now_ms());
            self.persist(group);
            tracing::info!(group = %group.id, generation = group.generation, "group is empty");
            return;
        }
        group.protocol_name = group.select_protocol();
        if group.leader.as_ref().is_none_or(|l| group.member(l).is_none()) {
            group.leader = group.members.first().map(|m| m.id.clone());
        }
        group.state = GroupState::CompletingRebalance;
        group.sync_deadline = Some(now + group.rebalance_timeout());
        group.empty_since_ms = None;
        for i in 0..group.members.len() {
            let id = group.members[i].id.clone();
            let outcome = join_result(group, &id);
            let m = &mut group.members[i];
            m.assignment = Bytes::new();
            m.touch(now);
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(outcome);
            }
        }
        tracing::info!(
            group = %group.id,
            generation = group.generation,
            members = group.members.len(),
            protocol = group.protocol_name.as_deref().unwrap_or(""),
            "rebalance completed joining"
        );
    }

    pub fn sync(&self, req: SyncRequest) -> oneshot::Receiver<SyncOutcome> {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let mut state = self.lock();
        let Some(group) = state.groups.get_mut(&req.group_id) else {
            let _ = tx.send(SyncOutcome::error(GroupError::UnknownMemberId));
            return rx;
        };
        if let Err(e) = check_member(group, &req.member_id, req.instance_id.as_deref()) {
            let _ = tx.send(SyncOutcome::error(e));
            return rx;
        }
        if req.generation != group.generation {
            let _ = tx.send(SyncOutcome::error(GroupError::IllegalGeneration));
            return rx;
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != group.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| Some(n) != group.protocol_name.as_ref())
        {
            let _ = tx.send(SyncOutcome::error(GroupError::InconsistentGroupProtocol));
            return rx;
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => {
                let _ = tx.send(SyncOutcome::error(GroupError::UnknownMemberId));
            }
            GroupState::PreparingRebalance => {
                let _ = tx.send(SyncOutcome::error(GroupError::RebalanceInProgress));
            }
            GroupState::Stable => {
                let m = group.member_mut(&req.member_id).expect("checked above");
                m.touch(now);
                let assignment = m.assignment.clone();
                let _ = tx.send(self.sync_result(group, assignment));
            }
            GroupState::CompletingRebalance => {
                let is_leader = group.leader.as_deref() == Some(req.member_id.as_str());
                let m = group.member_mut(&req.member_id).expect("checked above");
                m.touch(now);
                m.sync_waiter = Some(tx);
                if is_leader {
                    let assignments: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in &mut group.members {
                        m.assignment = assignments.get(&m.id).cloned().unwrap_or_default();
                    }
                    // The generation's assignment is durable before any member learns it: the
                    // group stays CompletingRebalance (members' SyncGroups wait) until the
                    // write is done, without holding the lock meanwhile.
                    let (me, id, generation) = (self.me.clone(), group.id.clone(), group.generation);
                    self.store
                        .submit(vec![GroupWrite::PutGroup(classic_record(group))], move |stored| {
                            if let Some(coordinator) = me.upgrade() {
                                coordinator.assignment_stored(&id, generation, stored);
                            }
                        });
                }
            }
        }
        rx
    }

    /// The leader's assignment for `generation` is durable (or failed to be): the group becomes
    /// stable and every member waiting in SyncGroup gets its assignment, or, after a failed
    /// write, an error and a new rebalance. Nothing happens if the group moved on meanwhile.
    fn assignment_stored(&self, group_id: &str, generation: i32, stored: Result<(), MetaError>) {
        let mut state = self.lock();
        let Some(group) = state.groups.get_mut(group_id) else {
            return;
        };
        if group.generation != generation || group.state != GroupState::CompletingRebalance {
            return;
        }
        if let Err(e) = stored {
            tracing::error!(group = %group.id, error = %e, "cannot persist group; rebalancing");
            for m in &mut group.members {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncOutcome::error(GroupError::CoordinatorNotAvailable));
                }
            }
            self.prepare_rebalance(group, Instant::now());
            return;
        }
        group.state = GroupState::Stable;
        group.sync_deadline = None;
        for i in 0..group.members.len() {
            let assignment = group.members[i].assignment.clone();
            let outcome = self.sync_result(group, assignment);
            if let Some(w) = group.members[i].sync_waiter.take() {
                let _ = w.send(outcome);
            }
        }
        tracing::info!(group = %group.id, generation = group.generation, "group is stable");
    }

    fn sync_result(&self, group: &ClassicGroup, assignment: Bytes) -> SyncOutcome {
        SyncOutcome {
            error: None,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol_name.clone(),
            assignment,
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        let now = Instant::now();
        let mut state = self.lock();
        let group = state
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        check_member(group, member_id, instance_id)?;
        if generation != group.generation {
            return Err(GroupError::IllegalGeneration);
        }
        let st = group.state;
        if let Some(m) = group.member_mut(member_id) {
            m.touch(now);
        }
        match st {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// LeaveGroup for one member (batched requests call this per member).
    pub fn leave(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<String, GroupError> {
        let now = Instant::now();
        let mut state = self.lock();
        let group = state
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        let id = match instance_id {
            Some(instance) => {
                let mapped = group
                    .static_members
                    .get(instance)
                    .cloned()
                    .ok_or(GroupError::UnknownMemberId)?;
                if !member_id.is_empty() && member_id != mapped {
                    return Err(GroupError::FencedInstanceId);
                }
                mapped
            }
            None => member_id.to_string(),
        };
        if group.pending_members.remove(&id).is_some() {
            return Ok(id);
        }
        group.remove_member(&id).ok_or(GroupError::UnknownMemberId)?;
        tracing::info!(group = %group_id, member = %id, "member left the group");
        self.after_removal(group, now);
        Ok(id)
    }

    pub(super) fn after_removal(&self, group: &mut ClassicGroup, now: Instant) {
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(group, now);
                self.try_complete_join(group, now);
            }
            GroupState::PreparingRebalance => self.try_complete_join(group, now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Queues the group's record (members and assignments) for the store. As in Kafka, no
    /// reply waits for it (only SyncGroup's settled assignment does); a failed write is logged
    /// by the writer, the group keeps working, and the next successful write catches up.
    fn persist(&self, group: &ClassicGroup) {
        drop(self.store_changes(vec![GroupWrite::PutGroup(classic_record(group))]));
    }
}

/// Kafka's member validation: a static member's instance id must map to this member id.
pub(super) fn check_member(
    group: &ClassicGroup,
    member_id: &str,
    instance_id: Option<&str>,
) -> Result<(), GroupError> {
    if let Some(instance) = instance_id {
        match group.static_members.get(instance) {
            Some(id) if id != member_id => return Err(GroupError::FencedInstanceId),
            None => return Err(GroupError::UnknownMemberId),
            _ => {}
        }
    }
    if group.member(member_id).is_none() {
        return Err(GroupError::UnknownMemberId);
    }
    Ok(())
}

fn join_result(group: &ClassicGroup, member_id: &str) -> JoinOutcome {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let is_leader = group.leader.as_deref() == Some(member_id);
    JoinOutcome {
        error: None,
        generation: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader: group.leader.clone().unwrap_or_default(),
        member_id: member_id.to_string(),
        members: if is_leader {
            group
                .members
                .iter()
                .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata_for(&protocol)))
                .collect()
        } else {
            Vec::new()
        },
        skip_assignment: false,
    }
}

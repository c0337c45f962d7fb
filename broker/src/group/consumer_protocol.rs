//! The KIP-848 consumer protocol on the coordinator: ConsumerGroupHeartbeat (join, reconcile,
//! leave), ConsumerGroupDescribe, session and rebalance timeouts, and the consumer groups'
//! records in the store. Kafka's GroupMetadataManager.consumerGroupHeartbeat is the reference.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::assignor::{self, MemberSpec};
use super::consumer::{
    reconcile, ConsumerGroup, ConsumerGroupState, ConsumerMember, MemberState, TopicPartitions,
    LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH,
};
use super::records::consumer_record;
use super::regex::TopicRegex;
use super::{GroupCoordinator, GroupError, State, Stored};
use crate::clock::now_ms;
use crate::meta::{ConsumerGroupRecord, GroupWrite};

/// The topics as the coordinator needs them: name → (id, partition count).
#[derive(Debug, Clone, Default)]
pub struct TopicsImage(pub BTreeMap<String, (Uuid, i32)>);

impl TopicsImage {
    pub fn name_of(&self, id: Uuid) -> Option<&str> {
        self.0
            .iter()
            .find(|(_, (i, _))| *i == id)
            .map(|(n, _)| n.as_str())
    }
}

/// A ConsumerGroupHeartbeat as the coordinator sees it.
#[derive(Debug, Clone, Default)]
pub struct ConsumerHeartbeat {
    pub api_version: i16,
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns (None when the request does not say).
    pub owned: Option<TopicPartitions>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's current assignment, when the response carries it.
    pub assignment: Option<TopicPartitions>,
}

/// An error and the message Kafka sends with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatFailure {
    pub error: GroupError,
    pub message: String,
}

fn fail<T>(error: GroupError, message: impl Into<String>) -> Result<T, HeartbeatFailure> {
    Err(HeartbeatFailure {
        error,
        message: message.into(),
    })
}

/// What ConsumerGroupDescribe reports of a group.
pub struct ConsumerGroupDescription {
    pub state: ConsumerGroupState,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<(ConsumerMember, TopicPartitions)>,
}

fn empty_string(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(str::is_empty)
}

impl GroupCoordinator {
    /// Kafka's throwIfConsumerGroupHeartbeatRequestIsInvalid.
    fn validate_heartbeat(&self, req: &ConsumerHeartbeat) -> Result<(), HeartbeatFailure> {
        let invalid = |m: &str| fail(GroupError::InvalidRequest, m);
        if req.api_version >= 1 && req.member_id.is_empty() {
            return invalid("MemberId can't be empty.");
        }
        if req.group_id.is_empty() {
            return invalid("GroupId can't be empty.");
        }
        if empty_string(&req.instance_id) {
            return invalid("InstanceId can't be empty.");
        }
        if empty_string(&req.rack_id) {
            return invalid("RackId can't be empty.");
        }
        match req.member_epoch {
            0 => {
                if req.rebalance_timeout_ms == -1 {
                    return invalid("RebalanceTimeoutMs must be provided in first request.");
                }
                if req.owned.as_ref().is_none_or(|o| !o.is_empty()) {
                    return invalid("TopicPartitions must be empty when (re-)joining.");
                }
                if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                    return invalid(
                        "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.",
                    );
                }
            }
            LEAVE_GROUP_STATIC_MEMBER_EPOCH if req.instance_id.is_none() => {
                return invalid("InstanceId can't be null.");
            }
            e if e < LEAVE_GROUP_STATIC_MEMBER_EPOCH => return invalid("MemberEpoch is invalid."),
            _ => {}
        }
        if req.member_epoch != 0 && req.member_id.is_empty() {
            return invalid("MemberId can't be empty.");
        }
        if let Some(regex) = req.subscribed_topic_regex.as_deref().filter(|r| !r.is_empty()) {
            if let Err(e) = TopicRegex::parse(regex) {
                return fail(
                    GroupError::InvalidRegularExpression,
                    format!(
                        "SubscribedTopicRegex `{regex}` is not a valid regular expression: {}.",
                        e.0
                    ),
                );
            }
        }
        if let Some(a) = &req.server_assignor {
            if !self.config.consumer.assignors.contains(a) {
                return fail(
                    GroupError::UnsupportedAssignor,
                    format!(
                        "ServerAssignor {a} is not supported. Supported assignors: {}.",
                        self.config.consumer.assignors.join(", ")
                    ),
                );
            }
        }
        Ok(())
    }

    /// A ConsumerGroupHeartbeat. A change of the group's state is durable before the answer
    /// (which carries the new epoch and assignment) is given; if it cannot be stored the answer
    /// is COORDINATOR_NOT_AVAILABLE, and the client retries.
    pub async fn consumer_heartbeat(
        &self,
        req: ConsumerHeartbeat,
        topics: &TopicsImage,
    ) -> Result<HeartbeatAnswer, HeartbeatFailure> {
        self.validate_heartbeat(&req)?;
        let mut stored = None;
        let answer = {
            let now = Instant::now();
            let mut state = self.lock();
            if req.member_epoch == LEAVE_GROUP_MEMBER_EPOCH
                || req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH
            {
                self.consumer_leave(&mut state, &req, &mut stored)
            } else {
                self.heartbeat_locked(&mut state, req, topics, now, &mut stored)
            }
        };
        if let Some(stored) = stored {
            if !matches!(stored.await, Ok(Ok(()))) {
                return fail(
                    GroupError::CoordinatorNotAvailable,
                    "the group's new state could not be stored",
                );
            }
        }
        answer
    }

    fn heartbeat_locked(
        &self,
        state: &mut State,
        req: ConsumerHeartbeat,
        topics: &TopicsImage,
        now: Instant,
        stored: &mut Option<Stored>,
    ) -> Result<HeartbeatAnswer, HeartbeatFailure> {
        let joining = req.member_epoch == 0;
        let group_id = req.group_id.clone();
        if !state.consumer_groups.contains_key(&group_id) {
            match state.groups.get(&group_id) {
                // An empty classic group gives way to the consumer group (Kafka's
                // maybeDeleteEmptyClassicGroup); Keel does not migrate live classic groups.
                Some(classic)
                    if joining && classic.members.is_empty() && classic.pending_members.is_empty() =>
                {
                    state.groups.remove(&group_id);
                }
                Some(_) => {
                    return fail(
                        GroupError::GroupIdNotFound,
                        format!("Group {group_id} is not a consumer group"),
                    )
                }
                None if !joining => {
                    return fail(
                        GroupError::GroupIdNotFound,
                        format!("Consumer group {group_id} not found."),
                    )
                }
                None => {}
            }
            state
                .consumer_groups
                .insert(group_id.clone(), ConsumerGroup::new(group_id.clone(), now_ms()));
        }
        let Some(group) = state.consumer_groups.get_mut(&group_id) else {
            return fail(GroupError::CoordinatorNotAvailable, "group vanished");
        };
        let before = consumer_record(group);
        let result = self.heartbeat_group(group, req, topics, now);
        let after = consumer_record(group);
        if after != before {
            *stored = Some(self.persist_consumer_group(after));
        }
        if group.members.is_empty() && group.group_epoch == 0 {
            // A join that failed validation created nothing worth keeping.
            state.consumer_groups.remove(&group_id);
        }
        result
    }

    fn heartbeat_group(
        &self,
        group: &mut ConsumerGroup,
        req: ConsumerHeartbeat,
        topics: &TopicsImage,
        now: Instant,
    ) -> Result<HeartbeatAnswer, HeartbeatFailure> {
        let cfg = &self.config.consumer;
        // The group's own settings (a GROUP config resource) over the broker defaults.
        let timeouts = self.group_config(&req.group_id);
        let joining = req.member_epoch == 0;
        // v0: the coordinator names a joining member; v1 members name themselves (KIP-1082).
        let member_id = if req.member_id.is_empty() {
            Uuid::new_v4().to_string()
        } else {
            req.member_id.clone()
        };
        let mut bump = false;
        let old = self.heartbeat_member(group, &member_id, &req, now)?;
        if old.is_none() && group.members.len() >= cfg.max_size {
            return fail(
                GroupError::GroupMaxSizeReached,
                format!(
                    "The consumer group has reached its maximum capacity of {} members.",
                    cfg.max_size
                ),
            );
        }
        let mut member = old.clone().unwrap_or_else(|| {
            bump = true;
            ConsumerMember::new(member_id.clone(), now)
        });
        bump |= update_member(&mut member, &req);
        if let Some(instance) = &member.instance_id {
            group.static_members.insert(instance.clone(), member_id.clone());
        }
        group.members.insert(member_id.clone(), member.clone());
        group.empty_since_ms = None;

        let subscribed = subscribed_topics(group, topics);
        if subscribed != group.subscribed_topics {
            bump = true;
            group.subscribed_topics = subscribed;
        }
        if bump {
            group.group_epoch += 1;
            tracing::info!(group = %group.id, epoch = group.group_epoch, "consumer group epoch bumped");
        }
        if group.group_epoch > group.assignment_epoch {
            self.update_target_assignment(group);
        }
        let target = group.target.get(&member_id).cloned().unwrap_or_default();
        let owned_by_others = group.owned_by_others(&member_id);
        let mut next = reconcile(
            &member,
            group.assignment_epoch,
            &target,
            req.owned.as_ref(),
            &owned_by_others,
        );
        next.session_deadline = now + Duration::from_millis(timeouts.session_timeout_ms.max(0) as u64);
        next.rebalance_deadline = match (next.state, member.state, next.member_epoch == member.member_epoch) {
            (MemberState::UnrevokedPartitions, MemberState::UnrevokedPartitions, true) => {
                member.rebalance_deadline
            }
            (MemberState::UnrevokedPartitions, _, _) => {
                Some(now + Duration::from_millis(next.rebalance_timeout_ms.max(0) as u64))
            }
            _ => None,
        };
        let assigned_changed = old.as_ref().is_none_or(|o| o.assigned != next.assigned);
        let full = joining
            || (req.rebalance_timeout_ms != -1
                && (req.subscribed_topic_names.is_some() || req.subscribed_topic_regex.is_some())
                && req.owned.is_some());
        let answer = HeartbeatAnswer {
            member_id: member_id.clone(),
            member_epoch: next.member_epoch,
            heartbeat_interval_ms: timeouts.heartbeat_interval_ms,
            assignment: (full || assigned_changed).then(|| next.assigned.clone()),
        };
        group.members.insert(member_id, next);
        // The regex this heartbeat brought is resolved now, after its answer: the member's next
        // heartbeat sees the matching topics, bumps the epoch and gets them assigned.
        if let Some(regex) = member.subscribed_topic_regex {
            group.resolved_regexes.insert(regex);
        }
        group.forget_unused_regexes();
        Ok(answer)
    }

    /// The member a heartbeat speaks for, as it was before it (None for a new member), after
    /// Kafka's checks of its epoch and owned partitions.
    fn heartbeat_member(
        &self,
        group: &mut ConsumerGroup,
        member_id: &str,
        req: &ConsumerHeartbeat,
        now: Instant,
    ) -> Result<Option<ConsumerMember>, HeartbeatFailure> {
        let joining = req.member_epoch == 0;
        if let Some(instance) = &req.instance_id {
            return self.static_member(group, member_id, instance, req, now);
        }
        match group.members.get(member_id) {
            Some(m) if joining => {
                // The member lost its state (it was fenced) and rejoins with the same id: it
                // owns nothing now, so it starts over.
                let mut fresh = ConsumerMember::new(member_id.to_string(), now);
                fresh.subscribed_topic_names = m.subscribed_topic_names.clone();
                fresh.subscribed_topic_regex = m.subscribed_topic_regex.clone();
                fresh.server_assignor = m.server_assignor.clone();
                group.members.insert(member_id.to_string(), fresh.clone());
                Ok(Some(fresh))
            }
            Some(m) => {
                check_epoch(m, req.member_epoch, req.owned.as_ref())?;
                Ok(Some(m.clone()))
            }
            None if joining => Ok(None),
            None => fail(
                GroupError::UnknownMemberId,
                format!("Member {member_id} is not a member of group {}.", group.id),
            ),
        }
    }

    /// Kafka's getOrMaybeSubscribeStaticConsumerGroupMember: the member the request speaks for,
    /// None for a new one. A static member rejoining after a temporary leave (epoch -2) takes
    /// its predecessor's place and assignment.
    fn static_member(
        &self,
        group: &mut ConsumerGroup,
        member_id: &str,
        instance: &str,
        req: &ConsumerHeartbeat,
        now: Instant,
    ) -> Result<Option<ConsumerMember>, HeartbeatFailure> {
        let existing = group
            .static_members
            .get(instance)
            .and_then(|id| group.members.get(id))
            .cloned();
        if req.member_epoch == 0 {
            let Some(previous) = existing else {
                return Ok(None);
            };
            if previous.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                return fail(
                    GroupError::UnreleasedInstanceId,
                    format!(
                        "Static member {member_id} with instance id {instance} cannot join the group because the instance id is is owned by {} member.",
                        previous.id
                    ),
                );
            }
            let mut replacement = previous.clone();
            replacement.id = member_id.to_string();
            replacement.member_epoch = 0;
            replacement.session_deadline = now;
            let target = group.target.remove(&previous.id);
            group.members.remove(&previous.id);
            if let Some(t) = target {
                group.target.insert(member_id.to_string(), t);
            }
            group.members.insert(member_id.to_string(), replacement.clone());
            tracing::info!(group = %group.id, member = %member_id, instance, "static member replaced its previous incarnation");
            return Ok(Some(replacement));
        }
        let Some(m) = existing else {
            return fail(
                GroupError::UnknownMemberId,
                format!("Instance id {instance} is unknown."),
            );
        };
        if m.id != member_id {
            return fail(
                GroupError::FencedInstanceId,
                format!(
                    "Static member {member_id} with instance id {instance} is not the member {}.",
                    m.id
                ),
            );
        }
        check_epoch(&m, req.member_epoch, req.owned.as_ref())?;
        Ok(Some(m))
    }

    fn update_target_assignment(&self, group: &mut ConsumerGroup) {
        let cfg = &self.config.consumer;
        let default = cfg.assignors.first().map(String::as_str).unwrap_or("uniform");
        let assignor = group.preferred_assignor(&cfg.assignors, default);
        let subscribed = &group.subscribed_topics;
        let regexes = resolved_regexes(group);
        let specs: BTreeMap<String, MemberSpec> = group
            .members
            .values()
            .map(|m| {
                let regex = m.subscribed_topic_regex.as_deref().and_then(|r| regexes.get(r));
                let topics = subscribed
                    .iter()
                    .filter(|(name, _)| member_subscribes(m, regex, name))
                    .map(|(_, (id, _))| *id)
                    .collect();
                let current = group.target.get(&m.id).cloned().unwrap_or_default();
                (m.id.clone(), MemberSpec { topics, current })
            })
            .collect();
        let partitions: BTreeMap<Uuid, i32> = subscribed.values().copied().collect();
        group.target = assignor::assign(&assignor, &specs, &partitions);
        group.assignment_epoch = group.group_epoch;
        tracing::info!(group = %group.id, epoch = group.assignment_epoch, assignor, "consumer group target assignment computed");
    }

    /// A member leaves (epoch -1) or a static member leaves for now (epoch -2, keeping its
    /// assignment until its session times out).
    fn consumer_leave(
        &self,
        state: &mut State,
        req: &ConsumerHeartbeat,
        stored: &mut Option<Stored>,
    ) -> Result<HeartbeatAnswer, HeartbeatFailure> {
        let Some(group) = state.consumer_groups.get_mut(&req.group_id) else {
            let message = if state.groups.contains_key(&req.group_id) {
                format!("Group {} is not a consumer group", req.group_id)
            } else {
                format!("Consumer group {} not found.", req.group_id)
            };
            return fail(GroupError::GroupIdNotFound, message);
        };
        let member_id = match &req.instance_id {
            Some(instance) => {
                let Some(id) = group.static_members.get(instance).cloned() else {
                    return fail(
                        GroupError::UnknownMemberId,
                        format!("Instance id {instance} is unknown."),
                    );
                };
                if id != req.member_id {
                    return fail(
                        GroupError::FencedInstanceId,
                        format!(
                            "Static member {} with instance id {instance} is not the member {id}.",
                            req.member_id
                        ),
                    );
                }
                id
            }
            None => req.member_id.clone(),
        };
        if !group.members.contains_key(&member_id) {
            return fail(
                GroupError::UnknownMemberId,
                format!("Member {member_id} is not a member of group {}.", group.id),
            );
        }
        if req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
            if let Some(m) = group.members.get_mut(&member_id) {
                m.previous_member_epoch = m.member_epoch;
                m.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
            }
            tracing::info!(group = %group.id, member = %member_id, "static member left temporarily");
        } else {
            group.remove_member(&member_id, now_ms());
            tracing::info!(group = %group.id, member = %member_id, "member left the consumer group");
        }
        *stored = Some(self.persist_consumer_group(consumer_record(group)));
        Ok(HeartbeatAnswer {
            member_id,
            member_epoch: req.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    pub fn consumer_group_describe(
        &self,
        group_id: &str,
    ) -> Result<ConsumerGroupDescription, HeartbeatFailure> {
        let state = self.lock();
        let Some(g) = state.consumer_groups.get(group_id) else {
            let message = if state.groups.contains_key(group_id) {
                format!("Group {group_id} is not a consumer group.")
            } else {
                format!("Group {group_id} not found.")
            };
            return fail(GroupError::GroupIdNotFound, message);
        };
        let cfg = &self.config.consumer;
        let default = cfg.assignors.first().map(String::as_str).unwrap_or("uniform");
        Ok(ConsumerGroupDescription {
            state: g.state(),
            group_epoch: g.group_epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.preferred_assignor(&cfg.assignors, default),
            members: g
                .members
                .values()
                .map(|m| (m.clone(), g.target.get(&m.id).cloned().unwrap_or_default()))
                .collect(),
        })
    }

    /// Kafka's ConsumerGroup.validateOffsetCommit: members commit with their current epoch.
    pub(super) fn validate_consumer_commit(
        group: &ConsumerGroup,
        member_id: &str,
        member_epoch: i32,
        api_version: i16,
    ) -> Result<(), GroupError> {
        if member_epoch < 0 && group.members.is_empty() {
            return Ok(());
        }
        let member = group.members.get(member_id).ok_or(GroupError::UnknownMemberId)?;
        if api_version < 9 {
            return Err(GroupError::UnsupportedVersion);
        }
        if member_epoch != member.member_epoch {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// Kafka's ConsumerGroup.validateOffsetFetch (OffsetFetch v9 names member and epoch).
    pub fn validate_offset_fetch(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), GroupError> {
        let state = self.lock();
        let Some(group) = state.consumer_groups.get(group_id) else {
            return Ok(());
        };
        let Some(member_id) = member_id else {
            return if member_epoch < 0 {
                Ok(())
            } else {
                Err(GroupError::UnknownMemberId)
            };
        };
        if member_id.is_empty() && member_epoch < 0 {
            return Ok(());
        }
        let member = group.members.get(member_id).ok_or(GroupError::UnknownMemberId)?;
        if member_epoch != member.member_epoch {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// Session and rebalance timeouts of consumer group members (run by the timer task).
    pub(super) fn expire_consumer_members(&self, state: &mut State, now: Instant) {
        for group in state.consumer_groups.values_mut() {
            let expired: Vec<(String, &'static str)> = group
                .members
                .values()
                .filter_map(|m| {
                    if m.session_deadline <= now {
                        Some((m.id.clone(), "session timeout"))
                    } else if m.rebalance_deadline.is_some_and(|d| d <= now) {
                        Some((m.id.clone(), "rebalance timeout (partitions not revoked)"))
                    } else {
                        None
                    }
                })
                .collect();
            if expired.is_empty() {
                continue;
            }
            for (id, why) in expired {
                tracing::info!(group = %group.id, member = %id, reason = why, "consumer group member fenced; removed");
                group.remove_member(&id, now_ms());
            }
            // Nobody waits for a fenced member's removal; the writer logs a failed write.
            drop(self.persist_consumer_group(consumer_record(group)));
        }
    }

    /// Queues the group's record for the store; a heartbeat's answer waits for it, so an
    /// acknowledged epoch and assignment survive a crash.
    fn persist_consumer_group(&self, record: ConsumerGroupRecord) -> Stored {
        self.store_changes(vec![GroupWrite::PutConsumerGroup(record)])
    }
}

/// Takes what a heartbeat says of its member (identity, timeouts, subscription, assignor);
/// true when the change needs a new group epoch (a new subscription or assignor).
fn update_member(member: &mut ConsumerMember, req: &ConsumerHeartbeat) -> bool {
    let mut bump = false;
    member.instance_id = req.instance_id.clone();
    if req.rack_id.is_some() {
        member.rack_id = req.rack_id.clone();
    }
    if req.rebalance_timeout_ms > 0 {
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
    }
    member.client_id = req.client_id.clone();
    member.client_host = req.client_host.clone();
    if let Some(names) = &req.subscribed_topic_names {
        let mut names = names.clone();
        names.sort();
        names.dedup();
        bump |= names != member.subscribed_topic_names;
        member.subscribed_topic_names = names;
    }
    if let Some(regex) = &req.subscribed_topic_regex {
        let regex = (!regex.is_empty()).then(|| regex.clone());
        bump |= regex != member.subscribed_topic_regex;
        member.subscribed_topic_regex = regex;
    }
    if req.server_assignor.is_some() && req.server_assignor != member.server_assignor {
        bump = true;
        member.server_assignor = req.server_assignor.clone();
    }
    bump
}

/// Kafka's throwIfConsumerGroupMemberEpochIsInvalid.
fn check_epoch(
    member: &ConsumerMember,
    received: i32,
    owned: Option<&TopicPartitions>,
) -> Result<(), HeartbeatFailure> {
    let fenced = |relation: &str| {
        fail(
            GroupError::FencedMemberEpoch,
            format!(
                "The consumer group member has a {relation} member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                member.member_epoch
            ),
        )
    };
    if received > member.member_epoch {
        return fenced("greater");
    }
    if received < member.member_epoch {
        // A member that missed the response carrying its new epoch comes back with the previous
        // one and a subset of its assignment: accepted.
        let subset = owned.is_none_or(|o| {
            o.iter()
                .all(|(t, ps)| member.assigned.get(t).is_some_and(|a| ps.is_subset(a)) || ps.is_empty())
        });
        if received != member.previous_member_epoch || !subset {
            return fenced("smaller");
        }
    }
    Ok(())
}

/// The regexes the group's members subscribe with that the group has resolved, each compiled
/// once however many members share it.
fn resolved_regexes(group: &ConsumerGroup) -> BTreeMap<&str, TopicRegex> {
    group
        .members
        .values()
        .filter_map(|m| m.subscribed_topic_regex.as_deref())
        .filter(|r| group.resolved_regexes.contains(*r))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(|r| TopicRegex::parse(r).ok().map(|c| (r, c)))
        .collect()
}

/// Whether `m` subscribes to `topic`, by name or by its resolved regex (from `resolved_regexes`).
fn member_subscribes(m: &ConsumerMember, regex: Option<&TopicRegex>, topic: &str) -> bool {
    m.subscribed_topic_names.iter().any(|t| t == topic) || regex.is_some_and(|r| r.matches(topic))
}

/// The existing topics any member subscribes to, by name or by a resolved regex.
fn subscribed_topics(group: &ConsumerGroup, topics: &TopicsImage) -> BTreeMap<String, (Uuid, i32)> {
    let regexes = resolved_regexes(group).into_values().collect::<Vec<_>>();
    let names: BTreeSet<&str> = group
        .members
        .values()
        .flat_map(|m| m.subscribed_topic_names.iter().map(String::as_str))
        .collect();
    topics
        .0
        .iter()
        .filter(|(name, _)| names.contains(name.as_str()) || regexes.iter().any(|r| r.matches(name)))
        .map(|(n, v)| (n.clone(), *v))
        .collect()
}

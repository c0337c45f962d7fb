//! Groups as they are stored: each kind of group to and from its record in the metadata
//! store (`meta::GroupRecord`, `meta::ConsumerGroupRecord`). A record holds what must survive a
//! restart; deadlines restart from the moment of loading.

use std::time::{Duration, Instant};

use super::classic::{ClassicGroup, GroupState, Member};
use super::consumer::{ConsumerGroup, ConsumerMember, MemberState, TopicPartitions};
use crate::clock::now_ms;
use crate::meta::{ConsumerGroupRecord, ConsumerMemberRecord, GroupRecord, MemberRecord, TopicIdPartitions};

pub(super) fn classic_record(group: &ClassicGroup) -> GroupRecord {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    GroupRecord {
        group_id: group.id.clone(),
        protocol_type: group.protocol_type.clone().unwrap_or_default(),
        protocol_name: protocol.clone(),
        generation: group.generation,
        leader: group.leader.clone().unwrap_or_default(),
        members: group
            .members
            .iter()
            .map(|m| MemberRecord {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                subscription: m.metadata_for(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}

/// A group as the store recorded it: Stable with its members (who keep their assignment if
/// they heartbeat before their session timeout), or Empty.
pub(super) fn restore_classic(r: GroupRecord, now: Instant) -> ClassicGroup {
    let mut g = ClassicGroup::new(r.group_id, now_ms());
    g.generation = r.generation;
    g.protocol_type = (!r.protocol_type.is_empty()).then_some(r.protocol_type);
    if r.members.is_empty() {
        return g;
    }
    g.state = GroupState::Stable;
    g.empty_since_ms = None;
    g.protocol_name = Some(r.protocol_name.clone());
    g.leader = Some(r.leader);
    for m in r.members {
        if let Some(instance) = &m.instance_id {
            g.static_members.insert(instance.clone(), m.member_id.clone());
        }
        let mut member = Member {
            id: m.member_id,
            instance_id: m.instance_id,
            client_id: m.client_id,
            client_host: m.client_host,
            session_timeout_ms: m.session_timeout_ms,
            rebalance_timeout_ms: m.rebalance_timeout_ms,
            protocols: vec![(r.protocol_name.clone(), m.subscription)],
            assignment: m.assignment,
            join_waiter: None,
            sync_waiter: None,
            session_deadline: now,
        };
        member.touch(now);
        g.members.push(member);
    }
    g
}

fn to_record(a: &TopicPartitions) -> TopicIdPartitions {
    a.iter()
        .filter(|(_, ps)| !ps.is_empty())
        .map(|(t, ps)| (*t, ps.iter().copied().collect()))
        .collect()
}

fn from_record(a: TopicIdPartitions) -> TopicPartitions {
    a.into_iter()
        .map(|(t, ps)| (t, ps.into_iter().collect()))
        .collect()
}

pub(super) fn consumer_record(g: &ConsumerGroup) -> ConsumerGroupRecord {
    ConsumerGroupRecord {
        group_id: g.id.clone(),
        group_epoch: g.group_epoch,
        assignment_epoch: g.assignment_epoch,
        subscribed_topics: g
            .subscribed_topics
            .iter()
            .map(|(n, (id, p))| (n.clone(), *id, *p))
            .collect(),
        members: g
            .members
            .values()
            .map(|m| ConsumerMemberRecord {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                rack_id: m.rack_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                member_epoch: m.member_epoch,
                previous_member_epoch: m.previous_member_epoch,
                state: m.state.code(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                subscribed_topic_names: m.subscribed_topic_names.clone(),
                subscribed_topic_regex: m.subscribed_topic_regex.clone(),
                server_assignor: m.server_assignor.clone(),
                assigned: to_record(&m.assigned),
                pending_revocation: to_record(&m.pending_revocation),
                target: to_record(&g.target.get(&m.id).cloned().unwrap_or_default()),
            })
            .collect(),
    }
}

/// A consumer group as stored; its members get a fresh session to come back in.
pub(super) fn restore_consumer(
    r: ConsumerGroupRecord,
    now: Instant,
    session_timeout_ms: i32,
) -> ConsumerGroup {
    let mut g = ConsumerGroup::new(r.group_id, now_ms());
    g.group_epoch = r.group_epoch;
    g.assignment_epoch = r.assignment_epoch;
    g.subscribed_topics = r
        .subscribed_topics
        .into_iter()
        .map(|(n, id, p)| (n, (id, p)))
        .collect();
    if !r.members.is_empty() {
        g.empty_since_ms = None;
    }
    for m in r.members {
        let mut member = ConsumerMember::new(m.member_id.clone(), now);
        member.instance_id = m.instance_id;
        member.rack_id = m.rack_id;
        member.client_id = m.client_id;
        member.client_host = m.client_host;
        member.member_epoch = m.member_epoch;
        member.previous_member_epoch = m.previous_member_epoch;
        member.state = MemberState::from_code(m.state).unwrap_or(MemberState::Stable);
        member.rebalance_timeout_ms = m.rebalance_timeout_ms;
        member.subscribed_topic_names = m.subscribed_topic_names;
        member.subscribed_topic_regex = m.subscribed_topic_regex;
        member.server_assignor = m.server_assignor;
        member.assigned = from_record(m.assigned);
        member.pending_revocation = from_record(m.pending_revocation);
        member.session_deadline = now + Duration::from_millis(session_timeout_ms.max(0) as u64);
        if member.state == MemberState::UnrevokedPartitions {
            member.rebalance_deadline =
                Some(now + Duration::from_millis(member.rebalance_timeout_ms.max(0) as u64));
        }
        if let Some(instance) = &member.instance_id {
            g.static_members.insert(instance.clone(), member.id.clone());
        }
        g.target.insert(member.id.clone(), from_record(m.target));
        // The stored subscription and target were computed with the member's regex resolved.
        if let Some(regex) = &member.subscribed_topic_regex {
            g.resolved_regexes.insert(regex.clone());
        }
        g.members.insert(member.id.clone(), member);
    }
    g
}

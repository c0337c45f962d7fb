//! One classic-protocol consumer group: members, generation, chosen protocol, and Kafka's
//! states Empty → PreparingRebalance → CompletingRebalance → Stable (and Dead).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{GroupError, JoinOutcome, SyncOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The names Kafka reports in DescribeGroups and ListGroups.
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

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// Set while the member waits for the current rebalance's JoinGroup answer.
    pub join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    /// Set while the member waits for the leader's assignment.
    pub sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
    /// The member is expelled when this passes without a heartbeat (or other request).
    pub session_deadline: Instant,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    pub fn touch(&mut self, now: Instant) {
        self.session_deadline = now + std::time::Duration::from_millis(self.session_timeout_ms.max(0) as u64);
    }
}

pub struct ClassicGroup {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    /// Members in join order (the first to join leads a new generation).
    pub members: Vec<Member>,
    /// group.instance.id → member id of static members (KIP-345).
    pub static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, awaiting the second join (KIP-394).
    pub pending_members: HashMap<String, Instant>,
    /// When the current PreparingRebalance phase ends at the latest.
    pub rebalance_deadline: Option<Instant>,
    /// The initial-rebalance delay of a new group: the join completes no earlier than this.
    pub join_not_before: Option<Instant>,
    /// When CompletingRebalance gives up on the leader's SyncGroup.
    pub sync_deadline: Option<Instant>,
    /// When the group last became Empty (offsets retention counts from here), in unix ms.
    pub empty_since_ms: Option<i64>,
}

impl ClassicGroup {
    pub fn new(id: String, now_ms: i64) -> ClassicGroup {
        ClassicGroup {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: Vec::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline: None,
            join_not_before: None,
            sync_deadline: None,
            empty_since_ms: Some(now_ms),
        }
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    pub fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    /// Protocols every member supports.
    fn candidates(&self) -> Vec<String> {
        let Some(first) = self.members.first() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
            .collect()
    }

    /// Whether a member with these protocols may join (Kafka's `supportsProtocols`).
    pub fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && self
                .candidates()
                .iter()
                .any(|c| protocols.iter().any(|(p, _)| p == c))
    }

    /// Each member votes for its most preferred protocol that all support; most votes wins,
    /// ties going to the earlier candidate.
    pub fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut votes: BTreeMap<usize, usize> = BTreeMap::new();
        for m in &self.members {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|(p, _)| candidates.iter().position(|c| c == p))
            {
                *votes.entry(i).or_default() += 1;
            }
        }
        let best = votes.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?;
        candidates.get(*best.0).cloned()
    }

    pub fn all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.iter().all(|m| m.join_waiter.is_some())
    }

    /// The longest rebalance timeout among the members: how long a rebalance phase may last.
    pub fn rebalance_timeout(&self) -> std::time::Duration {
        let ms = self
            .members
            .iter()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
            .max(0);
        std::time::Duration::from_millis(ms as u64)
    }

    /// Removes every member matching `pred`, logging why.
    pub fn remove_members_where(&mut self, pred: impl Fn(&Member) -> bool, why: &str) {
        let doomed: Vec<String> = self
            .members
            .iter()
            .filter(|m| pred(m))
            .map(|m| m.id.clone())
            .collect();
        for id in doomed {
            tracing::info!(group = %self.id, member = %id, "member {why}; removed");
            self.remove_member(&id);
        }
    }

    /// Removes a member, answering any request it still waits on.
    pub fn remove_member(&mut self, id: &str) -> Option<Member> {
        let index = self.members.iter().position(|m| m.id == id)?;
        let mut member = self.members.remove(index);
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(id) {
                self.static_members.remove(instance);
            }
        }
        if let Some(w) = member.join_waiter.take() {
            let _ = w.send(JoinOutcome::error(GroupError::UnknownMemberId, id));
        }
        if let Some(w) = member.sync_waiter.take() {
            let _ = w.send(SyncOutcome::error(GroupError::UnknownMemberId));
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
        Some(member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protocols: &[&str]) -> Member {
        Member {
            id: id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::new())).collect(),
            assignment: Bytes::new(),
            join_waiter: None,
            sync_waiter: None,
            session_deadline: Instant::now(),
        }
    }

    #[test]
    fn protocol_is_chosen_by_vote_among_those_all_members_support() {
        let mut g = ClassicGroup::new("g".into(), 0);
        g.protocol_type = Some("consumer".into());
        g.members.push(member("a", &["cooperative-sticky", "range"]));
        g.members.push(member("b", &["range", "cooperative-sticky"]));
        g.members.push(member("c", &["range", "roundrobin"]));
        // Only range is supported by all three.
        assert_eq!(g.select_protocol().as_deref(), Some("range"));
        assert!(g.supports("consumer", &[("range".into(), Bytes::new())]));
        assert!(!g.supports("consumer", &[("roundrobin".into(), Bytes::new())]));
        assert!(!g.supports("connect", &[("range".into(), Bytes::new())]));
    }

    #[test]
    fn removing_the_leader_hands_leadership_to_the_next_member() {
        let mut g = ClassicGroup::new("g".into(), 0);
        g.members.push(member("a", &["range"]));
        g.members.push(member("b", &["range"]));
        g.leader = Some("a".into());
        g.remove_member("a");
        assert_eq!(g.leader.as_deref(), Some("b"));
    }
}

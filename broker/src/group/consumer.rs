//! One KIP-848 consumer group: the group epoch (bumped when membership or subscriptions
//! change), the target assignment and its epoch, and each member's epoch and current assignment
//! as it reconciles toward its target (Kafka's ConsumerGroup, ConsumerGroupMember and
//! CurrentAssignmentBuilder).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use uuid::Uuid;

pub use super::assignor::TopicPartitions;

/// Kafka's ConsumerGroup states, as DescribeGroups / ListGroups / ConsumerGroupDescribe name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

/// Where a member is in reconciling its assignment (Kafka's MemberState).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// At the target epoch with everything it may own.
    Stable,
    /// Must give partitions up (`pending_revocation`) before it advances its epoch.
    UnrevokedPartitions,
    /// At the target epoch, waiting for partitions other members still own.
    UnreleasedPartitions,
}

impl MemberState {
    pub fn code(self) -> u8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        }
    }

    pub fn from_code(c: u8) -> Option<MemberState> {
        Some(match c {
            0 => MemberState::Stable,
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => return None,
        })
    }
}

/// The member epoch of a static member that left temporarily (it keeps its assignment).
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;

#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns now.
    pub assigned: TopicPartitions,
    /// Partitions the member still owns but must give up.
    pub pending_revocation: TopicPartitions,
    pub session_deadline: Instant,
    /// Set while the member is asked to revoke: it is fenced if it has not by then.
    pub rebalance_deadline: Option<Instant>,
}

impl ConsumerMember {
    pub fn new(id: String, now: Instant) -> ConsumerMember {
        ConsumerMember {
            id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            member_epoch: 0,
            previous_member_epoch: -1,
            state: MemberState::Stable,
            rebalance_timeout_ms: -1,
            subscribed_topic_names: Vec::new(),
            subscribed_topic_regex: None,
            server_assignor: None,
            assigned: TopicPartitions::new(),
            pending_revocation: TopicPartitions::new(),
            session_deadline: now,
            rebalance_deadline: None,
        }
    }
}

pub struct ConsumerGroup {
    pub id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    /// member id → target assignment at `assignment_epoch`.
    pub target: BTreeMap<String, TopicPartitions>,
    /// Subscribed topics as of the last epoch bump: name → (id, partition count).
    pub subscribed_topics: BTreeMap<String, (Uuid, i32)>,
    /// instance id → member id of static members.
    pub static_members: HashMap<String, String>,
    /// Subscription regexes the coordinator has resolved. Kafka resolves a regex the group has
    /// not seen before asynchronously, after the heartbeat that brought it: that heartbeat's
    /// assignment leaves its topics out, and a later one adds them. Clients depend on that
    /// order (librdkafka's 0045 expects the literal topics of a mixed subscription first).
    pub resolved_regexes: BTreeSet<String>,
    /// When the group last became Empty (offsets retention counts from here), in unix ms.
    pub empty_since_ms: Option<i64>,
}

impl ConsumerGroup {
    pub fn new(id: String, now_ms: i64) -> ConsumerGroup {
        ConsumerGroup {
            id,
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscribed_topics: BTreeMap::new(),
            static_members: HashMap::new(),
            resolved_regexes: BTreeSet::new(),
            empty_since_ms: Some(now_ms),
        }
    }

    /// Kafka's ConsumerGroup.maybeUpdateGroupState.
    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| m.state != MemberState::Stable || m.member_epoch != self.assignment_epoch)
        {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// Removes a member (left, or fenced by a timeout) and bumps the group epoch so that the
    /// target assignment is recomputed.
    pub fn remove_member(&mut self, id: &str, now_ms: i64) -> Option<ConsumerMember> {
        let member = self.members.remove(id)?;
        self.target.remove(id);
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(id) {
                self.static_members.remove(instance);
            }
        }
        self.group_epoch += 1;
        if self.members.is_empty() {
            self.empty_since_ms = Some(now_ms);
        }
        self.forget_unused_regexes();
        Some(member)
    }

    /// Drops the resolutions of regexes no member subscribes with any more, so that a regex
    /// used again later is resolved afresh, as in Kafka.
    pub fn forget_unused_regexes(&mut self) {
        let used: BTreeSet<&str> = self
            .members
            .values()
            .filter_map(|m| m.subscribed_topic_regex.as_deref())
            .collect();
        self.resolved_regexes.retain(|r| used.contains(r.as_str()));
    }

    /// Partitions owned (assigned or pending revocation) by members other than `except`.
    pub fn owned_by_others(&self, except: &str) -> BTreeSet<(Uuid, i32)> {
        let mut owned = BTreeSet::new();
        for m in self.members.values().filter(|m| m.id != except) {
            for a in [&m.assigned, &m.pending_revocation] {
                for (t, ps) in a {
                    owned.extend(ps.iter().map(|p| (*t, *p)));
                }
            }
        }
        owned
    }

    /// The assignor the members prefer most (Kafka's computePreferredServerAssignor), or
    /// `default` when none names one.
    pub fn preferred_assignor(&self, configured: &[String], default: &str) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.server_assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        let rank = |name: &str| configured.iter().position(|c| c == name).unwrap_or(usize::MAX);
        votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(rank(b.0).cmp(&rank(a.0))))
            .map(|(n, _)| n.to_string())
            .unwrap_or_else(|| default.to_string())
    }
}

/// Whether `owned` (what the member reported in this heartbeat; None when it did not say)
/// still holds any of `partitions`. Not saying counts as still owning them.
fn still_owns(owned: Option<&TopicPartitions>, partitions: &TopicPartitions) -> bool {
    let Some(owned) = owned else { return true };
    partitions
        .iter()
        .any(|(t, ps)| owned.get(t).is_some_and(|o| !o.is_disjoint(ps)))
}

fn is_empty(a: &TopicPartitions) -> bool {
    a.values().all(BTreeSet::is_empty)
}

fn insert(a: &mut TopicPartitions, t: Uuid, p: i32) {
    a.entry(t).or_default().insert(p);
}

/// Kafka's CurrentAssignmentBuilder: moves `member` toward `target` at `target_epoch`.
/// A partition reaches its new owner only after the old owner has revoked it (`owned_by_others`
/// names what other members still hold); the member's epoch advances to the target epoch once
/// it has nothing left to revoke.
pub fn reconcile(
    member: &ConsumerMember,
    target_epoch: i32,
    target: &TopicPartitions,
    owned: Option<&TopicPartitions>,
    owned_by_others: &BTreeSet<(Uuid, i32)>,
) -> ConsumerMember {
    match member.state {
        MemberState::Stable if member.member_epoch != target_epoch => next_assignment(
            member,
            member.member_epoch,
            target_epoch,
            target,
            owned,
            owned_by_others,
        ),
        MemberState::Stable => member.clone(),
        MemberState::UnrevokedPartitions => {
            if still_owns(owned, &member.pending_revocation) {
                return member.clone();
            }
            let epoch = (member.member_epoch + 1).min(target_epoch);
            let mut revoked = member.clone();
            revoked.pending_revocation.clear();
            next_assignment(&revoked, epoch, target_epoch, target, owned, owned_by_others)
        }
        MemberState::UnreleasedPartitions => next_assignment(
            member,
            member.member_epoch,
            target_epoch,
            target,
            owned,
            owned_by_others,
        ),
    }
}

fn next_assignment(
    member: &ConsumerMember,
    member_epoch: i32,
    target_epoch: i32,
    target: &TopicPartitions,
    owned: Option<&TopicPartitions>,
    owned_by_others: &BTreeSet<(Uuid, i32)>,
) -> ConsumerMember {
    let mut keep = TopicPartitions::new();
    let mut revoke = TopicPartitions::new();
    let mut add = TopicPartitions::new();
    let mut unreleased = false;
    for (t, ps) in &member.assigned {
        for p in ps {
            if target.get(t).is_some_and(|tp| tp.contains(p)) {
                insert(&mut keep, *t, *p);
            } else {
                insert(&mut revoke, *t, *p);
            }
        }
    }
    for (t, ps) in target {
        for p in ps {
            if member.assigned.get(t).is_some_and(|a| a.contains(p)) {
                continue;
            }
            if owned_by_others.contains(&(*t, *p)) {
                unreleased = true;
            } else {
                insert(&mut add, *t, *p);
            }
        }
    }
    let mut next = member.clone();
    if !is_empty(&revoke) && still_owns(owned, &revoke) {
        // Revoke first, at the current epoch.
        next.state = MemberState::UnrevokedPartitions;
        next.assigned = keep;
        next.pending_revocation = revoke;
        set_epoch(&mut next, member_epoch);
        return next;
    }
    for (t, ps) in add {
        keep.entry(t).or_default().extend(ps);
    }
    keep.retain(|_, ps| !ps.is_empty());
    next.assigned = keep;
    next.pending_revocation = TopicPartitions::new();
    next.state = if unreleased {
        MemberState::UnreleasedPartitions
    } else {
        MemberState::Stable
    };
    set_epoch(&mut next, target_epoch);
    next
}

fn set_epoch(m: &mut ConsumerMember, epoch: i32) {
    if m.member_epoch != epoch {
        m.previous_member_epoch = m.member_epoch;
        m.member_epoch = epoch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Uuid {
        Uuid::from_bytes([7; 16])
    }

    fn parts(ps: &[i32]) -> TopicPartitions {
        BTreeMap::from([(t(), ps.iter().copied().collect())])
    }

    fn member(epoch: i32, assigned: &[i32]) -> ConsumerMember {
        let mut m = ConsumerMember::new("m".into(), Instant::now());
        m.member_epoch = epoch;
        m.assigned = parts(assigned);
        m.assigned.retain(|_, ps| !ps.is_empty());
        m
    }

    #[test]
    fn a_new_member_gets_free_partitions_and_the_target_epoch() {
        let m = member(0, &[]);
        let next = reconcile(
            &m,
            1,
            &parts(&[0, 1, 2]),
            Some(&TopicPartitions::new()),
            &BTreeSet::new(),
        );
        assert_eq!(next.member_epoch, 1);
        assert_eq!(next.state, MemberState::Stable);
        assert_eq!(next.assigned, parts(&[0, 1, 2]));
    }

    #[test]
    fn partitions_are_revoked_before_the_epoch_advances() {
        let m = member(1, &[0, 1, 2, 3]);
        let target = parts(&[0, 1]);
        let next = reconcile(&m, 2, &target, Some(&parts(&[0, 1, 2, 3])), &BTreeSet::new());
        assert_eq!(next.state, MemberState::UnrevokedPartitions);
        assert_eq!(next.member_epoch, 1, "stays at its epoch until it revokes");
        assert_eq!(next.assigned, parts(&[0, 1]));
        assert_eq!(next.pending_revocation, parts(&[2, 3]));
        // Still owning them (or not saying): nothing changes.
        let same = reconcile(&next, 2, &target, None, &BTreeSet::new());
        assert_eq!(same.state, MemberState::UnrevokedPartitions);
        // Acknowledged: epoch 2, stable.
        let done = reconcile(&next, 2, &target, Some(&parts(&[0, 1])), &BTreeSet::new());
        assert_eq!(done.state, MemberState::Stable);
        assert_eq!(done.member_epoch, 2);
        assert_eq!(done.previous_member_epoch, 1);
        assert!(done.pending_revocation.is_empty());
    }

    #[test]
    fn partitions_still_owned_elsewhere_wait_until_released() {
        let m = member(1, &[]);
        let target = parts(&[2, 3]);
        let held = BTreeSet::from([(t(), 3)]);
        let next = reconcile(&m, 2, &target, Some(&TopicPartitions::new()), &held);
        assert_eq!(next.state, MemberState::UnreleasedPartitions);
        assert_eq!(next.member_epoch, 2);
        assert_eq!(next.assigned, parts(&[2]));
        let released = reconcile(&next, 2, &target, Some(&parts(&[2])), &BTreeSet::new());
        assert_eq!(released.state, MemberState::Stable);
        assert_eq!(released.assigned, parts(&[2, 3]));
    }

    #[test]
    fn group_state_follows_epochs() {
        let mut g = ConsumerGroup::new("g".into(), 0);
        assert_eq!(g.state(), ConsumerGroupState::Empty);
        g.members.insert("m".into(), member(0, &[]));
        g.group_epoch = 1;
        assert_eq!(g.state(), ConsumerGroupState::Assigning);
        g.assignment_epoch = 1;
        assert_eq!(g.state(), ConsumerGroupState::Reconciling);
        if let Some(m) = g.members.get_mut("m") {
            m.member_epoch = 1;
        }
        assert_eq!(g.state(), ConsumerGroupState::Stable);
        g.remove_member("m", 5);
        assert_eq!(g.state(), ConsumerGroupState::Empty);
        assert_eq!(g.group_epoch, 2);
    }
}

//! OffsetCommit, OffsetFetch and OffsetDelete on the coordinator's groups.

use std::collections::BTreeMap;

use super::classic::{ClassicGroup, GroupState};
use super::classic_protocol::check_member;
use super::{GroupCoordinator, GroupError, State, Stored};
use crate::clock::now_ms;
use crate::meta::{CommittedOffset, GroupWrite};

/// Each partition's outcome, in request order.
type PartitionResults = Vec<Result<(), GroupError>>;

pub struct OffsetCommitRequest {
    pub group_id: String,
    /// -1 for commits from outside group management (admin clients, assign() consumers).
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    /// OffsetCommit v9+ answers a missing group with GROUP_ID_NOT_FOUND, older versions with
    /// ILLEGAL_GENERATION.
    pub api_version: i16,
    pub partitions: Vec<PartitionCommit>,
}

pub struct PartitionCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// Whether the topic partition exists (checked by the caller, which knows the topics).
    pub known: bool,
}

impl GroupCoordinator {
    /// Commits offsets, durably before returning. The outer error applies to every partition.
    /// The commit is group-committed with every other change queued meanwhile, and no lock is
    /// held while it is written.
    pub async fn commit_offsets(
        &self,
        req: OffsetCommitRequest,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let (results, stored) = {
            let mut state = self.lock();
            self.commit_locked(&mut state, req)?
        };
        if let Some(stored) = stored {
            // Durable before acknowledged.
            match stored.await {
                Ok(Ok(())) => {}
                _ => return Err(GroupError::CoordinatorNotAvailable),
            }
        }
        Ok(results)
    }

    /// Validates a commit and applies it, queuing it for the store (None: nothing to store).
    fn commit_locked(
        &self,
        state: &mut State,
        req: OffsetCommitRequest,
    ) -> Result<(PartitionResults, Option<Stored>), GroupError> {
        if req.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if let Some(group) = state.consumer_groups.get(&req.group_id) {
            GroupCoordinator::validate_consumer_commit(
                group,
                &req.member_id,
                req.generation,
                req.api_version,
            )?;
        } else {
            match state.groups.get(&req.group_id) {
                Some(group) => validate_commit(group, &req)?,
                None if req.generation < 0 => {
                    // A "simple" group: offsets only, no members.
                }
                None if req.api_version >= 9 => return Err(GroupError::GroupIdNotFound),
                None => return Err(GroupError::IllegalGeneration),
            }
        }
        let now_ms = now_ms();
        let max = self.config.offset_metadata_max_bytes;
        let results: Vec<Result<(), GroupError>> = req
            .partitions
            .iter()
            .map(|p| {
                if !p.known {
                    Err(GroupError::UnknownTopicOrPartition)
                } else if p.metadata.as_ref().is_some_and(|m| m.len() > max) {
                    Err(GroupError::OffsetMetadataTooLarge)
                } else {
                    Ok(())
                }
            })
            .collect();
        let accepted: Vec<(String, i32, CommittedOffset)> = req
            .partitions
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(p, _)| {
                let o = CommittedOffset {
                    offset: p.offset,
                    leader_epoch: p.leader_epoch,
                    metadata: p.metadata.clone().unwrap_or_default(),
                    commit_timestamp_ms: now_ms,
                };
                (p.topic.clone(), p.partition, o)
            })
            .collect();
        if accepted.is_empty() {
            return Ok((results, None));
        }
        let offsets = state.offsets.entry(req.group_id.clone()).or_default();
        for (topic, partition, o) in &accepted {
            offsets.insert((topic.clone(), *partition), o.clone());
        }
        let stored = self.store_changes(vec![GroupWrite::CommitOffsets {
            group: req.group_id,
            offsets: accepted,
        }]);
        Ok((results, Some(stored)))
    }

    /// KIP-447's group checks of a TxnOffsetCommit (Kafka's `validateTransactionalOffsetCommit`):
    /// like OffsetCommit's, but never REBALANCE_IN_PROGRESS, and a request naming no member and
    /// no generation is accepted even by a group with members.
    pub fn validate_txn_offset_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let state = self.lock();
        if let Some(group) = state.consumer_groups.get(group_id) {
            if generation < 0 && (group.members.is_empty() || (member_id.is_empty() && instance_id.is_none()))
            {
                return Ok(());
            }
            let member = group.members.get(member_id).ok_or(GroupError::UnknownMemberId)?;
            return if generation != member.member_epoch {
                Err(GroupError::IllegalGeneration)
            } else {
                Ok(())
            };
        }
        match state.groups.get(group_id) {
            None if generation < 0 => Ok(()),
            None => Err(GroupError::IllegalGeneration),
            Some(group) if group.state == GroupState::Dead => Err(GroupError::CoordinatorNotAvailable),
            Some(_) if generation < 0 && member_id.is_empty() && instance_id.is_none() => Ok(()),
            Some(group) => {
                check_member(group, member_id, instance_id)?;
                if generation != group.generation {
                    return Err(GroupError::IllegalGeneration);
                }
                Ok(())
            }
        }
    }

    /// Makes a committed transaction's offsets the group's committed offsets, durably before
    /// returning. An offset committed (plainly) after the transactional one was written wins,
    /// as in Kafka, where the later record in `__consumer_offsets` does.
    pub async fn commit_transaction_offsets(
        &self,
        offsets: Vec<(String, String, i32, CommittedOffset)>,
    ) -> Result<(), GroupError> {
        let stored = {
            let mut state = self.lock();
            let mut by_group: BTreeMap<String, Vec<(String, i32, CommittedOffset)>> = BTreeMap::new();
            for (group, topic, partition, o) in offsets {
                let committed = state.offsets.entry(group.clone()).or_default();
                let newer = committed
                    .get(&(topic.clone(), partition))
                    .is_some_and(|c| c.commit_timestamp_ms > o.commit_timestamp_ms);
                if !newer {
                    committed.insert((topic.clone(), partition), o.clone());
                    by_group.entry(group).or_default().push((topic, partition, o));
                }
            }
            let writes: Vec<GroupWrite> = by_group
                .into_iter()
                .map(|(group, offsets)| GroupWrite::CommitOffsets { group, offsets })
                .collect();
            (!writes.is_empty()).then(|| self.store_changes(writes))
        };
        match stored {
            None => Ok(()),
            Some(stored) => match stored.await {
                Ok(Ok(())) => Ok(()),
                _ => Err(GroupError::CoordinatorNotAvailable),
            },
        }
    }

    /// Committed offsets of a group: of the given partitions (None where nothing is
    /// committed), or of every committed partition when `partitions` is None.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        let state = self.lock();
        let empty = BTreeMap::new();
        let committed = state.offsets.get(group_id).unwrap_or(&empty);
        match partitions {
            Some(list) => list
                .into_iter()
                .map(|(t, p)| {
                    let o = committed.get(&(t.clone(), p)).cloned();
                    (t, p, o)
                })
                .collect(),
            None => committed
                .iter()
                .map(|((t, p), o)| (t.clone(), *p, Some(o.clone())))
                .collect(),
        }
    }

    /// OffsetDelete: removes committed offsets, except of topics an active member subscribes
    /// to; answered once the removal is durable.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let (results, stored) = {
            let mut state = self.lock();
            self.delete_offsets_locked(&mut state, group_id, partitions)?
        };
        match stored.await {
            Ok(Ok(())) => Ok(results),
            _ => Err(GroupError::CoordinatorNotAvailable),
        }
    }

    fn delete_offsets_locked(
        &self,
        state: &mut State,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<(PartitionResults, Stored), GroupError> {
        if !state.groups.contains_key(group_id)
            && !state.offsets.contains_key(group_id)
            && !state.consumer_groups.contains_key(group_id)
        {
            return Err(GroupError::GroupIdNotFound);
        }
        let subscribed = |topic: &str| {
            state
                .groups
                .get(group_id)
                .is_some_and(|g| g.state != GroupState::Empty && subscribes(g, topic))
                || state
                    .consumer_groups
                    .get(group_id)
                    .is_some_and(|g| g.subscribed_topics.contains_key(topic) && !g.members.is_empty())
        };
        let results: Vec<Result<(), GroupError>> = partitions
            .iter()
            .map(|(t, _)| {
                if subscribed(t) {
                    Err(GroupError::GroupSubscribedToTopic)
                } else {
                    Ok(())
                }
            })
            .collect();
        let doomed: Vec<(String, i32)> = partitions
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(p, _)| p.clone())
            .collect();
        if let Some(offsets) = state.offsets.get_mut(group_id) {
            for p in &doomed {
                offsets.remove(p);
            }
        }
        let stored = self.store_changes(vec![GroupWrite::DeleteOffsets {
            group: group_id.to_string(),
            partitions: doomed,
        }]);
        Ok((results, stored))
    }
}

/// Kafka's `validateOffsetCommit` for classic groups.
fn validate_commit(group: &ClassicGroup, req: &OffsetCommitRequest) -> Result<(), GroupError> {
    if group.state == GroupState::Dead {
        return Err(GroupError::CoordinatorNotAvailable);
    }
    if req.generation < 0 && group.state == GroupState::Empty {
        return Ok(());
    }
    if req.generation >= 0 || !req.member_id.is_empty() || req.instance_id.is_some() {
        check_member(group, &req.member_id, req.instance_id.as_deref())?;
        if req.generation != group.generation {
            return Err(GroupError::IllegalGeneration);
        }
    } else {
        // Without member id and generation, commits are only accepted for empty groups.
        return Err(GroupError::UnknownMemberId);
    }
    if group.state == GroupState::CompletingRebalance {
        return Err(GroupError::RebalanceInProgress);
    }
    // A commit does not extend the member's session, as in Kafka 4's coordinator: only
    // heartbeats (and joins and syncs) do, so a closed static member expires on time.
    Ok(())
}

/// Whether any member's subscription (the consumer protocol's metadata: version, then the
/// topic list) names `topic`. Groups of other protocol types subscribe to nothing we can read.
fn subscribes(group: &ClassicGroup, topic: &str) -> bool {
    if group.protocol_type.as_deref() != Some("consumer") {
        return false;
    }
    let protocol = group.protocol_name.clone().unwrap_or_default();
    group.members.iter().any(|m| {
        subscription_topics(&m.metadata_for(&protocol))
            .iter()
            .any(|t| t == topic)
    })
}

/// The topic names of a ConsumerProtocolSubscription (every version starts with them).
pub fn subscription_topics(mut buf: &[u8]) -> Vec<String> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if buf.len() < n {
            return None;
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Some(head)
    }
    let mut topics = Vec::new();
    let Some(_version) = take(&mut buf, 2) else {
        return topics;
    };
    let Some(count) = take(&mut buf, 4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])) else {
        return topics;
    };
    for _ in 0..count.max(0) {
        let Some(len) = take(&mut buf, 2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
            break;
        };
        let Some(name) = take(&mut buf, len.max(0) as usize) else {
            break;
        };
        topics.push(String::from_utf8_lossy(name).into_owned());
    }
    topics
}

#[cfg(test)]
mod tests {
    #[test]
    fn subscription_topics_are_read_from_consumer_metadata() {
        let mut m = vec![0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
        m.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            super::subscription_topics(&m),
            vec!["a".to_string(), "bc".to_string()]
        );
        assert!(super::subscription_topics(&[0]).is_empty());
    }
}

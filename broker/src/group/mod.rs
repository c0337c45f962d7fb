//! The group coordinator: classic consumer groups (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, KIP-345 static members, KIP-394 member ids; `classic_protocol.rs`), KIP-848
//! consumer groups (ConsumerGroupHeartbeat, server-side assignors; `consumer_protocol.rs`),
//! committed offsets (`offsets.rs`) and per-group settings (kept here; their rules are
//! `crate::config::group`). This module holds the
//! shared state, the listing, describing and deleting of groups, and the timers.
//!
//! All groups live behind one mutex: every operation is a short in-memory step, and the
//! timers (session expiry, rebalance and sync deadlines, offsets retention) run as one named
//! task ticking every `TICK`. Requests that must wait (a JoinGroup for the rebalance to
//! complete, a SyncGroup for the leader's assignment) get a oneshot receiver.
//! Durable state goes to RocksDB before it is acknowledged: offsets on commit, group
//! metadata when a generation's assignment is settled or the group empties.

mod assignor;
mod classic;
mod classic_protocol;
mod consumer;
mod consumer_protocol;
mod offsets;
mod regex;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use assignor::ASSIGNORS;
use classic::ClassicGroup;
pub use classic::GroupState;
pub use classic_protocol::{JoinOutcome, JoinRequest, SyncOutcome, SyncRequest};
pub use consumer::{ConsumerGroupState, ConsumerMember, TopicPartitions};
pub use consumer_protocol::{
    ConsumerGroupDescription, ConsumerHeartbeat, HeartbeatAnswer, HeartbeatFailure, TopicsImage,
};
pub use offsets::{OffsetCommitRequest, PartitionCommit};

use crate::clock::now_ms;
use crate::config::alter::{AlterError, Alteration};
use crate::config::group::{ConsumerGroupConfig, GroupConfig, GroupCoordinatorConfig, InvalidGroupConfig};
use crate::meta::{CommittedOffset, GroupWrite, MetaError, MetaStore};
use store::{GroupCommitter, GroupStore};
use tokio::sync::oneshot;

/// Resolves once a queued change of group state is durable, or with the write's error.
type Stored = oneshot::Receiver<Result<(), MetaError>>;

/// How often the timers run; bounds how late a session expiry or deadline is noticed.
const TICK: Duration = Duration::from_millis(100);

/// Why a group's settings were not changed.
#[derive(Debug, thiserror::Error)]
pub enum SetGroupConfigError {
    #[error(transparent)]
    Alter(#[from] AlterError),
    #[error(transparent)]
    Invalid(#[from] InvalidGroupConfig),
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
}

/// The group coordinator's errors, each a Kafka error code (mapped in crate::error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("rebalance in progress")]
    RebalanceInProgress,
    #[error("member id required")]
    MemberIdRequired,
    #[error("static member fenced by a newer instance")]
    FencedInstanceId,
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("invalid session timeout")]
    InvalidSessionTimeout,
    #[error("the group is not empty")]
    NonEmptyGroup,
    #[error("group id not found")]
    GroupIdNotFound,
    #[error("offset metadata too large")]
    OffsetMetadataTooLarge,
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("invalid request")]
    InvalidRequest,
    #[error("unsupported assignor")]
    UnsupportedAssignor,
    #[error("fenced member epoch")]
    FencedMemberEpoch,
    #[error("stale member epoch")]
    StaleMemberEpoch,
    #[error("unreleased instance id")]
    UnreleasedInstanceId,
    #[error("group max size reached")]
    GroupMaxSizeReached,
    #[error("invalid regular expression")]
    InvalidRegularExpression,
    #[error("unsupported version")]
    UnsupportedVersion,
}

/// One row of ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
    /// "classic" or "consumer" (ListGroups v5).
    pub group_type: &'static str,
}

/// What DescribeGroups reports.
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Default)]
struct State {
    groups: HashMap<String, ClassicGroup>,
    /// KIP-848 groups. A group id names either a classic or a consumer group, never both.
    consumer_groups: HashMap<String, consumer::ConsumerGroup>,
    /// group → (topic, partition) → committed offset.
    offsets: HashMap<String, BTreeMap<(String, i32), CommittedOffset>>,
}

pub struct GroupCoordinator {
    state: Mutex<State>,
    /// Group commit of every change of group state and committed offsets (`store.rs`).
    store: GroupCommitter,
    /// Where per-group settings are stored (directly: they are not part of `State`).
    settings_store: Arc<dyn GroupStore>,
    /// This coordinator, for completions that run after a change is stored.
    me: Weak<GroupCoordinator>,
    config: GroupCoordinatorConfig,
    /// Per-group overrides (GROUP config resources), by group id. Apart from `state` so that
    /// configuring a group never waits on the coordinator's work; taken after `state` when both
    /// are needed, and written only to swap a validated, persisted value in.
    group_configs: RwLock<HashMap<String, BTreeMap<String, String>>>,
    /// Serialises changes to group settings (read, change, persist, swap in).
    group_config_writes: Mutex<()>,
}

fn resolve_group_config(
    configs: &HashMap<String, BTreeMap<String, String>>,
    group_id: &str,
    defaults: &ConsumerGroupConfig,
) -> GroupConfig {
    let none = BTreeMap::new();
    GroupConfig::resolve(configs.get(group_id).unwrap_or(&none), defaults)
}

fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

impl GroupCoordinator {
    /// Loads groups and offsets from the store and starts the timer task (which ends when the
    /// coordinator is dropped).
    pub fn open(
        meta: Arc<MetaStore>,
        config: GroupCoordinatorConfig,
        group_configs: HashMap<String, BTreeMap<String, String>>,
    ) -> Result<Arc<GroupCoordinator>, crate::meta::MetaError> {
        let mut state = State::default();
        for (group, topic, partition, offset) in meta.all_offsets()? {
            state
                .offsets
                .entry(group)
                .or_default()
                .insert((topic, partition), offset);
        }
        let now = Instant::now();
        for record in meta.groups()? {
            let group = classic_protocol::restore(record, now);
            state.groups.insert(group.id.clone(), group);
        }
        for record in meta.consumer_groups()? {
            let session_timeout_ms =
                resolve_group_config(&group_configs, &record.group_id, &config.consumer).session_timeout_ms;
            let group = consumer_protocol::restore(record, now, session_timeout_ms);
            state.consumer_groups.insert(group.id.clone(), group);
        }
        tracing::info!(
            groups = state.groups.len(),
            consumer_groups = state.consumer_groups.len(),
            with_offsets = state.offsets.len(),
            "group coordinator loaded"
        );
        GroupCoordinator::start(meta, config, group_configs, state)
    }

    /// A coordinator over `store` with the loaded `state`, and its timer task (which ends when
    /// the coordinator is dropped). Must run inside a tokio runtime.
    fn start(
        store: Arc<dyn GroupStore>,
        config: GroupCoordinatorConfig,
        group_configs: HashMap<String, BTreeMap<String, String>>,
        state: State,
    ) -> Result<Arc<GroupCoordinator>, MetaError> {
        let committer =
            GroupCommitter::start(Arc::clone(&store)).map_err(|e| MetaError::Writer(e.to_string()))?;
        let coordinator = Arc::new_cyclic(|me| GroupCoordinator {
            state: Mutex::new(state),
            store: committer,
            settings_store: store,
            me: me.clone(),
            config,
            group_configs: RwLock::new(group_configs),
            group_config_writes: Mutex::new(()),
        });
        tokio::spawn(run_timers(Arc::downgrade(&coordinator)));
        Ok(coordinator)
    }

    /// A coordinator with no stored state over an in-memory store, for state-machine tests.
    #[cfg(test)]
    fn in_memory(config: GroupCoordinatorConfig, store: Arc<store::MemoryStore>) -> Arc<GroupCoordinator> {
        GroupCoordinator::start(store, config, HashMap::new(), State::default()).unwrap()
    }

    /// Queues changes for the group-committed write, in the order the caller (holding the
    /// state lock) decided them. The receiver resolves once they are durable, or with the
    /// error of the write; a caller with nobody to answer drops it (the writer logs failures).
    fn store_changes(&self, writes: Vec<GroupWrite>) -> Stored {
        let (tx, rx) = oneshot::channel();
        self.store.submit(writes, move |r| {
            let _ = tx.send(r);
        });
        rx
    }

    /// Waits until every change queued so far is durable (clean shutdown).
    pub async fn flush(&self) -> Result<(), MetaError> {
        self.store.sync().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A group's settings: its overrides over the broker's `group.consumer.*` defaults.
    pub fn group_config(&self, group_id: &str) -> GroupConfig {
        let configs = self.group_configs.read().unwrap_or_else(|e| e.into_inner());
        resolve_group_config(&configs, group_id, &self.config.consumer)
    }

    /// A group's overrides (empty when it has none; the group need not exist).
    pub fn group_config_overrides(&self, group_id: &str) -> BTreeMap<String, String> {
        let configs = self.group_configs.read().unwrap_or_else(|e| e.into_inner());
        configs.get(group_id).cloned().unwrap_or_default()
    }

    /// The broker defaults a group's settings fall back to.
    pub fn consumer_defaults(&self) -> &ConsumerGroupConfig {
        &self.config.consumer
    }

    /// Changes a group's overrides: `change` gets the current ones and returns the new set,
    /// which is validated and persisted before it takes effect (members pick it up at their next
    /// heartbeat). Changes are serialised; heartbeats only wait for the final swap.
    pub fn alter_group_config(
        &self,
        group_id: &str,
        alteration: &Alteration,
        validate_only: bool,
    ) -> Result<(), SetGroupConfigError> {
        let _serial = self.group_config_writes.lock().unwrap_or_else(|e| e.into_inner());
        let overrides = alteration.apply(&self.group_config_overrides(group_id))?;
        GroupConfig::validate(&overrides, &self.config.consumer)?;
        if validate_only {
            return Ok(());
        }
        self.settings_store.put_group_config(group_id, &overrides)?;
        tracing::info!(group = %group_id, ?overrides, "group configuration altered");
        let mut configs = self.group_configs.write().unwrap_or_else(|e| e.into_inner());
        if overrides.is_empty() {
            configs.remove(group_id);
        } else {
            configs.insert(group_id.to_string(), overrides);
        }
        Ok(())
    }

    /// Every committed offset: (group, topic, partition, offset), for the lag metrics.
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let state = self.lock();
        state
            .offsets
            .iter()
            .flat_map(|(g, offsets)| {
                offsets
                    .iter()
                    .map(move |((t, p), o)| (g.clone(), t.clone(), *p, o.offset))
            })
            .collect()
    }

    /// Members per group (classic and consumer).
    pub fn member_counts(&self) -> Vec<(String, usize)> {
        let state = self.lock();
        state
            .groups
            .values()
            .map(|g| (g.id.clone(), g.members.len()))
            .chain(
                state
                    .consumer_groups
                    .values()
                    .map(|g| (g.id.clone(), g.members.len())),
            )
            .collect()
    }

    /// Every group for ListGroups, sorted by id.
    pub fn list(&self) -> Vec<ListedGroup> {
        let state = self.lock();
        let mut out: Vec<ListedGroup> = state
            .groups
            .values()
            .map(|g| ListedGroup {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state.name(),
                group_type: "classic",
            })
            .collect();
        out.extend(state.consumer_groups.values().map(|g| ListedGroup {
            group_id: g.id.clone(),
            protocol_type: "consumer".into(),
            state: g.state().name(),
            group_type: "consumer",
        }));
        // Groups known only by their committed offsets (simple consumers) are Empty groups.
        for id in state.offsets.keys() {
            if !state.groups.contains_key(id) && !state.consumer_groups.contains_key(id) {
                out.push(ListedGroup {
                    group_id: id.clone(),
                    protocol_type: String::new(),
                    state: GroupState::Empty.name(),
                    group_type: "classic",
                });
            }
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// Whether `group_id` is a KIP-848 consumer group (DescribeGroups does not describe those).
    pub fn is_consumer_group(&self, group_id: &str) -> bool {
        self.lock().consumer_groups.contains_key(group_id)
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let state = self.lock();
        let Some(g) = state.groups.get(group_id) else {
            return state.offsets.contains_key(group_id).then(|| GroupDescription {
                state: GroupState::Empty,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            });
        };
        let protocol = g.protocol_name.clone().unwrap_or_default();
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: if g.state == GroupState::Stable || g.state == GroupState::CompletingRebalance {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .iter()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: if g.state == GroupState::Stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }

    /// DeleteGroups for one group: only an empty group can go, with its offsets.
    pub async fn delete(&self, group_id: &str) -> Result<(), GroupError> {
        let stored = {
            let mut state = self.lock();
            self.delete_locked(&mut state, group_id)?
        };
        match stored.await {
            Ok(Ok(())) => {
                tracing::info!(group = %group_id, "group deleted");
                Ok(())
            }
            _ => Err(GroupError::CoordinatorNotAvailable),
        }
    }

    /// DeleteGroups' checks and the deletion, applied at once and queued for the store.
    fn delete_locked(&self, state: &mut State, group_id: &str) -> Result<Stored, GroupError> {
        let exists = state.groups.contains_key(group_id)
            || state.offsets.contains_key(group_id)
            || state.consumer_groups.contains_key(group_id);
        if !exists {
            return Err(GroupError::GroupIdNotFound);
        }
        if state
            .consumer_groups
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty())
        {
            return Err(GroupError::NonEmptyGroup);
        }
        if let Some(g) = state.groups.get(group_id) {
            if g.state != GroupState::Empty {
                return Err(GroupError::NonEmptyGroup);
            }
        }
        state.groups.remove(group_id);
        state.consumer_groups.remove(group_id);
        state.offsets.remove(group_id);
        Ok(self.store_changes(vec![GroupWrite::DeleteGroup(group_id.to_string())]))
    }

    /// The session and deadline checks, run every TICK by the timer task.
    fn tick(&self, now: Instant) {
        let mut state = self.lock();
        let retention_ms = self.config.offsets_retention_ms;
        let now_ms = now_ms();
        let mut expired_groups = Vec::new();
        self.expire_consumer_members(&mut state, now);
        for group in state.consumer_groups.values() {
            if group.members.is_empty() && group.empty_since_ms.is_some_and(|t| now_ms - t >= retention_ms) {
                expired_groups.push(group.id.clone());
            }
        }
        for group in state.groups.values_mut() {
            group.pending_members.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|m| m.session_deadline <= now && m.join_waiter.is_none() && m.sync_waiter.is_none())
                .map(|m| m.id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %group.id, member = %id, "member session expired; removed");
                group.remove_member(&id);
                self.after_removal(group, now);
            }
            match group.state {
                GroupState::PreparingRebalance if group.rebalance_deadline.is_some_and(|d| now >= d) => {
                    self.complete_join(group, now)
                }
                GroupState::PreparingRebalance => self.try_complete_join(group, now),
                GroupState::CompletingRebalance if group.sync_deadline.is_some_and(|d| now >= d) => {
                    // The leader's assignment never came: drop those who did not sync, retry.
                    group.remove_members_where(|m| m.sync_waiter.is_none(), "did not sync in time");
                    self.prepare_rebalance(group, now);
                    self.try_complete_join(group, now);
                }
                GroupState::Empty
                    if group.empty_since_ms.is_some_and(|t| now_ms - t >= retention_ms)
                        && group.pending_members.is_empty() =>
                {
                    expired_groups.push(group.id.clone());
                }
                _ => {}
            }
        }
        // Offsets of simple consumers (no group record) expire from their last commit.
        for (id, offsets) in &state.offsets {
            if !state.groups.contains_key(id)
                && !state.consumer_groups.contains_key(id)
                && offsets
                    .values()
                    .all(|o| now_ms - o.commit_timestamp_ms >= retention_ms)
            {
                expired_groups.push(id.clone());
            }
        }
        for id in expired_groups {
            state.groups.remove(&id);
            state.consumer_groups.remove(&id);
            state.offsets.remove(&id);
            // Nobody waits for an expiry; the writer logs a failed write.
            drop(self.store_changes(vec![GroupWrite::DeleteGroup(id.clone())]));
            tracing::info!(group = %id, "empty group's offsets expired (offsets.retention.minutes)");
        }
    }
}

async fn run_timers(coordinator: Weak<GroupCoordinator>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(c) = coordinator.upgrade() else { return };
        c.tick(Instant::now());
    }
}

#[cfg(test)]
mod tests;

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
mod records;
mod regex;
mod settings;
mod store;
mod timers;

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
use settings::resolve_group_config;
pub use settings::SetGroupConfigError;

use crate::config::group::GroupCoordinatorConfig;
use crate::meta::{CommittedOffset, GroupWrite, MetaError, MetaStore};
use store::{GroupCommitter, GroupStore};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Resolves once a queued change of group state is durable, or with the write's error.
type Stored = oneshot::Receiver<Result<(), MetaError>>;

/// How often the timers run; bounds how late a session expiry or deadline is noticed.
const TICK: Duration = Duration::from_millis(100);

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
        shutdown: CancellationToken,
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
            let group = records::restore_classic(record, now);
            state.groups.insert(group.id.clone(), group);
        }
        for record in meta.consumer_groups()? {
            let session_timeout_ms =
                resolve_group_config(&group_configs, &record.group_id, &config.consumer).session_timeout_ms;
            let group = records::restore_consumer(record, now, session_timeout_ms);
            state.consumer_groups.insert(group.id.clone(), group);
        }
        tracing::info!(
            groups = state.groups.len(),
            consumer_groups = state.consumer_groups.len(),
            with_offsets = state.offsets.len(),
            "group coordinator loaded"
        );
        GroupCoordinator::start(meta, config, group_configs, state, shutdown)
    }

    /// A coordinator over `store` with the loaded `state`, and its timer task (which ends at
    /// `shutdown` or when the coordinator is dropped). Must run inside a tokio runtime.
    fn start(
        store: Arc<dyn GroupStore>,
        config: GroupCoordinatorConfig,
        group_configs: HashMap<String, BTreeMap<String, String>>,
        state: State,
        shutdown: CancellationToken,
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
        tokio::spawn(
            timers::run_timers(Arc::downgrade(&coordinator), shutdown)
                .instrument(tracing::info_span!("group_timers")),
        );
        Ok(coordinator)
    }

    /// A coordinator with no stored state over an in-memory store, for state-machine tests.
    #[cfg(test)]
    fn in_memory(config: GroupCoordinatorConfig, store: Arc<store::MemoryStore>) -> Arc<GroupCoordinator> {
        GroupCoordinator::start(
            store,
            config,
            HashMap::new(),
            State::default(),
            CancellationToken::new(),
        )
        .unwrap()
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
}

#[cfg(test)]
mod tests;

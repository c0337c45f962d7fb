//! The coordinator's one timer task: every TICK it expires sessions (classic and KIP-848
//! members), ends rebalances and syncs that reached their deadlines, and expires the offsets of
//! groups empty for `offsets.retention.minutes`.

use std::sync::Weak;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::classic::GroupState;
use super::{GroupCoordinator, TICK};
use crate::clock::now_ms;
use crate::meta::GroupWrite;

impl GroupCoordinator {
    /// The session and deadline checks, run every TICK by the timer task.
    pub(super) fn tick(&self, now: Instant) {
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

/// The timer task: ends at shutdown or when the coordinator is dropped.
pub(super) async fn run_timers(coordinator: Weak<GroupCoordinator>, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let Some(c) = coordinator.upgrade() else { return };
        c.tick(Instant::now());
        metrics::counter!(crate::metrics::GROUP_TIMER_TICKS).increment(1);
    }
}

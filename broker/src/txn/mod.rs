//! The transaction coordinator (Kafka's TransactionCoordinator, transaction version 1): each
//! transactional id's producer id, epoch, state, partitions and timeout, kept in RocksDB in
//! place of the `__transaction_state` topic.
//!
//! Every transition is decided under the coordinator's mutex, marked pending there (other
//! requests for the id get CONCURRENT_TRANSACTIONS meanwhile, as in Kafka), stored with one
//! synced RocksDB write outside the mutex, and only then applied and answered. Ending a
//! transaction is two transitions around the markers: Prepare{Commit,Abort} is stored and the
//! client answered; the markers are written to every partition and fsynced; then
//! Complete{Commit,Abort} is stored. A start finds a Prepare state a crash interrupted and writes
//! its markers again.
//!
//! Lock order: a partition's writer lock may be held while this mutex is taken (a transactional
//! produce is checked against its transaction under the partition lock, so that no marker can
//! slip between the check and the append); this mutex is never held while a partition is
//! written or RocksDB is.

mod state;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use state::{offsets_partition, TxnMetadata, MAX_EPOCH, OFFSETS_TOPIC};
pub use state::{TxnError, TxnState};

use crate::group::GroupCoordinator;
use crate::log::TxnMarker;
use crate::log_manager::LogManager;
use crate::meta::{CommittedOffset, MetaStore};
use crate::producer_ids::ProducerIdManager;

/// The coordinator's settings (Kafka's names).
#[derive(Debug, Clone, Copy)]
pub struct TxnSettings {
    /// `transaction.max.timeout.ms`
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`
    pub id_expiration_ms: i64,
}

/// What a transition decided: nothing to store, or a new state to store before answering.
enum Decision<T> {
    Unchanged(T),
    Store(TxnMetadata, T),
}

/// An operator's view of one transactional id (DescribeTransactions, ListTransactions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: TxnState,
    pub timeout_ms: i32,
    pub start_timestamp: i64,
    pub partitions: Vec<(String, i32)>,
}

pub struct TransactionCoordinator {
    txns: Mutex<HashMap<String, TxnMetadata>>,
    /// Ids whose markers are being written now, so a transaction is completed once at a time.
    completing: Mutex<HashSet<String>>,
    settings: TxnSettings,
}

impl TransactionCoordinator {
    /// Loads every stored transactional id. Those a crash left in a Prepare state are returned,
    /// for the caller to complete (`complete`).
    pub fn open(meta: &MetaStore, settings: TxnSettings) -> Result<(Self, Vec<String>), TxnError> {
        let mut txns = HashMap::new();
        let mut unfinished = Vec::new();
        for (id, record) in meta.transactions().map_err(TxnError::storage)? {
            let Some(md) = TxnMetadata::from_record(&record) else {
                tracing::warn!(transactional_id = %id, state = record.state, "unknown transaction state; ignored");
                continue;
            };
            if matches!(md.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                unfinished.push(id.clone());
            }
            txns.insert(id, md);
        }
        if !txns.is_empty() {
            tracing::info!(
                transactional_ids = txns.len(),
                unfinished = unfinished.len(),
                "transaction state loaded"
            );
        }
        Ok((
            TransactionCoordinator {
                txns: Mutex::new(txns),
                completing: Mutex::new(HashSet::new()),
                settings,
            },
            unfinished,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, TxnMetadata>> {
        self.txns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides a transition under the mutex, stores it outside, then applies it.
    fn transition<T>(
        &self,
        meta: &MetaStore,
        id: &str,
        decide: impl FnOnce(Option<&TxnMetadata>) -> Result<Decision<T>, TxnError>,
    ) -> Result<T, TxnError> {
        let (next, out, existed) = {
            let mut txns = self.lock();
            let current = txns.get(id);
            if current.is_some_and(|m| m.pending) {
                return Err(TxnError::ConcurrentTransactions);
            }
            let existed = current.is_some();
            match decide(current)? {
                Decision::Unchanged(out) => return Ok(out),
                Decision::Store(next, out) => {
                    let placeholder = txns.entry(id.to_string()).or_insert_with(|| next.clone());
                    placeholder.pending = true;
                    (next, out, existed)
                }
            }
        };
        let stored = meta.put_transaction(id, &next.record());
        let mut txns = self.lock();
        match stored {
            Ok(()) => {
                txns.insert(id.to_string(), next);
                Ok(out)
            }
            Err(e) => {
                tracing::error!(transactional_id = %id, error = %e, "cannot store a transaction's state");
                if existed {
                    if let Some(m) = txns.get_mut(id) {
                        m.pending = false;
                    }
                } else {
                    txns.remove(id);
                }
                Err(TxnError::storage(e))
            }
        }
    }

    /// InitProducerId with a transactional id (Kafka's `handleInitProducerId`). Runs on a
    /// storage thread (it may reserve producer ids and stores the new state).
    /// `InitOutcome::Fenced` means the id's open transaction was fenced and now is to be
    /// aborted (`complete`): the client is told CONCURRENT_TRANSACTIONS and retries.
    pub fn init_producer_id(
        &self,
        meta: &MetaStore,
        ids: &ProducerIdManager,
        id: &str,
        timeout_ms: i32,
        (producer_id, producer_epoch): (i64, i16),
        now_ms: i64,
    ) -> Result<InitOutcome, TxnError> {
        // KIP-360: a producer that had an id may name it, with its epoch; both or neither.
        let expected = match (producer_id, producer_epoch) {
            (-1, -1) => None,
            (-1, _) | (_, -1) => {
                return Err(TxnError::InvalidRequest(format!(
                "Invalid producer id {producer_id} and epoch {producer_epoch}: both or neither must be set"
            )))
            }
            pair => Some(pair),
        };
        if timeout_ms <= 0 || timeout_ms > self.settings.max_timeout_ms {
            return Err(TxnError::InvalidTransactionTimeout);
        }
        // A new producer id, reserved before the mutex, is needed by a new transactional id and
        // by one whose epochs are exhausted.
        let needs_id = self
            .lock()
            .get(id)
            .is_none_or(|m| m.producer_epoch >= MAX_EPOCH - 1);
        let fresh = if needs_id {
            Some(ids.generate(meta).map_err(TxnError::storage)?)
        } else {
            None
        };
        self.transition(meta, id, |current| {
            let m = match current {
                Some(m) => m.clone(),
                None => TxnMetadata::new(fresh.ok_or(TxnError::ConcurrentTransactions)?, timeout_ms),
            };
            state::decide_init(m, expected, fresh, timeout_ms, now_ms)
        })
    }

    /// AddPartitionsToTxn v0-3 for one transactional id (the caller has checked that every
    /// partition exists).
    pub fn add_partitions(
        &self,
        meta: &MetaStore,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        now_ms: i64,
    ) -> Result<(), TxnError> {
        self.transition(meta, id, |current| {
            let m = state::check_producer(current, producer_id, producer_epoch)?;
            if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                return Err(TxnError::ConcurrentTransactions);
            }
            if m.state == TxnState::Ongoing && partitions.iter().all(|p| m.partitions.contains(p)) {
                return Ok(Decision::Unchanged(()));
            }
            let mut next = m.clone();
            if m.state != TxnState::Ongoing {
                next.start_timestamp = now_ms;
            }
            next.state = TxnState::Ongoing;
            next.partitions.extend(partitions.iter().cloned());
            next.last_update_timestamp = now_ms;
            Ok(Decision::Store(next, ()))
        })
    }

    /// AddPartitionsToTxn v4+ with `verify_only` (Kafka's `handleVerifyPartitionsInTransaction`):
    /// whether each partition is in the producer's ongoing transaction, changing nothing.
    /// `NotInTransaction` stands for Kafka's TRANSACTION_ABORTABLE here.
    pub fn verify_partitions(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Vec<Result<(), TxnError>> {
        let txns = self.lock();
        let outcome = state::check_producer(txns.get(id), producer_id, producer_epoch).and_then(|m| {
            if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                Err(TxnError::ConcurrentTransactions)
            } else {
                Ok(m)
            }
        });
        partitions
            .iter()
            .map(|p| match &outcome {
                Err(e) => Err(e.clone()),
                Ok(m) if m.state == TxnState::Ongoing && m.partitions.contains(p) => Ok(()),
                Ok(_) => Err(TxnError::NotInTransaction(format!(
                    "{}-{} is not in the transaction of {id}",
                    p.0, p.1
                ))),
            })
            .collect()
    }

    /// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction, as in
    /// Kafka, so that its TxnOffsetCommit is accepted.
    pub fn add_offsets(
        &self,
        meta: &MetaStore,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group_id: &str,
        now_ms: i64,
    ) -> Result<(), TxnError> {
        let partition = (OFFSETS_TOPIC.to_string(), offsets_partition(group_id));
        self.add_partitions(meta, id, producer_id, producer_epoch, &[partition], now_ms)
    }

    /// TxnOffsetCommit's transaction checks and the pending offsets it stores (the group's
    /// checks are the group coordinator's). A later commit of the same partition in the same
    /// transaction replaces the earlier one.
    pub fn txn_offset_commit(
        &self,
        meta: &MetaStore,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group_id: &str,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<(), TxnError> {
        let partition = (OFFSETS_TOPIC.to_string(), offsets_partition(group_id));
        self.transition(meta, id, |current| {
            let m = state::check_producer(current, producer_id, producer_epoch).map_err(|e| match e {
                TxnError::ProducerFenced => TxnError::InvalidProducerEpoch,
                other => other,
            })?;
            match m.state {
                TxnState::PrepareCommit | TxnState::PrepareAbort => Err(TxnError::ConcurrentTransactions),
                TxnState::Ongoing if m.partitions.contains(&partition) => {
                    let mut next = m.clone();
                    for (topic, p, o) in offsets {
                        next.offsets.insert((group_id.to_string(), topic, p), o);
                    }
                    Ok(Decision::Store(next, ()))
                }
                _ => Err(TxnError::NotInTransaction(format!(
                    "The offsets of group {group_id} were not added to the transaction of {id}"
                ))),
            }
        })
    }

    /// Whether an open transaction holds an offset of the group's partition that is not
    /// committed yet (OffsetFetch's UNSTABLE_OFFSET_COMMIT with require_stable).
    pub fn has_pending_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        let key = (group_id.to_string(), topic.to_string(), partition);
        self.lock().values().any(|m| m.offsets.contains_key(&key))
    }

    /// EndTxn (v0-4). `Ok(true)` when markers are now to be written (the caller starts
    /// `complete` and answers at once, as Kafka does); `Ok(false)` for a retry of an end
    /// that is already complete.
    pub fn end_transaction(
        &self,
        meta: &MetaStore,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<bool, TxnError> {
        self.transition(meta, id, |current| {
            let m = state::check_producer(current, producer_id, producer_epoch)?;
            let wrong = || {
                TxnError::InvalidTxnState(format!(
                    "TransactionalId {id} cannot {} from state {}",
                    if commit { "commit" } else { "abort" },
                    m.state.name()
                ))
            };
            match (m.state, commit) {
                (TxnState::Ongoing, _) => {
                    let mut next = m.clone();
                    next.state = if commit {
                        TxnState::PrepareCommit
                    } else {
                        TxnState::PrepareAbort
                    };
                    next.last_update_timestamp = now_ms;
                    Ok(Decision::Store(next, true))
                }
                (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                    Ok(Decision::Unchanged(false))
                }
                (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                    Err(TxnError::ConcurrentTransactions)
                }
                _ => Err(wrong()),
            }
        })
    }

    /// Writes the markers of a transaction in a Prepare state to each of its partitions, makes
    /// them durable, and stores the Complete state. Runs on a storage thread. A failure leaves
    /// the Prepare state for the next attempt (the timer retries it).
    pub fn complete(
        &self,
        meta: &MetaStore,
        logs: &LogManager,
        groups: &GroupCoordinator,
        id: &str,
    ) -> Result<(), TxnError> {
        if !self
            .completing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string())
        {
            return Ok(());
        }
        let result = self.write_markers_and_complete(meta, logs, groups, id);
        self.completing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Err(e) = &result {
            tracing::error!(transactional_id = %id, error = %e, "cannot complete a transaction; it will be retried");
        }
        result
    }

    fn write_markers_and_complete(
        &self,
        meta: &MetaStore,
        logs: &LogManager,
        groups: &GroupCoordinator,
        id: &str,
    ) -> Result<(), TxnError> {
        let Some((marker, partitions, offsets)) = self.lock().get(id).and_then(|m| {
            let commit = match m.state {
                TxnState::PrepareCommit => true,
                TxnState::PrepareAbort => false,
                _ => return None,
            };
            let marker = TxnMarker {
                producer_id: m.producer_id,
                producer_epoch: m.producer_epoch,
                coordinator_epoch: 0,
                commit,
            };
            Some((marker, m.partitions.clone(), m.offsets.clone()))
        }) else {
            return Ok(());
        };
        let now = crate::clock::now_ms();
        for (topic, partition) in &partitions {
            if topic == OFFSETS_TOPIC {
                // The group's place in the transaction: its offsets are applied below.
                continue;
            }
            // A partition deleted meanwhile needs no marker.
            let Ok(log) = logs.partition(topic, *partition) else {
                continue;
            };
            let info = log
                .append_marker(&marker, now)
                .map_err(|e| TxnError::Marker(e.to_string()))?;
            log.flush_until(info.last_offset + 1)
                .map_err(|e| TxnError::Marker(e.to_string()))?;
        }
        if marker.commit && !offsets.is_empty() {
            let offsets = offsets.into_iter().map(|((g, t, p), o)| (g, t, p, o)).collect();
            // This runs on a storage thread, outside the async workers: waiting here is fine.
            tokio::runtime::Handle::current()
                .block_on(groups.commit_transaction_offsets(offsets))
                .map_err(|e| TxnError::Marker(format!("cannot commit the transaction's offsets: {e}")))?;
        }
        tracing::debug!(transactional_id = %id, commit = marker.commit, partitions = partitions.len(), "transaction markers written");
        self.transition(meta, id, |current| match current {
            Some(m) if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) => {
                let mut next = m.clone();
                next.state = if marker.commit {
                    TxnState::CompleteCommit
                } else {
                    TxnState::CompleteAbort
                };
                next.partitions.clear();
                next.offsets.clear();
                next.last_update_timestamp = crate::clock::now_ms();
                Ok(Decision::Store(next, ()))
            }
            _ => Ok(Decision::Unchanged(())),
        })
    }

    /// Whether a transactional batch of `(producer_id, epoch)` may be appended to `partition`
    /// now: its transaction is ongoing and holds the partition. Called under the partition's
    /// writer lock.
    pub fn verify_produce(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), TxnError> {
        let txns = self.lock();
        let m = state::check_producer(txns.get(id), producer_id, producer_epoch).map_err(|e| match e {
            TxnError::ProducerFenced => TxnError::InvalidProducerEpoch,
            other => other,
        })?;
        match m.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => Err(TxnError::ConcurrentTransactions),
            TxnState::Ongoing if m.partitions.contains(&(topic.to_string(), partition)) => Ok(()),
            _ => Err(TxnError::NotInTransaction(format!(
                "The producer {producer_id} attempted to produce to {topic}-{partition}, which is not part of its ongoing transaction"
            ))),
        }
    }

    /// Transactions open longer than their timeout, fenced now: each gets a new epoch and is
    /// moved to PrepareAbort (stored). Returns them, for the caller to `complete`, with the
    /// Prepare states left unfinished by a failed marker write.
    pub fn abort_timed_out(&self, meta: &MetaStore, now_ms: i64) -> Vec<String> {
        let (expired, stuck): (Vec<String>, Vec<String>) = {
            let txns = self.lock();
            let expired = txns
                .iter()
                .filter(|(_, m)| !m.pending && m.state == TxnState::Ongoing)
                .filter(|(_, m)| now_ms > m.start_timestamp.saturating_add(i64::from(m.timeout_ms)))
                .map(|(id, _)| id.clone())
                .collect();
            let stuck = txns
                .iter()
                .filter(|(_, m)| {
                    !m.pending && matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
                })
                .map(|(id, _)| id.clone())
                .collect();
            (expired, stuck)
        };
        let mut to_complete = stuck;
        for id in expired {
            let fenced = self.transition(meta, &id, |current| match current {
                Some(m) if m.state == TxnState::Ongoing => {
                    tracing::info!(transactional_id = %id, producer_id = m.producer_id, epoch = m.producer_epoch, "aborting a transaction that timed out");
                    Ok(Decision::Store(state::fenced_abort(m, now_ms), true))
                }
                _ => Ok(Decision::Unchanged(false)),
            });
            if matches!(fenced, Ok(true)) {
                to_complete.push(id);
            }
        }
        to_complete
    }

    /// Forgets transactional ids idle (Empty or Complete) for `transactional.id.expiration.ms`.
    pub fn expire_ids(&self, meta: &MetaStore, now_ms: i64) -> usize {
        let idle: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, m)| {
                !m.pending
                    && matches!(
                        m.state,
                        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    )
            })
            .filter(|(_, m)| now_ms.saturating_sub(m.last_update_timestamp) >= self.settings.id_expiration_ms)
            .map(|(id, _)| id.clone())
            .collect();
        let mut removed = 0;
        for id in idle {
            if meta.delete_transaction(&id).is_ok() {
                self.lock().remove(&id);
                removed += 1;
            }
        }
        removed
    }

    /// The state of one transactional id.
    pub fn describe(&self, id: &str) -> Option<TxnDescription> {
        self.lock().get(id).map(|m| m.describe(id))
    }

    /// Every transactional id's state.
    pub fn list(&self) -> Vec<TxnDescription> {
        let mut all: Vec<_> = self.lock().iter().map(|(id, m)| m.describe(id)).collect();
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }
}

/// What InitProducerId with a transactional id answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitOutcome {
    /// The producer id and epoch to use.
    Ready(i64, i16),
    /// The id's open transaction was fenced and is being aborted; the client retries.
    Fenced,
}

impl TxnMetadata {
    fn describe(&self, id: &str) -> TxnDescription {
        TxnDescription {
            transactional_id: id.to_string(),
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            state: self.state,
            timeout_ms: self.timeout_ms,
            start_timestamp: self.start_timestamp,
            partitions: self
                .partitions
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;

//! A transactional id's metadata and the rules of its transitions (Kafka's
//! TransactionMetadata and the checks of TransactionCoordinator), free of I/O.

use std::collections::{BTreeMap, BTreeSet};

use super::{Decision, InitOutcome};
use crate::meta::{CommittedOffset, MetaError, TransactionRecord};

/// Offsets committed in a transaction, by (group, topic, partition).
pub(super) type PendingOffsets = BTreeMap<(String, String, i32), CommittedOffset>;

/// Epochs run to `i16::MAX`; Kafka counts them as exhausted one before, so that the coordinator
/// can always fence once more.
pub(super) const MAX_EPOCH: i16 = i16::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's id of the state (TransactionState), as stored.
    fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
        }
    }

    fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }
}

/// Why a transactional request is refused, by Kafka's meaning.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TxnError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("The transaction timeout is larger than the maximum value allowed by the broker (as configured by transaction.max.timeout.ms).")]
    InvalidTransactionTimeout,
    #[error("The producer attempted to update a transaction while another concurrent operation on the same transaction was ongoing.")]
    ConcurrentTransactions,
    #[error("There is a newer producer with the same transactionalId which fences the current one.")]
    ProducerFenced,
    /// PRODUCER_FENCED as Produce reports it.
    #[error("Producer attempted to produce with an old epoch.")]
    InvalidProducerEpoch,
    #[error("The producer attempted to use a producer id which is not currently assigned to its transactional id.")]
    InvalidProducerIdMapping,
    #[error("{0}")]
    InvalidTxnState(String),
    /// A transactional batch for a partition not in its transaction (INVALID_TXN_STATE before
    /// Produce v11, TRANSACTION_ABORTABLE from it).
    #[error("{0}")]
    NotInTransaction(String),
    #[error("The transactional id was not found.")]
    TransactionalIdNotFound,
    /// The coordinator could not store its state (COORDINATOR_NOT_AVAILABLE).
    #[error("transaction state store: {0}")]
    Storage(String),
    /// A marker could not be written (the transaction stays in its Prepare state).
    #[error("cannot write a transaction marker: {0}")]
    Marker(String),
}

impl TxnError {
    pub(super) fn storage(e: MetaError) -> TxnError {
        TxnError::Storage(e.to_string())
    }
}

/// One transactional id's state, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TxnMetadata {
    pub(super) producer_id: i64,
    /// -1 until the first InitProducerId is stored.
    pub(super) producer_epoch: i16,
    /// The epoch before the last KIP-360 bump, to recognise a retried InitProducerId; not
    /// stored (Kafka does not either).
    pub(super) last_producer_epoch: i16,
    pub(super) timeout_ms: i32,
    pub(super) state: TxnState,
    pub(super) partitions: BTreeSet<(String, i32)>,
    pub(super) start_timestamp: i64,
    pub(super) last_update_timestamp: i64,
    /// TxnOffsetCommit's offsets, applied to their groups if the transaction commits.
    pub(super) offsets: PendingOffsets,
    /// A transition is being stored (Kafka's pendingState).
    pub(super) pending: bool,
}

impl TxnMetadata {
    pub(super) fn new(producer_id: i64, timeout_ms: i32) -> TxnMetadata {
        TxnMetadata {
            producer_id,
            producer_epoch: -1,
            last_producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_timestamp: -1,
            last_update_timestamp: -1,
            offsets: BTreeMap::new(),
            pending: false,
        }
    }

    pub(super) fn record(&self) -> TransactionRecord {
        TransactionRecord {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            timeout_ms: self.timeout_ms,
            state: self.state.id(),
            partitions: self.partitions.iter().cloned().collect(),
            start_timestamp: self.start_timestamp,
            last_update_timestamp: self.last_update_timestamp,
            offsets: self
                .offsets
                .iter()
                .map(|((g, t, p), o)| (g.clone(), t.clone(), *p, o.clone()))
                .collect(),
        }
    }

    pub(super) fn from_record(r: &TransactionRecord) -> Option<TxnMetadata> {
        Some(TxnMetadata {
            producer_id: r.producer_id,
            producer_epoch: r.producer_epoch,
            last_producer_epoch: -1,
            timeout_ms: r.timeout_ms,
            state: TxnState::from_id(r.state)?,
            partitions: r.partitions.iter().cloned().collect(),
            start_timestamp: r.start_timestamp,
            last_update_timestamp: r.last_update_timestamp,
            offsets: r
                .offsets
                .iter()
                .map(|(g, t, p, o)| ((g.clone(), t.clone(), *p), o.clone()))
                .collect(),
            pending: false,
        })
    }
}

/// The checks every request naming a producer makes first: the id exists and is this
/// producer's, at this epoch.
pub(super) fn check_producer(
    current: Option<&TxnMetadata>,
    producer_id: i64,
    producer_epoch: i16,
) -> Result<&TxnMetadata, TxnError> {
    let m = current.ok_or(TxnError::InvalidProducerIdMapping)?;
    if m.producer_id != producer_id {
        return Err(TxnError::InvalidProducerIdMapping);
    }
    if m.producer_epoch != producer_epoch {
        return Err(TxnError::ProducerFenced);
    }
    Ok(m)
}

/// An open transaction fenced by the coordinator (a new InitProducerId, a timeout): a new epoch,
/// so the old producer can write nothing more, and PrepareAbort; the markers carry the new epoch.
pub(super) fn fenced_abort(m: &TxnMetadata, now_ms: i64) -> TxnMetadata {
    let mut next = m.clone();
    next.producer_epoch = m.producer_epoch.saturating_add(1);
    next.last_producer_epoch = -1;
    next.state = TxnState::PrepareAbort;
    next.last_update_timestamp = now_ms;
    next
}

/// Kafka's InitProducerId rules for a transactional id (TransactionCoordinator
/// `handleInitProducerId`, transaction version 1).
pub(super) fn decide_init(
    m: TxnMetadata,
    expected: Option<(i64, i16)>,
    fresh_id: Option<i64>,
    timeout_ms: i32,
    now_ms: i64,
) -> Result<Decision<InitOutcome>, TxnError> {
    if let Some((pid, _)) = expected {
        if m.producer_epoch != -1 && pid != m.producer_id {
            return Err(TxnError::ProducerFenced);
        }
    }
    match m.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort => Err(TxnError::ConcurrentTransactions),
        TxnState::Ongoing => Ok(Decision::Store(fenced_abort(&m, now_ms), InitOutcome::Fenced)),
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            let mut next = m.clone();
            let exhausted = m.producer_epoch >= MAX_EPOCH - 1;
            if exhausted && expected.is_none_or(|(_, e)| e == m.producer_epoch) {
                next.producer_id = fresh_id.ok_or(TxnError::ConcurrentTransactions)?;
                next.producer_epoch = 0;
                next.last_producer_epoch = expected.map_or(-1, |_| m.producer_epoch);
            } else {
                match expected {
                    None => {
                        next.producer_epoch = m.producer_epoch + 1;
                        next.last_producer_epoch = -1;
                    }
                    Some((_, e)) if m.producer_epoch == -1 || e == m.producer_epoch => {
                        next.producer_epoch = m.producer_epoch + 1;
                        next.last_producer_epoch = m.producer_epoch;
                    }
                    // A retry of a bump that succeeded: the same answer again.
                    Some((_, e)) if e == m.last_producer_epoch => {
                        return Ok(Decision::Unchanged(InitOutcome::Ready(
                            m.producer_id,
                            m.producer_epoch,
                        )));
                    }
                    Some(_) => return Err(TxnError::ProducerFenced),
                }
            }
            next.state = TxnState::Empty;
            next.partitions.clear();
            next.offsets.clear();
            next.start_timestamp = -1;
            next.timeout_ms = timeout_ms;
            next.last_update_timestamp = now_ms;
            let outcome = InitOutcome::Ready(next.producer_id, next.producer_epoch);
            Ok(Decision::Store(next, outcome))
        }
    }
}

/// Kafka's topic of committed offsets, which names a group's place in a transaction.
pub(super) const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka's default `offsets.topic.num.partitions`.
const OFFSETS_TOPIC_PARTITIONS: i32 = 50;

/// The `__consumer_offsets` partition Kafka keeps a group in: Java's `String.hashCode` of the id,
/// made non-negative as Kafka's `Utils.abs` does, modulo the partition count. Transactions list
/// it for the group whose offsets they commit, as DescribeTransactions shows in Kafka.
pub(super) fn offsets_partition(group_id: &str) -> i32 {
    let hash = group_id
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % OFFSETS_TOPIC_PARTITIONS
}

//! Kafka's CleanedTransactionMetadata: what the cleaner knows of transactions as it walks a
//! log in offset order, to drop the batches of aborted transactions and the markers no batch
//! needs any more. Markers and aborted batches are matched by producer id, with the aborted
//! transactions of the range taken from the segments' `.txnindex` files.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::log::control::TxnMarker;
use crate::log::{AbortedTxn, RecordBatchHeader};

#[derive(Default)]
pub(crate) struct CleanedTransactions {
    /// Aborted transactions of the range not reached yet, by first offset.
    aborted: VecDeque<AbortedTxn>,
    /// Aborted transactions reached and not ended by their marker yet, with the last offset of
    /// a batch of theirs seen in this pass.
    ongoing_aborted: HashMap<i64, (AbortedTxn, Option<i64>)>,
    /// Producers with a transaction seen in this pass whose marker is not reached yet and that
    /// is not aborted (so committed, or still open).
    ongoing_committed: HashSet<i64>,
    /// Aborted transactions whose marker is kept, for the cleaned segment's `.txnindex`.
    retained_aborts: Vec<AbortedTxn>,
}

impl CleanedTransactions {
    /// Starts from the aborted transactions overlapping the range to walk, oldest first.
    pub(crate) fn new(mut aborted: Vec<AbortedTxn>) -> Self {
        aborted.sort_by_key(|a| a.first_offset);
        CleanedTransactions {
            aborted: aborted.into(),
            ..CleanedTransactions::default()
        }
    }

    /// Adds the aborted transactions of another part of the range (the next segment).
    pub(crate) fn add_aborted(&mut self, more: Vec<AbortedTxn>) {
        for a in more {
            if !self.aborted.iter().any(|b| b == &a) {
                self.aborted.push_back(a);
            }
        }
        self.aborted.make_contiguous().sort_by_key(|a| a.first_offset);
    }

    fn consume_aborted_up_to(&mut self, offset: i64) {
        while self.aborted.front().is_some_and(|a| a.first_offset <= offset) {
            let a = self.aborted.pop_front().expect("front exists");
            self.ongoing_aborted.entry(a.producer_id).or_insert((a, None));
        }
    }

    /// A data batch reached: true when it belongs to an aborted transaction (discardable).
    pub(crate) fn on_batch(&mut self, h: &RecordBatchHeader) -> bool {
        self.consume_aborted_up_to(h.last_offset());
        if !h.is_transactional() {
            return false;
        }
        match self.ongoing_aborted.get_mut(&h.producer_id()) {
            Some((_, last_seen)) => {
                *last_seen = Some(h.last_offset());
                true
            }
            None => {
                self.ongoing_committed.insert(h.producer_id());
                false
            }
        }
    }

    /// A control batch reached (`marker` its parsed marker, `None` for an empty or unknown
    /// control batch): true when the marker may be discarded, as no batch of its transaction
    /// was seen in this pass (an ABORT whose batches were seen stays, and is indexed).
    pub(crate) fn on_control(&mut self, h: &RecordBatchHeader, marker: Option<TxnMarker>) -> bool {
        self.consume_aborted_up_to(h.last_offset());
        if h.record_count() == 0 {
            // An empty control batch was cleaned before: safe to discard.
            return true;
        }
        let Some(marker) = marker else {
            return false;
        };
        if marker.commit {
            !self.ongoing_committed.remove(&h.producer_id())
        } else {
            match self.ongoing_aborted.remove(&h.producer_id()) {
                Some((txn, Some(_))) => {
                    self.retained_aborts.push(txn);
                    false
                }
                _ => true,
            }
        }
    }

    /// The aborted transactions whose markers were kept since the last call, for the
    /// `.txnindex` of the segment they were written to.
    pub(crate) fn take_retained_aborts(&mut self) -> Vec<AbortedTxn> {
        std::mem::take(&mut self.retained_aborts)
    }
}

//! Idempotent producers' state in one partition (Kafka's ProducerStateManager): for each producer
//! id its epoch and the sequence ranges and offsets of its last five batches, so that a retried
//! batch is answered with its original offsets instead of being written twice, and a gap or a
//! stale epoch is refused.
//!
//! Everything is decided from the 61-byte batch header (producer id, epoch, base sequence and
//! last offset delta): records are never decoded. The table lives under the partition's append
//! lock, so a check and the append it allows are one step. It is rebuilt at open from a
//! snapshot (see [`ProducerSnapshot`]) and the batch headers of the log after it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::batch::RecordBatchHeader;
use super::control::TxnMarker;
use super::LogError;

/// Batches remembered per producer: Kafka's `NUM_BATCHES_TO_RETAIN`, which is also the most
/// requests a producer may have in flight with idempotence on.
pub const BATCHES_TO_RETAIN: usize = 5;

/// `base + delta` in the sequence space, which wraps from `i32::MAX` to 0.
pub(crate) fn increment_sequence(base: i32, delta: i32) -> i32 {
    if base > i32::MAX - delta {
        delta - (i32::MAX - base) - 1
    } else {
        base + delta
    }
}

/// `last - delta` in the sequence space.
fn decrement_sequence(last: i32, delta: i32) -> i32 {
    if last < delta {
        i32::MAX - (delta - last) + 1
    } else {
        last - delta
    }
}

/// Where one appended batch of a producer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub last_seq: i32,
    pub last_offset: i64,
    pub offset_delta: i32,
    /// The batch's maxTimestamp as stored (the broker's clock under LogAppendTime).
    pub timestamp: i64,
}

impl BatchMetadata {
    pub fn first_seq(&self) -> i32 {
        decrement_sequence(self.last_seq, self.offset_delta)
    }

    pub fn first_offset(&self) -> i64 {
        self.last_offset - i64::from(self.offset_delta)
    }
}

/// One producer's state in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStateEntry {
    pub producer_id: i64,
    pub epoch: i16,
    /// The transaction coordinator's epoch of the last marker (-1: none yet).
    pub coordinator_epoch: i32,
    /// The maxTimestamp of its last batch; expiry counts from it, as Kafka's does.
    pub last_timestamp: i64,
    /// The first offset of its open transaction, if one is open here.
    pub current_txn_first_offset: Option<i64>,
    /// Oldest first, at most [`BATCHES_TO_RETAIN`].
    batches: VecDeque<BatchMetadata>,
}

impl ProducerStateEntry {
    fn new(producer_id: i64, epoch: i16) -> Self {
        ProducerStateEntry {
            producer_id,
            epoch,
            coordinator_epoch: -1,
            last_timestamp: -1,
            current_txn_first_offset: None,
            batches: VecDeque::new(),
        }
    }

    /// The last sequence number written, -1 when none is remembered under this epoch.
    pub fn last_seq(&self) -> i32 {
        self.batches.back().map_or(-1, |b| b.last_seq)
    }

    pub fn batches(&self) -> impl Iterator<Item = &BatchMetadata> {
        self.batches.iter()
    }

    fn duplicate_of(&self, first_seq: i32, last_seq: i32) -> Option<BatchMetadata> {
        self.batches
            .iter()
            .find(|b| b.first_seq() == first_seq && b.last_seq == last_seq)
            .copied()
    }

    fn add_batch(&mut self, epoch: i16, batch: BatchMetadata) {
        // A new epoch starts a new sequence space: what the old one sent cannot be retried.
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        if self.batches.len() == BATCHES_TO_RETAIN {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        self.last_timestamp = batch.timestamp;
    }
}

/// What the producer state says about a batch about to be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not an idempotent producer's batch, or the next one in its sequence: append it.
    Append,
    /// The same batch was appended before: answer with where it went, write nothing.
    Duplicate(BatchMetadata),
}

/// A transaction that a marker ended in this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub commit: bool,
}

/// The idempotent and transactional producers of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerStateEntry>,
    /// Open transactions, by first offset → producer id: the smallest is the first unstable
    /// offset, below which read_committed consumers may read.
    ongoing: BTreeMap<i64, i64>,
}

impl ProducerStateTable {
    pub fn get(&self, producer_id: i64) -> Option<&ProducerStateEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Every producer, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &ProducerStateEntry> {
        self.producers.values()
    }

    /// Kafka's checks of a client's batch against its producer's state (`ProducerAppendInfo`
    /// with client origin), from the header alone. `offset` is where the batch would go; it
    /// only names the place in error messages.
    pub fn check(&self, h: &RecordBatchHeader, offset: i64) -> Result<SequenceCheck, LogError> {
        let pid = h.producer_id();
        if pid < 0 {
            return Ok(SequenceCheck::Append);
        }
        let (epoch, first_seq) = (h.producer_epoch(), h.base_sequence());
        let last_seq = increment_sequence(first_seq, h.last_offset_delta());
        let entry = self.producers.get(&pid);
        if let Some(dup) = entry
            .filter(|e| e.epoch == epoch)
            .and_then(|e| e.duplicate_of(first_seq, last_seq))
        {
            return Ok(SequenceCheck::Duplicate(dup));
        }
        // An unknown producer (never seen, expired, or before this log's state) has no epoch:
        // Kafka 4.1 accepts its batch at any sequence and starts tracking it there.
        let current_epoch = entry.map_or(-1, |e| e.epoch);
        if epoch < current_epoch {
            return Err(LogError::InvalidProducerEpoch(format!(
                "Epoch of producer {pid} at offset {offset} is {epoch}, which is smaller than the last seen epoch {current_epoch}"
            )));
        }
        let in_sequence = if epoch != current_epoch {
            first_seq == 0 || current_epoch == -1
        } else {
            let last = entry.map_or(-1, |e| e.last_seq());
            i64::from(first_seq) == i64::from(last) + 1 || (first_seq == 0 && last == i32::MAX)
        };
        if !in_sequence {
            let last = entry.filter(|e| e.epoch == epoch).map_or(-1, |e| e.last_seq());
            return Err(LogError::OutOfOrderSequence(format!(
                "Out of order sequence number for producer {pid} at offset {offset}: {first_seq} (incoming seq. number), {last} (current end sequence number)"
            )));
        }
        if !h.is_transactional() && entry.is_some_and(|e| e.current_txn_first_offset.is_some()) {
            return Err(LogError::InvalidTxnState(format!(
                "Expected transactional write from producer {pid} at offset {offset}"
            )));
        }
        Ok(SequenceCheck::Append)
    }

    /// Kafka's check of a transaction marker from the coordinator: its epoch may not be older
    /// than the producer's.
    pub fn check_marker(&self, marker: &TxnMarker) -> Result<(), LogError> {
        match self.producers.get(&marker.producer_id) {
            Some(e) if marker.producer_epoch < e.epoch => Err(LogError::InvalidProducerEpoch(format!(
                "Transaction marker of producer {} has epoch {}, older than the current {}",
                marker.producer_id, marker.producer_epoch, e.epoch
            ))),
            _ => Ok(()),
        }
    }

    /// Records a marker now in the log at `offset`: the producer's open transaction here (if it
    /// wrote anything in it) is over. A marker of a newer epoch (a fenced or timed-out
    /// producer) makes that epoch current.
    pub fn record_marker(&mut self, marker: &TxnMarker, offset: i64, timestamp: i64) -> Option<CompletedTxn> {
        let pid = marker.producer_id;
        let entry = self
            .producers
            .entry(pid)
            .or_insert_with(|| ProducerStateEntry::new(pid, marker.producer_epoch));
        if marker.producer_epoch != entry.epoch {
            entry.epoch = marker.producer_epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = marker.coordinator_epoch;
        entry.last_timestamp = timestamp;
        let first_offset = entry.current_txn_first_offset.take()?;
        self.ongoing.remove(&first_offset);
        Some(CompletedTxn {
            producer_id: pid,
            first_offset,
            last_offset: offset,
            commit: marker.commit,
        })
    }

    /// The first offset of the oldest open transaction, if any.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// Records a batch that is now in the log: `h` as stored (its base offset assigned, its
    /// maxTimestamp final). Used for appends that passed `check` and for the replay at open,
    /// which trusts the log and checks nothing.
    pub fn record(&mut self, h: &RecordBatchHeader) {
        let pid = h.producer_id();
        if pid < 0 {
            return;
        }
        let batch = BatchMetadata {
            last_seq: increment_sequence(h.base_sequence(), h.last_offset_delta()),
            last_offset: h.last_offset(),
            offset_delta: h.last_offset_delta(),
            timestamp: h.max_timestamp(),
        };
        let entry = self
            .producers
            .entry(pid)
            .or_insert_with(|| ProducerStateEntry::new(pid, h.producer_epoch()));
        entry.add_batch(h.producer_epoch(), batch);
        if h.is_transactional() && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(h.base_offset());
            self.ongoing.insert(h.base_offset(), pid);
        }
    }

    /// Drops producers idle for `max_idle_ms` (from their last batch's timestamp) with no open
    /// transaction (`producer.id.expiration.ms`). Returns how many went.
    pub fn remove_expired(&mut self, now_ms: i64, max_idle_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some() || now_ms.saturating_sub(e.last_timestamp) < max_idle_ms
        });
        before - self.producers.len()
    }

    /// Forgets every producer (the log was emptied).
    pub fn clear(&mut self) {
        self.producers.clear();
        self.ongoing.clear();
    }

    pub fn snapshot(&self, offset: i64) -> ProducerSnapshot {
        ProducerSnapshot {
            offset,
            table: self.clone(),
        }
    }
}

/// The producer state of a partition as of one offset: built from every batch below `offset`
/// and none at or above it. Stored by the broker (in RocksDB) when a segment rolls and at clean
/// shutdown; at open the log takes the newest one it reaches and replays the batch headers
/// after it. Unlike Kafka's `.snapshot` files, which keep only each producer's last batch, all
/// five remembered batches are kept, so a retry of any of them is still recognised after a
/// restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSnapshot {
    pub offset: i64,
    pub table: ProducerStateTable,
}

const SNAPSHOT_VERSION: u8 = 1;

impl ProducerSnapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + self.table.len() * 64);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&(self.table.len() as u32).to_be_bytes());
        let mut entries: Vec<_> = self.table.entries().collect();
        entries.sort_by_key(|e| e.producer_id);
        for e in entries {
            out.extend_from_slice(&e.producer_id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            out.extend_from_slice(&e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.offset_delta.to_be_bytes());
                out.extend_from_slice(&b.timestamp.to_be_bytes());
            }
        }
        out
    }

    /// `None` for bytes this version cannot read (the caller then replays the whole log).
    pub fn decode(bytes: &[u8]) -> Option<ProducerSnapshot> {
        let mut r = Cursor(bytes);
        if r.take::<1>()?[0] != SNAPSHOT_VERSION {
            return None;
        }
        let offset = i64::from_be_bytes(r.take()?);
        let n = u32::from_be_bytes(r.take()?);
        let mut table = ProducerStateTable::default();
        for _ in 0..n {
            let producer_id = i64::from_be_bytes(r.take()?);
            let mut e = ProducerStateEntry::new(producer_id, i16::from_be_bytes(r.take()?));
            e.coordinator_epoch = i32::from_be_bytes(r.take()?);
            e.last_timestamp = i64::from_be_bytes(r.take()?);
            let txn = i64::from_be_bytes(r.take()?);
            e.current_txn_first_offset = (txn >= 0).then_some(txn);
            let batches = r.take::<1>()?[0] as usize;
            if batches > BATCHES_TO_RETAIN {
                return None;
            }
            for _ in 0..batches {
                e.batches.push_back(BatchMetadata {
                    last_seq: i32::from_be_bytes(r.take()?),
                    last_offset: i64::from_be_bytes(r.take()?),
                    offset_delta: i32::from_be_bytes(r.take()?),
                    timestamp: i64::from_be_bytes(r.take()?),
                });
            }
            if let Some(first) = e.current_txn_first_offset {
                table.ongoing.insert(first, producer_id);
            }
            table.producers.insert(producer_id, e);
        }
        r.0.is_empty().then_some(ProducerSnapshot { offset, table })
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let head = self.0.get(..N)?.try_into().ok()?;
        self.0 = &self.0[N..];
        Some(head)
    }
}

#[cfg(test)]
mod tests;

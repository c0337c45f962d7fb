//! One batch through the cleaner: Kafka's `MemoryRecords.filterTo` with the cleaner's record
//! filter. A batch keeps its offsets, producer id, epoch, base sequence and last offset delta
//! (so a producer's sequence survives); one whose every record stays, and whose delete horizon
//! needs no setting, is copied byte for byte; otherwise its kept records are written into a new
//! batch with the same codec; a batch that must stay for its producer but keeps no record
//! becomes an empty batch (its header alone).

use std::collections::HashMap;

use bytes::Bytes;

use super::offset_map::OffsetMap;
use super::transactions::CleanedTransactions;
use crate::log::batch::DELETE_HORIZON_BIT;
use crate::log::compression::{codec, compress, decompress};
use crate::log::control::TxnMarker;
use crate::log::record::{BatchFields, Reader, RecordRef};
use crate::log::{LogError, RecordBatchHeader, TimestampType, BATCH_HEADER_SIZE};

/// What the cleaner must keep of an active producer (Kafka's `lastRecordsOfActiveProducers`):
/// the batch holding its last data offset, or, when its last entry is a marker, a control
/// batch of its epoch, so its sequence and epoch survive cleaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastRecord {
    pub(crate) last_data_offset: Option<i64>,
    pub(crate) producer_epoch: i16,
}

/// The inputs of a cleaning pass that every batch sees.
pub(crate) struct FilterContext<'a> {
    pub(crate) map: &'a OffsetMap,
    pub(crate) now_ms: i64,
    pub(crate) delete_retention_ms: i64,
    pub(crate) last_records: &'a HashMap<i64, LastRecord>,
    /// Where the cleaning round ends: its last batch stays, even empty, so the log keeps its
    /// last offset.
    pub(crate) upper_bound: i64,
}

/// A batch after filtering.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Filtered {
    /// Every record stays: the stored bytes are copied.
    Unchanged,
    /// The new bytes of the batch.
    Rewritten(Vec<u8>),
    /// Nothing of it stays.
    Dropped,
}

#[derive(Debug)]
pub(crate) struct BatchOutcome {
    pub(crate) filtered: Filtered,
    pub(crate) records_read: u64,
    pub(crate) records_kept: u64,
    /// The delete horizon this pass set on the batch, if it did.
    pub(crate) horizon_set: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retention {
    /// Drop the batch, records and all.
    Delete,
    /// Keep the batch's kept records; drop it if none.
    DeleteEmpty,
    /// Keep the batch, empty if no record stays (a producer's last).
    RetainEmpty,
}

/// Filters the whole stored batch `batch` (header `h`).
pub(crate) fn filter_batch(
    ctx: &FilterContext<'_>,
    txns: &mut CleanedTransactions,
    batch: &Bytes,
    h: &RecordBatchHeader,
) -> Result<BatchOutcome, LogError> {
    let can_discard = if h.is_control() {
        txns.on_control(h, TxnMarker::parse(h, batch))
    } else {
        txns.on_batch(h)
    };
    // A marker outlives its transaction's batches until its delete horizon, as tombstones do.
    let discard_records = if h.is_control() {
        can_discard && h.delete_horizon_ms().is_some_and(|t| t <= ctx.now_ms)
    } else {
        can_discard
    };
    // A producer's last batch keeps its sequence and epoch; the round's last batch keeps the
    // log's last offset (KAFKA-17076): both stay, even empty.
    let retention =
        if (h.producer_id() >= 0 && is_last_of_producer(ctx, h)) || h.last_offset() + 1 == ctx.upper_bound {
            Retention::RetainEmpty
        } else if discard_records {
            Retention::Delete
        } else {
            Retention::DeleteEmpty
        };
    let marker_for_empty_txn = can_discard && h.is_control();
    let mut outcome = BatchOutcome {
        filtered: Filtered::Dropped,
        records_read: u64::try_from(h.record_count()).unwrap_or(0),
        records_kept: 0,
        horizon_set: None,
    };
    if retention == Retention::Delete {
        return Ok(outcome);
    }

    let codec = codec(h.compression())?;
    let plain = decompress(codec, &batch.slice(BATCH_HEADER_SIZE..)).map_err(|e| {
        LogError::CorruptRecord(format!(
            "cannot decompress a batch at offset {}: {e}",
            h.base_offset()
        ))
    })?;
    let mut reader = Reader::new(&plain);
    let mut kept: Vec<RecordRef<'_>> = Vec::new();
    let (mut read, mut all_kept, mut tombstones) = (0u64, true, false);
    while !reader.at_end() {
        let record = reader.record()?;
        read += 1;
        let keep = if discard_records {
            false
        } else if h.is_control() {
            true
        } else {
            retain_record(ctx, h, &record)
        };
        if keep {
            tombstones |= record.value.is_none();
            kept.push(record);
        } else {
            all_kept = false;
        }
    }
    outcome.records_read = read;
    outcome.records_kept = kept.len() as u64;

    if !kept.is_empty() {
        let set_horizon = (tombstones || marker_for_empty_txn) && h.delete_horizon_ms().is_none();
        if all_kept && !set_horizon {
            outcome.filtered = Filtered::Unchanged;
            return Ok(outcome);
        }
        let horizon = if set_horizon {
            let t = ctx.now_ms.saturating_add(ctx.delete_retention_ms);
            outcome.horizon_set = Some(t);
            Some(t)
        } else {
            h.delete_horizon_ms()
        };
        outcome.filtered = Filtered::Rewritten(rebuild(h, &kept, horizon, codec)?);
    } else if retention == Retention::RetainEmpty {
        outcome.filtered = Filtered::Rewritten(empty_batch(h));
    }
    Ok(outcome)
}

fn is_last_of_producer(ctx: &FilterContext<'_>, h: &RecordBatchHeader) -> bool {
    ctx.last_records
        .get(&h.producer_id())
        .is_some_and(|last| match last.last_data_offset {
            Some(offset) => h.last_offset() == offset,
            None => h.is_control() && h.producer_epoch() == last.producer_epoch,
        })
}

/// Kafka's `Cleaner.shouldRetainRecord` for a data record: past what the map covers, kept;
/// otherwise only the latest record of its key, and a tombstone only until its batch's delete
/// horizon. A record without a key is dropped.
fn retain_record(ctx: &FilterContext<'_>, h: &RecordBatchHeader, record: &RecordRef<'_>) -> bool {
    let offset = h.base_offset() + i64::from(record.offset_delta);
    if offset > ctx.map.latest_offset() {
        return true;
    }
    let Some(key) = record.key else {
        return false;
    };
    let latest = offset >= ctx.map.get(key);
    let retain_deletes = h.delete_horizon_ms().is_none_or(|t| ctx.now_ms < t);
    latest && (record.value.is_some() || retain_deletes)
}

/// Kafka's `buildRetainedRecordsInto`: the kept records in a batch with the original's base
/// offset, last offset delta, producer fields, leader epoch, timestamp type and codec. The base
/// timestamp is the delete horizon when there is one, else the first kept record's timestamp.
fn rebuild(
    h: &RecordBatchHeader,
    kept: &[RecordRef<'_>],
    horizon: Option<i64>,
    codec: kafka_protocol::records::Compression,
) -> Result<Vec<u8>, LogError> {
    let log_append_time = h.timestamp_type() == TimestampType::LogAppendTime;
    // Under LogAppendTime every record's timestamp is the batch's (Kafka's record iterator).
    let timestamp = |r: &RecordRef<'_>| {
        if log_append_time {
            h.max_timestamp()
        } else {
            h.base_timestamp().wrapping_add(r.timestamp_delta)
        }
    };
    let base_timestamp = horizon.unwrap_or_else(|| timestamp(&kept[0]));
    let mut plain = Vec::new();
    let mut max_timestamp = i64::MIN;
    for r in kept {
        let ts = timestamp(r);
        max_timestamp = max_timestamp.max(ts);
        r.write_to(&mut plain, ts.wrapping_sub(base_timestamp));
    }
    if log_append_time {
        max_timestamp = h.max_timestamp();
    }
    let mut fields = BatchFields::of(h);
    fields.base_timestamp = base_timestamp;
    fields.max_timestamp = max_timestamp;
    fields.record_count = kept.len() as i32;
    if horizon.is_some() {
        fields.attributes |= DELETE_HORIZON_BIT;
    }
    Ok(fields.encode(&compress(codec, &plain)?))
}

/// Kafka's `writeEmptyHeader`: a batch of no records, uncompressed and without a delete
/// horizon, keeping the offsets, producer fields and maxTimestamp; no base timestamp (-1).
fn empty_batch(h: &RecordBatchHeader) -> Vec<u8> {
    let mut fields = BatchFields::of(h);
    fields.attributes &= !(0x07 | DELETE_HORIZON_BIT);
    fields.base_timestamp = -1;
    fields.record_count = 0;
    fields.encode(&[])
}

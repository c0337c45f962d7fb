//! The log cleaner's work on one partition (Kafka's Cleaner): which part of a compacted log may
//! be cleaned and how dirty it is (`cleanable`), and one cleaning round (`clean`): the latest
//! offset of every key of the dirty section into an [`OffsetMap`], then every segment from the
//! log's first up to where the map ends rewritten, group by group, into `.cleaned` segments that
//! `PartitionLog::replace_segments` swaps in.
//!
//! Nothing here holds a lock produce or fetch need: the segments read are sealed (immutable),
//! the output is new files, and the swap takes only the log's maintenance lock and, for an
//! instant, the segment map.

mod filter;
mod offset_map;
pub(crate) mod segment_writer;
pub(crate) mod swap;
mod transactions;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;

pub(crate) use filter::LastRecord;
use filter::{filter_batch, FilterContext, Filtered};
pub use offset_map::OffsetMap;
use segment_writer::CleanedSegment;
use transactions::CleanedTransactions;

use super::batch::BatchHeaders;
use super::compression::{codec, decompress};
use super::control::TxnMarker;
use super::record::Reader;
use super::segment::LogSegment;
use super::{DeletedSegments, LogError, PartitionLog, RecordBatchHeader, BATCH_HEADER_SIZE};

/// What of a compacted log a round could clean now (Kafka's LogToClean).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cleanable {
    /// Where the dirty section starts: the checkpointed offset, or the log start when that is
    /// out of the log.
    pub first_dirty: i64,
    /// Whether the checkpoint was out of range and should be rewritten to `first_dirty`.
    pub reset_checkpoint: bool,
    /// Where cleaning must stop: the base of the segment holding the first offset that may not
    /// be cleaned (the last stable offset, the active segment, `min.compaction.lag.ms`, and in
    /// Keel the recovery point: only durable data is rewritten).
    pub first_uncleanable: i64,
    /// Bytes of the segments below the first dirty offset.
    pub clean_bytes: u64,
    /// Bytes of the segments from the first dirty offset up to the first uncleanable one.
    pub dirty_bytes: u64,
    /// How long past `max.compaction.lag.ms` the oldest dirty record is (0: not overdue).
    pub compaction_delay_ms: i64,
}

impl Cleanable {
    /// Kafka's cleanable ratio: dirty bytes over all cleanable bytes.
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }

    /// Whether a round is due: a dirty ratio above `min_ratio`, or dirty data overdue by
    /// `max.compaction.lag.ms`.
    pub fn is_due(&self, min_ratio: f64) -> bool {
        (self.compaction_delay_ms > 0 && self.dirty_bytes > 0) || self.dirty_ratio() > min_ratio
    }
}

/// The settings of a round.
pub struct CleanOptions<'a> {
    pub now_ms: i64,
    /// Bytes read per step (`log.cleaner.io.buffer.size` shared by the threads).
    pub io_buffer: usize,
    /// Called with the bytes read and written as the round goes (the cleaner's I/O budget,
    /// `log.cleaner.io.max.bytes.per.second`): it may sleep.
    pub throttle: &'a (dyn Fn(u64) + Sync),
    /// Set to stop a round early (shutdown, the log being deleted): its output is discarded.
    pub abort: &'a AtomicBool,
}

/// What a round did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanStats {
    /// The new first dirty offset, for the cleaner checkpoint.
    pub end_offset: i64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_kept: u64,
    pub segments_before: usize,
    pub segments_after: usize,
    /// Keys in the offset map, and the share of its slots they took.
    pub map_entries: usize,
    pub map_utilization: f64,
}

/// Kafka's `cleanableOffsets` and the byte counts of LogToClean, for `checkpoint` (the
/// partition's entry of the cleaner checkpoint, if any) at `now_ms`.
pub fn cleanable(log: &PartitionLog, checkpoint: Option<i64>, now_ms: i64) -> Cleanable {
    let config = log.config();
    let (log_start, log_end) = (log.log_start_offset(), log.log_end_offset());
    let wanted = checkpoint.unwrap_or(log_start);
    let (first_dirty, reset_checkpoint) = if wanted < log_start || wanted > log_end {
        (log_start, checkpoint.is_some())
    } else {
        (wanted, false)
    };
    let segments = log.segments_list();
    let active_base = segments.last().map_or(log_end, |s| s.base_offset());
    // Keel's own bounds on top of Kafka's: only durable data is rewritten, and no segment whose
    // roll flush (index files) has not finished, since that flush writes by file name.
    let mut uncleanable = log
        .last_stable_offset()
        .min(active_base)
        .min(log.recovery_point())
        .min(log.first_unflushed_sealed_base().unwrap_or(i64::MAX));
    if config.min_compaction_lag_ms > 0 {
        let recent = now_ms.saturating_sub(config.min_compaction_lag_ms);
        if let Some(s) = segments
            .iter()
            .filter(|s| s.base_offset() != active_base && next_base(&segments, s) > first_dirty)
            .find(|s| s.largest_timestamp() > recent)
        {
            uncleanable = uncleanable.min(s.base_offset());
        }
    }
    // Whole segments only: the one holding the uncleanable offset is not cleaned (nothing is
    // when the first dirty offset lies in it or after it).
    let first_uncleanable = segments
        .iter()
        .rev()
        .find(|s| s.base_offset() <= uncleanable)
        .map_or(uncleanable, |s| s.base_offset());
    let (mut clean_bytes, mut dirty_bytes) = (0, 0);
    let mut overdue_since = i64::MAX;
    for s in &segments {
        let (base, next) = (s.base_offset(), next_base(&segments, s));
        if base < first_dirty {
            clean_bytes += s.size();
        }
        if next > first_dirty && base < first_uncleanable {
            dirty_bytes += s.size();
        }
        // Kafka's maxCompactionDelay: every non-active segment from the first dirty one.
        if next > first_dirty && base != active_base {
            if let Some(ts) = s.first_batch_timestamp().filter(|&t| t > 0) {
                overdue_since = overdue_since.min(ts);
            }
        }
    }
    let clean_until = now_ms.saturating_sub(config.max_compaction_lag_ms.max(0));
    let compaction_delay_ms = if overdue_since < clean_until {
        clean_until - overdue_since
    } else {
        0
    };
    Cleanable {
        first_dirty,
        reset_checkpoint,
        first_uncleanable,
        clean_bytes,
        dirty_bytes,
        compaction_delay_ms,
    }
}

/// The base offset of the segment after `s` in `segments` (the log end for the last).
fn next_base(segments: &[Arc<LogSegment>], s: &LogSegment) -> i64 {
    segments
        .iter()
        .find(|n| n.base_offset() > s.base_offset())
        .map_or_else(|| s.next_offset(), |n| n.base_offset())
}

/// One cleaning round of `log` over `range` (from `cleanable`), with `map` as its offset map.
/// `None` when nothing was cleaned: no dirty record, the round was aborted, or the log changed
/// under it (retention or DeleteRecords took a segment it was rewriting; the next round starts
/// over). The segments replaced go to `deleted`, their files renamed `.deleted`, for the caller
/// to remove after `file.delete.delay.ms` (also those of groups swapped in before a round
/// stopped).
pub fn clean(
    log: &PartitionLog,
    range: &Cleanable,
    map: &mut OffsetMap,
    opts: &CleanOptions<'_>,
    deleted: &mut Vec<DeletedSegments>,
) -> Result<Option<CleanStats>, LogError> {
    let segments = log.segments_list();
    if range.first_dirty >= range.first_uncleanable {
        return Ok(None);
    }
    let mut stats = CleanStats {
        segments_before: segments.len(),
        ..CleanStats::default()
    };
    let dirty: Vec<Arc<LogSegment>> = segments
        .iter()
        .filter(|s| next_base(&segments, s) > range.first_dirty && s.base_offset() < range.first_uncleanable)
        .cloned()
        .collect();
    build_offset_map(log, &segments, &dirty, range, map, opts, &mut stats)?;
    if opts.abort.load(Ordering::Acquire) || !log.is_open() {
        return Ok(None);
    }
    let end_offset = map.latest_offset() + 1;
    if end_offset <= range.first_dirty || map.latest_offset() < 0 {
        return Ok(None);
    }
    stats.end_offset = end_offset;
    stats.map_entries = map.len();
    stats.map_utilization = map.len() as f64 / map.capacity().max(1) as f64;

    let config = log.config();
    let ctx_last_records = log.last_records_of_producers();
    let to_clean: Vec<Arc<LogSegment>> = segments
        .iter()
        .take_while(|s| s.base_offset() < end_offset)
        .cloned()
        .collect();
    let mut txns = CleanedTransactions::default();
    for group in group_by_size(&segments, &to_clean, config.effective_segment_bytes()) {
        let ctx = FilterContext {
            map,
            now_ms: opts.now_ms,
            delete_retention_ms: config.delete_retention_ms,
            last_records: &ctx_last_records,
            upper_bound: range.first_uncleanable,
        };
        let end = next_base(&segments, &group[group.len() - 1]);
        match clean_group(log, &group, end, &ctx, &mut txns, opts, &mut stats)? {
            Some(old) => deleted.push(old),
            None => return Ok(None),
        }
    }
    stats.segments_after = log.segments_list().len();
    Ok(Some(stats))
}

/// Kafka's `groupSegmentsBySize`: consecutive segments whose sizes add up to at most one
/// segment and whose offsets span at most what an index can address.
fn group_by_size(
    all: &[Arc<LogSegment>],
    to_clean: &[Arc<LogSegment>],
    max_bytes: u64,
) -> Vec<Vec<Arc<LogSegment>>> {
    let mut groups: Vec<Vec<Arc<LogSegment>>> = Vec::new();
    let mut size = 0u64;
    for s in to_clean {
        let fits = groups.last().is_some_and(|g| {
            let first = g[0].base_offset();
            size + s.size() <= max_bytes && next_base(all, s) - 1 - first <= i64::from(i32::MAX)
        });
        if fits {
            size += s.size();
            groups.last_mut().expect("a group").push(Arc::clone(s));
        } else {
            size = s.size();
            groups.push(vec![Arc::clone(s)]);
        }
    }
    groups
}

/// Reads the whole batches of a segment from `start` (a batch boundary) in steps of about
/// `step` bytes; a batch larger than a step is read whole.
struct SegmentBatches<'a> {
    segment: &'a LogSegment,
    pos: u64,
    end: u64,
    step: usize,
    buf: Bytes,
    at: usize,
}

impl<'a> SegmentBatches<'a> {
    fn new(segment: &'a LogSegment, start: u64, step: usize) -> Self {
        SegmentBatches {
            segment,
            pos: start,
            end: segment.size(),
            step: step.max(BATCH_HEADER_SIZE),
            buf: Bytes::new(),
            at: 0,
        }
    }

    /// The next batch as (bytes, header), and the bytes read from the file for it (0 while the
    /// step read before is used).
    fn next_batch(&mut self) -> Result<Option<(Bytes, RecordBatchHeader, u64)>, LogError> {
        let mut read = 0u64;
        if let Some((_, h)) = BatchHeaders::new(&self.buf[self.at..]).next() {
            let batch = self.buf.slice(self.at..self.at + h.size());
            self.at += h.size();
            return Ok(Some((batch, h, read)));
        }
        if self.pos >= self.end {
            return Ok(None);
        }
        let mut len = (self.end - self.pos).min(self.step as u64) as usize;
        let mut buf = vec![0u8; len];
        self.segment.file().read_exact_at(&mut buf, self.pos)?;
        let first = RecordBatchHeader::parse(&buf)?;
        if first.size() > len {
            len = first.size();
            if self.pos + len as u64 > self.end {
                return Err(LogError::CorruptRecord(format!(
                    "a batch at position {} runs past the end of segment {}",
                    self.pos,
                    self.segment.base_offset()
                )));
            }
            buf.resize(len, 0);
            self.segment.file().read_exact_at(&mut buf, self.pos)?;
        }
        let mut whole = BatchHeaders::new(&buf);
        whole.by_ref().for_each(drop);
        let used = whole.position();
        buf.truncate(used);
        self.pos += used as u64;
        read += used as u64;
        self.buf = Bytes::from(buf);
        self.at = 0;
        let h = RecordBatchHeader::parse(&self.buf)?;
        let batch = self.buf.slice(0..h.size());
        self.at = h.size();
        Ok(Some((batch, h, read)))
    }
}

/// Kafka's `buildOffsetMap`: the latest offset of each key in the dirty segments, from
/// `first_dirty` on, skipping aborted transactions and control batches, until the map is full.
fn build_offset_map(
    log: &PartitionLog,
    all: &[Arc<LogSegment>],
    dirty: &[Arc<LogSegment>],
    range: &Cleanable,
    map: &mut OffsetMap,
    opts: &CleanOptions<'_>,
    stats: &mut CleanStats,
) -> Result<(), LogError> {
    map.clear();
    let start = range.first_dirty;
    let mut txns = CleanedTransactions::new(log.aborted_txns_between(start, range.first_uncleanable));
    for segment in dirty {
        let next_start = next_base(all, segment).min(range.first_uncleanable);
        let from = segment.position_of(start);
        let mut batches = SegmentBatches::new(segment, from, opts.io_buffer);
        while let Some((batch, h, read)) = batches.next_batch()? {
            (opts.throttle)(read);
            if opts.abort.load(Ordering::Acquire) || !log.is_open() {
                return Ok(());
            }
            if h.is_control() {
                txns.on_control(&h, TxnMarker::parse(&h, &batch));
            } else if !txns.on_batch(&h) {
                let plain =
                    decompress(codec(h.compression())?, &batch.slice(BATCH_HEADER_SIZE..)).map_err(|e| {
                        LogError::CorruptRecord(format!(
                            "cannot decompress a batch at offset {}: {e}",
                            h.base_offset()
                        ))
                    })?;
                let mut reader = Reader::new(&plain);
                while !reader.at_end() {
                    let record = reader.record()?;
                    let offset = h.base_offset() + i64::from(record.offset_delta);
                    if let (Some(key), true) = (record.key, offset >= start) {
                        if map.is_full() {
                            tracing::debug!(dir = %log.dir().display(), segment = segment.base_offset(), "offset map full: the segment is partly mapped");
                            return Ok(());
                        }
                        map.put(key, offset);
                    }
                }
            }
            if h.last_offset() >= start {
                map.update_latest_offset(h.last_offset());
            }
        }
        // Past gaps in the offsets: everything up to the next segment is mapped.
        map.update_latest_offset(next_start - 1);
    }
    stats.map_entries = map.len();
    Ok(())
}

/// Cleans one group of segments, which the log held up to `end`, into one `.cleaned` segment
/// and swaps it in; returns the replaced segments. `None` when the round must stop (aborted, or
/// the log changed under it).
fn clean_group(
    log: &PartitionLog,
    group: &[Arc<LogSegment>],
    end: i64,
    ctx: &FilterContext<'_>,
    txns: &mut CleanedTransactions,
    opts: &CleanOptions<'_>,
    stats: &mut CleanStats,
) -> Result<Option<DeletedSegments>, LogError> {
    let base = group[0].base_offset();
    let config = log.config();
    let mut out = CleanedSegment::create(log.dir(), base, config.index_interval_bytes)?;
    for (i, segment) in group.iter().enumerate() {
        let upper = group
            .get(i + 1)
            .map_or_else(|| segment.next_offset(), |n| n.base_offset());
        txns.add_aborted(log.aborted_txns_between(segment.base_offset(), upper));
        let mut batches = SegmentBatches::new(segment, 0, opts.io_buffer);
        while let Some((batch, h, read)) = batches.next_batch()? {
            (opts.throttle)(read);
            if opts.abort.load(Ordering::Acquire) || !log.is_open() {
                return Ok(None);
            }
            stats.bytes_read += batch.len() as u64;
            let outcome = filter_batch(ctx, txns, &batch, &h)?;
            stats.records_read += outcome.records_read;
            stats.records_kept += outcome.records_kept;
            let written = match &outcome.filtered {
                Filtered::Unchanged => out.append(&batch)?,
                Filtered::Rewritten(bytes) => out.append(bytes)?,
                Filtered::Dropped => 0,
            };
            for aborted in txns.take_retained_aborts() {
                out.append_aborted_txn(aborted)?;
            }
            stats.bytes_written += written;
            (opts.throttle)(written);
        }
    }
    // As Kafka: the cleaned segment keeps the last old one's modification time, which is
    // its age for retention when its batches carry no timestamp.
    let modified = group[group.len() - 1]
        .file()
        .metadata()
        .and_then(|m| m.modified())
        .ok();
    let cleaned = out.finish(modified)?;
    log.replace_segments(group, cleaned, end)
}

/// The producers whose last batch the cleaner must keep, from a producer table's entries.
pub(crate) fn last_records<'a>(
    entries: impl Iterator<Item = (i64, Option<i64>, i16)> + 'a,
) -> HashMap<i64, LastRecord> {
    entries
        .map(|(id, last_data_offset, producer_epoch)| {
            (
                id,
                LastRecord {
                    last_data_offset,
                    producer_epoch,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;

//! One partition's log: a directory of segments keyed by base offset, one writer at a time,
//! lock-free-ish readers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use super::batch::{rewrite_header, validate_produce_batch, BatchHeaders, BATCH_HEADER_SIZE};
use super::cleaner::segment_writer::CleanedFiles;
use super::cleaner::{last_records, swap, LastRecord};
use super::control::TxnMarker;
use super::flusher::FlushQueue;
use super::log_dir::{
    delete_segment_files, is_no_space, list_segments, read_log_start_checkpoint, sync_dir,
    take_segments_below, write_log_start_checkpoint, LogDirHealth,
};
use super::producer_state::{
    CompletedTxn, ProducerSnapshot, ProducerStateEntry, ProducerStateTable, SequenceCheck,
};
use super::recovery::{load_segment, LoadSpec};
use super::recovery_checkpoint::RecoveryHint;
use super::segment::{delete_segment_files_at, BatchInfo, LogSegment, SegmentRead, TimestampedBatch};
use super::txn_index::AbortedTxn;
use super::{LogConfig, LogError, RecordBatchHeader, TimestampType};

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The time stamped into the batch under LogAppendTime; -1 under CreateTime.
    pub log_append_time: i64,
    pub log_start_offset: i64,
    /// The append rolled the log: the caller owes a `flush_sealed`, off the writer lock.
    pub rolled: bool,
    /// A producer's retry of a batch already in the log: nothing was written, and the offsets
    /// (and, as Kafka answers it, `log_append_time`: the original's maxTimestamp) are the
    /// original's.
    pub duplicate: bool,
}

/// Batches returned by a fetch, with the partition state the response reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole v2 batches, as stored.
    pub records: Bytes,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// For a read_committed read: the aborted transactions overlapping `records`, oldest
    /// first, so the consumer can drop their records. Empty otherwise.
    pub aborted_transactions: Vec<AbortedTxn>,
    /// Set when nothing was read because the fetch offset is the high watermark (a consumer
    /// that has caught up): the high watermark's place, from which a waiting fetch counts the
    /// bytes appended since.
    pub caught_up_at: Option<LogPosition>,
}

/// Segments retention took out of a log, their files renamed `.deleted`, to be removed after
/// `delay_ms` (`file.delete.delay.ms`) so that a fetch still reading one finds its file.
#[must_use = "the renamed files stay until `remove` is called"]
pub struct DeletedSegments {
    dir: PathBuf,
    segments: Vec<Arc<LogSegment>>,
    delay_ms: u64,
}

impl DeletedSegments {
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The bytes the deleted segments held.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size()).sum()
    }

    /// How long the files should stay before `remove`.
    pub fn delay_ms(&self) -> u64 {
        self.delay_ms
    }

    /// Removes the renamed files.
    pub fn remove(self) -> Result<(), LogError> {
        for s in &self.segments {
            s.remove_deleted_files()?;
        }
        if !self.segments.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// An offset with its place in the log: the segment it lies in and its byte position there
/// (Kafka's LogOffsetMetadata). The high watermark is kept as one, so readers bound reads by
/// position and a waiting fetch counts new bytes without reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    pub offset: i64,
    pub segment_base: i64,
    pub position: u64,
}

impl LogPosition {
    /// The bytes from `self` to `later` when both lie in one segment; `None` when they do not
    /// (a roll in between, or the log was truncated), which Kafka's delayed fetch takes as
    /// enough to read again.
    pub fn bytes_until(&self, later: &LogPosition) -> Option<u64> {
        (self.segment_base == later.segment_base).then(|| later.position.saturating_sub(self.position))
    }
}

struct Writer {
    active: Arc<LogSegment>,
    /// Idempotent producers' sequences, checked and advanced with each append.
    producers: ProducerStateTable,
}

/// A partition's log. `Send + Sync`; share it behind an `Arc`. Appends are serialised by an
/// internal lock; reads, flushes and offset queries never wait for an append's I/O.
pub struct PartitionLog {
    dir: PathBuf,
    config: RwLock<LogConfig>,
    writer: Mutex<Writer>,
    segments: RwLock<BTreeMap<i64, Arc<LogSegment>>>,
    high_watermark: RwLock<LogPosition>,
    hw_offset: AtomicI64,
    log_end_offset: AtomicI64,
    log_start_offset: AtomicI64,
    /// The last stable offset: below it every transaction is decided (the high watermark when
    /// none is open). read_committed consumers read up to it.
    last_stable_offset: AtomicI64,
    /// Every offset below this is on stable storage.
    recovery_point: AtomicI64,
    deleted: AtomicBool,
    /// fsyncs of segment data made to advance the recovery point, so tests can prove an
    /// acknowledgement was preceded by one.
    data_syncs: AtomicU64,
    /// Segments a roll sealed whose files `flush_sealed` has not yet made durable.
    sealed_unflushed: Mutex<Vec<Arc<LogSegment>>>,
    /// The producer state as of the last roll's offset, for the caller to store once the
    /// sealed segments are durable (`take_roll_snapshot`).
    roll_snapshot: Mutex<Option<ProducerSnapshot>>,
    /// The health of the log directory this partition lives in, shared with its neighbours.
    health: Arc<LogDirHealth>,
    /// acks=-1 produces waiting for an fsync of this log (the `Flusher`'s per-log queue).
    flush_queue: FlushQueue,
    /// Serialises what takes segments out of the map (retention, DeleteRecords, truncation, the
    /// cleaner's swap), so the cleaner's checks that its segments are still the log's hold
    /// through its swap. Taken before the writer lock, never by produce or fetch.
    maintenance: Mutex<()>,
    /// Woken whenever what a reader may see moves (the high watermark, the last stable
    /// offset, a truncation): a long-polling fetch waits on the partitions it asked for only.
    progress: tokio::sync::Notify,
    /// Tests make the next fsyncs of this log fail, as a dying disk's would.
    #[cfg(test)]
    failing_fsyncs: AtomicBool,
    /// Tests make this log's disk slow: every append waits this long, holding the writer lock
    /// as a slow write would.
    #[cfg(test)]
    slow_disk: Mutex<std::time::Duration>,
    /// Tests make this log's fsyncs slow: each `flush_until` waits this long before its fsyncs.
    #[cfg(test)]
    slow_fsync: Mutex<std::time::Duration>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl PartitionLog {
    /// Opens (creating if needed) the partition directory `dir` and recovers its segments:
    /// after any crash, no partial or corrupt batch survives and the log end offset follows
    /// the last valid batch.
    pub fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, LogError> {
        let health = LogDirHealth::new(dir.parent().unwrap_or(dir));
        PartitionLog::open_in(dir, config, health, Vec::new())
    }

    /// `open` for a partition of a log directory whose health its partitions share. The
    /// producer state starts from the newest of `snapshots` that the recovered log reaches
    /// (none: from the log start) and replays the batch headers after it.
    pub fn open_in(
        dir: &Path,
        config: LogConfig,
        health: Arc<LogDirHealth>,
        snapshots: Vec<ProducerSnapshot>,
    ) -> Result<PartitionLog, LogError> {
        PartitionLog::open_recovering(dir, config, health, snapshots, RecoveryHint::default())
    }

    /// `open_in` knowing how the last run ended (`hint`): after a clean shutdown nothing is
    /// scanned; after a crash with a checkpointed recovery point, only the segments from it on
    /// are, and one of those that lost its tail takes the segments after it along (nothing
    /// there was acknowledged: an fsync makes a prefix of the log durable), as Kafka's
    /// recovery does. Without a checkpoint, sealed segments with sound indexes are trusted,
    /// the active one scanned, and a damaged sealed segment keeps the ones after it.
    pub fn open_recovering(
        dir: &Path,
        config: LogConfig,
        health: Arc<LogDirHealth>,
        snapshots: Vec<ProducerSnapshot>,
        hint: RecoveryHint,
    ) -> Result<PartitionLog, LogError> {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        // A cleaning a stop interrupted is completed or undone before the segments are listed.
        super::cleaner::swap::finish_interrupted(dir)?;
        let mut bases = list_segments(dir)?;
        let now_ms = crate::clock::now_ms();
        let mut segments = BTreeMap::new();
        let mut i = 0;
        while let Some(&base_offset) = bases.get(i) {
            let next_base = bases.get(i + 1).copied();
            let flushed = match (next_base, hint.recovery_point) {
                _ if hint.clean_shutdown => true,
                (Some(next), Some(rp)) => next <= rp,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let spec = LoadSpec {
                dir,
                base_offset,
                offset_limit: next_base,
                index_interval: config.index_interval_bytes,
                now_ms,
                trust_index: flushed,
                recovery_point: hint.recovery_point,
            };
            let file_size = std::fs::metadata(super::segment::segment_file(dir, base_offset, "log"))
                .map_or(0, |m| m.len());
            let segment = load_segment(&spec)?;
            if let Some(next) = next_base {
                // A scan that cut bytes off: a torn tail. (Offsets alone cannot tell: a cleaned
                // segment ends below the next one's base.)
                if !flushed && segment.size() < file_size {
                    tracing::warn!(
                        dir = %dir.display(),
                        segment = base_offset,
                        ends_at = segment.next_offset(),
                        next_segment = next,
                        deleted_segments = bases.len() - i - 1,
                        "a segment after the recovery point lost its tail: deleting the segments after it"
                    );
                    drop(segment);
                    for &later in &bases[i + 1..] {
                        delete_segment_files_at(dir, later)?;
                    }
                    sync_dir(dir)?;
                    bases.truncate(i + 1);
                    // Reloaded as the active segment.
                    continue;
                }
            }
            segments.insert(base_offset, Arc::new(segment));
            i += 1;
        }
        let active = match segments.last_key_value() {
            Some((_, s)) => Arc::clone(s),
            None => {
                let s = Arc::new(LogSegment::create(dir, 0)?);
                sync_dir(dir)?;
                segments.insert(0, Arc::clone(&s));
                s
            }
        };
        // What survived an unclean stop may sit only in the page cache; make it durable so the
        // recovery point below is true.
        super::durable::sync_data(&active.file())?;
        let log_end = active.next_offset();
        let first_base = segments.keys().next().copied().unwrap_or(0);
        let checkpoint = read_log_start_checkpoint(dir)?;
        let log_start = checkpoint.map_or(first_base, |c| c.clamp(first_base, log_end));
        // Segments wholly below the log start are what a crash left of a deletion.
        delete_segment_files(dir, &take_segments_below(&mut segments, log_start))?;
        let hw = LogPosition {
            offset: log_end,
            segment_base: active.base_offset(),
            position: active.size(),
        };
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            config: RwLock::new(config),
            writer: Mutex::new(Writer {
                active,
                producers: ProducerStateTable::default(),
            }),
            segments: RwLock::new(segments),
            high_watermark: RwLock::new(hw),
            hw_offset: AtomicI64::new(log_end),
            log_end_offset: AtomicI64::new(log_end),
            log_start_offset: AtomicI64::new(log_start),
            last_stable_offset: AtomicI64::new(log_end),
            recovery_point: AtomicI64::new(log_end),
            deleted: AtomicBool::new(false),
            data_syncs: AtomicU64::new(0),
            sealed_unflushed: Mutex::new(Vec::new()),
            roll_snapshot: Mutex::new(None),
            health,
            flush_queue: FlushQueue::default(),
            maintenance: Mutex::new(()),
            progress: tokio::sync::Notify::new(),
            #[cfg(test)]
            failing_fsyncs: AtomicBool::new(false),
            #[cfg(test)]
            slow_disk: Mutex::new(std::time::Duration::ZERO),
            #[cfg(test)]
            slow_fsync: Mutex::new(std::time::Duration::ZERO),
        };
        // Records were deleted up to an offset the log no longer reaches (a crash lost
        // unflushed acks=1 data above it): start over empty there, as Kafka's loader does, so
        // new records never reuse offsets the checkpoint says are gone.
        if let Some(c) = checkpoint.filter(|&c| c > log_end) {
            tracing::warn!(dir = %dir.display(), log_end, log_start_offset = c, "log ends below its log start offset; restarting it empty there");
            log.truncate_fully(c)?;
        } else {
            log.load_producer_state(snapshots)?;
        }
        Ok(log)
    }

    /// Rebuilds the producer state: the newest snapshot not beyond the log end (one beyond it
    /// describes acks=1 data a crash took back), then every batch header after it, trusted as
    /// written (no sequence checks, as Kafka replays its log).
    fn load_producer_state(&self, snapshots: Vec<ProducerSnapshot>) -> Result<(), LogError> {
        let log_end = self.log_end_offset();
        let snapshot = snapshots
            .into_iter()
            .filter(|s| s.offset <= log_end)
            .max_by_key(|s| s.offset);
        let (mut table, from) = match snapshot {
            Some(s) => (s.table, s.offset),
            None => (ProducerStateTable::default(), self.log_start_offset()),
        };
        let started = std::time::Instant::now();
        let mut replayed = 0u64;
        let segments: Vec<Arc<LogSegment>> = {
            let segments = read(&self.segments);
            let first = segments.range(..=from).next_back().map_or(i64::MIN, |(b, _)| *b);
            segments.range(first..).map(|(_, s)| Arc::clone(s)).collect()
        };
        for segment in segments {
            // The aborted transactions from `from` on are written again as the markers are
            // replayed: what a crash left of them cannot be trusted.
            segment.truncate_txn_index_from(from)?;
            segment.for_each_batch_from(from, |h, control| {
                replayed += 1;
                match control.and_then(|bytes| TxnMarker::parse(h, bytes)) {
                    Some(marker) => {
                        let completed = table.record_marker(&marker, h.base_offset(), h.max_timestamp());
                        completed.map_or(Ok(()), |c| index_if_aborted(&segment, &table, c))
                    }
                    None if h.is_control() => Ok(()),
                    None => {
                        table.record(h);
                        Ok(())
                    }
                }
            })?;
        }
        if replayed > 0 || !table.is_empty() {
            tracing::debug!(dir = %self.dir.display(), from, batches = replayed, producers = table.len(), elapsed_ms = started.elapsed().as_millis() as u64, "producer state loaded");
        }
        let mut writer = lock(&self.writer);
        writer.producers = table;
        self.update_last_stable_offset(&writer);
        Ok(())
    }

    /// Moves the high watermark forward to `hw` (never back).
    fn advance_high_watermark(&self, hw: LogPosition) {
        let mut current = write(&self.high_watermark);
        if hw.offset > current.offset {
            *current = hw;
            self.hw_offset.store(hw.offset, Ordering::Release);
            drop(current);
            self.progress.notify_waiters();
        }
    }

    /// Starts writing the active segment's new bytes to disk without waiting
    /// (`LogSegment::start_writeback`). Called after an append, outside the writer lock.
    pub fn start_writeback(&self) {
        let active = read(&self.segments).values().next_back().cloned();
        if let Some(active) = active {
            active.start_writeback();
        }
    }

    /// The high watermark with its place in the log.
    pub fn high_watermark_position(&self) -> LogPosition {
        *read(&self.high_watermark)
    }

    /// Resolves when what readers may see next moves. Register (enable) it before checking the
    /// log, so a move between the check and the wait is not missed.
    pub fn progressed(&self) -> tokio::sync::futures::Notified<'_> {
        self.progress.notified()
    }

    /// Recomputes the last stable offset after the open transactions or the high watermark
    /// changed: the first open transaction's first offset, bounded by the high watermark and
    /// never below the log start.
    fn update_last_stable_offset(&self, writer: &Writer) {
        let hw = self.high_watermark();
        let lso = writer
            .producers
            .first_unstable_offset()
            .map_or(hw, |first| first.min(hw))
            .max(self.log_start_offset());
        if self.last_stable_offset.swap(lso, Ordering::AcqRel) != lso {
            self.progress.notify_waiters();
        }
    }

    pub fn last_stable_offset(&self) -> i64 {
        self.last_stable_offset.load(Ordering::Acquire)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        *read(&self.config)
    }

    /// Applies a topic config change; it takes effect from the next append.
    pub fn set_config(&self, config: LogConfig) {
        *write(&self.config) = config;
    }

    pub fn high_watermark(&self) -> i64 {
        self.hw_offset.load(Ordering::Acquire)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// Offsets below this are durable.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point.load(Ordering::Acquire)
    }

    /// Makes every later append take `delay` longer (a slow disk), for tests.
    #[cfg(test)]
    pub(crate) fn make_disk_slow(&self, delay: std::time::Duration) {
        *lock(&self.slow_disk) = delay;
    }

    /// How many fsyncs of segment data advanced the recovery point since open.
    pub fn data_syncs(&self) -> u64 {
        self.data_syncs.load(Ordering::Relaxed)
    }

    fn check_open(&self) -> Result<(), LogError> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(LogError::Closed(format!("{} was deleted", self.dir.display())));
        }
        self.health.check()
    }

    /// An I/O error writing or syncing this log takes its directory offline; the error is
    /// passed on.
    fn on_io_error<T>(&self, what: &str, result: Result<T, LogError>) -> Result<T, LogError> {
        if let Err(LogError::Io(e)) = &result {
            self.health.take_offline(what, e);
        }
        result
    }

    /// A failed write (not an fsync): for want of space, the directory is marked full and the
    /// error becomes `NoSpace` (nothing was written: the segment was cut back); any other error
    /// takes the directory offline.
    fn on_write_error<T>(&self, what: &str, result: Result<T, LogError>) -> Result<T, LogError> {
        match &result {
            Err(LogError::Io(e)) if is_no_space(e) => {
                self.health.mark_full(what, e);
                Err(LogError::NoSpace(format!(
                    "{what} in {}: {e}",
                    self.dir.display()
                )))
            }
            _ => self.on_io_error(what, result),
        }
    }

    /// Makes the next fsyncs of this log fail, for tests.
    #[cfg(test)]
    pub(crate) fn make_fsync_slow(&self, delay: std::time::Duration) {
        *lock(&self.slow_fsync) = delay;
    }

    /// At a clean shutdown, after the final flush: the active segment's index entries go to
    /// disk too, so the next start trusts them instead of scanning the segment.
    pub fn persist_active_indexes(&self) -> Result<(), LogError> {
        let active = Arc::clone(&lock(&self.writer).active);
        active.persist_indexes().map_err(LogError::from)
    }

    /// The acks=-1 produces waiting for this log's next fsync.
    pub(super) fn flush_queue(&self) -> &FlushQueue {
        &self.flush_queue
    }

    #[cfg(test)]
    pub(crate) fn fail_fsyncs(&self) {
        self.failing_fsyncs.store(true, Ordering::Release);
    }

    /// Appends one produced v2 batch (validated here) at the log end offset. The stored header
    /// gets the assigned base offset and the configured leader epoch, and under LogAppendTime
    /// the timestamp type bit and `now_ms` as maxTimestamp (with a recomputed CRC), as Kafka
    /// does. The records are written as received, never copied or decoded.
    pub fn append(&self, batch: &[u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        let header = validate_produce_batch(batch)?;
        self.append_validated(batch, &header, now_ms)
    }

    /// `append` for a batch whose header and CRC the caller has checked already
    /// (`validate_produce_batch` gave `header`), so the CRC is computed once per produce.
    pub fn append_validated(
        &self,
        batch: &[u8],
        header: &RecordBatchHeader,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.append_checked(batch, header, now_ms, |_| Ok(()))
    }

    /// `append_validated` with a check of a transactional batch against its transaction, run
    /// under the writer lock after the duplicate check and before anything is written, so no
    /// marker can come between the check and the append.
    pub fn append_checked<E: From<LogError>>(
        &self,
        batch: &[u8],
        header: &RecordBatchHeader,
        now_ms: i64,
        check_transaction: impl FnOnce(&RecordBatchHeader) -> Result<(), E>,
    ) -> Result<AppendInfo, E> {
        let config = self.config();
        if batch.len() > config.max_message_bytes {
            return Err(LogError::MessageTooLarge {
                size: batch.len(),
                max: config.max_message_bytes,
            }
            .into());
        }
        let mut writer = lock(&self.writer);
        #[cfg(test)]
        std::thread::sleep(*lock(&self.slow_disk));
        self.check_open()?;
        let base_offset = self.log_end_offset.load(Ordering::Acquire);
        let check = writer.producers.check(header, base_offset)?;
        if let SequenceCheck::Duplicate(original) = check {
            return Ok(AppendInfo {
                base_offset: original.first_offset(),
                last_offset: original.last_offset,
                log_append_time: original.timestamp,
                log_start_offset: self.log_start_offset(),
                rolled: false,
                duplicate: true,
            });
        }
        if header.is_transactional() {
            check_transaction(header)?;
        }
        let append_time = (config.timestamp_type == TimestampType::LogAppendTime).then_some(now_ms);
        let (info, stored) = self.write_batch(&mut writer, batch, header, append_time, now_ms, &config)?;
        if header.producer_id() >= 0 {
            writer.producers.record(&RecordBatchHeader::parse(&stored)?);
        }
        self.update_last_stable_offset(&writer);
        Ok(info)
    }

    /// Writes a transaction marker (the coordinator's COMMIT or ABORT control batch) at the log
    /// end: the producer's transaction here ends, the last stable offset moves on, and an
    /// aborted transaction that wrote here goes into the segment's aborted-transaction index.
    pub fn append_marker(&self, marker: &TxnMarker, now_ms: i64) -> Result<AppendInfo, LogError> {
        let batch = marker.batch(now_ms);
        let header = RecordBatchHeader::parse(&batch)?;
        let config = self.config();
        let mut writer = lock(&self.writer);
        self.check_open()?;
        writer.producers.check_marker(marker)?;
        let (info, _) = self.write_batch(&mut writer, &batch, &header, None, now_ms, &config)?;
        let completed = writer.producers.record_marker(marker, info.base_offset, now_ms);
        if let Some(c) = completed {
            let indexed = index_if_aborted(&writer.active, &writer.producers, c);
            self.on_write_error("transaction index append", indexed)?;
        }
        self.update_last_stable_offset(&writer);
        Ok(info)
    }

    /// Writes one batch at the log end (rolling first if it is due) and moves the log end and
    /// the high watermark past it. Returns where it went and its stored header.
    fn write_batch(
        &self,
        writer: &mut Writer,
        batch: &[u8],
        header: &RecordBatchHeader,
        append_time: Option<i64>,
        now_ms: i64,
        config: &LogConfig,
    ) -> Result<(AppendInfo, [u8; BATCH_HEADER_SIZE]), LogError> {
        let base_offset = self.log_end_offset.load(Ordering::Acquire);
        let last_offset = base_offset + i64::from(header.last_offset_delta());
        let rolled = self.should_roll(&writer.active, batch.len() as u64, last_offset, now_ms, config);
        if rolled {
            self.on_write_error("segment roll", self.roll(writer, base_offset))?;
        }
        let stored = rewrite_header(batch, base_offset, config.leader_epoch, append_time);
        let info = BatchInfo {
            last_offset,
            max_timestamp: append_time.unwrap_or(header.max_timestamp()),
            size: batch.len() as u64,
        };
        let active = &writer.active;
        let written = active.append(
            &stored,
            &batch[BATCH_HEADER_SIZE..],
            info,
            now_ms,
            config.index_interval_bytes,
        );
        self.on_write_error("append", written)?;
        self.log_end_offset.store(last_offset + 1, Ordering::Release);
        // A single node commits on append: without the flush-before-visible policy the high
        // watermark follows the log end; with it, `flush_until` moves it once the data is
        // durable.
        if !config.flush_before_visible {
            self.advance_high_watermark(LogPosition {
                offset: last_offset + 1,
                segment_base: active.base_offset(),
                position: active.size(),
            });
        }
        let info = AppendInfo {
            base_offset,
            last_offset,
            log_append_time: append_time.unwrap_or(-1),
            log_start_offset: self.log_start_offset(),
            rolled,
            duplicate: false,
        };
        Ok((info, stored))
    }

    fn should_roll(
        &self,
        active: &LogSegment,
        batch_size: u64,
        last_offset: i64,
        now_ms: i64,
        config: &LogConfig,
    ) -> bool {
        active.size() > 0
            && (active.size() + batch_size > config.effective_segment_bytes()
                || active
                    .rolling_ts()
                    .is_some_and(|t| now_ms.saturating_sub(t) > config.roll_ms(active.base_offset()))
                || last_offset - active.base_offset() > i64::from(i32::MAX))
    }

    /// Seals the active segment and starts a new one. The sealed segment's fsync (up to a whole
    /// segment) is not done here, under the writer lock, but by `flush_sealed` after it.
    fn roll(&self, writer: &mut Writer, base_offset: i64) -> Result<(), LogError> {
        // The state as of the new segment's base: every batch below it and none after.
        *lock(&self.roll_snapshot) = Some(writer.producers.snapshot(base_offset));
        writer.active.seal();
        let segment = Arc::new(LogSegment::create(&self.dir, base_offset)?);
        sync_dir(&self.dir)?;
        write(&self.segments).insert(base_offset, Arc::clone(&segment));
        lock(&self.sealed_unflushed).push(std::mem::replace(&mut writer.active, segment));
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled log segment");
        Ok(())
    }

    /// Makes the segments sealed by rolls durable, data then indexes, so that recovery can
    /// trust them, and moves the recovery point past them. Called after an append that rolled,
    /// without the writer lock, so producers keep appending meanwhile.
    pub fn flush_sealed(&self) -> Result<(), LogError> {
        let sealed = std::mem::take(&mut *lock(&self.sealed_unflushed));
        let Some(end) = sealed.iter().map(|s| s.next_offset()).max() else {
            return Ok(());
        };
        for (i, segment) in sealed.iter().enumerate() {
            // A segment deleted (DeleteRecords) or replaced (the cleaner) meanwhile must not get
            // its index files back.
            if !read(&self.segments)
                .get(&segment.base_offset())
                .is_some_and(|s| Arc::ptr_eq(s, segment))
            {
                continue;
            }
            // Data first: a failed fsync is never retried (the directory goes offline); a
            // failed index write for want of space is, at the next call.
            let synced = super::durable::sync_data(&segment.file()).map_err(LogError::from);
            let flushed = self.on_io_error("sealed segment fsync", synced).and_then(|()| {
                let indexed = segment.flush_indexes().map_err(LogError::from);
                self.on_write_error("sealed segment index flush", indexed)
            });
            if let Err(e) = flushed {
                // Left for the next call: never counted as durable.
                lock(&self.sealed_unflushed).extend(sealed[i..].iter().cloned());
                return Err(e);
            }
        }
        self.flush_until(end)
    }

    /// The producer state as of the last roll, once: the caller stores it after
    /// `flush_sealed` made the segments below its offset durable, so a stored snapshot never
    /// describes data a crash can take back.
    pub fn take_roll_snapshot(&self) -> Option<ProducerSnapshot> {
        lock(&self.roll_snapshot).take()
    }

    /// The producer state as of the log end (for a snapshot at clean shutdown, after the
    /// final flush).
    pub fn producer_snapshot(&self) -> ProducerSnapshot {
        let writer = lock(&self.writer);
        writer.producers.snapshot(self.log_end_offset())
    }

    /// The producers this partition knows (DescribeProducers), in producer id order.
    pub fn producers(&self) -> Vec<ProducerStateEntry> {
        let mut entries: Vec<_> = lock(&self.writer).producers.entries().cloned().collect();
        entries.sort_by_key(|e| e.producer_id);
        entries
    }

    /// Drops the producers idle for `max_idle_ms` (`producer.id.expiration.ms`); returns how
    /// many went.
    pub fn remove_expired_producers(&self, now_ms: i64, max_idle_ms: i64) -> usize {
        lock(&self.writer).producers.remove_expired(now_ms, max_idle_ms)
    }

    /// The segment holding `offset` (the last with a base offset <= it), or the first one.
    fn floor_segment(&self, offset: i64) -> Option<Arc<LogSegment>> {
        let segments = read(&self.segments);
        segments
            .range(..=offset)
            .next_back()
            .or_else(|| segments.iter().next())
            .map(|(_, s)| Arc::clone(s))
    }

    fn next_segment(&self, after: &LogSegment) -> Option<Arc<LogSegment>> {
        read(&self.segments)
            .range(after.base_offset() + 1..)
            .next()
            .map(|(_, s)| Arc::clone(s))
    }

    /// How far a reader may read in `segment`: the high watermark's position in its own
    /// segment, the whole of an earlier (sealed) one.
    fn read_limit(segment: &LogSegment, hw: &LogPosition) -> Option<u64> {
        use std::cmp::Ordering::*;
        match segment.base_offset().cmp(&hw.segment_base) {
            Less => Some(segment.size()),
            Equal => Some(hw.position),
            Greater => None,
        }
    }

    /// Reads whole batches starting with the one containing `fetch_offset`, at most
    /// `max_bytes` of them unless `min_one_batch` lets a larger first batch through (Kafka's
    /// rule for the first partition of a fetch), never past the high watermark. Returns data
    /// from one segment only; the client fetches again for more. `fetch_offset` equal to the
    /// high watermark gives empty records.
    pub fn read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadResult, LogError> {
        self.check_open()?;
        let hw = *read(&self.high_watermark);
        let log_start = self.log_start_offset();
        let log_end = self.log_end_offset();
        if fetch_offset < log_start || fetch_offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset: fetch_offset,
                log_start,
                log_end,
            });
        }
        let result = |records| ReadResult {
            records,
            high_watermark: hw.offset,
            last_stable_offset: self.last_stable_offset(),
            log_start_offset: log_start,
            aborted_transactions: Vec::new(),
            caught_up_at: None,
        };
        if fetch_offset >= hw.offset {
            return Ok(ReadResult {
                caught_up_at: (fetch_offset == hw.offset).then_some(hw),
                ..result(Bytes::new())
            });
        }
        let mut next = self.floor_segment(fetch_offset);
        while let Some(segment) = next {
            let Some(max_pos) = Self::read_limit(&segment, &hw) else {
                break;
            };
            match segment.read(fetch_offset, max_pos, max_bytes, min_one_batch)? {
                SegmentRead::Batches(records) => return Ok(result(records)),
                // Offsets may have gaps, so the next batch can live in a later segment.
                SegmentRead::NotHere => next = self.next_segment(&segment),
            }
        }
        Ok(result(Bytes::new()))
    }

    /// `read` for a read_committed consumer: nothing at or past the last stable offset, and the
    /// aborted transactions overlapping the batches returned (Kafka's
    /// `collectAbortedTransactions`, from the segments' `.txnindex`).
    pub fn read_committed(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadResult, LogError> {
        let lso = self.last_stable_offset();
        let mut result = self.read(fetch_offset, max_bytes, min_one_batch)?;
        result.last_stable_offset = lso;
        // The last stable offset is the first offset of a batch (an open transaction's first)
        // or the high watermark, so whole batches below it are exactly what may be returned.
        let mut end = fetch_offset;
        let mut keep = 0;
        for (pos, h) in BatchHeaders::new(&result.records) {
            if h.base_offset() >= lso {
                break;
            }
            keep = pos + h.size();
            end = h.last_offset() + 1;
        }
        result.records.truncate(keep);
        if keep > 0 {
            let mut next = self.floor_segment(fetch_offset);
            while let Some(segment) = next {
                if segment.collect_aborted_txns(fetch_offset, end, &mut result.aborted_transactions) {
                    break;
                }
                next = self.next_segment(&segment);
            }
        }
        Ok(result)
    }

    /// The first batch below the high watermark, holding records at or after both the log start
    /// and `from_offset`, whose maxTimestamp is >= `timestamp`; `None` if there is none. This is
    /// batch precision: the caller narrows it to the first record with timestamp >= `timestamp`
    /// by decoding that batch, and searches on from the batch's end when none of its records
    /// at or after the log start qualifies.
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
        from_offset: i64,
    ) -> Result<Option<TimestampedBatch>, LogError> {
        self.check_open()?;
        let hw = *read(&self.high_watermark);
        let min_offset = self.log_start_offset().max(from_offset);
        let mut next = self.floor_segment(min_offset);
        while let Some(segment) = next {
            let Some(max_pos) = Self::read_limit(&segment, &hw) else {
                break;
            };
            if segment.max_timestamp().is_some_and(|(max, _)| max >= timestamp) {
                if let Some(found) = segment.find_by_timestamp(timestamp, min_offset, max_pos)? {
                    return Ok(Some(found));
                }
            }
            next = self.next_segment(&segment);
        }
        Ok(None)
    }

    /// The largest batch maxTimestamp in the log, as (offset, timestamp), for ListOffsets'
    /// MAX_TIMESTAMP. The offset is the last offset of the first batch carrying that timestamp
    /// (Kafka's shallow offset); the caller may narrow it to the record. `None` for an empty log.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let segments = read(&self.segments);
        let mut best: Option<(i64, i64)> = None;
        for segment in segments.values() {
            if let Some((ts, offset)) = segment.max_timestamp() {
                if best.is_none_or(|(best_ts, _)| ts > best_ts) {
                    best = Some((ts, offset));
                }
            }
        }
        best.map(|(ts, offset)| (offset, ts))
    }

    /// Makes every offset below `offset` (or the whole log, if it is shorter) durable. An
    /// already durable offset costs no syscall. The fsync runs without the append lock, so
    /// producers keep appending meanwhile. The active segment's index files are not synced:
    /// they are rebuilt from the log on every open.
    pub fn flush_until(&self, offset: i64) -> Result<(), LogError> {
        let recovery_point = self.recovery_point();
        if offset <= recovery_point {
            return Ok(());
        }
        self.check_open()?;
        // The log end and its place in the active segment, read together under the writer
        // lock: what this flush makes durable, and so where the high watermark may then go.
        let (active, durable_hw) = {
            let writer = lock(&self.writer);
            let active = Arc::clone(&writer.active);
            let hw = LogPosition {
                offset: self.log_end_offset(),
                segment_base: active.base_offset(),
                position: active.size(),
            };
            (active, hw)
        };
        let log_end = durable_hw.offset;
        if log_end <= recovery_point {
            return Ok(());
        }
        // Sealed segments still holding offsets above the recovery point: a roll whose
        // `flush_sealed` has not finished yet. Their data is made durable here too.
        let sealed: Vec<Arc<LogSegment>> = read(&self.segments)
            .range(..active.base_offset())
            .rev()
            .take_while(|(_, s)| s.next_offset() > recovery_point)
            .map(|(_, s)| Arc::clone(s))
            .collect();
        // A slow disk's fsync: what it covers was decided above, before the wait.
        #[cfg(test)]
        std::thread::sleep(*lock(&self.slow_fsync));
        for segment in sealed.iter().chain(std::iter::once(&active)) {
            #[cfg(test)]
            if self.failing_fsyncs.load(Ordering::Acquire) {
                let injected = Err(std::io::Error::other("injected fsync failure").into());
                return self.on_io_error("fsync", injected);
            }
            let synced = super::durable::sync_data(&segment.file()).map_err(LogError::from);
            self.on_io_error("fsync", synced)?;
            self.data_syncs.fetch_add(1, Ordering::Relaxed);
            let index_synced = segment.flush_txn_index().map_err(LogError::from);
            self.on_io_error("transaction index fsync", index_synced)?;
        }
        self.recovery_point.fetch_max(log_end, Ordering::AcqRel);
        if read(&self.config).flush_before_visible {
            let writer = lock(&self.writer);
            self.advance_high_watermark(durable_hw);
            self.update_last_stable_offset(&writer);
        }
        Ok(())
    }

    /// Advances the log start offset to `offset` (Kafka's DeleteRecords): records below it can
    /// no longer be read, and segments wholly below it are deleted. The new start is made
    /// durable before it takes effect. `offset` above the high watermark is out of range; one
    /// below the current start changes nothing. Returns the log start offset afterwards.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        let _maintenance = lock(&self.maintenance);
        let writer = lock(&self.writer);
        self.check_open()?;
        let hw = self.high_watermark();
        let current = self.log_start_offset();
        if offset < 0 || offset > hw {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: current,
                log_end: hw,
            });
        }
        if offset <= current {
            return Ok(current);
        }
        write_log_start_checkpoint(&self.dir, offset)?;
        self.log_start_offset.store(offset, Ordering::Release);
        self.update_last_stable_offset(&writer);
        // Out of the map first (readers stop finding them), then unlinked without the lock.
        let doomed = take_segments_below(&mut write(&self.segments), offset);
        delete_segment_files(&self.dir, &doomed)?;
        tracing::info!(dir = %self.dir.display(), log_start_offset = offset, "records deleted");
        Ok(offset)
    }

    /// The bytes of all its segments.
    pub fn size(&self) -> u64 {
        read(&self.segments).values().map(|s| s.size()).sum()
    }

    /// Kafka's `deleteOldSegments` for a log whose `cleanup.policy` includes `delete`: the
    /// oldest segments go while the log is larger than `retention.bytes`, then while their
    /// largest timestamp is more than `retention.ms` before `now_ms`. Only segments wholly
    /// below the high watermark go; when every segment would, the log rolls first, so an idle
    /// partition still ages out. The log start offset moves to the first remaining segment
    /// (durably, before anything is removed). The deleted segments' files are renamed
    /// `.deleted`; the caller removes them after `file.delete.delay.ms`
    /// (`DeletedSegments::remove`).
    pub fn delete_old_segments(&self, now_ms: i64) -> Result<DeletedSegments, LogError> {
        let config = self.config();
        let mut deleted = DeletedSegments {
            dir: self.dir.clone(),
            segments: Vec::new(),
            delay_ms: config.file_delete_delay_ms,
        };
        if !config.delete_retention {
            return Ok(deleted);
        }
        if config.retention_bytes >= 0 {
            let size = self.size() as i64;
            if size >= config.retention_bytes {
                let mut excess = size - config.retention_bytes;
                self.delete_segments_while(&mut deleted, "retention.bytes", |segment| {
                    let size = segment.size() as i64;
                    (excess - size >= 0).then(|| excess -= size).is_some()
                })?;
            }
        }
        if config.retention_ms >= 0 {
            self.delete_segments_while(&mut deleted, "retention.ms", |segment| {
                now_ms.saturating_sub(segment.largest_timestamp()) > config.retention_ms
            })?;
        }
        Ok(deleted)
    }

    /// The largest timestamp of the log's oldest closed segment (not the active one, wholly
    /// below the high watermark): what the broker-wide disk budget would delete next here.
    pub fn oldest_closed_segment(&self) -> Option<i64> {
        let first = {
            let segments = read(&self.segments);
            let mut it = segments.values();
            let first = Arc::clone(it.next()?);
            let next_base = it.next()?.base_offset();
            (next_base <= self.high_watermark()).then_some(first)?
        };
        Some(first.largest_timestamp())
    }

    /// Deletes the log's oldest closed segment (see `oldest_closed_segment`), for the
    /// broker-wide disk budget; never the active segment.
    pub fn delete_oldest_closed_segment(&self) -> Result<DeletedSegments, LogError> {
        let mut deleted = DeletedSegments {
            dir: self.dir.clone(),
            segments: Vec::new(),
            delay_ms: self.config().file_delete_delay_ms,
        };
        let active_base = lock(&self.writer).active.base_offset();
        let mut first = true;
        self.delete_segments_while(&mut deleted, "keel.log.dirs.max.bytes", |segment| {
            std::mem::take(&mut first) && segment.base_offset() != active_base
        })?;
        Ok(deleted)
    }

    /// Kafka's `deletableSegments` and `deleteSegments`: takes out the oldest segments while
    /// each lies wholly below the high watermark, is not the empty last one, and satisfies
    /// `breached`, in that order.
    fn delete_segments_while(
        &self,
        out: &mut DeletedSegments,
        reason: &str,
        mut breached: impl FnMut(&LogSegment) -> bool,
    ) -> Result<(), LogError> {
        // Chosen without the writer lock (timestamps may load a sealed segment's indexes), then
        // checked again under it.
        let candidates: Vec<Arc<LogSegment>> = read(&self.segments).values().cloned().collect();
        let (hw, log_end) = (self.high_watermark(), self.log_end_offset());
        let mut doomed = Vec::new();
        for (i, segment) in candidates.iter().enumerate() {
            let next = candidates.get(i + 1);
            let upper = next.map_or(log_end, |n| n.base_offset());
            let last_and_empty = next.is_none() && segment.size() == 0;
            if hw >= upper && breached(segment) && !last_and_empty {
                doomed.push(Arc::clone(segment));
            } else {
                break;
            }
        }
        if doomed.is_empty() {
            return Ok(());
        }
        let _maintenance = lock(&self.maintenance);
        let mut writer = lock(&self.writer);
        self.check_open()?;
        {
            let segments = read(&self.segments);
            // Another deletion got there first, or the cleaner replaced one of them (same base,
            // another segment): leave it to the next round.
            let first_is_first = segments.keys().next() == Some(&doomed[0].base_offset());
            let unchanged = doomed
                .iter()
                .all(|d| segments.get(&d.base_offset()).is_some_and(|s| Arc::ptr_eq(s, d)));
            if !first_is_first || !unchanged {
                return Ok(());
            }
        }
        if doomed.last().is_some_and(|s| Arc::ptr_eq(s, &writer.active)) {
            if writer.active.next_offset() != log_end {
                // Appends arrived since it was judged: the active segment stays.
                doomed.pop();
            } else {
                // Everything goes: roll, so that the log keeps an (empty) active segment. The
                // sealed segment is deleted, not flushed.
                let end = self.log_end_offset();
                self.roll(&mut writer, end)?;
                lock(&self.sealed_unflushed).retain(|s| !Arc::ptr_eq(s, &doomed[doomed.len() - 1]));
            }
        }
        let Some(last) = doomed.last() else {
            return Ok(());
        };
        let new_start = read(&self.segments)
            .range(last.base_offset() + 1..)
            .next()
            .map_or(self.log_end_offset(), |(base, _)| *base);
        if new_start > self.log_start_offset() {
            // Durable before any file goes, so a crash cannot bring records back below it.
            write_log_start_checkpoint(&self.dir, new_start)?;
            self.log_start_offset.store(new_start, Ordering::Release);
            self.update_last_stable_offset(&writer);
        }
        // Everything below the new start is gone, whether or not it was fsynced.
        self.recovery_point.fetch_max(new_start, Ordering::AcqRel);
        {
            let mut segments = write(&self.segments);
            for s in &doomed {
                segments.remove(&s.base_offset());
            }
        }
        drop(writer);
        for s in &doomed {
            s.rename_to_deleted()?;
        }
        sync_dir(&self.dir)?;
        tracing::info!(
            dir = %self.dir.display(),
            reason,
            segments = doomed.len(),
            log_start_offset = new_start,
            "deleted log segments past retention"
        );
        out.segments.extend(doomed);
        Ok(())
    }

    /// Removes every segment and restarts the log empty at `start_offset` (log start, end and
    /// high watermark all become `start_offset`).
    pub fn truncate_fully(&self, start_offset: i64) -> Result<(), LogError> {
        let _maintenance = lock(&self.maintenance);
        let mut writer = lock(&self.writer);
        self.check_open()?;
        // The new start is durable before any segment goes, so a crash in between cannot bring
        // back records below it.
        write_log_start_checkpoint(&self.dir, start_offset)?;
        let mut segments = write(&self.segments);
        let fresh = segments
            .values()
            .try_for_each(|s| s.delete_files())
            .and_then(|()| LogSegment::create(&self.dir, start_offset))
            .and_then(|s| sync_dir(&self.dir).map(|()| s));
        segments.clear();
        let segment = match fresh {
            Ok(s) => Arc::new(s),
            Err(e) => {
                // The directory no longer matches any consistent log: refuse further use.
                self.deleted.store(true, Ordering::Release);
                return Err(e.into());
            }
        };
        segments.insert(start_offset, Arc::clone(&segment));
        writer.active = segment;
        writer.producers.clear();
        lock(&self.roll_snapshot).take();
        *write(&self.high_watermark) = LogPosition {
            offset: start_offset,
            segment_base: start_offset,
            position: 0,
        };
        for a in [
            &self.log_start_offset,
            &self.log_end_offset,
            &self.hw_offset,
            &self.last_stable_offset,
            &self.recovery_point,
        ] {
            a.store(start_offset, Ordering::Release);
        }
        self.progress.notify_waiters();
        Ok(())
    }

    /// Deletes the partition directory (topic deletion). Afterwards every operation fails with
    /// `LogError::Closed`; reads already running finish on the unlinked files.
    pub fn delete(&self) -> Result<(), LogError> {
        if !self.retire() {
            return Ok(());
        }
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Stops serving: every later append, read and flush is refused (`Closed`), and the log
    /// forgets its segments; its files are left for the caller to move or remove. False when
    /// it was retired already.
    pub fn retire(&self) -> bool {
        // Not while the cleaner swaps segments in: it checks the log is open under this lock.
        let _maintenance = lock(&self.maintenance);
        let _writer = lock(&self.writer);
        if self.deleted.swap(true, Ordering::AcqRel) {
            return false;
        }
        write(&self.segments).clear();
        true
    }

    /// Whether the log still serves (not deleted or retired, its directory online).
    pub(crate) fn is_open(&self) -> bool {
        self.check_open().is_ok()
    }

    /// The base of the oldest sealed segment whose roll flush has not finished.
    pub(crate) fn first_unflushed_sealed_base(&self) -> Option<i64> {
        lock(&self.sealed_unflushed).iter().map(|s| s.base_offset()).min()
    }

    /// The log's segments, oldest first (the last is the active one).
    pub(crate) fn segments_list(&self) -> Vec<Arc<LogSegment>> {
        read(&self.segments).values().cloned().collect()
    }

    /// What the cleaner must keep of each producer (Kafka's `lastRecordsOfActiveProducers`).
    pub(crate) fn last_records_of_producers(&self) -> HashMap<i64, LastRecord> {
        let writer = lock(&self.writer);
        last_records(
            writer
                .producers
                .entries()
                .map(|e| (e.producer_id, e.batches().last().map(|b| b.last_offset), e.epoch)),
        )
    }

    /// Kafka's `collectAbortedTransactions`: the aborted transactions ending at or after
    /// `start` (and the log start) that began before `upper_bound`.
    pub(crate) fn aborted_txns_between(&self, start: i64, upper_bound: i64) -> Vec<AbortedTxn> {
        let log_start = self.log_start_offset();
        let mut out = Vec::new();
        let mut next = self.floor_segment(start);
        while let Some(segment) = next {
            if segment.collect_aborted_txns(start, upper_bound, &mut out) {
                break;
            }
            next = self.next_segment(&segment);
        }
        out.retain(|a| a.last_offset >= log_start);
        out
    }

    /// Swaps a cleaned segment in for `old`, the group it was cleaned from, which the log held
    /// up to `end` (see `cleaner::swap`). `None`, with the cleaned files removed, when the log
    /// no longer holds exactly those segments (retention or DeleteRecords took one meanwhile).
    /// The old segments come back renamed `.deleted`, for the caller to remove after
    /// `file.delete.delay.ms`.
    pub(crate) fn replace_segments(
        &self,
        old: &[Arc<LogSegment>],
        cleaned: CleanedFiles,
        end: i64,
    ) -> Result<Option<DeletedSegments>, LogError> {
        let base = cleaned.base_offset;
        let _maintenance = lock(&self.maintenance);
        let active_base = lock(&self.writer).active.base_offset();
        let still_ours = self.check_open().is_ok() && old.iter().all(|s| s.base_offset() < active_base) && {
            let segments = read(&self.segments);
            old.iter().all(|s| {
                segments
                    .get(&s.base_offset())
                    .is_some_and(|held| Arc::ptr_eq(held, s))
            })
        };
        if !still_ours {
            swap::abandon(&self.dir, base)?;
            return Ok(None);
        }
        // Before the commit a failure abandons the round (for want of space too: the next round
        // tries again); after it, the directory is in the middle of a swap that only a restart
        // completes, so it goes offline.
        if let Err(e) = swap::prepare(&self.dir, base, end).and_then(|()| swap::commit(&self.dir, base)) {
            let committed = swap::is_committed(&self.dir, base);
            if swap::is_test_stop(&e) {
                return Err(e.into());
            }
            if !committed {
                if let Err(undo) = swap::abandon(&self.dir, base) {
                    tracing::warn!(dir = %self.dir.display(), error = %undo, "cannot remove an abandoned cleaned segment");
                }
                return self.on_write_error("cleaned segment swap", Err(e.into()));
            }
            return self.on_io_error("cleaned segment swap", Err(e.into()));
        }
        let swapped = (|| {
            for s in old {
                s.rename_to_deleted()?;
            }
            sync_dir(&self.dir)?;
            swap::stop_point(3)?;
            swap::complete(&self.dir, base)?;
            swap::stop_point(4)
        })();
        self.on_io_error("cleaned segment swap", swapped.map_err(LogError::from))?;
        let config = self.config();
        let segment = load_segment(&LoadSpec {
            dir: &self.dir,
            base_offset: base,
            offset_limit: Some(end),
            index_interval: config.index_interval_bytes,
            now_ms: crate::clock::now_ms(),
            trust_index: true,
            recovery_point: None,
        });
        let segment = Arc::new(self.on_io_error("cleaned segment open", segment)?);
        {
            let mut segments = write(&self.segments);
            for s in old {
                segments.remove(&s.base_offset());
            }
            segments.insert(base, segment);
        }
        Ok(Some(DeletedSegments {
            dir: self.dir.clone(),
            segments: old.to_vec(),
            delay_ms: config.file_delete_delay_ms,
        }))
    }

    #[cfg(test)]
    fn segment_bases(&self) -> Vec<i64> {
        read(&self.segments).keys().copied().collect()
    }
}

/// Indexes a transaction that a marker in `segment` aborted, with the last stable offset once it
/// ended (the next open transaction's first offset, or just past the marker).
fn index_if_aborted(
    segment: &LogSegment,
    table: &ProducerStateTable,
    txn: CompletedTxn,
) -> Result<(), LogError> {
    if txn.commit {
        return Ok(());
    }
    segment.append_aborted_txn(AbortedTxn {
        producer_id: txn.producer_id,
        first_offset: txn.first_offset,
        last_offset: txn.last_offset,
        last_stable_offset: table.first_unstable_offset().unwrap_or(txn.last_offset + 1),
    })?;
    Ok(())
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset())
            .field("log_end_offset", &self.log_end_offset())
            .field("high_watermark", &self.high_watermark())
            .field("recovery_point", &self.recovery_point())
            .finish()
    }
}

#[cfg(test)]
mod tests;

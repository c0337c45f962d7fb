//! One segment: `<base>.log` with its `.index` and `.timeindex`. Appends come from one writer
//! at a time (the partition's lock); reads run concurrently with positional reads and only ever
//! see bytes below a size published after the bytes were written.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use super::batch::{BatchHeaders, BATCH_HEADER_SIZE};
use super::index::OffsetIndex;
use super::time_index::TimeIndex;
use super::txn_index::{AbortedTxn, TransactionIndex};
use super::walker::HeaderWalker;
use super::{LogError, RecordBatchHeader};

/// `<20-digit zero-padded base offset>.<ext>`, Kafka's segment file name.
pub(crate) fn segment_file(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// What the indexes need to know about an appended batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchInfo {
    pub(crate) last_offset: i64,
    pub(crate) max_timestamp: i64,
    pub(crate) size: u64,
}

/// A batch found by timestamp (ListOffsets narrows it to the record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampedBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// Index state, guarded together so readers see a consistent picture.
pub(crate) struct SegmentState {
    pub(crate) offset_index: OffsetIndex,
    pub(crate) time_index: TimeIndex,
    /// (largest batch maxTimestamp, last offset of the first batch that reached it).
    pub(crate) max_timestamp: Option<(i64, i64)>,
    pub(crate) bytes_since_index_entry: u64,
    /// Start of the segment's age for `segment.ms`: the first append's wall-clock time, or
    /// after a reload the first batch's maxTimestamp (as Kafka does).
    pub(crate) rolling_ts: Option<i64>,
    /// Offset after the last batch (the base offset while empty).
    pub(crate) next_offset: i64,
}

impl SegmentState {
    pub(crate) fn new(offset_index: OffsetIndex, time_index: TimeIndex, base: i64) -> Self {
        SegmentState {
            offset_index,
            time_index,
            max_timestamp: None,
            bytes_since_index_entry: 0,
            rolling_ts: None,
            next_offset: base,
        }
    }

    /// See [`LogSegment::seal`]; a no-op when the entry is there already.
    pub(crate) fn seal(&mut self) {
        if let Some((ts, offset)) = self.max_timestamp {
            self.time_index.maybe_append(ts, offset);
        }
    }

    /// Accounts for a batch written at `position`: Kafka's sparse indexing, where the first
    /// batch and then one batch every `index_interval` bytes get an entry.
    pub(crate) fn on_batch(&mut self, position: u64, info: &BatchInfo, index_interval: u32) {
        if self.max_timestamp.is_none_or(|(ts, _)| info.max_timestamp > ts) {
            self.max_timestamp = Some((info.max_timestamp, info.last_offset));
        }
        if position == 0 || self.bytes_since_index_entry >= u64::from(index_interval) {
            if let Ok(pos) = u32::try_from(position) {
                self.offset_index.append(info.last_offset, pos);
                if let Some((ts, offset)) = self.max_timestamp {
                    self.time_index.maybe_append(ts, offset);
                }
                self.bytes_since_index_entry = 0;
            }
        }
        self.bytes_since_index_entry += info.size;
        self.next_offset = info.last_offset + 1;
    }
}

/// Outcome of reading from one segment.
pub(crate) enum SegmentRead {
    /// No batch at or after the target offset below the read limit.
    NotHere,
    /// Whole batches starting with the one containing the target (empty if it did not fit).
    Batches(Bytes),
}

/// Loads a sealed segment's index state on first use, from its data file and size; gives the
/// state and the segment's valid size (smaller if a damaged segment had to be cut back).
pub(crate) type IndexLoader = Box<dyn FnOnce(&File, u64) -> (SegmentState, u64) + Send + Sync>;

pub(crate) struct LogSegment {
    base_offset: i64,
    dir: PathBuf,
    file: Arc<File>,
    /// Bytes of whole batches written; readers never look past it.
    size: AtomicU64,
    /// Where `start_writeback` last stopped.
    writeback_from: AtomicU64,
    state: RwLock<SegmentState>,
    /// A sealed segment opened without reading its index files (Kafka's lazy indexes): they are
    /// read at the first use of `state`, so a start touches only the segments it needs.
    lazy: Mutex<Option<IndexLoader>>,
    /// False until `lazy` has run (true at once for segments opened with their state).
    loaded: AtomicBool,
    /// The transactions aborted by markers in this segment (`.txnindex`).
    txn_index: Mutex<TransactionIndex>,
}

/// Removes the files of the segment at `base_offset` in `dir` (those that exist).
/// The files of a segment, by extension.
const SEGMENT_FILES: [&str; 4] = ["log", "index", "timeindex", "txnindex"];

/// Kafka's suffix for the files of a segment being deleted.
pub(crate) const DELETED_SUFFIX: &str = ".deleted";

fn deleted_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(DELETED_SUFFIX);
    PathBuf::from(name)
}

pub(crate) fn delete_segment_files_at(dir: &Path, base_offset: i64) -> io::Result<()> {
    for ext in SEGMENT_FILES {
        match std::fs::remove_file(segment_file(dir, base_offset, ext)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

impl LogSegment {
    /// A new empty segment; existing files of the same name are truncated.
    pub(crate) fn create(dir: &Path, base_offset: i64) -> io::Result<Self> {
        // A new segment has aborted nothing yet, whatever an earlier life left in its place.
        match std::fs::remove_file(segment_file(dir, base_offset, "txnindex")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(segment_file(dir, base_offset, "log"))?;
        let state = SegmentState::new(
            OffsetIndex::create(segment_file(dir, base_offset, "index"), base_offset)?,
            TimeIndex::create(segment_file(dir, base_offset, "timeindex"), base_offset)?,
            base_offset,
        );
        Self::from_parts(dir, base_offset, file, 0, state)
    }

    /// A segment over an already recovered `.log` holding `size` valid bytes.
    pub(crate) fn from_parts(
        dir: &Path,
        base_offset: i64,
        file: File,
        size: u64,
        state: SegmentState,
    ) -> io::Result<Self> {
        Ok(LogSegment {
            base_offset,
            dir: dir.to_path_buf(),
            file: Arc::new(file),
            size: AtomicU64::new(size),
            writeback_from: AtomicU64::new(size),
            state: RwLock::new(state),
            lazy: Mutex::new(None),
            loaded: AtomicBool::new(true),
            txn_index: Mutex::new(TransactionIndex::open(segment_file(
                dir,
                base_offset,
                "txnindex",
            ))?),
        })
    }

    /// A sealed segment of `size` bytes whose index state `loader` gives on first use. Until
    /// then it holds an empty placeholder that touches no file.
    pub(crate) fn lazy(
        dir: &Path,
        base_offset: i64,
        file: File,
        size: u64,
        loader: IndexLoader,
    ) -> io::Result<Self> {
        let placeholder = SegmentState::new(
            OffsetIndex::unloaded(segment_file(dir, base_offset, "index"), base_offset),
            TimeIndex::unloaded(segment_file(dir, base_offset, "timeindex"), base_offset),
            base_offset,
        );
        let segment = Self::from_parts(dir, base_offset, file, size, placeholder)?;
        *segment.lazy.lock().unwrap_or_else(|e| e.into_inner()) = Some(loader);
        segment.loaded.store(false, Ordering::Release);
        Ok(segment)
    }

    /// Asks the kernel to start writing the bytes appended since the last call to disk
    /// (sync_file_range with SYNC_FILE_RANGE_WRITE) and returns without waiting for them. The
    /// fsync an acks=-1 produce waits for then finds its data written or on its way instead of
    /// starting it: a producer with few requests in flight (an idempotent one has at most five)
    /// waits for about its own bytes, not for everything that arrived during the previous fsync
    /// as well. Durability still comes from the fsync alone; this only moves the disk's work
    /// earlier. Advisory: a failure is ignored, the fsync writes what this did not.
    #[allow(unsafe_code)]
    pub(crate) fn start_writeback(&self) {
        let end = self.size();
        let from = self.writeback_from.fetch_max(end, Ordering::AcqRel);
        if end <= from {
            return;
        }
        // SAFETY: no pointers are passed; the descriptor is this segment's open file.
        let rc = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                from as libc::off64_t,
                (end - from) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if rc != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "sync_file_range failed");
        }
    }

    /// Whether the index state has been read (always, but for a lazy segment not used yet).
    #[cfg(test)]
    pub(crate) fn indexes_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Runs the lazy loader once; concurrent first users wait for it.
    fn ensure_loaded(&self) {
        if self.loaded.load(Ordering::Acquire) {
            return;
        }
        let mut lazy = self.lazy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(loader) = lazy.take() {
            let (state, size) = loader(&self.file, self.size.load(Ordering::Acquire));
            *self.state.write().unwrap_or_else(|e| e.into_inner()) = state;
            self.size.store(size, Ordering::Release);
        }
        self.loaded.store(true, Ordering::Release);
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// The valid bytes. For a lazy segment not used yet, its file's size (which its first use
    /// cuts back only if the segment turns out damaged).
    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.read_state().next_offset
    }

    pub(crate) fn rolling_ts(&self) -> Option<i64> {
        self.read_state().rolling_ts
    }

    /// (largest maxTimestamp, last offset of the first batch carrying it).
    pub(crate) fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.read_state().max_timestamp
    }

    /// The position of the batch holding `offset`, or of one before it (the offset index's
    /// floor entry): where a walk for `offset` starts.
    pub(crate) fn position_of(&self, offset: i64) -> u64 {
        u64::from(self.read_state().offset_index.lookup(offset).1)
    }

    /// The maxTimestamp of the segment's first batch (Kafka's `getFirstBatchTimestamp`), by
    /// which `max.compaction.lag.ms` ages dirty data; `None` for an empty or unreadable one.
    pub(crate) fn first_batch_timestamp(&self) -> Option<i64> {
        let mut head = [0u8; BATCH_HEADER_SIZE];
        (self.size() >= BATCH_HEADER_SIZE as u64).then_some(())?;
        self.file.read_exact_at(&mut head, 0).ok()?;
        RecordBatchHeader::parse(&head).ok().map(|h| h.max_timestamp())
    }

    /// The data file, for fsyncs that must not hold any lock.
    pub(crate) fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    fn txn_index(&self) -> MutexGuard<'_, TransactionIndex> {
        self.txn_index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a transaction aborted by a marker in this segment.
    pub(crate) fn append_aborted_txn(&self, txn: AbortedTxn) -> io::Result<()> {
        self.txn_index().append(txn)
    }

    /// Adds the aborted transactions of this segment overlapping `[start, upper_bound)` to
    /// `out`; true when no later segment can hold one (Kafka's `collectAbortedTxns`).
    pub(crate) fn collect_aborted_txns(
        &self,
        start: i64,
        upper_bound: i64,
        out: &mut Vec<AbortedTxn>,
    ) -> bool {
        self.txn_index().collect(start, upper_bound, out)
    }

    /// Forgets the aborted transactions whose markers are at or after `offset`: the replay at
    /// open writes them again from the log.
    pub(crate) fn truncate_txn_index_from(&self, offset: i64) -> io::Result<()> {
        self.txn_index().truncate_from(offset)
    }

    /// Makes the aborted-transaction entries written so far durable.
    pub(crate) fn flush_txn_index(&self) -> io::Result<()> {
        self.txn_index().flush()
    }

    fn read_state(&self) -> RwLockReadGuard<'_, SegmentState> {
        self.ensure_loaded();
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, SegmentState> {
        self.ensure_loaded();
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one batch as `header` + `payload`, written in place so the payload is never
    /// copied. Callers serialise appends. Writes are positional: after a failed write the next
    /// append overwrites whatever was left past `size`, and the file is cut back when possible.
    pub(crate) fn append(
        &self,
        header: &[u8; BATCH_HEADER_SIZE],
        payload: &[u8],
        info: BatchInfo,
        now_ms: i64,
        index_interval: u32,
    ) -> Result<(), LogError> {
        let position = self.size();
        let written = self
            .file
            .write_all_at(header, position)
            .and_then(|()| self.file.write_all_at(payload, position + header.len() as u64));
        if let Err(e) = written {
            if let Err(cut) = self.file.set_len(position) {
                tracing::warn!(file = %self.log_path().display(), error = %cut, "cannot cut back a failed append");
            }
            return Err(e.into());
        }
        {
            let mut st = self.write_state();
            st.on_batch(position, &info, index_interval);
            st.rolling_ts.get_or_insert(now_ms);
        }
        self.size.store(position + info.size, Ordering::Release);
        Ok(())
    }

    /// Reads whole batches starting with the first whose last offset is >= `target`, stopping
    /// before `max_pos` and, unless the first batch alone exceeds it and `min_one_batch` is
    /// set, within `max_bytes`.
    pub(crate) fn read(
        &self,
        target: i64,
        max_pos: u64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<SegmentRead, LogError> {
        let start = u64::from(self.read_state().offset_index.lookup(target).1);
        // A lazy segment's first use may have cut back a damaged tail the caller did not know of.
        let max_pos = max_pos.min(self.size());
        let Some((pos, header)) = self.find(start, max_pos, |h| h.last_offset() >= target)? else {
            return Ok(SegmentRead::NotHere);
        };
        let first_end = pos + header.size() as u64;
        let limit = max_pos.min(pos.saturating_add(max_bytes as u64));
        if first_end > limit {
            return Ok(SegmentRead::Batches(if min_one_batch {
                self.read_range(pos, first_end)?
            } else {
                Bytes::new()
            }));
        }
        let mut data = self.read_range(pos, limit)?;
        let mut whole = BatchHeaders::new(&data);
        whole.by_ref().for_each(drop);
        let end = whole.position();
        data.truncate(end);
        Ok(SegmentRead::Batches(data))
    }

    /// The first batch below `max_pos` whose maxTimestamp is >= `timestamp` and which holds
    /// offsets at or after `min_offset`.
    pub(crate) fn find_by_timestamp(
        &self,
        timestamp: i64,
        min_offset: i64,
        max_pos: u64,
    ) -> Result<Option<TimestampedBatch>, LogError> {
        let start = {
            let st = self.read_state();
            let (_, offset) = st.time_index.lookup(timestamp);
            u64::from(st.offset_index.lookup(offset).1)
        };
        let max_pos = max_pos.min(self.size());
        Ok(self
            .find(start, max_pos, |h| {
                h.max_timestamp() >= timestamp && h.last_offset() >= min_offset
            })?
            .map(|(_, h)| TimestampedBatch {
                base_offset: h.base_offset(),
                last_offset: h.last_offset(),
                max_timestamp: h.max_timestamp(),
            }))
    }

    /// Calls `visit` with the header of every batch holding offsets at or after `offset`, in
    /// log order, and for control batches (small) their bytes as well: the producer-state
    /// replay at open.
    pub(crate) fn for_each_batch_from(
        &self,
        offset: i64,
        mut visit: impl FnMut(&RecordBatchHeader, Option<&[u8]>) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let start = u64::from(self.read_state().offset_index.lookup(offset).1);
        let mut walker = HeaderWalker::new(&self.file, start, self.size());
        let mut control = Vec::new();
        while let Some((pos, header)) = walker.next_batch()? {
            if header.last_offset() < offset {
                continue;
            }
            if header.is_control() {
                control.resize(header.size(), 0);
                self.file.read_exact_at(&mut control, pos)?;
                visit(&header, Some(&control))?;
            } else {
                visit(&header, None)?;
            }
        }
        Ok(())
    }

    fn find(
        &self,
        start: u64,
        max_pos: u64,
        wanted: impl Fn(&RecordBatchHeader) -> bool,
    ) -> Result<Option<(u64, RecordBatchHeader)>, LogError> {
        let mut walker = HeaderWalker::new(&self.file, start, max_pos);
        while let Some((pos, header)) = walker.next_batch()? {
            if wanted(&header) {
                return Ok(Some((pos, header)));
            }
        }
        Ok(None)
    }

    /// Reads `from..to` into a buffer of its own, which the fetch response then references: the
    /// buffer is not zeroed first, since the read fills it (or fails).
    #[allow(unsafe_code)]
    fn read_range(&self, from: u64, to: u64) -> Result<Bytes, LogError> {
        let len = (to - from) as usize;
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        let mut filled = 0;
        while filled < len {
            // SAFETY: pread writes at most `len - filled` bytes into the spare capacity past
            // `filled`, which this Vec owns; only bytes it reports written are counted.
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    buf.as_mut_ptr().add(filled).cast(),
                    len - filled,
                    (from + filled as u64) as libc::off_t,
                )
            };
            match n {
                n if n > 0 => filled += n as usize,
                0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e.into());
                    }
                }
            }
        }
        // SAFETY: the loop above initialised all `len` bytes.
        unsafe { buf.set_len(len) };
        Ok(Bytes::from(buf))
    }

    /// Completes a segment that stops being the active one: a final time index entry for its
    /// largest timestamp, so a reopened sealed segment knows its maximum from the index alone.
    /// In memory only; `flush` writes it.
    pub(crate) fn seal(&self) {
        self.write_state().seal();
    }

    /// Makes a sealed segment fully durable: its data first, then its index files, so an index
    /// on disk never describes data that is not.
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.seal();
        super::durable::sync_data(&self.file)?;
        self.flush_indexes()
    }

    /// The index half of `flush`, after the data is durable: the files are rebuilt from the
    /// segment if a failed write left them torn, so a failure here (no space) may be retried.
    pub(crate) fn flush_indexes(&self) -> io::Result<()> {
        self.seal();
        self.flush_txn_index()?;
        let mut st = self.write_state();
        st.offset_index.persist()?;
        st.time_index.persist()
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        segment_file(&self.dir, self.base_offset, "log")
    }

    pub(crate) fn delete_files(&self) -> io::Result<()> {
        delete_segment_files_at(&self.dir, self.base_offset)
    }

    /// The largest timestamp retention.ms ages the segment by (Kafka's `largestTimestamp`):
    /// its largest batch timestamp, or the file's modification time when no batch has one.
    pub(crate) fn largest_timestamp(&self) -> i64 {
        match self.max_timestamp() {
            Some((ts, _)) if ts >= 0 => ts,
            _ => self
                .file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64),
        }
    }

    /// The first step of Kafka's asynchronous segment deletion: the files of a segment already
    /// out of the log get a `.deleted` suffix (readers holding it keep reading the open file),
    /// and `remove_deleted_files` removes them after `file.delete.delay.ms`. A start removes
    /// any `.deleted` file a stop left. The indexes are loaded first so that a reader holding
    /// the segment never looks for them under the old names.
    pub(crate) fn rename_to_deleted(&self) -> io::Result<()> {
        self.ensure_loaded();
        // The `.log` last: a start that finds it knows the segment's other files are where
        // they were (the cleaner's swap recovery relies on it).
        for ext in ["index", "timeindex", "txnindex", "log"] {
            let from = segment_file(&self.dir, self.base_offset, ext);
            match std::fs::rename(&from, deleted_name(&from)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the files `rename_to_deleted` renamed.
    pub(crate) fn remove_deleted_files(&self) -> io::Result<()> {
        for ext in SEGMENT_FILES {
            let path = deleted_name(&segment_file(&self.dir, self.base_offset, ext));
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes the index entries not yet on disk and makes them durable (at a clean shutdown,
    /// so the next start can trust them), after the data they describe.
    pub(crate) fn persist_indexes(&self) -> io::Result<()> {
        self.seal();
        super::durable::sync_data(&self.file)?;
        let mut st = self.write_state();
        st.offset_index.persist()?;
        st.time_index.persist()
    }

    #[cfg(test)]
    pub(crate) fn index_entries(&self) -> (usize, usize) {
        let st = self.read_state();
        (st.offset_index.len(), st.time_index.len())
    }
}

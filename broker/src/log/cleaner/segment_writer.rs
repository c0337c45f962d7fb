//! The output of a cleaned group: a new segment written under Kafka's `.cleaned` names
//! (`<base>.log.cleaned`, `.index.cleaned`, `.timeindex.cleaned`, `.txnindex.cleaned`), its
//! sparse indexes built as batches are appended, and everything fsynced before the swap.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::swap::{file_with_suffix, CLEANED};
use crate::log::index::OffsetIndex;
use crate::log::segment::{BatchInfo, SegmentState};
use crate::log::time_index::TimeIndex;
use crate::log::txn_index::{AbortedTxn, TransactionIndex};
use crate::log::{LogError, RecordBatchHeader};

/// Removes its files when dropped unfinished (a round stopped or failed), so that no
/// `.cleaned` file outlives its round.
pub(crate) struct CleanedSegment {
    finished: bool,
    dir: PathBuf,
    base_offset: i64,
    file: File,
    size: u64,
    state: SegmentState,
    txn_index: TransactionIndex,
    index_interval: u32,
}

/// A `.cleaned` segment written and durable, ready to swap in.
pub(crate) struct CleanedFiles {
    pub(crate) base_offset: i64,
}

impl CleanedSegment {
    /// Starts `<base>.*.cleaned` in `dir`, replacing any a stopped round left.
    pub(crate) fn create(dir: &Path, base_offset: i64, index_interval: u32) -> io::Result<Self> {
        super::swap::remove_suffixed(dir, base_offset, CLEANED)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(file_with_suffix(dir, base_offset, "log", CLEANED))?;
        let state = SegmentState::new(
            OffsetIndex::create(file_with_suffix(dir, base_offset, "index", CLEANED), base_offset)?,
            TimeIndex::create(
                file_with_suffix(dir, base_offset, "timeindex", CLEANED),
                base_offset,
            )?,
            base_offset,
        );
        Ok(CleanedSegment {
            finished: false,
            dir: dir.to_path_buf(),
            base_offset,
            file,
            size: 0,
            state,
            txn_index: TransactionIndex::open(file_with_suffix(dir, base_offset, "txnindex", CLEANED))?,
            index_interval,
        })
    }

    /// Appends one whole batch; returns its size.
    pub(crate) fn append(&mut self, batch: &[u8]) -> Result<u64, LogError> {
        let h = RecordBatchHeader::parse(batch)?;
        self.file.write_all_at(batch, self.size)?;
        let info = BatchInfo {
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp(),
            size: batch.len() as u64,
        };
        self.state.on_batch(self.size, &info, self.index_interval);
        self.size += batch.len() as u64;
        Ok(batch.len() as u64)
    }

    /// Records an aborted transaction whose marker this segment keeps.
    pub(crate) fn append_aborted_txn(&mut self, txn: AbortedTxn) -> io::Result<()> {
        self.txn_index.append(txn)
    }

    /// Seals the segment and makes its data, then its indexes, durable; the files take
    /// `modified` as their modification time.
    pub(crate) fn finish(mut self, modified: Option<std::time::SystemTime>) -> io::Result<CleanedFiles> {
        self.state.seal();
        if let Some(t) = modified {
            self.file.set_modified(t)?;
        }
        crate::log::durable::sync_data(&self.file)?;
        self.state.offset_index.persist()?;
        self.state.time_index.persist()?;
        self.txn_index.flush()?;
        self.finished = true;
        Ok(CleanedFiles {
            base_offset: self.base_offset,
        })
    }
}

impl Drop for CleanedSegment {
    fn drop(&mut self) {
        if !self.finished {
            if let Err(e) = super::swap::remove_suffixed(&self.dir, self.base_offset, CLEANED) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove an unfinished cleaned segment");
            }
        }
    }
}

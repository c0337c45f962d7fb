//! A partition directory's files, apart from what is inside a segment: which segments exist,
//! the log start offset checkpoint, deleting segments' files, and the directory fsyncs that make
//! creations, renames and deletions durable.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::segment::{LogSegment, DELETED_SUFFIX};
use super::LogError;

/// Whether a log directory still serves. The first write or fsync error in it takes it offline
/// for the rest of the process, as Kafka's LogDirFailureChannel does: after a failed fsync the
/// kernel may have dropped the dirty pages and a second fsync on the same descriptor can report
/// success for data that is gone, so nothing in the directory is written or served again, and
/// its partitions answer KAFKA_STORAGE_ERROR. The rest of the broker (groups, other
/// directories) keeps serving.
///
/// A write that fails for want of space (ENOSPC, EDQUOT) is different: nothing was made durable
/// or acknowledged, the file is cut back to its last whole batch, and the directory stays
/// online; it is marked full instead, so that produce is refused (retriable, like hard disk
/// pressure) until a disk check finds space again.
#[derive(Debug)]
pub struct LogDirHealth {
    dir: PathBuf,
    offline: AtomicBool,
    full: AtomicBool,
}

/// Whether `error` says the filesystem has no room (ENOSPC) or the quota is used up (EDQUOT).
pub(crate) fn is_no_space(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

impl LogDirHealth {
    pub fn new(dir: &Path) -> Arc<LogDirHealth> {
        Arc::new(LogDirHealth {
            dir: dir.to_path_buf(),
            offline: AtomicBool::new(false),
            full: AtomicBool::new(false),
        })
    }

    /// Marks the directory full after `what` failed for want of space.
    pub(super) fn mark_full(&self, what: &str, error: &std::io::Error) {
        if !self.full.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                dir = %self.dir.display(),
                %what,
                %error,
                "the log directory's filesystem is full: produce is refused (retriable) until space returns"
            );
        }
    }

    /// Whether a write failed for want of space since the last `clear_full`.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// A disk check found space again.
    pub fn clear_full(&self) {
        if self.full.swap(false, Ordering::AcqRel) {
            tracing::info!(dir = %self.dir.display(), "the log directory has space again: produce resumes");
        }
    }

    /// Takes the directory offline because `what` failed with `error`.
    pub(super) fn take_offline(&self, what: &str, error: &std::io::Error) {
        if !self.offline.swap(true, Ordering::AcqRel) {
            tracing::error!(
                dir = %self.dir.display(),
                %what,
                %error,
                "log directory taken offline after an I/O error; its partitions answer KAFKA_STORAGE_ERROR until restart"
            );
            metrics::gauge!(crate::metrics::LOG_DIR_OFFLINE, "dir" => self.dir.display().to_string())
                .set(1.0);
        }
    }

    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }

    pub(super) fn check(&self) -> Result<(), LogError> {
        if self.is_offline() {
            return Err(LogError::DirOffline(self.dir.display().to_string()));
        }
        Ok(())
    }
}

pub use super::durable::sync_dir;

/// The partition's log start offset when records were deleted ahead of the segments (Kafka
/// keeps the same number in its log dir's `log-start-offset-checkpoint`).
pub(super) const LOG_START_CHECKPOINT: &str = "log-start-offset.checkpoint";

pub(super) fn read_log_start_checkpoint(dir: &Path) -> Result<Option<i64>, LogError> {
    match std::fs::read_to_string(dir.join(LOG_START_CHECKPOINT)) {
        Ok(text) => match text.trim().parse::<i64>() {
            Ok(offset) if offset >= 0 => Ok(Some(offset)),
            // Written by rename, so never torn; anything else is damage: fall back to the
            // first segment rather than refuse the partition.
            _ => {
                tracing::warn!(dir = %dir.display(), "ignoring unreadable {LOG_START_CHECKPOINT}");
                Ok(None)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes the checkpoint durably: a temp file, fsynced, renamed over the old one.
pub(super) fn write_log_start_checkpoint(dir: &Path, offset: i64) -> std::io::Result<()> {
    let tmp = dir.join(format!("{LOG_START_CHECKPOINT}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        std::io::Write::write_all(&mut f, format!("{offset}\n").as_bytes())?;
        super::durable::sync_all(&f)?;
    }
    std::fs::rename(&tmp, dir.join(LOG_START_CHECKPOINT))?;
    sync_dir(dir)
}

/// Kafka's `partition.metadata`: the id of the topic a partition directory belongs to, so a
/// directory left by another topic of the same name is never served as this one.
pub(super) const PARTITION_METADATA: &str = "partition.metadata";

/// The topic id recorded in a partition directory; None when the file is missing (a directory
/// of an older Keel) or unreadable (logged).
pub fn read_partition_metadata(dir: &Path) -> Result<Option<[u8; 16]>, LogError> {
    match std::fs::read_to_string(dir.join(PARTITION_METADATA)) {
        Ok(text) => {
            let id = text
                .lines()
                .find_map(|l| l.strip_prefix("topic_id:"))
                .and_then(|id| crate::kafka_uuid::parse(id.trim()));
            if id.is_none() {
                tracing::warn!(dir = %dir.display(), "ignoring unreadable {PARTITION_METADATA}");
            }
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Records the topic id in a partition directory durably (temp file, fsync, rename, directory
/// fsync), in Kafka's format.
pub fn write_partition_metadata(dir: &Path, topic_id: [u8; 16]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{PARTITION_METADATA}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        let text = format!(
            "version: 0\ntopic_id: {}\n",
            crate::kafka_uuid::to_string(topic_id)
        );
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        super::durable::sync_all(&f)?;
    }
    std::fs::rename(&tmp, dir.join(PARTITION_METADATA))?;
    sync_dir(dir)
}

/// Base offsets of the `.log` files in `dir`, sorted. Anything else is reported and left alone.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.starts_with(LOG_START_CHECKPOINT) || n.starts_with(PARTITION_METADATA))
        {
            continue;
        }
        // A segment deleted by retention whose delayed removal a stop cut short: finish it, as
        // Kafka's loader does.
        if name.to_str().is_some_and(|n| n.ends_with(DELETED_SUFFIX)) {
            std::fs::remove_file(dir.join(&name))?;
            tracing::info!(dir = %dir.display(), file = ?name, "removed a deleted segment's file left by a stop");
            continue;
        }
        let parsed = name.to_str().and_then(|n| {
            let (stem, ext) = n.split_once('.')?;
            let base = (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
                .then(|| stem.parse::<i64>().ok())
                .flatten()?;
            Some((base, ext))
        });
        match parsed {
            Some((base, "log")) => logs.push(base),
            Some((base, "index" | "timeindex" | "txnindex")) => indexes.push((base, name)),
            _ => {
                tracing::warn!(dir = %dir.display(), file = ?name, "ignoring unexpected file in partition directory")
            }
        }
    }
    logs.sort_unstable();
    for (base, name) in indexes {
        if logs.binary_search(&base).is_err() {
            tracing::warn!(dir = %dir.display(), file = ?name, "ignoring index file without a log segment");
        }
    }
    Ok(logs)
}

/// Takes out of the map the segments whose every offset is below `log_start`: those followed by
/// a segment starting at or below it. The last (active) segment always stays.
pub(super) fn take_segments_below(
    segments: &mut BTreeMap<i64, Arc<LogSegment>>,
    log_start: i64,
) -> Vec<Arc<LogSegment>> {
    let doomed: Vec<i64> = segments
        .keys()
        .zip(segments.keys().skip(1))
        .take_while(|(_, next)| **next <= log_start)
        .map(|(base, _)| *base)
        .collect();
    doomed.iter().filter_map(|base| segments.remove(base)).collect()
}

/// Deletes the files of segments already taken out of the log. Readers holding one finish on
/// the unlinked file.
pub(super) fn delete_segment_files(dir: &Path, doomed: &[Arc<LogSegment>]) -> Result<(), LogError> {
    if doomed.is_empty() {
        return Ok(());
    }
    for segment in doomed {
        segment.delete_files()?;
    }
    sync_dir(dir)?;
    Ok(())
}

/// How full the filesystem holding a log directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    /// Bytes in use (all blocks minus free ones).
    pub used_bytes: u64,
    /// Bytes in use plus those an unprivileged writer may still take: what `df` divides by,
    /// so that `ratio` is df's Use%.
    pub capacity_bytes: u64,
}

impl FsUsage {
    pub fn ratio(&self) -> f64 {
        if self.capacity_bytes == 0 {
            return 0.0;
        }
        self.used_bytes as f64 / self.capacity_bytes as f64
    }
}

/// The usage of the filesystem holding `dir` (statvfs).
#[allow(unsafe_code)]
pub fn fs_usage(dir: &Path) -> std::io::Result<FsUsage> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `st` is valid for writes of a statvfs; the
    // struct is read only after the call reports success.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs succeeded, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    let (block, blocks, free, avail) = (st.f_frsize, st.f_blocks, st.f_bfree, st.f_bavail);
    let used = blocks.saturating_sub(free) * block;
    Ok(FsUsage {
        used_bytes: used,
        capacity_bytes: used + avail * block,
    })
}

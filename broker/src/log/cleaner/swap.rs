//! Swapping cleaned segments in, crash-safe, with Kafka's file suffixes. A group's output is
//! written as `<base>.*.cleaned` and fsynced; then, under the log's maintenance lock:
//!
//! 1. `cleaner-swap-range` records the group's offset range `[base, end)` (temp file, fsync,
//!    rename);
//! 2. each `.cleaned` file is renamed `.swap`, the `.log` last, and the directory fsynced: the
//!    commit point. From here a crash completes the swap; before it, a crash undoes it;
//! 3. the group's old segments are renamed `.deleted` (a fetch reading one keeps its file;
//!    each segment's `.log` last), and the directory fsynced;
//! 4. the `.swap` files get their final names (the `.log` last) and the directory is fsynced;
//!    the range file goes.
//!
//! `finish_interrupted` runs before a partition's segments are listed at open: `.cleaned` files
//! (a round that never committed) are removed, and a `.log.swap` is completed: every other
//! segment in its range is deleted and the `.swap` files renamed. Kafka takes the range from the
//! swap segment's last batch, which leaves an old segment behind when cleaning emptied the end
//! of a group (KAFKA-12520); the range file makes the result exactly the swapped-in log.

use std::io;
use std::path::{Path, PathBuf};

use crate::log::durable;
use crate::log::durable::sync_dir;
use crate::log::segment::{delete_segment_files_at, segment_file};

pub(crate) const CLEANED: &str = ".cleaned";
pub(crate) const SWAP: &str = ".swap";
const RANGE_FILE: &str = "cleaner-swap-range";
const EXTS: [&str; 4] = ["index", "timeindex", "txnindex", "log"];
const INDEX_EXTS: [&str; 3] = ["index", "timeindex", "txnindex"];

/// `<base>.<ext><suffix>` in `dir`.
pub(crate) fn file_with_suffix(dir: &Path, base_offset: i64, ext: &str, suffix: &str) -> PathBuf {
    let mut name = segment_file(dir, base_offset, ext).into_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes the files of the segment at `base_offset` that carry `suffix`.
pub(crate) fn remove_suffixed(dir: &Path, base_offset: i64, suffix: &str) -> io::Result<()> {
    for ext in EXTS {
        match std::fs::remove_file(file_with_suffix(dir, base_offset, ext, suffix)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
thread_local! {
    /// Tests stop a swap after this step (1: range recorded, 2: committed, 3: old segments
    /// renamed, 4: completed), as a crash there would.
    pub(crate) static STOP_AFTER: std::cell::Cell<Option<u8>> = const { std::cell::Cell::new(None) };
}

/// Whether `error` is a test's simulated crash (which, as a crash, leaves everything as it is).
pub(crate) fn is_test_stop(error: &io::Error) -> bool {
    cfg!(test) && error.to_string().starts_with("test stop after swap step")
}

/// A test's simulated crash after `step`; nothing outside tests.
pub(crate) fn stop_point(step: u8) -> io::Result<()> {
    #[cfg(test)]
    if STOP_AFTER.with(|s| s.get()) == Some(step) {
        return Err(io::Error::other(format!("test stop after swap step {step}")));
    }
    let _ = step;
    Ok(())
}

/// Step 1 and the first half of 2: the range recorded and the index files renamed `.swap`.
/// Nothing is committed yet: on an error the caller abandons the round (`abandon`).
pub(crate) fn prepare(dir: &Path, base_offset: i64, end: i64) -> io::Result<()> {
    let tmp = dir.join(format!("{RANGE_FILE}.tmp"));
    {
        let f = std::fs::File::create(&tmp)?;
        io::Write::write_all(&mut &f, format!("{base_offset} {end}\n").as_bytes())?;
        durable::sync_all(&f)?;
    }
    std::fs::rename(&tmp, dir.join(RANGE_FILE))?;
    sync_dir(dir)?;
    stop_point(1)?;
    for ext in INDEX_EXTS {
        rename_if_exists(
            &file_with_suffix(dir, base_offset, ext, CLEANED),
            &file_with_suffix(dir, base_offset, ext, SWAP),
        )?;
    }
    Ok(())
}

/// The commit point: `.log.cleaned` renamed `.log.swap`, and the directory fsynced.
pub(crate) fn commit(dir: &Path, base_offset: i64) -> io::Result<()> {
    std::fs::rename(
        file_with_suffix(dir, base_offset, "log", CLEANED),
        file_with_suffix(dir, base_offset, "log", SWAP),
    )?;
    sync_dir(dir)?;
    stop_point(2)
}

/// Whether the swap at `base_offset` reached its commit point (`.log.swap` exists).
pub(crate) fn is_committed(dir: &Path, base_offset: i64) -> bool {
    file_with_suffix(dir, base_offset, "log", SWAP).exists()
}

/// Undoes a round that failed before its commit: its `.cleaned` and `.swap` files and the
/// range file go.
pub(crate) fn abandon(dir: &Path, base_offset: i64) -> io::Result<()> {
    remove_suffixed(dir, base_offset, CLEANED)?;
    remove_suffixed(dir, base_offset, SWAP)?;
    match std::fs::remove_file(dir.join(RANGE_FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Step 4: the `.swap` files under their final names (the `.log` last: while it is still
/// `.swap`, a start completes the swap), durably, and the range file gone.
pub(crate) fn complete(dir: &Path, base_offset: i64) -> io::Result<()> {
    for ext in EXTS {
        rename_if_exists(
            &file_with_suffix(dir, base_offset, ext, SWAP),
            &segment_file(dir, base_offset, ext),
        )?;
    }
    sync_dir(dir)?;
    match std::fs::remove_file(dir.join(RANGE_FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The recorded range of a swap at `base_offset`, if the range file names it.
fn recorded_range(dir: &Path, base_offset: i64) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join(RANGE_FILE)).ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<i64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(base)), Some(Ok(end))) if base == base_offset && end > base => Some(end),
        _ => None,
    }
}

/// Kafka's fallback range end: just past the swap segment's last batch.
fn swap_next_offset(dir: &Path, base_offset: i64) -> io::Result<i64> {
    let file = std::fs::File::open(file_with_suffix(dir, base_offset, "log", SWAP))?;
    let size = file.metadata()?.len();
    let mut walker = crate::log::walker::HeaderWalker::new(&file, 0, size);
    let mut next = base_offset;
    while let Ok(Some((_, h))) = walker.next_batch() {
        next = h.last_offset() + 1;
    }
    Ok(next)
}

/// Finishes what a stop interrupted in `dir` (see the module's comment). Returns whether
/// anything was found.
pub(crate) fn finish_interrupted(dir: &Path) -> io::Result<bool> {
    let mut cleaned = Vec::new();
    let mut swap_logs = Vec::new();
    let mut swap_other = Vec::new();
    let mut bases_seen = std::collections::BTreeSet::new();
    let mut segment_logs = Vec::new();
    let mut range_file = false;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(RANGE_FILE) {
            range_file = true;
            continue;
        }
        let Some((stem, ext)) = name.split_once('.') else {
            continue;
        };
        let Some(base) = (stem.len() == 20).then(|| stem.parse::<i64>().ok()).flatten() else {
            continue;
        };
        bases_seen.insert(base);
        match ext {
            "log" => segment_logs.push(base),
            "log.swap" => swap_logs.push(base),
            e if e.ends_with(CLEANED) => cleaned.push(dir.join(name)),
            e if e.ends_with(SWAP) => swap_other.push((base, dir.join(name))),
            _ => {}
        }
    }
    if cleaned.is_empty() && swap_logs.is_empty() && swap_other.is_empty() && !range_file {
        return Ok(false);
    }
    for path in &cleaned {
        std::fs::remove_file(path)?;
        tracing::info!(file = %path.display(), "removed the output of a cleaning that did not finish");
    }
    // Index `.swap` files without their `.log.swap`: a commit cut short before the log's rename
    // (the round is undone).
    for (base, path) in &swap_other {
        if !swap_logs.contains(base) {
            std::fs::remove_file(path)?;
        }
    }
    for &base in &swap_logs {
        let end = match recorded_range(dir, base) {
            Some(end) => end,
            None => swap_next_offset(dir, base)?,
        };
        // An old segment's `.log` still in the range: the old segments were not all renamed
        // `.deleted` yet (each renames its `.log` last), so the final renames had not begun and
        // every file of the range without a suffix is old. Otherwise they had: what is left at
        // `base` without a suffix was renamed from `.swap` already.
        if segment_logs.iter().any(|&b| b >= base && b < end) {
            for &old in bases_seen.iter().filter(|&&b| b >= base && b < end) {
                delete_segment_files_at(dir, old)?;
            }
        }
        // The old segment at `base` is gone with the others: the swap's files take its names.
        for ext in EXTS {
            rename_if_exists(
                &file_with_suffix(dir, base, ext, SWAP),
                &segment_file(dir, base, ext),
            )?;
        }
        tracing::info!(dir = %dir.display(), base_offset = base, end, "completed the swap of a cleaned segment a stop interrupted");
    }
    sync_dir(dir)?;
    for suffix in ["", ".tmp"] {
        match std::fs::remove_file(dir.join(format!("{RANGE_FILE}{suffix}"))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    sync_dir(dir)?;
    Ok(true)
}

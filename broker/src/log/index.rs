//! Kafka's sparse offset index (`.index`): 8-byte entries of (offset relative to the segment's
//! base offset, u32 BE; physical position of the batch in the `.log`, u32 BE). As in Kafka, an
//! entry maps a batch's LAST offset to the position where that batch starts.
//!
//! Entries live in memory; the file is brought up to date when the segment is flushed or sealed.
//! The active segment's index is rebuilt from the log on every open, so its file may lag.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const ENTRY_SIZE: usize = 8;

pub(crate) struct OffsetIndex {
    path: PathBuf,
    base_offset: i64,
    entries: Vec<(u32, u32)>,
    /// How many entries the file already holds.
    persisted: usize,
}

/// Reads a whole index file; `Err` carries why it cannot be used.
pub(super) fn read_index_file(path: &Path, entry_size: usize) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if buf.len() % entry_size != 0 {
        return Err(format!(
            "{} has length {}, not a multiple of {entry_size}",
            path.display(),
            buf.len()
        ));
    }
    Ok(buf)
}

/// Appends `bytes` to the index file at `path` and makes them durable.
pub(super) fn append_and_sync(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().append(true).create(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl OffsetIndex {
    /// A new, empty index; creates or truncates the file.
    pub(crate) fn create(path: PathBuf, base_offset: i64) -> io::Result<Self> {
        File::create(&path)?;
        Ok(OffsetIndex {
            path,
            base_offset,
            entries: Vec::new(),
            persisted: 0,
        })
    }

    /// Loads and checks an index file for a segment whose `.log` holds `segment_size` bytes and
    /// whose offsets stay below `offset_limit` (the next segment's base offset, if any).
    pub(crate) fn load(
        path: PathBuf,
        base_offset: i64,
        segment_size: u64,
        offset_limit: Option<i64>,
    ) -> Result<Self, String> {
        let buf = read_index_file(&path, ENTRY_SIZE)?;
        let entries: Vec<(u32, u32)> = buf
            .chunks_exact(ENTRY_SIZE)
            .map(|e| (u32_at(e, 0), u32_at(e, 4)))
            .collect();
        let bad = |why: String| Err(format!("{}: {why}", path.display()));
        match entries.first() {
            None if segment_size > 0 => return bad("empty for a non-empty segment".into()),
            Some(&(_, pos)) if pos != 0 => return bad(format!("first entry at position {pos}")),
            _ => {}
        }
        for w in entries.windows(2) {
            if w[1].0 <= w[0].0 || w[1].1 <= w[0].1 {
                return bad(format!("entries {:?} and {:?} out of order", w[0], w[1]));
            }
        }
        if let Some(&(rel, pos)) = entries.last() {
            if u64::from(pos) >= segment_size {
                return bad(format!(
                    "entry points to {pos}, past the log's {segment_size} bytes"
                ));
            }
            let last = base_offset + i64::from(rel);
            if rel > i32::MAX as u32 || offset_limit.is_some_and(|limit| last >= limit) {
                return bad(format!("entry offset {last} beyond the segment"));
            }
        }
        let persisted = entries.len();
        Ok(OffsetIndex {
            path,
            base_offset,
            entries,
            persisted,
        })
    }

    /// Adds an entry for the batch ending at `last_offset` and starting at `position`. Entries
    /// that would not keep the index strictly increasing are dropped: a sparse index stays
    /// correct without them.
    pub(crate) fn append(&mut self, last_offset: i64, position: u32) {
        let Ok(rel) = u32::try_from(last_offset - self.base_offset) else {
            return;
        };
        if let Some(&(r, p)) = self.entries.last() {
            if rel <= r || position <= p {
                return;
            }
        }
        self.entries.push((rel, position));
    }

    /// The greatest entry whose offset is <= `target`, as (absolute offset, position); the
    /// segment start `(base_offset, 0)` when there is none. Scanning batches from that position
    /// reaches the batch containing `target`.
    pub(crate) fn lookup(&self, target: i64) -> (i64, u32) {
        let n = self
            .entries
            .partition_point(|&(rel, _)| self.base_offset + i64::from(rel) <= target);
        match n.checked_sub(1).map(|i| self.entries[i]) {
            Some((rel, pos)) => (self.base_offset + i64::from(rel), pos),
            None => (self.base_offset, 0),
        }
    }

    /// The last entry, as (absolute offset, position).
    pub(crate) fn last_entry(&self) -> Option<(i64, u32)> {
        self.entries
            .last()
            .map(|&(rel, pos)| (self.base_offset + i64::from(rel), pos))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Writes the entries the file lacks and fsyncs it.
    pub(crate) fn persist(&mut self) -> io::Result<()> {
        if self.persisted == self.entries.len() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity((self.entries.len() - self.persisted) * ENTRY_SIZE);
        for &(rel, pos) in &self.entries[self.persisted..] {
            bytes.extend_from_slice(&rel.to_be_bytes());
            bytes.extend_from_slice(&pos.to_be_bytes());
        }
        append_and_sync(&self.path, &bytes)?;
        self.persisted = self.entries.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> OffsetIndex {
        let mut idx = OffsetIndex::create(dir.join("x.index"), 100).unwrap();
        idx.append(104, 0);
        idx.append(110, 500);
        idx.append(130, 1200);
        idx
    }

    #[test]
    fn lookup_gives_greatest_entry_at_or_below_target() {
        let dir = tempfile::tempdir().unwrap();
        let idx = sample(dir.path());
        assert_eq!(idx.lookup(99), (100, 0));
        assert_eq!(idx.lookup(103), (100, 0));
        assert_eq!(idx.lookup(104), (104, 0));
        assert_eq!(idx.lookup(109), (104, 0));
        assert_eq!(idx.lookup(110), (110, 500));
        assert_eq!(idx.lookup(1_000_000), (130, 1200));
        assert_eq!(idx.last_entry(), Some((130, 1200)));
        let empty = OffsetIndex::create(dir.path().join("e.index"), 5).unwrap();
        assert_eq!(empty.lookup(10), (5, 0));
    }

    #[test]
    fn drops_non_increasing_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = sample(dir.path());
        idx.append(130, 1300);
        idx.append(140, 1200);
        idx.append(99, 1500);
        assert_eq!(idx.len(), 3);
    }

    #[test]
    fn persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = sample(dir.path());
        idx.persist().unwrap();
        idx.append(150, 2000);
        idx.persist().unwrap();
        let path = dir.path().join("x.index");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 32);
        let loaded = OffsetIndex::load(path, 100, 2100, Some(151)).unwrap();
        assert_eq!(loaded.len(), 4);
        assert_eq!(loaded.lookup(149), (130, 1200));
        assert_eq!(loaded.lookup(150), (150, 2000));
    }

    #[test]
    fn rejects_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let mut idx = sample(dir.path());
        idx.persist().unwrap();
        let good = std::fs::read(&path).unwrap();
        let load = |size, limit| OffsetIndex::load(path.clone(), 100, size, limit);
        assert!(load(1300, None).is_ok());
        // Points past the log.
        assert!(load(1200, None).is_err());
        // Offsets beyond the next segment.
        assert!(load(1300, Some(130)).is_err());
        // Torn entry.
        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert!(load(1300, None).is_err());
        // Out of order.
        let mut swapped = good.clone();
        swapped[8..16].copy_from_slice(&good[16..24]);
        swapped[16..24].copy_from_slice(&good[8..16]);
        std::fs::write(&path, &swapped).unwrap();
        assert!(load(1300, None).is_err());
        // First entry must be the segment start; an empty index only fits an empty log.
        std::fs::write(&path, &good[8..]).unwrap();
        assert!(load(1300, None).is_err());
        std::fs::write(&path, b"").unwrap();
        assert!(load(1300, None).is_err());
        assert!(load(0, None).is_ok());
        std::fs::remove_file(&path).unwrap();
        assert!(load(0, None).is_err());
    }
}

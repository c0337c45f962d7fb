//! Kafka's sparse time index (`.timeindex`): 12-byte entries of (timestamp i64 BE, offset
//! relative to the segment's base u32 BE). An entry (T, O) says: T is the largest batch
//! maxTimestamp seen so far in the segment and the batch ending at O is the first to reach it,
//! so every batch before that one has a smaller maxTimestamp. Timestamps and offsets are both
//! strictly increasing.

use std::io;
use std::path::PathBuf;

use super::index::{append_and_sync, read_index_file};

const ENTRY_SIZE: usize = 12;

pub(crate) struct TimeIndex {
    path: PathBuf,
    base_offset: i64,
    entries: Vec<(i64, u32)>,
    persisted: usize,
}

impl TimeIndex {
    /// A new, empty index; creates or truncates the file.
    pub(crate) fn create(path: PathBuf, base_offset: i64) -> io::Result<Self> {
        std::fs::File::create(&path)?;
        Ok(TimeIndex {
            path,
            base_offset,
            entries: Vec::new(),
            persisted: 0,
        })
    }

    /// Loads and checks a time index for a segment of `segment_size` bytes whose offsets stay
    /// below `offset_limit` (the next segment's base offset, if any).
    pub(crate) fn load(
        path: PathBuf,
        base_offset: i64,
        segment_size: u64,
        offset_limit: Option<i64>,
    ) -> Result<Self, String> {
        let buf = read_index_file(&path, ENTRY_SIZE)?;
        let entries: Vec<(i64, u32)> = buf
            .chunks_exact(ENTRY_SIZE)
            .map(|e| {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&e[..8]);
                (
                    i64::from_be_bytes(ts),
                    u32::from_be_bytes([e[8], e[9], e[10], e[11]]),
                )
            })
            .collect();
        let bad = |why: String| Err(format!("{}: {why}", path.display()));
        if entries.is_empty() && segment_size > 0 {
            return bad("empty for a non-empty segment".into());
        }
        for w in entries.windows(2) {
            if w[1].0 <= w[0].0 || w[1].1 <= w[0].1 {
                return bad(format!("entries {:?} and {:?} out of order", w[0], w[1]));
            }
        }
        if let Some(&(_, rel)) = entries.last() {
            let last = base_offset + i64::from(rel);
            if rel > i32::MAX as u32 || offset_limit.is_some_and(|limit| last >= limit) {
                return bad(format!("entry offset {last} beyond the segment"));
            }
        }
        let persisted = entries.len();
        Ok(TimeIndex {
            path,
            base_offset,
            entries,
            persisted,
        })
    }

    /// Adds (timestamp, offset) if it keeps both columns strictly increasing.
    pub(crate) fn maybe_append(&mut self, timestamp: i64, offset: i64) {
        let Ok(rel) = u32::try_from(offset - self.base_offset) else {
            return;
        };
        if let Some(&(ts, r)) = self.entries.last() {
            if timestamp <= ts || rel <= r {
                return;
            }
        }
        self.entries.push((timestamp, rel));
    }

    /// The greatest entry whose timestamp is <= `timestamp`, as (timestamp, absolute offset), or
    /// `(-1, base_offset)` when there is none. The first batch with maxTimestamp >= `timestamp`
    /// is the batch containing that offset or a later one.
    pub(crate) fn lookup(&self, timestamp: i64) -> (i64, i64) {
        let n = self.entries.partition_point(|&(ts, _)| ts <= timestamp);
        match n.checked_sub(1).map(|i| self.entries[i]) {
            Some((ts, rel)) => (ts, self.base_offset + i64::from(rel)),
            None => (-1, self.base_offset),
        }
    }

    /// The last entry, as (timestamp, absolute offset).
    pub(crate) fn last_entry(&self) -> Option<(i64, i64)> {
        self.entries
            .last()
            .map(|&(ts, rel)| (ts, self.base_offset + i64::from(rel)))
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
        for &(ts, rel) in &self.entries[self.persisted..] {
            bytes.extend_from_slice(&ts.to_be_bytes());
            bytes.extend_from_slice(&rel.to_be_bytes());
        }
        append_and_sync(&self.path, &bytes)?;
        self.persisted = self.entries.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(path: PathBuf) -> TimeIndex {
        let mut idx = TimeIndex::create(path, 1000).unwrap();
        idx.maybe_append(50, 1002);
        idx.maybe_append(50, 1004); // timestamp not larger: skipped
        idx.maybe_append(80, 1010);
        idx.maybe_append(70, 1020); // smaller: skipped
        idx.maybe_append(120, 1030);
        idx
    }

    #[test]
    fn lookup_gives_greatest_entry_at_or_below_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let idx = sample(dir.path().join("t.timeindex"));
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.lookup(10), (-1, 1000));
        assert_eq!(idx.lookup(50), (50, 1002));
        assert_eq!(idx.lookup(79), (50, 1002));
        assert_eq!(idx.lookup(80), (80, 1010));
        assert_eq!(idx.lookup(i64::MAX), (120, 1030));
        assert_eq!(idx.last_entry(), Some((120, 1030)));
    }

    #[test]
    fn persists_reloads_and_rejects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.timeindex");
        let mut idx = sample(path.clone());
        idx.persist().unwrap();
        let load = |limit| TimeIndex::load(path.clone(), 1000, 4096, limit);
        let loaded = load(None).unwrap();
        assert_eq!(loaded.len(), 3);
        assert_eq!(loaded.lookup(100), (80, 1010));
        assert!(load(Some(1030)).is_err());

        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(load(None).is_err());
        let mut swapped = good.clone();
        swapped[..12].copy_from_slice(&good[12..24]);
        swapped[12..24].copy_from_slice(&good[..12]);
        std::fs::write(&path, &swapped).unwrap();
        assert!(load(None).is_err());
        std::fs::write(&path, b"").unwrap();
        assert!(load(None).is_err());
        assert!(TimeIndex::load(path.clone(), 1000, 0, None).is_ok());
    }
}

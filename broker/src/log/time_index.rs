//! Kafka's sparse time index (`.timeindex`): 12-byte entries of (timestamp i64 BE, offset
//! relative to the segment's base u32 BE). An entry (T, O) says: T is the largest batch
//! maxTimestamp seen so far in the segment and the batch ending at O is the first to reach it,
//! so every batch before that one has a smaller maxTimestamp. Timestamps and offsets are both
//! strictly increasing.
//!
//! A thin type over the generic [`SparseIndex`], which holds, loads and persists the entries.

use std::io;
use std::path::PathBuf;

use super::sparse_index::{u32_at, IndexEntry, SparseIndex};

/// A time index entry (Kafka's `TimestampOffset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimestampOffset {
    timestamp: i64,
    relative_offset: u32,
}

impl TimestampOffset {
    pub(crate) fn new(timestamp: i64, relative_offset: u32) -> Self {
        TimestampOffset {
            timestamp,
            relative_offset,
        }
    }
}

impl IndexEntry for TimestampOffset {
    const SIZE: usize = 12;

    fn decode(bytes: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&bytes[..8]);
        TimestampOffset::new(i64::from_be_bytes(ts), u32_at(bytes, 8))
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }

    /// The timestamp.
    fn key(&self, _base_offset: i64) -> i64 {
        self.timestamp
    }

    fn relative_offset(&self) -> u32 {
        self.relative_offset
    }

    /// Only a larger timestamp gets an entry, and at a later offset.
    fn follows(&self, prev: &Self) -> bool {
        self.timestamp > prev.timestamp && self.relative_offset > prev.relative_offset
    }

    /// No timestamp (-1) at the segment's base offset, as in Kafka.
    fn before_first() -> Self {
        TimestampOffset::new(-1, 0)
    }
}

pub(crate) struct TimeIndex(SparseIndex<TimestampOffset>);

impl TimeIndex {
    /// A placeholder for an index file not read yet (see [`SparseIndex::unloaded`]).
    pub(crate) fn unloaded(path: PathBuf, base_offset: i64) -> Self {
        TimeIndex(SparseIndex::unloaded(path, base_offset))
    }

    /// A new, empty index; creates or truncates the file.
    pub(crate) fn create(path: PathBuf, base_offset: i64) -> io::Result<Self> {
        SparseIndex::create(path, base_offset).map(TimeIndex)
    }

    /// Loads and checks a time index for a segment of `segment_size` bytes whose offsets stay
    /// below `offset_limit` (the next segment's base offset, if any).
    pub(crate) fn load(
        path: PathBuf,
        base_offset: i64,
        segment_size: u64,
        offset_limit: Option<i64>,
    ) -> Result<Self, String> {
        SparseIndex::load(path, base_offset, segment_size, offset_limit).map(TimeIndex)
    }

    /// The sound prefix of a time index file that may end in garbage, as (timestamp, absolute
    /// offset) pairs (see [`SparseIndex::read_prefix`]).
    pub(crate) fn read_prefix(path: &std::path::Path, base_offset: i64) -> Vec<(i64, i64)> {
        SparseIndex::<TimestampOffset>::read_prefix(path, base_offset)
            .into_iter()
            .map(|(offset, e)| (e.timestamp, offset))
            .collect()
    }

    /// Adds (timestamp, offset) if it keeps both columns strictly increasing.
    pub(crate) fn maybe_append(&mut self, timestamp: i64, offset: i64) {
        if let Some(rel) = self.0.relative(offset) {
            self.0.maybe_append(TimestampOffset::new(timestamp, rel));
        }
    }

    fn absolute(&self, e: TimestampOffset) -> (i64, i64) {
        (e.timestamp, self.0.base_offset() + i64::from(e.relative_offset))
    }

    /// The greatest entry whose timestamp is <= `timestamp`, as (timestamp, absolute offset), or
    /// `(-1, base_offset)` when there is none. The first batch with maxTimestamp >= `timestamp`
    /// is the batch containing that offset or a later one.
    pub(crate) fn lookup(&self, timestamp: i64) -> (i64, i64) {
        self.absolute(self.0.lookup(timestamp))
    }

    /// The last entry, as (timestamp, absolute offset).
    pub(crate) fn last_entry(&self) -> Option<(i64, i64)> {
        self.0.last_entry().map(|e| self.absolute(e))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Writes the entries the file lacks and fsyncs it.
    pub(crate) fn persist(&mut self) -> io::Result<()> {
        self.0.persist()
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

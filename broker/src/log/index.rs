//! Kafka's sparse offset index (`.index`): 8-byte entries of (offset relative to the segment's
//! base offset, u32 BE; physical position of the batch in the `.log`, u32 BE). As in Kafka, an
//! entry maps a batch's LAST offset to the position where that batch starts.
//!
//! A thin type over the generic [`SparseIndex`], which holds, loads and persists the entries.

use std::io;
use std::path::PathBuf;

use super::sparse_index::{u32_at, IndexEntry, SparseIndex};

/// An offset index entry (Kafka's `OffsetPosition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetPosition {
    relative_offset: u32,
    position: u32,
}

impl OffsetPosition {
    pub(crate) fn new(relative_offset: u32, position: u32) -> Self {
        OffsetPosition {
            relative_offset,
            position,
        }
    }
}

impl IndexEntry for OffsetPosition {
    const SIZE: usize = 8;

    fn decode(bytes: &[u8]) -> Self {
        OffsetPosition::new(u32_at(bytes, 0), u32_at(bytes, 4))
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }

    /// The absolute offset.
    fn key(&self, base_offset: i64) -> i64 {
        base_offset + i64::from(self.relative_offset)
    }

    fn relative_offset(&self) -> u32 {
        self.relative_offset
    }

    fn follows(&self, prev: &Self) -> bool {
        self.relative_offset > prev.relative_offset && self.position > prev.position
    }

    /// The segment start.
    fn before_first() -> Self {
        OffsetPosition::new(0, 0)
    }

    /// The first batch always gets an entry, so the first entry is at position 0; every entry
    /// points into the log.
    fn check_against_log(first: &Self, last: &Self, segment_size: u64) -> Result<(), String> {
        if first.position != 0 {
            return Err(format!("first entry at position {}", first.position));
        }
        if u64::from(last.position) >= segment_size {
            return Err(format!(
                "entry points to {}, past the log's {segment_size} bytes",
                last.position
            ));
        }
        Ok(())
    }
}

pub(crate) struct OffsetIndex(SparseIndex<OffsetPosition>);

impl OffsetIndex {
    /// A placeholder for an index file not read yet (see [`SparseIndex::unloaded`]).
    pub(crate) fn unloaded(path: PathBuf, base_offset: i64) -> Self {
        OffsetIndex(SparseIndex::unloaded(path, base_offset))
    }

    /// A new, empty index; creates or truncates the file.
    pub(crate) fn create(path: PathBuf, base_offset: i64) -> io::Result<Self> {
        SparseIndex::create(path, base_offset).map(OffsetIndex)
    }

    /// Loads and checks an index file for a segment whose `.log` holds `segment_size` bytes and
    /// whose offsets stay below `offset_limit` (the next segment's base offset, if any).
    pub(crate) fn load(
        path: PathBuf,
        base_offset: i64,
        segment_size: u64,
        offset_limit: Option<i64>,
    ) -> Result<Self, String> {
        SparseIndex::load(path, base_offset, segment_size, offset_limit).map(OffsetIndex)
    }

    /// The sound prefix of an index file that may end in garbage, as (absolute offset,
    /// position) pairs (see [`SparseIndex::read_prefix`]).
    pub(crate) fn read_prefix(path: &std::path::Path, base_offset: i64) -> Vec<(i64, u32)> {
        SparseIndex::<OffsetPosition>::read_prefix(path, base_offset)
            .into_iter()
            .map(|(offset, e)| (offset, e.position))
            .collect()
    }

    /// Adds an entry for the batch ending at `last_offset` and starting at `position`. Entries
    /// that would not keep the index strictly increasing are dropped: a sparse index stays
    /// correct without them.
    pub(crate) fn append(&mut self, last_offset: i64, position: u32) {
        if let Some(rel) = self.0.relative(last_offset) {
            self.0.maybe_append(OffsetPosition::new(rel, position));
        }
    }

    fn absolute(&self, e: OffsetPosition) -> (i64, u32) {
        (e.key(self.0.base_offset()), e.position)
    }

    /// The greatest entry whose offset is <= `target`, as (absolute offset, position); the
    /// segment start `(base_offset, 0)` when there is none. Scanning batches from that position
    /// reaches the batch containing `target`.
    pub(crate) fn lookup(&self, target: i64) -> (i64, u32) {
        self.absolute(self.0.lookup(target))
    }

    /// The last entry, as (absolute offset, position).
    pub(crate) fn last_entry(&self) -> Option<(i64, u32)> {
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
    use std::path::Path;

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

//! Kafka's sparse index files (its `AbstractIndex`), generic over the entry kind: the offset
//! index ([`OffsetIndex`](super::index::OffsetIndex), entries [`OffsetPosition`]) and the time
//! index ([`TimeIndex`](super::time_index::TimeIndex), entries [`TimestampOffset`]).
//!
//! A file is a plain array of fixed-size big-endian entries in Kafka's layout, with no header.
//! Entries are strictly increasing in both of their columns, and one column is always an offset
//! relative to the segment's base offset. Entries live in memory; the file is brought up to date
//! (appended to, then fsynced) by [`SparseIndex::persist`], which the segment calls when it is
//! flushed or sealed. The active segment's indexes are rebuilt from the log on every open, so
//! their files may lag.
//!
//! [`OffsetPosition`]: super::index::OffsetPosition
//! [`TimestampOffset`]: super::time_index::TimestampOffset

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// One entry of a sparse index (Kafka's `IndexEntry`): its on-disk form, the key lookups
/// search on, and the rules a loaded file must satisfy.
pub(crate) trait IndexEntry: Copy + Debug {
    /// Bytes per entry on disk.
    const SIZE: usize;

    /// Decodes an entry from exactly [`Self::SIZE`] bytes.
    fn decode(bytes: &[u8]) -> Self;

    /// Appends the entry's [`Self::SIZE`] bytes to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// What [`SparseIndex::lookup`] compares with its target, for a segment starting at
    /// `base_offset`. Strictly increasing along the index.
    fn key(&self, base_offset: i64) -> i64;

    /// The entry's offset column, relative to the segment's base offset.
    fn relative_offset(&self) -> u32;

    /// Whether `self` may come right after `prev`: both columns strictly larger.
    fn follows(&self, prev: &Self) -> bool;

    /// What a lookup answers when no entry's key is at or below the target.
    fn before_first() -> Self;

    /// Checks of a loaded, non-empty and ordered index that depend on the entry kind, against
    /// its segment's `.log` of `segment_size` bytes.
    fn check_against_log(_first: &Self, _last: &Self, _segment_size: u64) -> Result<(), String> {
        Ok(())
    }
}

/// A sparse index of one segment: entries in memory, and the file they are persisted to.
pub(crate) struct SparseIndex<E> {
    path: PathBuf,
    base_offset: i64,
    entries: Vec<E>,
    /// How many entries the file already holds.
    persisted: usize,
}

/// Reads a whole index file; `Err` carries why it cannot be used.
fn read_index_file(path: &Path, entry_size: usize) -> Result<Vec<u8>, String> {
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
fn append_and_sync(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().append(true).create(true).open(path)?;
    f.write_all(bytes)?;
    super::durable::sync_data(&f)
}

impl<E: IndexEntry> SparseIndex<E> {
    /// A new, empty index; creates or truncates the file.
    pub(crate) fn create(path: PathBuf, base_offset: i64) -> io::Result<Self> {
        File::create(&path)?;
        Ok(SparseIndex {
            path,
            base_offset,
            entries: Vec::new(),
            persisted: 0,
        })
    }

    /// An empty index that stands for a file not read yet (a lazy segment's placeholder); it
    /// touches no file and is replaced before any use.
    pub(crate) fn unloaded(path: PathBuf, base_offset: i64) -> Self {
        SparseIndex {
            path,
            base_offset,
            entries: Vec::new(),
            persisted: 0,
        }
    }

    /// Loads and checks an index file for a segment whose `.log` holds `segment_size` bytes and
    /// whose offsets stay below `offset_limit` (the next segment's base offset, if any). The
    /// file must be whole entries, non-empty unless the log is empty, strictly increasing in
    /// both columns, with offsets inside the segment, and pass the kind's own checks.
    pub(crate) fn load(
        path: PathBuf,
        base_offset: i64,
        segment_size: u64,
        offset_limit: Option<i64>,
    ) -> Result<Self, String> {
        let buf = read_index_file(&path, E::SIZE)?;
        let entries: Vec<E> = buf.chunks_exact(E::SIZE).map(E::decode).collect();
        let bad = |why: String| Err(format!("{}: {why}", path.display()));
        if entries.is_empty() && segment_size > 0 {
            return bad("empty for a non-empty segment".into());
        }
        for w in entries.windows(2) {
            if !w[1].follows(&w[0]) {
                return bad(format!("entries {:?} and {:?} out of order", w[0], w[1]));
            }
        }
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            let rel = last.relative_offset();
            let last_offset = base_offset + i64::from(rel);
            if rel > i32::MAX as u32 || offset_limit.is_some_and(|limit| last_offset >= limit) {
                return bad(format!("entry offset {last_offset} beyond the segment"));
            }
            if let Err(why) = E::check_against_log(first, last, segment_size) {
                return bad(why);
            }
        }
        let persisted = entries.len();
        Ok(SparseIndex {
            path,
            base_offset,
            entries,
            persisted,
        })
    }

    /// The entries of an index file that may hold garbage past what was fsynced (the active
    /// segment's, after a crash): the whole entries up to the first that does not follow its
    /// predecessor. What they say must still be checked against the log before use.
    pub(crate) fn read_prefix(path: &Path, base_offset: i64) -> Vec<(i64, E)> {
        let mut buf = Vec::new();
        if File::open(path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .is_err()
        {
            return Vec::new();
        }
        let mut entries: Vec<(i64, E)> = Vec::new();
        for chunk in buf.chunks_exact(E::SIZE) {
            let entry = E::decode(chunk);
            if entries.last().is_some_and(|(_, last)| !entry.follows(last))
                || entry.relative_offset() > i32::MAX as u32
            {
                break;
            }
            entries.push((base_offset + i64::from(entry.relative_offset()), entry));
        }
        entries
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// `offset` relative to the segment's base, if an entry can hold it.
    pub(crate) fn relative(&self, offset: i64) -> Option<u32> {
        u32::try_from(offset - self.base_offset).ok()
    }

    /// Adds `entry` if it follows the last one; otherwise drops it (a sparse index stays correct
    /// without it) and returns false.
    pub(crate) fn maybe_append(&mut self, entry: E) -> bool {
        if self.entries.last().is_some_and(|last| !entry.follows(last)) {
            return false;
        }
        self.entries.push(entry);
        true
    }

    /// The entry with the greatest key <= `target`, or [`IndexEntry::before_first`].
    pub(crate) fn lookup(&self, target: i64) -> E {
        let n = self
            .entries
            .partition_point(|e| e.key(self.base_offset) <= target);
        n.checked_sub(1).map_or_else(E::before_first, |i| self.entries[i])
    }

    pub(crate) fn last_entry(&self) -> Option<E> {
        self.entries.last().copied()
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
        let mut bytes = Vec::with_capacity((self.entries.len() - self.persisted) * E::SIZE);
        for entry in &self.entries[self.persisted..] {
            entry.encode(&mut bytes);
        }
        append_and_sync(&self.path, &bytes)?;
        self.persisted = self.entries.len();
        Ok(())
    }
}

/// Reads a big-endian u32 at `at`.
pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::index::{OffsetIndex, OffsetPosition};
    use crate::log::time_index::{TimeIndex, TimestampOffset};

    /// Three offset index entries for a segment at 100: offsets 104, 110, 130 at 0, 500, 1200.
    fn offset_entries() -> [OffsetPosition; 3] {
        [(4, 0), (10, 500), (30, 1200)].map(|(r, p)| OffsetPosition::new(r, p))
    }

    /// Three time index entries for a segment at 100: timestamps 50, 80, 120 at 102, 110, 130.
    fn time_entries() -> [TimestampOffset; 3] {
        [(50, 2), (80, 10), (120, 30)].map(|(t, r)| TimestampOffset::new(t, r))
    }

    fn persisted<E: IndexEntry>(path: &Path, entries: &[E]) -> SparseIndex<E> {
        let mut idx = SparseIndex::create(path.to_path_buf(), 100).unwrap();
        for &e in entries {
            assert!(idx.maybe_append(e));
        }
        idx.persist().unwrap();
        idx
    }

    fn keys<E: IndexEntry>(entries: &[E]) -> Vec<i64> {
        entries.iter().map(|e| e.key(100)).collect()
    }

    /// Below the first key, at each key, between keys and past the last, in memory and after
    /// a reload.
    fn check_lookups<E: IndexEntry + PartialEq>(entries: [E; 3]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        let idx = persisted(&path, &entries);
        let loaded = SparseIndex::<E>::load(path, 100, 4096, None).unwrap();
        let k = keys(&entries);
        for idx in [&idx, &loaded] {
            assert_eq!(idx.len(), 3);
            assert_eq!(idx.lookup(i64::MIN), E::before_first());
            assert_eq!(idx.lookup(k[0] - 1), E::before_first());
            for i in 0..3 {
                assert_eq!(idx.lookup(k[i]), entries[i]);
                assert_eq!(idx.lookup(k[i] + 1), entries[i]);
            }
            assert_eq!(idx.lookup(k[1] - 1), entries[0]);
            assert_eq!(idx.lookup(i64::MAX), entries[2]);
            assert_eq!(idx.last_entry(), Some(entries[2]));
        }
        let empty = SparseIndex::<E>::create(dir.path().join("e"), 100).unwrap();
        assert_eq!(empty.lookup(i64::MAX), E::before_first());
        assert_eq!(empty.last_entry(), None);
    }

    #[test]
    fn lookups_of_both_kinds() {
        check_lookups(offset_entries());
        check_lookups(time_entries());
    }

    /// Damage every kind of index must reject on load. `beyond_i32` follows the entries but
    /// has a relative offset above `i32::MAX`.
    fn check_rejects_damage<E: IndexEntry>(entries: [E; 3], beyond_i32: E) {
        assert!(beyond_i32.follows(&entries[2]) && beyond_i32.relative_offset() > i32::MAX as u32);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        persisted(&path, &entries);
        let good = std::fs::read(&path).unwrap();
        assert_eq!(good.len(), 3 * E::SIZE);
        let load = |limit| SparseIndex::<E>::load(path.clone(), 100, 4096, limit);
        assert!(load(None).is_ok());
        assert!(load(Some(131)).is_ok());
        // The last entry's offset is at or past the next segment's base.
        assert!(load(Some(130)).is_err());
        // Torn at every length that is not a whole number of entries.
        for len in (1..good.len()).filter(|l| l % E::SIZE != 0) {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(load(None).is_err(), "accepted {len} bytes");
        }
        // A whole prefix is still a sound index (of the same rules).
        std::fs::write(&path, &good[..2 * E::SIZE]).unwrap();
        assert_eq!(load(None).unwrap().len(), 2);
        // Out of order, and a repeated entry.
        let s = E::SIZE;
        let mut swapped = good.clone();
        swapped[s..2 * s].copy_from_slice(&good[2 * s..]);
        swapped[2 * s..].copy_from_slice(&good[s..2 * s]);
        std::fs::write(&path, &swapped).unwrap();
        assert!(load(None).is_err());
        let mut repeated = good.clone();
        repeated.extend_from_slice(&good[2 * s..]);
        std::fs::write(&path, &repeated).unwrap();
        assert!(load(None).is_err());
        // A relative offset an i32 cannot hold, though in order.
        let mut bytes = good.clone();
        beyond_i32.encode(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        assert!(load(None).is_err());
        // Empty: only for an empty log. Missing: never.
        std::fs::write(&path, b"").unwrap();
        assert!(load(None).is_err());
        assert!(SparseIndex::<E>::load(path.clone(), 100, 0, None).is_ok());
        std::fs::remove_file(&path).unwrap();
        assert!(SparseIndex::<E>::load(path.clone(), 100, 0, None).is_err());
    }

    #[test]
    fn both_kinds_reject_damaged_files() {
        let beyond = i32::MAX as u32 + 1;
        check_rejects_damage(offset_entries(), OffsetPosition::new(beyond, 2000));
        check_rejects_damage(time_entries(), TimestampOffset::new(200, beyond));
    }

    #[test]
    fn appends_keep_both_columns_strictly_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = SparseIndex::create(dir.path().join("t"), 100).unwrap();
        for e in time_entries() {
            assert!(idx.maybe_append(e));
        }
        // Equal or smaller in either column.
        for (ts, rel) in [(120, 31), (121, 30), (200, 29), (10, 40)] {
            assert!(!idx.maybe_append(TimestampOffset::new(ts, rel)));
        }
        assert!(idx.maybe_append(TimestampOffset::new(121, 31)));
        assert_eq!(idx.len(), 4);
    }

    /// Kafka's layout, byte for byte: big-endian (relative offset u32, position u32) and
    /// (timestamp i64, relative offset u32), no header; persisting only appends.
    #[test]
    fn files_keep_kafkas_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let mut idx = OffsetIndex::create(path.clone(), 100).unwrap();
        idx.append(104, 0);
        idx.persist().unwrap();
        idx.append(0x0102_0304 + 100, 0x0a0b_0c0d);
        idx.persist().unwrap();
        idx.persist().unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            [0, 0, 0, 4, 0, 0, 0, 0, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d]
        );

        let path = dir.path().join("x.timeindex");
        let mut idx = TimeIndex::create(path.clone(), 100).unwrap();
        idx.maybe_append(0x0102_0304_0506_0708, 0x0a0b_0c0d + 100);
        idx.persist().unwrap();
        idx.maybe_append(i64::MAX, 0x0b00_0000 + 100);
        idx.persist().unwrap();
        #[rustfmt::skip]
        let expected = [
            1, 2, 3, 4, 5, 6, 7, 8, 0x0a, 0x0b, 0x0c, 0x0d,
            0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0b, 0, 0, 0,
        ];
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        let loaded = TimeIndex::load(path, 100, 1, None).unwrap();
        assert_eq!(loaded.last_entry(), Some((i64::MAX, 0x0b00_0000 + 100)));
    }
}

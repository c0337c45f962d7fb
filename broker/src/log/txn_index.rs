//! A segment's aborted-transaction index (Kafka's `.txnindex`): one 34-byte entry per
//! transaction aborted by a marker in the segment — version (i16, 0), producer id, first and
//! last offset of the transaction (the last is the marker's), and the last stable offset once
//! it ended. read_committed fetches hand the entries overlapping what they return to the
//! consumer, which drops those producers' records in those ranges; the log cleaner will use it
//! to remove aborted data.
//!
//! Entries are few (one per aborted transaction), so all of them are kept in memory as well;
//! the file exists only once the segment has one.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

const ENTRY_SIZE: usize = 34;
const VERSION: i16 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The offset of the ABORT marker.
    pub last_offset: i64,
    /// The partition's last stable offset once this transaction ended.
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self) -> [u8; ENTRY_SIZE] {
        let mut b = [0u8; ENTRY_SIZE];
        b[0..2].copy_from_slice(&VERSION.to_be_bytes());
        b[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        b[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        b[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        b[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<AbortedTxn> {
        let i64_at = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        (i16::from_be_bytes([b[0], b[1]]) == VERSION).then(|| AbortedTxn {
            producer_id: i64_at(2),
            first_offset: i64_at(10),
            last_offset: i64_at(18),
            last_stable_offset: i64_at(26),
        })
    }
}

pub(crate) struct TransactionIndex {
    path: PathBuf,
    file: Option<File>,
    entries: Vec<AbortedTxn>,
    /// Entries written since the last `flush`.
    dirty: bool,
}

impl TransactionIndex {
    /// Reads the index at `path` if there is one. A torn last entry (a crash mid-write) and
    /// anything unreadable after it are dropped: recovery writes those entries again from the
    /// markers in the log.
    pub(crate) fn open(path: PathBuf) -> io::Result<TransactionIndex> {
        let mut index = TransactionIndex {
            path,
            file: None,
            entries: Vec::new(),
            dirty: false,
        };
        let bytes = match std::fs::read(&index.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(index),
            Err(e) => return Err(e),
        };
        for chunk in bytes.chunks_exact(ENTRY_SIZE) {
            match AbortedTxn::decode(chunk) {
                Some(e) => index.entries.push(e),
                None => break,
            }
        }
        let file = OpenOptions::new().read(true).write(true).open(&index.path)?;
        let valid = (index.entries.len() * ENTRY_SIZE) as u64;
        if valid != bytes.len() as u64 {
            file.set_len(valid)?;
        }
        index.file = Some(file);
        Ok(index)
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    pub(crate) fn append(&mut self, entry: AbortedTxn) -> io::Result<()> {
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&self.path)?,
            );
        }
        let file = self.file.as_ref().expect("opened above");
        file.write_all_at(&entry.encode(), (self.entries.len() * ENTRY_SIZE) as u64)?;
        self.entries.push(entry);
        self.dirty = true;
        Ok(())
    }

    /// Drops the entries of transactions aborted at or after `offset` (they are replayed from
    /// the log).
    pub(crate) fn truncate_from(&mut self, offset: i64) -> io::Result<()> {
        let keep = self.entries.iter().take_while(|e| e.last_offset < offset).count();
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            if let Some(file) = &self.file {
                file.set_len((keep * ENTRY_SIZE) as u64)?;
                self.dirty = true;
            }
        }
        Ok(())
    }

    /// Kafka's `collectAbortedTxns`: the transactions that end at or after `start` and begin
    /// before `upper_bound`, and whether the search may stop here (an entry whose last stable
    /// offset reaches `upper_bound` means no later segment holds one that overlaps).
    pub(crate) fn collect(&self, start: i64, upper_bound: i64, out: &mut Vec<AbortedTxn>) -> bool {
        for e in &self.entries {
            if e.last_offset >= start && e.first_offset < upper_bound {
                out.push(*e);
            }
            if e.last_stable_offset >= upper_bound {
                return true;
            }
        }
        false
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if self.dirty {
            if let Some(file) = &self.file {
                super::durable::sync_data(file)?;
            }
            self.dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn entries_are_kafkas_34_bytes_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut index = TransactionIndex::open(path.clone()).unwrap();
        assert!(!path.exists(), "no file until the first entry");
        index.append(txn(7, 0, 3, 4)).unwrap();
        index.append(txn(8, 2, 6, 7)).unwrap();
        index.flush().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 68);
        assert_eq!(&bytes[..2], &[0, 0]);
        assert_eq!(&bytes[2..10], &7i64.to_be_bytes());
        assert_eq!(&bytes[26..34], &4i64.to_be_bytes());
        // A torn third entry is dropped at open.
        std::fs::write(&path, [&bytes[..], &[0u8; 10]].concat()).unwrap();
        let index = TransactionIndex::open(path.clone()).unwrap();
        assert_eq!(index.entries(), &[txn(7, 0, 3, 4), txn(8, 2, 6, 7)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 68);
    }

    #[test]
    fn collect_returns_overlapping_transactions_and_knows_when_to_stop() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TransactionIndex::open(dir.path().join("x.txnindex")).unwrap();
        index.append(txn(1, 0, 3, 2)).unwrap();
        index.append(txn(2, 2, 6, 7)).unwrap();
        index.append(txn(3, 10, 12, 13)).unwrap();
        let mut out = Vec::new();
        assert!(index.collect(4, 7, &mut out), "lso 7 reaches the upper bound");
        assert_eq!(out, vec![txn(2, 2, 6, 7)]);
        out.clear();
        assert!(!index.collect(0, 20, &mut out));
        assert_eq!(out.len(), 3);
        index.truncate_from(6).unwrap();
        assert_eq!(index.entries(), &[txn(1, 0, 3, 2)]);
    }
}

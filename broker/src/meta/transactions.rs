//! The `transactions` column family: each transactional id's state, in place of Kafka's
//! `__transaction_state` topic. One synced write per state transition.

use rocksdb::IteratorMode;

use super::codec::{Reader, Writer};
use super::CommittedOffset;
use super::{MetaError, MetaStore, CF_TRANSACTIONS};

/// What Kafka's TransactionLogValue holds, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRecord {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    /// Kafka's state id: Empty 0, Ongoing 1, PrepareCommit 2, PrepareAbort 3, CompleteCommit 4,
    /// CompleteAbort 5.
    pub state: i8,
    /// The partitions written in the transaction, as (topic, partition).
    pub partitions: Vec<(String, i32)>,
    pub start_timestamp: i64,
    pub last_update_timestamp: i64,
    /// Offsets committed in the transaction (TxnOffsetCommit), applied to their groups when it
    /// commits: (group, topic, partition, offset).
    pub offsets: Vec<(String, String, i32, CommittedOffset)>,
}

const VERSION: u8 = 2;

impl TransactionRecord {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(VERSION);
        w.i64(self.producer_id)
            .i32(i32::from(self.producer_epoch))
            .i32(self.timeout_ms)
            .i32(i32::from(self.state))
            .i64(self.start_timestamp)
            .i64(self.last_update_timestamp)
            .i32(self.partitions.len() as i32);
        for (topic, partition) in &self.partitions {
            w.bytes(topic.as_bytes()).i32(*partition);
        }
        w.i32(self.offsets.len() as i32);
        for (group, topic, partition, o) in &self.offsets {
            w.bytes(group.as_bytes())
                .bytes(topic.as_bytes())
                .i32(*partition)
                .i64(o.offset)
                .i32(o.leader_epoch)
                .bytes(o.metadata.as_bytes())
                .i64(o.commit_timestamp_ms);
        }
        w.finish()
    }

    fn decode(buf: &[u8]) -> Option<TransactionRecord> {
        let (mut r, version) = Reader::new(buf)?;
        // Version 1 records had no offsets.
        if version != VERSION && version != 1 {
            return None;
        }
        let producer_id = r.i64()?;
        let producer_epoch = i16::try_from(r.i32()?).ok()?;
        let timeout_ms = r.i32()?;
        let state = i8::try_from(r.i32()?).ok()?;
        let start_timestamp = r.i64()?;
        let last_update_timestamp = r.i64()?;
        let n = r.i32()?;
        let mut partitions = Vec::with_capacity(n.clamp(0, 1024) as usize);
        for _ in 0..n {
            partitions.push((r.string()?, r.i32()?));
        }
        let mut offsets = Vec::new();
        if version >= 2 {
            for _ in 0..r.i32()? {
                let (group, topic, partition) = (r.string()?, r.string()?, r.i32()?);
                let o = CommittedOffset {
                    offset: r.i64()?,
                    leader_epoch: r.i32()?,
                    metadata: r.string()?,
                    commit_timestamp_ms: r.i64()?,
                };
                offsets.push((group, topic, partition, o));
            }
        }
        Some(TransactionRecord {
            producer_id,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            start_timestamp,
            last_update_timestamp,
            offsets,
        })
    }
}

impl MetaStore {
    /// Every stored transactional id with its state.
    pub fn transactions(&self) -> Result<Vec<(String, TransactionRecord)>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_TRANSACTIONS), IteratorMode::Start) {
            let (key, value) = item?;
            let id = String::from_utf8_lossy(&key).into_owned();
            let record = TransactionRecord::decode(&value).ok_or(MetaError::Corrupt {
                what: "transaction",
                key: id.clone(),
            })?;
            out.push((id, record));
        }
        Ok(out)
    }

    /// Stores a transactional id's new state, synced before it returns.
    pub fn put_transaction(
        &self,
        transactional_id: &str,
        record: &TransactionRecord,
    ) -> Result<(), MetaError> {
        self.writable()?;
        self.db.put_cf_opt(
            self.cf(CF_TRANSACTIONS),
            transactional_id.as_bytes(),
            record.encode(),
            &Self::durable(),
        )?;
        Ok(())
    }

    pub fn delete_transaction(&self, transactional_id: &str) -> Result<(), MetaError> {
        self.writable()?;
        self.db.delete_cf_opt(
            self.cf(CF_TRANSACTIONS),
            transactional_id.as_bytes(),
            &Self::durable(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let record = TransactionRecord {
            producer_id: 7,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: 1,
            partitions: vec![("orders".into(), 0), ("orders".into(), 2)],
            start_timestamp: 1000,
            last_update_timestamp: 2000,
            offsets: vec![(
                "g".into(),
                "orders".into(),
                2,
                CommittedOffset {
                    offset: 42,
                    leader_epoch: 0,
                    metadata: "m".into(),
                    commit_timestamp_ms: 1500,
                },
            )],
        };
        {
            let store = MetaStore::open(dir.path()).unwrap();
            store.put_transaction("t1", &record).unwrap();
            store.put_transaction("gone", &record).unwrap();
            store.delete_transaction("gone").unwrap();
        }
        let store = MetaStore::open(dir.path()).unwrap();
        assert_eq!(store.transactions().unwrap(), vec![("t1".to_string(), record)]);
    }
}

//! The `producers` column family: the producer-id allocator and each partition's producer-state
//! snapshots (in place of Kafka's `.snapshot` files beside the segments).

use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};

use super::{MetaError, MetaStore, CF_PRODUCERS};

/// The first id not yet handed out in any block, as 8 big-endian bytes.
const NEXT_PRODUCER_ID: &[u8] = b"next_producer_id";
/// Snapshot keys: this byte, the topic id, the partition and the snapshot's offset (big-endian,
/// so a partition's snapshots sort by offset).
const SNAPSHOT: u8 = b'S';
/// Snapshots kept per partition: the newest, and one older in case the newest is beyond a log
/// that a crash cut back.
const SNAPSHOTS_KEPT: usize = 2;

fn partition_prefix(topic_id: &uuid::Uuid, partition: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(29);
    key.push(SNAPSHOT);
    key.extend_from_slice(topic_id.as_bytes());
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn snapshot_key(topic_id: &uuid::Uuid, partition: i32, offset: i64) -> Vec<u8> {
    let mut key = partition_prefix(topic_id, partition);
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

impl MetaStore {
    /// Reserves `count` producer ids and returns the first. The reservation is synced before it
    /// returns, so no id is ever handed out twice, across restarts and crashes included.
    pub fn reserve_producer_ids(&self, count: i64) -> Result<i64, MetaError> {
        let cf = self.cf(CF_PRODUCERS);
        let start = match self.db.get_cf(cf, NEXT_PRODUCER_ID)? {
            None => 0,
            Some(v) => i64::from_be_bytes(v.as_slice().try_into().map_err(|_| MetaError::Corrupt {
                what: "producer id block",
                key: String::from_utf8_lossy(NEXT_PRODUCER_ID).into_owned(),
            })?),
        };
        self.writable()?;
        self.db.put_cf_opt(
            cf,
            NEXT_PRODUCER_ID,
            (start + count).to_be_bytes(),
            &Self::durable(),
        )?;
        Ok(start)
    }

    /// A partition's stored snapshots as (offset, bytes), oldest first.
    pub fn producer_snapshots(
        &self,
        topic_id: &uuid::Uuid,
        partition: i32,
    ) -> Result<Vec<(i64, Vec<u8>)>, MetaError> {
        let prefix = partition_prefix(topic_id, partition);
        let mut out = Vec::new();
        let from = IteratorMode::From(&prefix, Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_PRODUCERS), from) {
            let (key, value) = item?;
            let Some(offset) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let offset = i64::from_be_bytes(offset.try_into().map_err(|_| MetaError::Corrupt {
                what: "producer snapshot key",
                key: format!("{key:?}"),
            })?);
            out.push((offset, value.to_vec()));
        }
        Ok(out)
    }

    /// Stores a partition's snapshot and drops all but the newest few. Not synced: a snapshot
    /// only shortens the replay at open, and one lost in a crash is replaced by the log itself.
    pub fn put_producer_snapshot(
        &self,
        topic_id: &uuid::Uuid,
        partition: i32,
        offset: i64,
        snapshot: &[u8],
    ) -> Result<(), MetaError> {
        let cf = self.cf(CF_PRODUCERS);
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, snapshot_key(topic_id, partition, offset), snapshot);
        // Newer ones describe a log that a crash cut back: they go. Of the older ones (listed
        // oldest first) the newest stay.
        let mut older = Vec::new();
        for (o, _) in self.producer_snapshots(topic_id, partition)? {
            if o > offset {
                batch.delete_cf(cf, snapshot_key(topic_id, partition, o));
            } else if o < offset {
                older.push(o);
            }
        }
        let excess = older.len().saturating_sub(SNAPSHOTS_KEPT - 1);
        for o in &older[..excess] {
            batch.delete_cf(cf, snapshot_key(topic_id, partition, *o));
        }
        self.writable()?;
        self.db.write_opt(batch, &WriteOptions::default())?;
        Ok(())
    }

    /// Drops the snapshots of a partition at offsets above `offset` (its log no longer reaches
    /// them), or all of them with `offset` = -1.
    pub fn delete_producer_snapshots_above(
        &self,
        topic_id: &uuid::Uuid,
        partition: i32,
        offset: i64,
    ) -> Result<(), MetaError> {
        let cf = self.cf(CF_PRODUCERS);
        let mut batch = WriteBatch::default();
        for (o, _) in self.producer_snapshots(topic_id, partition)? {
            if o > offset {
                batch.delete_cf(cf, snapshot_key(topic_id, partition, o));
            }
        }
        self.writable()?;
        self.db.write_opt(batch, &WriteOptions::default())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_id_blocks_never_overlap_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let store = MetaStore::open(dir.path()).unwrap();
            (
                store.reserve_producer_ids(1000).unwrap(),
                store.reserve_producer_ids(1000).unwrap(),
            )
        };
        assert_eq!((a, b), (0, 1000));
        let store = MetaStore::open(dir.path()).unwrap();
        assert_eq!(store.reserve_producer_ids(1000).unwrap(), 2000);
    }

    #[test]
    fn only_the_newest_two_snapshots_of_a_partition_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(dir.path()).unwrap();
        let (t, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        for offset in [10, 30, 20] {
            store
                .put_producer_snapshot(&t, 0, offset, &[offset as u8])
                .unwrap();
        }
        store.put_producer_snapshot(&t, 1, 5, b"p1").unwrap();
        store.put_producer_snapshot(&other, 0, 7, b"other").unwrap();
        // Writing 20 after 30 means 30 described a log that was cut back: it goes.
        assert_eq!(
            store.producer_snapshots(&t, 0).unwrap(),
            vec![(10, vec![10]), (20, vec![20])]
        );
        store.put_producer_snapshot(&t, 0, 40, b"40").unwrap();
        let offsets: Vec<i64> = store
            .producer_snapshots(&t, 0)
            .unwrap()
            .iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(offsets, [20, 40]);
        store.delete_producer_snapshots_above(&t, 0, 20).unwrap();
        assert_eq!(store.producer_snapshots(&t, 0).unwrap().len(), 1);
        store.delete_producer_snapshots_above(&t, 0, -1).unwrap();
        assert!(store.producer_snapshots(&t, 0).unwrap().is_empty());
        assert_eq!(
            store.producer_snapshots(&t, 1).unwrap(),
            vec![(5, b"p1".to_vec())]
        );
        assert_eq!(store.producer_snapshots(&other, 0).unwrap().len(), 1);
    }
}

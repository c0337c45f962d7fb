//! The `topics` column family: name → id, partition count and config overrides.

use std::collections::BTreeMap;

use rocksdb::IteratorMode;

use super::codec::{Reader, Writer};
use super::{MetaError, MetaStore, CF_TOPICS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRecord {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: i32,
    /// Only the settings set on this topic; defaults are resolved at read time.
    pub configs: BTreeMap<String, String>,
}

const VERSION: u8 = 1;

impl TopicRecord {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(VERSION);
        w.bytes(self.id.as_bytes())
            .i32(self.partitions)
            .i32(self.configs.len() as i32);
        for (k, v) in &self.configs {
            w.bytes(k.as_bytes()).bytes(v.as_bytes());
        }
        w.finish()
    }

    fn decode(name: &str, buf: &[u8]) -> Option<TopicRecord> {
        let (mut r, version) = Reader::new(buf)?;
        if version != VERSION {
            return None;
        }
        let id = uuid::Uuid::from_slice(r.bytes()?).ok()?;
        let partitions = r.i32()?;
        let n = r.i32()?;
        let mut configs = BTreeMap::new();
        for _ in 0..n {
            configs.insert(r.string()?, r.string()?);
        }
        Some(TopicRecord {
            name: name.to_string(),
            id,
            partitions,
            configs,
        })
    }
}

impl MetaStore {
    pub fn topics(&self) -> Result<Vec<TopicRecord>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_TOPICS), IteratorMode::Start) {
            let (key, value) = item?;
            let name = String::from_utf8_lossy(&key).into_owned();
            let record = TopicRecord::decode(&name, &value).ok_or(MetaError::Corrupt {
                what: "topic",
                key: name,
            })?;
            out.push(record);
        }
        Ok(out)
    }

    pub fn put_topic(&self, topic: &TopicRecord) -> Result<(), MetaError> {
        self.writable()?;
        self.db.put_cf_opt(
            self.cf(CF_TOPICS),
            topic.name.as_bytes(),
            topic.encode(),
            &Self::durable(),
        )?;
        Ok(())
    }

    /// Not held back on a full filesystem: deleting a topic is how an operator frees space.
    pub fn delete_topic(&self, name: &str) -> Result<(), MetaError> {
        self.db
            .delete_cf_opt(self.cf(CF_TOPICS), name.as_bytes(), &Self::durable())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_through_rocksdb_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let record = TopicRecord {
            name: "orders".into(),
            id: uuid::Uuid::new_v4(),
            partitions: 3,
            configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
        };
        {
            let store = MetaStore::open(dir.path()).unwrap();
            store.put_topic(&record).unwrap();
            store
                .put_topic(&TopicRecord {
                    name: "gone".into(),
                    ..record.clone()
                })
                .unwrap();
            store.delete_topic("gone").unwrap();
            store.close().unwrap();
        }
        let store = MetaStore::open(dir.path()).unwrap();
        assert_eq!(store.topics().unwrap(), vec![record]);
    }
}

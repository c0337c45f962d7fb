//! The `configs` column family: settings changed at run time, by the entity they belong to —
//! this broker, the cluster-wide broker default, or one group. Topic settings live with their
//! topic record instead.

use std::collections::BTreeMap;

use rocksdb::IteratorMode;

use super::codec::{Reader, Writer};
use super::{MetaError, MetaStore, CF_CONFIGS};

/// The entity a set of dynamic settings belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigEntity {
    /// One broker, by node id.
    Broker(i32),
    /// The default of every broker.
    BrokerDefault,
    Group(String),
}

const VERSION: u8 = 1;

impl ConfigEntity {
    fn key(&self) -> Vec<u8> {
        match self {
            ConfigEntity::Broker(id) => format!("broker/{id}").into_bytes(),
            ConfigEntity::BrokerDefault => b"broker-default".to_vec(),
            ConfigEntity::Group(name) => [b"group/".as_slice(), name.as_bytes()].concat(),
        }
    }

    fn from_key(key: &[u8]) -> Option<ConfigEntity> {
        let key = std::str::from_utf8(key).ok()?;
        if key == "broker-default" {
            return Some(ConfigEntity::BrokerDefault);
        }
        if let Some(id) = key.strip_prefix("broker/") {
            return id.parse().ok().map(ConfigEntity::Broker);
        }
        key.strip_prefix("group/")
            .map(|g| ConfigEntity::Group(g.to_string()))
    }
}

fn encode(configs: &BTreeMap<String, String>) -> Vec<u8> {
    let mut w = Writer::new(VERSION);
    w.i32(configs.len() as i32);
    for (k, v) in configs {
        w.bytes(k.as_bytes()).bytes(v.as_bytes());
    }
    w.finish()
}

fn decode(buf: &[u8]) -> Option<BTreeMap<String, String>> {
    let (mut r, version) = Reader::new(buf)?;
    if version != VERSION {
        return None;
    }
    let n = r.i32()?;
    let mut configs = BTreeMap::new();
    for _ in 0..n {
        configs.insert(r.string()?, r.string()?);
    }
    Some(configs)
}

impl MetaStore {
    /// Every entity's dynamic settings.
    pub fn dynamic_configs(&self) -> Result<BTreeMap<ConfigEntity, BTreeMap<String, String>>, MetaError> {
        let mut out = BTreeMap::new();
        for item in self.db.iterator_cf(self.cf(CF_CONFIGS), IteratorMode::Start) {
            let (key, value) = item?;
            let corrupt = || MetaError::Corrupt {
                what: "dynamic config",
                key: String::from_utf8_lossy(&key).into_owned(),
            };
            let entity = ConfigEntity::from_key(&key).ok_or_else(corrupt)?;
            out.insert(entity, decode(&value).ok_or_else(corrupt)?);
        }
        Ok(out)
    }

    /// Replaces an entity's dynamic settings; an empty set removes its record.
    pub fn put_dynamic_configs(
        &self,
        entity: &ConfigEntity,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), MetaError> {
        let cf = self.cf(CF_CONFIGS);
        if configs.is_empty() {
            self.writable_for_operator()?;
            self.db.delete_cf_opt(cf, entity.key(), &Self::durable())?;
        } else {
            self.writable_for_operator()?;
            self.db
                .put_cf_opt(cf, entity.key(), encode(configs), &Self::durable())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_configs_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let broker = BTreeMap::from([("log.cleanup.policy".to_string(), "compact".to_string())]);
        let group = BTreeMap::from([("consumer.session.timeout.ms".to_string(), "50000".to_string())]);
        {
            let store = MetaStore::open(dir.path()).unwrap();
            store
                .put_dynamic_configs(&ConfigEntity::Broker(1), &broker)
                .unwrap();
            store
                .put_dynamic_configs(&ConfigEntity::BrokerDefault, &broker)
                .unwrap();
            store
                .put_dynamic_configs(&ConfigEntity::Group("g/1".into()), &group)
                .unwrap();
            store
                .put_dynamic_configs(&ConfigEntity::BrokerDefault, &BTreeMap::new())
                .unwrap();
            store.close().unwrap();
        }
        let store = MetaStore::open(dir.path()).unwrap();
        let all = store.dynamic_configs().unwrap();
        assert_eq!(
            all,
            BTreeMap::from([
                (ConfigEntity::Broker(1), broker),
                (ConfigEntity::Group("g/1".into()), group),
            ])
        );
    }
}

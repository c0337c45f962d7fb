//! InitProducerId for idempotent producers (no transactional id): fresh producer ids, never
//! reused across restarts.
//!
//! Ids come from blocks reserved in the metadata store, as Kafka's brokers take blocks of 1000
//! from the controller: one synced write per thousand producers, none per request otherwise.

use std::sync::Mutex;

use crate::error::BrokerError;
use crate::meta::{MetaError, MetaStore};

/// Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`.
const BLOCK_SIZE: i64 = 1000;

/// "No producer id" / "no epoch" in InitProducerId requests.
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;

pub struct ProducerIdManager {
    /// The next id to hand out and the end of the reserved block.
    block: Mutex<(i64, i64)>,
}

impl Default for ProducerIdManager {
    fn default() -> Self {
        ProducerIdManager {
            block: Mutex::new((0, 0)),
        }
    }
}

impl ProducerIdManager {
    /// A producer id no one has had. May reserve a new block (a synced RocksDB write), so it
    /// runs on a storage thread.
    pub fn generate(&self, meta: &MetaStore) -> Result<i64, MetaError> {
        let mut block = self.block.lock().unwrap_or_else(|e| e.into_inner());
        if block.0 >= block.1 {
            let start = meta.reserve_producer_ids(BLOCK_SIZE)?;
            *block = (start, start + BLOCK_SIZE);
            tracing::debug!(start, end = block.1, "producer id block reserved");
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }

    /// Kafka's InitProducerId for a producer without a transactional id: the request's
    /// producer id and epoch (KIP-360) must be both set or both unset, and either way the
    /// producer gets a new id at epoch 0 — Kafka's coordinator ignores the old pair for an
    /// idempotent producer rather than bumping its epoch.
    pub fn init_idempotent(
        &self,
        meta: &MetaStore,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(i64, i16), BrokerError> {
        if (producer_id == NO_PRODUCER_ID) != (producer_epoch == NO_PRODUCER_EPOCH) {
            return Err(BrokerError::InvalidRequest(format!(
                "Invalid producer id {producer_id} and epoch {producer_epoch}: both or neither must be set"
            )));
        }
        let id = self.generate(meta).map_err(|e| {
            tracing::error!(error = %e, "cannot reserve producer ids");
            BrokerError::CoordinatorNotAvailable(format!("cannot reserve producer ids: {e}"))
        })?;
        Ok((id, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_blocks_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2 {
            let meta = MetaStore::open(dir.path()).unwrap();
            let ids = ProducerIdManager::default();
            for _ in 0..1500 {
                assert!(seen.insert(ids.generate(&meta).unwrap()));
            }
        }
        assert_eq!(seen.len(), 3000);
    }

    #[test]
    fn a_half_set_producer_id_and_epoch_is_an_invalid_request() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(dir.path()).unwrap();
        let ids = ProducerIdManager::default();
        for (pid, epoch) in [(-1, 3), (7, -1)] {
            assert!(matches!(
                ids.init_idempotent(&meta, pid, epoch),
                Err(BrokerError::InvalidRequest(_))
            ));
        }
        let (first, e) = ids.init_idempotent(&meta, -1, -1).unwrap();
        assert_eq!(e, 0);
        // A KIP-360 "bump" by an idempotent producer gets a new id, not epoch + 1.
        let (second, e) = ids.init_idempotent(&meta, first, 0).unwrap();
        assert!(second > first && e == 0);
    }
}

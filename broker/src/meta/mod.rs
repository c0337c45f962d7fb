//! The RocksDB store: one database, a column family per kind of state, typed accessors.
//! Nothing else in the broker touches RocksDB.

mod codec;
mod configs;
mod groups;
pub mod identity;
mod producers;
mod topics;
mod transactions;

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, Options, WriteOptions, DB};

pub use configs::ConfigEntity;
pub use groups::{
    CommittedOffset, ConsumerGroupRecord, ConsumerMemberRecord, GroupRecord, GroupWrite, MemberRecord,
    TopicIdPartitions,
};
pub use topics::TopicRecord;
pub use transactions::TransactionRecord;

/// Column families, created on first open.
const CF_TOPICS: &str = "topics";
const CF_OFFSETS: &str = "offsets";
const CF_GROUPS: &str = "groups";
const CF_CONFIGS: &str = "configs";
const CF_PRODUCERS: &str = "producers";
const CF_TRANSACTIONS: &str = "transactions";
const COLUMN_FAMILIES: &[&str] = &[
    CF_TOPICS,
    CF_OFFSETS,
    CF_GROUPS,
    CF_CONFIGS,
    CF_PRODUCERS,
    CF_TRANSACTIONS,
];

/// Cloneable so that one failed group-committed write can be reported to every change in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetaError {
    #[error("metadata store: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("metadata store holds an unreadable {what} record under key {key:?}")]
    Corrupt { what: &'static str, key: String },
    /// The writer that group-commits changes has stopped.
    #[error("metadata store writer has stopped")]
    Closed,
    /// The writer thread could not be started.
    #[error("cannot start the metadata store writer: {0}")]
    Writer(String),
}

pub struct MetaStore {
    db: DB,
}

impl MetaStore {
    pub fn open(path: &Path) -> Result<MetaStore, MetaError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Metadata is small; keep RocksDB's own footprint (threads, memtables) modest.
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(MetaStore { db })
    }

    /// Every write is synced to the WAL before it returns: a state change the broker has
    /// acknowledged to a client survives a crash.
    fn durable() -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        w
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // The column families are created at open, so a missing one is a programming error.
        self.db.cf_handle(name).expect("column family created at open")
    }

    /// Flushes memtables so the next start replays nothing; called on clean shutdown.
    pub fn close(&self) -> Result<(), MetaError> {
        for name in COLUMN_FAMILIES {
            self.db.flush_cf(self.cf(name))?;
        }
        Ok(())
    }
}

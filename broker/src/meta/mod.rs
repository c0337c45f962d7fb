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
use std::sync::Arc;

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
    /// Writes are held back: the log directory's filesystem is full or above the hard disk
    /// pressure threshold.
    #[error("the log directory's filesystem is full: metadata writes are held back until space returns")]
    NoSpace,
}

impl MetaError {
    /// A write that failed because the filesystem is full: an environment condition (the
    /// caller answers retriably and logs a warning), not a fault of the broker.
    pub fn is_no_space(&self) -> bool {
        match self {
            MetaError::NoSpace => true,
            MetaError::RocksDb(e) => {
                let text = e.to_string();
                text.contains("No space left")
                    || text.contains("NoSpace")
                    || text.contains("Disk quota exceeded")
            }
            _ => false,
        }
    }
}

/// How far writes are held back now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WriteHold {
    /// Every write goes ahead.
    None,
    /// Hard disk pressure: the broker's own writes (group commits, transactions, producer
    /// state, topic records) wait; an operator's settings still go through.
    Pressure,
    /// No room: nothing is written.
    Full,
}

type WriteHoldFn = Arc<dyn Fn() -> WriteHold + Send + Sync>;

pub struct MetaStore {
    db: DB,
    /// Set by the log manager: while it says so (a full filesystem, hard disk pressure), every
    /// write is refused before RocksDB sees it, since a write that fails for want of space
    /// leaves RocksDB refusing every later write until it is reopened.
    hold: std::sync::RwLock<Option<WriteHoldFn>>,
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
        Ok(MetaStore {
            db,
            hold: std::sync::RwLock::new(None),
        })
    }

    /// Holds writes back (`MetaError::NoSpace`) as far as `hold` says, asked at each write.
    pub fn hold_writes_while(&self, hold: impl Fn() -> WriteHold + Send + Sync + 'static) {
        *self.hold.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hold));
    }

    fn held(&self) -> WriteHold {
        let hold = self.hold.read().unwrap_or_else(|e| e.into_inner());
        hold.as_ref().map_or(WriteHold::None, |f| f())
    }

    /// Refuses one of the broker's own writes while writes are held back.
    fn writable(&self) -> Result<(), MetaError> {
        match self.held() {
            WriteHold::None => Ok(()),
            _ => Err(MetaError::NoSpace),
        }
    }

    /// Refuses an operator's write (a setting) only when there is no room at all.
    fn writable_for_operator(&self) -> Result<(), MetaError> {
        match self.held() {
            WriteHold::Full => Err(MetaError::NoSpace),
            _ => Ok(()),
        }
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

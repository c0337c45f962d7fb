//! The partition log: Kafka's on-disk layout (segments of v2 record batches with sparse
//! `.index` and `.timeindex` files), kept as bytes end to end.
//!
//! The log layer knows nothing of the wire protocol: the protocol handlers map [`LogError`] to
//! Kafka error codes. Produce and fetch never decode record batches below the 61-byte batch
//! header; only ListOffsets by timestamp decodes the one batch it lands in, as Kafka does.

mod batch;
mod cleaner;
mod compression;
mod config;
mod control;
mod durable;
mod flusher;
mod index;
mod log_dir;
mod offset_lookup;
mod partition_log;
mod producer_state;
mod record;
mod recovery;
mod recovery_checkpoint;
mod segment;
mod sparse_index;
mod time_index;
mod txn_index;
mod validator;
mod walker;

#[cfg(test)]
pub(crate) mod testutil;

use std::sync::Arc;

pub use batch::{validate_produce_batch, BatchHeaders, RecordBatchHeader, BATCH_HEADER_SIZE};
pub use cleaner::{clean, cleanable, CleanOptions, CleanStats, Cleanable, OffsetMap};
pub use config::{LogConfig, TimestampType};
pub use control::TxnMarker;
pub use flusher::Flusher;
pub use log_dir::{
    fs_usage, read_partition_metadata, sync_dir, write_partition_metadata, FsUsage, LogDirHealth,
};
pub use offset_lookup::{FoundOffset, OffsetSpec};
pub use partition_log::{AppendInfo, DeletedSegments, LogPosition, PartitionLog, ReadResult};
pub use producer_state::{
    BatchMetadata, CompletedTxn, ProducerSnapshot, ProducerStateEntry, ProducerStateTable, BATCHES_TO_RETAIN,
};
pub use recovery_checkpoint::{
    clear_clean_shutdown, had_clean_shutdown, mark_clean_shutdown, read_offset_checkpoint,
    read_recovery_points, write_offset_checkpoint, write_recovery_points, RecoveryHint,
};
pub use segment::TimestampedBatch;
pub use txn_index::AbortedTxn;
pub use validator::{decode_batches, validate_records};

/// Errors of the log layer. Cloneable so that one failed group-commit fsync can be reported to
/// every producer waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// Bytes that fail structural or CRC checks (Kafka's CORRUPT_MESSAGE).
    #[error("corrupt record: {0}")]
    CorruptRecord(String),
    /// A well-formed batch that breaks a produce rule (Kafka's INVALID_RECORD).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("record batch of {size} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge { size: usize, max: usize },
    /// A batch larger than a whole segment (Kafka's RECORD_LIST_TOO_LARGE).
    #[error("Message batch size is {size} bytes in append, which exceeds the maximum configured segment size of {max}.")]
    RecordBatchTooLarge { size: usize, max: u64 },
    /// Records refused one by one (INVALID_RECORD), by index: a missing key in a compacted
    /// topic.
    #[error("One or more records have been rejected due to {} record errors in total", .0.len())]
    InvalidRecords(Vec<(i32, String)>),
    /// Records whose timestamps are out of the accepted window (INVALID_TIMESTAMP), by index.
    #[error("One or more records have been rejected due to invalid timestamp")]
    InvalidTimestamp(Vec<(i32, String)>),
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    /// A producer's batch that does not follow its last one (OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// A batch from a producer epoch older than the partition has seen (INVALID_PRODUCER_EPOCH).
    #[error("{0}")]
    InvalidProducerEpoch(String),
    /// A producer's write that does not fit its transaction's state (INVALID_TXN_STATE).
    #[error("{0}")]
    InvalidTxnState(String),
    /// A write found the filesystem full: nothing was written (retriable, as disk pressure).
    #[error("no space left for the log: {0}")]
    NoSpace(String),
    /// The log directory was taken offline by an earlier I/O error (KAFKA_STORAGE_ERROR).
    #[error("log directory {0} is offline after an I/O error")]
    DirOffline(String),
    /// The log was deleted, or the flusher task is gone.
    #[error("log closed: {0}")]
    Closed(String),
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
}

impl From<std::io::Error> for LogError {
    fn from(e: std::io::Error) -> Self {
        LogError::Io(Arc::new(e))
    }
}

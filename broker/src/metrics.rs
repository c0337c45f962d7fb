//! Every metric name in one place, and the Prometheus recorder. The scrape endpoint, which also
//! computes the consumer-group gauges at each scrape, is `server::metrics_endpoint`.
//!
//! Consumer-group metrics carry kafka_exporter's names and labels, so existing dashboards and
//! alerts work unchanged.

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

pub const CONSUMERGROUP_CURRENT_OFFSET: &str = "kafka_consumergroup_current_offset";
pub const CONSUMERGROUP_LAG: &str = "kafka_consumergroup_lag";
pub const CONSUMERGROUP_LAG_SUM: &str = "kafka_consumergroup_lag_sum";
pub const CONSUMERGROUP_MEMBERS: &str = "kafka_consumergroup_members";
pub const TOPIC_PARTITION_CURRENT_OFFSET: &str = "kafka_topic_partition_current_offset";
pub const TOPIC_PARTITION_OLDEST_OFFSET: &str = "kafka_topic_partition_oldest_offset";
pub const PRODUCE_BYTES: &str = "keel_produce_bytes_total";
pub const FETCH_BYTES: &str = "keel_fetch_bytes_total";
/// Incremental fetch sessions cached (Kafka's NumIncrementalFetchSessions).
pub const FETCH_SESSIONS: &str = "keel_fetch_sessions";
/// Partitions those sessions cache (Kafka's NumIncrementalFetchPartitionsCached).
pub const FETCH_SESSION_PARTITIONS: &str = "keel_fetch_session_partitions";
/// Sessions created by full fetches.
pub const FETCH_SESSIONS_CREATED: &str = "keel_fetch_sessions_created_total";
/// Incremental fetches served on a session.
pub const FETCH_INCREMENTAL: &str = "keel_fetch_incremental_total";
/// Sessions evicted to make room for new ones (Kafka's IncrementalFetchSessionEvictionsPerSec).
pub const FETCH_SESSION_EVICTIONS: &str = "keel_fetch_session_evictions_total";
/// Produced batches recognised as an idempotent producer's retry of one already in the log:
/// answered with the original's offsets, not written again.
pub const PRODUCE_DUPLICATE_BATCHES: &str = "keel_produce_duplicate_batches_total";
/// Tasks run on the storage threads, by task name (`storage_task`).
pub const STORAGE_TASKS: &str = "keel_storage_tasks_total";
/// 1 for a log directory an I/O error took offline (by `dir`).
pub const LOG_DIR_OFFLINE: &str = "keel_log_dir_offline";
/// Client connections open now (each is a reader task and a writer task).
pub const CONNECTIONS_OPEN: &str = "keel_connections_open";
/// fsync passes of the acks=-1 flusher (one per log per pass; each covers every acks=-1 produce
/// to that log queued before it started).
pub const LOG_FLUSHES: &str = "keel_log_flushes_total";
/// Ticks of the group coordinator's timer task.
pub const GROUP_TIMER_TICKS: &str = "keel_group_timer_ticks_total";
/// Synced writes of group state and committed offsets (each may carry many changes).
pub const GROUP_STORE_WRITES: &str = "keel_group_store_writes_total";
/// Storage tasks running or queued now, by task name.
pub const STORAGE_TASKS_RUNNING: &str = "keel_storage_tasks_running";
/// 1 while the log directory's filesystem is above a disk pressure threshold (soft or hard).
pub const DISK_PRESSURE: &str = "keel_disk_pressure";
/// The disk pressure level: 0 none, 1 soft (only critical topics accept produce), 2 hard.
pub const DISK_PRESSURE_LEVEL: &str = "keel_disk_pressure_level";
/// Bytes in use on the log directory's filesystem.
pub const LOG_DIR_USED_BYTES: &str = "keel_log_dir_used_bytes";
/// Used fraction of the log directory's filesystem (df's Use%).
pub const LOG_DIR_USED_RATIO: &str = "keel_log_dir_used_ratio";
/// Bytes of compacted logs' dirty sections (written since their last cleaning, cleanable now):
/// the cleaner's backlog, summed over every compacted log at each cleaner pass.
pub const LOG_CLEANER_DIRTY_BYTES: &str = "keel_log_cleaner_dirty_bytes";
/// The highest dirty ratio among compacted logs at the last pass (Kafka's max-dirty-percent / 100).
pub const LOG_CLEANER_MAX_DIRTY_RATIO: &str = "keel_log_cleaner_max_dirty_ratio";
/// How far past max.compaction.lag.ms the most overdue dirty data is, in seconds.
pub const LOG_CLEANER_MAX_COMPACTION_DELAY: &str = "keel_log_cleaner_max_compaction_delay_seconds";
/// Bytes the cleaner read from the segments it rewrote.
pub const LOG_CLEANER_BYTES_READ: &str = "keel_log_cleaner_bytes_read_total";
/// Bytes the cleaner wrote into cleaned segments.
pub const LOG_CLEANER_BYTES_WRITTEN: &str = "keel_log_cleaner_bytes_written_total";
/// Cleaning rounds completed.
pub const LOG_CLEANER_ROUNDS: &str = "keel_log_cleaner_rounds_total";
/// Time spent in cleaning rounds, in milliseconds.
pub const LOG_CLEANER_MILLISECONDS: &str = "keel_log_cleaner_milliseconds_total";
/// Partitions a cleaning error set aside until restart (Kafka's uncleanable-partitions-count).
pub const LOG_CLEANER_UNCLEANABLE: &str = "keel_log_cleaner_uncleanable_partitions";

/// Series not refreshed for this long (a deleted group or topic) leave the output.
const IDLE: Duration = Duration::from_secs(120);

/// Installs the process-wide recorder; call once, from the binary.
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(IDLE))
        .install_recorder()
        .map_err(|e| e.to_string())
}

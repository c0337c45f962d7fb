//! The topics this broker hosts and their partition logs (Kafka's LogManager and metadata
//! cache in one, as a single node needs nothing more).
//!
//! Topic metadata lives in RocksDB; each partition is a `<topic>-<partition>` directory of
//! segments under the data directory. A `Topic` is an immutable snapshot: administrative
//! changes build a new one and swap it in, so readers never wait on them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use crate::config::alter::Alteration;
use crate::config::topic::{effective, validate_topic_config};
use crate::config::DynamicBrokerConfig;
use crate::error::BrokerError;
use crate::log::{
    clear_clean_shutdown, had_clean_shutdown, mark_clean_shutdown, read_recovery_points,
    write_recovery_points, RecoveryHint,
};
use crate::log::{
    fs_usage, read_partition_metadata, sync_dir, validate_produce_batch, validate_records,
    write_partition_metadata, AppendInfo, DeletedSegments, FsUsage, LogConfig, LogDirHealth, LogError,
    PartitionLog, ProducerSnapshot, RecordBatchHeader, TimestampType,
};
use crate::meta::{MetaStore, TopicRecord, WriteHold};

/// A topic a request named that does not exist, by how it was named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownTopic {
    Name,
    Id,
}

impl From<UnknownTopic> for BrokerError {
    fn from(u: UnknownTopic) -> BrokerError {
        match u {
            UnknownTopic::Name => BrokerError::UnknownTopicOrPartition,
            UnknownTopic::Id => BrokerError::UnknownTopicId,
        }
    }
}

/// Kafka refuses a keyless record in a compacted topic (compaction keeps the last record per
/// key, so a record without one could never be compacted), and refuses its whole batch. For
/// compressed batches only (the validator checks uncompressed ones in its walk), which are
/// decoded for it.
fn require_keys(topic: &str, partition: i32, records: &Bytes) -> Result<(), BrokerError> {
    let Ok(set) = crate::log::decode_batches(records.clone()) else {
        // Not decodable: the log's own validation answers with the precise error.
        return Ok(());
    };
    let keyless: Vec<(i32, String)> = set
        .records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| {
            (
                i as i32,
                format!("Compacted topic cannot accept message without key in topic partition {topic}-{partition}."),
            )
        })
        .collect();
    if keyless.is_empty() {
        Ok(())
    } else {
        Err(BrokerError::InvalidRecords(keyless))
    }
}

/// How often recovery logs its progress when it takes longer than that.
const RECOVERY_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The bytes of a partition directory's files (what recovery may read), 0 if unreadable.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

/// The DeleteRecords offset that means "up to the high watermark".
pub const DELETE_UP_TO_HIGH_WATERMARK: i64 = -1;

/// Kafka's limit on topic names (so that `<name>-<partition>` directories stay under 255 bytes).
const MAX_TOPIC_NAME_LEN: usize = 249;

pub struct Topic {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: Vec<Arc<PartitionLog>>,
    /// Settings set on this topic only.
    pub configs: BTreeMap<String, String>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<PartitionLog>> {
        usize::try_from(index).ok().and_then(|i| self.partitions.get(i))
    }

    pub fn is_internal(&self) -> bool {
        self.name.starts_with("__")
    }

    fn record(&self) -> TopicRecord {
        TopicRecord {
            name: self.name.clone(),
            id: self.id,
            partitions: self.partitions.len() as i32,
            configs: self.configs.clone(),
        }
    }
}

/// Free bytes below which metadata (RocksDB) writes are held back: room for its log and a
/// memtable flush of the small records it keeps.
const META_WRITE_RESERVE: u64 = 1 << 20;

pub struct LogManager {
    dir: PathBuf,
    /// Topic settings inherit from broker settings, which may change at run time.
    config: Arc<DynamicBrokerConfig>,
    meta: Arc<MetaStore>,
    topics: RwLock<TopicMap>,
    /// Serialises administrative changes (create, delete, alter) so that the check-then-act of
    /// each is atomic; produce and fetch never take it.
    admin: Mutex<()>,
    /// Whether the log directory still serves (an I/O error takes it offline).
    pub health: Arc<LogDirHealth>,
    /// How full the log directory's filesystem was at the last check.
    pressure: Arc<AtomicU8>,
}

/// The topics by name and by id (Produce and Fetch name topics by id from v13 on, KIP-516).
#[derive(Default)]
struct TopicMap {
    by_name: HashMap<String, Arc<Topic>>,
    by_id: HashMap<uuid::Uuid, Arc<Topic>>,
}

impl TopicMap {
    /// Adds `topic`, or replaces the topic of its name (a new snapshot of it).
    fn insert(&mut self, topic: Arc<Topic>) {
        if let Some(old) = self.by_name.insert(topic.name.clone(), topic.clone()) {
            self.by_id.remove(&old.id);
        }
        self.by_id.insert(topic.id, topic);
    }

    fn remove(&mut self, name: &str) {
        if let Some(old) = self.by_name.remove(name) {
            self.by_id.remove(&old.id);
        }
    }

    fn get(&self, name: &str) -> Option<&Arc<Topic>> {
        self.by_name.get(name)
    }

    fn values(&self) -> impl Iterator<Item = &Arc<Topic>> {
        self.by_name.values()
    }

    fn keys(&self) -> impl Iterator<Item = &String> {
        self.by_name.keys()
    }
}

/// Keel's disk pressure levels (`keel.disk.pressure.*.ratio`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiskPressure {
    None = 0,
    /// Above the soft threshold: only critical topics accept produce.
    Soft = 1,
    /// Above the hard threshold: no produce is accepted.
    Hard = 2,
}

/// `<topic>-<partition>` of a partition directory's name, if it is one.
fn partition_dir_name(name: &str) -> Option<(&str, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    let partition = partition.parse::<i32>().ok().filter(|p| *p >= 0)?;
    (validate_topic_name(topic).is_ok() && partition.to_string() == name[topic.len() + 1..])
        .then_some((topic, partition))
}

/// Kafka's topic name rules: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    if name.is_empty() {
        return Err(BrokerError::InvalidTopic(
            "Topic name is illegal, it can't be empty".into(),
        ));
    }
    if name == "." || name == ".." {
        return Err(BrokerError::InvalidTopic(
            "Topic name cannot be \".\" or \"..\"".into(),
        ));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(BrokerError::InvalidTopic(format!(
            "Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LEN} characters, topic name: {name}"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(BrokerError::InvalidTopic(format!(
            "Topic name {name} is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// Names that differ only in '.' versus '_' collide in metric names, so Kafka refuses the second.
fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

impl LogManager {
    /// Opens every topic recorded in the store, recovering each partition log.
    pub fn open(
        dir: &Path,
        config: Arc<DynamicBrokerConfig>,
        meta: Arc<MetaStore>,
    ) -> Result<LogManager, BrokerError> {
        let manager = LogManager {
            dir: dir.to_path_buf(),
            config,
            meta,
            topics: RwLock::new(TopicMap::default()),
            admin: Mutex::new(()),
            health: LogDirHealth::new(dir),
            pressure: Arc::new(AtomicU8::new(DiskPressure::None as u8)),
        };
        let records = manager.meta.topics()?;
        let clean_shutdown = had_clean_shutdown(dir);
        let recovery_points = read_recovery_points(dir);
        tracing::info!(
            clean_shutdown,
            checkpointed_partitions = recovery_points.len(),
            "recovering the log directory"
        );
        let mut opened = manager.open_all_partitions(&records, clean_shutdown, &recovery_points)?;
        let mut topics = TopicMap::default();
        for record in records {
            let partitions = opened.remove(&record.name).unwrap_or_default();
            tracing::info!(topic = %record.name, partitions = record.partitions, "topic loaded");
            topics.insert(Arc::new(Topic {
                name: record.name,
                id: record.id,
                partitions,
                configs: record.configs,
            }));
        }
        manager.clean_up_partition_dirs(&topics)?;
        *manager.topics.write().unwrap_or_else(|e| e.into_inner()) = topics;
        // Recovery fsynced what it kept: its recovery points replace the old checkpoint now, not
        // a checkpoint interval later.
        manager.checkpoint_recovery_points()?;
        // From here a crash is an unclean stop.
        clear_clean_shutdown(dir).map_err(LogError::from)?;
        // Metadata writes degrade as produce does: held back (retriably) on a full filesystem
        // and above the hard disk pressure threshold, and, measured at each write (one statvfs
        // per group commit), whenever less than META_WRITE_RESERVE is free, so that RocksDB,
        // which refuses every write after one failed for want of space, never meets a full
        // disk.
        let (health, pressure) = (Arc::clone(&manager.health), Arc::clone(&manager.pressure));
        let meta_dir = dir.to_path_buf();
        manager.meta.hold_writes_while(move || {
            let no_room = fs_usage(&meta_dir)
                .is_ok_and(|u| u.capacity_bytes.saturating_sub(u.used_bytes) < META_WRITE_RESERVE);
            if health.is_full() || no_room {
                WriteHold::Full
            } else if pressure.load(Ordering::Acquire) == DiskPressure::Hard as u8 {
                WriteHold::Pressure
            } else {
                WriteHold::None
            }
        });
        Ok(manager)
    }

    /// Writes every partition's recovery point to the log directory's checkpoint, so that a
    /// start after a crash scans only what came after.
    ///
    /// Each active segment's index entries are made durable first, so that recovery after a
    /// crash can start scanning at the last entry below the recovery point instead of at the
    /// active segment's start.
    pub fn checkpoint_recovery_points(&self) -> Result<(), LogError> {
        let mut points: Vec<(String, i32, i64)> = Vec::new();
        for topic in self.topics().iter() {
            for (p, log) in topic.partitions.iter().enumerate() {
                log.persist_active_indexes()?;
                points.push((topic.name.clone(), p as i32, log.recovery_point()));
            }
        }
        write_recovery_points(&self.dir, &points)?;
        Ok(())
    }

    /// The last step of a clean shutdown, after every log is flushed and checkpointed.
    pub fn mark_clean_shutdown(&self) -> Result<(), LogError> {
        mark_clean_shutdown(&self.dir)?;
        Ok(())
    }

    /// Opens (recovers) every partition of `records`, on as many threads as the machine has
    /// cores, since recovery after a crash reads data and each partition is independent. When
    /// it takes longer than a few seconds, progress is logged every few seconds (partitions and
    /// bytes done, rate, time left). Returns each topic's partitions in order.
    fn open_all_partitions(
        &self,
        records: &[TopicRecord],
        clean_shutdown: bool,
        recovery_points: &HashMap<(String, i32), i64>,
    ) -> Result<HashMap<String, Vec<Arc<PartitionLog>>>, BrokerError> {
        let work: Vec<(usize, i32, u64)> = records
            .iter()
            .enumerate()
            .flat_map(|(t, r)| (0..r.partitions).map(move |p| (t, p)))
            .map(|(t, p)| (t, p, dir_bytes(&self.partition_dir(&records[t].name, p))))
            .collect();
        let total_bytes: u64 = work.iter().map(|w| w.2).sum();
        let next = AtomicUsize::new(0);
        let (done, done_bytes) = (AtomicUsize::new(0), AtomicU64::new(0));
        // (topic's index in `records`, partition, the opened log)
        type Opened = (usize, i32, Result<Arc<PartitionLog>, BrokerError>);
        let results: Mutex<Vec<Opened>> = Mutex::new(Vec::new());
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(work.len().max(1));
        let started = std::time::Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let Some(&(t, p, bytes)) = work.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    let record = &records[t];
                    let hint = RecoveryHint {
                        clean_shutdown,
                        recovery_point: recovery_points.get(&(record.name.clone(), p)).copied(),
                    };
                    let log = self.open_partition(
                        &record.name,
                        p,
                        self.log_config(&record.configs),
                        record.id,
                        hint,
                    );
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((t, p, log));
                    done.fetch_add(1, Ordering::Relaxed);
                    done_bytes.fetch_add(bytes, Ordering::Relaxed);
                });
            }
            // Progress, when recovery takes long: ends once every partition is done (failed
            // ones included), and the scope ends with it.
            scope.spawn(|| {
                let mut next_report = started + RECOVERY_PROGRESS_EVERY;
                while done.load(Ordering::Acquire) < work.len() {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    if std::time::Instant::now() < next_report {
                        continue;
                    }
                    next_report += RECOVERY_PROGRESS_EVERY;
                    let bytes = done_bytes.load(Ordering::Relaxed);
                    let rate = bytes as f64 / started.elapsed().as_secs_f64();
                    tracing::info!(
                        partitions = format!("{}/{}", done.load(Ordering::Relaxed), work.len()),
                        mb = format!("{}/{}", bytes / 1_000_000, total_bytes / 1_000_000),
                        mb_per_s = (rate / 1e6).round(),
                        time_left_s = (total_bytes.saturating_sub(bytes) as f64 / rate.max(1.0)).round(),
                        "recovering partitions"
                    );
                }
            });
        });
        let mut opened: HashMap<String, Vec<Arc<PartitionLog>>> = HashMap::new();
        let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
        results.sort_by_key(|(t, p, _)| (*t, *p));
        for (t, _, log) in results {
            opened.entry(records[t].name.clone()).or_default().push(log?);
        }
        if started.elapsed().as_secs() >= 1 {
            tracing::info!(
                partitions = work.len(),
                mb = total_bytes / 1_000_000,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "partitions recovered"
            );
        }
        Ok(opened)
    }

    /// What a crash can leave in the log directory: `-delete` directories of a deletion that
    /// did not finish (removed now), and partition directories no topic owns (a deletion under
    /// the older layout, or metadata lost), which are renamed `<name>.<id>-stray`, as Kafka does
    /// with stray logs: never served, and kept for an operator to look at.
    fn clean_up_partition_dirs(&self, topics: &TopicMap) -> Result<(), BrokerError> {
        let mut changed = false;
        for entry in std::fs::read_dir(&self.dir).map_err(LogError::from)? {
            let entry = entry.map_err(LogError::from)?;
            if !entry.file_type().map_err(LogError::from)?.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with("-delete") {
                tracing::info!(dir = %name, "removing the directory of a deletion a stop interrupted");
                if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(dir = %name, error = %e, "could not remove a deleted partition's directory");
                }
                changed = true;
            } else if let Some((topic, partition)) = partition_dir_name(&name) {
                let owned = topics
                    .get(topic)
                    .is_some_and(|t| (partition as usize) < t.partitions.len());
                if !owned {
                    let stray = format!("{name}.{}-stray", uuid::Uuid::new_v4().simple());
                    tracing::warn!(dir = %name, renamed = %stray, "partition directory of no known topic; it will not be served");
                    std::fs::rename(entry.path(), self.dir.join(&stray)).map_err(LogError::from)?;
                    changed = true;
                }
            }
        }
        if changed {
            sync_dir(&self.dir).map_err(LogError::from)?;
        }
        Ok(())
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir.join(format!("{topic}-{partition}"))
    }

    /// Opens (creating if needed) a partition of the topic with id `topic_id`. A directory
    /// recorded as another topic's (a topic of the same name deleted while stopped, or a crash)
    /// is set apart as `-stray` first, so its records are never served as this topic's.
    fn open_partition(
        &self,
        topic: &str,
        partition: i32,
        config: LogConfig,
        topic_id: uuid::Uuid,
        hint: RecoveryHint,
    ) -> Result<Arc<PartitionLog>, BrokerError> {
        let dir = self.partition_dir(topic, partition);
        let recorded = read_partition_metadata(&dir)?;
        if recorded.is_some_and(|id| id != topic_id.into_bytes()) {
            let stray = self.dir.join(format!(
                "{topic}-{partition}.{}-stray",
                uuid::Uuid::new_v4().simple()
            ));
            tracing::warn!(dir = %dir.display(), renamed = %stray.display(), "partition directory of another topic id; it will not be served");
            std::fs::rename(&dir, &stray).map_err(LogError::from)?;
            sync_dir(&self.dir).map_err(LogError::from)?;
        }
        let snapshots = self.producer_snapshots(&topic_id, partition)?;
        // A directory set apart above starts afresh: no hint applies to the new one.
        let hint = if dir.is_dir() {
            hint
        } else {
            RecoveryHint::default()
        };
        let log = PartitionLog::open_recovering(&dir, config, Arc::clone(&self.health), snapshots, hint)?;
        if recorded != Some(topic_id.into_bytes()) {
            write_partition_metadata(&dir, topic_id.into_bytes()).map_err(LogError::from)?;
        }
        // Snapshots beyond the recovered log describe acks=1 data a crash took back: dropped, so
        // they can never be mistaken for the newest.
        self.meta
            .delete_producer_snapshots_above(&topic_id, partition, log.log_end_offset())?;
        Ok(Arc::new(log))
    }

    /// A partition's stored producer-state snapshots; unreadable ones are skipped (the log is
    /// replayed from further back instead).
    fn producer_snapshots(
        &self,
        topic_id: &uuid::Uuid,
        partition: i32,
    ) -> Result<Vec<ProducerSnapshot>, BrokerError> {
        Ok(self
            .meta
            .producer_snapshots(topic_id, partition)?
            .into_iter()
            .filter_map(|(offset, bytes)| {
                let decoded = ProducerSnapshot::decode(&bytes).filter(|s| s.offset == offset);
                if decoded.is_none() {
                    tracing::warn!(%topic_id, partition, offset, "unreadable producer state snapshot skipped");
                }
                decoded
            })
            .collect())
    }

    /// Stores a partition's producer state as of `snapshot.offset`. The log below that offset
    /// must be durable already.
    pub fn store_producer_snapshot(
        &self,
        topic_id: &uuid::Uuid,
        partition: i32,
        snapshot: &ProducerSnapshot,
    ) -> Result<(), BrokerError> {
        self.meta
            .put_producer_snapshot(topic_id, partition, snapshot.offset, &snapshot.encode())?;
        Ok(())
    }

    /// Kafka's LogConfig.validateValues: `min.compaction.lag.ms` may not exceed
    /// `max.compaction.lag.ms`, with the broker defaults filling what the topic does not set.
    fn validate_compaction_lags(&self, overrides: &BTreeMap<String, String>) -> Result<(), BrokerError> {
        let lag =
            |name: &str| effective(overrides, &self.config, name).and_then(|v| v.trim().parse::<i64>().ok());
        match (lag("min.compaction.lag.ms"), lag("max.compaction.lag.ms")) {
            (Some(min), Some(max)) if min > max => Err(BrokerError::InvalidConfig(format!(
                "conflict topic config setting min.compaction.lag.ms ({min}) > max.compaction.lag.ms ({max})"
            ))),
            _ => Ok(()),
        }
    }

    /// The storage settings of a topic with these overrides.
    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        // Values were validated when set; an unparsable one falls back to `or` (for retention:
        // keep everything, never delete by accident).
        let num_or = |name: &str, or: i64| -> i64 {
            effective(overrides, &self.config, name)
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(or)
        };
        let num = |name: &str| num_or(name, 0);
        let policy: Vec<String> = effective(overrides, &self.config, "cleanup.policy")
            .map(|p| p.split(',').map(|v| v.trim().to_string()).collect())
            .unwrap_or_default();
        let timestamp_type = match effective(overrides, &self.config, "message.timestamp.type").as_deref() {
            Some("LogAppendTime") => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        };
        LogConfig {
            segment_bytes: num("segment.bytes").max(14) as u64,
            segment_ms: num("segment.ms").max(1),
            segment_jitter_ms: num("segment.jitter.ms").max(0),
            index_interval_bytes: num("index.interval.bytes").clamp(0, u32::MAX as i64) as u32,
            max_message_bytes: num("max.message.bytes").max(0) as usize,
            timestamp_type,
            timestamp_before_max_ms: num("message.timestamp.before.max.ms").max(0),
            timestamp_after_max_ms: num("message.timestamp.after.max.ms").max(0),
            flush_before_visible: self.config.static_config().flush_before_visible,
            delete_retention: policy.iter().any(|v| v == "delete"),
            compact: policy.iter().any(|v| v == "compact"),
            min_cleanable_dirty_ratio: effective(overrides, &self.config, "min.cleanable.dirty.ratio")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.5),
            min_compaction_lag_ms: num("min.compaction.lag.ms").max(0),
            max_compaction_lag_ms: num_or("max.compaction.lag.ms", i64::MAX).max(1),
            delete_retention_ms: num_or("delete.retention.ms", 86_400_000).max(0),
            retention_ms: num_or("retention.ms", -1),
            retention_bytes: num_or("retention.bytes", -1),
            file_delete_delay_ms: num("file.delete.delay.ms").max(0) as u64,
            ..LogConfig::default()
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TopicMap> {
        self.topics.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, TopicMap> {
        self.topics.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.read().get(name).cloned()
    }

    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<Arc<Topic>> {
        self.read().by_id.get(&id).cloned()
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// A topic as a request names it: by id from Produce and Fetch v13 on (KIP-516), by name
    /// before. Unknown is UNKNOWN_TOPIC_ID or UNKNOWN_TOPIC_OR_PARTITION accordingly.
    pub fn requested_topic(
        &self,
        name: &str,
        id: uuid::Uuid,
        by_id: bool,
    ) -> Result<Arc<Topic>, UnknownTopic> {
        if by_id {
            self.topic_by_id(id).ok_or(UnknownTopic::Id)
        } else {
            self.topic(name).ok_or(UnknownTopic::Name)
        }
    }

    /// Appends one produced batch to a partition (Kafka's ReplicaManager.appendRecords on one
    /// node), applying the topic's rules first. Blocking: it writes the segment file.
    /// Appends a produced batch. `check_transaction` decides whether a transactional batch
    /// belongs to an ongoing transaction of its producer (the transaction coordinator's rule);
    /// it runs under the partition's writer lock.
    pub fn append_records(
        &self,
        topic: &Topic,
        partition: i32,
        records: Option<&Bytes>,
        now_ms: i64,
        check_transaction: &dyn Fn(&RecordBatchHeader, &str, i32) -> Result<(), BrokerError>,
    ) -> Result<(Arc<PartitionLog>, AppendInfo), BrokerError> {
        let log = topic
            .partition(partition)
            .ok_or(BrokerError::UnknownTopicOrPartition)?;
        self.check_disk_pressure(topic)?;
        let records =
            records.ok_or_else(|| BrokerError::InvalidRequest("produce request without records".into()))?;
        // Kafka's LogValidator: the header and CRC, then the records themselves.
        let header = validate_produce_batch(records)?;
        let config = log.config();
        if records.len() as u64 > config.effective_segment_bytes() {
            return Err(LogError::RecordBatchTooLarge {
                size: records.len(),
                max: config.effective_segment_bytes(),
            }
            .into());
        }
        let compacted = self.is_compacted(topic);
        let label = compacted.then(|| format!("{}-{partition}", topic.name));
        validate_records(records, &header, &config, now_ms, label.as_deref())?;
        if compacted && header.compression() != 0 {
            // The validator does not decompress: a compressed batch's keys are checked here.
            require_keys(&topic.name, partition, records)?;
        }
        let info = log.append_checked(records, &header, now_ms, |h| {
            check_transaction(h, &topic.name, partition)
        })?;
        if !info.duplicate {
            log.start_writeback();
        }
        if info.rolled {
            // The sealed segment's fsync (up to a whole segment) does not hold up this produce
            // or the partition's writer: it runs as a storage task of its own. The producer
            // state as of the roll is stored after it, never ahead of durable data.
            let log = Arc::clone(log);
            let meta = Arc::clone(&self.meta);
            let topic_id = topic.id;
            drop(crate::storage_task::run("segment_roll_flush", move || {
                match log.flush_sealed() {
                    Ok(()) => {}
                    // Retried by the next roll or the final flush; its data is fsynced by
                    // whatever acks=-1 produce needs it meanwhile.
                    Err(e @ LogError::NoSpace(_)) => {
                        tracing::warn!(dir = %log.dir().display(), error = %e, "cannot flush a sealed segment yet");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(dir = %log.dir().display(), error = %e, "cannot flush a sealed segment");
                        return;
                    }
                }
                if let Some(snapshot) = log.take_roll_snapshot() {
                    if let Err(e) =
                        meta.put_producer_snapshot(&topic_id, partition, snapshot.offset, &snapshot.encode())
                    {
                        tracing::warn!(dir = %log.dir().display(), error = %e, "cannot store a producer state snapshot");
                    }
                }
            }));
        }
        Ok((Arc::clone(log), info))
    }

    /// Drops the state of producers idle for `max_idle_ms` in every partition
    /// (`producer.id.expiration.ms`); returns how many entries went.
    /// Applies retention (`retention.ms`, `retention.bytes`) to every partition whose topic's
    /// cleanup.policy includes delete. Returns the deleted segments, whose renamed files the
    /// caller removes after their delay. A partition that fails is logged and skipped: the
    /// others still get their retention.
    pub fn delete_old_segments(&self, now_ms: i64) -> Vec<DeletedSegments> {
        let mut deleted = Vec::new();
        for topic in self.topics().iter() {
            for (p, log) in topic.partitions.iter().enumerate() {
                match log.delete_old_segments(now_ms) {
                    Ok(d) if !d.is_empty() => deleted.push(d),
                    Ok(_) => {}
                    Err(LogError::Closed(_)) => {}
                    Err(e) => {
                        tracing::warn!(topic = %topic.name, partition = p, error = %e, "cannot apply retention")
                    }
                }
            }
        }
        deleted
    }

    /// Keel's broker-wide disk budget (`keel.log.dirs.max.bytes`): while all logs together hold
    /// more than `max_bytes`, deletes the oldest closed segment (by largest timestamp) among
    /// the logs whose cleanup.policy includes delete, across every topic. Active segments and
    /// compacted-only topics are never touched, so the budget can be exceeded by them.
    pub fn enforce_disk_budget(&self, max_bytes: u64) -> Vec<DeletedSegments> {
        let logs: Vec<(String, Arc<PartitionLog>)> = self
            .topics()
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .map(|(p, log)| (format!("{}-{p}", t.name), Arc::clone(log)))
            })
            .collect();
        let mut total: u64 = logs.iter().map(|(_, log)| log.size()).sum();
        let mut deleted = Vec::new();
        while total > max_bytes {
            let oldest = logs
                .iter()
                .filter(|(_, log)| log.config().delete_retention)
                .filter_map(|(name, log)| log.oldest_closed_segment().map(|ts| (ts, name, log)))
                .min_by_key(|(ts, _, _)| *ts);
            let Some((_, name, log)) = oldest else {
                tracing::warn!(
                    total,
                    max_bytes,
                    "the logs exceed keel.log.dirs.max.bytes with nothing left to delete"
                );
                break;
            };
            match log.delete_oldest_closed_segment() {
                Ok(d) if !d.is_empty() => {
                    total = total.saturating_sub(d.bytes());
                    deleted.push(d);
                }
                // Raced with another deletion: look again.
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(partition = %name, error = %e, "cannot delete a segment for keel.log.dirs.max.bytes");
                    break;
                }
            }
        }
        deleted
    }

    pub fn remove_expired_producers(&self, now_ms: i64, max_idle_ms: i64) -> usize {
        self.topics()
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|log| log.remove_expired_producers(now_ms, max_idle_ms))
            .sum()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Result<Arc<PartitionLog>, BrokerError> {
        self.topic(topic)
            .and_then(|t| t.partition(partition).cloned())
            .ok_or(BrokerError::UnknownTopicOrPartition)
    }

    /// Checks a CreateTopics request's topic; returns the partition count to use.
    pub fn validate_new_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<i32, BrokerError> {
        validate_topic_name(name)?;
        if let Some(existing) = self.read().get(name) {
            return Err(BrokerError::TopicAlreadyExists(format!(
                "Topic '{}' already exists.",
                existing.name
            )));
        }
        let key = collision_key(name);
        if let Some(other) = self.read().keys().find(|t| collision_key(t) == key) {
            return Err(BrokerError::InvalidTopic(format!(
                "Topic '{name}' collides with existing topic: {other}"
            )));
        }
        let partitions = if partitions == -1 {
            self.config.static_config().num_partitions
        } else {
            partitions
        };
        if partitions <= 0 {
            return Err(BrokerError::InvalidPartitions(
                "Number of partitions must be larger than 0.".into(),
            ));
        }
        let rf = if replication_factor == -1 {
            self.config.static_config().default_replication_factor
        } else {
            replication_factor
        };
        if rf <= 0 {
            return Err(BrokerError::InvalidReplicationFactor(
                "Replication factor must be larger than 0, or -1 to use the default value.".into(),
            ));
        }
        if rf > 1 {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only 1 broker(s) are registered."
            )));
        }
        for (k, v) in configs {
            validate_topic_config(k, v).map_err(|e| BrokerError::InvalidConfig(e.0))?;
        }
        self.validate_compaction_lags(configs)?;
        Ok(partitions)
    }

    /// Creates a topic: partition directories first, then the durable RocksDB record, so a
    /// crash in between leaves only empty directories that a later create reuses.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, BrokerError> {
        let _admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let partitions = self.validate_new_topic(name, partitions, replication_factor, &configs)?;
        let log_config = self.log_config(&configs);
        let id = uuid::Uuid::new_v4();
        let logs = (0..partitions)
            .map(|p| self.open_partition(name, p, log_config, id, RecoveryHint::default()))
            .collect::<Result<Vec<_>, _>>()?;
        let topic = Arc::new(Topic {
            name: name.to_string(),
            id,
            partitions: logs,
            configs,
        });
        self.meta.put_topic(&topic.record())?;
        self.write().insert(topic.clone());
        tracing::info!(topic = %name, partitions, "topic created");
        Ok(topic)
    }

    /// Deletes a topic: the RocksDB record first (the point of no return), then its files.
    pub fn delete_topic(&self, name: &str) -> Result<uuid::Uuid, BrokerError> {
        if !self.config.static_config().delete_topic_enable {
            return Err(BrokerError::TopicDeletionDisabled);
        }
        let _admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let topic = self.topic(name).ok_or(BrokerError::UnknownTopicOrPartition)?;
        // As Kafka: the partitions stop serving and their directories are renamed
        // `<topic>-<partition>.<id>-delete` (durably) before the topic's record goes, so that a
        // crash at any point leaves either the whole topic or directories the next start
        // removes, never records a re-created topic of the same name could serve.
        let mut doomed = Vec::with_capacity(topic.partitions.len());
        for (p, log) in topic.partitions.iter().enumerate() {
            log.retire();
            let from = self.partition_dir(name, p as i32);
            let to = self
                .dir
                .join(format!("{name}-{p}.{}-delete", uuid::Uuid::new_v4().simple()));
            match std::fs::rename(&from, &to) {
                Ok(()) => doomed.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::from(e).into()),
            }
        }
        sync_dir(&self.dir).map_err(LogError::from)?;
        self.meta.delete_topic(name)?;
        self.write().remove(name);
        for p in 0..topic.partitions.len() as i32 {
            // Keyed by the topic id, which a re-created topic never shares: a leftover is
            // only wasted space.
            if let Err(e) = self.meta.delete_producer_snapshots_above(&topic.id, p, -1) {
                tracing::warn!(topic = %name, partition = p, error = %e, "could not remove a deleted partition's producer snapshots");
            }
        }
        for dir in doomed {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                // The next start removes it.
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted partition's directory");
            }
        }
        tracing::info!(topic = %name, "topic deleted");
        Ok(topic.id)
    }

    /// Grows a topic to `count` partitions (Kafka never shrinks one).
    pub fn create_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let topic = self.topic(name).ok_or(BrokerError::UnknownTopicOrPartition)?;
        let current = topic.partitions.len() as i32;
        if count < current {
            return Err(BrokerError::InvalidPartitions(format!(
                "Topic currently has {current} partitions, which is higher than the requested {count}."
            )));
        }
        if count == current {
            return Err(BrokerError::InvalidPartitions(format!(
                "Topic already has {current} partitions."
            )));
        }
        if validate_only {
            return Ok(());
        }
        let log_config = self.log_config(&topic.configs);
        let mut partitions = topic.partitions.clone();
        for p in current..count {
            partitions.push(self.open_partition(name, p, log_config, topic.id, RecoveryHint::default())?);
        }
        let grown = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
            configs: topic.configs.clone(),
        });
        self.meta.put_topic(&grown.record())?;
        self.write().insert(grown);
        tracing::info!(topic = %name, from = current, to = count, "partitions added");
        Ok(())
    }

    /// Changes a topic's overrides: `change` gets the current ones and returns the new set
    /// (validated here), which is persisted and applied to every partition log. Runs under the
    /// admin lock, so concurrent alters of one topic never lose each other's changes.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        alteration: &Alteration,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let topic = self.topic(name).ok_or(BrokerError::UnknownTopicOrPartition)?;
        let configs = alteration.apply(&topic.configs)?;
        for (k, v) in &configs {
            validate_topic_config(k, v).map_err(|e| BrokerError::InvalidConfig(e.0))?;
        }
        self.validate_compaction_lags(&configs)?;
        if validate_only {
            return Ok(());
        }
        let updated = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic.partitions.clone(),
            configs,
        });
        self.meta.put_topic(&updated.record())?;
        self.apply_log_config(&updated);
        self.write().insert(updated);
        tracing::info!(topic = %name, "topic configuration altered");
        Ok(())
    }

    /// Gives every partition of `topic` the storage settings its overrides and the broker
    /// settings resolve to now.
    fn apply_log_config(&self, topic: &Topic) {
        let log_config = self.log_config(&topic.configs);
        for log in &topic.partitions {
            log.set_config(log_config);
        }
    }

    /// Refuses a produce to `topic` under disk pressure: every topic above the hard
    /// threshold, all but `keel.priority=critical` ones above the soft one.
    fn check_disk_pressure(&self, topic: &Topic) -> Result<(), BrokerError> {
        if self.health.is_full() {
            return Err(BrokerError::DiskPressure(
                "The log directory's filesystem is full: no topic accepts records; retry later".into(),
            ));
        }
        let level = self.disk_pressure();
        let critical =
            || effective(&topic.configs, &self.config, "keel.priority").as_deref() == Some("critical");
        match level {
            DiskPressure::None => Ok(()),
            DiskPressure::Soft if critical() => Ok(()),
            DiskPressure::Soft => Err(BrokerError::DiskPressure(
                "The log directory is above keel.disk.pressure.soft.ratio: only critical topics accept records; retry later"
                    .into(),
            )),
            DiskPressure::Hard => Err(BrokerError::DiskPressure(
                "The log directory is above keel.disk.pressure.hard.ratio: no topic accepts records; retry later".into(),
            )),
        }
    }

    /// The disk pressure level found by the last `update_disk_pressure`.
    pub fn disk_pressure(&self) -> DiskPressure {
        match self.pressure.load(Ordering::Acquire) {
            0 => DiskPressure::None,
            1 => DiskPressure::Soft,
            _ => DiskPressure::Hard,
        }
    }

    /// Measures the log directory's filesystem (statvfs; call it on a storage thread), sets the
    /// disk pressure level from the thresholds (`soft` and `hard` used fractions) and the
    /// `keel_disk_*` gauges; returns the usage and the level before and after.
    pub fn update_disk_pressure(
        &self,
        soft: f64,
        hard: f64,
    ) -> std::io::Result<(FsUsage, DiskPressure, DiskPressure)> {
        let usage = fs_usage(&self.dir)?;
        let ratio = usage.ratio();
        let level = if ratio >= hard {
            DiskPressure::Hard
        } else if ratio >= soft {
            DiskPressure::Soft
        } else {
            DiskPressure::None
        };
        let before = self.disk_pressure();
        self.pressure.store(level as u8, Ordering::Release);
        // A write that found no space holds produce back until a check finds room: the
        // filesystem's free space is at least a block, and below the hard threshold.
        if self.health.is_full() && level != DiskPressure::Hard && usage.capacity_bytes > usage.used_bytes {
            self.health.clear_full();
        }
        metrics::gauge!(crate::metrics::DISK_PRESSURE).set(f64::from(u8::from(level != DiskPressure::None)));
        metrics::gauge!(crate::metrics::DISK_PRESSURE_LEVEL).set(level as u8 as f64);
        metrics::gauge!(crate::metrics::LOG_DIR_USED_BYTES).set(usage.used_bytes as f64);
        metrics::gauge!(crate::metrics::LOG_DIR_USED_RATIO).set(ratio);
        Ok((usage, before, level))
    }

    fn has_cleanup_policy(&self, topic: &Topic, policy: &str) -> bool {
        effective(&topic.configs, &self.config, "cleanup.policy")
            .is_some_and(|p| p.split(',').any(|v| v.trim() == policy))
    }

    /// Whether the topic's cleanup.policy includes compact.
    pub fn is_compacted(&self, topic: &Topic) -> bool {
        self.has_cleanup_policy(topic, "compact")
    }

    /// Whether the topic's cleanup.policy includes delete: only then may DeleteRecords remove
    /// its records, as in Kafka.
    pub fn allows_deletion(&self, topic: &Topic) -> bool {
        self.has_cleanup_policy(topic, "delete")
    }

    /// DeleteRecords on one partition (Kafka's ReplicaManager.deleteRecords): moves its log start
    /// offset to `offset`, or to the high watermark for `DELETE_UP_TO_HIGH_WATERMARK`, and
    /// returns the new log start. Blocking: it syncs a checkpoint and deletes segment files.
    pub fn delete_records(&self, topic: &str, partition: i32, offset: i64) -> Result<i64, BrokerError> {
        let topic = self.topic(topic).ok_or(BrokerError::UnknownTopicOrPartition)?;
        let log = topic
            .partition(partition)
            .ok_or(BrokerError::UnknownTopicOrPartition)?;
        if !self.allows_deletion(&topic) {
            return Err(BrokerError::PolicyViolation(format!(
                "Records of partition {}-{partition} can not be deleted due to the configured policy",
                topic.name
            )));
        }
        let offset = if offset == DELETE_UP_TO_HIGH_WATERMARK {
            log.high_watermark()
        } else {
            offset
        };
        Ok(log.delete_records_before(offset)?)
    }

    /// Re-derives every partition's storage settings after a broker setting changed at run time
    /// (a topic without its own `segment.bytes` follows `log.segment.bytes`, and so on).
    pub fn reconfigure(&self) {
        let _admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        for topic in self.topics() {
            self.apply_log_config(&topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_a-b").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    fn manager(dir: &Path) -> LogManager {
        let config = Arc::new(crate::config::Config::load(None, Vec::new(), &[]).unwrap());
        let config = Arc::new(DynamicBrokerConfig::new(config, Default::default()));
        let meta = Arc::new(MetaStore::open(&dir.join("meta")).unwrap());
        LogManager::open(dir, config, meta).unwrap()
    }

    #[test]
    fn create_refuses_duplicates_collisions_and_replication() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path());
        m.create_topic("a.b", 2, 1, BTreeMap::new()).unwrap();
        assert!(matches!(
            m.create_topic("a.b", 1, 1, BTreeMap::new()),
            Err(BrokerError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            m.create_topic("a_b", 1, 1, BTreeMap::new()),
            Err(BrokerError::InvalidTopic(_))
        ));
        assert!(matches!(
            m.create_topic("c", 1, 3, BTreeMap::new()),
            Err(BrokerError::InvalidReplicationFactor(_))
        ));
        assert!(matches!(
            m.create_topic("c", 0, 1, BTreeMap::new()),
            Err(BrokerError::InvalidPartitions(_))
        ));
        let bad = BTreeMap::from([("no.such.config".to_string(), "1".to_string())]);
        assert!(matches!(
            m.create_topic("c", 1, 1, bad),
            Err(BrokerError::InvalidConfig(_))
        ));
    }

    #[test]
    fn topics_partitions_and_configs_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let m = manager(dir.path());
            let t = m.create_topic("t", 1, -1, BTreeMap::new()).unwrap();
            m.create_partitions("t", 3, false).unwrap();
            let set_retention = Alteration {
                kind: crate::config::alter::ResourceKind::Topic,
                replace: true,
                changes: vec![crate::config::alter::Change::Set(
                    "retention.ms".into(),
                    "5".into(),
                )],
            };
            m.alter_topic_configs("t", &set_retention, false).unwrap();
            m.create_topic("gone", 1, 1, BTreeMap::new()).unwrap();
            m.delete_topic("gone").unwrap();
            t.id
        };
        let m = manager(dir.path());
        let t = m.topic("t").unwrap();
        assert_eq!(t.id, id);
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.configs.get("retention.ms").map(String::as_str), Some("5"));
        assert!(m.topic("gone").is_none());
        assert!(!dir.path().join("gone-0").exists());
    }

    fn append_one(m: &LogManager, topic: &str) {
        let t = m.topic(topic).unwrap();
        let batch = bytes::Bytes::from(crate::log::testutil::batch(1));
        m.append_records(&t, 0, Some(&batch), crate::clock::now_ms(), &|_, _, _| Ok(()))
            .unwrap();
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_deletion_a_crash_interrupted_is_finished_and_a_recreated_topic_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        {
            let m = manager(dir.path());
            m.create_topic("t", 1, -1, BTreeMap::new()).unwrap();
            append_one(&m, "t");
            // What a crash leaves after the rename of a deletion, before its removal.
            std::fs::create_dir(dir.path().join("old-0.0123abcd-delete")).unwrap();
            // And a partition directory whose topic's record is gone (a crash of the deletion
            // of older versions, which removed the record first).
            m.meta.delete_topic("t").unwrap();
        }
        let m = manager(dir.path());
        assert!(m.topic("t").is_none());
        let names = entries(dir.path());
        assert!(!names.iter().any(|n| n.ends_with("-delete")), "{names:?}");
        assert!(!names.contains(&"t-0".to_string()), "{names:?}");
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("t-0.") && n.ends_with("-stray")),
            "{names:?}"
        );
        // The same name again: nothing of the old records is served.
        m.create_topic("t", 1, -1, BTreeMap::new()).unwrap();
        let log = m.partition("t", 0).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    }

    #[test]
    fn deletion_moves_the_directories_aside_before_the_record_goes_and_stops_the_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path());
        m.create_topic("t", 2, -1, BTreeMap::new()).unwrap();
        append_one(&m, "t");
        let log = m.partition("t", 0).unwrap();
        m.delete_topic("t").unwrap();
        assert!(matches!(
            log.append(&crate::log::testutil::batch(1), 0),
            Err(LogError::Closed(_))
        ));
        let names = entries(dir.path());
        assert!(!names.iter().any(|n| n.starts_with("t-")), "{names:?}");
        drop(m);
        assert!(manager(dir.path()).topic("t").is_none());
    }

    #[test]
    fn a_partition_directory_of_another_topic_id_is_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let old_id = {
            let m = manager(dir.path());
            let t = m.create_topic("t", 1, -1, BTreeMap::new()).unwrap();
            append_one(&m, "t");
            let text = std::fs::read_to_string(dir.path().join("t-0").join("partition.metadata")).unwrap();
            assert_eq!(
                text,
                format!(
                    "version: 0\ntopic_id: {}\n",
                    crate::kafka_uuid::to_string(t.id.into_bytes())
                )
            );
            // The record now names a topic "t" with another id (re-created while its old
            // directory survived).
            let mut record = t.record();
            record.id = uuid::Uuid::new_v4();
            m.meta.put_topic(&record).unwrap();
            t.id
        };
        let m = manager(dir.path());
        let t = m.topic("t").unwrap();
        assert_ne!(t.id, old_id);
        let log = m.partition("t", 0).unwrap();
        assert_eq!(log.log_end_offset(), 0, "the old topic's records are not served");
        let names = entries(dir.path());
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("t-0.") && n.ends_with("-stray")),
            "{names:?}"
        );
        assert_eq!(
            read_partition_metadata(&dir.path().join("t-0")).unwrap(),
            Some(t.id.into_bytes())
        );
    }

    #[test]
    fn partitions_recovered_in_parallel_keep_their_topics_and_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let m = manager(dir.path());
            for topic in ["a", "b", "c"] {
                let t = m.create_topic(topic, 4, -1, BTreeMap::new()).unwrap();
                for p in 0..4 {
                    // Partition p holds p + 1 records, so the order is visible after reopening.
                    for _ in 0..=p {
                        let batch = bytes::Bytes::from(crate::log::testutil::batch(1));
                        m.append_records(&t, p, Some(&batch), crate::clock::now_ms(), &|_, _, _| Ok(()))
                            .unwrap();
                    }
                }
            }
        }
        let m = manager(dir.path());
        for topic in ["a", "b", "c"] {
            let ends: Vec<i64> = m
                .topic(topic)
                .unwrap()
                .partitions
                .iter()
                .map(|l| l.log_end_offset())
                .collect();
            assert_eq!(ends, [1, 2, 3, 4], "topic {topic}");
        }
    }
}

//! The broker's shared state, handed to every request handler.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::config::alter::Alteration;
use crate::config::dynamic::{self, DynamicLayers};
use crate::config::group::{ConsumerGroupConfig, GroupCoordinatorConfig};
use crate::config::{Config, DynamicBrokerConfig, Level};
use crate::connection_limit::ConnectionLimit;
use crate::error::BrokerError;
use crate::fetch_session::FetchSessionCache;
use crate::group::GroupCoordinator;
use crate::log::Flusher;
use crate::log_cleaner::LogCleaner;
use crate::log_manager::LogManager;
use crate::meta::{identity, ConfigEntity, MetaStore};
use crate::producer_ids::ProducerIdManager;
use crate::txn::{TransactionCoordinator, TxnSettings};

pub struct Broker {
    /// The settings the broker started with.
    pub config: Arc<Config>,
    /// The same, with the values AlterConfigs changed at run time on top.
    pub dynamic_config: Arc<DynamicBrokerConfig>,
    pub node_id: i32,
    pub cluster_id: String,
    pub logs: LogManager,
    pub meta: Arc<MetaStore>,
    pub groups: Arc<GroupCoordinator>,
    /// Ids for idempotent producers.
    pub producer_ids: ProducerIdManager,
    /// Incremental fetch sessions (KIP-227).
    pub fetch_sessions: FetchSessionCache,
    /// The transaction coordinator.
    pub txn: TransactionCoordinator,
    /// Group commit of acks=-1 produces and the background fsyncs of the others.
    pub flusher: Flusher,
    /// The log cleaner's threads (compaction).
    pub cleaner: LogCleaner,
    /// Serialises changes to the dynamic broker settings (read, change, persist, apply).
    broker_config_writes: Mutex<()>,
    /// Reads made by fetches, so tests can tell a long poll woken for nothing from one woken
    /// for data.
    #[cfg(test)]
    pub(crate) fetch_reads: std::sync::atomic::AtomicU64,
    /// `max.connections`, which AlterConfigs may change.
    pub connection_limit: Arc<ConnectionLimit>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("cannot load the transaction state: {0}")]
    Transactions(crate::txn::TxnError),
    #[error("{0}")]
    Identity(String),
    #[error(transparent)]
    Broker(#[from] crate::error::BrokerError),
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
}

/// Subdirectory of the data directory holding RocksDB. Its name contains no partition suffix
/// (`-<n>`), so it can never be mistaken for a partition directory.
const META_DIR: &str = "__keel_metadata";

impl Broker {
    /// Opens the data directory: identity, metadata store, then every partition log (with
    /// recovery). Must run inside a tokio runtime (the flusher and the group timers are tasks;
    /// the timers stop at `shutdown`).
    pub fn open(config: Arc<Config>, shutdown: CancellationToken) -> Result<Arc<Broker>, StartError> {
        let dir = config.log_dir.clone();
        std::fs::create_dir_all(&dir)
            .and_then(|()| sync_dir_and_parent(&dir))
            .map_err(|e| StartError::DataDir(dir.display().to_string(), e))?;
        let id = identity::load_or_create(&dir, config.node_id, config.cluster_id.as_deref())
            .map_err(StartError::Identity)?;
        let meta = Arc::new(MetaStore::open(&dir.join(META_DIR))?);
        let stored = meta.dynamic_configs()?;
        let layers = DynamicLayers {
            per_broker: stored
                .get(&ConfigEntity::Broker(id.node_id))
                .cloned()
                .unwrap_or_default(),
            cluster_default: stored
                .get(&ConfigEntity::BrokerDefault)
                .cloned()
                .unwrap_or_default(),
        };
        let dynamic_config = Arc::new(DynamicBrokerConfig::new(config.clone(), layers));
        let connection_limit = ConnectionLimit::new(max_connections(&dynamic_config));
        let logs = LogManager::open(&dir, dynamic_config.clone(), meta.clone())?;
        let group_configs = stored
            .into_iter()
            .filter_map(|(entity, values)| match entity {
                ConfigEntity::Group(group) => Some((group, values)),
                _ => None,
            })
            .collect();
        let (txn, unfinished) =
            TransactionCoordinator::open(&meta, txn_settings(&config)).map_err(StartError::Transactions)?;
        let groups = GroupCoordinator::open(
            meta.clone(),
            group_config(&config),
            group_configs,
            shutdown.clone(),
        )?;
        let flusher = Flusher::new(std::time::Duration::from_millis(
            config.flush_background_interval_ms,
        ));
        let broker = Arc::new(Broker {
            dynamic_config,
            node_id: id.node_id,
            cluster_id: id.cluster_id,
            logs,
            groups,
            producer_ids: ProducerIdManager::default(),
            fetch_sessions: FetchSessionCache::new(config.fetch_session_cache_slots),
            txn,
            meta,
            flusher,
            cleaner: LogCleaner::new(&dir),
            broker_config_writes: Mutex::new(()),
            #[cfg(test)]
            fetch_reads: Default::default(),
            connection_limit,
            config,
        });
        broker.cleaner.start(
            Arc::downgrade(&broker),
            broker
                .config
                .value("log.cleaner.enable")
                .is_none_or(|v| v.trim() != "false"),
            broker
                .config
                .value("log.cleaner.threads")
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(1),
        );
        tokio::spawn(expire_producers(Arc::downgrade(&broker), shutdown.clone()));
        tokio::spawn(enforce_retention(Arc::downgrade(&broker), shutdown.clone()));
        tokio::spawn(watch_disk_pressure(Arc::downgrade(&broker), shutdown.clone()));
        tokio::spawn(transaction_timers(Arc::downgrade(&broker), shutdown.clone()));
        tokio::spawn(checkpoint_recovery_points(Arc::downgrade(&broker), shutdown));
        // Transactions a crash left between their Prepare state and their markers.
        broker.complete_transactions(unfinished);
        Ok(broker)
    }

    /// Writes the markers of transactions in a Prepare state and completes them, on a storage
    /// thread (the markers move the last stable offset, which wakes the fetches waiting on it).
    pub fn complete_transactions(self: &Arc<Self>, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let broker = Arc::clone(self);
        drop(crate::storage_task::run("txn_markers", move || {
            for id in ids {
                // A failure leaves the Prepare state, which the timer completes later.
                let _ = broker
                    .txn
                    .complete(&broker.meta, &broker.logs, &broker.groups, &id);
            }
        }));
    }

    /// Changes the dynamic broker settings of one level: the alteration applied to the current
    /// ones gives the new set, which is validated, persisted, and then applied — the topics'
    /// storage settings that inherit from it are re-derived. Changes are serialised, so
    /// concurrent alters never lose each other's values.
    pub fn alter_broker_config(
        &self,
        level: Level,
        alteration: &Alteration,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _serial = self
            .broker_config_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let values = alteration.apply(self.dynamic_config.layers().level(level))?;
        dynamic::validate(level, &values).map_err(|e| BrokerError::InvalidRequest(e.to_string()))?;
        if validate_only {
            return Ok(());
        }
        let entity = match level {
            Level::PerBroker => ConfigEntity::Broker(self.node_id),
            Level::ClusterDefault => ConfigEntity::BrokerDefault,
        };
        self.meta.put_dynamic_configs(&entity, &values)?;
        let names: Vec<&str> = values.keys().map(String::as_str).collect();
        tracing::info!(?level, settings = ?names, "dynamic broker configuration altered");
        self.dynamic_config.set(level, values);
        self.logs.reconfigure();
        self.connection_limit.set(max_connections(&self.dynamic_config));
        Ok(())
    }

    /// Clean shutdown, once no request is being served: group changes still queued are stored,
    /// then every partition is flushed and the metadata store closed. An error means something
    /// acknowledged may not be durable.
    pub async fn shutdown(self: &Arc<Self>) -> Result<(), BrokerError> {
        let groups = self.groups.flush().await;
        let broker = Arc::clone(self);
        let logs = crate::storage_task::try_run("shutdown_flush", move || broker.close()).await;
        groups?;
        logs
    }

    /// Makes what is acknowledged durable before exit. Tries every partition and the metadata
    /// store even after a failure, and reports the first failure.
    fn close(&self) -> Result<(), BrokerError> {
        // No segment is swapped under the final flush.
        self.cleaner.shutdown();
        let mut first_failure = None;
        for topic in self.logs.topics() {
            for (p, log) in topic.partitions.iter().enumerate() {
                if let Err(e) = log
                    .flush_sealed()
                    .and_then(|()| log.flush_until(log.log_end_offset()))
                {
                    tracing::error!(topic = %topic.name, error = %e, "flush at shutdown failed");
                    first_failure.get_or_insert(BrokerError::Log(e));
                    continue;
                }
                if let Err(e) = log.persist_active_indexes() {
                    tracing::error!(topic = %topic.name, error = %e, "index flush at shutdown failed");
                    first_failure.get_or_insert(BrokerError::Log(e));
                    continue;
                }
                // The producer state as of the (now durable) log end: the next start replays
                // nothing.
                let snapshot = log.producer_snapshot();
                if let Err(e) = self.logs.store_producer_snapshot(&topic.id, p as i32, &snapshot) {
                    tracing::warn!(topic = %topic.name, partition = p, error = %e, "cannot store the producer state snapshot at shutdown");
                }
            }
        }
        if let Err(e) = self.meta.close() {
            tracing::error!(error = %e, "metadata store flush at shutdown failed");
            first_failure.get_or_insert(BrokerError::Meta(e));
        }
        // Only a shutdown that made everything durable says so: the next start then trusts
        // every segment and index without scanning.
        if first_failure.is_none() {
            let marked = self
                .logs
                .checkpoint_recovery_points()
                .and_then(|()| self.logs.mark_clean_shutdown());
            if let Err(e) = marked {
                tracing::error!(error = %e, "cannot record the clean shutdown");
                first_failure = Some(BrokerError::Log(e));
            }
        }
        first_failure.map_or(Ok(()), Err)
    }
}

/// A broker setting's value as it stands now: the static one, or what AlterConfigs set at run
/// time.
fn current_setting(broker: &Broker, key: &str) -> Option<String> {
    broker.dynamic_config.value(key).map(|(value, _)| value)
}

/// The value of an integer broker setting, at least 1 (periods and ages).
fn positive_setting(broker: &Broker, key: &str, default: u64) -> u64 {
    broker
        .config
        .value(key)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(default)
        .max(1)
}

/// Runs `job` on a storage thread every `period` and hands its outcome to `done`, until
/// shutdown or the broker is gone.
async fn periodically<T, J, D>(
    broker: std::sync::Weak<Broker>,
    shutdown: CancellationToken,
    period: std::time::Duration,
    task: &'static str,
    job: J,
    done: D,
) where
    T: Send + 'static,
    J: Fn(&Broker) -> T + Send + Sync + 'static,
    D: Fn(Result<T, crate::storage_task::TaskFailed>),
{
    let job = Arc::new(job);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Some(b) = broker.upgrade() else { return };
        let job = Arc::clone(&job);
        done(crate::storage_task::run(task, move || job(&b)).await);
    }
}

/// Every `log.retention.check.interval.ms`, applies retention to every log (Kafka's
/// kafka-log-retention task), then Keel's broker-wide `keel.log.dirs.max.bytes`; each deleted
/// segment's renamed files are removed after its topic's `file.delete.delay.ms`.
async fn enforce_retention(broker: std::sync::Weak<Broker>, shutdown: CancellationToken) {
    let Some(every) = broker
        .upgrade()
        .map(|b| positive_setting(&b, "log.retention.check.interval.ms", 300_000))
    else {
        return;
    };
    let period = std::time::Duration::from_millis(every);
    let job = |b: &Broker| {
        let mut deleted = b.logs.delete_old_segments(crate::clock::now_ms());
        let budget = current_setting(b, "keel.log.dirs.max.bytes").and_then(|v| v.trim().parse::<i64>().ok());
        if let Some(max) = budget.and_then(|m| u64::try_from(m).ok()) {
            deleted.extend(b.logs.enforce_disk_budget(max));
        }
        deleted
    };
    periodically(broker, shutdown, period, "log_retention", job, |deleted| {
        for segments in deleted.into_iter().flatten() {
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(segments.delay_ms())).await;
                match crate::storage_task::run("delete_segment_files", move || segments.remove()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove a deleted segment's files"),
                    Err(e) => tracing::warn!(error = %e, "cannot remove a deleted segment's files"),
                }
            });
        }
    })
    .await;
}

/// Every `keel.disk.check.interval.ms`, measures the log directory's filesystem against the
/// disk pressure thresholds (read each time, so a change at run time applies at the next
/// check); a change of level is logged.
async fn watch_disk_pressure(broker: std::sync::Weak<Broker>, shutdown: CancellationToken) {
    let Some(every) = broker
        .upgrade()
        .map(|b| positive_setting(&b, "keel.disk.check.interval.ms", 1_000))
    else {
        return;
    };
    let period = std::time::Duration::from_millis(every);
    let job = |b: &Broker| {
        let ratio = |key: &str, default: f64| {
            current_setting(b, key)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(default)
        };
        b.logs.update_disk_pressure(
            ratio("keel.disk.pressure.soft.ratio", 0.85),
            ratio("keel.disk.pressure.hard.ratio", 0.95),
        )
    };
    periodically(broker, shutdown, period, "disk_pressure", job, |checked| match checked {
        Ok(Ok((usage, before, after))) if before != after => {
            let used_percent = format!("{:.1}", usage.ratio() * 100.0);
            if after > before {
                tracing::warn!(?after, used_percent, used_bytes = usage.used_bytes, "disk pressure rose: produce is refused (critical topics keep writing under soft pressure)");
            } else {
                tracing::info!(?after, used_percent, used_bytes = usage.used_bytes, "disk pressure fell");
            }
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot measure the log directory's filesystem"),
        Err(e) => tracing::warn!(error = %e, "cannot measure the log directory's filesystem"),
    })
    .await;
}

/// Every `producer.id.expiration.check.interval.ms`, drops the producer state idle for
/// `producer.id.expiration.ms`.
async fn expire_producers(broker: std::sync::Weak<Broker>, shutdown: CancellationToken) {
    let Some((every, max_idle)) = broker.upgrade().map(|b| {
        (
            positive_setting(&b, "producer.id.expiration.check.interval.ms", 1),
            positive_setting(&b, "producer.id.expiration.ms", 1) as i64,
        )
    }) else {
        return;
    };
    let period = std::time::Duration::from_millis(every);
    let job = move |b: &Broker| b.logs.remove_expired_producers(crate::clock::now_ms(), max_idle);
    periodically(broker, shutdown, period, "expire_producers", job, |expired| {
        if let Ok(expired @ 1..) = expired {
            tracing::info!(expired, "expired idle producer state");
        }
    })
    .await;
}

/// Every `log.flush.offset.checkpoint.interval.ms`, writes each partition's recovery point to
/// the log directory's checkpoint (Kafka's recovery-point-offset-checkpoint); a clean shutdown
/// writes it once more, after the final flush.
async fn checkpoint_recovery_points(broker: std::sync::Weak<Broker>, shutdown: CancellationToken) {
    let Some(every) = broker
        .upgrade()
        .map(|b| positive_setting(&b, "log.flush.offset.checkpoint.interval.ms", 60_000))
    else {
        return;
    };
    let period = std::time::Duration::from_millis(every);
    let job = |b: &Broker| b.logs.checkpoint_recovery_points();
    periodically(
        broker,
        shutdown,
        period,
        "recovery_point_checkpoint",
        job,
        |written| match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the recovery point checkpoint"),
            Err(e) => tracing::warn!(error = %e, "cannot write the recovery point checkpoint"),
        },
    )
    .await;
}

fn txn_settings(config: &Config) -> TxnSettings {
    let int = |key: &str| {
        config
            .value(key)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(1)
    };
    TxnSettings {
        max_timeout_ms: int("transaction.max.timeout.ms").clamp(1, i64::from(i32::MAX)) as i32,
        id_expiration_ms: int("transactional.id.expiration.ms"),
    }
}

/// Aborts transactions open longer than their timeout (and completes Prepare states a failed
/// marker write left), every `transaction.abort.timed.out.transaction.cleanup.interval.ms`;
/// forgets idle transactional ids every
/// `transaction.remove.expired.transaction.cleanup.interval.ms`.
async fn transaction_timers(broker: std::sync::Weak<Broker>, shutdown: CancellationToken) {
    let Some((abort_every, expire_every)) = broker.upgrade().map(|b| {
        let int = |key: &str| {
            b.config
                .value(key)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1)
                .max(1)
        };
        (
            int("transaction.abort.timed.out.transaction.cleanup.interval.ms"),
            int("transaction.remove.expired.transaction.cleanup.interval.ms"),
        )
    }) else {
        return;
    };
    let mut aborts = tokio::time::interval(std::time::Duration::from_millis(abort_every));
    let mut expiries = tokio::time::interval(std::time::Duration::from_millis(expire_every));
    for ticks in [&mut aborts, &mut expiries] {
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
    }
    loop {
        let expire = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = aborts.tick() => false,
            _ = expiries.tick() => true,
        };
        let Some(b) = broker.upgrade() else { return };
        let task = Arc::clone(&b);
        let due = crate::storage_task::run("txn_timers", move || {
            let now = crate::clock::now_ms();
            if expire {
                let removed = task.txn.expire_ids(&task.meta, now);
                if removed > 0 {
                    tracing::info!(removed, "expired idle transactional ids");
                }
                Vec::new()
            } else {
                task.txn.abort_timed_out(&task.meta, now)
            }
        })
        .await
        .unwrap_or_default();
        b.complete_transactions(due);
    }
}

/// Makes the data directory's creation durable: its own entries and its entry in its parent.
fn sync_dir_and_parent(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    match dir.canonicalize()?.parent() {
        Some(parent) => std::fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

/// The effective `max.connections` (validated to be at least 1 wherever it was set).
fn max_connections(config: &DynamicBrokerConfig) -> usize {
    config
        .value("max.connections")
        .and_then(|(v, _)| v.trim().parse::<usize>().ok())
        .unwrap_or(config.static_config().max_connections)
        .max(1)
}

fn group_config(config: &Config) -> GroupCoordinatorConfig {
    let int = |key: &str| {
        config
            .value(key)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0)
    };
    GroupCoordinatorConfig {
        min_session_timeout_ms: int("group.min.session.timeout.ms") as i32,
        max_session_timeout_ms: int("group.max.session.timeout.ms") as i32,
        initial_rebalance_delay_ms: int("group.initial.rebalance.delay.ms") as i32,
        offsets_retention_ms: int("offsets.retention.minutes") * 60_000,
        offset_metadata_max_bytes: int("offset.metadata.max.bytes").max(0) as usize,
        consumer: ConsumerGroupConfig {
            session_timeout_ms: int("group.consumer.session.timeout.ms") as i32,
            heartbeat_interval_ms: int("group.consumer.heartbeat.interval.ms") as i32,
            min_session_timeout_ms: int("group.consumer.min.session.timeout.ms") as i32,
            max_session_timeout_ms: int("group.consumer.max.session.timeout.ms") as i32,
            min_heartbeat_interval_ms: int("group.consumer.min.heartbeat.interval.ms") as i32,
            max_heartbeat_interval_ms: int("group.consumer.max.heartbeat.interval.ms") as i32,
            assignors: config
                .value("group.consumer.assignors")
                .unwrap_or("uniform,range".into())
                .split(',')
                .map(|a| a.trim().to_string())
                .filter(|a| crate::group::ASSIGNORS.contains(&a.as_str()))
                .collect(),
            max_size: int("group.consumer.max.size").max(1) as usize,
        },
    }
}

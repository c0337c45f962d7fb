//! The broker's shared state, handed to every request handler.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Config;
use crate::group::{ConsumerGroupConfig, GroupConfig, GroupCoordinator};
use crate::log::Flusher;
use crate::log_manager::LogManager;
use crate::meta::{identity, MetaStore};

pub struct Broker {
    pub config: Arc<Config>,
    pub node_id: i32,
    pub cluster_id: String,
    pub logs: LogManager,
    pub meta: Arc<MetaStore>,
    pub groups: Arc<GroupCoordinator>,
    /// Group commit of acks=-1 produces.
    pub flusher: Flusher,
    /// Woken after every append, so long-polling fetches wait on data rather than on a timer.
    pub appended: Notify,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(String, std::io::Error),
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
    /// recovery). Must run inside a tokio runtime (the flusher is a task).
    pub fn open(config: Arc<Config>) -> Result<Arc<Broker>, StartError> {
        let dir = config.log_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| StartError::DataDir(dir.display().to_string(), e))?;
        let id = identity::load_or_create(&dir, config.node_id, config.cluster_id.as_deref())
            .map_err(StartError::Identity)?;
        let meta = Arc::new(MetaStore::open(&dir.join(META_DIR))?);
        let logs = LogManager::open(&dir, config.clone(), meta.clone())?;
        let groups = GroupCoordinator::open(meta.clone(), group_config(&config))?;
        Ok(Arc::new(Broker {
            node_id: id.node_id,
            cluster_id: id.cluster_id,
            logs,
            groups,
            meta,
            flusher: Flusher::spawn(),
            appended: Notify::new(),
            config,
        }))
    }

    /// Makes what is acknowledged durable before exit.
    pub fn close(&self) {
        for topic in self.logs.topics() {
            for log in &topic.partitions {
                if let Err(e) = log.flush_until(log.log_end_offset()) {
                    tracing::error!(topic = %topic.name, error = %e, "flush at shutdown failed");
                }
            }
        }
        if let Err(e) = self.meta.close() {
            tracing::error!(error = %e, "metadata store flush at shutdown failed");
        }
    }
}

fn group_config(config: &Config) -> GroupConfig {
    let int = |key: &str| {
        config
            .value(key)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0)
    };
    GroupConfig {
        min_session_timeout_ms: int("group.min.session.timeout.ms") as i32,
        max_session_timeout_ms: int("group.max.session.timeout.ms") as i32,
        initial_rebalance_delay_ms: int("group.initial.rebalance.delay.ms") as i32,
        offsets_retention_ms: int("offsets.retention.minutes") * 60_000,
        offset_metadata_max_bytes: int("offset.metadata.max.bytes").max(0) as usize,
        consumer: ConsumerGroupConfig {
            session_timeout_ms: int("group.consumer.session.timeout.ms") as i32,
            heartbeat_interval_ms: int("group.consumer.heartbeat.interval.ms") as i32,
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

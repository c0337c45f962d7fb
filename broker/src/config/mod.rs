//! The broker's configuration, layered as Kafka users know it: defaults, a server.properties
//! file, `KAFKA_*` environment variables (the apache/kafka image's convention), then
//! `--override key=value` flags.

pub mod alter;
pub mod defs;
pub mod docs;
pub mod dynamic;
pub mod group;
mod listeners;
pub mod properties;
pub mod topic;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use defs::{broker_def, ConfigDef, Kind, Update, BROKER_CONFIGS};
pub use dynamic::{BrokerSource, DynamicBrokerConfig, Level};
pub use listeners::ListenerSpec;

/// Where a broker setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Default,
    File,
    Environment,
    Override,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("cannot read {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("malformed --override {0:?}: expected key=value")]
    Override(String),
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// The effective configuration: raw values by Kafka name plus the typed settings Keel uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every explicitly set value (file, environment, override), by Kafka name.
    explicit: BTreeMap<String, (String, Layer)>,
    pub node_id: i32,
    pub listeners: Vec<ListenerSpec>,
    pub advertised_listeners: Vec<ListenerSpec>,
    pub log_dir: PathBuf,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics: bool,
    pub delete_topic_enable: bool,
    pub message_max_bytes: i32,
    pub socket_request_max_bytes: i32,
    /// `socket.response.max.queued.bytes`.
    pub socket_response_max_queued_bytes: usize,
    /// `fetch.max.bytes`.
    pub fetch_max_bytes: i32,
    /// `max.incremental.fetch.session.cache.slots`.
    pub fetch_session_cache_slots: usize,
    /// `connections.max.idle.ms`.
    pub connections_max_idle_ms: u64,
    pub max_connections: usize,
    pub flush_acks_all: bool,
    /// `log.flush.before.visible`: consumers read only fsynced records.
    pub flush_before_visible: bool,
    /// `log.flush.background.interval.ms`.
    pub flush_background_interval_ms: u64,
    /// CLUSTER_ID from the environment (apache/kafka image convention), used on first start.
    pub cluster_id: Option<String>,
}

impl Config {
    /// Builds the configuration from its layers. `env` is the process environment (passed in so
    /// tests need not mutate the real one).
    pub fn load(
        properties_file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let mut explicit: BTreeMap<String, (String, Layer)> = BTreeMap::new();
        if let Some(path) = properties_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
                path: path.to_path_buf(),
                source,
            })?;
            for (k, v) in properties::parse(&text) {
                explicit.insert(k, (v, Layer::File));
            }
        }
        let mut cluster_id = None;
        for (name, value) in env {
            if name == "CLUSTER_ID" {
                cluster_id = Some(value);
            } else if let Some(key) = properties::env_to_key(&name) {
                explicit.insert(key, (value, Layer::Environment));
            }
        }
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| ConfigError::Override(o.clone()))?;
            explicit.insert(k.trim().to_string(), (v.trim().to_string(), Layer::Override));
        }
        for (key, (value, _)) in &explicit {
            match broker_def(key) {
                Some(def) => def.validate(value).map_err(|r| invalid(key, r))?,
                None => tracing::warn!(key = %key, "unknown configuration key ignored"),
            }
        }
        Self::from_explicit(explicit, cluster_id)
    }

    fn from_explicit(
        explicit: BTreeMap<String, (String, Layer)>,
        cluster_id: Option<String>,
    ) -> Result<Config, ConfigError> {
        let get = |key: &str| -> Option<String> {
            explicit
                .get(key)
                .map(|(v, _)| v.clone())
                .or_else(|| broker_def(key).and_then(|d| d.default).map(str::to_string))
        };
        let int = |key: &str| -> Result<i64, ConfigError> {
            get(key)
                .unwrap_or_default()
                .trim()
                .parse::<i64>()
                .map_err(|e| invalid(key, e.to_string()))
        };
        let boolean = |key: &str| get(key).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));

        let listener_list = |key: &str| -> Result<Option<Vec<ListenerSpec>>, ConfigError> {
            match explicit.get(key) {
                Some((v, _)) if !v.trim().is_empty() => {
                    listeners::parse_list(v).map(Some).map_err(|r| invalid(key, r))
                }
                _ => Ok(None),
            }
        };
        let (listeners, advertised_listeners) = listeners::resolve(
            listener_list("listeners")?,
            listener_list("advertised.listeners")?,
        );
        let protocol_map = get("listener.security.protocol.map").unwrap_or_default();
        for l in &listeners {
            let protocol = listeners::security_protocol(&protocol_map, &l.name).ok_or_else(|| {
                invalid(
                    "listener.security.protocol.map",
                    format!("no entry for listener {}", l.name),
                )
            })?;
            if protocol != "PLAINTEXT" {
                return Err(invalid(
                    "listeners",
                    format!(
                        "listener {} uses {protocol}; Keel serves PLAINTEXT only for now",
                        l.name
                    ),
                ));
            }
        }
        let log_dir = explicit
            .get("log.dirs")
            .or_else(|| explicit.get("log.dir"))
            .map(|(v, _)| v.clone())
            .unwrap_or_else(|| "./data".to_string());
        let log_dir = log_dir
            .split(',')
            .map(str::trim)
            .find(|s| !s.is_empty())
            .unwrap_or("./data");

        // Bounds (Kafka's atLeast) were checked against the settings table by `load`.
        let config = Config {
            node_id: int("node.id")? as i32,
            listeners,
            advertised_listeners,
            log_dir: PathBuf::from(log_dir),
            num_partitions: int("num.partitions")? as i32,
            default_replication_factor: int("default.replication.factor")? as i16,
            auto_create_topics: boolean("auto.create.topics.enable"),
            delete_topic_enable: boolean("delete.topic.enable"),
            message_max_bytes: int("message.max.bytes")? as i32,
            socket_request_max_bytes: int("socket.request.max.bytes")? as i32,
            socket_response_max_queued_bytes: int("socket.response.max.queued.bytes")?.max(1) as usize,
            fetch_max_bytes: int("fetch.max.bytes")? as i32,
            fetch_session_cache_slots: int("max.incremental.fetch.session.cache.slots")?.max(0) as usize,
            connections_max_idle_ms: int("connections.max.idle.ms")?.max(1) as u64,
            max_connections: int("max.connections")? as usize,
            flush_acks_all: boolean("log.flush.acks.all"),
            flush_before_visible: boolean("log.flush.before.visible"),
            flush_background_interval_ms: int("log.flush.background.interval.ms")?.max(1) as u64,
            cluster_id,
            explicit: explicit.clone(),
        };
        // Kafka's GroupCoordinatorConfig checks the KIP-848 defaults against their bounds.
        for (key, min_key, max_key) in [
            (
                "group.consumer.session.timeout.ms",
                "group.consumer.min.session.timeout.ms",
                "group.consumer.max.session.timeout.ms",
            ),
            (
                "group.consumer.heartbeat.interval.ms",
                "group.consumer.min.heartbeat.interval.ms",
                "group.consumer.max.heartbeat.interval.ms",
            ),
        ] {
            let (v, lo, hi) = (int(key)?, int(min_key)?, int(max_key)?);
            if v < lo || v > hi {
                return Err(invalid(
                    key,
                    format!("{v} is outside [{min_key}, {max_key}] = [{lo}, {hi}]"),
                ));
            }
        }
        Ok(config)
    }

    /// The value of a broker setting: explicit, else its default (`None` for null defaults).
    pub fn value(&self, key: &str) -> Option<String> {
        self.explicit
            .get(key)
            .map(|(v, _)| v.clone())
            .or_else(|| self.derived(key))
            .or_else(|| broker_def(key).and_then(|d| d.default).map(str::to_string))
    }

    /// Whether the value of `key` was set by the operator rather than taken from a default.
    pub fn is_explicit(&self, key: &str) -> bool {
        self.explicit.contains_key(key)
    }

    /// Settings Kafka derives from coarser ones (`log.roll.ms` from `log.roll.hours`, ...).
    fn derived(&self, key: &str) -> Option<String> {
        let num = |k: &str| {
            self.explicit
                .get(k)
                .and_then(|(v, _)| v.trim().parse::<i64>().ok())
        };
        match key {
            "log.roll.ms" => num("log.roll.hours").map(|h| (h * 3_600_000).to_string()),
            "log.roll.jitter.ms" => num("log.roll.jitter.hours").map(|h| (h * 3_600_000).to_string()),
            "log.retention.ms" => num("log.retention.minutes")
                .map(|m| m * 60_000)
                .or_else(|| num("log.retention.hours").map(|h| h * 3_600_000))
                .map(|v| v.to_string()),
            _ => None,
        }
    }

    /// The broker-level default a topic setting inherits, when the operator set one (directly or
    /// through a coarser setting). `None` means the topic's fixed default applies.
    pub fn topic_default(&self, synonym: &str) -> Option<String> {
        self.explicit
            .get(synonym)
            .map(|(v, _)| v.clone())
            .or_else(|| self.derived(synonym))
    }

    /// Every broker setting with its effective value and origin, for DescribeConfigs and the
    /// start-up log.
    pub fn describe(&self) -> Vec<(&'static ConfigDef, Option<String>, Layer)> {
        BROKER_CONFIGS
            .iter()
            .map(|d| {
                let layer = self
                    .explicit
                    .get(d.name)
                    .map(|(_, l)| *l)
                    .unwrap_or(Layer::Default);
                (d, self.value(d.name), layer)
            })
            .collect()
    }
}

/// `[("k", "v")]` as the map the settings code works with, for tests.
#[cfg(test)]
pub(crate) fn settings_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)], overrides: &[&str]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Config::load(None, env, &overrides)
    }

    #[test]
    fn defaults_listen_on_9092_and_advertise_localhost() {
        let c = load(&[], &[]).unwrap();
        assert_eq!(c.listeners[0].to_string(), "PLAINTEXT://0.0.0.0:9092");
        assert_eq!(
            c.advertised_listeners[0].to_string(),
            "PLAINTEXT://localhost:9092"
        );
        assert_eq!(c.log_dir, PathBuf::from("./data"));
        assert_eq!(c.node_id, 1);
        assert!(c.auto_create_topics);
    }

    #[test]
    fn override_beats_environment() {
        let c = load(&[("KAFKA_NUM_PARTITIONS", "3")], &["num.partitions=5"]).unwrap();
        assert_eq!(c.num_partitions, 5);
        let c = load(&[("KAFKA_NUM_PARTITIONS", "3")], &[]).unwrap();
        assert_eq!(c.num_partitions, 3);
    }

    #[test]
    fn listeners_derive_from_advertised_listeners() {
        let c = load(&[("KAFKA_ADVERTISED_LISTENERS", "PLAINTEXT://kafka:9092")], &[]).unwrap();
        assert_eq!(c.listeners[0].to_string(), "PLAINTEXT://0.0.0.0:9092");
        assert_eq!(c.advertised_listeners[0].to_string(), "PLAINTEXT://kafka:9092");
    }

    #[test]
    fn invalid_value_names_the_key() {
        let err = load(&[], &["num.partitions=many"]).unwrap_err().to_string();
        assert!(err.contains("num.partitions"), "{err}");
        let err = load(&[], &["auto.create.topics.enable=yes"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("auto.create.topics.enable"), "{err}");
    }

    #[test]
    fn derived_roll_and_retention_ms() {
        let c = load(&[], &["log.retention.hours=1", "log.roll.hours=2"]).unwrap();
        assert_eq!(c.topic_default("log.retention.ms").as_deref(), Some("3600000"));
        assert_eq!(c.topic_default("log.roll.ms").as_deref(), Some("7200000"));
        assert_eq!(load(&[], &[]).unwrap().topic_default("log.retention.ms"), None);
    }

    #[test]
    fn kip848_defaults_must_lie_within_their_bounds() {
        let err = load(&[], &["group.consumer.session.timeout.ms=6000"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("group.consumer.session.timeout.ms"), "{err}");
        load(
            &[],
            &[
                "group.consumer.session.timeout.ms=6000",
                "group.consumer.min.session.timeout.ms=6000",
            ],
        )
        .unwrap();
    }

    #[test]
    fn cluster_id_comes_from_environment() {
        let c = load(&[("CLUSTER_ID", "MkU3OEVBNTcwNTJENDM2Qk")], &[]).unwrap();
        assert_eq!(c.cluster_id.as_deref(), Some("MkU3OEVBNTcwNTJENDM2Qk"));
    }
}

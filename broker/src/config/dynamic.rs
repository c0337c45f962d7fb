//! Dynamic broker configuration (Kafka's KIP-226): settings changed while the broker runs, by
//! AlterConfigs or IncrementalAlterConfigs on a BROKER resource, at two levels — this broker
//! (the resource named by its node id) and the cluster-wide default (the empty name).
//!
//! Precedence, highest first, as Kafka's DynamicBrokerConfig: this broker's dynamic value, the
//! dynamic cluster default, the static configuration (file, `KAFKA_*`, `--override`), the
//! setting's default. Topic settings inherit through their broker synonym, so changing
//! `log.cleanup.policy` here changes every topic that has no `cleanup.policy` of its own.
//!
//! This type only resolves and validates; the broker persists a change in the metadata store
//! before it is applied here (see `Broker::alter_broker_config`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::defs::{broker_def, Update};
use super::Config;

/// The level a dynamic value is set at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// This broker (resource name = its node id).
    PerBroker,
    /// Every broker of the cluster (the empty resource name).
    ClusterDefault,
}

/// Where an effective broker value comes from (the broker rows of Kafka's ConfigSource).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerSource {
    PerBroker,
    ClusterDefault,
    Static,
    Default,
}

/// The values set at run time, by level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicLayers {
    pub per_broker: BTreeMap<String, String>,
    pub cluster_default: BTreeMap<String, String>,
}

impl DynamicLayers {
    pub fn level(&self, level: Level) -> &BTreeMap<String, String> {
        match level {
            Level::PerBroker => &self.per_broker,
            Level::ClusterDefault => &self.cluster_default,
        }
    }

    fn level_mut(&mut self, level: Level) -> &mut BTreeMap<String, String> {
        match level {
            Level::PerBroker => &mut self.per_broker,
            Level::ClusterDefault => &mut self.cluster_default,
        }
    }
}

/// Why a dynamic change was refused. Kafka answers all of these with INVALID_REQUEST
/// (ConfigAdminManager wraps its ConfigException; see KAFKA-13609).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DynamicConfigError {
    #[error("Cannot update these configs dynamically: {0}")]
    NotDynamic(String),
    #[error("Cannot update these configs at default cluster level, broker id must be specified: {0}")]
    PerBrokerOnly(String),
    #[error("Invalid value {value} for configuration {name}: {reason}")]
    InvalidValue {
        name: String,
        value: String,
        reason: String,
    },
}

pub struct DynamicBrokerConfig {
    static_config: Arc<Config>,
    layers: RwLock<DynamicLayers>,
}

impl DynamicBrokerConfig {
    /// Starts from the values persisted by earlier runs. Values that are no longer valid (a
    /// setting Keel stopped allowing at run time, say) are dropped with a warning, as Kafka
    /// ignores invalid dynamic configs it finds at start-up.
    pub fn new(static_config: Arc<Config>, mut layers: DynamicLayers) -> DynamicBrokerConfig {
        for level in [Level::PerBroker, Level::ClusterDefault] {
            layers.level_mut(level).retain(|name, value| {
                let single = BTreeMap::from([(name.clone(), value.clone())]);
                match validate(level, &single) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(%name, ?level, error = %e, "stored dynamic broker config ignored");
                        false
                    }
                }
            });
        }
        DynamicBrokerConfig {
            static_config,
            layers: RwLock::new(layers),
        }
    }

    /// The configuration the broker started with.
    pub fn static_config(&self) -> &Config {
        &self.static_config
    }

    pub fn layers(&self) -> DynamicLayers {
        self.layers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces one level's values; the caller has validated and persisted them.
    pub fn set(&self, level: Level, values: BTreeMap<String, String>) {
        *self
            .layers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .level_mut(level) = values;
    }

    /// Every level holding a value for `name`, highest precedence first (Kafka's synonyms of a
    /// broker setting). The default is included when the setting has one.
    pub fn synonyms(&self, name: &str) -> Vec<(String, BrokerSource)> {
        let layers = self.layers.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        if let Some(v) = layers.per_broker.get(name) {
            out.push((v.clone(), BrokerSource::PerBroker));
        }
        if let Some(v) = layers.cluster_default.get(name) {
            out.push((v.clone(), BrokerSource::ClusterDefault));
        }
        if let Some(v) = self.static_config.topic_default(name) {
            out.push((v, BrokerSource::Static));
        }
        if let Some(v) = broker_def(name).and_then(|d| d.default) {
            out.push((v.to_string(), BrokerSource::Default));
        }
        out
    }

    /// The effective value of a broker setting and where it comes from.
    pub fn value(&self, name: &str) -> Option<(String, BrokerSource)> {
        self.synonyms(name).into_iter().next().or_else(|| {
            // Settings derived from coarser static ones (log.retention.ms from hours) have no
            // default of their own.
            self.static_config.value(name).map(|v| (v, BrokerSource::Static))
        })
    }

    /// The value a topic setting inherits from its broker synonym when someone set one (at run
    /// time or at start-up); `None` means the topic's fixed default applies.
    pub fn topic_default(&self, synonym: &str) -> Option<(String, BrokerSource)> {
        self.synonyms(synonym)
            .into_iter()
            .find(|(_, source)| *source != BrokerSource::Default)
    }
}

/// Checks a level's complete set of dynamic values, as Kafka's DynamicBrokerConfig.validate:
/// a setting Keel knows must be one Kafka changes at run time (and, for listener and security
/// settings, only per broker) and its value must parse. Names Keel does not know are kept, as
/// Kafka keeps custom broker configs; they have no effect.
pub fn validate(level: Level, values: &BTreeMap<String, String>) -> Result<(), DynamicConfigError> {
    let known = |f: &dyn Fn(Update) -> bool| -> Vec<&str> {
        values
            .keys()
            .filter(|n| broker_def(n).is_some_and(|d| f(d.update)))
            .map(String::as_str)
            .collect()
    };
    let not_dynamic = known(&|u| u == Update::Static);
    if !not_dynamic.is_empty() {
        return Err(DynamicConfigError::NotDynamic(not_dynamic.join(", ")));
    }
    if level == Level::ClusterDefault {
        let per_broker = known(&|u| u == Update::PerBroker);
        if !per_broker.is_empty() {
            return Err(DynamicConfigError::PerBrokerOnly(per_broker.join(", ")));
        }
    }
    for (name, value) in values {
        if let Some(def) = broker_def(name) {
            def.validate(value)
                .map_err(|reason| DynamicConfigError::InvalidValue {
                    name: name.clone(),
                    value: value.clone(),
                    reason,
                })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(overrides: &[&str]) -> DynamicBrokerConfig {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let config = Config::load(None, Vec::new(), &overrides).unwrap();
        DynamicBrokerConfig::new(Arc::new(config), DynamicLayers::default())
    }

    use crate::config::settings_map as map;

    #[test]
    fn per_broker_beats_cluster_default_beats_static_beats_default() {
        let d = dynamic(&["log.retention.ms=1000"]);
        assert_eq!(
            d.value("log.retention.ms"),
            Some(("1000".into(), BrokerSource::Static))
        );
        assert_eq!(
            d.value("log.segment.bytes"),
            Some(("1073741824".into(), BrokerSource::Default))
        );
        assert_eq!(d.topic_default("log.segment.bytes"), None);
        d.set(Level::ClusterDefault, map(&[("log.retention.ms", "2000")]));
        assert_eq!(
            d.topic_default("log.retention.ms"),
            Some(("2000".into(), BrokerSource::ClusterDefault))
        );
        d.set(Level::PerBroker, map(&[("log.retention.ms", "3000")]));
        assert_eq!(
            d.synonyms("log.retention.ms"),
            vec![
                ("3000".into(), BrokerSource::PerBroker),
                ("2000".into(), BrokerSource::ClusterDefault),
                ("1000".into(), BrokerSource::Static),
            ]
        );
        d.set(Level::PerBroker, BTreeMap::new());
        assert_eq!(
            d.value("log.retention.ms"),
            Some(("2000".into(), BrokerSource::ClusterDefault))
        );
    }

    #[test]
    fn validation_follows_kafkas_dynamic_rules() {
        // Dynamic at both levels; custom names are kept.
        validate(
            Level::ClusterDefault,
            &map(&[("log.cleanup.policy", "compact"), ("my.custom", "x")]),
        )
        .unwrap();
        // Kafka's atLeast bounds.
        assert!(matches!(
            validate(Level::PerBroker, &map(&[("log.segment.bytes", "1")])),
            Err(DynamicConfigError::InvalidValue { .. })
        ));
        // Read-only settings.
        assert!(matches!(
            validate(Level::PerBroker, &map(&[("node.id", "2")])),
            Err(DynamicConfigError::NotDynamic(n)) if n == "node.id"
        ));
        assert!(matches!(
            validate(Level::PerBroker, &map(&[("log.retention.hours", "2")])),
            Err(DynamicConfigError::NotDynamic(_))
        ));
        // Listener security settings: per broker only.
        validate(
            Level::PerBroker,
            &map(&[("sasl.kerberos.min.time.before.relogin", "58000")]),
        )
        .unwrap();
        assert!(matches!(
            validate(
                Level::ClusterDefault,
                &map(&[("sasl.kerberos.min.time.before.relogin", "58000")])
            ),
            Err(DynamicConfigError::PerBrokerOnly(_))
        ));
        // Values must parse.
        assert!(matches!(
            validate(Level::PerBroker, &map(&[("message.max.bytes", "big")])),
            Err(DynamicConfigError::InvalidValue { .. })
        ));
        assert!(matches!(
            validate(Level::PerBroker, &map(&[("log.cleanup.policy", "keep")])),
            Err(DynamicConfigError::InvalidValue { .. })
        ));
    }

    #[test]
    fn invalid_stored_values_are_dropped_at_start() {
        let config = Arc::new(Config::load(None, Vec::new(), &[]).unwrap());
        let d = DynamicBrokerConfig::new(
            config,
            DynamicLayers {
                per_broker: map(&[("node.id", "7"), ("compression.type", "zstd")]),
                cluster_default: BTreeMap::new(),
            },
        );
        assert_eq!(d.layers().per_broker, map(&[("compression.type", "zstd")]));
    }
}

//! Group settings: the broker's `group.*` settings as the group coordinator reads them, and the
//! per-group settings (Kafka's GroupConfig, KIP-848) that IncrementalAlterConfigs or
//! AlterConfigs set on a GROUP resource, used by the coordinator in place of the broker's
//! `group.consumer.*` defaults for that group only. A group need not exist to be configured,
//! as in Kafka. The coordinator keeps and persists a group's overrides; their rules are here.

use std::collections::BTreeMap;

/// Group settings (Kafka's broker keys of the same names).
#[derive(Debug, Clone)]
pub struct GroupCoordinatorConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: i32,
    pub offsets_retention_ms: i64,
    pub offset_metadata_max_bytes: usize,
    pub consumer: ConsumerGroupConfig,
}

/// KIP-848 settings (Kafka's `group.consumer.*` broker keys).
#[derive(Debug, Clone)]
pub struct ConsumerGroupConfig {
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    /// Bounds of a group's own consumer.session.timeout.ms and consumer.heartbeat.interval.ms.
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub min_heartbeat_interval_ms: i32,
    pub max_heartbeat_interval_ms: i32,
    /// Server-side assignors offered, the first being the default.
    pub assignors: Vec<String>,
    pub max_size: usize,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            min_session_timeout_ms: 45_000,
            max_session_timeout_ms: 60_000,
            min_heartbeat_interval_ms: 5_000,
            max_heartbeat_interval_ms: 15_000,
            assignors: vec!["uniform".into(), "range".into()],
            max_size: i32::MAX as usize,
        }
    }
}

/// One group setting: its name, the broker setting that supplies its default, and its bounds.
pub struct GroupConfigDef {
    pub name: &'static str,
    pub broker_default: &'static str,
    pub doc: &'static str,
    default: fn(&ConsumerGroupConfig) -> i32,
    bounds: fn(&ConsumerGroupConfig) -> (i32, i32, &'static str, &'static str),
}

pub const SESSION_TIMEOUT: &str = "consumer.session.timeout.ms";
pub const HEARTBEAT_INTERVAL: &str = "consumer.heartbeat.interval.ms";

pub static GROUP_CONFIGS: &[GroupConfigDef] = &[
    GroupConfigDef {
        name: SESSION_TIMEOUT,
        broker_default: "group.consumer.session.timeout.ms",
        doc: "The timeout to detect client failures when using the consumer group protocol.",
        default: |c| c.session_timeout_ms,
        bounds: |c| {
            (
                c.min_session_timeout_ms,
                c.max_session_timeout_ms,
                "group.consumer.min.session.timeout.ms",
                "group.consumer.max.session.timeout.ms",
            )
        },
    },
    GroupConfigDef {
        name: HEARTBEAT_INTERVAL,
        broker_default: "group.consumer.heartbeat.interval.ms",
        doc: "The heartbeat interval given to the members of a consumer group.",
        default: |c| c.heartbeat_interval_ms,
        bounds: |c| {
            (
                c.min_heartbeat_interval_ms,
                c.max_heartbeat_interval_ms,
                "group.consumer.min.heartbeat.interval.ms",
                "group.consumer.max.heartbeat.interval.ms",
            )
        },
    },
];

pub fn group_config_def(name: &str) -> Option<&'static GroupConfigDef> {
    GROUP_CONFIGS.iter().find(|d| d.name == name)
}

/// Why a group's settings were refused (Kafka answers INVALID_CONFIG).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidGroupConfig(pub String);

/// One group's settings: its overrides over the broker defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
}

impl GroupConfig {
    /// Resolves a group's settings. The overrides were validated when set; a value that no
    /// longer parses falls back to the default.
    pub fn resolve(overrides: &BTreeMap<String, String>, defaults: &ConsumerGroupConfig) -> GroupConfig {
        let get = |name: &str| {
            let def = group_config_def(name).expect("one of GROUP_CONFIGS");
            overrides
                .get(def.name)
                .and_then(|v| v.trim().parse::<i32>().ok())
                .unwrap_or((def.default)(defaults))
        };
        GroupConfig {
            session_timeout_ms: get(SESSION_TIMEOUT),
            heartbeat_interval_ms: get(HEARTBEAT_INTERVAL),
        }
    }

    /// Every setting with its effective value and whether the group overrides it.
    pub fn describe(
        overrides: &BTreeMap<String, String>,
        defaults: &ConsumerGroupConfig,
    ) -> Vec<(&'static GroupConfigDef, i32, bool)> {
        let resolved = GroupConfig::resolve(overrides, defaults);
        GROUP_CONFIGS
            .iter()
            .map(|def| {
                let value = match def.name {
                    SESSION_TIMEOUT => resolved.session_timeout_ms,
                    _ => resolved.heartbeat_interval_ms,
                };
                (def, value, overrides.contains_key(def.name))
            })
            .collect()
    }

    /// Checks a group's complete overrides as Kafka's GroupConfig.validate: known names, integer
    /// values within the broker's bounds, and a session timeout longer than the heartbeat
    /// interval.
    pub fn validate(
        overrides: &BTreeMap<String, String>,
        defaults: &ConsumerGroupConfig,
    ) -> Result<(), InvalidGroupConfig> {
        for (name, value) in overrides {
            let def = group_config_def(name)
                .ok_or_else(|| InvalidGroupConfig(format!("Unknown group config name: {name}")))?;
            let v: i32 = value.trim().parse().map_err(|_| {
                InvalidGroupConfig(format!(
                    "Invalid value {value} for configuration {name}: Not a number of type INT"
                ))
            })?;
            let (lo, hi, lo_name, hi_name) = (def.bounds)(defaults);
            if v < lo {
                return Err(InvalidGroupConfig(format!(
                    "{name} must be greater than or equal to {lo_name}"
                )));
            }
            if v > hi {
                return Err(InvalidGroupConfig(format!(
                    "{name} must be less than or equal to {hi_name}"
                )));
            }
        }
        let resolved = GroupConfig::resolve(overrides, defaults);
        if resolved.session_timeout_ms <= resolved.heartbeat_interval_ms {
            return Err(InvalidGroupConfig(format!(
                "{SESSION_TIMEOUT} must be greater than {HEARTBEAT_INTERVAL}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::settings_map as map;

    #[test]
    fn overrides_replace_the_broker_defaults() {
        let defaults = ConsumerGroupConfig::default();
        let g = GroupConfig::resolve(&map(&[(SESSION_TIMEOUT, "50000")]), &defaults);
        assert_eq!(g.session_timeout_ms, 50_000);
        assert_eq!(g.heartbeat_interval_ms, defaults.heartbeat_interval_ms);
        let described = GroupConfig::describe(&map(&[(SESSION_TIMEOUT, "50000")]), &defaults);
        assert_eq!(described[0].1, 50_000);
        assert!(described[0].2);
        assert!(!described[1].2);
    }

    #[test]
    fn validation_follows_kafkas_group_config_rules() {
        let defaults = ConsumerGroupConfig::default();
        GroupConfig::validate(&map(&[(SESSION_TIMEOUT, "50000")]), &defaults).unwrap();
        let refused = |pairs: &[(&str, &str)]| GroupConfig::validate(&map(pairs), &defaults).unwrap_err().0;
        assert!(refused(&[("no.such.setting", "1")]).contains("Unknown group config name"));
        assert!(refused(&[(SESSION_TIMEOUT, "soon")]).contains("INT"));
        assert!(refused(&[(SESSION_TIMEOUT, "44000")]).contains("greater than or equal"));
        assert!(refused(&[(SESSION_TIMEOUT, "600000")]).contains("less than or equal"));
        let defaults = ConsumerGroupConfig {
            max_heartbeat_interval_ms: 60_000,
            ..ConsumerGroupConfig::default()
        };
        assert!(GroupConfig::validate(
            &map(&[(SESSION_TIMEOUT, "45000"), (HEARTBEAT_INTERVAL, "45000")]),
            &defaults
        )
        .unwrap_err()
        .0
        .contains("must be greater than consumer.heartbeat.interval.ms"));
    }
}

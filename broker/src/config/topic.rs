//! Topic-level settings: Kafka's names, their broker-level synonyms, and validation.
//!
//! A topic stores only its overrides; everything else comes from the broker setting named as
//! its synonym, exactly as Kafka resolves `DescribeConfigs` sources.

use std::collections::BTreeMap;

use super::defs::{Kind, CLEANUP_POLICIES, COMPRESSION_TYPES, TIMESTAMP_TYPES};
use super::dynamic::{BrokerSource, DynamicBrokerConfig};

#[derive(Debug)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub kind: Kind,
    /// The broker setting whose value is the default; `None` when the default is fixed.
    pub synonym: Option<&'static str>,
    pub fixed_default: &'static str,
    pub valid: &'static [&'static str],
    pub doc: &'static str,
}

const fn t(
    name: &'static str,
    kind: Kind,
    synonym: Option<&'static str>,
    fixed_default: &'static str,
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        kind,
        synonym,
        fixed_default,
        valid: &[],
        doc,
    }
}

const LONG_MAX: &str = "9223372036854775807";

pub static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        kind: Kind::List,
        synonym: Some("log.cleanup.policy"),
        fixed_default: "delete",
        valid: CLEANUP_POLICIES,
        doc: "delete or compact.",
    },
    TopicConfigDef {
        name: "compression.type",
        kind: Kind::Str,
        synonym: Some("compression.type"),
        fixed_default: "producer",
        valid: COMPRESSION_TYPES,
        doc: "Batches are stored as produced.",
    },
    t(
        "delete.retention.ms",
        Kind::Long,
        Some("log.cleaner.delete.retention.ms"),
        "86400000",
        "How long delete tombstones are kept in compacted topics.",
    ),
    t(
        "file.delete.delay.ms",
        Kind::Long,
        Some("log.segment.delete.delay.ms"),
        "60000",
        "Delay before a deleted segment's file is removed.",
    ),
    t(
        "flush.messages",
        Kind::Long,
        None,
        LONG_MAX,
        "Messages between forced fsyncs. Accepted and without effect: Keel fsyncs per log.flush.acks.all and log.flush.before.visible.",
    ),
    t(
        "flush.ms",
        Kind::Long,
        None,
        LONG_MAX,
        "Time between forced fsyncs. Accepted and without effect: Keel fsyncs per log.flush.acks.all and log.flush.before.visible.",
    ),
    t(
        "index.interval.bytes",
        Kind::Int,
        Some("log.index.interval.bytes"),
        "4096",
        "Bytes between offset index entries.",
    ),
    TopicConfigDef {
        name: "keel.priority",
        kind: Kind::Str,
        synonym: None,
        fixed_default: "normal",
        valid: &["normal", "critical"],
        doc: "Keel's: a critical topic keeps accepting produce under soft disk pressure (keel.disk.pressure.soft.ratio); normal topics are refused first.",
    },
    t(
        "max.compaction.lag.ms",
        Kind::Long,
        Some("log.cleaner.max.compaction.lag.ms"),
        LONG_MAX,
        "Longest time a record stays uncompacted.",
    ),
    t(
        "max.message.bytes",
        Kind::Int,
        Some("message.max.bytes"),
        "1048588",
        "Largest record batch accepted.",
    ),
    TopicConfigDef {
        name: "message.timestamp.type",
        kind: Kind::Str,
        synonym: Some("log.message.timestamp.type"),
        fixed_default: "CreateTime",
        valid: TIMESTAMP_TYPES,
        doc: "CreateTime or LogAppendTime.",
    },
    t(
        "message.timestamp.before.max.ms",
        Kind::Long,
        None,
        LONG_MAX,
        "Largest accepted distance of a record timestamp into the past.",
    ),
    t(
        "message.timestamp.after.max.ms",
        Kind::Long,
        None,
        "3600000",
        "Largest accepted distance of a record timestamp into the future.",
    ),
    t(
        "min.cleanable.dirty.ratio",
        Kind::Double,
        Some("log.cleaner.min.cleanable.ratio"),
        "0.5",
        "Dirty ratio at which a compacted log is cleaned.",
    ),
    t(
        "min.compaction.lag.ms",
        Kind::Long,
        Some("log.cleaner.min.compaction.lag.ms"),
        "0",
        "Shortest time a record stays uncompacted.",
    ),
    t(
        "min.insync.replicas",
        Kind::Int,
        Some("min.insync.replicas"),
        "1",
        "Replicas that must acknowledge acks=-1; a single node has one.",
    ),
    t(
        "preallocate",
        Kind::Bool,
        None,
        "false",
        "Preallocate segment files.",
    ),
    t(
        "retention.bytes",
        Kind::Long,
        Some("log.retention.bytes"),
        "-1",
        "Largest partition size kept; -1 is unbounded.",
    ),
    t(
        "retention.ms",
        Kind::Long,
        Some("log.retention.ms"),
        "604800000",
        "Age after which segments are deleted; -1 keeps forever.",
    ),
    t(
        "segment.bytes",
        Kind::Int,
        Some("log.segment.bytes"),
        "1073741824",
        "Segment size at which the log rolls.",
    ),
    t(
        "segment.index.bytes",
        Kind::Int,
        None,
        "10485760",
        "Largest offset index size.",
    ),
    t(
        "segment.jitter.ms",
        Kind::Long,
        Some("log.roll.jitter.ms"),
        "0",
        "Largest random amount taken off each segment's roll age (segment.ms), so that partitions do not all roll at once.",
    ),
    t(
        "segment.ms",
        Kind::Long,
        Some("log.roll.ms"),
        "604800000",
        "Segment age at which the log rolls.",
    ),
    t(
        "unclean.leader.election.enable",
        Kind::Bool,
        None,
        "false",
        "Meaningless on a single node.",
    ),
];

pub fn topic_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Why a topic config was refused; the caller maps this to INVALID_CONFIG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTopicConfig(pub String);

/// Validates one override.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), InvalidTopicConfig> {
    let def =
        topic_def(name).ok_or_else(|| InvalidTopicConfig(format!("Unknown topic config name: {name}")))?;
    def.kind
        .check(value)
        .map_err(|e| InvalidTopicConfig(format!("Invalid value {value} for configuration {name}: {e}")))?;
    if !def.valid.is_empty() && !def.valid.contains(&value.trim()) {
        return Err(InvalidTopicConfig(format!(
            "Invalid value {value} for configuration {name}: String must be one of: {}",
            def.valid.join(", ")
        )));
    }
    if name == "segment.bytes" && value.trim().parse::<i64>().unwrap_or(0) < 14 {
        return Err(InvalidTopicConfig(format!(
            "Invalid value {value} for configuration segment.bytes: Value must be at least 14"
        )));
    }
    if name == "max.message.bytes" && value.trim().parse::<i64>().unwrap_or(-1) < 0 {
        return Err(InvalidTopicConfig(format!(
            "Invalid value {value} for configuration max.message.bytes: Value must be at least 0"
        )));
    }
    Ok(())
}

/// Where an effective topic value comes from (DescribeConfigs' `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    TopicOverride,
    DynamicBroker,
    DynamicDefaultBroker,
    StaticBroker,
    Default,
}

impl ConfigSource {
    pub fn code(self) -> i8 {
        match self {
            ConfigSource::TopicOverride => 1,
            ConfigSource::DynamicBroker => 2,
            ConfigSource::DynamicDefaultBroker => 3,
            ConfigSource::StaticBroker => 4,
            ConfigSource::Default => 5,
        }
    }
}

impl From<BrokerSource> for ConfigSource {
    fn from(source: BrokerSource) -> ConfigSource {
        match source {
            BrokerSource::PerBroker => ConfigSource::DynamicBroker,
            BrokerSource::ClusterDefault => ConfigSource::DynamicDefaultBroker,
            BrokerSource::Static => ConfigSource::StaticBroker,
            BrokerSource::Default => ConfigSource::Default,
        }
    }
}

/// One resolved topic setting.
#[derive(Debug, Clone)]
pub struct ResolvedTopicConfig {
    pub def: &'static TopicConfigDef,
    pub value: String,
    pub source: ConfigSource,
}

/// Resolves one topic setting: the override, else the broker synonym (dynamic or static),
/// else the fixed default.
fn resolve(
    def: &'static TopicConfigDef,
    overrides: &BTreeMap<String, String>,
    broker: &DynamicBrokerConfig,
) -> ResolvedTopicConfig {
    if let Some(v) = overrides.get(def.name) {
        return ResolvedTopicConfig {
            def,
            value: v.clone(),
            source: ConfigSource::TopicOverride,
        };
    }
    if let Some((value, source)) = def.synonym.and_then(|s| broker.topic_default(s)) {
        return ResolvedTopicConfig {
            def,
            value,
            source: source.into(),
        };
    }
    ResolvedTopicConfig {
        def,
        value: def.fixed_default.to_string(),
        source: ConfigSource::Default,
    }
}

/// Resolves every topic setting.
pub fn resolve_topic_configs(
    overrides: &BTreeMap<String, String>,
    broker: &DynamicBrokerConfig,
) -> Vec<ResolvedTopicConfig> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| resolve(def, overrides, broker))
        .collect()
}

/// The effective value of one topic setting.
pub fn effective(
    overrides: &BTreeMap<String, String>,
    broker: &DynamicBrokerConfig,
    name: &str,
) -> Option<String> {
    topic_def(name).map(|def| resolve(def, overrides, broker).value)
}

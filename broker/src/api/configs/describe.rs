//! DescribeConfigs: each resource's settings with their values, sources, synonyms and docs.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::*;

use super::{broker_level, BROKER, GROUP, TOPIC};
use crate::api::{str_bytes, Reply, RequestContext};
use crate::broker::Broker;
use crate::config::group::GroupConfig;
use crate::config::topic::{resolve_topic_configs, ConfigSource};
use crate::config::{broker_def, BrokerSource, DynamicBrokerConfig, Kind, Level, Update, BROKER_CONFIGS};
use crate::error::BrokerError;

/// DescribeConfigs' config_source codes beyond those of `ConfigSource`.
const SOURCE_GROUP: i8 = 8;

pub async fn describe_configs(
    ctx: Arc<RequestContext>,
    req: DescribeConfigsRequest,
) -> Reply<DescribeConfigsResponse> {
    let broker = &ctx.broker;
    let shape = Shape {
        synonyms: req.include_synonyms,
        docs: req.include_documentation,
        typed: ctx.api_version >= 3,
    };
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            // Null or empty asks for every setting, as in Kafka's ConfigHelper.
            let keys: Option<HashSet<String>> = r
                .configuration_keys
                .as_ref()
                .filter(|k| !k.is_empty())
                .map(|k| k.iter().map(|s| s.to_string()).collect());
            let name = r.resource_name.as_str();
            let outcome = match r.resource_type {
                TOPIC => describe_topic(broker, name, &shape),
                BROKER => describe_broker(broker, name, &shape),
                GROUP => describe_group(broker, name, &shape),
                other => Err(BrokerError::InvalidRequest(format!(
                    "Unsupported resource type {other}"
                ))),
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match outcome {
                Ok(configs) => result.with_configs(
                    configs
                        .into_iter()
                        .filter(|c| keys.as_ref().is_none_or(|k| k.contains(c.name.as_str())))
                        .collect(),
                ),
                Err(e) => result
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.to_string()))),
            }
        })
        .collect();
    Reply::Ready(DescribeConfigsResponse::default().with_results(results))
}

/// What the request asked each entry to carry.
struct Shape {
    synonyms: bool,
    docs: bool,
    /// DescribeConfigs v3+ reports each setting's type.
    typed: bool,
}

/// One described setting. A `None` kind is a setting Keel does not know (a custom broker
/// setting): Kafka reports those as sensitive, without their value.
struct Described<'a> {
    name: &'a str,
    value: Option<String>,
    source: i8,
    read_only: bool,
    kind: Option<Kind>,
    doc: &'a str,
    /// (name, value, source), highest precedence first.
    synonyms: Vec<(&'a str, Option<String>, i8)>,
}

fn entry(d: Described<'_>, shape: &Shape) -> DescribeConfigsResourceResult {
    let sensitive = d.kind.is_none();
    let value = if sensitive { None } else { d.value };
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(d.name))
        .with_value(value.map(str_bytes))
        .with_config_source(d.source)
        .with_read_only(d.read_only)
        .with_is_sensitive(sensitive)
        .with_config_type(match (shape.typed, d.kind) {
            (true, Some(k)) => k.describe_type(),
            _ => 0,
        })
        .with_documentation(shape.docs.then(|| str_bytes(d.doc)));
    if shape.synonyms {
        e.synonyms = d
            .synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(name))
                    .with_value(if sensitive { None } else { value.map(str_bytes) })
                    .with_source(source)
            })
            .collect();
    }
    e
}

fn describe_topic(
    broker: &Broker,
    name: &str,
    shape: &Shape,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    let topic = broker
        .logs
        .topic(name)
        .ok_or(BrokerError::UnknownTopicOrPartition)?;
    let dynamic = &broker.dynamic_config;
    Ok(resolve_topic_configs(&topic.configs, dynamic)
        .into_iter()
        .map(|c| {
            // The chain Kafka reports: the topic override, then every level of the broker
            // synonym (dynamic, static, default).
            let mut synonyms = Vec::new();
            if let Some(v) = topic.configs.get(c.def.name) {
                synonyms.push((c.def.name, Some(v.clone()), ConfigSource::TopicOverride.code()));
            }
            if let Some(syn) = c.def.synonym {
                for (v, source) in broker_synonyms(dynamic, syn) {
                    synonyms.push((syn, Some(v), source));
                }
                if broker_def(syn).and_then(|d| d.default).is_none() {
                    synonyms.push((
                        syn,
                        Some(c.def.fixed_default.to_string()),
                        ConfigSource::Default.code(),
                    ));
                }
            }
            entry(
                Described {
                    name: c.def.name,
                    value: Some(c.value),
                    source: c.source.code(),
                    read_only: false,
                    kind: Some(c.def.kind),
                    doc: c.def.doc,
                    synonyms,
                },
                shape,
            )
        })
        .collect())
}

fn broker_synonyms(dynamic: &DynamicBrokerConfig, name: &str) -> Vec<(String, i8)> {
    dynamic
        .synonyms(name)
        .into_iter()
        .map(|(v, source)| (v, ConfigSource::from(source).code()))
        .collect()
}

fn describe_broker(
    broker: &Broker,
    name: &str,
    shape: &Shape,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    let level = broker_level(broker, name)?;
    let dynamic = &broker.dynamic_config;
    let layers = dynamic.layers();
    // The cluster default describes only what is set at that level, as Kafka does.
    let names: Vec<String> = match level {
        Level::ClusterDefault => layers.cluster_default.keys().cloned().collect(),
        Level::PerBroker => {
            let mut names: Vec<String> = BROKER_CONFIGS.iter().map(|d| d.name.to_string()).collect();
            // Custom settings set at run time are described too.
            for n in layers.per_broker.keys().chain(layers.cluster_default.keys()) {
                if broker_def(n).is_none() && !names.contains(n) {
                    names.push(n.clone());
                }
            }
            names
        }
    };
    Ok(names
        .iter()
        .map(|n| {
            let def = broker_def(n);
            let synonyms: Vec<(&str, Option<String>, i8)> = dynamic
                .synonyms(n)
                .into_iter()
                .filter(|(_, s)| level == Level::PerBroker || *s == BrokerSource::ClusterDefault)
                .map(|(v, s)| (n.as_str(), Some(v), ConfigSource::from(s).code()))
                .collect();
            let (value, source) = match synonyms.first() {
                Some((_, v, s)) => (v.clone(), *s),
                // Settings with no default (log.roll.ms) may still derive from a static one.
                None => (dynamic.value(n).map(|(v, _)| v), ConfigSource::Default.code()),
            };
            entry(
                Described {
                    name: n,
                    value,
                    source,
                    // Kafka reports every setting it cannot change at run time read-only,
                    // custom ones included.
                    read_only: def.is_none_or(|d| d.update == Update::Static),
                    kind: def.map(|d| d.kind),
                    doc: def.map_or("", |d| d.doc),
                    synonyms,
                },
                shape,
            )
        })
        .collect())
}

fn describe_group(
    broker: &Broker,
    name: &str,
    shape: &Shape,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    if name.is_empty() {
        return Err(BrokerError::InvalidRequest("Group name must not be empty".into()));
    }
    let overrides = broker.groups.group_config_overrides(name);
    Ok(
        GroupConfig::describe(&overrides, broker.groups.consumer_defaults())
            .into_iter()
            .map(|(def, value, overridden)| {
                // Kafka's chain: the group's own value (GROUP_CONFIG), then every level of the
                // broker setting it defaults to.
                let mut synonyms: Vec<(&str, Option<String>, i8)> = Vec::new();
                if overridden {
                    synonyms.push((def.name, Some(value.to_string()), SOURCE_GROUP));
                }
                for (v, source) in broker_synonyms(&broker.dynamic_config, def.broker_default) {
                    synonyms.push((def.broker_default, Some(v), source));
                }
                let source = synonyms
                    .first()
                    .map_or(ConfigSource::Default.code(), |(_, _, s)| *s);
                entry(
                    Described {
                        name: def.name,
                        value: Some(value.to_string()),
                        source,
                        read_only: false,
                        kind: Some(Kind::Int),
                        doc: def.doc,
                        synonyms,
                    },
                    shape,
                )
            })
            .collect(),
    )
}

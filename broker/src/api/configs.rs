//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs on the three resources Keel
//! configures: topics (overrides kept with the topic), the broker (KIP-226 dynamic settings, for
//! this broker or as the cluster-wide default) and groups (KIP-848 group settings).

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use super::{Reply, RequestContext};
use crate::broker::Broker;
use crate::config::alter::{Alteration, Change, ResourceKind};
use crate::config::group::GroupConfig;
use crate::config::topic::{resolve_topic_configs, ConfigSource};
use crate::config::{broker_def, BrokerSource, DynamicBrokerConfig, Kind, Level, Update, BROKER_CONFIGS};
use crate::error::BrokerError;
use crate::storage_task;

/// Kafka's ConfigResource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const GROUP: i8 = 32;

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

/// The level an AlterConfigs or DescribeConfigs BROKER resource name addresses: the empty name
/// is the cluster-wide default, otherwise it must be this broker's node id.
fn broker_level(broker: &Broker, name: &str) -> Result<Level, BrokerError> {
    if name.is_empty() {
        return Ok(Level::ClusterDefault);
    }
    let id: i32 = name
        .parse()
        .map_err(|_| BrokerError::InvalidRequest(format!("Node id must be an integer, but it is: {name}")))?;
    if id != broker.node_id {
        return Err(BrokerError::InvalidRequest(format!(
            "Unexpected broker id, expected {}, but received {name}",
            broker.node_id
        )));
    }
    Ok(Level::PerBroker)
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

/// Applies one resource's changes (or only validates them) through the service that owns the
/// resource; each reads, changes and stores its settings under its own lock, so concurrent
/// alters never lose each other's changes.
fn alter_resource(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    replace: bool,
    changes: Vec<Change>,
    validate_only: bool,
) -> Result<(), BrokerError> {
    let alteration = |kind| Alteration {
        kind,
        replace,
        changes,
    };
    match resource_type {
        TOPIC => broker
            .logs
            .alter_topic_configs(name, &alteration(ResourceKind::Topic), validate_only),
        BROKER => {
            let level = broker_level(broker, name)?;
            broker.alter_broker_config(level, &alteration(ResourceKind::Broker), validate_only)
        }
        GROUP if name.is_empty() => Err(BrokerError::InvalidRequest(
            "Default group resources are not allowed.".into(),
        )),
        GROUP => {
            Ok(broker
                .groups
                .alter_group_config(name, &alteration(ResourceKind::Group), validate_only)?)
        }
        other => Err(BrokerError::InvalidRequest(format!(
            "Unknown resource type {other}"
        ))),
    }
}

/// Kafka refuses a request naming one resource twice, on both of its entries.
fn duplicates<'a>(resources: impl Iterator<Item = (i8, &'a str)>) -> HashSet<(i8, String)> {
    let mut seen = HashSet::new();
    let mut twice = HashSet::new();
    for (t, n) in resources {
        if !seen.insert((t, n.to_string())) {
            twice.insert((t, n.to_string()));
        }
    }
    twice
}

/// One resource of an AlterConfigs or IncrementalAlterConfigs request, with its changes (or
/// why they could not be read), and the outcome.
struct AlterOutcome {
    resource_type: i8,
    name: StrBytes,
    error_code: i16,
    error_message: Option<StrBytes>,
}

/// `alter_all` on a storage thread: the services persist what they change (RocksDB, and
/// partitions' settings). A task that failed answers every resource with its error.
async fn alter_in_storage_task(
    ctx: &RequestContext,
    resources: Vec<(i8, StrBytes, Result<Vec<Change>, BrokerError>)>,
    replace: bool,
    validate_only: bool,
) -> Vec<AlterOutcome> {
    let names: Vec<(i8, StrBytes)> = resources.iter().map(|(t, n, _)| (*t, n.clone())).collect();
    let broker = ctx.broker.clone();
    let task = storage_task::run("alter_configs", move || {
        alter_all(&broker, resources, replace, validate_only)
    });
    match task.await {
        Ok(outcomes) => outcomes,
        Err(failed) => {
            let e = BrokerError::from(failed);
            names
                .into_iter()
                .map(|(resource_type, name)| AlterOutcome {
                    resource_type,
                    name,
                    error_code: e.code(),
                    error_message: Some(str_bytes(e.to_string())),
                })
                .collect()
        }
    }
}

/// Alters every resource of a request, refusing one named twice (on both entries) as Kafka does.
fn alter_all(
    broker: &Broker,
    resources: Vec<(i8, StrBytes, Result<Vec<Change>, BrokerError>)>,
    replace: bool,
    validate_only: bool,
) -> Vec<AlterOutcome> {
    let twice = duplicates(resources.iter().map(|(t, n, _)| (*t, n.as_str())));
    resources
        .into_iter()
        .map(|(resource_type, name, changes)| {
            let outcome = if twice.contains(&(resource_type, name.to_string())) {
                Err(BrokerError::InvalidRequest(
                    "Each resource must appear at most once.".into(),
                ))
            } else {
                changes.and_then(|c| alter_resource(broker, resource_type, &name, replace, c, validate_only))
            };
            let (error_code, error_message) = match outcome {
                Ok(()) => (0, None),
                Err(e) => (e.code(), Some(str_bytes(e.to_string()))),
            };
            AlterOutcome {
                resource_type,
                name,
                error_code,
                error_message,
            }
        })
        .collect()
}

pub async fn alter_configs(
    ctx: Arc<RequestContext>,
    req: AlterConfigsRequest,
) -> Reply<AlterConfigsResponse> {
    let resources = req
        .resources
        .into_iter()
        .map(|r| {
            // AlterConfigs replaces the resource's settings with the given ones.
            let changes = r
                .configs
                .iter()
                .map(|c| match &c.value {
                    Some(v) => Ok(Change::Set(c.name.to_string(), v.to_string())),
                    None => Err(BrokerError::InvalidRequest(format!(
                        "Null value not supported for : {}",
                        c.name.as_str()
                    ))),
                })
                .collect();
            (r.resource_type, r.resource_name, changes)
        })
        .collect();
    let responses = alter_in_storage_task(&ctx, resources, true, req.validate_only)
        .await
        .into_iter()
        .map(|o| {
            AlterConfigsResourceResponse::default()
                .with_error_code(o.error_code)
                .with_error_message(o.error_message)
                .with_resource_type(o.resource_type)
                .with_resource_name(o.name)
        })
        .collect();
    Reply::Ready(AlterConfigsResponse::default().with_responses(responses))
}

pub async fn incremental_alter_configs(
    ctx: Arc<RequestContext>,
    req: IncrementalAlterConfigsRequest,
) -> Reply<IncrementalAlterConfigsResponse> {
    let resources = req
        .resources
        .into_iter()
        .map(|r| {
            let changes = r
                .configs
                .iter()
                .map(|c| {
                    let key = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string());
                    match (c.config_operation, value) {
                        (0, Some(v)) => Ok(Change::Set(key, v)),
                        (1, _) => Ok(Change::Delete(key)),
                        (2, Some(v)) => Ok(Change::Append(key, v)),
                        (3, Some(v)) => Ok(Change::Subtract(key, v)),
                        (0 | 2 | 3, None) => Err(BrokerError::InvalidRequest(format!(
                            "Null value not supported for : {key}"
                        ))),
                        (op, _) => Err(BrokerError::InvalidRequest(format!(
                            "Unknown operations type {op}"
                        ))),
                    }
                })
                .collect();
            (r.resource_type, r.resource_name, changes)
        })
        .collect();
    let responses = alter_in_storage_task(&ctx, resources, false, req.validate_only)
        .await
        .into_iter()
        .map(|o| {
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(o.error_code)
                .with_error_message(o.error_message)
                .with_resource_type(o.resource_type)
                .with_resource_name(o.name)
        })
        .collect();
    Reply::Ready(IncrementalAlterConfigsResponse::default().with_responses(responses))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_named_twice_is_refused_on_both_entries() {
        let twice = duplicates([(2, "a"), (4, "a"), (2, "a"), (2, "b")].into_iter());
        assert_eq!(twice, HashSet::from([(2, "a".to_string())]));
    }
}

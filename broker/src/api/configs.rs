//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs: topic settings are altered and
//! persisted; broker settings are described (static, read-only).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::broker::Broker;
use crate::config::topic::{resolve_topic_configs, topic_def, validate_topic_config, ConfigSource};
use crate::config::{Config, Layer};
use crate::error::BrokerError;
use crate::server::api_table::Reply;
use crate::server::RequestContext;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// DescribeConfigs' config_source codes.
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub async fn describe_configs(
    ctx: Arc<RequestContext>,
    req: DescribeConfigsRequest,
) -> Reply<DescribeConfigsResponse> {
    let broker = &ctx.broker;
    let synonyms = req.include_synonyms;
    let typed = ctx.api_version >= 3;
    let docs = req.include_documentation;
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
            let wanted = |name: &str| keys.as_ref().is_none_or(|k| k.contains(name));
            let outcome = match r.resource_type {
                TOPIC => describe_topic(broker, r.resource_name.as_str(), &wanted, synonyms, docs, typed),
                BROKER => describe_broker(broker, r.resource_name.as_str(), &wanted, synonyms, docs, typed),
                other => Err(BrokerError::InvalidRequest(format!(
                    "Unsupported resource type {other}"
                ))),
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            match outcome {
                Ok(configs) => result.with_configs(configs),
                Err(e) => result
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.to_string()))),
            }
        })
        .collect();
    Reply::Ready(DescribeConfigsResponse::default().with_results(results))
}

fn entry(
    name: &str,
    value: Option<String>,
    source: i8,
    read_only: bool,
    kind: i8,
    doc: &str,
    docs: bool,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(value.map(str_bytes))
        .with_config_source(source)
        .with_read_only(read_only)
        .with_config_type(kind)
        .with_documentation(docs.then(|| str_bytes(doc)))
}

fn describe_topic(
    broker: &Broker,
    name: &str,
    wanted: &dyn Fn(&str) -> bool,
    synonyms: bool,
    docs: bool,
    typed: bool,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    let topic = broker
        .logs
        .topic(name)
        .ok_or(BrokerError::UnknownTopicOrPartition)?;
    let config = &broker.config;
    Ok(resolve_topic_configs(&topic.configs, config)
        .into_iter()
        .filter(|c| wanted(c.def.name))
        .map(|c| {
            let source = match c.source {
                ConfigSource::TopicOverride => 1,
                ConfigSource::StaticBroker => SOURCE_STATIC_BROKER,
                ConfigSource::Default => SOURCE_DEFAULT,
            };
            let mut e = entry(
                c.def.name,
                Some(c.value.clone()),
                source,
                false,
                if typed { c.def.kind.describe_type() } else { 0 },
                c.def.doc,
                docs,
            );
            if synonyms {
                e.synonyms = topic_synonyms(&topic.configs, config, c.def.name);
            }
            e
        })
        .collect())
}

/// The chain Kafka reports: the topic override, the broker setting, the default.
fn topic_synonyms(
    overrides: &BTreeMap<String, String>,
    config: &Config,
    name: &str,
) -> Vec<DescribeConfigsSynonym> {
    let Some(def) = topic_def(name) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(v) = overrides.get(name) {
        out.push(
            DescribeConfigsSynonym::default()
                .with_name(str_bytes(name))
                .with_value(Some(str_bytes(v.clone())))
                .with_source(1),
        );
    }
    if let Some(syn) = def.synonym {
        if let Some(v) = config.topic_default(syn) {
            out.push(
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(syn))
                    .with_value(Some(str_bytes(v)))
                    .with_source(SOURCE_STATIC_BROKER),
            );
        }
        out.push(
            DescribeConfigsSynonym::default()
                .with_name(str_bytes(syn))
                .with_value(Some(str_bytes(def.fixed_default)))
                .with_source(SOURCE_DEFAULT),
        );
    }
    out
}

fn describe_broker(
    broker: &Broker,
    name: &str,
    wanted: &dyn Fn(&str) -> bool,
    synonyms: bool,
    docs: bool,
    typed: bool,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    // The empty name is the cluster-wide dynamic default, of which Keel has none.
    if name.is_empty() {
        return Ok(Vec::new());
    }
    if name.parse::<i32>().ok() != Some(broker.node_id) {
        return Err(BrokerError::InvalidRequest(format!(
            "Unexpected broker id, expected {} but received {name}",
            broker.node_id
        )));
    }
    Ok(broker
        .config
        .describe()
        .into_iter()
        .filter(|(def, _, _)| wanted(def.name))
        .map(|(def, value, layer)| {
            let source = if layer == Layer::Default {
                SOURCE_DEFAULT
            } else {
                SOURCE_STATIC_BROKER
            };
            let mut e = entry(
                def.name,
                value.clone(),
                source,
                true,
                if typed { def.kind.describe_type() } else { 0 },
                def.doc,
                docs,
            );
            if synonyms {
                e.synonyms = vec![DescribeConfigsSynonym::default()
                    .with_name(str_bytes(def.name))
                    .with_value(value.map(str_bytes))
                    .with_source(source)];
            }
            e
        })
        .collect())
}

/// One requested change to a topic's overrides.
enum Change {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

/// Applies changes to a copy of the overrides, validating the result as Kafka does.
fn apply(
    mut overrides: BTreeMap<String, String>,
    changes: Vec<Change>,
) -> Result<BTreeMap<String, String>, BrokerError> {
    let mut seen = HashSet::new();
    for change in &changes {
        let name = match change {
            Change::Set(n, _) | Change::Delete(n) | Change::Append(n, _) | Change::Subtract(n, _) => n,
        };
        if !seen.insert(name.clone()) {
            return Err(BrokerError::InvalidRequest(format!(
                "Error due to duplicate config keys: {name}"
            )));
        }
        if topic_def(name).is_none() {
            return Err(BrokerError::InvalidConfig(format!(
                "Unknown topic config name: {name}"
            )));
        }
    }
    for change in changes {
        match change {
            Change::Set(n, v) => {
                overrides.insert(n, v);
            }
            Change::Delete(n) => {
                overrides.remove(&n);
            }
            Change::Append(n, v) | Change::Subtract(n, v)
                if topic_def(&n).map(|d| d.kind) != Some(crate::config::Kind::List) =>
            {
                return Err(BrokerError::InvalidConfig(format!(
                    "Config value append/subtract is not allowed for config key {n} ({v})"
                )));
            }
            Change::Append(n, v) => {
                let mut items: Vec<String> = current_list(&overrides, &n);
                for item in split_list(&v) {
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
                overrides.insert(n, items.join(","));
            }
            Change::Subtract(n, v) => {
                let remove = split_list(&v);
                let items: Vec<String> = current_list(&overrides, &n)
                    .into_iter()
                    .filter(|i| !remove.contains(i))
                    .collect();
                overrides.insert(n, items.join(","));
            }
        }
    }
    for (k, v) in &overrides {
        validate_topic_config(k, v).map_err(|e| BrokerError::InvalidConfig(e.0))?;
    }
    Ok(overrides)
}

/// The list APPEND and SUBTRACT start from: the override, else the setting's default (as
/// Kafka's ConfigAdminManager does), so appending `compact` to a default `delete` policy gives
/// `delete,compact`.
fn current_list(overrides: &BTreeMap<String, String>, name: &str) -> Vec<String> {
    match overrides.get(name) {
        Some(v) => split_list(v),
        None => topic_def(name)
            .map(|d| split_list(d.fixed_default))
            .unwrap_or_default(),
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// Applies one resource's changes (or only validates them).
fn alter_resource(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    replace: bool,
    changes: Vec<Change>,
    validate_only: bool,
) -> Result<(), BrokerError> {
    match resource_type {
        TOPIC => {}
        BROKER => {
            return Err(BrokerError::InvalidConfig(
                "Keel's broker settings are static: set them in server.properties, KAFKA_* or --override and restart".into(),
            ))
        }
        other => return Err(BrokerError::InvalidRequest(format!("Unsupported resource type {other}"))),
    }
    let topic = broker
        .logs
        .topic(name)
        .ok_or(BrokerError::UnknownTopicOrPartition)?;
    let base = if replace {
        BTreeMap::new()
    } else {
        topic.configs.clone()
    };
    let updated = apply(base, changes)?;
    if validate_only {
        return Ok(());
    }
    broker.logs.set_topic_configs(name, updated)?;
    tracing::info!(topic = %name, "topic configuration altered");
    Ok(())
}

fn result(
    resource_type: i8,
    name: StrBytes,
    outcome: Result<(), BrokerError>,
) -> AlterConfigsResourceResponse {
    let r = AlterConfigsResourceResponse::default()
        .with_resource_type(resource_type)
        .with_resource_name(name);
    match outcome {
        Ok(()) => r,
        Err(e) => r
            .with_error_code(e.code())
            .with_error_message(Some(str_bytes(e.to_string()))),
    }
}

pub async fn alter_configs(
    ctx: Arc<RequestContext>,
    req: AlterConfigsRequest,
) -> Reply<AlterConfigsResponse> {
    let broker = &ctx.broker;
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            // AlterConfigs replaces the whole set of overrides with the given one.
            let changes: Result<Vec<Change>, BrokerError> = r
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
            let outcome = changes.and_then(|c| {
                alter_resource(
                    broker,
                    r.resource_type,
                    r.resource_name.as_str(),
                    true,
                    c,
                    req.validate_only,
                )
            });
            let r2 = result(r.resource_type, r.resource_name.clone(), outcome);
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(r2.error_code)
                .with_error_message(r2.error_message)
                .with_resource_type(r2.resource_type)
                .with_resource_name(r2.resource_name)
        })
        .collect();
    Reply::Ready(AlterConfigsResponse::default().with_responses(responses))
}

pub async fn incremental_alter_configs(
    ctx: Arc<RequestContext>,
    req: IncrementalAlterConfigsRequest,
) -> Reply<IncrementalAlterConfigsResponse> {
    let broker = &ctx.broker;
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let changes: Result<Vec<Change>, BrokerError> = r
                .configs
                .iter()
                .map(|c| {
                    let name = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string());
                    match (c.config_operation, value) {
                        (0, Some(v)) => Ok(Change::Set(name, v)),
                        (1, _) => Ok(Change::Delete(name)),
                        (2, Some(v)) => Ok(Change::Append(name, v)),
                        (3, Some(v)) => Ok(Change::Subtract(name, v)),
                        (0 | 2 | 3, None) => Err(BrokerError::InvalidRequest(format!(
                            "Null value not supported for : {name}"
                        ))),
                        (op, _) => Err(BrokerError::InvalidRequest(format!(
                            "Unknown config operation {op}"
                        ))),
                    }
                })
                .collect();
            let outcome = changes.and_then(|c| {
                alter_resource(
                    broker,
                    r.resource_type,
                    r.resource_name.as_str(),
                    false,
                    c,
                    req.validate_only,
                )
            });
            let r2 = result(r.resource_type, r.resource_name.clone(), outcome);
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(r2.error_code)
                .with_error_message(r2.error_message)
                .with_resource_type(r2.resource_type)
                .with_resource_name(r2.resource_name)
        })
        .collect();
    Reply::Ready(IncrementalAlterConfigsResponse::default().with_responses(responses))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_changes_validate_and_merge() {
        let base = BTreeMap::from([("cleanup.policy".to_string(), "delete".to_string())]);
        let out = apply(
            base.clone(),
            vec![
                Change::Append("cleanup.policy".into(), "compact".into()),
                Change::Set("retention.ms".into(), "10".into()),
            ],
        )
        .unwrap();
        assert_eq!(out["cleanup.policy"], "delete,compact");
        assert_eq!(out["retention.ms"], "10");
        let out = apply(
            out,
            vec![
                Change::Subtract("cleanup.policy".into(), "delete".into()),
                Change::Delete("retention.ms".into()),
            ],
        )
        .unwrap();
        assert_eq!(out["cleanup.policy"], "compact");
        assert!(!out.contains_key("retention.ms"));
        assert!(matches!(
            apply(base.clone(), vec![Change::Set("nope".into(), "1".into())]),
            Err(BrokerError::InvalidConfig(_))
        ));
        assert!(matches!(
            apply(base.clone(), vec![Change::Set("retention.ms".into(), "x".into())]),
            Err(BrokerError::InvalidConfig(_))
        ));
        assert!(matches!(
            apply(
                base,
                vec![
                    Change::Delete("retention.ms".into()),
                    Change::Set("retention.ms".into(), "1".into())
                ]
            ),
            Err(BrokerError::InvalidRequest(_))
        ));
    }
}

//! AlterConfigs (replace a resource's settings) and IncrementalAlterConfigs (SET, DELETE,
//! APPEND, SUBTRACT): decoded into a `config::alter::Alteration` and handed to the service that
//! owns the resource.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{broker_level, BROKER, GROUP, TOPIC};
use crate::api::{str_bytes, Reply, RequestContext};
use crate::broker::Broker;
use crate::config::alter::{Alteration, Change, ResourceKind};
use crate::error::BrokerError;
use crate::storage_task;

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

//! CreateTopics, DeleteTopics, CreatePartitions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;

use super::str_bytes;
use super::{Reply, RequestContext};
use crate::broker::Broker;
use crate::config::topic::resolve_topic_configs;
use crate::error::BrokerError;
use crate::storage_task;

fn count_names<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for n in names {
        *counts.entry(n.to_string()).or_insert(0) += 1;
    }
    counts
}

pub async fn create_topics(
    ctx: Arc<RequestContext>,
    req: CreateTopicsRequest,
) -> Reply<CreateTopicsResponse> {
    let version = ctx.api_version;
    let validate_only = req.validate_only;
    let counts = count_names(req.topics.iter().map(|t| t.name.0.as_str()));
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let outcome = if counts[&name] > 1 {
            Err(BrokerError::InvalidRequest(format!(
                "Create topics request from client contains duplicate topic name {name}"
            )))
        } else {
            let broker = ctx.broker.clone();
            // Creating partition directories touches the disk.
            storage_task::try_run("create_topic", move || create_one(&broker, &t, validate_only)).await
        };
        topics.push(topic_result(&ctx.broker, name, outcome, version));
    }
    Reply::Ready(CreateTopicsResponse::default().with_topics(topics))
}

/// A created (or validated) topic: its id (nil when only validated), partitions, overrides.
struct Created {
    id: uuid::Uuid,
    partitions: i32,
    configs: BTreeMap<String, String>,
}

fn create_one(broker: &Broker, t: &CreatableTopic, validate_only: bool) -> Result<Created, BrokerError> {
    let name = t.name.0.as_str();
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        let value = c.value.as_ref().ok_or_else(|| {
            BrokerError::InvalidConfig(format!(
                "Null value not supported for topic configs: {}",
                c.name.as_str()
            ))
        })?;
        configs.insert(c.name.to_string(), value.to_string());
    }
    let (partitions, replication_factor) = if t.assignments.is_empty() {
        (t.num_partitions, t.replication_factor)
    } else {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err(BrokerError::InvalidRequest(
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
            ));
        }
        let mut seen: Vec<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
        seen.sort_unstable();
        if seen.iter().enumerate().any(|(i, p)| *p != i as i32) {
            return Err(BrokerError::InvalidReplicaAssignment(
                "Partitions should be a consecutive 0-based integer sequence".into(),
            ));
        }
        for a in &t.assignments {
            if a.broker_ids.len() != 1 || a.broker_ids[0].0 != broker.node_id {
                return Err(BrokerError::InvalidReplicaAssignment(format!(
                    "Replica assignment of partition {} names brokers other than the single broker {}",
                    a.partition_index, broker.node_id
                )));
            }
        }
        (t.assignments.len() as i32, 1)
    };
    if validate_only {
        let partitions = broker
            .logs
            .validate_new_topic(name, partitions, replication_factor, &configs)?;
        return Ok(Created {
            id: uuid::Uuid::nil(),
            partitions,
            configs,
        });
    }
    let topic = broker
        .logs
        .create_topic(name, partitions, replication_factor, configs)?;
    Ok(Created {
        id: topic.id,
        partitions: topic.partitions.len() as i32,
        configs: topic.configs.clone(),
    })
}

fn topic_result(
    broker: &Broker,
    name: String,
    outcome: Result<Created, BrokerError>,
    version: i16,
) -> CreatableTopicResult {
    let result = CreatableTopicResult::default().with_name(TopicName(str_bytes(name.clone())));
    match outcome {
        Ok(created) => {
            let configs = (version >= 5).then(|| {
                resolve_topic_configs(&created.configs, &broker.dynamic_config)
                    .into_iter()
                    .map(|c| {
                        CreatableTopicConfigs::default()
                            .with_name(str_bytes(c.def.name))
                            .with_value(Some(str_bytes(c.value)))
                            .with_config_source(c.source.code())
                    })
                    .collect()
            });
            let result = result.with_configs(configs);
            if version >= 7 {
                result.with_topic_id(created.id)
            } else {
                result
            }
            .with_num_partitions(if version >= 5 { created.partitions } else { -1 })
            .with_replication_factor(if version >= 5 { 1 } else { -1 })
        }
        Err(e) => {
            if !matches!(e, BrokerError::TopicAlreadyExists(_)) {
                tracing::info!(topic = %name, error = %e, "CreateTopics refused");
            }
            result
                .with_error_code(e.code())
                .with_error_message(e.message().map(str_bytes))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
        }
    }
}

pub async fn delete_topics(
    ctx: Arc<RequestContext>,
    req: DeleteTopicsRequest,
) -> Reply<DeleteTopicsResponse> {
    let broker = ctx.broker.clone();
    let version = ctx.api_version;
    // v6 names topics by name or id; earlier versions by name only.
    let targets: Vec<(Option<String>, uuid::Uuid)> = if ctx.api_version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let resolved = match (&name, id.is_nil()) {
            (Some(_), false) => Err(BrokerError::InvalidRequest(
                "Topic name and topic id cannot both be set".into(),
            )),
            (Some(n), true) => broker.logs.topic(n).ok_or(BrokerError::UnknownTopicOrPartition),
            (None, false) => broker.logs.topic_by_id(id).ok_or(BrokerError::UnknownTopicId),
            (None, true) => Err(BrokerError::InvalidRequest(
                "Neither topic name nor id was given".into(),
            )),
        };
        let outcome = match resolved {
            Ok(topic) => {
                let broker = broker.clone();
                // Deleting partition directories touches the disk.
                storage_task::try_run("delete_topic", move || {
                    broker
                        .logs
                        .delete_topic(&topic.name)
                        .map(|id| (topic.name.clone(), id))
                })
                .await
            }
            Err(e) => Err(e),
        };
        let result = DeletableTopicResult::default();
        // Topic ids exist from v6, error messages from v5.
        let id_if = |id: uuid::Uuid| if version >= 6 { id } else { uuid::Uuid::nil() };
        responses.push(match outcome {
            Ok((n, id)) => result
                .with_name(Some(TopicName(str_bytes(n))))
                .with_topic_id(id_if(id)),
            Err(e) => result
                .with_name(name.map(|n| TopicName(str_bytes(n))))
                .with_topic_id(id_if(id))
                .with_error_code(e.code())
                .with_error_message(e.message().filter(|_| version >= 5).map(str_bytes)),
        });
    }
    Reply::Ready(DeleteTopicsResponse::default().with_responses(responses))
}

pub async fn create_partitions(
    ctx: Arc<RequestContext>,
    req: CreatePartitionsRequest,
) -> Reply<CreatePartitionsResponse> {
    let broker = ctx.broker.clone();
    let validate_only = req.validate_only;
    let counts = count_names(req.topics.iter().map(|t| t.name.0.as_str()));
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let outcome = if counts[&name] > 1 {
            Err(BrokerError::InvalidRequest(format!(
                "Duplicate topic {name} in the request"
            )))
        } else {
            let broker = broker.clone();
            // New partitions are new directories.
            storage_task::try_run("create_partitions", move || grow(&broker, &t, validate_only)).await
        };
        let result = CreatePartitionsTopicResult::default().with_name(TopicName(str_bytes(name)));
        results.push(match outcome {
            Ok(()) => result,
            Err(e) => result
                .with_error_code(e.code())
                .with_error_message(e.message().map(str_bytes)),
        });
    }
    Reply::Ready(CreatePartitionsResponse::default().with_results(results))
}

fn grow(
    broker: &Broker,
    t: &create_partitions_request::CreatePartitionsTopic,
    validate_only: bool,
) -> Result<(), BrokerError> {
    let topic = broker
        .logs
        .topic(t.name.0.as_str())
        .ok_or(BrokerError::UnknownTopicOrPartition)?;
    if let Some(assignments) = &t.assignments {
        let added = t.count - topic.partitions.len() as i32;
        if assignments.len() as i32 != added {
            return Err(BrokerError::InvalidReplicaAssignment(format!(
                "Increasing the number of partitions by {added} but {} assignments provided.",
                assignments.len()
            )));
        }
        if assignments
            .iter()
            .any(|a| a.broker_ids.iter().map(|b| b.0).ne([broker.node_id]))
        {
            return Err(BrokerError::InvalidReplicaAssignment(format!(
                "Assignments may only name the single broker {}",
                broker.node_id
            )));
        }
    }
    broker
        .logs
        .create_partitions(t.name.0.as_str(), t.count, validate_only)
}

//! Metadata, DescribeCluster and DescribeTopicPartitions: what the cluster (one node) and its
//! topics look like, with the endpoint of the listener the client came through.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_topic_partitions_response::{
    DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;

use super::{
    authorized_operations, str_bytes, AUTHORIZED_OPERATIONS_OMITTED, CLUSTER_OPERATIONS, LEADER_EPOCH,
    TOPIC_OPERATIONS,
};
use super::{Reply, RequestContext};
use crate::error::BrokerError;
use crate::log_manager::{validate_topic_name, Topic};
use crate::storage_task;

fn partitions(topic: &Topic, node: i32, version: i16) -> Vec<MetadataResponsePartition> {
    (0..topic.partitions.len() as i32)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(node))
                .with_leader_epoch(if version >= 7 { LEADER_EPOCH } else { -1 })
                .with_replica_nodes(vec![BrokerId(node)])
                .with_isr_nodes(vec![BrokerId(node)])
        })
        .collect()
}

/// Fields newer than the request's version stay at their defaults (topic ids from v10,
/// leader epochs from v7), as the encoder requires.
fn topic_entry(topic: &Topic, node: i32, version: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(if version >= 10 {
            topic.id
        } else {
            uuid::Uuid::nil()
        })
        .with_is_internal(topic.is_internal())
        .with_partitions(partitions(topic, node, version))
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

fn error_entry(name: Option<String>, id: uuid::Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|n| TopicName(str_bytes(n))))
        .with_topic_id(id)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

pub async fn handle(ctx: Arc<RequestContext>, req: MetadataRequest) -> Reply<MetadataResponse> {
    let broker = &ctx.broker;
    let node = broker.node_id;
    // v0 asks for every topic with an empty list; v1+ with a null one.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && ctx.api_version == 0,
    };
    let auto_create =
        broker.config.auto_create_topics && (ctx.api_version < 4 || req.allow_auto_topic_creation);
    let mut topics: Vec<MetadataResponseTopic> = if all {
        broker
            .logs
            .topics()
            .iter()
            .map(|t| topic_entry(t, node, ctx.api_version))
            .collect()
    } else {
        let mut out = Vec::new();
        for requested in req.topics.unwrap_or_default() {
            let entry = match requested.name {
                Some(name) => {
                    let name = name.0.to_string();
                    match broker.logs.topic(&name) {
                        Some(t) => topic_entry(&t, node, ctx.api_version),
                        None => lookup_or_create(&ctx, name, auto_create).await,
                    }
                }
                None => match broker.logs.topic_by_id(requested.topic_id) {
                    Some(t) => topic_entry(&t, node, ctx.api_version),
                    None => error_entry(None, requested.topic_id, ResponseError::UnknownTopicId),
                },
            };
            out.push(entry);
        }
        out
    };
    // Authorized operations exist from v8; the cluster's only up to v10.
    let topic_ops = authorized_operations(
        ctx.api_version >= 8 && req.include_topic_authorized_operations,
        TOPIC_OPERATIONS,
    );
    for t in topics.iter_mut().filter(|t| t.error_code == 0) {
        t.topic_authorized_operations = topic_ops;
    }
    let cluster_ops = authorized_operations(
        (8..=10).contains(&ctx.api_version) && req.include_cluster_authorized_operations,
        CLUSTER_OPERATIONS,
    );
    let endpoint = &ctx.endpoint;
    Reply::Ready(
        MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(node))
                .with_host(str_bytes(endpoint.host.clone()))
                .with_port(endpoint.port as i32)])
            .with_cluster_id(Some(str_bytes(broker.cluster_id.clone())))
            .with_controller_id(BrokerId(node))
            .with_topics(topics)
            .with_cluster_authorized_operations(cluster_ops),
    )
}

async fn lookup_or_create(ctx: &RequestContext, name: String, auto_create: bool) -> MetadataResponseTopic {
    let node = ctx.broker.node_id;
    if let Err(e) = validate_topic_name(&name) {
        return error_entry(Some(name), uuid::Uuid::nil(), e.kafka());
    }
    if !auto_create {
        return error_entry(
            Some(name),
            uuid::Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        );
    }
    // Creating partition directories and the metadata record is storage work.
    let (broker, topic) = (ctx.broker.clone(), name.clone());
    let created = storage_task::try_run("auto_create_topic", move || {
        broker.logs.create_topic(&topic, -1, -1, Default::default())
    })
    .await;
    match created {
        Ok(t) => topic_entry(&t, node, ctx.api_version),
        // Another client created it meanwhile.
        Err(BrokerError::TopicAlreadyExists(_)) => match ctx.broker.logs.topic(&name) {
            Some(t) => topic_entry(&t, node, ctx.api_version),
            None => error_entry(Some(name), uuid::Uuid::nil(), ResponseError::LeaderNotAvailable),
        },
        Err(e) => {
            tracing::warn!(topic = %name, error = %e, "auto-creation failed");
            error_entry(Some(name), uuid::Uuid::nil(), e.kafka())
        }
    }
}

pub async fn describe_cluster(
    ctx: Arc<RequestContext>,
    req: DescribeClusterRequest,
) -> Reply<DescribeClusterResponse> {
    let broker = &ctx.broker;
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.node_id))
        .with_cluster_authorized_operations(authorized_operations(
            req.include_cluster_authorized_operations,
            CLUSTER_OPERATIONS,
        ))
        .with_endpoint_type(req.endpoint_type);
    // Endpoint type 1 is brokers; 2 asks for controllers, which clients must reach through
    // the controller listener this broker does not expose.
    if ctx.api_version >= 1 && req.endpoint_type != 1 {
        response = response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes("Keel serves broker endpoints only")));
    } else {
        response = response.with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(broker.node_id))
            .with_host(str_bytes(ctx.endpoint.host.clone()))
            .with_port(ctx.endpoint.port as i32)]);
    }
    Reply::Ready(response)
}

pub async fn describe_topic_partitions(
    ctx: Arc<RequestContext>,
    req: DescribeTopicPartitionsRequest,
) -> Reply<DescribeTopicPartitionsResponse> {
    let broker = &ctx.broker;
    let node = broker.node_id;
    let mut wanted: Vec<String> = if req.topics.is_empty() {
        broker.logs.topics().iter().map(|t| t.name.clone()).collect()
    } else {
        req.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    wanted.sort();
    wanted.dedup();
    let (start_topic, mut start_partition) = match &req.cursor {
        Some(c) => (Some(c.topic_name.0.to_string()), c.partition_index.max(0)),
        None => (None, 0),
    };
    let mut budget = req.response_partition_limit.max(1) as usize;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in wanted {
        if start_topic.as_ref().is_some_and(|s| name < *s) {
            continue;
        }
        if start_topic.as_ref() != Some(&name) {
            start_partition = 0;
        }
        let Some(topic) = broker.logs.topic(&name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_name(Some(TopicName(str_bytes(name))))
                    .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
            );
            continue;
        };
        if budget == 0 {
            next_cursor = Some(
                describe_topic_partitions_response::Cursor::default()
                    .with_topic_name(TopicName(str_bytes(name)))
                    .with_partition_index(start_partition),
            );
            break;
        }
        let count = topic.partitions.len() as i32;
        let end = count.min(start_partition + budget as i32);
        let partitions = (start_partition..end)
            .map(|p| {
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(p)
                    .with_leader_id(BrokerId(node))
                    .with_leader_epoch(LEADER_EPOCH)
                    .with_replica_nodes(vec![BrokerId(node)])
                    .with_isr_nodes(vec![BrokerId(node)])
                    .with_eligible_leader_replicas(Some(vec![]))
                    .with_last_known_elr(Some(vec![]))
            })
            .collect::<Vec<_>>();
        budget -= partitions.len();
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
                .with_topic_id(topic.id)
                .with_is_internal(topic.is_internal())
                .with_partitions(partitions)
                .with_topic_authorized_operations(TOPIC_OPERATIONS),
        );
        if end < count {
            next_cursor = Some(
                describe_topic_partitions_response::Cursor::default()
                    .with_topic_name(TopicName(str_bytes(topic.name.clone())))
                    .with_partition_index(end),
            );
            break;
        }
    }
    Reply::Ready(
        DescribeTopicPartitionsResponse::default()
            .with_topics(topics)
            .with_next_cursor(next_cursor),
    )
}

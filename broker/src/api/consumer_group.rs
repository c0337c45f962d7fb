//! The KIP-848 consumer group APIs: ConsumerGroupHeartbeat and ConsumerGroupDescribe.
//! The logic lives in `group::GroupCoordinator` (consumer_protocol.rs); these translate.

use std::sync::Arc;

use kafka_protocol::messages::consumer_group_describe_response::{self as describe, DescribedGroup};
use kafka_protocol::messages::consumer_group_heartbeat_response::{self as heartbeat, Assignment};
use kafka_protocol::messages::*;

use super::{authorized_operations, str_bytes, GROUP_OPERATIONS};
use super::{Reply, RequestContext};
use crate::error::BrokerError;
use crate::group::{ConsumerHeartbeat, GroupError, TopicPartitions, TopicsImage};

fn code(e: GroupError) -> i16 {
    BrokerError::Group(e).code()
}

/// Every non-internal topic: what subscriptions (names and regexes) resolve against.
fn topics_image(ctx: &RequestContext) -> TopicsImage {
    TopicsImage(
        ctx.broker
            .logs
            .topics()
            .into_iter()
            .filter(|t| !t.is_internal())
            .map(|t| (t.name.clone(), (t.id, t.partitions.len() as i32)))
            .collect(),
    )
}

pub async fn consumer_group_heartbeat(
    ctx: Arc<RequestContext>,
    req: ConsumerGroupHeartbeatRequest,
) -> Reply<ConsumerGroupHeartbeatResponse> {
    let request = ConsumerHeartbeat {
        api_version: ctx.api_version,
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: req.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.0.to_string()).collect()),
        subscribed_topic_regex: req.subscribed_topic_regex.as_ref().map(|s| s.to_string()),
        server_assignor: req.server_assignor.as_ref().map(|s| s.to_string()),
        owned: req.topic_partitions.as_ref().map(|tps| {
            let mut owned = TopicPartitions::new();
            for tp in tps {
                owned
                    .entry(tp.topic_id)
                    .or_default()
                    .extend(tp.partitions.iter().copied());
            }
            owned
        }),
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: format!("/{}", ctx.peer.ip()),
    };
    let topics = topics_image(&ctx);
    let groups = ctx.broker.groups.clone();
    // Answered once a change of the group's state is durable.
    let outcome = groups.consumer_heartbeat(request, &topics).await;
    let response = match outcome {
        Ok(answer) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(str_bytes(answer.member_id)))
            .with_member_epoch(answer.member_epoch)
            .with_heartbeat_interval_ms(answer.heartbeat_interval_ms)
            .with_assignment(answer.assignment.map(|a| {
                Assignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(id, ps)| {
                            heartbeat::TopicPartitions::default()
                                .with_topic_id(id)
                                .with_partitions(ps.into_iter().collect())
                        })
                        .collect(),
                )
            })),
        Err(f) => {
            if f.error != GroupError::CoordinatorNotAvailable {
                tracing::debug!(group = %req.group_id.0.as_str(), error = %f.message, "ConsumerGroupHeartbeat refused");
            }
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(code(f.error))
                .with_error_message(Some(str_bytes(f.message)))
                .with_member_epoch(-1)
        }
    };
    Reply::Ready(response)
}

fn describe_assignment(a: &TopicPartitions, topics: &TopicsImage) -> describe::Assignment {
    describe::Assignment::default().with_topic_partitions(
        a.iter()
            .map(|(id, ps)| {
                describe::TopicPartitions::default()
                    .with_topic_id(*id)
                    .with_topic_name(TopicName(str_bytes(topics.name_of(*id).unwrap_or_default())))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}

pub async fn consumer_group_describe(
    ctx: Arc<RequestContext>,
    req: ConsumerGroupDescribeRequest,
) -> Reply<ConsumerGroupDescribeResponse> {
    let version = ctx.api_version;
    let topics = topics_image(&ctx);
    let operations = authorized_operations(req.include_authorized_operations, GROUP_OPERATIONS);
    let groups = req
        .group_ids
        .into_iter()
        .map(|id| {
            let g = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(operations);
            match ctx.broker.groups.consumer_group_describe(id.0.as_str()) {
                Err(f) => g
                    .with_error_code(code(f.error))
                    .with_error_message(Some(str_bytes(f.message)))
                    .with_group_state(str_bytes("Dead")),
                Ok(d) => g
                    .with_group_state(str_bytes(d.state.name()))
                    .with_group_epoch(d.group_epoch)
                    .with_assignment_epoch(d.assignment_epoch)
                    .with_assignor_name(str_bytes(d.assignor))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|(m, target)| {
                                let member = describe::Member::default()
                                    .with_member_id(str_bytes(m.id))
                                    .with_instance_id(m.instance_id.map(str_bytes))
                                    .with_rack_id(m.rack_id.map(str_bytes))
                                    .with_member_epoch(m.member_epoch)
                                    .with_client_id(str_bytes(m.client_id))
                                    .with_client_host(str_bytes(m.client_host))
                                    .with_subscribed_topic_names(
                                        m.subscribed_topic_names
                                            .into_iter()
                                            .map(|t| TopicName(str_bytes(t)))
                                            .collect(),
                                    )
                                    .with_subscribed_topic_regex(m.subscribed_topic_regex.map(str_bytes))
                                    .with_assignment(describe_assignment(&m.assigned, &topics))
                                    .with_target_assignment(describe_assignment(&target, &topics));
                                // v1: every member here speaks the consumer protocol.
                                if version >= 1 {
                                    member.with_member_type(1)
                                } else {
                                    member
                                }
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    Reply::Ready(ConsumerGroupDescribeResponse::default().with_groups(groups))
}

//! The classic group APIs and committed offsets: JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, OffsetDelete, ListGroups, DescribeGroups, DeleteGroups.
//! The logic lives in `group::GroupCoordinator`; these translate requests and responses.

use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{authorized_operations, str_bytes, GROUP_OPERATIONS};
use super::{Reply, RequestContext};
use crate::error::BrokerError;
use crate::group::{
    self, GroupError, JoinRequest, OffsetCommitRequest as Commit, PartitionCommit, SyncRequest,
};

fn code(e: Option<GroupError>) -> i16 {
    e.map(|e| BrokerError::Group(e).code()).unwrap_or(0)
}

fn opt_str(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

pub async fn join_group(ctx: Arc<RequestContext>, req: JoinGroupRequest) -> Reply<JoinGroupResponse> {
    let version = ctx.api_version;
    let request = JoinRequest {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        instance_id: opt_str(&req.group_instance_id),
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: format!("/{}", ctx.peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout serves for both.
        rebalance_timeout_ms: if version == 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let waiting = ctx.broker.groups.join(request);
    Reply::Deferred(Box::pin(async move {
        let outcome = waiting
            .await
            .unwrap_or_else(|_| group::JoinOutcome::error(GroupError::CoordinatorNotAvailable, ""));
        JoinGroupResponse::default()
            .with_error_code(code(outcome.error))
            .with_generation_id(outcome.generation)
            // protocol_type exists from v7.
            .with_protocol_type(if version >= 7 {
                outcome.protocol_type.map(str_bytes)
            } else {
                None
            })
            .with_protocol_name(outcome.protocol_name.map(str_bytes).or(if version >= 7 {
                None
            } else {
                Some(StrBytes::default())
            }))
            // skip_assignment exists from v9 (KIP-814).
            .with_skip_assignment(version >= 9 && outcome.skip_assignment)
            .with_leader(str_bytes(outcome.leader))
            .with_member_id(str_bytes(outcome.member_id))
            .with_members(
                outcome
                    .members
                    .into_iter()
                    .map(|(id, instance, metadata)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(str_bytes(id))
                            .with_group_instance_id(if version >= 5 {
                                instance.map(str_bytes)
                            } else {
                                None
                            })
                            .with_metadata(metadata)
                    })
                    .collect(),
            )
    }))
}

pub async fn sync_group(ctx: Arc<RequestContext>, req: SyncGroupRequest) -> Reply<SyncGroupResponse> {
    let version = ctx.api_version;
    let waiting = ctx.broker.groups.sync(SyncRequest {
        group_id: req.group_id.0.to_string(),
        generation: req.generation_id,
        member_id: req.member_id.to_string(),
        instance_id: opt_str(&req.group_instance_id),
        protocol_type: opt_str(&req.protocol_type),
        protocol_name: opt_str(&req.protocol_name),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    });
    Reply::Deferred(Box::pin(async move {
        let outcome = waiting
            .await
            .unwrap_or_else(|_| group::SyncOutcome::error(GroupError::CoordinatorNotAvailable));
        let r = SyncGroupResponse::default()
            .with_error_code(code(outcome.error))
            .with_assignment(outcome.assignment);
        // protocol type and name exist from v5.
        if version >= 5 {
            r.with_protocol_type(outcome.protocol_type.map(str_bytes))
                .with_protocol_name(outcome.protocol_name.map(str_bytes))
        } else {
            r
        }
    }))
}

pub async fn heartbeat(ctx: Arc<RequestContext>, req: HeartbeatRequest) -> Reply<HeartbeatResponse> {
    let outcome = ctx.broker.groups.heartbeat(
        req.group_id.0.as_str(),
        req.generation_id,
        req.member_id.as_str(),
        req.group_instance_id.as_ref().map(|s| s.as_str()),
    );
    Reply::Ready(HeartbeatResponse::default().with_error_code(code(outcome.err())))
}

pub async fn leave_group(ctx: Arc<RequestContext>, req: LeaveGroupRequest) -> Reply<LeaveGroupResponse> {
    let groups = &ctx.broker.groups;
    let group_id = req.group_id.0.as_str();
    // v3+ batches members (KIP-345); earlier versions name one member.
    if ctx.api_version < 3 {
        let outcome = groups.leave(group_id, req.member_id.as_str(), None);
        return Reply::Ready(LeaveGroupResponse::default().with_error_code(code(outcome.err())));
    }
    let members = req
        .members
        .iter()
        .map(|m| {
            let outcome = groups.leave(
                group_id,
                m.member_id.as_str(),
                m.group_instance_id.as_ref().map(|s| s.as_str()),
            );
            MemberResponse::default()
                .with_member_id(m.member_id.clone())
                .with_group_instance_id(m.group_instance_id.clone())
                .with_error_code(code(outcome.err()))
        })
        .collect();
    Reply::Ready(LeaveGroupResponse::default().with_members(members))
}

pub async fn offset_commit(
    ctx: Arc<RequestContext>,
    req: OffsetCommitRequest,
) -> Reply<OffsetCommitResponse> {
    let broker = ctx.broker.clone();
    let version = ctx.api_version;
    let partitions: Vec<PartitionCommit> = req
        .topics
        .iter()
        .flat_map(|t| {
            let topic = broker.logs.topic(t.name.0.as_str());
            t.partitions.iter().map(move |p| PartitionCommit {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: opt_str(&p.committed_metadata),
                known: topic
                    .as_ref()
                    .is_some_and(|t| t.partition(p.partition_index).is_some()),
            })
        })
        .collect();
    let commit = Commit {
        group_id: req.group_id.0.to_string(),
        generation: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        instance_id: opt_str(&req.group_instance_id),
        api_version: version,
        partitions,
    };
    // Answered once the commit is durable (group-committed with other changes).
    let outcome = broker.groups.commit_offsets(commit).await;
    let mut results = match &outcome {
        Ok(r) => r.iter().map(|r| code(r.err())).collect::<Vec<_>>().into_iter(),
        Err(e) => vec![code(Some(*e)); req.topics.iter().map(|t| t.partitions.len()).sum()].into_iter(),
    };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(results.next().unwrap_or(0))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    Reply::Ready(OffsetCommitResponse::default().with_topics(topics))
}

/// A partition and its committed offset, if any.
type PartitionOffset = (i32, Option<crate::meta::CommittedOffset>);

/// The (topic, partition) pairs a request names; None asks for every committed partition.
fn wanted<'a>(
    topics: Option<impl Iterator<Item = (&'a TopicName, &'a Vec<i32>)>>,
) -> Option<Vec<(String, i32)>> {
    topics.map(|ts| {
        ts.flat_map(|(t, ps)| ps.iter().map(move |p| (t.0.to_string(), *p)))
            .collect()
    })
}

/// (offset, leader epoch, metadata) as OffsetFetch reports them: -1, -1 and "" when nothing is
/// committed.
fn committed(o: Option<crate::meta::CommittedOffset>) -> (i64, i32, Option<StrBytes>) {
    match o {
        Some(o) => (o.offset, o.leader_epoch, Some(str_bytes(o.metadata))),
        None => (-1, -1, Some(StrBytes::default())),
    }
}

/// Kafka's UNSTABLE_OFFSET_COMMIT.
const UNSTABLE_OFFSET_COMMIT: i16 = 88;

pub async fn offset_fetch(ctx: Arc<RequestContext>, req: OffsetFetchRequest) -> Reply<OffsetFetchResponse> {
    let groups = &ctx.broker.groups;
    let version = ctx.api_version;
    let fetch = |group: &str, wanted: Option<Vec<(String, i32)>>| {
        let mut by_topic: Vec<(String, Vec<PartitionOffset>)> = Vec::new();
        for (topic, partition, o) in groups.fetch_offsets(group, wanted) {
            match by_topic.iter_mut().find(|(t, _)| *t == topic) {
                Some((_, ps)) => ps.push((partition, o)),
                None => by_topic.push((topic, vec![(partition, o)])),
            }
        }
        by_topic
    };
    // require_stable (v7+): an offset an open transaction has committed is not answered yet.
    let require_stable = version >= 7 && req.require_stable;
    let unstable = |group: &str, topic: &str, partition: i32| {
        require_stable && ctx.broker.txn.has_pending_offset(group, topic, partition)
    };
    if version >= 8 {
        let results = req
            .groups
            .iter()
            .map(|g| {
                // v9: a KIP-848 member names itself and its epoch (Kafka's validateOffsetFetch).
                let member = g.member_id.as_ref().map(|m| m.to_string());
                if version >= 9 {
                    if let Err(e) =
                        groups.validate_offset_fetch(g.group_id.0.as_str(), member.as_deref(), g.member_epoch)
                    {
                        return OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id.clone())
                            .with_error_code(code(Some(e)));
                    }
                }
                let requested = wanted(
                    g.topics
                        .as_ref()
                        .map(|ts| ts.iter().map(|t| (&t.name, &t.partition_indexes))),
                );
                let group = g.group_id.0.as_str();
                let topics = fetch(group, requested)
                    .into_iter()
                    .map(|(topic, ps)| {
                        let partitions = ps
                            .into_iter()
                            .map(|(p, o)| {
                                if unstable(group, &topic, p) {
                                    return OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_error_code(UNSTABLE_OFFSET_COMMIT);
                                }
                                let (offset, epoch, metadata) = committed(o);
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(metadata)
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(str_bytes(topic)))
                            .with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_topics(topics)
            })
            .collect();
        return Reply::Ready(OffsetFetchResponse::default().with_groups(results));
    }
    let requested = wanted(
        req.topics
            .as_ref()
            .map(|ts| ts.iter().map(|t| (&t.name, &t.partition_indexes))),
    );
    let group = req.group_id.0.as_str();
    let topics = fetch(group, requested)
        .into_iter()
        .map(|(topic, ps)| {
            let partitions = ps
                .into_iter()
                .map(|(p, o)| {
                    if unstable(group, &topic, p) {
                        return OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(-1)
                            .with_error_code(UNSTABLE_OFFSET_COMMIT);
                    }
                    let (offset, epoch, metadata) = committed(o);
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        // leader epochs exist from v5.
                        .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
                        .with_metadata(metadata)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(partitions)
        })
        .collect();
    Reply::Ready(OffsetFetchResponse::default().with_topics(topics))
}

pub async fn list_groups(ctx: Arc<RequestContext>, req: ListGroupsRequest) -> Reply<ListGroupsResponse> {
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
    let version = ctx.api_version;
    let groups = ctx
        .broker
        .groups
        .list()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_ascii_lowercase()))
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
        .map(|listed| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(listed.group_id)))
                .with_protocol_type(str_bytes(listed.protocol_type));
            // group_state exists from v4, group_type from v5.
            let g = if version >= 4 {
                g.with_group_state(str_bytes(listed.state))
            } else {
                g
            };
            if version >= 5 {
                g.with_group_type(str_bytes(listed.group_type))
            } else {
                g
            }
        })
        .collect();
    Reply::Ready(ListGroupsResponse::default().with_groups(groups))
}

pub async fn describe_groups(
    ctx: Arc<RequestContext>,
    req: DescribeGroupsRequest,
) -> Reply<DescribeGroupsResponse> {
    let version = ctx.api_version;
    // include_authorized_operations exists from v3.
    let operations = authorized_operations(
        version >= 3 && req.include_authorized_operations,
        GROUP_OPERATIONS,
    );
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let g = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(operations);
            // DescribeGroups describes classic groups only; KIP-848 groups answer
            // ConsumerGroupDescribe (Kafka: "Group X is not a classic group.").
            let consumer = ctx.broker.groups.is_consumer_group(id.0.as_str());
            if consumer {
                return if version >= 6 {
                    g.with_group_state(str_bytes("Dead"))
                        .with_error_code(BrokerError::Group(GroupError::GroupIdNotFound).code())
                        .with_error_message(Some(str_bytes(format!(
                            "Group {} is not a classic group.",
                            id.0.as_str()
                        ))))
                } else {
                    g.with_group_state(str_bytes("Dead"))
                };
            }
            match ctx.broker.groups.describe(id.0.as_str()) {
                // v6 reports a missing group as GROUP_ID_NOT_FOUND; earlier versions as Dead.
                None if version >= 6 => g
                    .with_group_state(str_bytes("Dead"))
                    .with_error_code(BrokerError::Group(GroupError::GroupIdNotFound).code())
                    .with_error_message(Some(str_bytes(format!("Group {} not found.", id.0.as_str())))),
                None => g.with_group_state(str_bytes("Dead")),
                Some(d) => g
                    .with_group_state(str_bytes(d.state.name()))
                    .with_protocol_type(str_bytes(d.protocol_type))
                    .with_protocol_data(str_bytes(d.protocol_name))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(m.member_id))
                                    .with_group_instance_id(if version >= 4 {
                                        m.instance_id.map(str_bytes)
                                    } else {
                                        None
                                    })
                                    .with_client_id(str_bytes(m.client_id))
                                    .with_client_host(str_bytes(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    Reply::Ready(DescribeGroupsResponse::default().with_groups(groups))
}

pub async fn delete_groups(
    ctx: Arc<RequestContext>,
    req: DeleteGroupsRequest,
) -> Reply<DeleteGroupsResponse> {
    let broker = ctx.broker.clone();
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in req.groups_names {
        // Answered once the deletion is durable.
        let outcome = broker.groups.delete(id.0.as_str()).await;
        results.push(
            delete_groups_response::DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code(outcome.err())),
        );
    }
    Reply::Ready(DeleteGroupsResponse::default().with_results(results))
}

pub async fn offset_delete(
    ctx: Arc<RequestContext>,
    req: OffsetDeleteRequest,
) -> Reply<OffsetDeleteResponse> {
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    match ctx
        .broker
        .groups
        .delete_offsets(req.group_id.0.as_str(), &partitions)
        .await
    {
        Err(e) => Reply::Ready(OffsetDeleteResponse::default().with_error_code(code(Some(e)))),
        Ok(results) => {
            let mut results = results.into_iter();
            let topics = req
                .topics
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code(results.next().and_then(|r| r.err())))
                        })
                        .collect();
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(partitions)
                })
                .collect();
            Reply::Ready(OffsetDeleteResponse::default().with_topics(topics))
        }
    }
}

//! ListOffsets and OffsetForLeaderEpoch.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;

use super::{Reply, RequestContext, LEADER_EPOCH};
use crate::error::BrokerError;
use crate::log::OffsetSpec;
use crate::storage_task;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub async fn list_offsets(ctx: Arc<RequestContext>, req: ListOffsetsRequest) -> Reply<ListOffsetsResponse> {
    // leader_epoch exists from v4; older versions must leave it at its default.
    let version = ctx.api_version;
    let epoch = move |e: i32| if version >= 4 { e } else { -1 };
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = ctx.broker.logs.topic(t.name.0.as_str());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let r = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_offset(-1)
                .with_timestamp(-1);
            let Some(log) = topic.as_ref().and_then(|t| t.partition(p.partition_index)) else {
                partitions.push(r.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            if p.current_leader_epoch > LEADER_EPOCH {
                partitions.push(r.with_error_code(ResponseError::UnknownLeaderEpoch.code()));
                continue;
            }
            let Some(spec) = offset_spec(p.timestamp) else {
                partitions.push(r.with_error_code(ResponseError::InvalidRequest.code()));
                continue;
            };
            let log = Arc::clone(log);
            // isolation_level exists from v2 (1 = read_committed).
            let read_committed = version >= 2 && req.isolation_level == 1;
            let found = storage_task::try_run("list_offsets", move || {
                Ok::<_, BrokerError>(log.fetch_offset_by_timestamp(spec, read_committed)?)
            })
            .await;
            partitions.push(match found {
                Ok(Some(found)) => r
                    .with_offset(found.offset)
                    .with_timestamp(found.timestamp)
                    .with_leader_epoch(epoch(LEADER_EPOCH)),
                Ok(None) => r.with_leader_epoch(-1),
                Err(e) => {
                    tracing::error!(error = %e, "ListOffsets lookup failed");
                    r.with_error_code(e.code())
                }
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    Reply::Ready(ListOffsetsResponse::default().with_topics(topics))
}

/// Kafka's special ListOffsets timestamps, or a record timestamp; anything else is invalid.
fn offset_spec(timestamp: i64) -> Option<OffsetSpec> {
    match timestamp {
        LATEST => Some(OffsetSpec::Latest),
        EARLIEST | EARLIEST_LOCAL => Some(OffsetSpec::Earliest),
        MAX_TIMESTAMP => Some(OffsetSpec::MaxTimestamp),
        LATEST_TIERED => Some(OffsetSpec::LatestTiered),
        ts if ts >= 0 => Some(OffsetSpec::Timestamp(ts)),
        _ => None,
    }
}

pub async fn offset_for_leader_epoch(
    ctx: Arc<RequestContext>,
    req: OffsetForLeaderEpochRequest,
) -> Reply<OffsetForLeaderEpochResponse> {
    let broker = &ctx.broker;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.logs.topic(t.topic.0.as_str());
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = EpochEndOffset::default().with_partition(p.partition);
                    let Some(log) = topic.as_ref().and_then(|t| t.partition(p.partition)) else {
                        return r
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1);
                    };
                    if p.current_leader_epoch > LEADER_EPOCH {
                        return r
                            .with_error_code(ResponseError::UnknownLeaderEpoch.code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1);
                    }
                    // One leader epoch for the whole life of the partition: it ends at the log
                    // end; any other epoch is undefined here, as in Kafka's epoch cache.
                    if p.leader_epoch == LEADER_EPOCH {
                        r.with_leader_epoch(LEADER_EPOCH)
                            .with_end_offset(log.log_end_offset())
                    } else {
                        r.with_leader_epoch(-1).with_end_offset(-1)
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    Reply::Ready(OffsetForLeaderEpochResponse::default().with_topics(topics))
}

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
use kafka_protocol::records::{RecordBatchDecoder, TimestampType};

use super::LEADER_EPOCH;
use crate::error::BrokerError;
use crate::log::PartitionLog;
use crate::server::api_table::Reply;
use crate::server::RequestContext;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub async fn list_offsets(ctx: Arc<RequestContext>, req: ListOffsetsRequest) -> Reply<ListOffsetsResponse> {
    let broker = ctx.broker.clone();
    // leader_epoch exists from v4; older versions must leave it at its default.
    let version = ctx.api_version;
    let epoch = move |e: i32| if version >= 4 { e } else { -1 };
    let topics = tokio::task::spawn_blocking(move || {
        req.topics
            .into_iter()
            .map(|t| {
                let topic = broker.logs.topic(t.name.0.as_str());
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let r =
                            ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                        let log = topic.as_ref().and_then(|t| t.partition(p.partition_index));
                        let Some(log) = log else {
                            return r
                                .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                                .with_offset(-1)
                                .with_timestamp(-1);
                        };
                        if p.current_leader_epoch > LEADER_EPOCH {
                            return r
                                .with_error_code(ResponseError::UnknownLeaderEpoch.code())
                                .with_offset(-1)
                                .with_timestamp(-1);
                        }
                        match lookup(log, p.timestamp) {
                            Ok(Some((offset, timestamp))) => r
                                .with_offset(offset)
                                .with_timestamp(timestamp)
                                .with_leader_epoch(epoch(LEADER_EPOCH)),
                            Ok(None) => r.with_offset(-1).with_timestamp(-1).with_leader_epoch(-1),
                            Err(e) => {
                                tracing::error!(error = %e, "ListOffsets lookup failed");
                                r.with_error_code(e.code()).with_offset(-1).with_timestamp(-1)
                            }
                        }
                    })
                    .collect();
                ListOffsetsTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    Reply::Ready(ListOffsetsResponse::default().with_topics(topics))
}

/// Kafka's answer for each special timestamp, or the first record at or after `timestamp`.
/// Without transactions the last stable offset equals the high watermark, so both isolation
/// levels get the same latest offset.
fn lookup(log: &PartitionLog, timestamp: i64) -> Result<Option<(i64, i64)>, BrokerError> {
    Ok(match timestamp {
        LATEST => Some((log.high_watermark(), -1)),
        EARLIEST | EARLIEST_LOCAL => Some((log.log_start_offset(), -1)),
        // No tiered storage: nothing is tiered.
        LATEST_TIERED => None,
        MAX_TIMESTAMP => match log.max_timestamp() {
            Some((offset, ts)) => Some(match refine(log, offset, ts, |t| t == ts)? {
                Refined::Record(found) => found,
                Refined::NoLiveMatch | Refined::Unreadable => (offset.max(log.log_start_offset()), ts),
            }),
            None => None,
        },
        ts if ts >= 0 => {
            let mut from = log.log_start_offset();
            loop {
                let Some(batch) = log.offset_for_timestamp(ts, from)? else {
                    break None;
                };
                match refine(log, batch.base_offset, batch.max_timestamp, |t| t >= ts)? {
                    Refined::Record(found) => break Some(found),
                    // Only records DeleteRecords removed qualified: search on from the next
                    // batch, as Kafka's LogSegment.findOffsetByTimestamp does.
                    Refined::NoLiveMatch => from = batch.last_offset + 1,
                    Refined::Unreadable => {
                        break Some((batch.base_offset.max(log.log_start_offset()), batch.max_timestamp))
                    }
                }
            }
        }
        _ => {
            return Err(BrokerError::InvalidRequest(format!(
                "invalid timestamp {timestamp}"
            )))
        }
    })
}

/// What decoding a batch found by timestamp gave.
enum Refined {
    /// The first live record that qualifies, as (offset, timestamp).
    Record((i64, i64)),
    /// No record at or after the log start qualifies (only deleted ones did).
    NoLiveMatch,
    /// The batch could not be read back (a DeleteRecords ran meanwhile, or it does not decode):
    /// the batch-level answer stands.
    Unreadable,
}

/// The log indexes batches; Kafka answers with the exact record. This decodes the one batch
/// holding `offset` (ListOffsets is not on the hot path) and finds its first live record whose
/// timestamp satisfies `wanted`.
fn refine(
    log: &PartitionLog,
    offset: i64,
    batch_timestamp: i64,
    wanted: impl Fn(i64) -> bool,
) -> Result<Refined, BrokerError> {
    // Records deleted by DeleteRecords may share the batch; they are not answers.
    let log_start = log.log_start_offset();
    let read = match log.read(offset.max(log_start), 1, true) {
        Ok(read) => read,
        Err(crate::log::LogError::OffsetOutOfRange { .. }) => return Ok(Refined::Unreadable),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = read.records;
    let Ok(set) = RecordBatchDecoder::decode(&mut bytes) else {
        return Ok(Refined::Unreadable);
    };
    // With LogAppendTime every record carries the batch's timestamp, whatever its delta says.
    let mut live = set.records.iter().filter(|r| r.offset >= log_start).peekable();
    if let Some(first) = live.peek() {
        if first.timestamp_type == TimestampType::LogAppend {
            return Ok(Refined::Record((first.offset, batch_timestamp)));
        }
    }
    Ok(live
        .find(|r| wanted(r.timestamp))
        .map_or(Refined::NoLiveMatch, |r| Refined::Record((r.offset, r.timestamp))))
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

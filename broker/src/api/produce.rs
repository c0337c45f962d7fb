//! Produce: validate and append each partition's record batch, then answer per `acks`.
//!
//! Batches stay bytes: the log checks the v2 header and CRC and rewrites the base offset; no
//! record is decoded here.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::*;

use super::str_bytes;
use crate::error::BrokerError;
use crate::log::{AppendInfo, LogError, PartitionLog};
use crate::server::api_table::Reply;
use crate::server::RequestContext;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One partition's outcome, kept until the response is built (after the fsync for acks=-1).
struct Appended {
    topic: usize,
    index: i32,
    outcome: Result<(Arc<PartitionLog>, AppendInfo), BrokerError>,
}

pub async fn handle(ctx: Arc<RequestContext>, req: ProduceRequest) -> Reply<ProduceResponse> {
    let broker = ctx.broker.clone();
    let version = ctx.api_version;
    let acks = req.acks;
    let now = now_ms();
    let mut topics: Vec<(TopicName, uuid::Uuid)> = Vec::with_capacity(req.topic_data.len());
    let mut results: Vec<Appended> = Vec::new();
    let mut appended = 0usize;
    for data in req.topic_data {
        let position = topics.len();
        // v13 names topics by id (KIP-516); earlier versions by name.
        let topic = if version >= 13 {
            broker
                .logs
                .topic_by_id(data.topic_id)
                .ok_or(BrokerError::UnknownTopicId)
        } else {
            broker
                .logs
                .topic(data.name.0.as_str())
                .ok_or(BrokerError::UnknownTopicOrPartition)
        };
        topics.push((data.name.clone(), data.topic_id));
        for partition in data.partition_data {
            let outcome = if !(-1..=1).contains(&acks) {
                Err(BrokerError::InvalidRequiredAcks(format!(
                    "acks must be -1, 0 or 1, not {acks}"
                )))
            } else {
                match &topic {
                    Err(e) => Err(match e {
                        BrokerError::UnknownTopicId => BrokerError::UnknownTopicId,
                        _ => BrokerError::UnknownTopicOrPartition,
                    }),
                    Ok(t) => {
                        let keys = if broker.logs.is_compacted(t) {
                            require_keys(&data.name.0, partition.index, partition.records.as_ref())
                        } else {
                            Ok(())
                        };
                        keys.and_then(|()| {
                            append(
                                t.partition(partition.index).cloned(),
                                partition.records.as_deref(),
                                now,
                            )
                        })
                    }
                }
            };
            if outcome.is_ok() {
                appended += partition.records.as_ref().map_or(0, |r| r.len());
            }
            if let Err(e) = &outcome {
                tracing::debug!(topic = %data.name.0.as_str(), partition = partition.index, error = %e, "produce refused");
            }
            results.push(Appended {
                topic: position,
                index: partition.index,
                outcome,
            });
        }
    }
    if appended > 0 {
        broker.appended.notify_waiters();
        metrics::counter!(crate::metrics::PRODUCE_BYTES).increment(appended as u64);
    }
    if acks == 0 {
        return Reply::Nothing;
    }
    if acks == -1 && broker.config.flush_acks_all {
        return Reply::Deferred(Box::pin(async move {
            // The group-commit flusher shares one fsync among all concurrent acks=-1 produces.
            // Every partition's request is submitted before any is awaited, so a multi-partition
            // produce joins one flush round rather than one round per partition.
            let pending: Vec<_> = results
                .iter()
                .map(|r| {
                    r.outcome.as_ref().ok().map(|(log, info)| {
                        tokio::spawn(
                            broker
                                .flusher
                                .clone()
                                .flush_through_owned(log.clone(), info.last_offset),
                        )
                    })
                })
                .collect();
            for (r, flush) in results.iter_mut().zip(pending) {
                let Some(flush) = flush else { continue };
                let outcome = flush
                    .await
                    .unwrap_or_else(|e| Err(LogError::Closed(e.to_string())));
                if let Err(e) = outcome {
                    tracing::error!(error = %e, "fsync for acks=-1 produce failed");
                    r.outcome = Err(BrokerError::Log(e));
                }
            }
            response(topics, results, version)
        }));
    }
    Reply::Ready(response(topics, results, version))
}

/// Kafka refuses a keyless record in a compacted topic (compaction keeps the last record per
/// key, so a record without one could never be compacted), and refuses its whole batch. Only
/// compacted topics pay for this record walk.
fn require_keys(topic: &str, partition: i32, records: Option<&bytes::Bytes>) -> Result<(), BrokerError> {
    let Some(records) = records else { return Ok(()) };
    let mut buf = records.clone();
    let Ok(set) = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf) else {
        // Not decodable: the log's own validation answers with the precise error.
        return Ok(());
    };
    let keyless: Vec<(i32, String)> = set
        .records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| {
            (i as i32, format!("Compacted topic cannot accept message without key in topic partition {topic}-{partition}."))
        })
        .collect();
    if keyless.is_empty() {
        Ok(())
    } else {
        Err(BrokerError::InvalidRecords(keyless))
    }
}

fn append(
    log: Option<Arc<PartitionLog>>,
    records: Option<&[u8]>,
    now: i64,
) -> Result<(Arc<PartitionLog>, AppendInfo), BrokerError> {
    let log = log.ok_or(BrokerError::UnknownTopicOrPartition)?;
    let records =
        records.ok_or_else(|| BrokerError::InvalidRequest("produce request without records".into()))?;
    let info = log.append(records, now)?;
    Ok((log, info))
}

fn response(topics: Vec<(TopicName, uuid::Uuid)>, results: Vec<Appended>, version: i16) -> ProduceResponse {
    // Fields newer than the request's version must stay at their defaults.
    let log_start = |o: i64| if version >= 5 { o } else { -1 };
    let mut responses: Vec<TopicProduceResponse> = topics
        .into_iter()
        .map(|(name, id)| TopicProduceResponse::default().with_name(name).with_topic_id(id))
        .collect();
    for r in results {
        let p = PartitionProduceResponse::default().with_index(r.index);
        let p = match r.outcome {
            Ok((_, info)) => p
                .with_base_offset(info.base_offset)
                .with_log_append_time_ms(info.log_append_time)
                .with_log_start_offset(log_start(info.log_start_offset)),
            Err(e) => p
                .with_record_errors(match &e {
                    // Per-record errors exist from v8.
                    BrokerError::InvalidRecords(errors) if version >= 8 => errors
                        .iter()
                        .map(|(i, m)| {
                            BatchIndexAndErrorMessage::default()
                                .with_batch_index(*i)
                                .with_batch_index_error_message(Some(str_bytes(m.clone())))
                        })
                        .collect(),
                    _ => Vec::new(),
                })
                .with_error_code(e.code())
                .with_error_message(e.message().filter(|_| version >= 8).map(str_bytes))
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1),
        };
        responses[r.topic].partition_responses.push(p);
    }
    ProduceResponse::default().with_responses(responses)
}

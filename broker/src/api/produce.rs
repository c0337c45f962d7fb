//! Produce: validate and append each partition's record batch, then answer per `acks`.
//!
//! Batches stay bytes: the log checks the v2 header and CRC and rewrites the base offset; no
//! record is decoded here.

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::*;

use super::{str_bytes, Reply, RequestContext};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::log::{AppendInfo, LogError, PartitionLog, RecordBatchHeader};
use crate::log_manager::{Topic, UnknownTopic};
use crate::storage_task;
use crate::txn::TxnError;

/// One partition's outcome, kept until the response is built (after the fsync for acks=-1).
struct Appended {
    topic: usize,
    index: i32,
    /// Bytes appended (0 when refused, or a retry of a batch already in the log).
    bytes: usize,
    outcome: Result<(Arc<PartitionLog>, AppendInfo), BrokerError>,
}

/// One partition's batch, as the request gave it.
struct Batch {
    topic: usize,
    index: i32,
    records: Option<bytes::Bytes>,
}

pub async fn handle(ctx: Arc<RequestContext>, req: ProduceRequest) -> Reply<ProduceResponse> {
    let broker = ctx.broker.clone();
    let version = ctx.api_version;
    let acks = req.acks;
    let mut topics: Vec<(TopicName, uuid::Uuid)> = Vec::with_capacity(req.topic_data.len());
    let mut resolved = Vec::with_capacity(req.topic_data.len());
    let mut batches = Vec::new();
    for data in req.topic_data {
        // v13 names topics by id (KIP-516); earlier versions by name.
        resolved.push(
            broker
                .logs
                .requested_topic(&data.name.0, data.topic_id, version >= 13),
        );
        for partition in data.partition_data {
            batches.push(Batch {
                topic: topics.len(),
                index: partition.index,
                records: partition.records,
            });
        }
        topics.push((data.name, data.topic_id));
    }
    // Kafka refuses the whole request when a transactional batch comes without a transactional
    // id (it cannot be authorized).
    let transactional_id = req.transactional_id.map(|t| t.0.to_string());
    let untagged_transactional = transactional_id.is_none()
        && batches.iter().any(|b| {
            b.records
                .as_ref()
                .and_then(|r| RecordBatchHeader::parse(r).ok())
                .is_some_and(|h| h.is_transactional())
        });
    let refuse_all = if !(-1..=1).contains(&acks) {
        Some(|| BrokerError::InvalidRequiredAcks(format!("acks must be -1, 0 or 1, not {acks}")))
            .map(|f| Box::new(f) as Box<dyn Fn() -> BrokerError + Send>)
    } else if untagged_transactional {
        Some(Box::new(|| {
            BrokerError::TransactionalIdAuthorizationFailed(
                "A transactional batch needs the request's transactional id".into(),
            )
        }) as Box<dyn Fn() -> BrokerError + Send>)
    } else {
        None
    };
    let mut results = if let Some(refusal) = refuse_all {
        batches
            .iter()
            .map(|b| Appended {
                topic: b.topic,
                index: b.index,
                bytes: 0,
                outcome: Err(refusal()),
            })
            .collect()
    } else {
        // One storage task appends every partition of the request: the connection waits for it
        // before reading its next request, so pipelined produces land in the order sent.
        let logs = broker.clone();
        let partitions: Vec<(usize, i32)> = batches.iter().map(|b| (b.topic, b.index)).collect();
        let task = move || append_all(&logs, &resolved, batches, transactional_id.as_deref(), version);
        match storage_task::run("produce", task).await {
            Ok(results) => results,
            Err(failed) => partitions
                .into_iter()
                .map(|(topic, index)| Appended {
                    topic,
                    index,
                    bytes: 0,
                    outcome: Err(failed.clone().into()),
                })
                .collect(),
        }
    };
    let appended: usize = results.iter().map(|r| r.bytes).sum();
    let waits_for_fsync = acks == -1 && broker.config.flush_acks_all;
    if appended > 0 {
        metrics::counter!(crate::metrics::PRODUCE_BYTES).increment(appended as u64);
        // Readable only once durable: the fsync moves the high watermark, which wakes the
        // partition's waiting fetches (without the policy the append itself did).
        if broker.config.flush_before_visible && !waits_for_fsync {
            for (log, info) in results.iter().filter_map(|r| r.outcome.as_ref().ok()) {
                broker
                    .flusher
                    .flush_in_background(Arc::clone(log), info.last_offset);
            }
        }
    }
    // A partition refused for disk pressure, or whose write found the filesystem full,
    // throttles the client (KIP-219): the response says so and the connection stops reading for
    // that long.
    let throttle_ms = if results.iter().any(|r| {
        matches!(
            r.outcome,
            Err(BrokerError::DiskPressure(_) | BrokerError::Log(crate::log::LogError::NoSpace(_)))
        )
    }) {
        broker
            .dynamic_config
            .value("keel.disk.pressure.throttle.ms")
            .and_then(|(v, _)| v.trim().parse::<i32>().ok())
            .unwrap_or(1_000)
            .max(0)
    } else {
        0
    };
    ctx.mute_connection(throttle_ms as u32);
    if acks == 0 {
        return Reply::Nothing;
    }
    if waits_for_fsync {
        return Reply::Deferred(Box::pin(async move {
            // The flusher shares each partition's fsync among all concurrent acks=-1 produces.
            // Every partition's request is queued before any is awaited, so the fsyncs of a
            // multi-partition produce run at once.
            let pending: Vec<_> = results
                .iter()
                .map(|r| {
                    r.outcome
                        .as_ref()
                        .ok()
                        .map(|(log, info)| broker.flusher.flush_through(log.clone(), info.last_offset))
                })
                .collect();
            for (r, flush) in results.iter_mut().zip(pending) {
                let Some(flush) = flush else { continue };
                if let Err(e) = flush.await {
                    tracing::error!(error = %e, "fsync for acks=-1 produce failed");
                    r.outcome = Err(BrokerError::Log(e));
                }
            }
            response(topics, results, version, throttle_ms)
        }));
    }
    Reply::Ready(response(topics, results, version, throttle_ms))
}

fn append_all(
    broker: &Broker,
    topics: &[Result<Arc<Topic>, UnknownTopic>],
    batches: Vec<Batch>,
    transactional_id: Option<&str>,
    version: i16,
) -> Vec<Appended> {
    let now = crate::clock::now_ms();
    // A transactional batch must belong to its producer's ongoing transaction, which must hold
    // the partition; the coordinator's answer is translated per Produce version as Kafka does.
    let check_transaction = |h: &RecordBatchHeader, topic: &str, partition: i32| {
        let id = transactional_id.unwrap_or_default();
        broker
            .txn
            .verify_produce(id, h.producer_id(), h.producer_epoch(), topic, partition)
            .map_err(|e| match e {
                TxnError::NotInTransaction(m) if version >= 11 => BrokerError::TransactionAbortable(m),
                TxnError::ConcurrentTransactions if version <= 11 => {
                    BrokerError::NotEnoughReplicas("The transaction is completing; retry".into())
                }
                other => BrokerError::Txn(other),
            })
    };
    batches
        .into_iter()
        .map(|b| {
            let outcome = match &topics[b.topic] {
                Err(unknown) => Err(BrokerError::from(*unknown)),
                Ok(topic) => {
                    broker
                        .logs
                        .append_records(topic, b.index, b.records.as_ref(), now, &check_transaction)
                }
            };
            match &outcome {
                Err(e) => tracing::debug!(partition = b.index, error = %e, "produce refused"),
                Ok((_, info)) if info.duplicate => {
                    metrics::counter!(crate::metrics::PRODUCE_DUPLICATE_BATCHES).increment(1);
                    tracing::debug!(
                        partition = b.index,
                        base_offset = info.base_offset,
                        "retried batch answered with its original offsets"
                    );
                }
                Ok(_) => {}
            }
            Appended {
                topic: b.topic,
                index: b.index,
                bytes: match &outcome {
                    Ok((_, info)) if !info.duplicate => b.records.as_ref().map_or(0, |r| r.len()),
                    _ => 0,
                },
                outcome,
            }
        })
        .collect()
}

fn response(
    topics: Vec<(TopicName, uuid::Uuid)>,
    results: Vec<Appended>,
    version: i16,
    throttle_ms: i32,
) -> ProduceResponse {
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
                    BrokerError::InvalidRecords(errors)
                    | BrokerError::Log(
                        LogError::InvalidTimestamp(errors) | LogError::InvalidRecords(errors),
                    ) if version >= 8 => errors
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
    ProduceResponse::default()
        .with_responses(responses)
        .with_throttle_time_ms(throttle_ms)
}

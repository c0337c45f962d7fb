//! Fetch: file ranges of whole batches, long polling woken by appends; read_committed
//! consumers read up to the last stable offset and get the aborted transactions in range.
//!
//! Fetch sessions (KIP-227) are declined the way Kafka declines them when its session cache
//! is full: every response carries session id 0, so clients keep sending full fetch requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::*;

use super::{Reply, RequestContext};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::log::LogError;
use crate::storage_task;

/// Kafka's FINAL_EPOCH: a sessionless full fetch.
const FINAL_EPOCH: i32 = -1;
const READ_COMMITTED: i8 = 1;

pub async fn handle(ctx: Arc<RequestContext>, req: FetchRequest) -> Reply<FetchResponse> {
    if req.session_id != 0 && req.session_epoch != FINAL_EPOCH {
        // We never hand out sessions, so any session id is one we do not know.
        return Reply::Ready(
            FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code()),
        );
    }
    let broker = ctx.broker.clone();
    let version = ctx.api_version;
    // Kafka caps every fetch at the broker's fetch.max.bytes, whatever the client asks.
    let max_bytes = req.max_bytes.clamp(0, broker.config.fetch_max_bytes);
    // The reply exists only later, so its room is reserved now: a client pipelining fetches
    // it never reads stops being read instead of filling the broker's memory.
    ctx.reserve_reply_bytes(max_bytes as usize).await;
    let req = Arc::new(req.with_max_bytes(max_bytes));
    Reply::Deferred(Box::pin(async move {
        let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            // Register for the wake-up before reading, so an append between the read and the
            // wait is not missed.
            let appended = broker.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            // Reads are preads of segment files: storage work, off the async workers.
            let read = {
                let (broker, req) = (broker.clone(), req.clone());
                storage_task::run("fetch", move || read_once(&broker, &req, version)).await
            };
            let (response, bytes, errors) = match read {
                Ok(read) => read,
                Err(failed) => {
                    let code = BrokerError::from(failed).code();
                    return FetchResponse::default().with_error_code(code);
                }
            };
            if bytes >= req.min_bytes.max(0) as usize || errors || tokio::time::Instant::now() >= deadline {
                metrics::counter!(crate::metrics::FETCH_BYTES).increment(bytes as u64);
                return response;
            }
            tokio::select! {
                _ = appended => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }))
}

/// Reads every requested partition once. Returns the response, the record bytes in it, and
/// whether any partition carries an error (which ends a long poll at once, as in Kafka).
fn read_once(broker: &Broker, req: &FetchRequest, version: i16) -> (FetchResponse, usize, bool) {
    let mut remaining = req.max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut errors = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let topic = broker.logs.requested_topic(&t.topic.0, t.topic_id, version >= 13);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let base = PartitionData::default()
                .with_partition_index(p.partition)
                .with_preferred_read_replica(BrokerId(-1))
                .with_aborted_transactions((req.isolation_level == READ_COMMITTED).then(Vec::new));
            let log = match &topic {
                Err(unknown) => Err(BrokerError::from(*unknown)),
                Ok(topic) => topic
                    .partition(p.partition)
                    .cloned()
                    .ok_or(BrokerError::UnknownTopicOrPartition),
            };
            let data = match log {
                Err(e) => {
                    errors = true;
                    failed(base, e.code())
                }
                Ok(_) if p.current_leader_epoch > super::LEADER_EPOCH => {
                    errors = true;
                    failed(base, ResponseError::UnknownLeaderEpoch.code())
                }
                Ok(log) => {
                    let limit = (p.partition_max_bytes.max(0) as usize).min(remaining);
                    // Kafka's rule: the first partition with data returns at least one whole
                    // batch even past the limits, so a large batch never stalls a consumer.
                    let read = if req.isolation_level == READ_COMMITTED {
                        log.read_committed(p.fetch_offset, limit, total == 0)
                    } else {
                        log.read(p.fetch_offset, limit, total == 0)
                    };
                    match read {
                        Ok(read) => {
                            let n = read.records.len();
                            total += n;
                            remaining = remaining.saturating_sub(n);
                            let base = if req.isolation_level == READ_COMMITTED {
                                base.with_aborted_transactions(Some(
                                    read.aborted_transactions
                                        .iter()
                                        .map(|a| {
                                            AbortedTransaction::default()
                                                .with_producer_id(ProducerId(a.producer_id))
                                                .with_first_offset(a.first_offset)
                                        })
                                        .collect(),
                                ))
                            } else {
                                base
                            };
                            base.with_high_watermark(read.high_watermark)
                                .with_last_stable_offset(read.last_stable_offset)
                                .with_log_start_offset(if version >= 5 { read.log_start_offset } else { -1 })
                                .with_records(Some(read.records))
                        }
                        Err(e) => {
                            errors = true;
                            if !matches!(e, LogError::OffsetOutOfRange { .. }) {
                                tracing::error!(topic = %t.topic.0.as_str(), partition = p.partition, error = %e, "fetch read failed");
                            }
                            failed(base, BrokerError::Log(e).code())
                                .with_high_watermark(log.high_watermark())
                                .with_last_stable_offset(log.last_stable_offset())
                                .with_log_start_offset(if version >= 5 { log.log_start_offset() } else { -1 })
                        }
                    }
                }
            };
            partitions.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }
    (FetchResponse::default().with_responses(topics), total, errors)
}

fn failed(base: PartitionData, code: i16) -> PartitionData {
    base.with_error_code(code)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(Bytes::new()))
}

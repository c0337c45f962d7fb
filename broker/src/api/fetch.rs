//! Fetch: file ranges of whole batches, long polling woken by the requested partitions only;
//! read_committed consumers read up to the last stable offset and get the aborted transactions
//! in range.
//!
//! Fetch sessions (KIP-227): the session rules are `fetch_session`'s; this handler maps the
//! request onto them, reads the partitions the session context names, and answers with those
//! it says carry news.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::futures::Notified;

use super::{Reply, RequestContext};
use crate::broker::Broker;
use crate::clock;
use crate::error::BrokerError;
use crate::fetch_session::{
    FetchContext, FetchParams, PartitionOutcome, SessionPartition, SessionTopic, INVALID_SESSION_ID,
};
use crate::log::{LogError, LogPosition, PartitionLog};
use crate::log_manager::{Topic, UnknownTopic};
use crate::storage_task;

const READ_COMMITTED: i8 = 1;

/// What the response does with the fetch session.
enum SessionUse {
    None,
    /// A full fetch that may start one.
    Create,
    /// An incremental fetch on this session.
    Continue(i32),
}

pub async fn handle(ctx: Arc<RequestContext>, req: FetchRequest) -> Reply<FetchResponse> {
    let broker = ctx.broker.clone();
    let version = ctx.api_version;
    let by_id = version >= 13;
    let requested = requested_partitions(&req, by_id);
    let forgotten = forgotten_partitions(&req, by_id);
    let context = broker.fetch_sessions.new_context(
        req.session_id,
        req.session_epoch,
        by_id,
        &requested,
        &forgotten,
        clock::now_ms(),
    );
    let (partitions, session) = match context {
        FetchContext::Error(e) => {
            return Reply::Ready(
                FetchResponse::default()
                    .with_error_code(BrokerError::from(e).code())
                    .with_session_id(INVALID_SESSION_ID),
            )
        }
        FetchContext::Sessionless => (requested, SessionUse::None),
        FetchContext::Full => (requested, SessionUse::Create),
        FetchContext::Incremental {
            session_id,
            partitions,
        } => (partitions, SessionUse::Continue(session_id)),
    };
    // Kafka caps every fetch at the broker's fetch.max.bytes, whatever the client asks.
    let max_bytes = req.max_bytes.clamp(0, broker.config.fetch_max_bytes);
    // The reply exists only later, so its room is reserved now: a client pipelining fetches
    // it never reads stops being read instead of filling the broker's memory.
    ctx.reserve_reply_bytes(max_bytes as usize).await;
    let partitions = Arc::new(partitions);
    let read_committed = req.isolation_level == READ_COMMITTED;
    Reply::Deferred(Box::pin(async move {
        let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
        let deadline = tokio::time::Instant::now() + max_wait;
        let min_bytes = req.min_bytes.max(0) as u64;
        let read = loop {
            // Reads are preads of segment files: storage work, off the async workers.
            let read = {
                let (broker, partitions) = (broker.clone(), partitions.clone());
                storage_task::run("fetch", move || {
                    read_once(&broker, &partitions, version, read_committed, max_bytes as usize)
                })
                .await
            };
            let read = match read {
                Ok(read) => read,
                Err(failed) => {
                    let code = BrokerError::from(failed).code();
                    return FetchResponse::default().with_error_code(code);
                }
            };
            if read.bytes as u64 >= min_bytes || read.errors || tokio::time::Instant::now() >= deadline {
                break read;
            }
            // Kafka's delayed fetch: wait on the requested partitions only, and read again
            // once enough has arrived (counted from positions, without reading) or at the
            // deadline.
            wait_for_bytes(&read.watched, min_bytes - read.bytes as u64, deadline).await;
        };
        metrics::counter!(crate::metrics::FETCH_BYTES).increment(read.bytes as u64);
        let (session_id, included) = match session {
            SessionUse::None => (INVALID_SESSION_ID, None),
            SessionUse::Create => {
                let cached = partitions
                    .iter()
                    .zip(&read.outcomes)
                    .map(|((key, params), outcome)| (key.clone(), *params, *outcome))
                    .collect();
                (broker.fetch_sessions.create(by_id, cached, clock::now_ms()), None)
            }
            SessionUse::Continue(id) => {
                match broker
                    .fetch_sessions
                    .complete(id, req.session_epoch, &partitions, &read.outcomes)
                {
                    Ok(included) => (id, Some(included)),
                    // Kafka answers a session moved on meanwhile with its id and no partitions.
                    Err(e) => {
                        return FetchResponse::default()
                            .with_error_code(BrokerError::from(e).code())
                            .with_session_id(id)
                    }
                }
            }
        };
        respond(&partitions, read.data, included.as_deref()).with_session_id(session_id)
    }))
}

/// The request's partitions with what it asks of each, as a session keys them.
fn requested_partitions(req: &FetchRequest, by_id: bool) -> Vec<(SessionPartition, FetchParams)> {
    req.topics
        .iter()
        .flat_map(|t| {
            let topic = session_topic(&t.topic, t.topic_id, by_id);
            t.partitions.iter().map(move |p| {
                (
                    SessionPartition {
                        topic: topic.clone(),
                        partition: p.partition,
                    },
                    FetchParams {
                        fetch_offset: p.fetch_offset,
                        partition_max_bytes: p.partition_max_bytes,
                        log_start_offset: p.log_start_offset,
                        current_leader_epoch: p.current_leader_epoch,
                        last_fetched_epoch: p.last_fetched_epoch,
                    },
                )
            })
        })
        .collect()
}

/// The partitions an incremental request drops from its session: by topic id from v13, by
/// name before.
fn forgotten_partitions(req: &FetchRequest, by_id: bool) -> Vec<SessionPartition> {
    req.forgotten_topics_data
        .iter()
        .flat_map(|t| {
            let topic = session_topic(&t.topic, t.topic_id, by_id);
            t.partitions.iter().map(move |&partition| SessionPartition {
                topic: topic.clone(),
                partition,
            })
        })
        .collect()
}

fn session_topic(name: &TopicName, id: uuid::Uuid, by_id: bool) -> SessionTopic {
    if by_id {
        SessionTopic::Id(id)
    } else {
        SessionTopic::Name(name.0.to_string())
    }
}

/// The response: the partitions read (those `included`, for an incremental fetch), grouped
/// into topics as they come, in order.
fn respond(
    partitions: &[(SessionPartition, FetchParams)],
    data: Vec<PartitionData>,
    included: Option<&[bool]>,
) -> FetchResponse {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut last: Option<&SessionTopic> = None;
    for (i, ((key, _), data)) in partitions.iter().zip(data).enumerate() {
        if included.is_some_and(|inc| !inc[i]) {
            continue;
        }
        if last != Some(&key.topic) {
            let topic = match &key.topic {
                SessionTopic::Name(name) => FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(name.clone()))),
                SessionTopic::Id(id) => FetchableTopicResponse::default().with_topic_id(*id),
            };
            topics.push(topic);
            last = Some(&key.topic);
        }
        if let Some(topic) = topics.last_mut() {
            topic.partitions.push(data);
        }
    }
    FetchResponse::default().with_responses(topics)
}

/// A requested partition a waiting fetch watches, and the high watermark's place when the fetch
/// found it caught up there (`None`: any progress of the partition is worth a new read, as for
/// a read_committed fetch, whose bound is the last stable offset).
struct Watched {
    log: Arc<PartitionLog>,
    caught_up_at: Option<LogPosition>,
    /// The high watermark and last stable offset the read saw: a partition without a place to
    /// count from is read again once either has moved.
    seen: (i64, i64),
}

impl Watched {
    fn moved(&self) -> bool {
        (self.log.high_watermark(), self.log.last_stable_offset()) != self.seen
    }
}

/// Waits until the watched partitions hold `wanted` bytes more than when they were read, one
/// of them changed in a way positions cannot count, or the deadline passes.
async fn wait_for_bytes(watched: &[Watched], wanted: u64, deadline: tokio::time::Instant) {
    loop {
        // Register for wake-ups before looking, so a move between the look and the wait is
        // not missed.
        let mut wakes: Vec<_> = watched.iter().map(|w| Box::pin(w.log.progressed())).collect();
        for wake in &mut wakes {
            wake.as_mut().enable();
        }
        let mut arrived = 0u64;
        for w in watched {
            match &w.caught_up_at {
                Some(at) => match at.bytes_until(&w.log.high_watermark_position()) {
                    Some(n) => arrived += n,
                    // A roll or a truncation since: read again, as Kafka's delayed fetch does.
                    None => return,
                },
                // Moved between the read and the registration above, whose wake-up is gone.
                None if w.moved() => return,
                None => {}
            }
        }
        if arrived >= wanted {
            return;
        }
        if wakes.is_empty() {
            tokio::time::sleep_until(deadline).await;
            return;
        }
        tokio::select! {
            woken = first_woken(&mut wakes) => {
                // Without a place to count from, any progress is worth a new read.
                if watched[woken].caught_up_at.is_none() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// The index of the first of `wakes` to resolve.
async fn first_woken(wakes: &mut [Pin<Box<Notified<'_>>>]) -> usize {
    std::future::poll_fn(|cx| {
        for (i, wake) in wakes.iter_mut().enumerate() {
            if wake.as_mut().poll(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    })
    .await
}

/// One read of every partition a fetch serves.
struct FetchRead {
    /// Each partition's answer, in the order read.
    data: Vec<PartitionData>,
    /// The same, as a fetch session sees them.
    outcomes: Vec<PartitionOutcome>,
    /// Record bytes in the response.
    bytes: usize,
    /// Whether any partition carries an error (which ends a long poll at once, as in Kafka).
    errors: bool,
    /// The partitions read, for a fetch that waits for more.
    watched: Vec<Watched>,
}

/// Reads every partition once, in order, within `max_bytes` in all.
fn read_once(
    broker: &Broker,
    partitions: &[(SessionPartition, FetchParams)],
    version: i16,
    read_committed: bool,
    max_bytes: usize,
) -> FetchRead {
    #[cfg(test)]
    broker
        .fetch_reads
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut remaining = max_bytes;
    let mut read = FetchRead {
        data: Vec::with_capacity(partitions.len()),
        outcomes: Vec::with_capacity(partitions.len()),
        bytes: 0,
        errors: false,
        watched: Vec::new(),
    };
    // Partitions of one topic come together: the topic is looked up once for them.
    let mut topic: Option<(&SessionTopic, Result<Arc<Topic>, UnknownTopic>)> = None;
    for (key, params) in partitions {
        if topic.as_ref().is_none_or(|(t, _)| *t != &key.topic) {
            let found = match &key.topic {
                SessionTopic::Name(name) => broker.logs.requested_topic(name, uuid::Uuid::nil(), false),
                SessionTopic::Id(id) => broker.logs.requested_topic("", *id, true),
            };
            topic = Some((&key.topic, found));
        }
        let Some((_, found)) = &topic else { continue };
        let base = PartitionData::default()
            .with_partition_index(key.partition)
            .with_preferred_read_replica(BrokerId(-1))
            .with_aborted_transactions(read_committed.then(Vec::new));
        let log = match found {
            Err(unknown) => Err(BrokerError::from(*unknown)),
            Ok(topic) => topic
                .partition(key.partition)
                .cloned()
                .ok_or(BrokerError::UnknownTopicOrPartition),
        };
        let data = match log {
            Err(e) => {
                read.errors = true;
                failed(base, e.code())
            }
            Ok(_) if params.current_leader_epoch > super::LEADER_EPOCH => {
                read.errors = true;
                failed(base, ResponseError::UnknownLeaderEpoch.code())
            }
            Ok(log) => {
                let limit = (params.partition_max_bytes.max(0) as usize).min(remaining);
                // Kafka's rule: the first partition with data returns at least one whole
                // batch even past the limits, so a large batch never stalls a consumer.
                let first = read.bytes == 0;
                let result = if read_committed {
                    log.read_committed(params.fetch_offset, limit, first)
                } else {
                    log.read(params.fetch_offset, limit, first)
                };
                match result {
                    Ok(result) => {
                        read.watched.push(Watched {
                            log: Arc::clone(&log),
                            caught_up_at: result.caught_up_at.filter(|_| !read_committed),
                            seen: (result.high_watermark, result.last_stable_offset),
                        });
                        let n = result.records.len();
                        read.bytes += n;
                        remaining = remaining.saturating_sub(n);
                        let base = if read_committed {
                            base.with_aborted_transactions(Some(
                                result
                                    .aborted_transactions
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
                        base.with_high_watermark(result.high_watermark)
                            .with_last_stable_offset(result.last_stable_offset)
                            .with_log_start_offset(if version >= 5 { result.log_start_offset } else { -1 })
                            .with_records(Some(result.records))
                    }
                    Err(e) => {
                        read.errors = true;
                        if !matches!(e, LogError::OffsetOutOfRange { .. }) {
                            tracing::error!(topic = ?key.topic, partition = key.partition, error = %e, "fetch read failed");
                        }
                        failed(base, BrokerError::Log(e).code())
                            .with_high_watermark(log.high_watermark())
                            .with_last_stable_offset(log.last_stable_offset())
                            .with_log_start_offset(if version >= 5 { log.log_start_offset() } else { -1 })
                    }
                }
            }
        };
        read.outcomes.push(PartitionOutcome {
            record_bytes: data.records.as_ref().map_or(0, Bytes::len),
            high_watermark: data.high_watermark,
            log_start_offset: data.log_start_offset,
            error_code: data.error_code,
        });
        read.data.push(data);
    }
    read
}

fn failed(base: PartitionData, code: i16) -> PartitionData {
    base.with_error_code(code)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(Bytes::new()))
}

//! The transactional producer's APIs, transaction version 1: AddPartitionsToTxn (v0-3, the
//! client's form), AddOffsetsToTxn, TxnOffsetCommit (v0-4) and EndTxn (v0-4).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;

use super::producers::fenced_as_epoch;
use super::{Reply, RequestContext};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::meta::CommittedOffset;
use crate::storage_task;
use crate::txn::TxnError;

/// Runs a coordinator call for one transactional id on a storage thread (it stores the new
/// state with a synced write), after Kafka's first check: an empty id is INVALID_REQUEST. An
/// error comes back as its code, PRODUCER_FENCED as INVALID_PRODUCER_EPOCH before v2.
async fn coordinate<T: Send + 'static>(
    ctx: &RequestContext,
    task: &'static str,
    id: String,
    call: impl FnOnce(&Broker, &str, i64) -> Result<T, TxnError> + Send + 'static,
) -> Result<T, i16> {
    if id.is_empty() {
        return Err(ResponseError::InvalidRequest.code());
    }
    let broker = ctx.broker.clone();
    let outcome = storage_task::try_run(task, move || {
        Ok::<_, BrokerError>(call(&broker, &id, crate::clock::now_ms())?)
    })
    .await;
    outcome.map_err(|e| {
        tracing::debug!(error = %e, task, "transactional request refused");
        fenced_as_epoch(e.code(), ctx.api_version < 2)
    })
}

pub async fn add_partitions_to_txn(
    ctx: Arc<RequestContext>,
    req: AddPartitionsToTxnRequest,
) -> Reply<AddPartitionsToTxnResponse> {
    if ctx.api_version >= 4 {
        return Reply::Ready(add_partitions_batched(&ctx, req).await);
    }
    let results = add_partitions_v3(
        &ctx,
        req.v3_and_below_transactional_id.0.to_string(),
        req.v3_and_below_producer_id.0,
        req.v3_and_below_producer_epoch,
        &req.v3_and_below_topics,
    )
    .await;
    Reply::Ready(AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results))
}

/// v4+: transactions batched, each either verified only (whether its partitions are in the
/// ongoing transaction: Kafka's answer to a broker checking a produce) or added as in v3.
async fn add_partitions_batched(
    ctx: &Arc<RequestContext>,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    use kafka_protocol::messages::add_partitions_to_txn_response::AddPartitionsToTxnResult;
    let mut results = Vec::with_capacity(req.transactions.len());
    for t in &req.transactions {
        let id = t.transactional_id.0.to_string();
        let topic_results = if t.verify_only {
            let partitions: Vec<(String, i32)> = t
                .topics
                .iter()
                .flat_map(|tp| tp.partitions.iter().map(move |&p| (tp.name.0.to_string(), p)))
                .collect();
            let mut codes = ctx
                .broker
                .txn
                .verify_partitions(&id, t.producer_id.0, t.producer_epoch, &partitions)
                .into_iter()
                .map(|r| match r {
                    Ok(()) => 0,
                    Err(TxnError::NotInTransaction(_)) => ResponseError::TransactionAbortable.code(),
                    Err(e) => BrokerError::Txn(e).code(),
                });
            t.topics
                .iter()
                .map(|tp| {
                    AddPartitionsToTxnTopicResult::default()
                        .with_name(tp.name.clone())
                        .with_results_by_partition(
                            tp.partitions
                                .iter()
                                .map(|&p| {
                                    AddPartitionsToTxnPartitionResult::default()
                                        .with_partition_index(p)
                                        .with_partition_error_code(codes.next().unwrap_or(0))
                                })
                                .collect(),
                        )
                })
                .collect()
        } else {
            add_partitions_v3(ctx, id, t.producer_id.0, t.producer_epoch, &t.topics).await
        };
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(topic_results),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

/// The client's AddPartitionsToTxn (v0-3), for one transactional id.
async fn add_partitions_v3(
    ctx: &Arc<RequestContext>,
    id: String,
    pid: i64,
    epoch: i16,
    topics: &[kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let requested: Vec<(TopicName, Vec<i32>)> = topics
        .iter()
        .map(|t| (t.name.clone(), t.partitions.clone()))
        .collect();
    // Kafka: an unknown partition fails itself and leaves every other one not attempted.
    let unknown: Vec<(TopicName, i32)> = requested
        .iter()
        .flat_map(|(n, ps)| ps.iter().map(move |&p| (n.clone(), p)))
        .filter(|(n, p)| ctx.broker.logs.partition(n.0.as_str(), *p).is_err())
        .collect();
    let shared = if !unknown.is_empty() {
        None
    } else {
        let partitions: Vec<(String, i32)> = requested
            .iter()
            .flat_map(|(n, ps)| ps.iter().map(move |&p| (n.0.to_string(), p)))
            .collect();
        let added = coordinate(ctx, "add_partitions_to_txn", id, move |b, id, now| {
            b.txn.add_partitions(&b.meta, id, pid, epoch, &partitions, now)
        })
        .await;
        Some(added.err().unwrap_or(0))
    };
    let code_for = |name: &TopicName, p: i32| match shared {
        Some(code) => code,
        None if unknown.iter().any(|(n, up)| n == name && *up == p) => {
            ResponseError::UnknownTopicOrPartition.code()
        }
        None => ResponseError::OperationNotAttempted.code(),
    };
    requested
        .iter()
        .map(|(name, partitions)| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(name.clone())
                .with_results_by_partition(
                    partitions
                        .iter()
                        .map(|&p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code_for(name, p))
                        })
                        .collect(),
                )
        })
        .collect()
}

pub async fn end_txn(ctx: Arc<RequestContext>, req: EndTxnRequest) -> Reply<EndTxnResponse> {
    let id = req.transactional_id.0.to_string();
    let (pid, epoch, commit) = (req.producer_id.0, req.producer_epoch, req.committed);
    let ended = coordinate(&ctx, "end_txn", id.clone(), move |b, id, now| {
        b.txn.end_transaction(&b.meta, id, pid, epoch, commit, now)
    })
    .await;
    let code = match ended {
        Ok(markers_due) => {
            if markers_due {
                // Answered once the Prepare state is stored, as Kafka does; the markers follow.
                ctx.broker.complete_transactions(vec![id]);
            }
            0
        }
        Err(code) => code,
    };
    Reply::Ready(EndTxnResponse::default().with_error_code(code))
}

/// AddOffsetsToTxn (v0-4): the group's offsets partition joins the transaction.
pub async fn add_offsets_to_txn(
    ctx: Arc<RequestContext>,
    req: AddOffsetsToTxnRequest,
) -> Reply<AddOffsetsToTxnResponse> {
    let (pid, epoch, group) = (req.producer_id.0, req.producer_epoch, req.group_id.0.to_string());
    let added = coordinate(
        &ctx,
        "add_offsets_to_txn",
        req.transactional_id.0.to_string(),
        move |b, id, now| b.txn.add_offsets(&b.meta, id, pid, epoch, &group, now),
    )
    .await;
    Reply::Ready(AddOffsetsToTxnResponse::default().with_error_code(added.err().unwrap_or(0)))
}

/// TxnOffsetCommit (v0-4): offsets committed as part of a transaction (KIP-447's group checks
/// from v3), pending until the transaction commits.
pub async fn txn_offset_commit(
    ctx: Arc<RequestContext>,
    req: TxnOffsetCommitRequest,
) -> Reply<TxnOffsetCommitResponse> {
    let version = ctx.api_version;
    let broker = ctx.broker.clone();
    let group = req.group_id.0.to_string();
    let now = crate::clock::now_ms();
    let mut known = Vec::new();
    let mut codes: Vec<Vec<i16>> = Vec::new();
    for t in &req.topics {
        let topic = broker.logs.topic(t.name.0.as_str());
        let mut row = Vec::new();
        for p in &t.partitions {
            if topic
                .as_ref()
                .is_some_and(|topic| topic.partition(p.partition_index).is_some())
            {
                let o = CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    commit_timestamp_ms: now,
                };
                known.push((t.name.0.to_string(), p.partition_index, o));
                row.push(0);
            } else {
                row.push(ResponseError::UnknownTopicOrPartition.code());
            }
        }
        codes.push(row);
    }
    let id = req.transactional_id.0.to_string();
    let checked = broker
        .groups
        .validate_txn_offset_commit(
            &group,
            req.generation_id,
            req.member_id.as_str(),
            req.group_instance_id.as_deref(),
        )
        .map_err(BrokerError::from);
    let outcome = match checked {
        Err(e) => Err(e),
        Ok(()) if known.is_empty() => Ok(()),
        Ok(()) => {
            let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
            storage_task::try_run("txn_offset_commit", move || {
                Ok::<_, BrokerError>(broker.txn.txn_offset_commit(
                    &broker.meta,
                    &id,
                    pid,
                    epoch,
                    &group,
                    known,
                )?)
            })
            .await
        }
    };
    let shared = match outcome {
        Ok(()) => None,
        Err(e) => {
            tracing::debug!(error = %e, "TxnOffsetCommit refused");
            Some(match e {
                // A group not added to the transaction: v4 answers TRANSACTION_ABORTABLE.
                BrokerError::Txn(TxnError::NotInTransaction(_)) if version >= 4 => {
                    ResponseError::TransactionAbortable.code()
                }
                e => e.code(),
            })
        }
    };
    let topics = req
        .topics
        .iter()
        .zip(codes)
        .map(|(t, row)| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .zip(row)
                        .map(|(p, code)| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(if code != 0 { code } else { shared.unwrap_or(0) })
                        })
                        .collect(),
                )
        })
        .collect();
    Reply::Ready(TxnOffsetCommitResponse::default().with_topics(topics))
}

/// DescribeTransactions (v0): each transactional id's state as Kafka reports it.
pub async fn describe_transactions(
    ctx: Arc<RequestContext>,
    req: DescribeTransactionsRequest,
) -> Reply<DescribeTransactionsResponse> {
    use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
    let states = req
        .transactional_ids
        .iter()
        .map(|id| {
            let state = TransactionState::default().with_transactional_id(id.clone());
            if id.0.is_empty() {
                return state.with_error_code(ResponseError::InvalidRequest.code());
            }
            let Some(d) = ctx.broker.txn.describe(id.0.as_str()) else {
                return state.with_error_code(BrokerError::Txn(TxnError::TransactionalIdNotFound).code());
            };
            let mut topics: Vec<TopicData> = Vec::new();
            for (topic, partition) in d.partitions {
                match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
                    Some(t) => t.partitions.push(partition),
                    None => topics.push(
                        TopicData::default()
                            .with_topic(TopicName(super::str_bytes(topic)))
                            .with_partitions(vec![partition]),
                    ),
                }
            }
            state
                .with_transaction_state(super::str_bytes(d.state.name()))
                .with_transaction_timeout_ms(d.timeout_ms)
                .with_transaction_start_time_ms(d.start_timestamp)
                .with_producer_id(ProducerId(d.producer_id))
                .with_producer_epoch(d.producer_epoch)
                .with_topics(topics)
        })
        .collect();
    Reply::Ready(DescribeTransactionsResponse::default().with_transaction_states(states))
}

/// ListTransactions (v0-1): the transactional ids, filtered by state, producer id and (v1) by
/// how long their transaction has run.
pub async fn list_transactions(
    ctx: Arc<RequestContext>,
    req: ListTransactionsRequest,
) -> Reply<ListTransactionsResponse> {
    use kafka_protocol::messages::list_transactions_response::TransactionState;
    const STATES: &[&str] = &[
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
    let unknown: Vec<_> = req
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let now = crate::clock::now_ms();
    let listed = ctx
        .broker
        .txn
        .list()
        .into_iter()
        .filter(|d| {
            req.state_filters.is_empty() || req.state_filters.iter().any(|s| s.as_str() == d.state.name())
        })
        .filter(|d| {
            req.producer_id_filters.is_empty() || req.producer_id_filters.iter().any(|p| p.0 == d.producer_id)
        })
        // A transaction that has not started (start -1) counts as running since forever, as
        // in Kafka.
        .filter(|d| {
            ctx.api_version < 1 || req.duration_filter < 0 || d.start_timestamp <= now - req.duration_filter
        })
        .map(|d| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(super::str_bytes(d.transactional_id)))
                .with_producer_id(ProducerId(d.producer_id))
                .with_transaction_state(super::str_bytes(d.state.name()))
        })
        .collect();
    Reply::Ready(
        ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown)
            .with_transaction_states(listed),
    )
}

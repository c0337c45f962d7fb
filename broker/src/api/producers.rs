//! InitProducerId (a producer id and epoch for an idempotent or transactional producer) and
//! DescribeProducers.

use std::sync::Arc;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::*;

use kafka_protocol::error::ResponseError;

use super::{Reply, RequestContext};
use crate::error::BrokerError;
use crate::storage_task;
use crate::txn::{InitOutcome, TxnError};

pub async fn init_producer_id(
    ctx: Arc<RequestContext>,
    req: InitProducerIdRequest,
) -> Reply<InitProducerIdResponse> {
    let version = ctx.api_version;
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    let outcome = match req.transactional_id.as_ref().map(|t| t.to_string()) {
        Some(id) if id.is_empty() => Err(BrokerError::InvalidRequest(
            "The transactional id must not be empty".into(),
        )),
        Some(id) => {
            let broker = ctx.broker.clone();
            let timeout = req.transaction_timeout_ms;
            let task_id = id.clone();
            let outcome = storage_task::try_run("init_producer_id", move || {
                let now = crate::clock::now_ms();
                let ids = &broker.producer_ids;
                Ok::<_, BrokerError>(broker.txn.init_producer_id(
                    &broker.meta,
                    ids,
                    &task_id,
                    timeout,
                    (pid, epoch),
                    now,
                )?)
            })
            .await;
            match outcome {
                Ok(InitOutcome::Ready(pid, epoch)) => Ok((pid, epoch)),
                Ok(InitOutcome::Fenced) => {
                    // The open transaction of the previous producer is aborted now; the client
                    // retries and then gets the epoch after the fence.
                    ctx.broker.complete_transactions(vec![id]);
                    Err(TxnError::ConcurrentTransactions.into())
                }
                Err(e) => Err(e),
            }
        }
        None => {
            let broker = ctx.broker.clone();
            // A new id block is a synced RocksDB write.
            storage_task::try_run("init_producer_id", move || {
                broker.producer_ids.init_idempotent(&broker.meta, pid, epoch)
            })
            .await
        }
    };
    let response = InitProducerIdResponse::default();
    Reply::Ready(match outcome {
        Ok((pid, epoch)) => response
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch),
        Err(e) => {
            tracing::debug!(error = %e, "InitProducerId refused");
            response
                .with_error_code(fenced_as_epoch(e.code(), version < 4))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    })
}

/// PRODUCER_FENCED (90) is newer than some request versions; they get INVALID_PRODUCER_EPOCH
/// (47) instead, as Kafka answers them.
pub(crate) fn fenced_as_epoch(code: i16, old_version: bool) -> i16 {
    if old_version && code == ResponseError::ProducerFenced.code() {
        ResponseError::InvalidProducerEpoch.code()
    } else {
        code
    }
}

/// DescribeProducers: the idempotent producers each partition knows, as Kafka lists them.
pub async fn describe_producers(
    ctx: Arc<RequestContext>,
    req: DescribeProducersRequest,
) -> Reply<DescribeProducersResponse> {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = ctx.broker.logs.topic(&t.name.0);
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&index| {
                    let r = PartitionResponse::default().with_partition_index(index);
                    // The producer table is in memory: reading it is no storage I/O.
                    match topic.as_ref().and_then(|topic| topic.partition(index)) {
                        None => r.with_error_code(BrokerError::UnknownTopicOrPartition.code()),
                        Some(log) => r.with_active_producers(
                            log.producers()
                                .iter()
                                .map(|p| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(p.producer_id))
                                        .with_producer_epoch(i32::from(p.epoch))
                                        .with_last_sequence(p.last_seq())
                                        .with_last_timestamp(p.last_timestamp)
                                        .with_coordinator_epoch(p.coordinator_epoch)
                                        .with_current_txn_start_offset(
                                            p.current_txn_first_offset.unwrap_or(-1),
                                        )
                                })
                                .collect(),
                        ),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    Reply::Ready(DescribeProducersResponse::default().with_topics(topics))
}

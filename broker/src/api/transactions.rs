//! The transactional producer's APIs: AddPartitionsToTxn (v0-3, the client's form) and EndTxn
//! (v0-4, transaction version 1).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::*;

use super::producers::fenced_as_epoch;
use super::{Reply, RequestContext};
use crate::error::BrokerError;
use crate::storage_task;

pub async fn add_partitions_to_txn(
    ctx: Arc<RequestContext>,
    req: AddPartitionsToTxnRequest,
) -> Reply<AddPartitionsToTxnResponse> {
    let version = ctx.api_version;
    let requested: Vec<(TopicName, Vec<i32>)> = req
        .v3_and_below_topics
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
        let id = req.v3_and_below_transactional_id.0.to_string();
        Some(if id.is_empty() {
            ResponseError::InvalidRequest.code()
        } else {
            let broker = ctx.broker.clone();
            let (pid, epoch) = (req.v3_and_below_producer_id.0, req.v3_and_below_producer_epoch);
            let partitions: Vec<(String, i32)> = requested
                .iter()
                .flat_map(|(n, ps)| ps.iter().map(move |&p| (n.0.to_string(), p)))
                .collect();
            let added = storage_task::try_run("add_partitions_to_txn", move || {
                let now = crate::clock::now_ms();
                Ok::<_, BrokerError>(broker.txn.add_partitions(&broker.meta, &id, pid, epoch, &partitions, now)?)
            })
            .await;
            match added {
                Ok(()) => 0,
                Err(e) => {
                    tracing::debug!(error = %e, "AddPartitionsToTxn refused");
                    fenced_as_epoch(e.code(), version < 2)
                }
            }
        })
    };
    let code_for = |name: &TopicName, p: i32| match shared {
        Some(code) => code,
        None if unknown.iter().any(|(n, up)| n == name && *up == p) => {
            ResponseError::UnknownTopicOrPartition.code()
        }
        None => ResponseError::OperationNotAttempted.code(),
    };
    let results = requested
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
        .collect();
    Reply::Ready(AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results))
}

pub async fn end_txn(ctx: Arc<RequestContext>, req: EndTxnRequest) -> Reply<EndTxnResponse> {
    let version = ctx.api_version;
    let id = req.transactional_id.0.to_string();
    let outcome = if id.is_empty() {
        Err(BrokerError::InvalidRequest("The transactional id must not be empty".into()))
    } else {
        let broker = ctx.broker.clone();
        let (pid, epoch, commit) = (req.producer_id.0, req.producer_epoch, req.committed);
        let task_id = id.clone();
        storage_task::try_run("end_txn", move || {
            let now = crate::clock::now_ms();
            Ok::<_, BrokerError>(broker.txn.end_transaction(&broker.meta, &task_id, pid, epoch, commit, now)?)
        })
        .await
    };
    let code = match outcome {
        Ok(markers_due) => {
            if markers_due {
                // Answered once the Prepare state is stored, as Kafka does; the markers follow.
                ctx.broker.complete_transactions(vec![id]);
            }
            0
        }
        Err(e) => {
            tracing::debug!(error = %e, "EndTxn refused");
            fenced_as_epoch(e.code(), version < 2)
        }
    };
    Reply::Ready(EndTxnResponse::default().with_error_code(code))
}

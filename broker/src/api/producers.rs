//! InitProducerId (a producer id and epoch for an idempotent producer) and DescribeProducers.

use std::sync::Arc;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::*;

use super::{Reply, RequestContext};
use crate::error::BrokerError;
use crate::storage_task;

pub async fn init_producer_id(
    ctx: Arc<RequestContext>,
    req: InitProducerIdRequest,
) -> Reply<InitProducerIdResponse> {
    let outcome = match req.transactional_id.as_ref().map(|t| t.as_str()) {
        Some("") => Err(BrokerError::InvalidRequest(
            "The transactional id must not be empty".into(),
        )),
        // FindCoordinator answers COORDINATOR_NOT_AVAILABLE for transactional ids too, so a
        // client gets here only by skipping it.
        Some(_) => Err(BrokerError::CoordinatorNotAvailable(
            "Keel does not coordinate transactions yet".into(),
        )),
        None => {
            let broker = ctx.broker.clone();
            let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
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
                .with_error_code(e.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    })
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

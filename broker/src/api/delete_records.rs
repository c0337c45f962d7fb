//! DeleteRecords: moves a partition's log start offset forward (Kafka's
//! ReplicaManager.deleteRecords). Records below it become unreadable at once and the segments
//! wholly below it are deleted.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::*;

use super::{Reply, RequestContext};
use crate::storage_task;

pub async fn handle(ctx: Arc<RequestContext>, req: DeleteRecordsRequest) -> Reply<DeleteRecordsResponse> {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let (broker, topic, partition, offset) = (
                ctx.broker.clone(),
                t.name.0.to_string(),
                p.partition_index,
                p.offset,
            );
            // Deleting segment files and syncing the checkpoint are blocking file operations.
            let outcome = storage_task::try_run("delete_records", move || {
                broker.logs.delete_records(&topic, partition, offset)
            })
            .await;
            let r = DeleteRecordsPartitionResult::default().with_partition_index(partition);
            partitions.push(match outcome {
                Ok(low_watermark) => r.with_low_watermark(low_watermark),
                Err(e) => r.with_error_code(e.code()).with_low_watermark(-1),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    Reply::Ready(DeleteRecordsResponse::default().with_topics(topics))
}

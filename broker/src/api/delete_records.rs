//! DeleteRecords: moves a partition's log start offset forward (Kafka's
//! ReplicaManager.deleteRecords). Records below it become unreadable at once and the segments
//! wholly below it are deleted.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::*;

use crate::error::BrokerError;
use crate::server::api_table::Reply;
use crate::server::RequestContext;

/// The offset that means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(ctx: Arc<RequestContext>, req: DeleteRecordsRequest) -> Reply<DeleteRecordsResponse> {
    let broker = ctx.broker.clone();
    // Deleting segment files and syncing the checkpoint are blocking file operations.
    let topics = tokio::task::spawn_blocking(move || {
        req.topics
            .into_iter()
            .map(|t| {
                let topic = broker.logs.topic(t.name.0.as_str());
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let r = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                        let outcome = topic
                            .as_ref()
                            .and_then(|topic| Some((topic, topic.partition(p.partition_index)?)))
                            .ok_or(BrokerError::UnknownTopicOrPartition)
                            .and_then(|(topic, log)| {
                                if !broker.logs.allows_deletion(topic) {
                                    return Err(BrokerError::PolicyViolation(format!(
                                        "Records of partition {}-{} can not be deleted due to the configured policy",
                                        topic.name, p.partition_index
                                    )));
                                }
                                let offset = if p.offset == HIGH_WATERMARK {
                                    log.high_watermark()
                                } else {
                                    p.offset
                                };
                                Ok(log.delete_records_before(offset)?)
                            });
                        match outcome {
                            Ok(low_watermark) => r.with_low_watermark(low_watermark),
                            Err(e) => r.with_error_code(e.code()).with_low_watermark(-1),
                        }
                    })
                    .collect();
                DeleteRecordsTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    Reply::Ready(DeleteRecordsResponse::default().with_topics(topics))
}

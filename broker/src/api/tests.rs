//! Handlers against a real broker in-process, without the network: what the threading model
//! promises, shown where it could fail.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::consumer_group_heartbeat_request::ConsumerGroupHeartbeatRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use tokio_util::sync::CancellationToken;

use super::{str_bytes, Endpoint, Reply, ReplyBudget, RequestContext};
use crate::broker::Broker;
use crate::config::Config;
use crate::log::testutil::batch;

fn open_broker(dir: &std::path::Path) -> Arc<Broker> {
    let overrides = [
        format!("log.dirs={}", dir.display()),
        "listeners=PLAINTEXT://127.0.0.1:0".to_string(),
    ];
    let config = Config::load(None, Vec::new(), &overrides).unwrap();
    Broker::open(Arc::new(config), CancellationToken::new()).unwrap()
}

fn context(broker: &Arc<Broker>, api_key: ApiKey, api_version: i16) -> Arc<RequestContext> {
    Arc::new(RequestContext::new(
        broker.clone(),
        api_key,
        api_version,
        1,
        Some("test".into()),
        Arc::new(Endpoint {
            listener: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 9092,
        }),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 40000)),
        Arc::new(ReplyBudget::new(1 << 20)),
    ))
}

async fn resolve<R: Send + 'static>(reply: Reply<R>) -> R {
    match reply {
        Reply::Ready(r) => r,
        Reply::Deferred(f) => f.await,
        Reply::Nothing => panic!("expected a response"),
    }
}

fn produce_request(topic: &str) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(str_bytes(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch(3))))])])
}

fn fetch_request(topic: &str) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(str_bytes(topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])])
}

/// A KIP-848 member joining group `g`, subscribed to `topic`.
fn joining_heartbeat(topic: &str) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(str_bytes("g")))
        .with_member_id(str_bytes("m-1"))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_topic_partitions(Some(Vec::new()))
        .with_subscribed_topic_names(Some(vec![TopicName(str_bytes(topic))]))
}

/// One async worker thread: if a slow append ran on it, nothing else could run until it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_slow_disk_on_one_partition_stalls_neither_other_fetches_nor_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path());
    for topic in ["slow", "fast"] {
        broker.logs.create_topic(topic, 1, 1, Default::default()).unwrap();
    }
    let produced =
        resolve(super::produce::handle(context(&broker, ApiKey::Produce, 9), produce_request("fast")).await)
            .await;
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    broker
        .logs
        .partition("slow", 0)
        .unwrap()
        .make_disk_slow(Duration::from_secs(3));

    let started = std::time::Instant::now();
    let slow_produce = tokio::spawn({
        let ctx = context(&broker, ApiKey::Produce, 9);
        async move { resolve(super::produce::handle(ctx, produce_request("slow")).await).await }
    });
    // Let the slow append start on its storage thread.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let fetched = tokio::time::timeout(Duration::from_secs(1), async {
        resolve(super::fetch::handle(context(&broker, ApiKey::Fetch, 12), fetch_request("fast")).await).await
    })
    .await
    .expect("a fetch of another partition waited for the slow disk");
    let partition = &fetched.responses[0].partitions[0];
    assert_eq!((partition.error_code, partition.high_watermark), (0, 3));
    assert!(partition.records.as_ref().is_some_and(|r| !r.is_empty()));

    let heartbeat = joining_heartbeat("fast");
    let answered = tokio::time::timeout(Duration::from_secs(1), async {
        resolve(
            super::consumer_group::consumer_group_heartbeat(
                context(&broker, ApiKey::ConsumerGroupHeartbeat, 0),
                heartbeat,
            )
            .await,
        )
        .await
    })
    .await
    .expect("a group heartbeat waited for the slow disk");
    assert_eq!(answered.error_code, 0, "{:?}", answered.error_message);
    assert_eq!(answered.member_epoch, 1);

    // Had the slow append run on the one worker, nothing above could have run before it ended.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a fetch of another partition and a heartbeat waited {:?} for the slow disk",
        started.elapsed()
    );
    assert!(!slow_produce.is_finished(), "the slow disk was not slow");
    let slow = slow_produce.await.unwrap();
    assert_eq!(slow.responses[0].partition_responses[0].error_code, 0);
}

/// KAFKA_STORAGE_ERROR.
const KAFKA_STORAGE_ERROR: i16 = 56;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_answers_storage_errors_for_the_log_directory_and_groups_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path());
    for topic in ["doomed", "neighbour"] {
        broker.logs.create_topic(topic, 1, 1, Default::default()).unwrap();
    }
    broker.logs.partition("doomed", 0).unwrap().fail_fsyncs();
    let produce = |topic: &str| {
        let ctx = context(&broker, ApiKey::Produce, 9);
        let request = produce_request(topic).with_acks(-1);
        async move { resolve(super::produce::handle(ctx, request).await).await }
    };
    let failed = produce("doomed").await;
    assert_eq!(
        failed.responses[0].partition_responses[0].error_code,
        KAFKA_STORAGE_ERROR
    );
    assert!(broker.logs.health.is_offline());
    let neighbour = produce("neighbour").await;
    assert_eq!(
        neighbour.responses[0].partition_responses[0].error_code,
        KAFKA_STORAGE_ERROR
    );
    let fetched =
        resolve(super::fetch::handle(context(&broker, ApiKey::Fetch, 12), fetch_request("neighbour")).await)
            .await;
    assert_eq!(fetched.responses[0].partitions[0].error_code, KAFKA_STORAGE_ERROR);

    let heartbeat = joining_heartbeat("neighbour");
    let answered = resolve(
        super::consumer_group::consumer_group_heartbeat(
            context(&broker, ApiKey::ConsumerGroupHeartbeat, 0),
            heartbeat,
        )
        .await,
    )
    .await;
    assert_eq!(
        answered.error_code, 0,
        "groups keep serving: {:?}",
        answered.error_message
    );
}

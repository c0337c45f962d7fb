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

fn fetch_reads(broker: &Broker) -> u64 {
    broker.fetch_reads.load(std::sync::atomic::Ordering::Relaxed)
}

/// A caught-up consumer's long poll on `topic`: partition 0 from offset 0.
fn long_poll(broker: &Arc<Broker>, topic: &str, min_bytes: i32) -> tokio::task::JoinHandle<FetchResponse> {
    let req = fetch_request(topic)
        .with_max_wait_ms(3_000)
        .with_min_bytes(min_bytes);
    let ctx = context(broker, ApiKey::Fetch, 12);
    tokio::spawn(async move { resolve(super::fetch::handle(ctx, req).await).await })
}

async fn produce(broker: &Arc<Broker>, topic: &str) {
    let produced =
        resolve(super::produce::handle(context(broker, ApiKey::Produce, 9), produce_request(topic)).await)
            .await;
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
}

/// Kafka's delayed fetch watches the partitions it asked for: appends elsewhere neither wake
/// it nor make it read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_woken_by_its_own_partitions_only() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path());
    for topic in ["watched", "busy"] {
        broker.logs.create_topic(topic, 1, 1, Default::default()).unwrap();
    }
    let fetch = long_poll(&broker, "watched", 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fetch_reads(&broker), 1, "the first read found nothing");
    for _ in 0..20 {
        produce(&broker, "busy").await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!fetch.is_finished());
    assert_eq!(
        fetch_reads(&broker),
        1,
        "appends to another topic made the fetch read again"
    );

    let started = std::time::Instant::now();
    produce(&broker, "watched").await;
    let fetched = tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .expect("an append to the watched partition ends the long poll")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    let partition = &fetched.responses[0].partitions[0];
    assert_eq!((partition.error_code, partition.high_watermark), (0, 3));
    assert!(partition.records.as_ref().is_some_and(|r| !r.is_empty()));
    assert_eq!(fetch_reads(&broker), 2);
}

/// min_bytes is counted from the high watermark's position, without reading: batches that do
/// not reach it leave the fetch waiting and unread; the one that does ends it with everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_counts_min_bytes_from_positions_and_reads_once_they_are_reached() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path());
    broker.logs.create_topic("t", 1, 1, Default::default()).unwrap();
    let one_batch = batch(3).len() as i32;
    let fetch = long_poll(&broker, "t", one_batch * 5 / 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..2 {
        produce(&broker, "t").await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!fetch.is_finished(), "two batches are below min_bytes");
    assert_eq!(
        fetch_reads(&broker),
        1,
        "the fetch read again before min_bytes arrived"
    );

    produce(&broker, "t").await;
    let fetched = tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .expect("the third batch reaches min_bytes")
        .unwrap();
    let partition = &fetched.responses[0].partitions[0];
    assert_eq!((partition.error_code, partition.high_watermark), (0, 9));
    assert_eq!(
        partition.records.as_ref().map(|r| r.len() as i32),
        Some(3 * one_batch)
    );
    assert_eq!(fetch_reads(&broker), 2);
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

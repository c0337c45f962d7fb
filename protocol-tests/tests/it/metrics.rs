//! The Prometheus endpoint: consumer-group lag under kafka_exporter's names, right to the
//! offset.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::broker::TestBroker;
use crate::wire::{record_batch, WireClient};

pub(crate) fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: keel\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "metrics answer: {out}");
    out
}

/// The value of the series `name` whose labels include all of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub(crate) fn metrics_address(broker: &TestBroker) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = broker.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("metrics listener bound")) {
            let start = line.find("bound=").expect("bound= field") + 6;
            return line[start..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no metrics listener line in the broker log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn consumer_group_lag_is_reported_with_kafka_exporter_names() {
    let broker = TestBroker::builder()
        .with("metrics.listener", "127.0.0.1:0")
        .with("num.partitions", 2)
        .start();
    let mut wire = WireClient::connect(broker.bootstrap());
    let topic = TopicName(StrBytes::from_static_str("lagged"));
    // 10 records in partition 0, 4 in partition 1 (auto-created with num.partitions=2).
    for (partition, count) in [(0, 10), (1, 4)] {
        let records: Vec<(&[u8], &[u8])> = (0..count).map(|_| (&b"k"[..], &b"v"[..])).collect();
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic.clone())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(record_batch(&records, 1)))])]);
        let version = wire.version::<ProduceRequest>(12);
        let mut r = wire.call(&request, version);
        if r.responses[0].partition_responses[0].error_code == 3 {
            // Produce does not auto-create; Metadata does.
            let meta = MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic.clone())),
            ]));
            let v = wire.version::<MetadataRequest>(12);
            wire.call(&meta.with_allow_auto_topic_creation(true), v);
            r = wire.call(&request, version);
        }
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    // A consumer of group "billing" has committed 3 of partition 0 and all of partition 1.
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("billing")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic.clone())
            .with_partitions(vec![
                OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(3),
                OffsetCommitRequestPartition::default()
                    .with_partition_index(1)
                    .with_committed_offset(4),
            ])]);
    let version = wire.version::<OffsetCommitRequest>(8);
    let r = wire.call(&commit, version);
    assert!(r.topics[0].partitions.iter().all(|p| p.error_code == 0));

    let text = scrape(&metrics_address(&broker));
    let g = |p: &'static str| {
        [
            ("consumergroup", "billing"),
            ("topic", "lagged"),
            ("partition", p),
        ]
    };
    assert_eq!(
        value(&text, "kafka_consumergroup_lag", &g("0")),
        Some(7.0),
        "{text}"
    );
    assert_eq!(value(&text, "kafka_consumergroup_lag", &g("1")), Some(0.0));
    assert_eq!(
        value(&text, "kafka_consumergroup_current_offset", &g("0")),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            "kafka_consumergroup_lag_sum",
            &[("consumergroup", "billing"), ("topic", "lagged")]
        ),
        Some(7.0)
    );
    assert_eq!(
        value(
            &text,
            "kafka_topic_partition_current_offset",
            &[("topic", "lagged"), ("partition", "0")]
        ),
        Some(10.0)
    );

    // Lag follows new data without a new commit.
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic)
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(1)
                .with_records(Some(record_batch(&[(b"k", b"v"), (b"k", b"w")], 1)))])]);
    let version = wire.version::<ProduceRequest>(12);
    assert_eq!(
        wire.call(&request, version).responses[0].partition_responses[0].error_code,
        0
    );
    // acks=1 records count once their background fsync makes them readable (within
    // log.flush.background.interval.ms, 2 ms by default).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = scrape(&metrics_address(&broker));
        let lag = value(&text, "kafka_consumergroup_lag", &g("1"));
        if lag == Some(2.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lag {lag:?}, not 2, after 5 s:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_group_members_and_lag_follow_a_live_group() {
    let broker = TestBroker::builder()
        .with("metrics.listener", "127.0.0.1:0")
        .with("group.initial.rebalance.delay.ms", 0)
        .with("group.min.session.timeout.ms", 1000)
        .start();
    let bootstrap = broker.bootstrap().to_string();
    crate::clients::create_topic(&bootstrap, "live", 2).await;
    let a = crate::groups::GroupMember::start(&bootstrap, "live-group", "live", "a", &[]);
    let b = crate::groups::GroupMember::start(&bootstrap, "live-group", "live", "b", &[]);
    crate::groups::await_balanced(&[&a, &b], 2, Duration::from_secs(30)).await;
    let members = |text: &str| {
        value(
            text,
            "kafka_consumergroup_members",
            &[("consumergroup", "live-group")],
        )
    };
    assert_eq!(members(&scrape(&metrics_address(&broker))), Some(2.0));

    // Lag follows the group: what the members consumed and committed is no lag.
    let producer = crate::clients::producer(&bootstrap, &[]);
    crate::groups::produce_payloads(&producer, "live", 2, 0..40).await;
    let lag_sum = |text: &str| {
        value(
            text,
            "kafka_consumergroup_lag_sum",
            &[("consumergroup", "live-group"), ("topic", "live")],
        )
    };
    let committed = |text: &str| {
        ["0", "1"]
            .iter()
            .map(|p| {
                value(
                    text,
                    "kafka_consumergroup_current_offset",
                    &[
                        ("consumergroup", "live-group"),
                        ("topic", "live"),
                        ("partition", p),
                    ],
                )
                .unwrap_or(0.0)
            })
            .sum::<f64>()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(&metrics_address(&broker));
        if committed(&text) == 40.0 && lag_sum(&text) == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the members consumed 40 records: committed {}, lag {:?}",
            committed(&text),
            lag_sum(&text)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.close().await;
    // After the leave (and the rebalance it causes) one member remains.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = members(&scrape(&metrics_address(&broker)));
        if now == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members stayed at {now:?} after one left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.close().await;
    // Records nobody consumes are lag: 10 more, with the group's offsets where it left them.
    crate::groups::produce_payloads(&producer, "live", 2, 40..50).await;
    let text = scrape(&metrics_address(&broker));
    assert_eq!(committed(&text), 40.0);
    assert_eq!(lag_sum(&text), Some(10.0));
}

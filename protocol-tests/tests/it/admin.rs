//! Topic and config administration through librdkafka's AdminClient: CreateTopics, DeleteTopics,
//! CreatePartitions, DescribeConfigs, AlterConfigs; Metadata auto-creation; ListOffsets.

use std::time::Duration;

use rdkafka::admin::{AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::broker::TestBroker;
use crate::clients::{admin, admin_options, consumer, create_topic, producer, recent_base_timestamp};

/// Topic name → partition count, for every topic the broker lists in Metadata.
fn topics(bootstrap: &str) -> Vec<(String, usize)> {
    let metadata = consumer(bootstrap, &[])
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("Metadata request");
    metadata
        .topics()
        .iter()
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect()
}

fn partitions_of(bootstrap: &str, topic: &str) -> Option<usize> {
    topics(bootstrap)
        .into_iter()
        .find(|(name, _)| name == topic)
        .map(|(_, partitions)| partitions)
}

async fn produce_one(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    producer(bootstrap, &[])
        .send(
            FutureRecord::to(topic).partition(partition).key("k").payload("v"),
            Duration::from_secs(15),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce to {topic}/{partition}: {e}"))
        .offset
}

#[tokio::test]
async fn create_topics_rejects_an_existing_name() {
    let broker = TestBroker::start();
    create_topic(broker.bootstrap(), "twice", 2).await;
    let results = admin(broker.bootstrap())
        .create_topics(
            &[NewTopic::new("twice", 4, TopicReplication::Fixed(1))],
            &admin_options(),
        )
        .await
        .expect("CreateTopics request");
    assert_eq!(
        results,
        vec![Err(("twice".to_owned(), RDKafkaErrorCode::TopicAlreadyExists))]
    );
    assert_eq!(partitions_of(broker.bootstrap(), "twice"), Some(2));
}

#[tokio::test]
async fn create_partitions_adds_writable_partitions() {
    let broker = TestBroker::start();
    create_topic(broker.bootstrap(), "growing", 2).await;
    let results = admin(broker.bootstrap())
        .create_partitions(&[NewPartitions::new("growing", 5)], &admin_options())
        .await
        .expect("CreatePartitions request");
    assert_eq!(results, vec![Ok("growing".to_owned())]);
    assert_eq!(partitions_of(broker.bootstrap(), "growing"), Some(5));
    assert_eq!(produce_one(broker.bootstrap(), "growing", 4).await, 0);

    // Kafka never shrinks a topic.
    let shrink = admin(broker.bootstrap())
        .create_partitions(&[NewPartitions::new("growing", 3)], &admin_options())
        .await
        .expect("CreatePartitions request");
    assert_eq!(
        shrink,
        vec![Err(("growing".to_owned(), RDKafkaErrorCode::InvalidPartitions))]
    );
}

#[tokio::test]
async fn delete_topics_removes_the_topic_and_its_records() {
    let broker = TestBroker::start();
    create_topic(broker.bootstrap(), "doomed", 1).await;
    create_topic(broker.bootstrap(), "bystander", 1).await;
    produce_one(broker.bootstrap(), "doomed", 0).await;
    produce_one(broker.bootstrap(), "bystander", 0).await;

    let results = admin(broker.bootstrap())
        .delete_topics(&["doomed"], &admin_options())
        .await
        .expect("DeleteTopics request");
    assert_eq!(results, vec![Ok("doomed".to_owned())]);
    assert_eq!(partitions_of(broker.bootstrap(), "doomed"), None);
    assert_eq!(partitions_of(broker.bootstrap(), "bystander"), Some(1));

    // A topic created again under the same name starts empty.
    create_topic(broker.bootstrap(), "doomed", 1).await;
    assert_eq!(produce_one(broker.bootstrap(), "doomed", 0).await, 0);
}

#[tokio::test]
async fn metadata_auto_creates_topics_with_num_partitions_when_enabled() {
    let broker = TestBroker::builder()
        .with("auto.create.topics.enable", "true")
        .with("num.partitions", 3)
        .start();
    // librdkafka's producer asks Metadata to create topics it does not know.
    produce_one(broker.bootstrap(), "born-on-produce", 0).await;
    assert_eq!(partitions_of(broker.bootstrap(), "born-on-produce"), Some(3));
}

#[tokio::test]
async fn metadata_does_not_create_topics_when_auto_create_is_disabled() {
    let broker = TestBroker::builder()
        .with("auto.create.topics.enable", "false")
        .start();
    let producer = producer(broker.bootstrap(), &[("message.timeout.ms", "3000")]);
    let result = producer
        .send(
            FutureRecord::to("never-created").key("k").payload("v"),
            Duration::from_secs(5),
        )
        .await;
    assert!(result.is_err(), "produce to a missing topic succeeded");
    assert_eq!(partitions_of(broker.bootstrap(), "never-created"), None);
}

#[tokio::test]
async fn describe_configs_reports_and_alter_configs_changes_topic_configs() {
    let broker = TestBroker::start();
    let admin = admin(broker.bootstrap());
    let created = admin
        .create_topics(
            &[NewTopic::new("configured", 1, TopicReplication::Fixed(1)).set("retention.ms", "3600000")],
            &admin_options(),
        )
        .await
        .expect("CreateTopics request");
    assert_eq!(created, vec![Ok("configured".to_owned())]);

    let describe = || async {
        let mut results = admin
            .describe_configs(&[ResourceSpecifier::Topic("configured")], &admin_options())
            .await
            .expect("DescribeConfigs request");
        assert_eq!(results.len(), 1);
        results.remove(0).expect("DescribeConfigs for the topic")
    };
    let config = describe().await;
    let retention = config.get("retention.ms").expect("retention.ms is described");
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert!(!retention.is_default, "retention.ms was set at creation");
    assert!(
        config.get("cleanup.policy").is_some(),
        "topic defaults are described too"
    );

    let altered = admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("configured")).set("retention.ms", "7200000")],
            &admin_options(),
        )
        .await
        .expect("AlterConfigs request");
    assert_eq!(altered.len(), 1);
    assert!(altered[0].is_ok(), "AlterConfigs result: {:?}", altered[0]);
    let config = describe().await;
    assert_eq!(
        config.get("retention.ms").and_then(|e| e.value.as_deref()),
        Some("7200000")
    );
}

#[tokio::test]
async fn describe_configs_reports_broker_settings() {
    let broker = TestBroker::builder().with("num.partitions", 7).start();
    let metadata = consumer(broker.bootstrap(), &[])
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("Metadata request");
    let node_id = metadata.brokers()[0].id();
    let mut results = admin(broker.bootstrap())
        .describe_configs(&[ResourceSpecifier::Broker(node_id)], &admin_options())
        .await
        .expect("DescribeConfigs request");
    let config = results.remove(0).expect("DescribeConfigs for the broker");
    assert_eq!(
        config.get("num.partitions").and_then(|e| e.value.as_deref()),
        Some("7"),
        "an --override shows in DescribeConfigs"
    );
}

#[tokio::test]
async fn list_offsets_answers_earliest_latest_and_by_timestamp() {
    let broker = TestBroker::start();
    create_topic(broker.bootstrap(), "timeline", 1).await;
    let base = recent_base_timestamp();
    let producer = producer(broker.bootstrap(), &[]);
    for i in 0..10_i64 {
        producer
            .send(
                FutureRecord::<(), _>::to("timeline")
                    .partition(0)
                    .timestamp(base + i * 1_000)
                    .payload("tick"),
                Duration::from_secs(10),
            )
            .await
            .expect("produce timestamped record");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");

    let consumer = consumer(broker.bootstrap(), &[]);
    let watermarks = consumer
        .fetch_watermarks("timeline", 0, Duration::from_secs(10))
        .expect("ListOffsets earliest and latest");
    assert_eq!(watermarks, (0, 10));

    for (timestamp, expected) in [
        (base - 1, Offset::Offset(0)),
        (base + 3_500, Offset::Offset(4)),
        (base + 9_000, Offset::Offset(9)),
        (base + 9_001, Offset::End),
    ] {
        let mut query = TopicPartitionList::new();
        query
            .add_partition_offset("timeline", 0, Offset::Offset(timestamp))
            .expect("add partition");
        let answer = consumer
            .offsets_for_times(query, Duration::from_secs(10))
            .expect("ListOffsets by timestamp");
        let offset = answer
            .find_partition("timeline", 0)
            .expect("partition in the answer")
            .offset();
        assert_eq!(
            offset,
            expected,
            "first offset at or after timestamp base+{}",
            timestamp - base
        );
    }
}

#[tokio::test]
async fn delete_records_moves_the_low_watermark_durably() {
    let mut broker = TestBroker::start();
    create_topic(broker.bootstrap(), "trimmed", 2).await;
    for partition in 0..2 {
        for _ in 0..10 {
            produce_one(broker.bootstrap(), "trimmed", partition).await;
        }
    }
    let mut compacted = NewTopic::new("compacted-only", 1, TopicReplication::Fixed(1));
    compacted = compacted.set("cleanup.policy", "compact");
    let created = admin(broker.bootstrap())
        .create_topics(&[compacted], &admin_options())
        .await
        .expect("CreateTopics request");
    assert!(created[0].is_ok(), "{created:?}");

    let mut request = TopicPartitionList::new();
    request
        .add_partition_offset("trimmed", 0, Offset::Offset(4))
        .unwrap();
    request.add_partition_offset("trimmed", 1, Offset::End).unwrap();
    request
        .add_partition_offset("compacted-only", 0, Offset::Offset(0))
        .unwrap();
    request
        .add_partition_offset("no-such-topic", 0, Offset::Offset(0))
        .unwrap();
    let deleted = admin(broker.bootstrap())
        .delete_records(&request, &admin_options())
        .await
        .expect("DeleteRecords request");
    let outcome = |topic: &str, partition: i32| {
        let e = deleted
            .find_partition(topic, partition)
            .expect("partition answered");
        (e.offset(), e.error().err().map(|e| e.rdkafka_error_code()))
    };
    assert_eq!(outcome("trimmed", 0), (Offset::Offset(4), None));
    assert_eq!(
        outcome("trimmed", 1),
        (Offset::Offset(10), None),
        "End is the high watermark"
    );
    assert_eq!(
        outcome("compacted-only", 0).1,
        Some(Some(RDKafkaErrorCode::PolicyViolation))
    );
    assert_eq!(
        outcome("no-such-topic", 0).1,
        Some(Some(RDKafkaErrorCode::UnknownTopicOrPartition))
    );
    let mut beyond = TopicPartitionList::new();
    beyond
        .add_partition_offset("trimmed", 0, Offset::Offset(11))
        .unwrap();
    let deleted = admin(broker.bootstrap())
        .delete_records(&beyond, &admin_options())
        .await
        .expect("DeleteRecords request");
    assert_eq!(
        deleted
            .find_partition("trimmed", 0)
            .unwrap()
            .error()
            .err()
            .map(|e| e.rdkafka_error_code()),
        Some(Some(RDKafkaErrorCode::OffsetOutOfRange))
    );

    broker.restart();
    let watermarks = |partition| {
        consumer(broker.bootstrap(), &[])
            .fetch_watermarks("trimmed", partition, Duration::from_secs(10))
            .expect("ListOffsets")
    };
    assert_eq!(watermarks(0), (4, 10), "the low watermark survives a restart");
    assert_eq!(watermarks(1), (10, 10));
    // A consumer starting from the beginning starts at the low watermark.
    let reader = consumer(broker.bootstrap(), &[]);
    crate::clients::assign(&reader, "trimmed", 1, Offset::Beginning);
    let first = tokio::time::timeout(Duration::from_secs(15), reader.recv())
        .await
        .expect("a record within 15 s")
        .expect("consume");
    assert_eq!(rdkafka::Message::offset(&first), 4);
}

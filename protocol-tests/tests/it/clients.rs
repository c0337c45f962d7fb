//! rdkafka (librdkafka) clients set up the way the tests need them, and records to compare.
//!
//! Group APIs are not part of the broker yet, so consumers read with `assign()` and never
//! subscribe or commit. librdkafka wants a `group.id` string anyway; it is set and never used.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, Timestamp, TopicPartitionList};

/// One record as produced or as fetched, compared field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    pub partition: i32,
    /// Assigned by the broker: filled in from the delivery report after producing.
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: i64,
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("create admin client")
}

pub fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)))
}

/// Creates a topic with replication factor 1 and asserts the broker says it succeeded.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let results = admin(bootstrap)
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &admin_options(),
        )
        .await
        .expect("CreateTopics request");
    assert_eq!(results, vec![Ok(topic.to_owned())], "CreateTopics {topic}");
}

/// A producer with acks=all (the broker answers after fsync) and no idempotence (InitProducerId
/// is not part of the broker yet). `extra` overrides any setting.
pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .set("queue.buffering.max.messages", "1000000");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config.create().expect("create producer")
}

/// A consumer that verifies the CRC of every batch it fetches.
pub fn consumer(bootstrap: &str, extra: &[(&str, &str)]) -> StreamConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "keel-protocol-tests-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("check.crcs", "true");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config.create().expect("create consumer")
}

/// Assigns partitions `0..partitions` of `topic`, each from `offset`.
pub fn assign(consumer: &StreamConsumer, topic: &str, partitions: i32, offset: Offset) {
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(topic, partition, offset)
            .expect("add partition to assignment");
    }
    consumer.assign(&list).expect("assign partitions");
}

/// Milliseconds since the epoch, an hour ago: explicit timestamps that retention keeps.
pub fn recent_base_timestamp() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(now.as_millis()).expect("millis fit in i64") - 3_600_000
}

/// `count` records spread round-robin over `partitions`, with keys (some null), headers (some
/// with null values, some records without any), payloads of varied size and content (some null)
/// and explicit, increasing timestamps from `base_timestamp`.
pub fn generate_records(count: usize, partitions: i32, base_timestamp: i64) -> Vec<TestRecord> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..count)
        .map(|i| {
            let key = (i % 50 != 49).then(|| format!("key-{i}").into_bytes());
            let payload = (i % 1000 != 999).then(|| {
                let mut payload = format!("value-{i}-").repeat(1 + i % 7).into_bytes();
                // Incompressible tail, so compressed batches are not trivially small.
                payload.extend((0..i % 64).map(|_| next_random_byte(&mut state)));
                payload
            });
            let mut headers = Vec::new();
            if i % 25 != 0 {
                headers.push(("idx".to_owned(), Some(i.to_be_bytes().to_vec())));
                headers.push(("origin".to_owned(), Some(b"keel-protocol-tests".to_vec())));
                if i % 10 == 3 {
                    headers.push(("nullable".to_owned(), None));
                }
            }
            TestRecord {
                partition: i32::try_from(i).expect("index fits in i32") % partitions,
                offset: -1,
                key,
                payload,
                headers,
                timestamp: base_timestamp + i64::try_from(i).expect("index fits in i64"),
            }
        })
        .collect()
}

fn next_random_byte(state: &mut u64) -> u8 {
    // xorshift64: deterministic, good enough to defeat compression.
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    state.to_le_bytes()[0]
}

/// Produces every record to its partition, fills in the offsets from the delivery reports and
/// fails the test on any delivery error.
pub async fn produce_all(producer: &FutureProducer, topic: &str, records: &mut [TestRecord]) {
    let mut deliveries = Vec::with_capacity(records.len());
    for record in records.iter() {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        let mut future_record = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(record.partition)
            .timestamp(record.timestamp)
            .headers(headers);
        if let Some(key) = &record.key {
            future_record = future_record.key(key.as_slice());
        }
        if let Some(payload) = &record.payload {
            future_record = future_record.payload(payload.as_slice());
        }
        loop {
            match producer.send_result(future_record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    future_record = returned;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => panic!("enqueue record for {topic}: {e}"),
            }
        }
    }
    for (record, delivery) in records.iter_mut().zip(deliveries) {
        let delivery = delivery
            .await
            .expect("producer dropped a delivery report")
            .unwrap_or_else(|(e, _)| panic!("delivery to {topic}/{}: {e}", record.partition));
        assert_eq!(delivery.partition, record.partition);
        record.offset = delivery.offset;
    }
    producer.flush(Duration::from_secs(30)).expect("flush producer");
}

/// Converts a fetched message into a `TestRecord`.
pub fn to_test_record(message: &BorrowedMessage<'_>) -> TestRecord {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    let timestamp = match message.timestamp() {
        Timestamp::CreateTime(ts) => ts,
        other => panic!("expected a CreateTime timestamp, got {other:?}"),
    };
    TestRecord {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        headers,
        timestamp,
    }
}

/// Reads until `expected` records arrived (or `timeout` passed), then listens a little longer so
/// that duplicates or extra records show up too. Returns the records in arrival order.
pub async fn consume(consumer: &StreamConsumer, expected: usize, timeout: Duration) -> Vec<TestRecord> {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::with_capacity(expected);
    while received.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(message)) => received.push(to_test_record(&message)),
            Ok(Err(e)) => panic!("consumer error after {} records: {e}", received.len()),
            Err(_) => panic!(
                "received {} of {expected} records within {timeout:?}",
                received.len()
            ),
        }
    }
    while let Ok(message) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
        received.push(to_test_record(&message.expect("consumer error")));
    }
    received
}

/// Records grouped by partition, each partition in the order given.
pub fn by_partition(records: &[TestRecord]) -> BTreeMap<i32, Vec<TestRecord>> {
    let mut partitions: BTreeMap<i32, Vec<TestRecord>> = BTreeMap::new();
    for record in records {
        partitions
            .entry(record.partition)
            .or_default()
            .push(record.clone());
    }
    partitions
}

/// Asserts that each partition holds exactly the produced records, in produced order, at offsets
/// 0, 1, 2, … of a topic that was empty. Reports the first difference, not 100 000 records.
pub fn assert_same_records(produced: &[TestRecord], consumed: &[TestRecord]) {
    let produced = by_partition(produced);
    let consumed = by_partition(consumed);
    assert_eq!(
        produced.keys().collect::<Vec<_>>(),
        consumed.keys().collect::<Vec<_>>(),
        "partitions with records"
    );
    for (partition, sent) in &produced {
        for (i, record) in sent.iter().enumerate() {
            assert_eq!(
                record.offset,
                i64::try_from(i).expect("fits"),
                "partition {partition}: the {i}th produced record got offset {}",
                record.offset
            );
        }
        let got = &consumed[partition];
        if let Some(i) = (0..sent.len().min(got.len())).find(|&i| sent[i] != got[i]) {
            panic!(
                "partition {partition}: record {i} differs\n produced: {:?}\n consumed: {:?}",
                sent[i], got[i]
            );
        }
        assert_eq!(
            got.len(),
            sent.len(),
            "partition {partition}: consumed count differs from produced count"
        );
    }
}

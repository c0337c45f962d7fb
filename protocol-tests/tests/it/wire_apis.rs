//! Kafka semantics checked at the wire, where client libraries hide them: exact ListOffsets
//! answers, OffsetForLeaderEpoch, topic ids, LogAppendTime, size and name limits.

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::broker::TestBroker;
use crate::wire::{fetch_partition, record_batch, WireClient, BATCH_ATTRIBUTES_OFFSET};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

pub(crate) fn create(
    wire: &mut WireClient,
    topic: &str,
    partitions: i32,
    rf: i16,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> i16 {
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_validate_only(validate_only)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
            .with_configs(configs)]);
    let version = wire.version::<CreateTopicsRequest>(7);
    wire.call(&request, version).topics[0].error_code
}

fn produce(wire: &mut WireClient, topic: &str, batch: Bytes) -> PartitionProduceResponse {
    produce_with_acks(wire, topic, batch, -1)
}

fn produce_with_acks(
    wire: &mut WireClient,
    topic: &str,
    batch: Bytes,
    acks: i16,
) -> PartitionProduceResponse {
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let version = wire.version::<ProduceRequest>(12);
    wire.call(&request, version)
        .responses
        .remove(0)
        .partition_responses
        .remove(0)
}

fn list_offset(wire: &mut WireClient, topic: &str, timestamp: i64) -> (i16, i64, i64) {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let version = wire.version::<ListOffsetsRequest>(9);
    let p = wire.call(&request, version).topics.remove(0).partitions.remove(0);
    (p.error_code, p.offset, p.timestamp)
}

#[test]
fn list_offsets_finds_the_exact_record_by_timestamp_and_max_timestamp() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "times", 1, 1, &[], false), 0);
    // Three batches of three records; records in a batch are 1 ms apart.
    for ts in [1_000_000, 3_000_000, 2_000_000] {
        let r = produce(
            &mut wire,
            "times",
            record_batch(&[(b"k", b"a"), (b"k", b"b"), (b"k", b"c")], ts),
        );
        assert_eq!(r.error_code, 0);
    }
    // The first record at or after 3_000_001 is the second record of the second batch.
    assert_eq!(list_offset(&mut wire, "times", 3_000_001), (0, 4, 3_000_001));
    assert_eq!(list_offset(&mut wire, "times", 1_500_000), (0, 3, 3_000_000));
    assert_eq!(list_offset(&mut wire, "times", 0), (0, 0, 1_000_000));
    // Nothing at or after: offset -1.
    assert_eq!(list_offset(&mut wire, "times", 9_000_000).1, -1);
    // -3 (MAX_TIMESTAMP): the record carrying the largest timestamp.
    assert_eq!(list_offset(&mut wire, "times", -3), (0, 5, 3_000_002));
    assert_eq!(list_offset(&mut wire, "times", -2).1, 0);
    assert_eq!(list_offset(&mut wire, "times", -1).1, 9);
    assert_eq!(list_offset(&mut wire, "no-such-topic", -1).0, 3);
}

#[test]
fn list_offsets_by_timestamp_skips_records_that_delete_records_removed() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "trimmed-times", 1, 1, &[], false), 0);
    // Offsets 0-3 in one batch whose late records come first; offset 4 alone, later still.
    let first = batch_of(&[(None, 5_000), (None, 5_000), (None, 1_000), (None, 1_000)]);
    assert_eq!(produce(&mut wire, "trimmed-times", first).error_code, 0);
    assert_eq!(
        produce(&mut wire, "trimmed-times", record_batch(&[(b"k", b"v")], 6_000)).error_code,
        0
    );
    assert_eq!(list_offset(&mut wire, "trimmed-times", 4_000), (0, 0, 5_000));

    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(name("trimmed-times"))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(2)])]);
    let version = wire.version::<DeleteRecordsRequest>(2);
    let deleted = wire.call(&request, version).topics.remove(0).partitions.remove(0);
    assert_eq!((deleted.error_code, deleted.low_watermark), (0, 2));

    // The first batch still reaches 5_000, but only through deleted records: Kafka searches
    // on and answers with the next record at or after the timestamp.
    assert_eq!(list_offset(&mut wire, "trimmed-times", 4_000), (0, 4, 6_000));
    // Live records of the straddling batch still answer for timestamps they reach.
    assert_eq!(list_offset(&mut wire, "trimmed-times", 500), (0, 2, 1_000));
    assert_eq!(list_offset(&mut wire, "trimmed-times", 6_001).1, -1);
}

#[test]
fn offset_for_leader_epoch_ends_the_single_epoch_at_the_log_end() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "epochs", 1, 1, &[], false), 0);
    produce(
        &mut wire,
        "epochs",
        record_batch(&[(b"k", b"v"), (b"k", b"w")], 1),
    );
    let ask = |wire: &mut WireClient, topic: &str, epoch: i32| {
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(-1)
                    .with_leader_epoch(epoch)])]);
        let version = wire.version::<OffsetForLeaderEpochRequest>(4);
        let p = wire.call(&request, version).topics.remove(0).partitions.remove(0);
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    assert_eq!(ask(&mut wire, "epochs", 0), (0, 0, 2));
    // An epoch that never existed is undefined, as in Kafka's leader epoch cache.
    assert_eq!(ask(&mut wire, "epochs", 3), (0, -1, -1));
    assert_eq!(ask(&mut wire, "missing", 0).0, 3);
    // The batches carry the leader epoch the clients' truncation checks compare against.
    let stored = fetch_partition(&mut wire, "epochs", 0, 0, 0);
    let records = stored.records.expect("records");
    assert_eq!(i32::from_be_bytes(records[12..16].try_into().unwrap()), 0);
}

#[test]
fn topics_are_deleted_by_id_and_unknown_ids_are_refused() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "by-id", 2, 1, &[], false), 0);
    let version = wire.version::<MetadataRequest>(12);
    let topic = MetadataRequestTopic::default().with_name(Some(name("by-id")));
    let meta = wire.call(
        &MetadataRequest::default().with_topics(Some(vec![topic])),
        version,
    );
    let id = meta.topics[0].topic_id;
    assert!(!id.is_nil(), "Metadata v10+ carries the topic id");
    let delete = |wire: &mut WireClient, id| {
        let r =
            DeleteTopicsRequest::default().with_topics(vec![DeleteTopicState::default().with_topic_id(id)]);
        let version = wire.version::<DeleteTopicsRequest>(6);
        assert_eq!(version, 6);
        wire.call(&r, version).responses.remove(0)
    };
    let r = delete(&mut wire, id);
    assert_eq!(
        (r.error_code, r.name.map(|n| n.0.to_string())),
        (0, Some("by-id".to_string()))
    );
    // UNKNOWN_TOPIC_ID (100) once it is gone.
    assert_eq!(delete(&mut wire, id).error_code, 100);
    assert!(
        !broker.data_dir().join("by-id-0").exists(),
        "partition directories are removed"
    );
}

#[test]
fn log_append_time_topics_stamp_batches_with_the_broker_clock() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(
        create(
            &mut wire,
            "stamped",
            1,
            1,
            &[("message.timestamp.type", "LogAppendTime")],
            false
        ),
        0
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let r = produce(&mut wire, "stamped", record_batch(&[(b"k", b"old")], 42));
    assert_eq!(r.error_code, 0);
    assert!(
        r.log_append_time_ms >= before,
        "the produce response carries the append time"
    );
    let stored = fetch_partition(&mut wire, "stamped", 0, 0, 0)
        .records
        .expect("records");
    let attributes = i16::from_be_bytes([
        stored[BATCH_ATTRIBUTES_OFFSET],
        stored[BATCH_ATTRIBUTES_OFFSET + 1],
    ]);
    assert_ne!(attributes & 0x08, 0, "the timestamp type bit says LogAppendTime");
    let max_timestamp = i64::from_be_bytes(stored[35..43].try_into().unwrap());
    assert_eq!(max_timestamp, r.log_append_time_ms);
    // The rewritten batch still passes its CRC (librdkafka and Java check it).
    let crc = u32::from_be_bytes(stored[17..21].try_into().unwrap());
    assert_eq!(crc, crc32c(&stored[21..]));
}

/// CRC-32C (Castagnoli), bitwise: small and independent of the broker's implementation.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn create_topics_enforces_names_replication_and_validate_only() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    // INVALID_TOPIC_EXCEPTION (17) for illegal names; INVALID_REPLICATION_FACTOR (38) for more
    // replicas than brokers; INVALID_CONFIG (40) for unknown settings.
    assert_eq!(create(&mut wire, "bad/name", 1, 1, &[], false), 17);
    assert_eq!(create(&mut wire, &"x".repeat(250), 1, 1, &[], false), 17);
    assert_eq!(create(&mut wire, "three", 1, 3, &[], false), 38);
    assert_eq!(
        create(&mut wire, "cfg", 1, 1, &[("no.such.setting", "1")], false),
        40
    );
    assert_eq!(create(&mut wire, "a.b", 1, 1, &[], false), 0);
    assert_eq!(
        create(&mut wire, "a_b", 1, 1, &[], false),
        17,
        "'.' and '_' collide"
    );
    assert_eq!(create(&mut wire, "dry", 4, 1, &[], true), 0);
    assert_eq!(
        create(&mut wire, "dry", 4, 1, &[], false),
        0,
        "validate_only created nothing"
    );
}

#[test]
fn a_batch_over_max_message_bytes_is_refused_with_message_too_large() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(
        create(&mut wire, "small", 1, 1, &[("max.message.bytes", "200")], false),
        0
    );
    let big = vec![7u8; 500];
    let r = produce(&mut wire, "small", record_batch(&[(b"k", &big)], 1));
    assert_eq!(r.error_code, 10, "MESSAGE_TOO_LARGE");
    let r = produce(&mut wire, "small", record_batch(&[(b"k", b"fits")], 1));
    assert_eq!(
        (r.error_code, r.base_offset),
        (0, 0),
        "nothing of the refused batch was stored"
    );
}

#[test]
fn authorized_operations_are_reported_only_when_asked_and_then_all_of_them() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "ops", 1, 1, &[], false), 0);
    let version = wire.version::<MetadataRequest>(12);
    let ask = |wire: &mut WireClient, include: bool| {
        let topic = MetadataRequestTopic::default().with_name(Some(name("ops")));
        let r = wire.call(
            &MetadataRequest::default()
                .with_topics(Some(vec![topic]))
                .with_include_topic_authorized_operations(include),
            version,
        );
        r.topics[0].topic_authorized_operations
    };
    // Without an authorizer everything a topic supports is allowed: READ, WRITE, CREATE,
    // DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS (Kafka's 3576).
    assert_eq!(ask(&mut wire, true), 3576);
    assert_eq!(ask(&mut wire, false), i32::MIN);
    let version = wire.version::<DescribeClusterRequest>(1);
    let r = wire.call(
        &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
        version,
    );
    assert_eq!(r.cluster_authorized_operations, 8096);
    let r = wire.call(&DescribeClusterRequest::default(), version);
    assert_eq!(r.cluster_authorized_operations, i32::MIN);
}

/// One uncompressed batch whose records have the given keys (None = no key), all stamped 1.
fn batch_with_keys(keys: &[Option<&[u8]>]) -> Bytes {
    let records: Vec<_> = keys.iter().map(|&key| (key, 1)).collect();
    batch_of(&records)
}

/// One uncompressed batch of records with the given keys (None = no key) and CreateTime
/// timestamps, in order.
fn batch_of(records: &[(Option<&[u8]>, i64)]) -> Bytes {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, &(key, timestamp))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp,
            key: key.map(Bytes::copy_from_slice),
            value: Some(Bytes::from_static(b"v")),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

#[test]
fn a_compacted_topic_refuses_a_batch_holding_a_keyless_record() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(
        create(
            &mut wire,
            "compacted",
            1,
            1,
            &[("cleanup.policy", "compact")],
            false
        ),
        0
    );
    let r = produce(
        &mut wire,
        "compacted",
        batch_with_keys(&[Some(b"a"), None, Some(b"c"), None]),
    );
    // INVALID_RECORD (87) for the whole batch, naming each keyless record.
    assert_eq!(r.error_code, 87);
    let indexes: Vec<i32> = r.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(indexes, vec![1, 3]);
    let r = produce(&mut wire, "compacted", batch_with_keys(&[Some(b"a"), Some(b"b")]));
    assert_eq!(
        (r.error_code, r.base_offset),
        (0, 0),
        "nothing of the refused batch was stored"
    );
    // A topic that is not compacted takes keyless records.
    assert_eq!(create(&mut wire, "plain", 1, 1, &[], false), 0);
    assert_eq!(
        produce(&mut wire, "plain", batch_with_keys(&[None])).error_code,
        0
    );
}

#[test]
fn describe_topic_partitions_pages_through_partitions_with_a_cursor() {
    use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "paged", 5, 1, &[], false), 0);
    assert_eq!(create(&mut wire, "small", 1, 1, &[], false), 0);
    let request = DescribeTopicPartitionsRequest::default()
        .with_topics(vec![
            TopicRequest::default().with_name(name("paged")),
            TopicRequest::default().with_name(name("small")),
        ])
        .with_response_partition_limit(3);
    let first = wire.call(&request, 0);
    assert_eq!(first.topics.len(), 1);
    assert_eq!(
        first.topics[0]
            .partitions
            .iter()
            .map(|p| p.partition_index)
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(first.topics[0].topic_authorized_operations, 3576);
    let cursor = first.next_cursor.expect("a cursor to the rest");
    assert_eq!(
        (cursor.topic_name.0.as_str(), cursor.partition_index),
        ("paged", 3)
    );
    let rest = wire.call(
        &request.with_cursor(Some(
            describe_topic_partitions_request::Cursor::default()
                .with_topic_name(cursor.topic_name)
                .with_partition_index(cursor.partition_index),
        )),
        0,
    );
    let seen: Vec<(String, i32)> = rest
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.clone().unwrap().0.to_string(), p.partition_index))
        })
        .collect();
    assert_eq!(
        seen,
        vec![("paged".into(), 3), ("paged".into(), 4), ("small".into(), 0)]
    );
    assert!(rest.next_cursor.is_none());
    let unknown = wire.call(
        &DescribeTopicPartitionsRequest::default()
            .with_topics(vec![TopicRequest::default().with_name(name("nope"))])
            .with_response_partition_limit(10),
        0,
    );
    assert_eq!(unknown.topics[0].error_code, 3);
}

#[test]
fn incremental_alter_configs_sets_appends_and_deletes_topic_settings_durably() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let mut broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(
        create(&mut wire, "tuned", 1, 1, &[("retention.ms", "1000")], false),
        0
    );
    let alter = |wire: &mut WireClient, changes: &[(&str, i8, Option<&str>)]| {
        let configs = changes
            .iter()
            .map(|(k, op, v)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.to_string()))
                    .with_config_operation(*op)
                    .with_value(v.map(|v| StrBytes::from_string(v.to_string())))
            })
            .collect();
        let r =
            IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("tuned"))
                .with_configs(configs)]);
        wire.call(&r, 1).responses[0].error_code
    };
    // SET (0), APPEND (2) to a list, DELETE (1); an unknown setting is INVALID_CONFIG (40).
    assert_eq!(
        alter(
            &mut wire,
            &[
                ("segment.ms", 0, Some("60000")),
                ("cleanup.policy", 2, Some("compact"))
            ]
        ),
        0
    );
    assert_eq!(alter(&mut wire, &[("retention.ms", 1, None)]), 0);
    assert_eq!(alter(&mut wire, &[("no.such.setting", 0, Some("1"))]), 40);
    broker.restart();
    let mut wire = WireClient::connect(broker.bootstrap());
    let r = wire.call(
        &DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("tuned"))]),
        4,
    );
    let value = |name: &str| {
        r.results[0]
            .configs
            .iter()
            .find(|c| c.name.as_str() == name)
            .map(|c| (c.value.clone().unwrap().to_string(), c.config_source))
    };
    // Overrides are DYNAMIC_TOPIC_CONFIG (1); a deleted override falls back to the default (5).
    assert_eq!(value("segment.ms"), Some(("60000".to_string(), 1)));
    assert_eq!(value("cleanup.policy"), Some(("delete,compact".to_string(), 1)));
    assert_eq!(value("retention.ms"), Some(("604800000".to_string(), 5)));
}

/// `log.flush.before.visible` (the default): an acks=1 record is acknowledged at once but is
/// readable, and counted by ListOffsets LATEST, only after its background fsync; a fetch
/// long-polling for it is woken by that fsync, not by its own timeout. The interval is set long
/// here so the gap can be seen.
#[test]
fn acks_1_records_become_readable_when_their_background_fsync_makes_them_durable() {
    let broker = TestBroker::builder()
        .with("log.flush.background.interval.ms", 1500)
        .start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "visible", 1, 1, &[], false), 0);
    let produced = std::time::Instant::now();
    let r = produce_with_acks(&mut wire, "visible", record_batch(&[(b"k", b"v")], 1_000), 1);
    assert_eq!((r.error_code, r.base_offset), (0, 0));
    assert!(
        produced.elapsed() < std::time::Duration::from_millis(1000),
        "acks=1 does not wait for the fsync"
    );

    // Not durable yet: not readable, not counted.
    let data = fetch_partition(&mut wire, "visible", 0, 0, 0);
    assert_eq!(data.high_watermark, 0);
    assert!(data.records.as_ref().is_none_or(|r| r.is_empty()));
    assert_eq!(list_offset(&mut wire, "visible", -1).1, 0);

    // A fetch waiting up to 10 s returns once the background fsync ran (1.5 s after the append).
    let data = fetch_partition(&mut wire, "visible", 0, 0, 10_000);
    let waited = produced.elapsed();
    assert_eq!(data.high_watermark, 1);
    assert!(data.records.as_ref().is_some_and(|r| !r.is_empty()));
    assert!(
        waited >= std::time::Duration::from_millis(1400) && waited < std::time::Duration::from_secs(8),
        "readable after {waited:?}"
    );
    assert_eq!(list_offset(&mut wire, "visible", -1).1, 1);
}

/// With `log.flush.before.visible=false` (Kafka's behaviour) an acks=1 record is readable as
/// soon as it is acknowledged.
#[test]
fn without_the_visibility_policy_acks_1_records_are_readable_at_once() {
    let broker = TestBroker::builder()
        .with("log.flush.before.visible", false)
        .with("log.flush.background.interval.ms", 60_000)
        .start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "at-once", 1, 1, &[], false), 0);
    let r = produce_with_acks(&mut wire, "at-once", record_batch(&[(b"k", b"v")], 1_000), 1);
    assert_eq!(r.error_code, 0);
    let data = fetch_partition(&mut wire, "at-once", 0, 0, 0);
    assert_eq!(data.high_watermark, 1);
    assert!(data.records.as_ref().is_some_and(|r| !r.is_empty()));
}

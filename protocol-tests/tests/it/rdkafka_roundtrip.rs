//! Produce and consume through librdkafka: every record comes back byte-identical, per partition
//! in order, for each compression codec; compressed batches are stored as produced; fetches
//! long-poll.

use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use rdkafka::producer::FutureRecord;
use rdkafka::Offset;

use crate::broker::TestBroker;
use crate::clients::{
    assert_same_records, assign, by_partition, consume, consumer, create_topic, generate_records,
    produce_all, producer, recent_base_timestamp, to_test_record,
};
use crate::wire::{
    batch_codecs, compressed_record_batch, decode_response, fetch_partition, fetch_request, WireClient,
};

const RECORDS: usize = 100_000;
/// Api key of FindCoordinator.
const FIND_COORDINATOR: i16 = 10;
const PARTITIONS: i32 = 3;

/// Produces `RECORDS` records with `compression` (librdkafka's name) to a 3-partition topic,
/// reads them all back from the beginning, and checks that the stored batches carry `codec`.
async fn roundtrip(compression: &str, codec: i16) {
    let broker = TestBroker::start();
    let topic = format!("roundtrip-{compression}");
    create_topic(broker.bootstrap(), &topic, PARTITIONS).await;

    let mut records = generate_records(RECORDS, PARTITIONS, recent_base_timestamp());
    let producer = producer(broker.bootstrap(), &[("compression.type", compression)]);
    produce_all(&producer, &topic, &mut records).await;

    let consumer = consumer(broker.bootstrap(), &[]);
    assign(&consumer, &topic, PARTITIONS, Offset::Beginning);
    let consumed = consume(&consumer, RECORDS, Duration::from_secs(120)).await;
    assert_same_records(&records, &consumed);

    // The broker keeps batches as the producer compressed them (it does not recompress).
    let mut wire = WireClient::connect(broker.bootstrap());
    let data = fetch_partition(&mut wire, &topic, 0, 0, 0);
    assert_eq!(data.error_code, 0, "Fetch partition error code");
    let codecs = batch_codecs(data.records.as_deref().unwrap_or_default());
    assert!(
        !codecs.is_empty(),
        "fetch from offset 0 returned no complete batch"
    );
    if codec == 3 && codecs.iter().all(|&c| c == 0) && !wire.supports(FIND_COORDINATOR) {
        panic!(
            "librdkafka sent lz4 batches uncompressed: it enables lz4 only when the broker \
             announces FindCoordinator in ApiVersions (librdkafka's RD_KAFKA_FEATURE_LZ4)"
        );
    }
    // librdkafka sends a batch uncompressed when compressing would not make it smaller (a
    // small first batch, say), so codec 0 may appear; any other codec means the broker
    // recompressed, and at least one batch must carry the producer's codec.
    assert!(
        codecs.iter().all(|&c| c == codec || c == 0) && codecs.contains(&codec),
        "stored batches must keep codec {codec} ({compression}), got {codecs:?}"
    );
}

#[tokio::test]
async fn uncompressed_records_round_trip_identically() {
    roundtrip("none", 0).await;
}

#[tokio::test]
async fn gzip_records_round_trip_identically_and_stay_gzip() {
    roundtrip("gzip", 1).await;
}

#[tokio::test]
async fn snappy_records_round_trip_identically_and_stay_snappy() {
    roundtrip("snappy", 2).await;
}

#[tokio::test]
async fn lz4_records_round_trip_identically_and_stay_lz4() {
    roundtrip("lz4", 3).await;
}

#[tokio::test]
async fn zstd_records_round_trip_identically_and_stay_zstd() {
    roundtrip("zstd", 4).await;
}

#[tokio::test]
async fn acks_1_records_round_trip_identically() {
    let broker = TestBroker::start();
    create_topic(broker.bootstrap(), "acks-1", PARTITIONS).await;
    let mut records = generate_records(5_000, PARTITIONS, recent_base_timestamp());
    let producer = producer(broker.bootstrap(), &[("acks", "1")]);
    produce_all(&producer, "acks-1", &mut records).await;

    let consumer = consumer(broker.bootstrap(), &[]);
    assign(&consumer, "acks-1", PARTITIONS, Offset::Beginning);
    let consumed = consume(&consumer, records.len(), Duration::from_secs(60)).await;
    assert_same_records(&records, &consumed);
}

#[tokio::test]
async fn acks_0_records_are_stored_in_order_without_responses() {
    let broker = TestBroker::start();
    create_topic(broker.bootstrap(), "acks-0", PARTITIONS).await;
    let mut records = generate_records(5_000, PARTITIONS, recent_base_timestamp());
    // acks=0 gets no response, so librdkafka reports no offsets; a broker that answered anyway
    // would desynchronise librdkafka's correlation ids and fail later requests.
    let producer = producer(broker.bootstrap(), &[("acks", "0")]);
    produce_all(&producer, "acks-0", &mut records).await;
    let mut next_offset = [0i64; PARTITIONS as usize];
    for record in &mut records {
        let next = &mut next_offset[usize::try_from(record.partition).expect("partition >= 0")];
        record.offset = *next;
        *next += 1;
    }

    let consumer = consumer(broker.bootstrap(), &[]);
    assign(&consumer, "acks-0", PARTITIONS, Offset::Beginning);
    let consumed = consume(&consumer, records.len(), Duration::from_secs(60)).await;
    assert_same_records(&records, &consumed);
}

#[tokio::test]
async fn consumer_waiting_at_end_of_log_receives_later_record_promptly() {
    let broker = TestBroker::start();
    create_topic(broker.bootstrap(), "long-poll", 1).await;
    // The broker may hold each fetch up to 10 s; it must answer as soon as data arrives instead.
    let consumer = consumer(broker.bootstrap(), &[("fetch.wait.max.ms", "10000")]);
    assign(&consumer, "long-poll", 1, Offset::Beginning);
    let nothing = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await;
    assert!(nothing.is_err(), "an empty topic delivered a record");

    let producer = producer(broker.bootstrap(), &[("linger.ms", "0")]);
    let delivery = producer
        .send(
            FutureRecord::to("long-poll").key("k").payload("late"),
            Duration::from_secs(10),
        )
        .await
        .expect("produce while the consumer waits");
    let acked = Instant::now();
    let message = tokio::time::timeout(Duration::from_secs(5), consumer.recv())
        .await
        .expect("waiting consumer got no record within 5 s")
        .expect("consumer error");
    let latency = acked.elapsed();
    let record = to_test_record(&message);
    assert_eq!(record.offset, delivery.offset);
    assert_eq!(record.payload.as_deref(), Some(&b"late"[..]));
    assert!(
        latency < Duration::from_secs(2),
        "record reached the waiting consumer {latency:?} after its ack"
    );
}

#[tokio::test]
async fn fetch_with_max_wait_is_held_until_data_arrives() {
    let broker = TestBroker::start();
    create_topic(broker.bootstrap(), "held-fetch", 1).await;
    let mut wire = WireClient::connect(broker.bootstrap());
    let version = wire.version::<FetchRequest>(12);
    let correlation_id = wire.next_correlation_id();
    let frame = wire.frame(&fetch_request("held-fetch", 0, 0, 10_000), version);
    wire.stream.write_all(&frame).expect("send Fetch");

    // An empty log with min_bytes=1: the broker must hold the fetch, not answer empty at once.
    std::thread::sleep(Duration::from_secs(1));
    wire.stream.set_nonblocking(true).expect("nonblocking");
    let mut probe = [0u8; 1];
    match wire.stream.peek(&mut probe) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("broker answered a waiting Fetch on an empty log within 1 s: {other:?}"),
    }
    wire.stream.set_nonblocking(false).expect("blocking");

    let producer = producer(broker.bootstrap(), &[("linger.ms", "0")]);
    producer
        .send(
            FutureRecord::to("held-fetch").key("k").payload("wake up"),
            Duration::from_secs(10),
        )
        .await
        .expect("produce while the fetch waits");
    let acked = Instant::now();
    let frame = wire.read_frame().expect("Fetch response");
    let latency = acked.elapsed();
    assert!(
        latency < Duration::from_secs(2),
        "held Fetch was answered {latency:?} after the produce, not when data arrived"
    );
    let response = decode_response::<FetchRequest>(frame, version, correlation_id);
    assert_eq!(response.error_code, 0, "Fetch error code");
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0, "Fetch partition error code");
    assert_eq!(partition.high_watermark, 1);
    let mut records = partition.records.clone().expect("records in the held Fetch");
    let sets = RecordBatchDecoder::decode_all(&mut records).expect("decode fetched batches");
    let values: Vec<_> = sets
        .iter()
        .flat_map(|set| &set.records)
        .map(|r| r.value.as_deref())
        .collect();
    assert_eq!(values, vec![Some(&b"wake up"[..])]);
}

#[tokio::test]
async fn raw_compressed_batches_are_stored_byte_for_byte_and_read_by_librdkafka() {
    let broker = TestBroker::start();
    let codecs = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    let partitions = i32::try_from(codecs.len()).expect("fits");
    create_topic(broker.bootstrap(), "raw-codecs", partitions).await;

    let records: Vec<(Vec<u8>, Vec<u8>)> = (0..50)
        .map(|i| {
            let value = format!("value-{i}-").repeat(20);
            (format!("key-{i}").into_bytes(), value.into_bytes())
        })
        .collect();
    let borrowed: Vec<(&[u8], &[u8])> = records
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let timestamp = recent_base_timestamp();
    // Partition p gets one batch compressed with codecs[p].
    let batches: Vec<Bytes> = codecs
        .iter()
        .map(|&c| compressed_record_batch(&borrowed, timestamp, c))
        .collect();

    let mut wire = WireClient::connect(broker.bootstrap());
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("raw-codecs")))
            .with_partition_data(
                (0..partitions)
                    .zip(&batches)
                    .map(|(p, batch)| {
                        PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(batch.clone()))
                    })
                    .collect(),
            )]);
    let version = wire.version::<ProduceRequest>(12);
    let response = wire.call(&request, version);
    for partition in &response.responses[0].partition_responses {
        assert_eq!(
            (partition.error_code, partition.base_offset),
            (0, 0),
            "Produce of a {:?} batch",
            codecs[usize::try_from(partition.index).expect("partition >= 0")]
        );
    }

    for (p, (codec, sent)) in (0..partitions).zip(codecs.iter().zip(&batches)) {
        let data = fetch_partition(&mut wire, "raw-codecs", p, 0, 0);
        let stored = data.records.expect("records of the partition");
        assert_eq!(batch_codecs(&stored), vec![*codec as i16], "{codec:?}");
        // Identical except the partition leader epoch, which the broker stamps (outside the CRC).
        assert_eq!(stored.len(), sent.len(), "{codec:?} batch length");
        assert_eq!(stored[..12], sent[..12], "{codec:?} base offset and length");
        assert_eq!(stored[16..], sent[16..], "{codec:?} batch from magic byte on");
    }

    let consumer = consumer(broker.bootstrap(), &[]);
    assign(&consumer, "raw-codecs", partitions, Offset::Beginning);
    let consumed = consume(&consumer, records.len() * codecs.len(), Duration::from_secs(30)).await;
    for (partition, got) in by_partition(&consumed) {
        let values: Vec<&[u8]> = got.iter().filter_map(|r| r.payload.as_deref()).collect();
        let expected: Vec<&[u8]> = records.iter().map(|(_, v)| v.as_slice()).collect();
        assert_eq!(values, expected, "librdkafka reads partition {partition}");
    }
}

//! Bad input on one connection: that connection is closed (or answered, where Kafka answers), and
//! the broker goes on serving other clients with earlier data intact.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, ProduceRequest, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::Offset;

use crate::broker::TestBroker;
use crate::clients::{
    assert_same_records, assign, consume, consumer, create_topic, generate_records, produce_all, producer,
    recent_base_timestamp, TestRecord,
};
use crate::wire::{fetch_partition, pseudo_random_bytes, record_batch, WireClient, BATCH_CRC_OFFSET};

const TOPIC: &str = "survivor";
const PARTITIONS: i32 = 2;
/// Kafka's error code CORRUPT_MESSAGE.
const CORRUPT_MESSAGE: i16 = 2;
/// Kafka's error code UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;
const API_VERSIONS_KEY: i16 = 18;
/// Kafka's socket.request.max.bytes default: 100 MiB.
const SOCKET_REQUEST_MAX_BYTES: u32 = 100 * 1024 * 1024;

/// A broker holding a topic with records that must still be intact after the bad input.
pub(crate) struct Survivor {
    pub(crate) broker: TestBroker,
    earlier: Vec<TestRecord>,
}

impl Survivor {
    pub(crate) async fn start() -> Survivor {
        Survivor::start_on(TestBroker::start()).await
    }

    /// `start` on a broker of the caller's settings.
    pub(crate) async fn start_on(broker: TestBroker) -> Survivor {
        create_topic(broker.bootstrap(), TOPIC, PARTITIONS).await;
        let mut earlier = generate_records(200, PARTITIONS, recent_base_timestamp());
        produce_all(&producer(broker.bootstrap(), &[]), TOPIC, &mut earlier).await;
        Survivor { broker, earlier }
    }

    /// A new librdkafka client still produces and consumes, and the earlier records are intact.
    pub(crate) async fn assert_still_serving(mut self) {
        self.broker.assert_running();
        let bootstrap = self.broker.bootstrap();
        let mut later = generate_records(200, PARTITIONS, recent_base_timestamp());
        produce_all(&producer(bootstrap, &[]), TOPIC, &mut later).await;
        let all: Vec<TestRecord> = self.earlier.into_iter().chain(later).collect();

        let consumer = consumer(bootstrap, &[]);
        assign(&consumer, TOPIC, PARTITIONS, Offset::Beginning);
        let consumed = consume(&consumer, all.len(), Duration::from_secs(60)).await;
        assert_same_records(&all, &consumed);
    }
}

/// Writes, ignoring errors: a broker may close the connection before reading everything.
pub(crate) fn send_ignoring_close(wire: &mut WireClient, bytes: &[u8]) {
    let _ = wire.stream.write_all(bytes);
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut frame = u32::try_from(body.len()).expect("fits").to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Virtual memory high-water mark of a process, from /proc.
pub(crate) fn vm_peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmPeak:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmPeak in /proc status")
}

#[tokio::test]
async fn random_bytes_close_the_connection_and_broker_keeps_serving() {
    let survivor = Survivor::start().await;
    for seed in [1_u64, 42, 0xdead_beef] {
        let mut wire = WireClient::connect_raw(survivor.broker.bootstrap());
        send_ignoring_close(&mut wire, &pseudo_random_bytes(64 * 1024, seed));
        let _ = wire.stream.shutdown(std::net::Shutdown::Write);
        wire.expect_closed(Duration::from_secs(10));
    }
    survivor.assert_still_serving().await;
}

#[tokio::test]
async fn truncated_frame_then_hangup_closes_the_connection() {
    let survivor = Survivor::start().await;
    let mut wire = WireClient::connect_raw(survivor.broker.bootstrap());
    // The size prefix promises 1000 bytes; only 10 arrive before the client hangs up.
    let mut bytes = 1000_u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0, 3, 0, 1, 0, 0, 0, 7, 0xff, 0xff]);
    send_ignoring_close(&mut wire, &bytes);
    wire.shutdown_write();
    let answer = wire.expect_closed(Duration::from_secs(10));
    assert!(
        answer.is_empty(),
        "a truncated request got {} bytes of answer",
        answer.len()
    );
    survivor.assert_still_serving().await;
}

#[tokio::test]
async fn malformed_request_body_closes_the_connection() {
    let survivor = Survivor::start().await;
    let mut wire = WireClient::connect_raw(survivor.broker.bootstrap());
    // A well-formed Metadata v1 header whose topics array claims 2^31 - 16 entries in 8 bytes.
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(3)
        .with_request_api_version(1)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("bad-input")))
        .encode(&mut body, 1)
        .expect("encode header");
    body.put_i32(0x7fff_fff0);
    body.put_slice(&[0, 1, b'x', 0, 1, b'y', 0, 0]);
    send_ignoring_close(&mut wire, &frame(&body));
    let answer = wire.expect_closed(Duration::from_secs(10));
    assert!(
        answer.is_empty(),
        "a malformed request got {} bytes of answer",
        answer.len()
    );
    survivor.assert_still_serving().await;
}

#[tokio::test]
async fn oversized_or_negative_size_prefix_closes_the_connection_without_allocating() {
    let survivor = Survivor::start().await;
    let pid = survivor.broker.pid();
    let peak_before = vm_peak_kib(pid);
    for size in [SOCKET_REQUEST_MAX_BYTES + 1, 0x7fff_ffff, 0xffff_ffff] {
        let mut wire = WireClient::connect_raw(survivor.broker.bootstrap());
        let mut bytes = size.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
        send_ignoring_close(&mut wire, &bytes);
        // The client keeps its side open: the broker must close on the size prefix alone.
        let started = Instant::now();
        let answer = wire.expect_closed(Duration::from_secs(5));
        assert!(answer.is_empty(), "size prefix {size:#x} got an answer");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "size prefix {size:#x} closed only after {:?}",
            started.elapsed()
        );
    }
    let grown_mib = vm_peak_kib(pid).saturating_sub(peak_before) / 1024;
    assert!(
        grown_mib < 1024,
        "broker's peak virtual memory grew by {grown_mib} MiB: it allocated for a size prefix"
    );
    survivor.assert_still_serving().await;
}

#[tokio::test]
async fn unknown_api_key_closes_the_connection() {
    let survivor = Survivor::start().await;
    let mut wire = WireClient::connect_raw(survivor.broker.bootstrap());
    // Header v1 by hand (kafka-protocol refuses to encode an unknown key): key 999, version 0,
    // correlation id 1, null client id.
    let mut body = BytesMut::new();
    body.put_i16(999);
    body.put_i16(0);
    body.put_i32(1);
    body.put_i16(-1);
    send_ignoring_close(&mut wire, &frame(&body));
    let answer = wire.expect_closed(Duration::from_secs(10));
    assert!(
        answer.is_empty(),
        "Kafka closes on an unknown api key without answering"
    );
    survivor.assert_still_serving().await;
}

#[tokio::test]
async fn unsupported_metadata_version_closes_the_connection() {
    let survivor = Survivor::start().await;
    let mut wire = WireClient::connect_raw(survivor.broker.bootstrap());
    // Metadata v99 with a flexible (v2) header and an empty-looking body.
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(3)
        .with_request_api_version(99)
        .with_correlation_id(5)
        .with_client_id(Some(StrBytes::from_static_str("bad-input")))
        .encode(&mut body, 2)
        .expect("encode header");
    body.put_slice(&[1, 0, 0, 0]);
    send_ignoring_close(&mut wire, &frame(&body));
    let answer = wire.expect_closed(Duration::from_secs(10));
    assert!(
        answer.is_empty(),
        "Kafka closes on an unsupported Metadata version"
    );
    survivor.assert_still_serving().await;
}

#[tokio::test]
async fn api_versions_v99_gets_v0_error_response_with_supported_apis() {
    let survivor = Survivor::start().await;
    let mut wire = WireClient::connect_raw(survivor.broker.bootstrap());
    // As a newer client would send it: header v2, body in the newest shape this client knows.
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(API_VERSIONS_KEY)
        .with_request_api_version(99)
        .with_correlation_id(99)
        .with_client_id(Some(StrBytes::from_static_str("bad-input")))
        .encode(&mut body, 2)
        .expect("encode header");
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("keel-tests"))
        .with_client_software_version(StrBytes::from_static_str("99"))
        .encode(&mut body, 4)
        .expect("encode body");
    send_ignoring_close(&mut wire, &frame(&body));

    let mut response = wire
        .read_frame()
        .expect("ApiVersions v99 is answered, not closed");
    assert_eq!(response.get_i32(), 99, "correlation id");
    let decoded = ApiVersionsResponse::decode(&mut response, 0).expect("v0 response body");
    assert_eq!(response.remaining(), 0, "the response is exactly v0-shaped");
    assert_eq!(decoded.error_code, UNSUPPORTED_VERSION);
    assert!(
        !decoded.api_keys.is_empty(),
        "the error carries the supported api list"
    );
    let api_versions = decoded
        .api_keys
        .iter()
        .find(|api| api.api_key == API_VERSIONS_KEY)
        .expect("ApiVersions itself is in the list");
    assert_eq!(api_versions.min_version, 0);
    assert!(
        api_versions.max_version >= 3,
        "ApiVersions max version {}",
        api_versions.max_version
    );

    // The Java client retries on the same connection with a version from that list.
    let retried = wire.call(&ApiVersionsRequest::default(), 0);
    assert_eq!(retried.error_code, 0, "ApiVersions v0 after the v99 error");
    assert_eq!(retried.api_keys, decoded.api_keys);
    survivor.assert_still_serving().await;
}

/// One topic's raw record batches: (topic, [(partition, batch bytes)]).
pub(crate) type TopicBatches = (&'static str, Vec<(i32, Vec<u8>)>);

/// An acks=-1 Produce of raw record batches.
pub(crate) fn produce_request(topics: Vec<TopicBatches>) -> ProduceRequest {
    let topic_data = topics
        .into_iter()
        .map(|(name, partitions)| {
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(name)))
                .with_partition_data(
                    partitions
                        .into_iter()
                        .map(|(index, records)| {
                            PartitionProduceData::default()
                                .with_index(index)
                                .with_records(Some(records.into()))
                        })
                        .collect(),
                )
        })
        .collect();
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(topic_data)
}

#[tokio::test]
async fn produce_with_bad_crc_fails_only_that_partition() {
    let survivor = Survivor::start().await;
    create_topic(survivor.broker.bootstrap(), "crc", 2).await;
    let mut wire = WireClient::connect(survivor.broker.bootstrap());

    let timestamp = recent_base_timestamp();
    let good = record_batch(&[(b"k0", b"good-0"), (b"k1", b"good-1")], timestamp);
    let mut bad = record_batch(&[(b"k0", b"bad-0"), (b"k1", b"bad-1")], timestamp).to_vec();
    bad[BATCH_CRC_OFFSET] ^= 0x01;
    let request = produce_request(vec![("crc", vec![(0, good.to_vec()), (1, bad)])]);
    let version = wire.version::<ProduceRequest>(12);
    let response = wire.call(&request, version);

    assert_eq!(response.responses.len(), 1, "one topic in the Produce response");
    let partitions = &response.responses[0].partition_responses;
    let error_of = |index: i32| {
        partitions
            .iter()
            .find(|p| p.index == index)
            .unwrap_or_else(|| panic!("no response for partition {index}"))
    };
    assert_eq!(error_of(0).error_code, 0, "the valid batch is accepted");
    assert_eq!(error_of(0).base_offset, 0);
    assert_eq!(
        error_of(1).error_code,
        CORRUPT_MESSAGE,
        "the batch with a bad CRC"
    );

    let stored = fetch_partition(&mut wire, "crc", 0, 0, 0);
    assert_eq!(stored.high_watermark, 2, "both valid records are stored");
    let rejected = fetch_partition(&mut wire, "crc", 1, 0, 0);
    assert_eq!(
        rejected.high_watermark, 0,
        "nothing of the corrupt batch is stored"
    );
    assert!(
        rejected.records.as_ref().is_none_or(|r| r.is_empty()),
        "the corrupt partition returns no records"
    );
    survivor.assert_still_serving().await;
}

const INVALID_TIMESTAMP: i16 = 32;
const INVALID_RECORD: i16 = 87;
const RECORD_LIST_TOO_LARGE: i16 = 18;

/// Sets a batch's record count field and recomputes its CRC over the changed batch.
fn set_record_count(batch: &mut [u8], count: i32) {
    batch[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[BATCH_CRC_OFFSET..BATCH_CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

#[tokio::test]
async fn produce_refuses_what_kafkas_log_validator_refuses_and_only_that_partition() {
    let survivor = Survivor::start().await;
    let bootstrap = survivor.broker.bootstrap().to_string();
    create_topic(&bootstrap, "validated", 4).await;
    let admin = crate::clients::admin(&bootstrap);
    let small =
        rdkafka::admin::NewTopic::new("small-segments", 1, rdkafka::admin::TopicReplication::Fixed(1))
            .set("segment.bytes", "1000");
    admin
        .create_topics(&[small], &crate::clients::admin_options())
        .await
        .expect("CreateTopics small-segments");
    let mut wire = WireClient::connect(&bootstrap);

    let now = recent_base_timestamp() + 3_600_000;
    let good = record_batch(&[(b"k0", b"v0"), (b"k1", b"v1")], now).to_vec();
    // Two hours ahead: past message.timestamp.after.max.ms (one hour by default).
    let future = record_batch(&[(b"k0", b"v0"), (b"k1", b"v1")], now + 7_200_000).to_vec();
    // The header says three records; two are there.
    let mut miscounted = record_batch(&[(b"k0", b"v0"), (b"k1", b"v1")], now).to_vec();
    miscounted[23..27].copy_from_slice(&2i32.to_be_bytes()); // lastOffsetDelta, consistent with 3
    set_record_count(&mut miscounted, 3);
    let big_value = vec![b'x'; 2_000];
    let big = record_batch(&[(b"k", &big_value)], now).to_vec();

    let request = produce_request(vec![
        ("validated", vec![(0, good.clone()), (1, future), (2, miscounted)]),
        ("small-segments", vec![(0, big)]),
    ]);
    let version = wire.version::<ProduceRequest>(12);
    let response = wire.call(&request, version);
    let result = |topic: usize, index: i32| {
        response.responses[topic]
            .partition_responses
            .iter()
            .find(|p| p.index == index)
            .unwrap_or_else(|| panic!("no response for partition {index}"))
            .clone()
    };
    assert_eq!(result(0, 0).error_code, 0, "the valid batch is accepted");
    let future = result(0, 1);
    assert_eq!(
        future.error_code, INVALID_TIMESTAMP,
        "a timestamp two hours ahead"
    );
    assert_eq!(
        future
            .record_errors
            .iter()
            .map(|e| e.batch_index)
            .collect::<Vec<_>>(),
        [0, 1],
        "each record out of range is named"
    );
    assert_eq!(
        result(0, 2).error_code,
        INVALID_RECORD,
        "a record count the records disagree with"
    );
    assert_eq!(
        result(1, 0).error_code,
        RECORD_LIST_TOO_LARGE,
        "a batch larger than segment.bytes"
    );
    for index in 1..=2 {
        let refused = fetch_partition(&mut wire, "validated", index, 0, 0);
        assert_eq!(refused.high_watermark, 0, "nothing of a refused batch is stored");
    }
    survivor.assert_still_serving().await;
}

/// Reads until the broker closes the connection (Ok) or `within` passes (Err).
pub(crate) fn closed_within(stream: &mut std::net::TcpStream, within: Duration) -> Result<Duration, ()> {
    use std::io::Read;
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let mut buf = [0u8; 64];
    while start.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Ok(start.elapsed()),
        }
    }
    Err(())
}

#[tokio::test]
async fn idle_connections_are_closed_after_connections_max_idle_ms_and_busy_ones_are_not() {
    let broker = TestBroker::builder().with("connections.max.idle.ms", 500).start();
    // Silent from the start, and silent half-way through a request header: both idle.
    let mut silent = std::net::TcpStream::connect(broker.bootstrap()).expect("connect");
    let mut slow = std::net::TcpStream::connect(broker.bootstrap()).expect("connect");
    slow.write_all(&[0, 0]).expect("half a size prefix");
    let closed = closed_within(&mut silent, Duration::from_secs(5)).expect("an idle connection stays open");
    assert!(
        closed >= Duration::from_millis(400),
        "closed after {closed:?}, before the idle limit"
    );
    closed_within(&mut slow, Duration::from_secs(5)).expect("a stalled request header keeps the connection");

    // A client that keeps asking is served past the limit.
    let mut busy = WireClient::connect(broker.bootstrap());
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2_000) {
        let version = busy.version::<ApiVersionsRequest>(3);
        let response = busy.call(&ApiVersionsRequest::default(), version);
        assert_eq!(response.error_code, 0);
        std::thread::sleep(Duration::from_millis(200));
    }
}

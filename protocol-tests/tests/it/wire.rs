//! A raw Kafka protocol client over a blocking `TcpStream`, built on kafka-protocol's client-side
//! encoders: for requests no real client would send (bad CRCs, unknown keys, huge size prefixes)
//! and for looking at exactly what the broker answers or stores.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiVersionsRequest, FetchRequest, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// How long a request may take before the test fails instead of hanging.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct WireClient {
    pub stream: TcpStream,
    next_correlation_id: i32,
    /// api key → (min, max) version the broker announced in ApiVersions.
    versions: HashMap<i16, (i16, i16)>,
}

impl WireClient {
    /// Connects without sending anything.
    pub fn connect_raw(bootstrap: &str) -> WireClient {
        let stream = TcpStream::connect(bootstrap).expect("connect to broker");
        stream
            .set_read_timeout(Some(RESPONSE_TIMEOUT))
            .expect("set read timeout");
        stream.set_nodelay(true).expect("set nodelay");
        WireClient {
            stream,
            next_correlation_id: 1,
            versions: HashMap::new(),
        }
    }

    /// Connects and learns the broker's version ranges with ApiVersions v0, as clients do.
    pub fn connect(bootstrap: &str) -> WireClient {
        let mut client = Self::connect_raw(bootstrap);
        let response = client.call(&ApiVersionsRequest::default(), 0);
        assert_eq!(response.error_code, 0, "ApiVersions v0 error code");
        client.versions = response
            .api_keys
            .iter()
            .map(|api| (api.api_key, (api.min_version, api.max_version)))
            .collect();
        client
    }

    /// The highest version of `R` that the broker and kafka-protocol both support, capped at
    /// `cap` (for requests whose later versions need fields these tests do not fill in).
    pub fn version<R: Request>(&self, cap: i16) -> i16 {
        let (min, max) = *self
            .versions
            .get(&R::KEY)
            .unwrap_or_else(|| panic!("broker does not announce api key {}", R::KEY));
        let version = max.min(cap).min(R::VERSIONS.max);
        assert!(
            version >= min && version >= R::VERSIONS.min,
            "no common version for api key {}: broker {min}..={max}, client {:?}, cap {cap}",
            R::KEY,
            R::VERSIONS
        );
        version
    }

    /// The correlation id the next framed request gets.
    pub fn next_correlation_id(&self) -> i32 {
        self.next_correlation_id
    }

    /// Whether the broker announced `api_key` in ApiVersions.
    pub fn supports(&self, api_key: i16) -> bool {
        self.versions.contains_key(&api_key)
    }

    /// The bytes of a whole request: size prefix, header, body.
    pub fn frame<R: Request>(&mut self, request: &R, version: i16) -> Vec<u8> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.next_correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("keel-protocol-tests")));
        self.next_correlation_id += 1;
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .expect("encode request header");
        request.encode(&mut body, version).expect("encode request");
        let mut frame = u32::try_from(body.len())
            .expect("request fits in a frame")
            .to_be_bytes()
            .to_vec();
        frame.extend_from_slice(&body);
        frame
    }

    /// Sends one request and decodes its response, checking the correlation id.
    pub fn call<R: Request>(&mut self, request: &R, version: i16) -> R::Response {
        let correlation_id = self.next_correlation_id;
        let frame = self.frame(request, version);
        self.stream.write_all(&frame).expect("send request");
        let frame = self.read_frame().expect("read response");
        decode_response::<R>(frame, version, correlation_id)
    }

    /// Reads one size-prefixed frame (without the prefix).
    pub fn read_frame(&mut self) -> io::Result<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = usize::try_from(i32::from_be_bytes(size))
            .map_err(|_| io::Error::new(ErrorKind::InvalidData, "negative response size"))?;
        let mut body = vec![0u8; size];
        self.stream.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }

    /// Waits until the broker closes the connection. Returns the bytes it sent before closing;
    /// panics if it is still open after `timeout`.
    pub fn expect_closed(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "broker kept the connection open for {timeout:?} (received {} bytes)",
                received.len()
            );
            self.stream
                .set_read_timeout(Some(left))
                .expect("set read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => return received,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return received,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("reading from broker: {e}"),
            }
        }
    }

    /// Stops sending: the broker sees end of stream on its next read.
    pub fn shutdown_write(&self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("shut down write half");
    }
}

/// Decodes a response frame to a request of type `R`, checking the correlation id and that
/// nothing is left over.
pub fn decode_response<R: Request>(mut frame: Bytes, version: i16, correlation_id: i32) -> R::Response {
    let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
        .expect("decode response header");
    assert_eq!(header.correlation_id, correlation_id, "response correlation id");
    let response = R::Response::decode(&mut frame, version).expect("decode response body");
    assert_eq!(frame.remaining(), 0, "bytes left after decoding the response");
    response
}

/// Fetches one partition from `offset` with the given long-poll wait, returning its data.
pub fn fetch_partition(
    client: &mut WireClient,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
) -> PartitionData {
    let version = client.version::<FetchRequest>(12);
    let request = fetch_request(topic, partition, offset, max_wait_ms);
    let mut response = client.call(&request, version);
    assert_eq!(response.error_code, 0, "Fetch top-level error code");
    assert_eq!(response.responses.len(), 1, "one topic in the Fetch response");
    let mut partitions = response.responses.remove(0).partitions;
    assert_eq!(partitions.len(), 1, "one partition in the Fetch response");
    partitions.remove(0)
}

/// A Fetch (v4–v12 shape: topics by name) of one partition, waiting up to `max_wait_ms` for at
/// least one byte.
pub fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(4 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

/// Encodes records as one uncompressed v2 record batch, with base offset 0 as a producer sends it.
pub fn record_batch(records: &[(&[u8], &[u8])], timestamp: i64) -> Bytes {
    compressed_record_batch(records, timestamp, Compression::None)
}

/// Encodes records as one v2 record batch compressed with `compression`, base offset 0.
pub fn compressed_record_batch(
    records: &[(&[u8], &[u8])],
    timestamp: i64,
    compression: Compression,
) -> Bytes {
    producer_batch(records, timestamp, compression, (-1, -1, -1), false)
}

/// One uncompressed v2 batch of an idempotent producer: its id, epoch and the sequence number
/// of the first record.
pub fn idempotent_batch(records: &[(&[u8], &[u8])], timestamp: i64, producer: (i64, i16, i32)) -> Bytes {
    producer_batch(records, timestamp, Compression::None, producer, false)
}

/// `idempotent_batch` with the transactional bit set: a transactional producer's batch.
pub fn transactional_batch(records: &[(&[u8], &[u8])], timestamp: i64, producer: (i64, i16, i32)) -> Bytes {
    producer_batch(records, timestamp, Compression::None, producer, true)
}

fn producer_batch(
    records: &[(&[u8], &[u8])],
    timestamp: i64,
    compression: Compression,
    (producer_id, producer_epoch, base_sequence): (i64, i16, i32),
    transactional: bool,
) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::try_from(i).expect("fits"),
            // kafka-protocol starts a new batch whenever offset - sequence changes; with
            // sequences -1, 0, 1, … the batch is one and its base sequence is -1 (no producer id).
            sequence: if producer_id < 0 {
                i32::try_from(i).expect("fits") - 1
            } else {
                base_sequence.wrapping_add(i32::try_from(i).expect("fits"))
            },
            timestamp: timestamp + i64::try_from(i).expect("fits"),
            key: Some(Bytes::copy_from_slice(key)),
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode record batch");
    buf.freeze()
}

/// Offset of the CRC field in a v2 record batch: base offset (8), batch length (4), partition
/// leader epoch (4), magic (1).
pub const BATCH_CRC_OFFSET: usize = 17;

/// Offset of the attributes field, whose low 3 bits name the compression codec: the CRC (4)
/// follows the magic byte.
pub const BATCH_ATTRIBUTES_OFFSET: usize = 21;

/// The compression codec of each record batch in a fetched `records` blob, read from the batch
/// headers without decompressing anything.
pub fn batch_codecs(mut records: &[u8]) -> Vec<i16> {
    let mut codecs = Vec::new();
    while records.len() >= 12 {
        let length = i32::from_be_bytes(records[8..12].try_into().expect("4 bytes"));
        let total = 12 + usize::try_from(length).expect("non-negative batch length");
        if records.len() < total {
            break; // a partial batch at the end of a fetch is allowed
        }
        let attributes = i16::from_be_bytes(
            records[BATCH_ATTRIBUTES_OFFSET..BATCH_ATTRIBUTES_OFFSET + 2]
                .try_into()
                .expect("2 bytes"),
        );
        codecs.push(attributes & 0x7);
        records = &records[total..];
    }
    codecs
}

/// Bytes from a fixed-seed xorshift: the same "random" input on every run.
pub fn pseudo_random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed.to_le_bytes()[3]
        })
        .collect()
}

#[test]
fn batch_codecs_reads_the_codec_of_each_batch() {
    let batch = record_batch(&[(b"k", b"v"), (b"k2", b"v2")], 1_000);
    let mut two = batch.to_vec();
    two.extend_from_slice(&batch);
    assert_eq!(batch_codecs(&two), vec![0, 0]);
    // A truncated trailing batch is ignored, as a fetch may end in one.
    assert_eq!(batch_codecs(&two[..batch.len() + 20]), vec![0]);
}

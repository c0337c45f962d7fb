//! Idempotent producers: InitProducerId, Kafka's sequence rules at the wire, producer state
//! across restarts and crashes, and librdkafka's idempotent producer through connections that
//! are cut at random moments and whose responses are lost.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset};

use crate::broker::TestBroker;
use crate::clients::{assign, consumer, producer};
use crate::metrics::{metrics_address, scrape};
use crate::wire::{idempotent_batch, WireClient};
use crate::wire_apis::create;

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_REQUEST: i16 = 42;
const INVALID_RECORD: i16 = 87;

pub(crate) fn init_producer_id(
    wire: &mut WireClient,
    transactional_id: Option<&str>,
    pid: i64,
    epoch: i16,
) -> InitProducerIdResponse {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.into()))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch);
    let version = wire.version::<InitProducerIdRequest>(5);
    wire.call(&request, version)
}

/// A new idempotent producer id (epoch 0).
fn new_producer(wire: &mut WireClient) -> i64 {
    let r = init_producer_id(wire, None, -1, -1);
    assert_eq!((r.error_code, r.producer_epoch), (0, 0));
    r.producer_id.0
}

fn produce(wire: &mut WireClient, topic: &str, batch: Bytes) -> PartitionProduceResponse {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let version = wire.version::<ProduceRequest>(11);
    wire.call(&request, version)
        .responses
        .remove(0)
        .partition_responses
        .remove(0)
}

/// `n` records of producer `pid` at `epoch`, from sequence `seq`; the timestamp tells batches
/// apart.
fn batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("{pid}-{epoch}-{}", seq as usize + i).into_bytes())
        .collect();
    let records: Vec<(&[u8], &[u8])> = values.iter().map(|v| (&b"k"[..], v.as_slice())).collect();
    idempotent_batch(&records, 1_700_000_000_000 + i64::from(seq), (pid, epoch, seq))
}

/// (error code, base offset) of a produce.
fn sent(wire: &mut WireClient, topic: &str, pid: i64, epoch: i16, seq: i32, n: usize) -> (i16, i64) {
    let r = produce(wire, topic, batch(pid, epoch, seq, n));
    (r.error_code, r.base_offset)
}

pub(crate) fn log_end(wire: &mut WireClient, topic: &str) -> i64 {
    let request = crate::wire::fetch_request(topic, 0, 0, 0);
    let version = wire.version::<FetchRequest>(12);
    wire.call(&request, version).responses[0].partitions[0].high_watermark
}

#[test]
fn init_producer_id_hands_out_ids_never_reused_across_restarts() {
    let mut broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert!(wire.supports(22), "InitProducerId is advertised");
    let first = new_producer(&mut wire);
    let second = new_producer(&mut wire);
    assert!(first >= 0 && second > first, "{first} then {second}");
    // A KIP-360 "bump" from an idempotent producer: a new id at epoch 0, as Kafka answers it.
    let bumped = init_producer_id(&mut wire, None, second, 0);
    assert_eq!(bumped.error_code, 0);
    assert!(bumped.producer_id.0 > second && bumped.producer_epoch == 0);
    for (tid, pid, epoch) in [(None, -1, 3), (None, 7, -1), (Some(""), -1, -1)] {
        let r = init_producer_id(&mut wire, tid, pid, epoch);
        assert_eq!(
            (r.error_code, r.producer_id.0, r.producer_epoch),
            (INVALID_REQUEST, -1, -1),
            "tid {tid:?}, pid {pid}, epoch {epoch}"
        );
    }
    let before_crash = bumped.producer_id.0;
    broker.kill9();
    broker.restart();
    let mut wire = WireClient::connect(broker.bootstrap());
    let after_crash = new_producer(&mut wire);
    assert!(
        after_crash > before_crash,
        "{after_crash} reuses an id up to {before_crash}"
    );
    broker.restart();
    let mut wire = WireClient::connect(broker.bootstrap());
    let after_restart = new_producer(&mut wire);
    assert!(after_restart > after_crash, "{after_restart} after {after_crash}");
}

#[test]
fn sequences_are_checked_from_batch_headers_as_kafka_does() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "seq", 1, 1, &[], false), 0);
    let pid = new_producer(&mut wire);
    assert_eq!(sent(&mut wire, "seq", pid, 0, 0, 3), (0, 0));
    assert_eq!(sent(&mut wire, "seq", pid, 0, 3, 2), (0, 3));

    // A retry is answered with the original's offsets and, as Kafka does even under
    // CreateTime, the original's maxTimestamp; nothing is written twice.
    let retry = produce(&mut wire, "seq", batch(pid, 0, 0, 3));
    assert_eq!((retry.error_code, retry.base_offset), (0, 0));
    assert_eq!(retry.log_append_time_ms, 1_700_000_000_000 + 2);
    assert_eq!(log_end(&mut wire, "seq"), 5);

    // Same start, another count; a gap; going back: all out of order, nothing written.
    assert_eq!(
        sent(&mut wire, "seq", pid, 0, 3, 3).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(
        sent(&mut wire, "seq", pid, 0, 7, 1).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(
        sent(&mut wire, "seq", pid, 0, 2, 1).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(log_end(&mut wire, "seq"), 5);

    // Six one-record batches: the oldest leaves the five-batch window.
    for seq in 5..11 {
        assert_eq!(sent(&mut wire, "seq", pid, 0, seq, 1), (0, i64::from(seq)));
    }
    assert_eq!(sent(&mut wire, "seq", pid, 0, 6, 1), (0, 6));
    assert_eq!(
        sent(&mut wire, "seq", pid, 0, 5, 1).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );

    // A new epoch starts at 0 and fences the old one.
    assert_eq!(
        sent(&mut wire, "seq", pid, 1, 4, 1).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(sent(&mut wire, "seq", pid, 1, 0, 1), (0, 11));
    assert_eq!(sent(&mut wire, "seq", pid, 0, 11, 1).0, INVALID_PRODUCER_EPOCH);

    // Kafka 4.1 accepts an unknown producer at any sequence, then holds it to it.
    assert_eq!(sent(&mut wire, "seq", 999_999, 0, 42, 1), (0, 12));
    assert_eq!(
        sent(&mut wire, "seq", 999_999, 0, 44, 1).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(sent(&mut wire, "seq", 999_999, 0, 43, 1), (0, 13));

    // A producer id with no sequence is malformed.
    assert_eq!(sent(&mut wire, "seq", pid, 1, -1, 1).0, INVALID_RECORD);
    assert_eq!(log_end(&mut wire, "seq"), 14);

    // DescribeProducers lists both, with their epochs and last sequences.
    let described = describe_producers(&mut wire, "seq", 0);
    assert_eq!(described.error_code, 0);
    let producers: Vec<(i64, i32, i32, i64)> = described
        .active_producers
        .iter()
        .map(|p| {
            (
                p.producer_id.0,
                p.producer_epoch,
                p.last_sequence,
                p.current_txn_start_offset,
            )
        })
        .collect();
    assert_eq!(producers, vec![(pid, 1, 0, -1), (999_999, 0, 43, -1)]);
    let last_timestamp = described.active_producers[1].last_timestamp;
    assert_eq!(last_timestamp, 1_700_000_000_000 + 43);
    assert_eq!(describe_producers(&mut wire, "nosuch", 0).error_code, 3);
    assert_eq!(describe_producers(&mut wire, "seq", 1).error_code, 3);
}

pub(crate) fn describe_producers(
    wire: &mut WireClient,
    topic: &str,
    partition: i32,
) -> describe_producers_response::PartitionResponse {
    let request = DescribeProducersRequest::default().with_topics(vec![
        describe_producers_request::TopicRequest::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_indexes(vec![partition]),
    ]);
    wire.call(&request, 0).topics.remove(0).partitions.remove(0)
}

#[test]
fn retries_are_recognised_after_a_clean_restart_and_after_kill_9() {
    let mut broker = TestBroker::builder().with("log.segment.bytes", 2000).start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "state", 1, 1, &[], false), 0);
    let pid = new_producer(&mut wire);
    // Enough batches for several segments, so that rolls store snapshots.
    let mut offsets = Vec::new();
    for seq in (0..120).step_by(3) {
        offsets.push(sent(&mut wire, "state", pid, 0, seq, 3));
    }
    assert!(offsets.iter().all(|(e, _)| *e == 0));
    let end = log_end(&mut wire, "state");
    assert_eq!(end, 120);

    broker.restart();
    let mut wire = WireClient::connect(broker.bootstrap());
    // Every batch of the window is still known (Kafka's own snapshot keeps only the last).
    for seq in (105..120).step_by(3) {
        assert_eq!(
            sent(&mut wire, "state", pid, 0, seq, 3),
            (0, i64::from(seq)),
            "seq {seq}"
        );
    }
    assert_eq!(
        sent(&mut wire, "state", pid, 0, 121, 1).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(sent(&mut wire, "state", pid, 0, 120, 2), (0, 120));

    // A crash leaves no snapshot at the log end: the tail is replayed from the log.
    broker.kill9();
    broker.restart();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(sent(&mut wire, "state", pid, 0, 120, 2), (0, 120));
    assert_eq!(sent(&mut wire, "state", pid, 0, 117, 3), (0, 117));
    assert_eq!(
        sent(&mut wire, "state", pid, 0, 123, 1).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(sent(&mut wire, "state", pid, 0, 122, 1), (0, 122));
    assert_eq!(log_end(&mut wire, "state"), 123);
}

#[test]
fn idle_producers_expire_and_are_then_unknown() {
    let broker = TestBroker::builder()
        .with("producer.id.expiration.ms", 1000)
        .with("producer.id.expiration.check.interval.ms", 100)
        .start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "expiry", 1, 1, &[], false), 0);
    let pid = new_producer(&mut wire);
    // Timestamps are the batch's own (2023): it is long idle by the broker's clock.
    assert_eq!(sent(&mut wire, "expiry", pid, 0, 0, 2), (0, 0));
    let deadline = Instant::now() + Duration::from_secs(10);
    // Once expired, the retry is no longer recognised: it is appended again, as in Kafka.
    loop {
        thread::sleep(Duration::from_millis(200));
        let (code, offset) = sent(&mut wire, "expiry", pid, 0, 0, 2);
        assert_eq!(code, 0);
        if offset > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the producer never expired");
    }
    assert!(broker.log_text().contains("expired idle producer state"));
}

/// A loopback TCP proxy between the clients and the broker that breaks connections the ways a
/// network does: it cuts every open connection at pseudo-random moments, and it swallows the
/// response to every `DROP_EVERY`-th Produce request (closing that connection instead), so the
/// broker has written a batch whose producer never heard of it and must send it again.
struct ChaosProxy {
    port: u16,
    target: Arc<Mutex<String>>,
    calm: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    dropped_responses: Arc<AtomicUsize>,
}

const DROP_EVERY: usize = 10;

impl ChaosProxy {
    fn start() -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let proxy = ChaosProxy {
            port,
            target: Arc::default(),
            calm: Arc::default(),
            cuts: Arc::default(),
            dropped_responses: Arc::default(),
        };
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let produces = Arc::new(AtomicUsize::new(0));
        {
            let (target, open, calm, dropped) = (
                proxy.target.clone(),
                open.clone(),
                proxy.calm.clone(),
                proxy.dropped_responses.clone(),
            );
            thread::spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    let to = target.lock().unwrap().clone();
                    let Ok(server) = TcpStream::connect(&to) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    open.lock().unwrap().push(client.try_clone().unwrap());
                    open.lock().unwrap().push(server.try_clone().unwrap());
                    // Correlation ids of the Produce requests whose responses are to be lost.
                    let doomed: Arc<Mutex<Vec<i32>>> = Arc::default();
                    let (c, s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let (doomed_in, produces, calm_in) = (doomed.clone(), produces.clone(), calm.clone());
                    thread::spawn(move || {
                        forward_frames(c, s, |frame| {
                            let api_key = i16::from_be_bytes([frame[0], frame[1]]);
                            if api_key == 0
                                && !calm_in.load(Ordering::Relaxed)
                                && produces.fetch_add(1, Ordering::Relaxed) % DROP_EVERY == DROP_EVERY - 1
                            {
                                let correlation_id = i32::from_be_bytes(frame[4..8].try_into().unwrap());
                                doomed_in.lock().unwrap().push(correlation_id);
                            }
                            true
                        })
                    });
                    let dropped = dropped.clone();
                    thread::spawn(move || {
                        forward_frames(server, client, |frame| {
                            let correlation_id = i32::from_be_bytes(frame[0..4].try_into().unwrap());
                            let lost = doomed.lock().unwrap().contains(&correlation_id);
                            if lost {
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            !lost
                        })
                    });
                }
            });
        }
        {
            let (calm, cuts) = (proxy.calm.clone(), proxy.cuts.clone());
            thread::spawn(move || {
                let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
                loop {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    thread::sleep(Duration::from_millis(30 + seed % 150));
                    if calm.load(Ordering::Relaxed) {
                        return;
                    }
                    let doomed = std::mem::take(&mut *open.lock().unwrap());
                    if !doomed.is_empty() {
                        cuts.fetch_add(1, Ordering::Relaxed);
                    }
                    for s in doomed {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                }
            });
        }
        proxy
    }

    /// Stops breaking connections; they are still forwarded.
    fn calm(&self) {
        self.calm.store(true, Ordering::Relaxed);
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.calm();
    }
}

/// Copies size-prefixed Kafka frames from `from` to `to` while `keep(frame body)` says so;
/// when it says no, or either side fails, both connections are closed.
fn forward_frames(mut from: TcpStream, mut to: TcpStream, mut keep: impl FnMut(&[u8]) -> bool) {
    loop {
        let mut size = [0u8; 4];
        if from.read_exact(&mut size).is_err() {
            break;
        }
        let mut body = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
        if from.read_exact(&mut body).is_err() || body.len() < 8 || !keep(&body) {
            break;
        }
        if to.write_all(&size).and_then(|()| to.write_all(&body)).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdkafka_idempotent_producer_lands_every_message_once_through_cut_connections() {
    let proxy = ChaosProxy::start();
    // Clients learn the proxy's address from Metadata, so every connection goes through it.
    let broker = TestBroker::builder()
        .with("advertised.listeners", format!("PLAINTEXT://{}", proxy.address()))
        .with("metrics.listener", "127.0.0.1:0")
        .start();
    *proxy.target.lock().unwrap() = broker.bootstrap().to_owned();
    let topic = "idempotent-chaos";
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, topic, 3, 1, &[], false), 0);

    let producer = producer(
        &proxy.address(),
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "2"),
            ("batch.num.messages", "50"),
            ("max.in.flight.requests.per.connection", "5"),
            ("retry.backoff.ms", "20"),
            ("message.timeout.ms", "120000"),
            ("socket.timeout.ms", "3000"),
            // librdkafka backs off exponentially between reconnects (to 10 s by default);
            // the cuts here are deliberate, so it may come straight back.
            ("reconnect.backoff.ms", "10"),
            ("reconnect.backoff.max.ms", "100"),
        ],
    );
    const PER_PARTITION: usize = 1500;
    let mut deliveries = Vec::new();
    for i in 0..PER_PARTITION {
        for partition in 0..3 {
            let payload = format!("{partition}:{i}");
            let record = FutureRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(&payload);
            deliveries.push(producer.send_result(record).expect("queue message"));
        }
        if i % 25 == 24 {
            // Spread the load over the proxy's cuts.
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    for d in deliveries {
        let delivery = d.await.expect("delivery report").expect("delivered");
        assert!(delivery.partition >= 0 && delivery.offset >= 0);
    }
    let cuts = proxy.cuts.load(Ordering::Relaxed);
    let dropped = proxy.dropped_responses.load(Ordering::Relaxed);
    assert!(cuts >= 5, "the proxy cut connections only {cuts} times");
    assert!(
        dropped >= 3,
        "the proxy swallowed only {dropped} produce responses"
    );
    // Each swallowed response was of a batch the broker had written: its retry must have been
    // recognised (and every message below is still there once).
    let metrics = scrape(&metrics_address(&broker));
    let duplicates: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keel_produce_duplicate_batches_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    eprintln!("{cuts} cuts, {dropped} responses swallowed, {duplicates} retries recognised");
    assert!(
        duplicates >= 1.0,
        "no retried batch was recognised as a duplicate"
    );
    proxy.calm();

    // Read back: each partition holds exactly its messages, once, in order.
    let consumer = consumer(&proxy.address(), &[]);
    assign(&consumer, topic, 3, Offset::Beginning);
    let mut seen: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.values().map(Vec::len).sum::<usize>() < 3 * PER_PARTITION {
        assert!(
            Instant::now() < deadline,
            "consumed only {:?}",
            seen.iter().map(|(p, v)| (*p, v.len())).collect::<Vec<_>>()
        );
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await else {
            continue;
        };
        let payload = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
        seen.entry(m.partition()).or_default().push(payload);
    }
    // Nothing beyond: a duplicate would show up here.
    if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await {
        panic!("an extra message at {}:{}", m.partition(), m.offset());
    }
    for (partition, payloads) in seen {
        let expected: Vec<String> = (0..PER_PARTITION).map(|i| format!("{partition}:{i}")).collect();
        assert_eq!(payloads, expected, "partition {partition}");
    }
    consumer.unassign().unwrap();
}

//! Durability: topics and acknowledged records survive a clean stop, a kill -9, and a kill -9 in
//! the middle of a stream of acks=all produces.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Offset;

use crate::broker::TestBroker;
use crate::clients::{
    assert_same_records, assign, consume, consumer, create_topic, generate_records, produce_all, producer,
    recent_base_timestamp, TestRecord,
};

const PARTITIONS: i32 = 3;

/// (partition, offset, payload) of a record the broker acknowledged.
type Acked = (i32, i64, Vec<u8>);

/// Partition count of `topic` as the broker reports it in Metadata.
fn partition_count(bootstrap: &str, topic: &str) -> usize {
    let metadata = consumer(bootstrap, &[])
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("Metadata request");
    let topic_metadata = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .unwrap_or_else(|| panic!("metadata has no topic {topic}"));
    assert!(
        topic_metadata.error().is_none(),
        "metadata error for {topic}: {:?}",
        topic_metadata.error()
    );
    topic_metadata.partitions().len()
}

/// Every record in partitions `0..partitions` of `topic`, from the log start to the high
/// watermark the broker reports.
async fn read_everything(bootstrap: &str, topic: &str, partitions: i32) -> Vec<TestRecord> {
    let consumer = consumer(bootstrap, &[]);
    let mut total = 0;
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .expect("ListOffsets for watermarks");
        total += usize::try_from(high - low).expect("high watermark >= log start");
    }
    assign(&consumer, topic, partitions, Offset::Beginning);
    consume(&consumer, total, Duration::from_secs(60)).await
}

/// Produces to a fresh broker, ends it with `end`, restarts it and checks that the topic, its
/// partitions and every acknowledged record are there, and that new records append after them.
async fn survives(end: impl FnOnce(&mut TestBroker)) {
    let mut broker = TestBroker::start();
    create_topic(broker.bootstrap(), "durable", PARTITIONS).await;
    create_topic(broker.bootstrap(), "durable-empty", 1).await;
    let mut records = generate_records(3_000, PARTITIONS, recent_base_timestamp());
    produce_all(&producer(broker.bootstrap(), &[]), "durable", &mut records).await;

    end(&mut broker);
    broker.restart();

    assert_eq!(partition_count(broker.bootstrap(), "durable"), 3);
    assert_eq!(partition_count(broker.bootstrap(), "durable-empty"), 1);
    let consumed = read_everything(broker.bootstrap(), "durable", PARTITIONS).await;
    assert_same_records(&records, &consumed);

    // New records continue each partition's offsets where the recovered log ends.
    let mut more = generate_records(30, PARTITIONS, recent_base_timestamp());
    produce_all(&producer(broker.bootstrap(), &[]), "durable", &mut more).await;
    for (i, record) in more.iter().enumerate() {
        assert_eq!(
            record.offset,
            1_000 + i64::try_from(i).expect("fits") / i64::from(PARTITIONS),
            "record {i} produced after the restart to partition {}",
            record.partition
        );
    }
}

#[tokio::test]
async fn topics_and_records_survive_clean_stop() {
    survives(TestBroker::stop).await;
}

#[tokio::test]
async fn topics_and_acknowledged_records_survive_kill9() {
    survives(TestBroker::kill9).await;
}

/// Reads `topic` back; returns what it holds and the (partition, offset) of every acknowledged
/// record missing from it. One that came back with other content fails the test at once.
async fn missing_acknowledged(
    bootstrap: &str,
    topic: &str,
    acked: &[Acked],
) -> (Vec<TestRecord>, Vec<(i32, i64)>) {
    let stored = read_everything(bootstrap, topic, PARTITIONS).await;
    let by_position: HashMap<(i32, i64), &TestRecord> =
        stored.iter().map(|r| ((r.partition, r.offset), r)).collect();
    let mut lost = Vec::new();
    for (partition, offset, payload) in acked {
        match by_position.get(&(*partition, *offset)) {
            Some(record) => assert_eq!(
                record.payload.as_deref(),
                Some(payload.as_slice()),
                "acknowledged record {partition}/{offset} came back with other content"
            ),
            None => lost.push((*partition, *offset)),
        }
    }
    drop(by_position);
    (stored, lost)
}

/// Stops `produce_until_stopped`, waits (at most `within`) for its last window, and returns
/// every record acknowledged.
async fn stop_producing(
    stop: &AtomicBool,
    producing: tokio::task::JoinHandle<()>,
    acked: &Mutex<Vec<Acked>>,
    within: Duration,
) -> Vec<Acked> {
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(within, producing)
        .await
        .expect("the producer's last window completes in time")
        .expect("producer task");
    std::mem::take(&mut *acked.lock().expect("acked lock"))
}

/// Produces to the partitions of `topic` round-robin, `window` records in flight at a time,
/// until `stop`; every delivered record goes into `acked` with its partition and offset.
fn produce_until_stopped(
    producer: FutureProducer,
    topic: &'static str,
    window: usize,
    acked: &Arc<Mutex<Vec<Acked>>>,
    stop: &Arc<AtomicBool>,
    payload: impl Fn(u64) -> Vec<u8> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let acked = Arc::clone(acked);
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        let mut next = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut in_flight = Vec::with_capacity(window);
            for _ in 0..window {
                let bytes = payload(next);
                let partition =
                    i32::try_from(next % u64::try_from(PARTITIONS).expect("positive")).expect("fits");
                next += 1;
                let record = FutureRecord::<(), [u8]>::to(topic)
                    .partition(partition)
                    .payload(&bytes);
                if let Ok(delivery) = producer.send_result(record) {
                    in_flight.push((bytes.clone(), delivery));
                }
            }
            for (bytes, delivery) in in_flight {
                if let Ok(Ok(delivery)) = delivery.await {
                    acked
                        .lock()
                        .expect("acked lock")
                        .push((delivery.partition, delivery.offset, bytes));
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_acks_all_produce_loses_no_acknowledged_record() {
    let mut broker = TestBroker::start();
    create_topic(broker.bootstrap(), "crash", PARTITIONS).await;

    // Records still queued when the broker dies fail after message.timeout.ms instead of
    // waiting for a broker that will come back on another port.
    let crashing = producer(broker.bootstrap(), &[("message.timeout.ms", "3000")]);
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // A window of 50 records in flight, so the crash lands mid-batch.
    let producing = produce_until_stopped(crashing, "crash", 50, &acked, &stop, |n| {
        format!("crash-record-{n}").into_bytes()
    });

    tokio::time::sleep(Duration::from_secs(3)).await;
    let acked_before_kill = acked.lock().expect("acked lock").len();
    broker.kill9();
    // The producer task ends after message.timeout.ms.
    let acked = stop_producing(&stop, producing, &acked, Duration::from_secs(30)).await;
    assert!(
        acked_before_kill >= 100,
        "only {acked_before_kill} records were acknowledged in 3 s: the test proves nothing"
    );

    broker.restart();
    let (stored, lost) = missing_acknowledged(broker.bootstrap(), "crash", &acked).await;
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records are missing after kill -9 and restart",
        lost.len(),
        acked.len()
    );

    // The recovered log accepts new records right after its end.
    let mut more = generate_records(3, PARTITIONS, recent_base_timestamp());
    produce_all(&producer(broker.bootstrap(), &[]), "crash", &mut more).await;
    for record in &more {
        let end = stored
            .iter()
            .filter(|r| r.partition == record.partition)
            .map(|r| r.offset + 1)
            .max()
            .unwrap_or(0);
        assert_eq!(
            record.offset, end,
            "first record after recovery in partition {}",
            record.partition
        );
    }
}

/// A clean stop leaves Kafka's `.kafka_cleanshutdown` marker and every partition's recovery
/// point in `recovery-point-offset-checkpoint`; the next start takes them (and says so in its
/// log), removes the marker, and serves every record; a kill -9 afterwards leaves no marker.
#[tokio::test]
async fn a_clean_stop_leaves_the_marker_and_recovery_points_and_the_next_start_clears_the_marker() {
    let mut broker = TestBroker::start();
    create_topic(broker.bootstrap(), "marked", PARTITIONS).await;
    let mut records = generate_records(300, PARTITIONS, recent_base_timestamp());
    produce_all(&producer(broker.bootstrap(), &[]), "marked", &mut records).await;
    broker.stop();

    let marker = broker.data_dir().join(".kafka_cleanshutdown");
    assert!(marker.exists(), "no clean shutdown marker");
    let checkpoint = std::fs::read_to_string(broker.data_dir().join("recovery-point-offset-checkpoint"))
        .expect("recovery point checkpoint");
    let mut lines = checkpoint.lines();
    assert_eq!(lines.next(), Some("0"), "version line");
    for p in 0..PARTITIONS {
        assert!(
            checkpoint.lines().any(|l| l == format!("marked {p} 100")),
            "partition {p} checkpointed at its log end:\n{checkpoint}"
        );
    }

    broker.restart();
    assert!(!marker.exists(), "the marker outlived the start");
    assert!(
        broker.log_text().contains("clean_shutdown=true"),
        "the start did not take the clean shutdown"
    );
    let consumed = read_everything(broker.bootstrap(), "marked", PARTITIONS).await;
    assert_same_records(&records, &consumed);

    broker.kill9();
    assert!(!marker.exists(), "a kill -9 left a clean shutdown marker");
    broker.restart();
    assert!(broker.log_text().contains("clean_shutdown=false"));
    let consumed = read_everything(broker.bootstrap(), "marked", PARTITIONS).await;
    assert_same_records(&records, &consumed);
}

/// A free loopback port, for a broker that must come back where its clients left it.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// How many times `kill_9_loop_under_acks_all_load_loses_no_acknowledged_record` kills the
/// broker: 20 in the test suite, more through `scripts/kill-loop.sh N`.
fn kill_rounds() -> usize {
    rounds_from_env("KEEL_KILL_LOOP_ROUNDS", 20)
}

/// A kill loop's round count: `var` if set (the long scripts), else `default`.
pub(crate) fn rounds_from_env(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loop_under_acks_all_load_loses_no_acknowledged_record() {
    // One port across restarts, so one librdkafka producer rides through every crash,
    // retrying what was in flight; its delivery reports say what was acknowledged.
    let port = free_port();
    let mut broker = TestBroker::builder()
        .with("listeners", format!("PLAINTEXT://127.0.0.1:{port}"))
        .start();
    let bootstrap = broker.bootstrap().to_string();
    create_topic(&bootstrap, "looped", PARTITIONS).await;
    let looping = producer(
        &bootstrap,
        &[
            ("message.timeout.ms", "120000"),
            ("reconnect.backoff.ms", "20"),
            ("reconnect.backoff.max.ms", "200"),
            ("retry.backoff.ms", "20"),
            ("retry.backoff.max.ms", "200"),
        ],
    );
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = produce_until_stopped(looping, "looped", 100, &acked, &stop, |n| {
        format!("loop-record-{n}-{}", "x".repeat((n % 200) as usize)).into_bytes()
    });

    let rounds = kill_rounds();
    let mut acked_at_kill = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // Kill at a different point of the load each time.
        let wait = 300 + (round as u64 * 137) % 500;
        let target = acked.lock().expect("acked lock").len() + 50;
        let started = std::time::Instant::now();
        while acked.lock().expect("acked lock").len() < target && started.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(wait)).await;
        acked_at_kill.push(acked.lock().expect("acked lock").len());
        broker.kill9();
        broker.restart();
        assert_eq!(
            broker.bootstrap(),
            bootstrap,
            "the broker came back on another port"
        );
    }
    // Let the producer get everything it retried acknowledged, then stop it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked = stop_producing(&stop, producing, &acked, Duration::from_secs(150)).await;
    // Every round must have seen new acknowledgements, or a kill proved nothing.
    for pair in acked_at_kill.windows(2) {
        assert!(
            pair[1] > pair[0],
            "no record acknowledged between two kills: {acked_at_kill:?}"
        );
    }

    let (_, lost) = missing_acknowledged(&bootstrap, "looped", &acked).await;
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records missing after {rounds} kills, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    eprintln!(
        "{rounds} kills under load: {} acknowledged records all read back",
        acked.len()
    );
}

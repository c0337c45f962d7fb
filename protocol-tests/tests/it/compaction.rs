//! Compaction through real clients (issue 11): a keyed topic with overwrites and tombstones,
//! produced in every codec, is cleaned down to the latest record of each key at its original
//! offset (tombstones kept until `delete.retention.ms`), read back with rdkafka and with
//! kafka-python.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset};

use crate::broker::TestBroker;
use crate::clients::{admin, admin_options, assign, consumer, producer};

/// offset -> (key, value; `None` for a tombstone).
type Records = BTreeMap<i64, (String, Option<String>)>;

/// Every record of partition 0, read with rdkafka from the start to the high watermark.
async fn read_all(bootstrap: &str, topic: &str) -> Records {
    let reader = consumer(bootstrap, &[]);
    let (_, high) = reader
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("ListOffsets");
    assign(&reader, topic, 1, Offset::Beginning);
    let mut out = Records::new();
    while out.last_key_value().is_none_or(|(o, _)| o + 1 < high) {
        let m = tokio::time::timeout(Duration::from_secs(15), reader.recv())
            .await
            .expect("a record within 15 s")
            .expect("consume");
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        out.insert(m.offset(), (text(m.key()).expect("a key"), text(m.payload())));
    }
    out
}

/// What compaction keeps of `produced` below `end`: the latest record of each key.
fn compacted(produced: &Records, end: i64) -> Records {
    let mut latest = BTreeMap::new();
    for (&offset, (key, _)) in produced.range(..end) {
        latest.insert(key.clone(), offset);
    }
    produced
        .iter()
        .filter(|(&o, (k, _))| o >= end || latest.get(k) == Some(&o))
        .map(|(&o, r)| (o, r.clone()))
        .collect()
}

#[tokio::test]
async fn keyed_topics_in_every_codec_compact_to_the_latest_value_per_key() {
    let broker = TestBroker::builder()
        .with("log.cleaner.backoff.ms", 100)
        .with("log.segment.delete.delay.ms", 200)
        .start();
    let bootstrap = broker.bootstrap();
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    let topics: Vec<NewTopic<'_>> = codecs
        .iter()
        .map(|c| {
            NewTopic::new(c, 1, TopicReplication::Fixed(1))
                .set("cleanup.policy", "compact")
                .set("segment.bytes", "2048")
                .set("min.cleanable.dirty.ratio", "0.01")
                .set("max.compaction.lag.ms", "300")
        })
        .collect();
    let created = admin(bootstrap)
        .create_topics(&topics, &admin_options())
        .await
        .expect("CreateTopics request");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    for codec in codecs {
        let p = producer(bootstrap, &[("compression.type", codec), ("linger.ms", "20")]);
        let mut produced = Records::new();
        for round in 0..12 {
            let mut sends = Vec::new();
            for k in 0..15 {
                let key = format!("key-{k}");
                // The last round deletes keys 0-2: their tombstones stay (delete.retention.ms is a day).
                let value = (round < 11 || k > 2).then(|| format!("value-{k}-{round}-{}", "x".repeat(40)));
                let record = FutureRecord::to(codec).partition(0).key(&key);
                let record = match &value {
                    Some(v) => record.payload(v),
                    None => record,
                };
                sends.push((key.clone(), value.clone(), p.send_result(record).expect("queued")));
            }
            for (key, value, sent) in sends {
                let delivery = sent.await.expect("delivery").expect("produced");
                produced.insert(delivery.offset, (key, value));
            }
        }
        // After max.compaction.lag.ms the next append rolls the segment, so everything before it
        // becomes cleanable.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let filler = p
            .send(
                FutureRecord::to(codec).partition(0).key("filler").payload("f"),
                Duration::from_secs(15),
            )
            .await
            .expect("produced")
            .offset;
        produced.insert(filler, ("filler".into(), Some("f".into())));
        let expected = compacted(&produced, filler);
        assert!(
            expected.len() < produced.len() / 5,
            "{codec}: overwrites to remove"
        );

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = read_all(bootstrap, codec).await;
            if now == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{codec}: not compacted to the latest value per key within 30 s: {} records of {} expected\n{now:?}",
                now.len(),
                expected.len()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let tombstones = expected.values().filter(|(_, v)| v.is_none()).count();
        assert_eq!(
            tombstones, 3,
            "{codec}: the tombstones stay until delete.retention.ms"
        );
    }

    // kafka-python reads the compacted logs the same (offsets with gaps, tombstones as nulls);
    // the test venv has no zstd, lz4 or snappy library for it, so the plain and gzip ones.
    let python = std::env::var("KEEL_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/read_partition.py");
    for codec in ["none", "gzip"] {
        let output = Command::new(&python)
            .arg(&script)
            .arg(bootstrap)
            .arg(codec)
            .output()
            .unwrap_or_else(|e| panic!("run {python}: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "kafka-python: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut read = Records::new();
        for line in stdout.lines().filter(|l| !l.starts_with("end ")) {
            let mut parts = line.splitn(3, ' ');
            let offset: i64 = parts.next().and_then(|o| o.parse().ok()).expect("an offset");
            let key = parts.next().expect("a key").to_string();
            let value = parts.next().filter(|v| *v != "-").map(str::to_string);
            read.insert(offset, (key, value));
        }
        assert_eq!(
            read,
            read_all(bootstrap, codec).await,
            "{codec}: kafka-python reads what rdkafka does"
        );
    }

    // The cleaner's progress is in Kafka's checkpoint file.
    let checkpoint = std::fs::read_to_string(broker.data_dir().join("cleaner-offset-checkpoint"))
        .expect("cleaner-offset-checkpoint");
    for codec in codecs {
        assert!(
            checkpoint.lines().any(|l| l.starts_with(&format!("{codec} 0 "))),
            "{checkpoint}"
        );
    }
}

/// How many times `kill_9_during_cleaning_loses_nothing_acknowledged` kills the broker: 10 in
/// the test suite, more through `scripts/kill-loop.sh` (`KEEL_CLEANER_KILL_ROUNDS`).
fn cleaner_kill_rounds() -> usize {
    crate::restart::rounds_from_env("KEEL_CLEANER_KILL_ROUNDS", 10)
}

/// kill -9 at random points while the cleaner works (its I/O budget keeps each round long, so
/// most kills land inside one) under an idempotent producer's overwrites of 50 keys: after
/// every restart the log is a valid compaction of what was produced. Each key's last
/// acknowledged record is there, at its offset, unless a later record of the same key is; no
/// record is read that was not produced, or at another offset than it was acknowledged at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_cleaning_loses_nothing_acknowledged() {
    use std::sync::{Arc, Mutex};

    let port = crate::restart::free_port();
    let mut broker = TestBroker::builder()
        .with("listeners", format!("PLAINTEXT://127.0.0.1:{port}"))
        .with("log.cleaner.backoff.ms", 20)
        .with("log.cleaner.io.max.bytes.per.second", 150_000)
        .with("log.segment.delete.delay.ms", 100)
        .start();
    let bootstrap = broker.bootstrap().to_string();
    let created = admin(&bootstrap)
        .create_topics(
            &[NewTopic::new("churn", 1, TopicReplication::Fixed(1))
                .set("cleanup.policy", "compact")
                .set("segment.bytes", "8192")
                .set("min.cleanable.dirty.ratio", "0.01")
                .set("max.compaction.lag.ms", "100")],
            &admin_options(),
        )
        .await
        .expect("CreateTopics request");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let p = producer(
        &bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "120000"),
            ("reconnect.backoff.ms", "20"),
            ("reconnect.backoff.max.ms", "200"),
            ("retry.backoff.ms", "20"),
            ("retry.backoff.max.ms", "200"),
        ],
    );
    // (key, value) of every record produced, and (offset, key, value) of those acknowledged.
    let acked: Arc<Mutex<Vec<(i64, String, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producing = {
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut in_flight = Vec::new();
                for _ in 0..50 {
                    let key = format!("key-{}", n % 50);
                    let value = format!("{key}-{n}-{}", "v".repeat(60));
                    n += 1;
                    let record = FutureRecord::to("churn").partition(0).key(&key).payload(&value);
                    if let Ok(delivery) = p.send_result(record) {
                        in_flight.push((key, value, delivery));
                    }
                }
                for (key, value, delivery) in in_flight {
                    if let Ok(Ok(d)) = delivery.await {
                        acked.lock().expect("acked").push((d.offset, key, value));
                    }
                }
            }
        })
    };

    let rounds = cleaner_kill_rounds();
    for round in 0..rounds {
        let target = acked.lock().expect("acked").len() + 500;
        let started = Instant::now();
        while acked.lock().expect("acked").len() < target && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200 + (round as u64 * 173) % 700)).await;
        broker.kill9();
        broker.restart();
        assert_eq!(
            broker.bootstrap(),
            bootstrap,
            "the broker came back on another port"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(150), producing)
        .await
        .expect("the producer's last window completes")
        .expect("producer task");
    let acked = std::mem::take(&mut *acked.lock().expect("acked"));

    let read = read_all(&bootstrap, "churn").await;
    let produced: BTreeMap<&str, i64> = acked.iter().map(|(o, _, v)| (v.as_str(), *o)).collect();
    for (offset, (key, value)) in &read {
        let value = value.as_deref().expect("no tombstones here");
        assert!(
            value.starts_with(&format!("{key}-")),
            "{offset}: {key} holds {value}"
        );
        if let Some(at) = produced.get(value) {
            assert_eq!(at, offset, "{value} was acknowledged at {at}, read at {offset}");
        }
    }
    let mut last_acked: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
    for (offset, key, value) in &acked {
        if last_acked.get(key.as_str()).is_none_or(|(o, _)| o < offset) {
            last_acked.insert(key, (*offset, value));
        }
    }
    for (key, (offset, value)) in &last_acked {
        let kept = read
            .get(offset)
            .is_some_and(|(k, v)| k == key && v.as_deref() == Some(value));
        let superseded = read.range(offset + 1..).any(|(_, (k, _))| k == key);
        assert!(
            kept || superseded,
            "{key}: its last acknowledged record (offset {offset}) is gone"
        );
    }
    let log = broker.log_text();
    let interrupted = log.matches("a cleaning that did not finish").count()
        + log.matches("completed the swap of a cleaned segment").count();
    let rounds_cleaned = log.matches("cleaned log").count();
    assert!(rounds_cleaned > 0, "the cleaner never finished a round");
    assert!(
        read.len() < acked.len() / 2,
        "compacted: {} of {} records left",
        read.len(),
        acked.len()
    );
    eprintln!(
        "{rounds} kills: {} records acknowledged, {} left after compaction, {rounds_cleaned} rounds, {interrupted} interrupted cleanings finished at start",
        acked.len(),
        read.len()
    );
    assert!(
        interrupted > 0,
        "no kill landed inside a cleaning: the test proved nothing"
    );
}

/// Kafka's cross-check of the compaction lags: `min.compaction.lag.ms` above
/// `max.compaction.lag.ms` is INVALID_CONFIG, at creation and at alteration.
#[tokio::test]
async fn a_minimum_compaction_lag_above_the_maximum_is_an_invalid_config() {
    use rdkafka::types::RDKafkaErrorCode;

    let broker = TestBroker::start();
    let admin = admin(broker.bootstrap());
    let created = admin
        .create_topics(
            &[
                NewTopic::new("lags-bad", 1, TopicReplication::Fixed(1))
                    .set("cleanup.policy", "compact")
                    .set("min.compaction.lag.ms", "1000")
                    .set("max.compaction.lag.ms", "500"),
                NewTopic::new("lags-good", 1, TopicReplication::Fixed(1))
                    .set("min.compaction.lag.ms", "1000"),
            ],
            &admin_options(),
        )
        .await
        .expect("CreateTopics request");
    assert!(
        matches!(&created[0], Err((_, RDKafkaErrorCode::InvalidConfig))),
        "{created:?}"
    );
    assert!(created[1].is_ok(), "{created:?}");
    // IncrementalAlterConfigs SET of the maximum alone: merged with the topic's minimum, it
    // conflicts. (rust-rdkafka's AlterConfigs reports every resource as a success, so the wire.)
    let mut wire = crate::wire::WireClient::connect(broker.bootstrap());
    const TOPIC: i8 = 2;
    const SET: i8 = 0;
    const INVALID_CONFIG: i16 = 40;
    let set_max = |max| [("max.compaction.lag.ms", SET, Some(max))];
    assert_eq!(
        crate::dynamic_configs::alter(&mut wire, TOPIC, "lags-good", &set_max("999")),
        INVALID_CONFIG
    );
    assert_eq!(
        crate::dynamic_configs::alter(&mut wire, TOPIC, "lags-good", &set_max("1000")),
        0
    );
}

/// The cleaner yields the CPU to produce and fetch: its threads run at nice 10, the others at
/// the broker's own priority.
#[test]
fn cleaner_threads_run_below_the_priority_of_request_threads() {
    let broker = TestBroker::start();
    let tasks = PathBuf::from(format!("/proc/{}/task", broker.pid()));
    // Thread names are cut to 15 bytes in /proc: "keel-log-cleane".
    let mut cleaners = Vec::new();
    let mut others = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    // The thread lowers its own priority as it starts: look until it has.
    while cleaners != [10] && Instant::now() < deadline {
        cleaners.clear();
        others.clear();
        for task in std::fs::read_dir(&tasks)
            .expect("list the broker's threads")
            .flatten()
        {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            // comm is in parentheses and may hold spaces; the fields after it are fixed.
            let Some((head, tail)) = stat.rsplit_once(')') else {
                continue;
            };
            let comm = head
                .split_once('(')
                .map(|(_, c)| c.to_owned())
                .unwrap_or_default();
            // tail: " state ppid ..."; nice is field 19 of stat, the 17th after comm.
            let nice: i32 = tail
                .split_whitespace()
                .nth(16)
                .and_then(|n| n.parse().ok())
                .unwrap_or(i32::MIN);
            if comm.starts_with("keel-log-clean") {
                cleaners.push(nice);
            } else {
                others.push(nice);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        cleaners,
        vec![10],
        "one cleaner thread (log.cleaner.threads=1), at nice 10"
    );
    assert!(!others.is_empty() && others.iter().all(|&n| n == 0), "{others:?}");
}

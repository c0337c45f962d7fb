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

//! Retention through real clients (issue 11): segments past `retention.ms` or
//! `retention.bytes` leave the disk, the low watermark follows, and a consumer positioned below
//! it is reset by its `auto.offset.reset`.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::Offset;

use crate::broker::TestBroker;
use crate::clients::{admin, admin_options, assign, consumer, producer};

const HOUR_MS: i64 = 3_600_000;

fn now_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(now.as_millis()).expect("millis fit in i64")
}

/// Produces one record per call and waits for it, so each lands in a batch of its own.
async fn produce(bootstrap: &str, topic: &str, count: usize, timestamp: i64) {
    let producer = producer(bootstrap, &[]);
    let payload = vec![b'x'; 200];
    for i in 0..count {
        let key = format!("k{i}");
        producer
            .send(
                FutureRecord::to(topic)
                    .partition(0)
                    .key(&key)
                    .payload(&payload)
                    .timestamp(timestamp),
                Duration::from_secs(15),
            )
            .await
            .expect("produce");
    }
}

fn watermarks(bootstrap: &str, topic: &str) -> (i64, i64) {
    consumer(bootstrap, &[])
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("ListOffsets")
}

/// Waits until the low watermark leaves 0; returns the watermarks.
async fn low_watermark_moves(bootstrap: &str, topic: &str) -> (i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let marks = watermarks(bootstrap, topic);
        if marks.0 > 0 {
            return marks;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: the low watermark stayed at 0"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (base offsets of the `.log` files, their total size, how many `.deleted` files) in a
/// partition directory.
fn segment_files(dir: &Path) -> (Vec<i64>, u64, usize) {
    let (mut bases, mut bytes, mut deleted) = (Vec::new(), 0, 0);
    for entry in std::fs::read_dir(dir).expect("partition directory") {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".deleted") {
            deleted += 1;
        } else if let Some(base) = name.strip_suffix(".log") {
            bases.push(base.parse().expect("segment name"));
            bytes += entry.metadata().expect("metadata").len();
        }
    }
    bases.sort_unstable();
    (bases, bytes, deleted)
}

fn partition_dir(broker: &TestBroker, topic: &str) -> std::path::PathBuf {
    std::fs::read_dir(broker.data_dir())
        .expect("log directory")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{topic}-0")) && !n.ends_with("-delete"))
        })
        .unwrap_or_else(|| panic!("no directory for {topic}-0"))
}

/// Waits for the delayed removal of the `.deleted` files.
async fn deleted_files_removed(dir: &Path) -> (Vec<i64>, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (bases, bytes, deleted) = segment_files(dir);
        if deleted == 0 {
            return (bases, bytes);
        }
        assert!(
            Instant::now() < deadline,
            "{deleted} .deleted files stayed in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn retention_deletes_old_segments_by_time_and_by_size_and_consumers_reset() {
    let broker = TestBroker::builder()
        .with("log.retention.check.interval.ms", 300)
        .with("log.segment.delete.delay.ms", 500)
        .start();
    let bootstrap = broker.bootstrap();
    fn topic(name: &str) -> NewTopic<'_> {
        NewTopic::new(name, 1, TopicReplication::Fixed(1)).set("segment.bytes", "1024")
    }
    let created = admin(bootstrap)
        .create_topics(
            &[topic("aged"), topic("sized").set("retention.bytes", "4096")],
            &admin_options(),
        )
        .await
        .expect("CreateTopics request");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    // "aged": 30 records two hours old, then 10 fresh ones. Kept at first: the default
    // retention.ms is 7 days.
    produce(bootstrap, "aged", 30, now_ms() - 2 * HOUR_MS).await;
    produce(bootstrap, "aged", 10, now_ms()).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(watermarks(bootstrap, "aged"), (0, 40));
    // An hour's retention, set at run time, applies without a restart.
    let altered = admin(bootstrap)
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("aged")).set("retention.ms", &HOUR_MS.to_string())],
            &admin_options(),
        )
        .await
        .expect("AlterConfigs request");
    assert!(altered[0].is_ok(), "{altered:?}");
    let (low, high) = low_watermark_moves(bootstrap, "aged").await;
    assert!(low <= 30 && high == 40, "aged: watermarks ({low}, {high})");
    let (bases, _) = deleted_files_removed(&partition_dir(&broker, "aged")).await;
    assert_eq!(
        bases.first(),
        Some(&low),
        "the first segment on disk starts at the low watermark"
    );

    // "sized": 40 records of about 280 bytes each, kept to at least 4096 bytes. Retention
    // passes run while they are produced: let a few more pass before looking.
    produce(bootstrap, "sized", 40, now_ms()).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (low, high) = low_watermark_moves(bootstrap, "sized").await;
    assert_eq!(high, 40);
    let (bases, bytes) = deleted_files_removed(&partition_dir(&broker, "sized")).await;
    assert_eq!(bases.first(), Some(&low));
    assert!(
        (4096..4096 + 1024 + 300).contains(&bytes),
        "sized: {bytes} bytes left on disk for retention.bytes 4096"
    );

    // A consumer positioned below the low watermark gets OFFSET_OUT_OF_RANGE and resets to it.
    for (name, low) in [("aged", watermarks(bootstrap, "aged").0), ("sized", low)] {
        let reader = consumer(bootstrap, &[("auto.offset.reset", "earliest")]);
        assign(&reader, name, 1, Offset::Offset(0));
        let first = tokio::time::timeout(Duration::from_secs(15), reader.recv())
            .await
            .expect("a record within 15 s")
            .expect("consume");
        assert_eq!(
            rdkafka::Message::offset(&first),
            low,
            "{name}: reset to the low watermark"
        );
    }
}

#[tokio::test]
async fn the_broker_wide_budget_deletes_the_oldest_closed_segments_across_topics_first() {
    const BUDGET: u64 = 5_000;
    let broker = TestBroker::builder()
        .with("log.retention.check.interval.ms", 300)
        .with("log.segment.delete.delay.ms", 300)
        .with("keel.log.dirs.max.bytes", BUDGET)
        .start();
    let bootstrap = broker.bootstrap();
    let topic = |name| NewTopic::new(name, 1, TopicReplication::Fixed(1)).set("segment.bytes", "1024");
    let created = admin(bootstrap)
        .create_topics(&[topic("older"), topic("newer")], &admin_options())
        .await
        .expect("CreateTopics request");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    // Each topic about 5.5 kB, either alone over the budget; time retention (7 days)
    // would keep all of it.
    produce(bootstrap, "older", 20, now_ms() - 2 * HOUR_MS).await;
    produce(bootstrap, "newer", 20, now_ms() - HOUR_MS).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let (older, newer) = loop {
        let older = deleted_files_removed(&partition_dir(&broker, "older")).await;
        let newer = deleted_files_removed(&partition_dir(&broker, "newer")).await;
        if older.1 + newer.1 <= BUDGET {
            break (older, newer);
        }
        assert!(
            Instant::now() < deadline,
            "still {} bytes on disk for a budget of {BUDGET}",
            older.1 + newer.1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The older topic's closed segments went first, all of them; only its active one is left.
    assert_eq!(older.0.len(), 1, "older topic segments left: {:?}", older.0);
    let older_marks = watermarks(bootstrap, "older");
    assert_eq!((older.0[0], older_marks.1), (older_marks.0, 20));
    // Then the newer topic's oldest, only as many as the budget needed.
    let newer_marks = watermarks(bootstrap, "newer");
    assert!(
        newer_marks.0 > 0 && newer.0.first() == Some(&newer_marks.0),
        "{newer_marks:?} {newer:?}"
    );
    assert!(
        older.1 + newer.1 + 1024 + 300 > BUDGET,
        "more was deleted than the budget needed: {} bytes left",
        older.1 + newer.1
    );
}

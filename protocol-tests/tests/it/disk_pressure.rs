//! Disk pressure (issue 11, beyond Kafka): above `keel.disk.pressure.soft.ratio` only topics
//! marked `keel.priority=critical` accept produce, above the hard ratio none does; a refused
//! produce is retriable and carries a throttle time, so clients wait and retry, and writing
//! resumes by itself when the pressure falls. The thresholds are set against the test
//! machine's real filesystem (a ratio of 0 is always exceeded, 1 never) and moved at run time
//! by AlterConfigs, which stands in for space filling and being freed.

use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiVersionsRequest, ProduceRequest};
use rdkafka::admin::{AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::producer::FutureRecord;

use crate::bad_input::produce_request;
use crate::broker::TestBroker;
use crate::clients::{admin, admin_options, producer, recent_base_timestamp};
use crate::metrics::{metrics_address, scrape};
use crate::wire::{record_batch, WireClient};

/// NOT_ENOUGH_REPLICAS: retried by librdkafka, the Java client and franz-go without a
/// metadata refresh, and meaning that nothing was written.
const REFUSED: i16 = 19;

/// One wire Produce of a record to `bulk` and one to `vital`: (their error codes, throttle).
fn produce_both(wire: &mut WireClient, value: &[u8]) -> ((i16, i16), i32) {
    let batch = || record_batch(&[(b"k", value)], recent_base_timestamp()).to_vec();
    let request = produce_request(vec![("bulk", vec![(0, batch())]), ("vital", vec![(0, batch())])]);
    let version = wire.version::<ProduceRequest>(12);
    let response = wire.call(&request, version);
    let code = |topic: &str| {
        response
            .responses
            .iter()
            .find(|t| t.name.0.as_str() == topic)
            .map(|t| t.partition_responses[0].error_code)
            .unwrap_or_else(|| panic!("no answer for {topic}"))
    };
    ((code("bulk"), code("vital")), response.throttle_time_ms)
}

/// The value of an unlabelled gauge in a /metrics scrape.
fn gauge(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

/// (keel_disk_pressure, keel_disk_pressure_level), after checking the usage gauges.
fn pressure_gauges(metrics: &str) -> (f64, f64) {
    let text = scrape(metrics);
    let ratio = gauge(&text, "keel_log_dir_used_ratio");
    assert!(ratio > 0.0 && ratio <= 1.0, "keel_log_dir_used_ratio {ratio}");
    assert!(gauge(&text, "keel_log_dir_used_bytes") > 0.0);
    (
        gauge(&text, "keel_disk_pressure"),
        gauge(&text, "keel_disk_pressure_level"),
    )
}

/// AlterConfigs on the broker: `settings` replace its whole dynamic set, as in Kafka.
async fn set_broker(bootstrap: &str, settings: &[(&str, &str)]) {
    let config = settings
        .iter()
        .fold(AlterConfig::new(ResourceSpecifier::Broker(1)), |c, (k, v)| {
            c.set(k, v)
        });
    let results = admin(bootstrap)
        .alter_configs(&[config], &admin_options())
        .await
        .expect("AlterConfigs request");
    assert!(results[0].is_ok(), "{results:?}");
    // The next pressure check (every 100 ms here) applies it.
    tokio::time::sleep(Duration::from_millis(400)).await;
}

#[tokio::test]
async fn disk_pressure_refuses_normal_topics_first_and_writing_resumes_when_it_falls() {
    let broker = TestBroker::builder()
        .with("keel.disk.pressure.soft.ratio", 0)
        .with("keel.disk.check.interval.ms", 100)
        .with("keel.disk.pressure.throttle.ms", 250)
        .with("metrics.listener", "127.0.0.1:0")
        .start();
    let metrics = metrics_address(&broker);
    let bootstrap = broker.bootstrap();
    let created = admin(bootstrap)
        .create_topics(
            &[
                NewTopic::new("bulk", 1, TopicReplication::Fixed(1)),
                NewTopic::new("vital", 1, TopicReplication::Fixed(1)).set("keel.priority", "critical"),
            ],
            &admin_options(),
        )
        .await
        .expect("CreateTopics request");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Soft pressure: the normal topic is refused, retriably, with a throttle; the critical one
    // accepts.
    assert_eq!(pressure_gauges(&metrics), (1.0, 1.0));
    let mut wire = WireClient::connect(bootstrap);
    assert_eq!(produce_both(&mut wire, b"soft"), ((REFUSED, 0), 250));
    // The throttle is enforced (librdkafka does not wait it out itself): the connection reads
    // its next request only after it.
    let answered = Instant::now();
    let versions = wire.call(&ApiVersionsRequest::default(), 0);
    assert_eq!(versions.error_code, 0);
    assert!(
        answered.elapsed() >= Duration::from_millis(200),
        "the next request was answered {:?} after a 250 ms throttle",
        answered.elapsed()
    );

    // librdkafka retries the refused record instead of failing it, and it is written once the
    // pressure falls.
    let client = producer(bootstrap, &[("message.timeout.ms", "30000")]);
    let waiting = client.send(
        FutureRecord::to("bulk").partition(0).key("k").payload("waited"),
        Duration::from_secs(30),
    );
    let lifted = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        set_broker(bootstrap, &[("keel.disk.pressure.soft.ratio", "1")]).await;
    };
    let (delivered, ()) = tokio::join!(waiting, lifted);
    let delivery = delivered.expect("the record waits out the pressure and is delivered");
    assert_eq!(
        (delivery.partition, delivery.offset),
        (0, 0),
        "nothing of bulk was written under pressure"
    );
    assert_eq!(produce_both(&mut wire, b"normal"), ((0, 0), 0));
    assert_eq!(pressure_gauges(&metrics), (0.0, 0.0));

    // Hard pressure: every topic is refused, the critical one too.
    set_broker(bootstrap, &[("keel.disk.pressure.hard.ratio", "0")]).await;
    assert_eq!(pressure_gauges(&metrics), (1.0, 2.0));
    assert_eq!(produce_both(&mut wire, b"hard"), ((REFUSED, REFUSED), 250));
    set_broker(
        bootstrap,
        &[
            ("keel.disk.pressure.soft.ratio", "1"),
            ("keel.disk.pressure.hard.ratio", "1"),
        ],
    )
    .await;
    assert_eq!(produce_both(&mut wire, b"after"), ((0, 0), 0));
}

/// A tmpfs of a few MiB mounted for one test (the tests run as root: scripts/test.sh installs
/// packages), lazily unmounted when dropped.
struct SmallFilesystem {
    dir: tempfile::TempDir,
}

impl SmallFilesystem {
    fn mount(mib: u64) -> SmallFilesystem {
        let dir = tempfile::Builder::new()
            .prefix("keel-small-fs-")
            .tempdir()
            .expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount(8)");
        assert!(
            status.success(),
            "cannot mount a {mib} MiB tmpfs at {} ({status}): this test needs root, as scripts/test.sh runs",
            dir.path().display()
        );
        SmallFilesystem { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The real thing, on a filesystem made full: a write that finds no space is answered with the
/// same retriable error and throttle as hard disk pressure (never KAFKA_STORAGE_ERROR, never an
/// offline directory), nothing acknowledged is lost or corrupt, offset commits are refused
/// retriably too, and produce and commits resume by themselves once space is freed. The
/// pressure thresholds are set to 1 so that only the full filesystem stops writes.
#[tokio::test]
async fn a_full_filesystem_refuses_writes_retriably_loses_nothing_and_writing_resumes_when_space_returns() {
    use rdkafka::consumer::{CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};

    let fs = SmallFilesystem::mount(32);
    // Ballast the test frees to give space back.
    std::fs::write(fs.path().join("ballast"), vec![7u8; 8 << 20]).expect("ballast");
    let broker = TestBroker::builder()
        .with("log.dirs", fs.path().join("data").display())
        .with("keel.disk.pressure.soft.ratio", 1)
        .with("keel.disk.pressure.hard.ratio", 1)
        .with("keel.disk.check.interval.ms", 100)
        .with("keel.disk.pressure.throttle.ms", 50)
        .with("log.segment.bytes", 1 << 20)
        .start();
    let bootstrap = broker.bootstrap();
    let created = admin(bootstrap)
        .create_topics(
            &[NewTopic::new("fill", 1, TopicReplication::Fixed(1))],
            &admin_options(),
        )
        .await
        .expect("CreateTopics request");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    // 64 KiB records until the filesystem refuses one.
    let mut wire = WireClient::connect(bootstrap);
    let version = wire.version::<ProduceRequest>(12);
    let produce = |wire: &mut WireClient, n: usize| {
        let value = format!("{n:08}-{}", "x".repeat(64 * 1024));
        let batch = record_batch(&[(b"k", value.as_bytes())], recent_base_timestamp()).to_vec();
        let response = wire.call(&produce_request(vec![("fill", vec![(0, batch)])]), version);
        let p = &response.responses[0].partition_responses[0];
        (p.error_code, p.base_offset, response.throttle_time_ms)
    };
    let mut acked: Vec<(i64, usize)> = Vec::new();
    let mut n = 0;
    let refusal = loop {
        let (code, offset, throttle) = produce(&mut wire, n);
        if code != 0 {
            break (code, throttle);
        }
        acked.push((offset, n));
        n += 1;
        assert!(n < 2_000, "32 MiB never filled up");
    };
    assert_eq!(refusal.0, REFUSED, "a full filesystem is answered retriably");
    assert!(refusal.1 > 0, "with a throttle time");
    assert!(acked.len() > 100, "only {} records fit", acked.len());
    // Still refused, and still serving: nothing was taken offline.
    assert_eq!(produce(&mut wire, n).0, REFUSED);
    wire.call(&ApiVersionsRequest::default(), 3);

    // Take the last bytes too (what a 64 KiB record did not fit in), so the metadata store's
    // small writes find no room either.
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(fs.path().join("filler")).expect("filler");
        while filler.write_all(&[0u8; 4096]).is_ok() {}
        let _ = filler.write_all(&[0u8; 1]);
    }
    // An offset commit (RocksDB) on the full filesystem is refused retriably, not a crash.
    let committer = crate::clients::consumer(bootstrap, &[("group.id", "fill-group")]);
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("fill", 0, Offset::Offset(1))
        .expect("offset");
    // (Each commit is a small synced RocksDB write; the log's last page may still hold a few.)
    let mut full_commit = Ok(());
    for i in 1..=500 {
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("fill", 0, Offset::Offset(i))
            .expect("offset");
        full_commit = committer.commit(&offsets, CommitMode::Sync);
        if full_commit.is_err() {
            break;
        }
    }

    // Space returns: produce resumes by itself.
    std::fs::remove_file(fs.path().join("ballast")).expect("free the ballast");
    std::fs::remove_file(fs.path().join("filler")).expect("free the filler");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, offset, _) = produce(&mut wire, n);
        if code == 0 {
            acked.push((offset, n));
            break;
        }
        assert_eq!(code, REFUSED);
        assert!(
            Instant::now() < deadline,
            "produce did not resume after space was freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Commits work again (within a while: the store may need to recover from its write error).
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = committer.commit(&offsets, CommitMode::Sync) {
        assert!(
            Instant::now() < deadline,
            "offset commits did not resume: {e} (while full: {full_commit:?})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "commit while full: {full_commit:?}; {} records acknowledged",
        acked.len()
    );
    assert!(
        full_commit.is_err(),
        "an offset commit on a full filesystem reported success"
    );

    // Every acknowledged record reads back, whole (the consumer checks CRCs).
    let reader = crate::clients::consumer(bootstrap, &[]);
    crate::clients::assign(&reader, "fill", 1, Offset::Beginning);
    for &(offset, n) in &acked {
        let m = tokio::time::timeout(Duration::from_secs(15), reader.recv())
            .await
            .expect("a record within 15 s")
            .expect("consume");
        use rdkafka::Message;
        assert_eq!(m.offset(), offset, "record {n}");
        assert!(
            m.payload()
                .is_some_and(|p| p.starts_with(format!("{n:08}-").as_bytes())),
            "record {n} at {offset} came back with other content"
        );
    }
    assert!(
        broker.log_text().contains("filesystem is full"),
        "the full filesystem was not what refused"
    );
}

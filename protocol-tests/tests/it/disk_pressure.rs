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

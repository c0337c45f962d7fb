//! kcat (librdkafka's command-line client, as operators use it) against the broker.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use rdkafka::producer::FutureRecord;

use crate::broker::TestBroker;
use crate::clients::{create_topic, producer, recent_base_timestamp};

/// Runs kcat with `args` and asserts it exited 0; returns its stdout.
fn kcat(broker: &TestBroker, args: &[&str]) -> String {
    let output: Output = Command::new("kcat")
        .arg("-b")
        .arg(broker.bootstrap())
        .args(args)
        .output()
        .expect("run kcat (installed by scripts/setup.sh)");
    assert!(
        output.status.success(),
        "kcat {args:?} exited with {}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kcat output is UTF-8")
}

fn write_lines(path: &Path, count: usize) -> Vec<String> {
    let lines: Vec<String> = (0..count)
        .map(|i| format!("line {i}: {}", "kcat ".repeat(i % 17)))
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").expect("write input file");
    lines
}

#[tokio::test]
async fn kcat_reads_back_a_produced_file_line_for_line() {
    let broker = TestBroker::start();
    create_topic(broker.bootstrap(), "kcat-lines", 1).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("lines.txt");
    let lines = write_lines(&input, 2_000);

    let file = input.to_str().expect("UTF-8 path");
    kcat(&broker, &["-P", "-t", "kcat-lines", "-l", file]);
    let output = kcat(
        &broker,
        &["-C", "-t", "kcat-lines", "-o", "beginning", "-e", "-q"],
    );

    let read: Vec<&str> = output.lines().collect();
    assert_eq!(read.len(), lines.len(), "kcat read a different number of lines");
    assert_eq!(read, lines, "kcat read different lines or order");
}

#[tokio::test]
async fn kcat_produce_auto_creates_topic_with_num_partitions() {
    let broker = TestBroker::builder()
        .with("auto.create.topics.enable", "true")
        .with("num.partitions", 2)
        .start();
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("lines.txt");
    let lines = write_lines(&input, 100);

    let file = input.to_str().expect("UTF-8 path");
    kcat(&broker, &["-P", "-t", "kcat-auto", "-l", file]);
    let metadata = kcat(&broker, &["-L", "-t", "kcat-auto"]);
    assert!(
        metadata.contains("topic \"kcat-auto\" with 2 partitions"),
        "auto-created topic should have num.partitions=2 partitions:\n{metadata}"
    );

    let output = kcat(&broker, &["-C", "-t", "kcat-auto", "-o", "beginning", "-e", "-q"]);
    let mut read: Vec<&str> = output.lines().collect();
    let mut expected: Vec<&str> = lines.iter().map(String::as_str).collect();
    read.sort_unstable();
    expected.sort_unstable();
    assert_eq!(
        read, expected,
        "kcat read different lines across the two partitions"
    );
}

#[tokio::test]
async fn kcat_metadata_lists_the_broker_and_the_topic() {
    let broker = TestBroker::start();
    create_topic(broker.bootstrap(), "kcat-meta", 3).await;

    let metadata = kcat(&broker, &["-L"]);
    let broker_line = metadata
        .lines()
        .find(|line| line.trim_start().starts_with("broker "))
        .unwrap_or_else(|| panic!("no broker line in kcat -L:\n{metadata}"));
    assert!(
        broker_line.contains(&format!("at {}", broker.bootstrap())),
        "the broker must advertise its bound address {}:\n{metadata}",
        broker.bootstrap()
    );
    assert!(metadata.contains(" 1 brokers:"), "a single broker:\n{metadata}");
    assert!(
        metadata.contains("topic \"kcat-meta\" with 3 partitions:"),
        "kcat -L lists the topic with its partitions:\n{metadata}"
    );
    for partition in 0..3 {
        assert!(
            metadata.contains(&format!("partition {partition}, leader ")),
            "partition {partition} with a leader:\n{metadata}"
        );
    }
}

#[tokio::test]
async fn kcat_queries_offsets_by_timestamp() {
    let broker = TestBroker::start();
    create_topic(broker.bootstrap(), "kcat-times", 1).await;
    let base = recent_base_timestamp();
    let producer = producer(broker.bootstrap(), &[]);
    // Ten records one second apart: offset i has timestamp base + i s.
    for i in 0..10_i64 {
        let payload = format!("at {i}s");
        producer
            .send(
                FutureRecord::<(), _>::to("kcat-times")
                    .partition(0)
                    .timestamp(base + i * 1_000)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .expect("produce timestamped record");
    }

    // The first offset whose timestamp is at or after the query.
    for (query, expected) in [
        (base, 0),
        (base + 3_500, 4),
        (base + 9_000, 9),
        (base - 60_000, 0),
    ] {
        let spec = format!("kcat-times:0:{query}");
        let output = kcat(&broker, &["-Q", "-t", &spec]);
        assert_eq!(
            queried_offset(&output),
            Some(expected),
            "kcat -Q -t {spec}:\n{output}"
        );
    }
    // After the last record Kafka answers offset -1 (no such record).
    let spec = format!("kcat-times:0:{}", base + 60_000);
    let output = kcat(&broker, &["-Q", "-t", &spec]);
    assert_eq!(queried_offset(&output), Some(-1), "kcat -Q -t {spec}:\n{output}");
}

/// kcat -Q prints `<topic> [<partition>]  offset <offset>`.
fn queried_offset(output: &str) -> Option<i64> {
    output
        .lines()
        .find(|line| line.contains(" offset "))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|offset| offset.parse().ok())
}

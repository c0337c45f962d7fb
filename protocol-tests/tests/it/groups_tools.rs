//! Consumer groups with clients other than the rdkafka crate: kcat's balanced consumer (`-G`)
//! and kafka-python (a protocol implementation without librdkafka) sharing a group with an
//! rdkafka member.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::broker::TestBroker;
use crate::clients::{create_topic, producer};
use crate::groups::{await_balanced, fetch_offsets, produce_payloads, GroupMember};
use crate::wire::WireClient;

fn group_broker() -> TestBroker {
    TestBroker::builder()
        .with("group.initial.rebalance.delay.ms", 0)
        .with("group.min.session.timeout.ms", 1000)
        .start()
}

/// One run of kcat's balanced consumer in `group` until the end of every assigned partition;
/// returns the payloads it printed.
fn kcat_group_run(bootstrap: &str, group: &str, topic: &str) -> Vec<String> {
    let output = Command::new("timeout")
        .args(["60", "kcat", "-b", bootstrap, "-G", group, topic])
        .args(["-X", "auto.offset.reset=earliest", "-e", "-q"])
        .output()
        .expect("run kcat (installed by scripts/setup.sh)");
    assert!(
        output.status.success(),
        "kcat -G exited with {}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8(output.stdout)
        .expect("kcat output is UTF-8")
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn sorted_strings(payloads: &BTreeSet<Vec<u8>>) -> Vec<String> {
    let mut lines: Vec<String> = payloads
        .iter()
        .map(|p| String::from_utf8(p.clone()).expect("UTF-8 payload"))
        .collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_balanced_consumer_reads_everything_once_and_resumes_from_its_commits() {
    let broker = group_broker();
    let bootstrap = broker.bootstrap();
    create_topic(bootstrap, "kcat-group", 3).await;
    let producer = producer(bootstrap, &[]);
    let first = produce_payloads(&producer, "kcat-group", 3, 0..300).await;

    let read = kcat_group_run(bootstrap, "kcat-g", "kcat-group");
    assert_eq!(
        read,
        sorted_strings(&first),
        "first run reads every record exactly once"
    );

    let again = kcat_group_run(bootstrap, "kcat-g", "kcat-group");
    assert!(
        again.is_empty(),
        "a second run of the group read {} old records",
        again.len()
    );

    let second = produce_payloads(&producer, "kcat-group", 3, 300..330).await;
    let read = kcat_group_run(bootstrap, "kcat-g", "kcat-group");
    assert_eq!(
        read,
        sorted_strings(&second),
        "a third run reads only the new records"
    );

    let mut wire = WireClient::connect(bootstrap);
    let committed = fetch_offsets(&mut wire, "kcat-g", "kcat-group", &[0, 1, 2]);
    let offsets: Vec<i64> = committed.values().map(|(offset, _)| *offset).collect();
    assert_eq!(
        offsets,
        [110, 110, 110],
        "kcat committed the end of each partition"
    );
}

/// The lines a child process printed so far, collected on a thread.
fn collect_lines(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            sink.lock().expect("lines lock").push(line);
        }
    });
    lines
}

/// The last `assigned` line of the Python member.
fn python_assignment(lines: &[String]) -> Option<BTreeSet<i32>> {
    lines.iter().rev().find_map(|line| {
        line.strip_prefix("assigned ").map(|list| {
            list.split(',')
                .filter(|p| !p.is_empty())
                .map(|p| p.parse().expect("partition number"))
                .collect()
        })
    })
}

/// (partition, value) of each record the Python member printed.
fn python_records(lines: &[String]) -> Vec<(i32, String)> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix("record "))
        .map(|rest| {
            let mut fields = rest.splitn(3, ' ');
            let partition = fields.next().and_then(|p| p.parse().ok()).expect("partition");
            let _offset = fields.next();
            (partition, fields.next().expect("value").to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_python_and_rdkafka_members_share_a_group_and_consume_everything() {
    let broker = group_broker();
    let bootstrap = broker.bootstrap();
    create_topic(bootstrap, "mixed", 4).await;
    let rdkafka_member = GroupMember::start(bootstrap, "mixed-group", "mixed", "rdkafka", &[]);
    await_balanced(&[&rdkafka_member], 4, Duration::from_secs(30)).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let stop_file = dir.path().join("stop");
    let python = std::env::var("KEEL_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/group_member.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .args([bootstrap, "mixed", "mixed-group"])
        .arg(&stop_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {python} {}: {e}", script.display()));
    let stdout = collect_lines(child.stdout.take().expect("stdout"));
    let stderr = collect_lines(child.stderr.take().expect("stderr"));
    let python_log = || {
        format!(
            "kafka-python stdout:\n{}\nstderr:\n{}",
            stdout.lock().expect("lock").join("\n"),
            stderr.lock().expect("lock").join("\n")
        )
    };

    // Both hold partitions: disjoint, together all four, steady for a second.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut steady: Option<(Instant, BTreeSet<i32>, BTreeSet<i32>)> = None;
    let (rdkafka_partitions, python_partitions) = loop {
        let mine = rdkafka_member.assignment();
        let theirs = python_assignment(&stdout.lock().expect("lock")).unwrap_or_default();
        let union: BTreeSet<i32> = mine.union(&theirs).copied().collect();
        let balanced = !mine.is_empty()
            && !theirs.is_empty()
            && mine.is_disjoint(&theirs)
            && union == (0..4).collect::<BTreeSet<i32>>();
        match &steady {
            Some((since, m, t)) if balanced && *m == mine && *t == theirs => {
                if since.elapsed() > Duration::from_secs(1) {
                    break (mine, theirs);
                }
            }
            _ if balanced => steady = Some((Instant::now(), mine.clone(), theirs.clone())),
            _ => steady = None,
        }
        assert!(
            Instant::now() < deadline,
            "rdkafka ({mine:?}) and kafka-python ({theirs:?}) did not share the 4 partitions\n{}",
            python_log()
        );
        if let Some(status) = child.try_wait().expect("poll python") {
            panic!("kafka-python exited early with {status}\n{}", python_log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let produced = produce_payloads(&producer(bootstrap, &[]), "mixed", 4, 0..400).await;
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let mut seen: BTreeSet<Vec<u8>> = rdkafka_member.seen().into_iter().map(|s| s.payload).collect();
        seen.extend(
            python_records(&stdout.lock().expect("lock"))
                .into_iter()
                .map(|(_, value)| value.into_bytes()),
        );
        if seen == produced {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} records consumed by the group\n{}",
            seen.intersection(&produced).count(),
            produced.len(),
            python_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No rebalance happened while reading: each record was read once, by its partition's owner.
    let python_read = python_records(&stdout.lock().expect("lock"));
    let rdkafka_read = rdkafka_member.seen();
    assert!(
        !python_read.is_empty() && !rdkafka_read.is_empty(),
        "both members read records"
    );
    assert_eq!(
        python_read.len() + rdkafka_read.len(),
        produced.len(),
        "each record read once"
    );
    for (partition, value) in &python_read {
        assert!(
            python_partitions.contains(partition),
            "kafka-python read {value} from {partition}"
        );
    }
    for s in &rdkafka_read {
        assert!(
            rdkafka_partitions.contains(&s.partition),
            "rdkafka read partition {}",
            s.partition
        );
    }

    // kafka-python leaves; rdkafka takes over all four partitions.
    std::fs::write(&stop_file, b"").expect("create stop file");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait for python");
    assert!(
        status.success(),
        "kafka-python exited with {status}\n{}",
        python_log()
    );
    assert!(
        stdout.lock().expect("lock").iter().any(|l| l == "closed"),
        "{}",
        python_log()
    );
    await_balanced(&[&rdkafka_member], 4, Duration::from_secs(30)).await;
    rdkafka_member.close().await;
}

//! Python clients written from the protocol spec without librdkafka (kafka-python, aiokafka),
//! against the broker.

use std::path::PathBuf;
use std::process::Command;

use crate::broker::TestBroker;

/// Runs `python/<script> <bootstrap>` with the test venv's Python; returns its stdout after
/// checking it exited 0.
pub(crate) fn run_script(script: &str, bootstrap: &str) -> String {
    // scripts/test.sh points KEEL_PYTHON at a venv with kafka-python and aiokafka installed.
    let python = std::env::var("KEEL_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let output = Command::new(&python)
        .arg(&script)
        .arg(bootstrap)
        .output()
        .unwrap_or_else(|e| panic!("run {python} {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        script.display(),
        output.status
    );
    stdout.into_owned()
}

#[test]
fn kafka_python_creates_topics_and_round_trips_records() {
    let broker = TestBroker::start();
    let stdout = run_script("roundtrip.py", broker.bootstrap());
    // Its default producer is idempotent (kafka-python 3).
    assert!(stdout.contains("idempotently as producer"), "{stdout}");
    assert!(
        stdout.contains("kafka-python roundtrip ok: 1000 records"),
        "unexpected kafka-python output:\n{stdout}"
    );
}

#[test]
fn aiokafka_idempotent_producer_writes_each_record_once_in_order() {
    let broker = TestBroker::start();
    let stdout = run_script("aiokafka_idempotent.py", broker.bootstrap());
    assert!(
        stdout.contains("aiokafka idempotent ok: 1200 records"),
        "{stdout}"
    );
}

#[test]
fn kafka_python_and_aiokafka_transactions_commit_and_abort() {
    let broker = TestBroker::start();
    let stdout = run_script("transactions.py", broker.bootstrap());
    assert!(
        stdout.contains("kafka-python transactions ok: 20 committed, 20 aborted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("aiokafka transactions ok: 20 committed, 20 aborted"),
        "{stdout}"
    );
}

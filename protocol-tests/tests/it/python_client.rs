//! kafka-python, a client written from the protocol spec without librdkafka, against the broker.

use std::path::PathBuf;
use std::process::Command;

use crate::broker::TestBroker;

#[test]
fn kafka_python_creates_topics_and_round_trips_records() {
    let broker = TestBroker::start();
    // scripts/test.sh points KEEL_PYTHON at a venv with kafka-python installed.
    let python = std::env::var("KEEL_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/roundtrip.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(broker.bootstrap())
        .output()
        .unwrap_or_else(|e| panic!("run {python} {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kafka-python script exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("kafka-python roundtrip ok: 1000 records"),
        "unexpected kafka-python output:\n{stdout}\nstderr:\n{stderr}"
    );
}

//! Starting the broker as Kafka users configure it: per-listener advertised endpoints,
//! KAFKA_* environment variables and properties files, and refusals at start.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{keel_binary, TestBroker};
use crate::wire::WireClient;

/// A broker started by hand (for settings the fixture does not pass), killed on drop.
struct RawBroker {
    child: Child,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl RawBroker {
    fn start(args: &[String], env: &[(&str, String)]) -> (RawBroker, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new(keel_binary());
        cmd.args(args).env("RUST_LOG", "info").current_dir(dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn keel");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut broker = RawBroker {
            child,
            lines,
            _dir: dir,
        };
        let bound = broker.wait_for("listener bound");
        (broker, bound)
    }

    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("broker never printed {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for RawBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, name: &str) -> String {
    let start = line
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
        + name.len()
        + 1;
    line[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Runs keel expecting it to refuse to start; returns its combined output.
fn refused(args: &[String]) -> String {
    let out = Command::new(keel_binary())
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run keel");
    assert!(
        !out.status.success(),
        "keel started although it should have refused: {args:?}"
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn metadata_broker(bootstrap: &str) -> (String, i32) {
    let mut wire = WireClient::connect(bootstrap);
    let version = wire.version::<MetadataRequest>(12);
    let r = wire.call(&MetadataRequest::default().with_topics(Some(vec![])), version);
    assert_eq!(r.brokers.len(), 1);
    (r.brokers[0].host.to_string(), r.brokers[0].port)
}

#[test]
fn each_listener_advertises_its_own_endpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args: Vec<String> = [
        "listeners=PLAINTEXT://127.0.0.1:0,INTERNAL://127.0.0.1:0",
        "advertised.listeners=PLAINTEXT://127.0.0.1:0,INTERNAL://kafka-internal.example:19093",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("log.dirs={}", dir.path().display())])
    .flat_map(|o| ["--override".to_string(), o])
    .collect();
    let (mut broker, first) = RawBroker::start(&args, &[]);
    let second = broker.wait_for("listener bound");
    let (external, internal) = if first.contains("listener=PLAINTEXT") {
        (first, second)
    } else {
        (second, first)
    };
    let external_addr = field(&external, "bound");
    let internal_addr = field(&internal, "bound");
    let external_port: i32 = external_addr.rsplit(':').next().unwrap().parse().unwrap();
    // A host client through PLAINTEXT is told the PLAINTEXT endpoint (port 0 → the bound port);
    // an in-network client through INTERNAL is told the INTERNAL one.
    assert_eq!(
        metadata_broker(&external_addr),
        ("127.0.0.1".to_string(), external_port)
    );
    assert_eq!(
        metadata_broker(&internal_addr),
        ("kafka-internal.example".to_string(), 19093)
    );
}

#[test]
fn kafka_environment_variables_and_properties_files_configure_the_broker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let props = dir.path().join("server.properties");
    std::fs::write(
        &props,
        "# as Kafka writes it\nnum.partitions=2\nauto.create.topics.enable=true\n",
    )
    .unwrap();
    let args = vec![
        props.display().to_string(),
        "--override".into(),
        "listeners=PLAINTEXT://127.0.0.1:0".into(),
    ];
    // The environment beats the file, as in the apache/kafka image.
    let env = [
        ("KAFKA_LOG_DIRS", dir.path().join("data").display().to_string()),
        ("KAFKA_NUM_PARTITIONS", "3".into()),
    ];
    let (_broker, bound) = RawBroker::start(&args, &env);
    let mut wire = WireClient::connect(&field(&bound, "bound"));
    let version = wire.version::<MetadataRequest>(12);
    let topic =
        MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("from-env"))));
    let r = wire.call(
        &MetadataRequest::default()
            .with_topics(Some(vec![topic]))
            .with_allow_auto_topic_creation(true),
        version,
    );
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(
        r.topics[0].partitions.len(),
        3,
        "KAFKA_NUM_PARTITIONS=3 beats num.partitions=2 in the file"
    );
    assert!(
        dir.path().join("data").join("from-env-0").is_dir(),
        "KAFKA_LOG_DIRS chose the data directory"
    );
}

#[test]
fn an_invalid_value_stops_the_broker_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = refused(&[
        "--override".into(),
        "num.partitions=many".into(),
        "--override".into(),
        format!("log.dirs={}", dir.path().display()),
    ]);
    assert!(out.contains("num.partitions"), "the message names the key: {out}");
}

#[test]
fn a_data_directory_of_another_node_id_is_refused() {
    let mut broker = TestBroker::start();
    broker.stop();
    let out = refused(&[
        "--override".into(),
        "listeners=PLAINTEXT://127.0.0.1:0".into(),
        "--override".into(),
        format!("log.dirs={}", broker.data_dir().display()),
        "--override".into(),
        "node.id=7".into(),
    ]);
    assert!(out.contains("node.id"), "the message names node.id: {out}");
}

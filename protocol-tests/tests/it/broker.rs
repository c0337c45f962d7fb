//! `TestBroker`: the real `keel` binary on an ephemeral port with its own temporary data dir.
//!
//! The broker's stdout and stderr are captured line by line; when a test panics, the captured log
//! is printed so the failure shows what the broker saw. A test whose broker logged a panic or an
//! ERROR line (the broker's own fault, by the logging rules) fails.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a broker may take from spawn to its `listener bound` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a clean shutdown may take after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

type BrokerLog = Arc<Mutex<Vec<String>>>;

/// Extra `--override key=value` settings for a broker, on top of listeners and log.dirs.
#[derive(Default)]
pub struct TestBrokerBuilder {
    overrides: Vec<(String, String)>,
}

impl TestBrokerBuilder {
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.overrides.push((key.to_owned(), value.to_string()));
        self
    }

    pub fn start(self) -> TestBroker {
        let dir = tempfile::Builder::new()
            .prefix("keel-test-")
            .tempdir()
            .expect("create temp dir for the broker");
        let mut broker = TestBroker {
            bin: keel_binary(),
            dir,
            overrides: self.overrides,
            log: Arc::default(),
            capture: Vec::new(),
            child: None,
            bootstrap: String::new(),
        };
        broker.spawn();
        broker
    }
}

pub struct TestBroker {
    bin: PathBuf,
    dir: TempDir,
    overrides: Vec<(String, String)>,
    log: BrokerLog,
    /// The threads copying the broker's output into `log`; they end when its pipes close.
    capture: Vec<thread::JoinHandle<()>>,
    child: Option<Child>,
    bootstrap: String,
}

impl TestBroker {
    /// A broker with the default settings.
    pub fn start() -> TestBroker {
        Self::builder().start()
    }

    pub fn builder() -> TestBrokerBuilder {
        TestBrokerBuilder::default()
    }

    /// `127.0.0.1:<port>` of the running broker.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is not running").id()
    }

    /// Everything the broker (all its runs) has printed so far.
    pub fn log_text(&self) -> String {
        lock(&self.log).join("\n")
    }

    /// Fails the test if the broker process has exited (crashed) since it started.
    /// Watches for a short while, since a dying process closes its sockets a moment before
    /// it can be reaped.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("broker is not running");
        if let Some(status) = wait_with_timeout(child, Duration::from_millis(300)) {
            self.child = None;
            panic!("the broker process died: {status}");
        }
    }

    /// Clean shutdown: SIGTERM, then the process must exit with status 0.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("broker is not running");
        send_signal(child.id(), "TERM");
        let status = wait_with_timeout(&mut child, SHUTDOWN_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("broker did not exit within {SHUTDOWN_TIMEOUT:?} after SIGTERM");
        });
        assert_eq!(
            status.code(),
            Some(0),
            "broker must exit 0 after SIGTERM, got {status}"
        );
    }

    /// Crash: SIGKILL, no chance to flush or close anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("broker is not running");
        send_signal(child.id(), "KILL");
        let status = child.wait().expect("wait for killed broker");
        assert!(!status.success(), "SIGKILL must not look like a clean exit");
    }

    /// Starts the broker again on the same data dir (stopping it first if it still runs).
    /// The new run listens on a new ephemeral port: call `bootstrap()` again afterwards.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--override")
            .arg("listeners=PLAINTEXT://127.0.0.1:0")
            .arg("--override")
            .arg(format!("log.dirs={}", self.data_dir().display()));
        for (key, value) in &self.overrides {
            cmd.arg("--override").arg(format!("{key}={value}"));
        }
        let rust_log = std::env::var("KEEL_TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
        cmd.env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));

        // Only lines of this run count when looking for the bound address.
        let first_line = {
            let mut log = lock(&self.log);
            log.push(format!("---- keel started, pid {} ----", child.id()));
            log.len()
        };
        self.capture.push(capture_lines(
            child.stdout.take().expect("piped stdout"),
            &self.log,
        ));
        self.capture.push(capture_lines(
            child.stderr.take().expect("piped stderr"),
            &self.log,
        ));
        self.child = Some(child);
        self.bootstrap = self.wait_for_bound_address(first_line);
    }

    fn wait_for_bound_address(&mut self, first_line: usize) -> String {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(addr) = lock(&self.log)[first_line..]
                .iter()
                .filter(|line| line.contains("listener bound"))
                .find_map(|line| field(line, "bound"))
            {
                return addr;
            }
            let child = self.child.as_mut().expect("broker is running");
            if let Some(status) = child.try_wait().expect("poll broker process") {
                self.child = None;
                panic!("broker exited during startup with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "broker printed no `listener bound ... bound=` line within {STARTUP_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl TestBroker {
    /// The first line the broker logged that shows a fault of its own.
    fn unexpected_fault(&self) -> Option<String> {
        first_fault(&lock(&self.log)).cloned()
    }

    fn print_log(&self) {
        eprintln!(
            "==== keel broker log ({}) ====\n{}\n==== end of keel broker log ====",
            self.data_dir().display(),
            self.log_text()
        );
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Every line the broker printed is in the log once its pipes are drained.
        for capture in self.capture.drain(..) {
            let _ = capture.join();
        }
        if thread::panicking() {
            self.print_log();
        } else if let Some(fault) = self.unexpected_fault() {
            self.print_log();
            panic!("the broker logged a fault of its own: {fault}");
        }
    }
}

/// The binary under test: `$KEEL_BIN`, else `keel` next to the directory of this test binary
/// (`target/debug/deps/it-…` → `target/debug/keel`), as `cargo build --workspace` leaves it.
pub fn keel_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("KEEL_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("path of the test binary");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .join(format!("keel{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build --workspace --all-targets` first, or set KEEL_BIN",
        bin.display()
    );
    bin
}

/// Copies each line the broker prints into `log`, on a thread of its own.
fn capture_lines(pipe: impl Read + Send + 'static, log: &BrokerLog) -> thread::JoinHandle<()> {
    let log = Arc::clone(log);
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    lock(&log).push(text.trim_end().to_owned());
                }
            }
        }
    })
}

/// A panic, or an ERROR line: by the logging rules (`error` only for the broker's own faults) no
/// test may provoke one.
fn first_fault(lines: &[String]) -> Option<&String> {
    // A tracing line is `<timestamp> <LEVEL> <target>: <message>`.
    lines
        .iter()
        .find(|line| line.contains("panicked at") || line.split_whitespace().nth(1) == Some("ERROR"))
}

/// The value of `name=value` in a tracing line, without quotes.
fn field(line: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(prefix.as_str()))
        .map(|value| value.trim_matches('"').to_owned())
}

fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("poll broker process") {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A panicking test must still be able to print the log, so a poisoned lock is fine to take.
fn lock(log: &BrokerLog) -> std::sync::MutexGuard<'_, Vec<String>> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn field_reads_the_bound_address_from_a_tracing_line() {
    let line = "2025-01-01T00:00:00Z  INFO keel::server: listener bound listener=PLAINTEXT \
                bound=127.0.0.1:40123 advertised=127.0.0.1:40123";
    assert_eq!(field(line, "bound").as_deref(), Some("127.0.0.1:40123"));
    assert_eq!(field(line, "advertised").as_deref(), Some("127.0.0.1:40123"));
    assert_eq!(
        field("bound=\"127.0.0.1:1\"", "bound").as_deref(),
        Some("127.0.0.1:1")
    );
    assert_eq!(field(line, "missing"), None);
}

#[test]
fn panics_and_error_lines_are_faults_warnings_are_not() {
    let log = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    let quiet = log(&[
        "2025-01-01T00:00:00Z  INFO keel::server: listener bound",
        "2025-01-01T00:00:00Z  WARN keel::server::connection: closing connection reason=\"an ERROR reply\"",
    ]);
    assert_eq!(first_fault(&quiet), None);
    let error = log(&["x", "2025-01-01T00:00:00Z ERROR keel::log::flusher: fsync failed"]);
    assert_eq!(first_fault(&error).map(String::as_str), Some(error[1].as_str()));
    let panic = log(&["thread 'keel' panicked at broker/src/log/segment.rs:1:1:"]);
    assert!(first_fault(&panic).is_some());
}

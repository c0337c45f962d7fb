//! Clients that try to make the broker hold memory on their behalf: one that pipelines fetches
//! and never reads the replies, size prefixes that promise more than is sent (slowloris), and
//! many idle connections. Each is held to a bound, and a well-behaved client is served
//! throughout with nothing lost.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kafka_protocol::messages::FetchRequest;

use crate::bad_input::{closed_within, produce_request, vm_peak_kib, Survivor};
use crate::broker::TestBroker;
use crate::clients::{create_topic, recent_base_timestamp};
use crate::wire::{fetch_request, record_batch, WireClient};

/// Resident memory of a process now, and its high-water mark, in KiB (from /proc).
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets a process's peak RSS (VmHWM) to its current RSS.
fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
}

/// Writes `mib` MiB of 1 KiB records into partition 0 of `topic`, 900 records per batch.
fn fill_partition(bootstrap: &str, topic: &'static str, mib: usize) {
    let mut wire = WireClient::connect(bootstrap);
    let value = vec![b'x'; 1024];
    let records: Vec<(&[u8], &[u8])> = (0..900).map(|_| (&b"key"[..], &value[..])).collect();
    let batch = record_batch(&records, recent_base_timestamp()).to_vec();
    let version = wire.version::<kafka_protocol::messages::ProduceRequest>(9);
    for _ in 0..(mib * 1024 / 900 + 1) {
        let response = wire.call(&produce_request(vec![(topic, vec![(0, batch.clone())])]), version);
        let code = response.responses[0].partition_responses[0].error_code;
        assert_eq!(code, 0, "filling {topic}: produce error");
    }
}

#[tokio::test]
async fn a_client_that_never_reads_its_fetch_replies_holds_bounded_broker_memory() {
    // The default budget of queued reply bytes per connection (100 MiB), and fetches that each
    // ask for all of a 24 MiB partition: without the budget, 64 pipelined fetches would hold
    // 1.5 GiB of replies.
    let survivor = Survivor::start().await;
    let bootstrap = survivor.broker.bootstrap().to_string();
    create_topic(&bootstrap, "big", 1).await;
    fill_partition(&bootstrap, "big", 24);
    let pid = survivor.broker.pid();

    let mut hostile = WireClient::connect(&bootstrap);
    let version = hostile.version::<FetchRequest>(12);
    let mut fetch = fetch_request("big", 0, 0, 0);
    fetch.max_bytes = 64 << 20;
    fetch.topics[0].partitions[0].partition_max_bytes = 64 << 20;
    hostile
        .stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .expect("write timeout");
    let (rss_before, _) = rss_kib(pid);
    reset_peak_rss(pid);
    // Pipeline fetches until the broker stops reading them (the socket's buffers fill), and
    // never read a reply.
    let started = Instant::now();
    let mut sent = 0;
    while sent < 500 && started.elapsed() < Duration::from_secs(5) {
        let frame = hostile.frame(&fetch, version);
        if hostile.stream.write_all(&frame).is_err() {
            break;
        }
        sent += 1;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, peak) = rss_kib(pid);
    let grown_mib = peak.saturating_sub(rss_before) / 1024;
    eprintln!("a non-reading client sent {sent} fetches; broker RSS grew by at most {grown_mib} MiB");
    assert!(
        grown_mib < 400,
        "a client that never reads grew the broker by {grown_mib} MiB ({sent} fetches of 24 MiB sent)"
    );
    survivor.assert_still_serving().await;
    drop(hostile);
}

#[tokio::test]
async fn slowloris_size_prefixes_cost_only_the_bytes_sent_and_time_out() {
    let survivor = Survivor::start_on(
        TestBroker::builder()
            .with("connections.max.idle.ms", 3_000)
            .start(),
    )
    .await;
    let pid = survivor.broker.pid();
    let peak_before = vm_peak_kib(pid);
    let (rss_before, _) = rss_kib(pid);
    // Each claims the largest request allowed (100 MiB) and sends a little of it.
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut stream = TcpStream::connect(survivor.broker.bootstrap()).expect("connect");
            let mut bytes = (100_u32 << 20).to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0, 18, 0, 3, 0, 0, 0, 1]);
            bytes.extend_from_slice(&[0u8; 1000]);
            stream.write_all(&bytes).expect("send the start of a request");
            stream
        })
        .collect();
    // ... and trickles one more byte a second, which is not activity enough.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for stream in &mut slow {
            let _ = stream.write_all(&[0]);
        }
    }
    let grown_virtual_mib = vm_peak_kib(pid).saturating_sub(peak_before) / 1024;
    let (rss_after, _) = rss_kib(pid);
    eprintln!(
        "300 slowloris requests: broker virtual peak +{grown_virtual_mib} MiB, RSS +{} MiB",
        rss_after.saturating_sub(rss_before) / 1024
    );
    // 300 x 100 MiB allocated up front would be 29 GiB of address space.
    assert!(
        grown_virtual_mib < 1024,
        "300 requests that promised 100 MiB each grew the broker's address space by {grown_virtual_mib} MiB"
    );
    for stream in &mut slow {
        closed_within(stream, Duration::from_secs(10))
            .expect("a trickled request keeps its connection past connections.max.idle.ms");
    }
    survivor.assert_still_serving().await;
}

/// Open sockets of a process (its other descriptors, files the log or RocksDB open and close,
/// come and go independently of the connections counted).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn ten_thousand_idle_connections_are_held_with_bounded_memory() {
    const CONNECTIONS: usize = 10_000;
    let survivor = Survivor::start_on(TestBroker::builder().with("max.connections", 20_000).start()).await;
    let pid = survivor.broker.pid();
    let (rss_before, _) = rss_kib(pid);
    let mut idle = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        idle.push(TcpStream::connect(survivor.broker.bootstrap()).expect("connect an idle client"));
    }
    // Every connection accepted (each is a socket in the broker, beside its listener and the
    // well-behaved client's) before measuring.
    let deadline = Instant::now() + Duration::from_secs(30);
    // The listener is a socket too.
    while open_sockets(pid) < CONNECTIONS + 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        open_sockets(pid) > CONNECTIONS,
        "the broker holds {} sockets for {CONNECTIONS} connections",
        open_sockets(pid)
    );
    let (rss_after, _) = rss_kib(pid);
    let per_connection = rss_after.saturating_sub(rss_before) * 1024 / CONNECTIONS as u64;
    eprintln!(
        "{CONNECTIONS} idle connections: broker RSS {} MiB -> {} MiB ({per_connection} bytes each)",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        per_connection < 16 * 1024,
        "each idle connection costs the broker {per_connection} bytes of memory"
    );
    survivor.assert_still_serving().await;
    drop(idle);
}

//! Transactions with librdkafka's transactional producer: commit and abort as read_committed and
//! read_uncommitted consumers see them, fencing by a second producer with the same transactional
//! id, and a transaction left open that the coordinator aborts when it times out.

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset};

use crate::broker::TestBroker;
use crate::clients::{assign, consumer, producer};
use crate::wire::WireClient;
use crate::wire_apis::create;

fn transactional(bootstrap: &str, id: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut settings = vec![("transactional.id", id), ("enable.idempotence", "true")];
    settings.extend_from_slice(extra);
    let p = producer(bootstrap, &settings);
    p.init_transactions(Duration::from_secs(30))
        .expect("init_transactions");
    p
}

async fn send(p: &FutureProducer, topic: &str, partition: i32, payload: &str) {
    let record = FutureRecord::<(), _>::to(topic)
        .partition(partition)
        .payload(payload);
    p.send(record, Duration::from_secs(30))
        .await
        .unwrap_or_else(|(e, _)| panic!("send {payload}: {e}"));
}

/// Every payload in `topic` (partitions `0..partitions`) a consumer with `isolation` reads
/// until it has been idle for `idle`.
async fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    idle: Duration,
) -> Vec<String> {
    let c: StreamConsumer = consumer(bootstrap, &[("isolation.level", isolation)]);
    assign(&c, topic, partitions, Offset::Beginning);
    let mut out = Vec::new();
    while let Ok(Ok(m)) = tokio::time::timeout(idle, c.recv()).await {
        out.push(String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap());
    }
    c.unassign().unwrap();
    out.sort();
    out
}

fn expected(prefix: &str, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_sees_committed_transactions_whole_and_aborted_ones_never() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "txn", 2, 1, &[], false), 0);
    let p = transactional(broker.bootstrap(), "txn-basic", &[]);
    for (prefix, commit) in [("first", true), ("aborted", false), ("second", true)] {
        p.begin_transaction().unwrap();
        for i in 0..10 {
            send(&p, "txn", i % 2, &format!("{prefix}-{i:03}")).await;
        }
        if commit {
            p.commit_transaction(Duration::from_secs(30)).unwrap();
        } else {
            p.abort_transaction(Duration::from_secs(30)).unwrap();
        }
    }
    let committed = read_all(
        broker.bootstrap(),
        "txn",
        2,
        "read_committed",
        Duration::from_secs(3),
    )
    .await;
    let mut want = expected("first", 10);
    want.extend(expected("second", 10));
    want.sort();
    assert_eq!(committed, want);
    let everything = read_all(
        broker.bootstrap(),
        "txn",
        2,
        "read_uncommitted",
        Duration::from_secs(3),
    )
    .await;
    let mut want_all = want.clone();
    want_all.extend(expected("aborted", 10));
    want_all.sort();
    assert_eq!(
        everything, want_all,
        "read_uncommitted sees aborted records (and no markers)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "fenced", 1, 1, &[], false), 0);
    let first = transactional(broker.bootstrap(), "txn-fence", &[]);
    first.begin_transaction().unwrap();
    send(&first, "fenced", 0, "zombie-000").await;

    // The new producer's InitProducerId aborts what the first left open and bumps the epoch.
    let second = transactional(broker.bootstrap(), "txn-fence", &[]);
    second.begin_transaction().unwrap();
    send(&second, "fenced", 0, "live-000").await;
    second.commit_transaction(Duration::from_secs(30)).unwrap();

    let err = first
        .commit_transaction(Duration::from_secs(30))
        .expect_err("the fenced producer cannot commit");
    let fatal = match &err {
        KafkaError::Transaction(e) => e.is_fatal(),
        _ => false,
    };
    assert!(fatal, "a fenced producer's error is fatal: {err}");
    let committed = read_all(
        broker.bootstrap(),
        "fenced",
        1,
        "read_committed",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(committed, vec!["live-000".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_times_out_is_aborted_and_unblocks_read_committed() {
    let broker = TestBroker::builder()
        .with("transaction.abort.timed.out.transaction.cleanup.interval.ms", 200)
        .start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "stuck", 1, 1, &[], false), 0);
    let abandoned = transactional(
        broker.bootstrap(),
        "txn-timeout",
        &[("transaction.timeout.ms", "1500"), ("message.timeout.ms", "1500")],
    );
    abandoned.begin_transaction().unwrap();
    send(&abandoned, "stuck", 0, "abandoned-000").await;
    // A plain record after it: read_committed consumers cannot see it while the transaction is
    // open, and must once the coordinator aborted it.
    let plain = producer(broker.bootstrap(), &[]);
    send(&plain, "stuck", 0, "plain-000").await;
    let c: StreamConsumer = consumer(broker.bootstrap(), &[("isolation.level", "read_committed")]);
    assign(&c, "stuck", 1, Offset::Beginning);
    let started = Instant::now();
    let m = tokio::time::timeout(Duration::from_secs(20), c.recv())
        .await
        .expect("the timed-out transaction is aborted and the LSO moves")
        .expect("a record");
    assert_eq!(
        m.payload(),
        Some(&b"plain-000"[..]),
        "only the plain record is visible"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it waited for the abort"
    );
    // The abandoned producer was fenced by the timeout: it can no longer commit.
    assert!(abandoned.commit_transaction(Duration::from_secs(10)).is_err());
    c.unassign().unwrap();
}

/// One consume-transform-produce step: up to `max` records from the input, their upper-cased
/// copies to the output and the consumer's positions committed in one transaction. With
/// `crash`, the transaction is left open and both clients dropped, as a process that dies
/// would leave them.
async fn transform_batch(
    consumer: &StreamConsumer,
    producer: &FutureProducer,
    max: usize,
    crash: bool,
) -> usize {
    let mut taken = Vec::new();
    while taken.len() < max {
        match tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await {
            Ok(Ok(m)) => taken.push((
                m.partition(),
                m.offset(),
                m.payload().unwrap_or_default().to_vec(),
            )),
            _ => break,
        }
    }
    if taken.is_empty() {
        return 0;
    }
    producer.begin_transaction().unwrap();
    let mut positions = rdkafka::TopicPartitionList::new();
    for (partition, offset, payload) in &taken {
        let out = String::from_utf8_lossy(payload).to_uppercase();
        send(producer, "ctp-out", *partition, &out).await;
        positions
            .add_partition_offset("ctp-in", *partition, Offset::Offset(offset + 1))
            .unwrap();
    }
    if crash {
        return taken.len();
    }
    let metadata = consumer.group_metadata().expect("group metadata");
    producer
        .send_offsets_to_transaction(&positions, &metadata, Duration::from_secs(30))
        .unwrap();
    producer.commit_transaction(Duration::from_secs(30)).unwrap();
    taken.len()
}

fn ctp_clients(bootstrap: &str) -> (StreamConsumer, FutureProducer) {
    let c: StreamConsumer = consumer(
        bootstrap,
        &[
            ("group.id", "ctp"),
            ("isolation.level", "read_committed"),
            ("session.timeout.ms", "6000"),
        ],
    );
    c.subscribe(&["ctp-in"]).unwrap();
    (c, transactional(bootstrap, "ctp-transformer", &[]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_is_exactly_once_across_a_crash() {
    let broker = TestBroker::builder()
        .with("group.initial.rebalance.delay.ms", 0)
        .start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "ctp-in", 2, 1, &[], false), 0);
    assert_eq!(create(&mut wire, "ctp-out", 2, 1, &[], false), 0);
    let input = producer(broker.bootstrap(), &[]);
    const N: usize = 300;
    for i in 0..N {
        send(&input, "ctp-in", (i % 2) as i32, &format!("record-{i:03}")).await;
    }

    let (c, p) = ctp_clients(broker.bootstrap());
    let mut done = 0;
    for _ in 0..3 {
        done += transform_batch(&c, &p, 40, false).await;
    }
    assert!(done > 0, "the first worker transformed nothing");
    // It dies in the middle of its next transaction: output written, offsets not committed.
    transform_batch(&c, &p, 40, true).await;
    drop(c);
    drop(p);

    // Its successor fences the open transaction (aborting its output) and resumes from the
    // committed offsets.
    let (c, p) = ctp_clients(broker.bootstrap());
    while transform_batch(&c, &p, 50, false).await > 0 {}
    drop(c);

    let output = read_all(
        broker.bootstrap(),
        "ctp-out",
        2,
        "read_committed",
        Duration::from_secs(3),
    )
    .await;
    let mut want: Vec<String> = (0..N).map(|i| format!("RECORD-{i:03}")).collect();
    want.sort();
    assert_eq!(output.len(), N, "exactly once: no loss, no duplicate");
    assert_eq!(output, want);
    // The dead worker's output is in the log, aborted: read_uncommitted sees it twice.
    let everything = read_all(
        broker.bootstrap(),
        "ctp-out",
        2,
        "read_uncommitted",
        Duration::from_secs(3),
    )
    .await;
    assert!(
        everything.len() > N,
        "the crashed transaction wrote {} records",
        everything.len() - N
    );
}

/// The records of transaction `n`: ten, tagged with whether it is meant to commit.
async fn run_transaction(p: &FutureProducer, n: usize, commit: bool) {
    p.begin_transaction().unwrap();
    for i in 0..10 {
        send(
            p,
            "crash",
            i % 2,
            &format!("txn{n}-{}-{i}", if commit { "c" } else { "a" }),
        )
        .await;
    }
    if commit {
        p.commit_transaction(Duration::from_secs(30)).unwrap();
    } else {
        p.abort_transaction(Duration::from_secs(30)).unwrap();
    }
}

/// The transactions whose records a read_committed consumer sees, each checked to be whole.
async fn committed_transactions(bootstrap: &str) -> Vec<usize> {
    let seen = read_all(bootstrap, "crash", 2, "read_committed", Duration::from_secs(3)).await;
    let mut counts = std::collections::BTreeMap::new();
    for r in &seen {
        let (txn, rest) = r.split_once('-').unwrap();
        assert!(rest.starts_with("c-"), "an aborted record is visible: {r}");
        *counts.entry(txn[3..].parse::<usize>().unwrap()).or_insert(0) += 1;
    }
    for (txn, n) in &counts {
        assert_eq!(*n, 10, "transaction {txn} is not whole");
    }
    counts.into_keys().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_transactions_keeps_committed_ones_whole_and_aborted_ones_invisible() {
    let mut broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "crash", 2, 1, &[], false), 0);
    let p = transactional(broker.bootstrap(), "txn-crash", &[]);
    for n in 0..7 {
        run_transaction(&p, n, n % 2 == 0).await;
    }
    // Killed right after the last commit was acknowledged: its markers may still be on their
    // way, and the restarted coordinator must finish them.
    broker.kill9();
    drop(p);
    broker.restart();
    assert_eq!(committed_transactions(broker.bootstrap()).await, vec![0, 2, 4, 6]);

    // Killed with a transaction open: its successor fences and aborts it.
    let p = transactional(broker.bootstrap(), "txn-crash", &[]);
    p.begin_transaction().unwrap();
    for i in 0..10 {
        send(&p, "crash", i % 2, &format!("txn7-a-{i}")).await;
    }
    broker.kill9();
    drop(p);
    broker.restart();
    let p = transactional(broker.bootstrap(), "txn-crash", &[]);
    run_transaction(&p, 8, true).await;
    assert_eq!(
        committed_transactions(broker.bootstrap()).await,
        vec![0, 2, 4, 6, 8]
    );
    let everything = read_all(
        broker.bootstrap(),
        "crash",
        2,
        "read_uncommitted",
        Duration::from_secs(3),
    )
    .await;
    assert!(
        everything.iter().any(|r| r.starts_with("txn7-")),
        "the open transaction's records were written"
    );
}

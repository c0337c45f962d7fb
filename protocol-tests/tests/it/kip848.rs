//! KIP-848 consumer groups: librdkafka consumers with `group.protocol=consumer` (the broker owns
//! session timeout and heartbeat interval) joining, splitting partitions, leaving and resuming
//! after a broker restart; ConsumerGroupHeartbeat / ConsumerGroupDescribe over the raw wire for
//! Kafka's epochs and error codes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::consumer_group_heartbeat_response::Assignment;
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::Message;

use crate::broker::TestBroker;
use crate::clients::producer;
use crate::groups::{
    commit, commit_errors, create_topic_blocking, fetch_offsets, group_id, join_request, produce_payloads,
    str, topic_name, wait_until, GROUP_ID_NOT_FOUND, UNKNOWN_MEMBER_ID,
};
use crate::wire::WireClient;

const INVALID_REQUEST: i16 = 42;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const FENCED_MEMBER_EPOCH: i16 = 110;
const UNSUPPORTED_ASSIGNOR: i16 = 112;
const STALE_MEMBER_EPOCH: i16 = 113;
const INVALID_REGULAR_EXPRESSION: i16 = 128;
const SETTLE: Duration = Duration::from_secs(30);

fn kip848_broker() -> TestBroker {
    TestBroker::builder()
        .with("group.consumer.heartbeat.interval.ms", 300)
        .with("group.consumer.min.heartbeat.interval.ms", 300)
        .with("group.consumer.session.timeout.ms", 6000)
        .with("group.consumer.min.session.timeout.ms", 6000)
        .start()
}

/// An rdkafka consumer with `group.protocol=consumer`, polling on a thread of its own and
/// committing what it read (synchronously, every poll that read something).
struct Kip848Consumer {
    consumer: Arc<BaseConsumer>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    seen: Arc<Mutex<Vec<(i32, i64)>>>,
    assignment: Arc<Mutex<BTreeSet<i32>>>,
}

impl Kip848Consumer {
    fn start(bootstrap: &str, group: &str, topic: &str, name: &str) -> Kip848Consumer {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("group.protocol", "consumer")
            .set("client.id", name)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create()
            .expect("create consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let assignment = Arc::new(Mutex::new(BTreeSet::new()));
        let thread = {
            let (consumer, stop, seen, assignment) =
                (consumer.clone(), stop.clone(), seen.clone(), assignment.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let mut read = false;
                    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                        seen.lock().expect("seen").push((m.partition(), m.offset()));
                        read = true;
                    }
                    if let Ok(list) = consumer.assignment() {
                        *assignment.lock().expect("assignment") =
                            list.elements().iter().map(|e| e.partition()).collect();
                    }
                    if read {
                        let _ = consumer.commit_consumer_state(CommitMode::Sync);
                    }
                }
            })
        };
        Kip848Consumer {
            consumer,
            stop,
            thread: Some(thread),
            seen,
            assignment,
        }
    }

    fn assignment(&self) -> BTreeSet<i32> {
        self.assignment.lock().expect("assignment").clone()
    }

    fn seen(&self) -> Vec<(i32, i64)> {
        self.seen.lock().expect("seen").clone()
    }

    /// Stops polling and closes the consumer, which leaves the group (epoch -1).
    fn close(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("consumer thread");
        }
        self.consumer.unsubscribe();
        let consumer = self.consumer.clone();
        drop(self);
        drop(consumer);
    }
}

impl Kip848Consumer {
    /// Stops polling without leaving; returns what it read and the consumer, to be dropped on
    /// a thread of its own once its broker is gone (closing sends a leave, and could wait for a
    /// coordinator that never answers).
    fn detach(mut self) -> (Vec<(i32, i64)>, Arc<BaseConsumer>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("consumer thread");
        }
        (self.seen(), self.consumer.clone())
    }
}

impl Drop for Kip848Consumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn all(n: i32) -> BTreeSet<i32> {
    (0..n).collect()
}

#[test]
fn kip848_one_consumer_joins_and_gets_every_partition() {
    let broker = kip848_broker();
    let bootstrap = broker.bootstrap();
    create_topic_blocking(bootstrap, "k1", 4);
    let c = Kip848Consumer::start(bootstrap, "k1-group", "k1", "solo");
    assert!(
        wait_until(SETTLE, || c.assignment() == all(4)),
        "one consumer gets all four partitions, has {:?}",
        c.assignment()
    );

    // ConsumerGroupDescribe: stable, one member at the assignment epoch, uniform by default.
    let mut wire = WireClient::connect(bootstrap);
    let version = wire.version::<ConsumerGroupDescribeRequest>(1);
    let response = wire.call(
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id("k1-group"), group_id("nope")]),
        version,
    );
    let g = &response.groups[0];
    assert_eq!(g.error_code, 0);
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.assignor_name.as_str(), "uniform");
    assert!(g.group_epoch >= 1);
    assert_eq!(g.assignment_epoch, g.group_epoch);
    assert_eq!(g.members.len(), 1);
    let m = &g.members[0];
    assert_eq!(m.client_id.as_str(), "solo");
    assert_eq!(m.member_epoch, g.assignment_epoch);
    assert_eq!(m.subscribed_topic_names, vec![topic_name("k1")]);
    assert_eq!(m.assignment.topic_partitions.len(), 1);
    assert_eq!(m.assignment.topic_partitions[0].topic_name, topic_name("k1"));
    assert_eq!(m.assignment.topic_partitions[0].partitions.len(), 4);
    assert_eq!(response.groups[1].error_code, GROUP_ID_NOT_FOUND);

    // ListGroups v5 lists it as a consumer group.
    let version = wire.version::<ListGroupsRequest>(5);
    assert_eq!(version, 5);
    let listed = wire.call(&ListGroupsRequest::default(), version);
    let g = listed
        .groups
        .iter()
        .find(|g| g.group_id.0.as_str() == "k1-group")
        .expect("listed");
    assert_eq!(g.group_type.as_str(), "consumer");
    assert_eq!(g.protocol_type.as_str(), "consumer");
    assert_eq!(g.group_state.as_str(), "Stable");
    c.close();
}

#[test]
fn kip848_two_consumers_split_the_partitions_and_the_survivor_takes_all_when_one_leaves() {
    let broker = kip848_broker();
    let bootstrap = broker.bootstrap();
    create_topic_blocking(bootstrap, "k2", 6);
    let a = Kip848Consumer::start(bootstrap, "k2-group", "k2", "a");
    assert!(
        wait_until(SETTLE, || a.assignment() == all(6)),
        "a alone: {:?}",
        a.assignment()
    );
    let b = Kip848Consumer::start(bootstrap, "k2-group", "k2", "b");
    let split = wait_until(SETTLE, || {
        let (x, y) = (a.assignment(), b.assignment());
        x.len() == 3 && y.len() == 3 && x.is_disjoint(&y)
    });
    assert!(
        split,
        "3 + 3 disjoint: a {:?}, b {:?}",
        a.assignment(),
        b.assignment()
    );
    a.close();
    assert!(
        wait_until(SETTLE, || b.assignment() == all(6)),
        "b takes everything after a leaves: {:?}",
        b.assignment()
    );
    b.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_consumer_resumes_from_committed_offsets_after_a_broker_restart() {
    let mut broker = kip848_broker();
    let bootstrap = broker.bootstrap().to_string();
    crate::clients::create_topic(&bootstrap, "k3", 3).await;
    let p = producer(&bootstrap, &[]);
    produce_payloads(&p, "k3", 3, 0..60).await;
    let c = Kip848Consumer::start(&bootstrap, "k3-group", "k3", "first");
    let c = tokio::task::spawn_blocking(move || {
        assert!(wait_until(SETTLE, || c.seen().len() >= 60), "read the first 60");
        c
    })
    .await
    .expect("first read");
    // Everything read is committed (synchronously, before the next poll).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut wire = WireClient::connect(&bootstrap);
    let before = fetch_offsets(&mut wire, "k3-group", "k3", &[0, 1, 2]);
    assert_eq!(
        before.values().map(|(o, _)| o).sum::<i64>(),
        60,
        "committed {before:?}"
    );
    let described = wire.call(
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id("k3-group")]),
        1,
    );
    let epoch_before = described.groups[0].group_epoch;
    drop(wire);

    // The consumer stops without leaving; the broker restarts (on a new port).
    let (first_seen, first) = tokio::task::spawn_blocking(move || c.detach())
        .await
        .expect("detach");
    assert_eq!(first_seen.len(), 60);
    broker.restart();
    std::thread::spawn(move || drop(first));
    let bootstrap = broker.bootstrap().to_string();

    // The group came back from the store: same epoch, the member still holding its partitions.
    let mut wire = WireClient::connect(&bootstrap);
    let described = wire.call(
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id("k3-group")]),
        1,
    );
    let g = &described.groups[0];
    assert_eq!(g.error_code, 0, "{:?}", g.error_message);
    assert_eq!(g.group_epoch, epoch_before);
    assert_eq!(g.members.len(), 1);
    assert_eq!(g.members[0].client_id.as_str(), "first");
    assert_eq!(g.members[0].member_epoch, g.assignment_epoch);
    let held: usize = g.members[0]
        .assignment
        .topic_partitions
        .iter()
        .map(|t| t.partitions.len())
        .sum();
    assert_eq!(held, 3);
    drop(wire);

    // A new consumer gets the partitions once the old member's session expires, and resumes
    // from the committed offsets: it reads exactly the 30 records produced after the restart.
    let p = producer(&bootstrap, &[]);
    produce_payloads(&p, "k3", 3, 60..90).await;
    let c = Kip848Consumer::start(&bootstrap, "k3-group", "k3", "second");
    let c = tokio::task::spawn_blocking(move || {
        assert!(
            wait_until(Duration::from_secs(60), || c.seen().len() >= 30),
            "read the next 30 after the restart; saw {}",
            c.seen().len()
        );
        std::thread::sleep(Duration::from_millis(500));
        c
    })
    .await
    .expect("second read");
    let seen: BTreeSet<(i32, i64)> = c.seen().into_iter().collect();
    assert_eq!(seen.len(), 30, "nothing committed was read again: {seen:?}");
    assert!(
        seen.iter().all(|(p, o)| *o >= before[p].0),
        "every record read is past the committed offset: {seen:?} vs {before:?}"
    );
    tokio::task::spawn_blocking(move || c.close())
        .await
        .expect("close");
    let mut wire = WireClient::connect(&bootstrap);
    let after = fetch_offsets(&mut wire, "k3-group", "k3", &[0, 1, 2]);
    assert_eq!(
        after.values().map(|(o, _)| o).sum::<i64>(),
        90,
        "committed {after:?}"
    );
}

fn heartbeat(
    wire: &mut WireClient,
    request: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let version = wire.version::<ConsumerGroupHeartbeatRequest>(1);
    assert_eq!(version, 1, "ConsumerGroupHeartbeat v1 advertised");
    wire.call(&request, version)
}

fn join(group: &str, member: &str) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group_id(group))
        .with_member_id(str(member))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(10_000)
        .with_subscribed_topic_names(Some(vec![topic_name("kw")]))
        .with_topic_partitions(Some(Vec::new()))
}

fn owned(a: &Option<Assignment>) -> Vec<TopicPartitions> {
    a.as_ref()
        .map(|a| {
            a.topic_partitions
                .iter()
                .map(|tp| {
                    TopicPartitions::default()
                        .with_topic_id(tp.topic_id)
                        .with_partitions(tp.partitions.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn count(a: &Option<Assignment>) -> usize {
    a.as_ref()
        .map(|a| a.topic_partitions.iter().map(|t| t.partitions.len()).sum())
        .unwrap_or(0)
}

#[test]
fn kip848_heartbeat_epochs_reconciliation_and_errors_follow_kafka() {
    let broker = kip848_broker();
    let bootstrap = broker.bootstrap();
    create_topic_blocking(bootstrap, "kw", 4);
    let mut wire = WireClient::connect(bootstrap);

    // Request validation.
    let r = heartbeat(&mut wire, join("kw-group", ""));
    assert_eq!(
        r.error_code, INVALID_REQUEST,
        "v1 needs a client-generated member id"
    );
    let r = heartbeat(
        &mut wire,
        join("kw-group", "m1").with_server_assignor(Some(str("sticky"))),
    );
    assert_eq!(r.error_code, UNSUPPORTED_ASSIGNOR);
    let r = heartbeat(&mut wire, join("kw-group", "m1").with_member_epoch(3));
    assert_eq!(r.error_code, GROUP_ID_NOT_FOUND, "no such group unless joining");

    // m1 joins: epoch 1, everything.
    let r1 = heartbeat(&mut wire, join("kw-group", "m1"));
    assert_eq!(r1.error_code, 0, "{:?}", r1.error_message);
    assert_eq!(r1.member_epoch, 1);
    assert_eq!(r1.member_id.as_ref().map(|s| s.as_str()), Some("m1"));
    assert_eq!(r1.heartbeat_interval_ms, 300);
    assert_eq!(count(&r1.assignment), 4);

    // m2 joins (with the range assignor): epoch 2, but its partitions are still m1's.
    let r2 = heartbeat(
        &mut wire,
        join("kw-group", "m2").with_server_assignor(Some(str("range"))),
    );
    assert_eq!(r2.error_code, 0, "{:?}", r2.error_message);
    assert_eq!(r2.member_epoch, 2);
    assert_eq!(count(&r2.assignment), 0, "nothing is free until m1 revokes");

    // m1 heartbeats still owning all four: it must revoke two and stays at epoch 1.
    let hb = |epoch: i32, member: &str, owned: Vec<TopicPartitions>| {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group_id("kw-group"))
            .with_member_id(str(member))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(-1)
            .with_topic_partitions(Some(owned))
    };
    let r = heartbeat(&mut wire, hb(1, "m1", owned(&r1.assignment)));
    assert_eq!(r.error_code, 0);
    assert_eq!(r.member_epoch, 1, "epoch holds until revocation is acknowledged");
    assert_eq!(count(&r.assignment), 2);
    // Range: m1 keeps 0-1, m2 gets 2-3.
    let m1_assignment = r.assignment.clone();
    assert_eq!(
        m1_assignment.as_ref().expect("assignment").topic_partitions[0].partitions,
        vec![0, 1]
    );

    // A stale commit from m1 (epoch 0) is refused; at its epoch it is accepted.
    let response = commit(&mut wire, "kw-group", 0, "m1", "kw", &[(0, 1, "")]);
    assert_eq!(commit_errors(&response), vec![STALE_MEMBER_EPOCH]);
    let response = commit(&mut wire, "kw-group", 1, "m1", "kw", &[(0, 1, "")]);
    assert_eq!(commit_errors(&response), vec![0]);
    let response = commit(&mut wire, "kw-group", 1, "ghost", "kw", &[(0, 1, "")]);
    assert_eq!(commit_errors(&response), vec![UNKNOWN_MEMBER_ID]);

    // m1 acknowledges: epoch 2. Then m2 gets the released partitions.
    let r = heartbeat(&mut wire, hb(1, "m1", owned(&m1_assignment)));
    assert_eq!(r.member_epoch, 2);
    let r = heartbeat(&mut wire, hb(2, "m2", Vec::new()));
    assert_eq!(r.member_epoch, 2);
    assert_eq!(
        r.assignment.as_ref().expect("assignment").topic_partitions[0].partitions,
        vec![2, 3]
    );

    // Epochs from the future are fenced; unknown members are unknown.
    let r = heartbeat(&mut wire, hb(7, "m2", Vec::new()));
    assert_eq!(r.error_code, FENCED_MEMBER_EPOCH);
    let r = heartbeat(&mut wire, hb(2, "ghost", Vec::new()));
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID);

    // A classic member cannot join the live consumer group.
    let version = wire.version::<kafka_protocol::messages::JoinGroupRequest>(9);
    let classic = wire.call(&join_request("kw-group", "", 10_000, &["kw"]), version);
    assert_eq!(classic.error_code, INCONSISTENT_GROUP_PROTOCOL);

    // A regex subscription matches topics by their whole name. As in Kafka, a regex new to
    // the group is resolved after the heartbeat that brought it: the joining member gets its
    // topics on its next heartbeat.
    create_topic_blocking(bootstrap, "kw-extra", 2);
    let r = heartbeat(
        &mut wire,
        join("kw-group", "m3")
            .with_subscribed_topic_names(None)
            .with_subscribed_topic_regex(Some(str("kw-ex.*"))),
    );
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(count(&r.assignment), 0, "the regex is not resolved yet");
    let r = heartbeat(&mut wire, hb(r.member_epoch, "m3", Vec::new()));
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(count(&r.assignment), 2, "m3 alone subscribes to kw-extra");

    // Leaving: epoch -1 answered with -1; the member is gone.
    let r = heartbeat(&mut wire, hb(-1, "m2", Vec::new()));
    assert_eq!((r.error_code, r.member_epoch), (0, -1));
    let r = heartbeat(&mut wire, hb(2, "m2", Vec::new()));
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID);
}

#[test]
fn kip848_a_regex_member_keeps_its_partitions_across_a_restart() {
    let mut broker = kip848_broker();
    create_topic_blocking(broker.bootstrap(), "rx-a", 2);
    create_topic_blocking(broker.bootstrap(), "rx-b", 1);
    let mut wire = WireClient::connect(broker.bootstrap());
    let regex_join = join("rx-group", "r1")
        .with_subscribed_topic_names(None)
        .with_subscribed_topic_regex(Some(str("rx-.*")));
    let r = heartbeat(&mut wire, regex_join);
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    let r = heartbeat(
        &mut wire,
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group_id("rx-group"))
            .with_member_id(str("r1"))
            .with_member_epoch(r.member_epoch)
            .with_rebalance_timeout_ms(-1)
            .with_topic_partitions(Some(Vec::new())),
    );
    assert_eq!(count(&r.assignment), 3, "both matching topics, once resolved");
    let epoch = r.member_epoch;
    let owned_now = owned(&r.assignment);

    // The stored group comes back with its regex resolved: the member's next heartbeat keeps
    // everything, at the same epoch.
    broker.restart();
    let mut wire = WireClient::connect(broker.bootstrap());
    let r = heartbeat(
        &mut wire,
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group_id("rx-group"))
            .with_member_id(str("r1"))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(-1)
            .with_topic_partitions(Some(owned_now)),
    );
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(r.member_epoch, epoch, "no new epoch after the restart");
    assert!(
        r.assignment.is_none() || count(&r.assignment) == 3,
        "nothing revoked: {:?}",
        r.assignment
    );
}

#[test]
fn kip848_subscription_regexes_have_re2_syntax_and_match_whole_names() {
    let broker = kip848_broker();
    create_topic_blocking(broker.bootstrap(), "rx-orders", 2);
    create_topic_blocking(broker.bootstrap(), "rx-orders-eu", 1);
    create_topic_blocking(broker.bootstrap(), "xx", 1);
    let mut wire = WireClient::connect(broker.bootstrap());
    let regex_join = |pattern: &str| {
        join("rx-group", "r1")
            .with_subscribed_topic_names(None)
            .with_subscribed_topic_regex(Some(str(pattern)))
    };

    // Not RE2 regular expressions (`**` is refused by RE2 as well): INVALID_REGULAR_EXPRESSION.
    for bad in ["rx-(orders", "rx-orders**", "(?z)rx-orders"] {
        let r = heartbeat(&mut wire, regex_join(bad));
        assert_eq!(
            r.error_code, INVALID_REGULAR_EXPRESSION,
            "{bad}: {:?}",
            r.error_message
        );
        let message = r
            .error_message
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("is not a valid regular expression"),
            "{bad}: {message}"
        );
    }

    // `(?i)` applies, and the alternation is anchored as a whole: rx-orders alone, not
    // rx-orders-eu (a prefix match) nor xx (a substring match of `x`).
    let r = heartbeat(&mut wire, regex_join("(?i)RX-ORDERS|x"));
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    let r = heartbeat(
        &mut wire,
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group_id("rx-group"))
            .with_member_id(str("r1"))
            .with_member_epoch(r.member_epoch)
            .with_rebalance_timeout_ms(-1)
            .with_topic_partitions(Some(Vec::new())),
    );
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(count(&r.assignment), 2, "rx-orders only: {:?}", r.assignment);
}

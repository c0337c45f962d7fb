//! Consumer groups driven by librdkafka (rdkafka StreamConsumer, subscribe): partition sharing,
//! members joining and leaving with at-least-once commits, static membership, the range and
//! cooperative-sticky assignors, and a group surviving a broker restart and a kill -9.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, RebalanceProtocol};
use rdkafka::producer::FutureProducer;

use crate::broker::TestBroker;
use crate::clients::{create_topic, producer};
use crate::groups::{
    assert_contiguous_within_assignments, await_all_seen, await_balanced, describe, fetch_offsets,
    produce_payloads, GroupMember, Seen,
};
use crate::wire::WireClient;

const PARTITIONS: i32 = 6;
const BALANCE_TIMEOUT: Duration = Duration::from_secs(30);
const CONSUME_TIMEOUT: Duration = Duration::from_secs(45);

fn group_broker() -> TestBroker {
    TestBroker::builder()
        .with("group.initial.rebalance.delay.ms", 0)
        .with("group.min.session.timeout.ms", 1000)
        .start()
}

/// librdkafka's descriptions of the errors a commit may meet during a rebalance.
const REBALANCE_COMMIT_ERRORS: &[&str] = &[
    "Broker: Group rebalance in progress",
    "Broker: Specified group generation id is not valid",
    "Broker: Unknown member",
];

async fn produce(producer: &FutureProducer, topic: &str, range: std::ops::Range<usize>) -> BTreeSet<Vec<u8>> {
    produce_payloads(producer, topic, PARTITIONS, range).await
}

/// Every payload seen is one that was produced.
fn assert_only_produced(seen: &[Seen], produced: &BTreeSet<Vec<u8>>) {
    for s in seen {
        assert!(
            produced.contains(&s.payload),
            "consumed a record nobody produced: {:?} at {}/{}",
            String::from_utf8_lossy(&s.payload),
            s.partition,
            s.offset
        );
    }
}

fn count_per_partition(payloads: usize) -> BTreeMap<i32, i64> {
    let mut counts = BTreeMap::new();
    for i in 0..payloads {
        *counts
            .entry(i32::try_from(i).expect("fits") % PARTITIONS)
            .or_insert(0) += 1;
    }
    counts
}

/// The committed offsets of `group` for every partition of `topic`.
fn committed(bootstrap: &str, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let mut wire = WireClient::connect(bootstrap);
    let partitions: Vec<i32> = (0..PARTITIONS).collect();
    fetch_offsets(&mut wire, group, topic, &partitions)
        .into_iter()
        .map(|(p, (offset, _))| (p, offset))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_consumers_share_six_partitions_disjointly() {
    let broker = group_broker();
    let bootstrap = broker.bootstrap();
    create_topic(bootstrap, "share", PARTITIONS).await;
    let members: Vec<GroupMember> = ["a", "b", "c"]
        .iter()
        .map(|name| GroupMember::start(bootstrap, "share-group", "share", name, &[]))
        .collect();
    let refs: Vec<&GroupMember> = members.iter().collect();
    let assignments = await_balanced(&refs, PARTITIONS, BALANCE_TIMEOUT).await;
    for assignment in &assignments {
        assert_eq!(
            assignment.len(),
            2,
            "6 partitions over 3 members: 2 each, got {assignments:?}"
        );
    }

    // The broker's view agrees: Stable, three members, each with a client id and an assignment.
    let mut wire = WireClient::connect(bootstrap);
    let group = describe(&mut wire, "share-group");
    assert_eq!(group.error_code, 0);
    assert_eq!(group.group_state.as_str(), "Stable");
    assert_eq!(group.protocol_type.as_str(), "consumer");
    let mut client_ids: Vec<String> = group.members.iter().map(|m| m.client_id.to_string()).collect();
    client_ids.sort();
    assert_eq!(client_ids, ["a", "b", "c"], "DescribeGroups members' client ids");
    for member in &group.members {
        assert!(
            !member.member_assignment.is_empty(),
            "member {} has an assignment",
            member.client_id
        );
        assert!(
            !member.member_metadata.is_empty(),
            "member {} has metadata",
            member.client_id
        );
    }

    // And they read: 600 records, each partition by exactly its owner.
    let produced = produce(&producer(bootstrap, &[]), "share", 0..600).await;
    await_all_seen(&refs, &[], &produced, CONSUME_TIMEOUT).await;
    for (member, assignment) in members.iter().zip(&assignments) {
        for s in member.seen() {
            assert!(
                assignment.contains(&s.partition),
                "{} read partition {} outside its assignment {assignment:?}",
                member.name,
                s.partition
            );
        }
    }
    for member in members {
        member.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_joining_and_leaving_consume_every_record_at_least_once() {
    let broker = group_broker();
    let bootstrap = broker.bootstrap().to_owned();
    create_topic(&bootstrap, "churn", PARTITIONS).await;
    let mut a = GroupMember::start(&bootstrap, "churn-group", "churn", "a", &[]);
    let b = GroupMember::start(&bootstrap, "churn-group", "churn", "b", &[]);
    let mut c = GroupMember::start(&bootstrap, "churn-group", "churn", "c", &[]);
    await_balanced(&[&a, &b, &c], PARTITIONS, BALANCE_TIMEOUT).await;

    // Records keep coming while the group changes.
    let stop = Arc::new(AtomicBool::new(false));
    let production = tokio::spawn({
        let stop = Arc::clone(&stop);
        let bootstrap = bootstrap.clone();
        async move {
            let producer = producer(&bootstrap, &[]);
            let mut produced = BTreeSet::new();
            let mut next = 0;
            while !stop.load(Ordering::SeqCst) {
                produced.extend(produce(&producer, "churn", next..next + 60).await);
                next += 60;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            produced
        }
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut d = GroupMember::start(&bootstrap, "churn-group", "churn", "d", &[]);
    await_balanced(&[&a, &b, &c, &d], PARTITIONS, BALANCE_TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b_seen = b.close().await;
    await_balanced(&[&a, &c, &d], PARTITIONS, BALANCE_TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let produced = production.await.expect("producer task");

    await_all_seen(&[&a, &c, &d], &b_seen, &produced, CONSUME_TIMEOUT).await;
    assert!(!d.seen().is_empty(), "the member that joined late read nothing");
    assert!(!b_seen.is_empty(), "the member that left had read nothing");

    assert_contiguous_within_assignments("b", &b_seen);
    for member in [&mut a, &mut c, &mut d] {
        member.stop().await;
    }
    let mut all = b_seen;
    let mut closed = Vec::new();
    for member in [a, c, d] {
        let name = member.name.clone();
        let commit_errors = member.commit_errors();
        let seen = member.close().await;
        assert_contiguous_within_assignments(&name, &seen);
        closed.push((name, seen.len(), commit_errors));
        all.extend(seen);
    }
    assert_only_produced(&all, &produced);
    // Commits may be refused while the group rebalances (the eager protocol revokes everything
    // first), and only for that: any other failure is the broker's.
    for (name, _, errors) in &closed {
        for e in errors {
            assert!(
                REBALANCE_COMMIT_ERRORS.iter().any(|r| e.contains(r)),
                "member {name}: commit failed with {e}"
            );
        }
    }
    let duplicates = all.len() - produced.len();
    eprintln!(
        "churn: {} records produced, {} reads, {duplicates} re-reads after rebalances; \
         (member, reads, commit errors): {closed:?}",
        produced.len(),
        all.len()
    );

    // Everything processed was committed: the group's offsets are at the end of every partition.
    assert_eq!(
        committed(&bootstrap, "churn-group", "churn"),
        count_per_partition(produced.len()),
        "committed offsets after every member closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_member_restart_keeps_its_partitions_without_a_rebalance() {
    let broker = group_broker();
    let bootstrap = broker.bootstrap();
    create_topic(bootstrap, "static", PARTITIONS).await;
    // Dynamic members first, so the leader is not the static member.
    let a = GroupMember::start(bootstrap, "static-group", "static", "a", &[]);
    await_balanced(&[&a], PARTITIONS, BALANCE_TIMEOUT).await;
    let b = GroupMember::start(bootstrap, "static-group", "static", "b", &[]);
    await_balanced(&[&a, &b], PARTITIONS, BALANCE_TIMEOUT).await;
    let static_settings = [
        ("group.instance.id", "static-instance-1"),
        ("session.timeout.ms", "10000"),
    ];
    let s = GroupMember::start(bootstrap, "static-group", "static", "s", &static_settings);
    let before = await_balanced(&[&a, &b, &s], PARTITIONS, BALANCE_TIMEOUT).await;
    let counts_before = [(a.assigns(), a.revokes()), (b.assigns(), b.revokes())];

    let mut wire = WireClient::connect(bootstrap);
    let described = describe(&mut wire, "static-group");
    let dynamic_ids_before: BTreeSet<String> = described
        .members
        .iter()
        .filter(|m| m.group_instance_id.is_none())
        .map(|m| m.member_id.to_string())
        .collect();
    assert_eq!(dynamic_ids_before.len(), 2, "two dynamic members: {described:?}");
    assert!(
        described.members.iter().any(
            |m| m.group_instance_id.as_ref().map(ToString::to_string).as_deref() == Some("static-instance-1")
        ),
        "DescribeGroups shows the static member's instance id: {described:?}"
    );

    // The static member goes away without leaving and comes back under the same instance id.
    s.close().await;
    let s2 = GroupMember::start(bootstrap, "static-group", "static", "s2", &static_settings);
    let after = await_balanced(&[&a, &b, &s2], PARTITIONS, BALANCE_TIMEOUT).await;
    // Several heartbeat intervals: a rebalance the others were told about would show by now.
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(
        after[2], before[2],
        "the restarted static member got its partitions back"
    );
    assert_eq!(after[..2], before[..2], "the other members kept theirs");
    assert_eq!(
        [(a.assigns(), a.revokes()), (b.assigns(), b.revokes())],
        counts_before,
        "the dynamic members saw no rebalance (assign/revoke callback counts)"
    );
    let described = describe(&mut wire, "static-group");
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(described.members.len(), 3, "{described:?}");
    let dynamic_ids_after: BTreeSet<String> = described
        .members
        .iter()
        .filter(|m| m.group_instance_id.is_none())
        .map(|m| m.member_id.to_string())
        .collect();
    assert_eq!(
        dynamic_ids_after, dynamic_ids_before,
        "the dynamic members are the same"
    );
    let static_member = described
        .members
        .iter()
        .find(|m| m.group_instance_id.is_some())
        .expect("static member present");
    assert_eq!(
        static_member.client_id.as_str(),
        "s2",
        "the static slot belongs to the new client"
    );

    for member in [a, b, s2] {
        member.close().await;
    }
}

/// Two members, then a third, with `strategy`; returns the assignments of two and of three.
async fn assignor_round(strategy: &str, topic: &str) -> (Vec<BTreeSet<i32>>, Vec<BTreeSet<i32>>) {
    let broker = group_broker();
    let bootstrap = broker.bootstrap();
    create_topic(bootstrap, topic, PARTITIONS).await;
    let group = format!("{topic}-group");
    let settings = [("partition.assignment.strategy", strategy)];
    let a = GroupMember::start(bootstrap, &group, topic, "a", &settings);
    let b = GroupMember::start(bootstrap, &group, topic, "b", &settings);
    let two = await_balanced(&[&a, &b], PARTITIONS, BALANCE_TIMEOUT).await;
    let first = produce(&producer(bootstrap, &[]), topic, 0..300).await;
    await_all_seen(&[&a, &b], &[], &first, CONSUME_TIMEOUT).await;

    let c = GroupMember::start(bootstrap, &group, topic, "c", &settings);
    let three = await_balanced(&[&a, &b, &c], PARTITIONS, BALANCE_TIMEOUT).await;
    let second = produce(&producer(bootstrap, &[]), topic, 300..600).await;
    let all: BTreeSet<Vec<u8>> = first.union(&second).cloned().collect();
    await_all_seen(&[&a, &b, &c], &[], &all, CONSUME_TIMEOUT).await;
    assert!(!c.seen().is_empty(), "the third member read nothing");

    let cooperative = matches!(a.consumer().rebalance_protocol(), RebalanceProtocol::Cooperative);
    assert_eq!(
        cooperative,
        strategy == "cooperative-sticky",
        "librdkafka's rebalance protocol with {strategy}"
    );
    let mut wire = WireClient::connect(bootstrap);
    let described = describe(&mut wire, &group);
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(
        described.protocol_data.as_str(),
        strategy,
        "the broker chose the protocol all members support"
    );

    let mut seen = Vec::new();
    for member in [a, b, c] {
        let name = member.name.clone();
        let member_seen = member.close().await;
        assert_contiguous_within_assignments(&name, &member_seen);
        seen.extend(member_seen);
    }
    assert_only_produced(&seen, &all);
    (two, three)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_assignor_gives_contiguous_partition_ranges() {
    let (two, three) = assignor_round("range", "ranged").await;
    let ranges = |split: &[&[i32]]| -> BTreeSet<BTreeSet<i32>> {
        split.iter().map(|r| r.iter().copied().collect()).collect()
    };
    assert_eq!(
        two.into_iter().collect::<BTreeSet<_>>(),
        ranges(&[&[0, 1, 2], &[3, 4, 5]]),
        "range over 2 members"
    );
    assert_eq!(
        three.into_iter().collect::<BTreeSet<_>>(),
        ranges(&[&[0, 1], &[2, 3], &[4, 5]]),
        "range over 3 members"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cooperative_sticky_assignor_moves_only_what_the_new_member_needs() {
    let (two, three) = assignor_round("cooperative-sticky", "sticky").await;
    for (i, (before, after)) in two.iter().zip(&three).enumerate() {
        assert!(
            after.is_subset(before),
            "member {i} kept a subset of its partitions: {before:?} then {after:?}"
        );
    }
    assert!(
        three.iter().all(|a| a.len() == 2),
        "6 partitions over 3 sticky members: 2 each, got {three:?}"
    );
}

/// A group consumes and commits, the broker ends (with `end`) while the members are still in
/// the group, and after the restart the offsets are there and new members resume from them.
async fn group_survives(end: impl FnOnce(&mut TestBroker), topic: &str) {
    let mut broker = group_broker();
    let bootstrap = broker.bootstrap().to_owned();
    create_topic(&bootstrap, topic, PARTITIONS).await;
    let group = format!("{topic}-group");
    let first = produce(&producer(&bootstrap, &[]), topic, 0..600).await;
    let a = GroupMember::start(&bootstrap, &group, topic, "a", &[]);
    let b = GroupMember::start(&bootstrap, &group, topic, "b", &[]);
    await_all_seen(&[&a, &b], &[], &first, CONSUME_TIMEOUT).await;
    let expected = count_per_partition(600);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while committed(&bootstrap, &group, topic) != expected {
        assert!(
            std::time::Instant::now() < deadline,
            "the members' commits did not reach the end of the partitions: {:?}",
            committed(&bootstrap, &group, topic)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    end(&mut broker);
    a.abandon().await;
    b.abandon().await;
    broker.restart();
    let bootstrap = broker.bootstrap().to_owned();

    assert_eq!(
        committed(&bootstrap, &group, topic),
        expected,
        "committed offsets after the restart"
    );
    let mut wire = WireClient::connect(&bootstrap);
    let described = describe(&mut wire, &group);
    assert_eq!(
        described.error_code, 0,
        "the group is known after the restart: {described:?}"
    );
    assert_eq!(described.protocol_type.as_str(), "consumer");

    // New members (once settled, so no rebalance re-reads anything) resume where the old ones
    // committed: they read only the records produced since, and each of those once.
    let c = GroupMember::start(&bootstrap, &group, topic, "c", &[]);
    let d = GroupMember::start(&bootstrap, &group, topic, "d", &[]);
    await_balanced(&[&c, &d], PARTITIONS, BALANCE_TIMEOUT).await;
    let second = produce(&producer(&bootstrap, &[]), topic, 600..900).await;
    await_all_seen(&[&c, &d], &[], &second, CONSUME_TIMEOUT).await;
    // Closing c rebalances d (eagerly, with range), and d resumes every partition from its
    // committed offset: wait until the periodic commits cover everything read, or d would
    // legitimately re-read its own uncommitted tail (at-least-once), which is not under test.
    let deadline = std::time::Instant::now() + CONSUME_TIMEOUT;
    while committed(&bootstrap, &group, topic) != count_per_partition(900) {
        assert!(
            std::time::Instant::now() < deadline,
            "the members never committed everything they read"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut seen = c.close().await;
    seen.extend(d.close().await);
    let old: Vec<String> = seen
        .iter()
        .filter(|s| !second.contains(&s.payload))
        .map(|s| String::from_utf8_lossy(&s.payload).into_owned())
        .take(5)
        .collect();
    assert!(
        old.is_empty(),
        "after the restart the group re-read committed records, e.g. {old:?}"
    );
    assert_eq!(seen.len(), second.len(), "each new record read once");
    assert_eq!(
        committed(&bootstrap, &group, topic),
        count_per_partition(900),
        "committed offsets after resuming"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_offsets_survive_a_clean_restart_and_consumption_resumes() {
    group_survives(TestBroker::stop, "restarted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_offsets_survive_kill_9_and_consumption_resumes() {
    group_survives(TestBroker::kill9, "killed").await;
}

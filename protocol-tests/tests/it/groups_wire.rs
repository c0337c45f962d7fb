//! Group coordinator edge cases with raw requests: session expiry, stale generations, KIP-394
//! member ids, DeleteGroups, and committed metadata round-tripped through OffsetFetch.

use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetDeleteRequest,
    OffsetFetchRequest,
};

use crate::broker::TestBroker;
use crate::groups::{
    commit, commit_errors, create_topic_blocking, describe, fetch_offsets, group_id, heartbeat, join,
    join_request, rejoin, str, sync, topic_name, wait_until, GROUP_ID_NOT_FOUND, ILLEGAL_GENERATION,
    MEMBER_ID_REQUIRED, NON_EMPTY_GROUP, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID,
};
use crate::wire::WireClient;

const TOPICS: &[&str] = &["wire-topic"];

fn group_broker() -> TestBroker {
    TestBroker::builder()
        .with("group.initial.rebalance.delay.ms", 0)
        .with("group.min.session.timeout.ms", 1000)
        .start()
}

/// Two wire members of one group, both joined to a second generation (after `a` alone had the
/// first), before SyncGroup: the group is in CompletingRebalance.
struct Pair {
    group: String,
    a: WireClient,
    b: WireClient,
    a_id: String,
    b_id: String,
    leader: String,
    first_generation: i32,
    generation: i32,
}

fn join_pair(bootstrap: &str, group: &str, b_session_ms: i32) -> Pair {
    let mut a = WireClient::connect(bootstrap);
    let first = join(&mut a, group, 10_000, TOPICS);
    let a_id = first.member_id.to_string();
    assert_eq!(first.leader.as_str(), a_id, "a lone member leads");
    let sync_a = sync(&mut a, group, first.generation_id, &a_id, &[(&a_id, b"a-only")]);
    assert_eq!(sync_a.error_code, 0, "SyncGroup of the first generation");
    assert_eq!(&sync_a.assignment[..], b"a-only");

    // b's JoinGroup waits until a rejoins, which a learns from its heartbeat.
    let bootstrap_b = bootstrap.to_owned();
    let group_b = group.to_owned();
    let joining = thread::spawn(move || {
        let mut b = WireClient::connect(&bootstrap_b);
        let response = join(&mut b, &group_b, b_session_ms, TOPICS);
        (b, response)
    });
    let told = wait_until(Duration::from_secs(10), || {
        heartbeat(&mut a, group, first.generation_id, &a_id) == REBALANCE_IN_PROGRESS
    });
    assert!(
        told,
        "a's heartbeat never reported REBALANCE_IN_PROGRESS after b joined"
    );
    let second = rejoin(&mut a, group, &a_id, 10_000, TOPICS);
    let (b, b_join) = joining.join().expect("b's join thread");
    assert_eq!(b_join.error_code, 0);
    assert_eq!(
        second.generation_id, b_join.generation_id,
        "one generation for both"
    );
    assert!(
        second.generation_id > first.generation_id,
        "the generation advanced"
    );
    assert_eq!(second.leader, b_join.leader, "one leader for both");
    let leader = second.leader.to_string();
    let leader_members = if leader == a_id {
        &second.members
    } else {
        &b_join.members
    };
    assert_eq!(leader_members.len(), 2, "the leader learns both members");
    Pair {
        group: group.to_owned(),
        a,
        b,
        a_id,
        b_id: b_join.member_id.to_string(),
        leader,
        first_generation: first.generation_id,
        generation: second.generation_id,
    }
}

impl Pair {
    /// SyncGroup for both, the leader first (a follower's SyncGroup waits for the leader's).
    fn sync(&mut self) {
        let assignments = [
            (self.a_id.as_str(), &b"for-a"[..]),
            (self.b_id.as_str(), &b"for-b"[..]),
        ];
        let (leader, follower, leader_id, follower_id) = if self.leader == self.a_id {
            (&mut self.a, &mut self.b, &self.a_id, &self.b_id)
        } else {
            (&mut self.b, &mut self.a, &self.b_id, &self.a_id)
        };
        let r = sync(leader, &self.group, self.generation, leader_id, &assignments);
        assert_eq!(r.error_code, 0, "leader SyncGroup");
        let r = sync(follower, &self.group, self.generation, follower_id, &[]);
        assert_eq!(r.error_code, 0, "follower SyncGroup");
        let expected: &[u8] = if *follower_id == self.a_id {
            b"for-a"
        } else {
            b"for-b"
        };
        assert_eq!(
            &r.assignment[..],
            expected,
            "the follower gets what the leader assigned it"
        );
    }
}

#[test]
fn silent_member_is_expelled_after_its_session_timeout() {
    let broker = group_broker();
    let mut pair = join_pair(broker.bootstrap(), "expiry", 1_500);
    pair.sync();
    let silent_since = Instant::now();
    let group = pair.group.clone();

    // a keeps heartbeating; b says nothing. The broker must notice b's silence, not a's.
    let mut a_answers = Vec::new();
    let expelled_after = loop {
        let code = heartbeat(&mut pair.a, &group, pair.generation, &pair.a_id);
        if code == REBALANCE_IN_PROGRESS {
            break silent_since.elapsed();
        }
        a_answers.push(code);
        assert!(
            silent_since.elapsed() < Duration::from_secs(6),
            "b (session 1.5 s) was not expelled within 6 s; a's heartbeats answered {a_answers:?}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    assert!(
        a_answers.iter().all(|&c| c == 0),
        "a's heartbeats before b expired: {a_answers:?}"
    );
    assert!(
        expelled_after >= Duration::from_millis(1_200),
        "b was expelled after {expelled_after:?}, before its 1.5 s session timeout"
    );

    let described = describe(&mut pair.a, &group);
    let ids: Vec<String> = described
        .members
        .iter()
        .map(|m| m.member_id.to_string())
        .collect();
    assert!(
        !ids.contains(&pair.b_id),
        "b is gone from DescribeGroups: {described:?}"
    );
    assert_eq!(
        heartbeat(&mut pair.b, &group, pair.generation, &pair.b_id),
        UNKNOWN_MEMBER_ID
    );

    // a rejoins alone into the next generation.
    let third = rejoin(&mut pair.a, &group, &pair.a_id, 10_000, TOPICS);
    assert!(third.generation_id > pair.generation);
    assert_eq!(third.leader.as_str(), pair.a_id);
    assert_eq!(third.members.len(), 1, "only a is left");
    let a_id = pair.a_id.clone();
    assert_eq!(
        sync(
            &mut pair.a,
            &group,
            third.generation_id,
            &a_id,
            &[(&a_id, b"all")]
        )
        .error_code,
        0
    );
    let described = describe(&mut pair.a, &group);
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.members[0].member_id.as_str(), pair.a_id);
    assert_eq!(&described.members[0].member_assignment[..], b"all");
}

#[test]
fn offset_commit_with_a_stale_generation_is_refused_with_illegal_generation() {
    let broker = group_broker();
    create_topic_blocking(broker.bootstrap(), "wire-topic", 1);
    let mut pair = join_pair(broker.bootstrap(), "stale", 10_000);
    let (group, a_id) = (pair.group.clone(), pair.a_id.clone());

    // Between JoinGroup and SyncGroup the new generation's assignment is not settled.
    let r = commit(
        &mut pair.a,
        &group,
        pair.generation,
        &a_id,
        "wire-topic",
        &[(0, 1, "")],
    );
    assert_eq!(
        commit_errors(&r),
        [REBALANCE_IN_PROGRESS],
        "commit in CompletingRebalance"
    );
    pair.sync();

    let r = commit(
        &mut pair.a,
        &group,
        pair.first_generation,
        &a_id,
        "wire-topic",
        &[(0, 2, "old")],
    );
    assert_eq!(
        commit_errors(&r),
        [ILLEGAL_GENERATION],
        "commit with the previous generation"
    );
    assert_eq!(
        heartbeat(&mut pair.a, &group, pair.first_generation, &a_id),
        ILLEGAL_GENERATION,
        "heartbeat with the previous generation"
    );
    let r = commit(
        &mut pair.a,
        &group,
        pair.generation,
        "not-a-member",
        "wire-topic",
        &[(0, 3, "")],
    );
    assert_eq!(
        commit_errors(&r),
        [UNKNOWN_MEMBER_ID],
        "commit by an unknown member"
    );
    let r = commit(&mut pair.a, &group, -1, "", "wire-topic", &[(0, 4, "")]);
    assert_ne!(
        commit_errors(&r),
        [0],
        "a generation -1 commit must be refused while the group has members"
    );

    let r = commit(
        &mut pair.a,
        &group,
        pair.generation,
        &a_id,
        "wire-topic",
        &[(0, 42, "current")],
    );
    assert_eq!(commit_errors(&r), [0], "commit with the current generation");
    assert_eq!(
        fetch_offsets(&mut pair.a, &group, "wire-topic", &[0])[&0],
        (42, "current".to_owned()),
        "only the commit of the current generation is stored"
    );
}

#[test]
fn join_group_v4_and_later_requires_a_member_id_first() {
    let broker = group_broker();
    let mut wire = WireClient::connect(broker.bootstrap());
    let max = wire.version::<JoinGroupRequest>(9);
    assert!(max >= 4, "JoinGroup v4+ is announced");
    for version in 4..=max {
        let group = format!("kip394-v{version}");
        let first = wire.call(&join_request(&group, "", 10_000, TOPICS), version);
        assert_eq!(first.error_code, MEMBER_ID_REQUIRED, "v{version} first join");
        assert!(
            !first.member_id.is_empty(),
            "v{version}: MEMBER_ID_REQUIRED carries a member id"
        );
        let id = first.member_id.to_string();
        let second = wire.call(&join_request(&group, &id, 10_000, TOPICS), version);
        assert_eq!(second.error_code, 0, "v{version} join with the given id");
        assert_eq!(second.member_id.as_str(), id, "v{version} keeps the given id");
        assert_eq!(second.generation_id, 1, "v{version} first generation");
        assert_eq!(second.leader.as_str(), id, "v{version} the only member leads");
    }
    // Before v4 a member id is handed out in the same round trip.
    for version in 0..4 {
        let group = format!("kip394-v{version}");
        let response = wire.call(&join_request(&group, "", 10_000, TOPICS), version);
        assert_eq!(response.error_code, 0, "v{version} join with an empty id");
        assert!(!response.member_id.is_empty(), "v{version} assigns a member id");
        assert_eq!(response.generation_id, 1, "v{version} first generation");
    }
}

fn delete_groups(wire: &mut WireClient, groups: &[&str]) -> Vec<(String, i16)> {
    let version = wire.version::<DeleteGroupsRequest>(2);
    let response = wire.call(
        &DeleteGroupsRequest::default().with_groups_names(groups.iter().map(|g| group_id(g)).collect()),
        version,
    );
    response
        .results
        .iter()
        .map(|r| (r.group_id.0.to_string(), r.error_code))
        .collect()
}

fn listed_groups(wire: &mut WireClient, states: &[&str]) -> Vec<String> {
    let version = wire.version::<ListGroupsRequest>(4);
    let response = wire.call(
        &ListGroupsRequest::default().with_states_filter(states.iter().map(|s| str(s)).collect()),
        version,
    );
    assert_eq!(response.error_code, 0);
    let mut ids: Vec<String> = response.groups.iter().map(|g| g.group_id.0.to_string()).collect();
    ids.sort();
    ids
}

#[test]
fn delete_groups_refuses_a_group_with_members_and_deletes_an_empty_one_with_its_offsets() {
    let broker = group_broker();
    create_topic_blocking(broker.bootstrap(), "wire-topic", 2);
    let mut wire = WireClient::connect(broker.bootstrap());
    let joined = join(&mut wire, "busy", 10_000, TOPICS);
    let member = joined.member_id.to_string();
    let r = sync(
        &mut wire,
        "busy",
        joined.generation_id,
        &member,
        &[(&member, b"x")],
    );
    assert_eq!(r.error_code, 0);
    let r = commit(
        &mut wire,
        "busy",
        joined.generation_id,
        &member,
        "wire-topic",
        &[(0, 5, "m")],
    );
    assert_eq!(commit_errors(&r), [0]);
    // A group that only ever had offsets committed (generation -1, no member id) is Empty.
    let r = commit(&mut wire, "offsets-only", -1, "", "wire-topic", &[(1, 7, "")]);
    assert_eq!(commit_errors(&r), [0], "generation -1 commit to a new group");

    assert_eq!(
        listed_groups(&mut wire, &["Stable"]),
        ["busy"],
        "ListGroups state filter Stable"
    );
    assert_eq!(
        listed_groups(&mut wire, &["Empty"]),
        ["offsets-only"],
        "ListGroups state filter Empty"
    );
    assert_eq!(
        delete_groups(&mut wire, &["busy", "never-existed"]),
        [
            ("busy".to_owned(), NON_EMPTY_GROUP),
            ("never-existed".to_owned(), GROUP_ID_NOT_FOUND)
        ]
    );
    assert_eq!(
        fetch_offsets(&mut wire, "busy", "wire-topic", &[0])[&0].0,
        5,
        "refused delete kept offsets"
    );

    let version = wire.version::<LeaveGroupRequest>(5);
    let leave = if version >= 3 {
        LeaveGroupRequest::default()
            .with_group_id(group_id("busy"))
            .with_members(vec![MemberIdentity::default().with_member_id(str(&member))])
    } else {
        LeaveGroupRequest::default()
            .with_group_id(group_id("busy"))
            .with_member_id(str(&member))
    };
    let r = wire.call(&leave, version);
    assert_eq!(r.error_code, 0, "LeaveGroup");
    assert_eq!(describe(&mut wire, "busy").group_state.as_str(), "Empty");

    assert_eq!(
        delete_groups(&mut wire, &["busy", "offsets-only"]),
        [("busy".to_owned(), 0), ("offsets-only".to_owned(), 0)]
    );
    assert_eq!(
        fetch_offsets(&mut wire, "busy", "wire-topic", &[0])[&0].0,
        -1,
        "offsets deleted"
    );
    assert_eq!(
        fetch_offsets(&mut wire, "offsets-only", "wire-topic", &[1])[&1].0,
        -1
    );
    assert!(listed_groups(&mut wire, &[]).is_empty(), "no groups left");
    assert_eq!(
        delete_groups(&mut wire, &["busy"]),
        [("busy".to_owned(), GROUP_ID_NOT_FOUND)],
        "a deleted group is gone"
    );
}

#[test]
fn offset_fetch_returns_committed_offsets_with_their_metadata() {
    let broker = group_broker();
    create_topic_blocking(broker.bootstrap(), "wire-topic", 4);
    let mut wire = WireClient::connect(broker.bootstrap());
    let committed = [
        (0, 10, "checkpoint α-1 ✓"),
        (1, 20, ""),
        (2, 30, r#"{"host":"worker-3","batch":17}"#),
    ];
    let r = commit(&mut wire, "meta", -1, "", "wire-topic", &committed);
    assert_eq!(commit_errors(&r), [0, 0, 0]);

    let max = wire.version::<OffsetFetchRequest>(9);
    for version in 1..=max.min(7) {
        let request = OffsetFetchRequest::default()
            .with_group_id(group_id("meta"))
            .with_topics(Some(vec![
                kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(topic_name("wire-topic"))
                    .with_partition_indexes(vec![0, 1, 2, 3]),
            ]));
        let response = wire.call(&request, version);
        let got: Vec<(i32, i64, String)> = response.topics[0]
            .partitions
            .iter()
            .map(|p| {
                let metadata = p.metadata.as_ref().map(ToString::to_string).unwrap_or_default();
                (p.partition_index, p.committed_offset, metadata)
            })
            .collect();
        let mut expected: Vec<(i32, i64, String)> = committed
            .iter()
            .map(|(p, o, m)| (*p, *o, (*m).to_owned()))
            .collect();
        expected.push((3, -1, String::new()));
        assert_eq!(got, expected, "OffsetFetch v{version}");
    }

    if max >= 8 {
        // Several groups in one request, all topics of each.
        let request = OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(group_id("meta"))
                .with_member_epoch(-1)
                .with_topics(None),
            OffsetFetchRequestGroup::default()
                .with_group_id(group_id("never-committed"))
                .with_member_epoch(-1)
                .with_topics(None),
        ]);
        let response = wire.call(&request, max.min(9));
        assert_eq!(
            response.groups.len(),
            2,
            "OffsetFetch v{max}: both groups answered"
        );
        let meta = &response.groups[0];
        assert_eq!((meta.group_id.0.as_str(), meta.error_code), ("meta", 0));
        let mut got: Vec<(i32, i64, String)> = meta
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| {
                let metadata = p.metadata.as_ref().map(ToString::to_string).unwrap_or_default();
                (p.partition_index, p.committed_offset, metadata)
            })
            .collect();
        got.sort();
        let expected: Vec<(i32, i64, String)> = committed
            .iter()
            .map(|(p, o, m)| (*p, *o, (*m).to_owned()))
            .collect();
        assert_eq!(got, expected, "multi-group OffsetFetch v{max}, all topics");
        let other = &response.groups[1];
        assert_eq!(other.error_code, 0);
        assert!(
            other.topics.iter().all(|t| t.partitions.is_empty()),
            "a group without commits has no offsets: {other:?}"
        );
    }

    // OffsetDelete drops one partition's offset of the (empty) group.
    let response = wire.call(
        &OffsetDeleteRequest::default()
            .with_group_id(group_id("meta"))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(topic_name("wire-topic"))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(2)
                ])]),
        0,
    );
    assert_eq!(response.error_code, 0, "OffsetDelete");
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    let after = fetch_offsets(&mut wire, "meta", "wire-topic", &[0, 2]);
    assert_eq!(after[&0], (10, "checkpoint α-1 ✓".to_owned()));
    assert_eq!(after[&2].0, -1, "deleted offset");
}

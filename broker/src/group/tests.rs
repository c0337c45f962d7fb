//! State-machine tests of the classic group coordinator, without the network.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

fn config() -> GroupCoordinatorConfig {
    GroupCoordinatorConfig {
        min_session_timeout_ms: 100,
        max_session_timeout_ms: 60_000,
        initial_rebalance_delay_ms: 0,
        offsets_retention_ms: 7 * 24 * 3_600_000,
        offset_metadata_max_bytes: 16,
        consumer: crate::config::group::ConsumerGroupConfig::default(),
    }
}

fn open(dir: &std::path::Path) -> (Arc<MetaStore>, Arc<GroupCoordinator>) {
    let meta = Arc::new(MetaStore::open(dir).unwrap());
    let c = GroupCoordinator::open(
        meta.clone(),
        config(),
        Default::default(),
        CancellationToken::new(),
    )
    .unwrap();
    (meta, c)
}

fn join_req(member: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member.into(),
        instance_id: instance.map(str::to_string),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
        require_known_member_id: true,
    }
}

/// Joins a new dynamic member through the KIP-394 handshake; returns the pending receiver.
async fn join_new(c: &GroupCoordinator) -> tokio::sync::oneshot::Receiver<JoinOutcome> {
    let first = c.join(join_req("", None)).await.unwrap();
    assert_eq!(first.error, Some(GroupError::MemberIdRequired));
    c.join(join_req(&first.member_id, None))
}

fn sync_req(member: &str, generation: i32, assignments: Vec<(String, Bytes)>) -> SyncRequest {
    SyncRequest {
        group_id: "g".into(),
        generation,
        member_id: member.into(),
        instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments,
    }
}

/// The SyncGroup of a one-member group's leader, assigning itself `a` in generation 1.
async fn sync_alone(c: &GroupCoordinator, member: &str) -> SyncOutcome {
    c.sync(sync_req(
        member,
        1,
        vec![(member.to_string(), Bytes::from_static(b"a"))],
    ))
    .await
    .unwrap()
}

fn commit(generation: i32, member: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest {
        group_id: "g".into(),
        generation,
        member_id: member.into(),
        instance_id: None,
        api_version: 8,
        partitions: vec![PartitionCommit {
            topic: "t".into(),
            partition: 0,
            offset,
            leader_epoch: 0,
            metadata: Some("meta".into()),
            known: true,
        }],
    }
}

#[tokio::test]
async fn a_single_member_group_becomes_stable_with_its_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c) = open(dir.path());
    let joined = join_new(&c).await.await.unwrap();
    assert_eq!((joined.error, joined.generation), (None, 1));
    assert_eq!(joined.leader, joined.member_id);
    assert_eq!(
        joined.members.len(),
        1,
        "the leader gets the members' subscriptions"
    );
    let synced = sync_alone(&c, &joined.member_id).await;
    assert_eq!(
        (synced.error, synced.assignment),
        (None, Bytes::from_static(b"a"))
    );
    assert_eq!(c.describe("g").unwrap().state, GroupState::Stable);
    assert_eq!(c.heartbeat("g", 1, &joined.member_id, None), Ok(()));
    assert_eq!(
        c.heartbeat("g", 0, &joined.member_id, None),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        c.heartbeat("g", 1, "stranger", None),
        Err(GroupError::UnknownMemberId)
    );
}

#[tokio::test]
async fn a_second_member_triggers_a_rebalance_that_both_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c) = open(dir.path());
    let a = join_new(&c).await.await.unwrap();
    c.sync(sync_req(&a.member_id, 1, vec![])).await.unwrap();
    let b_waiting = join_new(&c).await;
    // The existing member learns of the rebalance through its heartbeat, then rejoins.
    assert_eq!(
        c.heartbeat("g", 1, &a.member_id, None),
        Err(GroupError::RebalanceInProgress)
    );
    assert_eq!(
        c.commit_offsets(commit(1, &a.member_id, 5)).await.unwrap()[0],
        Ok(()),
        "commits of the old generation still count while preparing"
    );
    let a2 = c.join(join_req(&a.member_id, None)).await.unwrap();
    let b = b_waiting.await.unwrap();
    assert_eq!((a2.generation, b.generation), (2, 2));
    assert_eq!(a2.leader, a.member_id, "the leader stays the leader");
    assert_eq!(a2.members.len(), 2);
    assert!(b.members.is_empty(), "followers get no member list");
    // Commits from the previous generation are now refused.
    assert_eq!(
        c.commit_offsets(commit(1, &a.member_id, 6)).await,
        Err(GroupError::IllegalGeneration)
    );
    // Until the leader syncs, commits are refused with REBALANCE_IN_PROGRESS.
    assert_eq!(
        c.commit_offsets(commit(2, &a.member_id, 6)).await,
        Err(GroupError::RebalanceInProgress)
    );
    let b_sync = c.sync(sync_req(&b.member_id, 2, vec![]));
    let a_sync = c
        .sync(sync_req(
            &a.member_id,
            2,
            vec![
                (a.member_id.clone(), Bytes::from_static(b"0-2")),
                (b.member_id.clone(), Bytes::from_static(b"3-5")),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(a_sync.assignment, Bytes::from_static(b"0-2"));
    assert_eq!(b_sync.await.unwrap().assignment, Bytes::from_static(b"3-5"));
}

#[tokio::test]
async fn a_silent_member_expires_and_the_group_rebalances_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c) = open(dir.path());
    let a = join_new(&c).await.await.unwrap();
    c.sync(sync_req(&a.member_id, 1, vec![])).await.unwrap();
    c.tick(Instant::now() + Duration::from_secs(11));
    let d = c.describe("g").unwrap();
    assert_eq!(d.state, GroupState::Empty);
    assert!(d.members.is_empty());
    assert_eq!(
        c.heartbeat("g", 1, &a.member_id, None),
        Err(GroupError::UnknownMemberId)
    );
}

#[tokio::test]
async fn a_restarted_static_member_gets_its_assignment_back_without_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c) = open(dir.path());
    let leader = join_new(&c).await.await.unwrap();
    c.sync(sync_req(&leader.member_id, 1, vec![])).await.unwrap();
    let s = c.join(join_req("", Some("pod-1")));
    let l2 = c.join(join_req(&leader.member_id, None)).await.unwrap();
    let s = s.await.unwrap();
    assert_eq!(s.generation, 2);
    let s_sync = c.sync(sync_req(&s.member_id, 2, vec![]));
    c.sync(sync_req(
        &l2.member_id,
        2,
        vec![(s.member_id.clone(), Bytes::from_static(b"mine"))],
    ))
    .await
    .unwrap();
    assert_eq!(s_sync.await.unwrap().assignment, Bytes::from_static(b"mine"));
    // The static member restarts: a new member id, the same generation and assignment.
    let back = c.join(join_req("", Some("pod-1"))).await.unwrap();
    assert_eq!((back.error, back.generation), (None, 2));
    assert_ne!(back.member_id, s.member_id);
    assert_eq!(c.describe("g").unwrap().state, GroupState::Stable, "no rebalance");
    let synced = c
        .sync(SyncRequest {
            instance_id: Some("pod-1".into()),
            ..sync_req(&back.member_id, 2, vec![])
        })
        .await
        .unwrap();
    assert_eq!(synced.assignment, Bytes::from_static(b"mine"));
    // The old incarnation is fenced.
    assert_eq!(
        c.heartbeat("g", 2, &s.member_id, Some("pod-1")),
        Err(GroupError::FencedInstanceId)
    );
}

#[tokio::test]
async fn commits_validate_and_survive_reopening_with_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let member = {
        let (_, c) = open(dir.path());
        let a = join_new(&c).await.await.unwrap();
        c.sync(sync_req(
            &a.member_id,
            1,
            vec![(a.member_id.clone(), Bytes::from_static(b"x"))],
        ))
        .await
        .unwrap();
        assert_eq!(
            c.commit_offsets(commit(1, &a.member_id, 42)).await.unwrap(),
            vec![Ok(())]
        );
        // Metadata over offset.metadata.max.bytes is refused for that partition only.
        let mut big = commit(1, &a.member_id, 43);
        big.partitions[0].metadata = Some("x".repeat(17));
        assert_eq!(
            c.commit_offsets(big).await.unwrap(),
            vec![Err(GroupError::OffsetMetadataTooLarge)]
        );
        // A commit without member id and generation is only for empty groups.
        assert_eq!(
            c.commit_offsets(commit(-1, "", 1)).await,
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(c.delete("g").await, Err(GroupError::NonEmptyGroup));
        a.member_id
    };
    let (_, c) = open(dir.path());
    let fetched = c.fetch_offsets("g", None);
    assert_eq!(fetched.len(), 1);
    let o = fetched[0].2.clone().unwrap();
    assert_eq!((o.offset, o.metadata.as_str()), (42, "meta"));
    // The member carries on after the restart with the same generation.
    assert_eq!(c.heartbeat("g", 1, &member, None), Ok(()));
    let d = c.describe("g").unwrap();
    assert_eq!(
        (d.state, d.members[0].assignment.clone()),
        (GroupState::Stable, Bytes::from_static(b"x"))
    );
    assert_eq!(c.leave("g", &member, None), Ok(member.clone()));
    assert_eq!(c.describe("g").unwrap().state, GroupState::Empty);
    assert_eq!(c.delete("g").await, Ok(()));
    assert!(c.fetch_offsets("g", None).is_empty());
    assert_eq!(c.delete("g").await, Err(GroupError::GroupIdNotFound));
}

#[tokio::test]
async fn simple_commits_create_an_offsets_only_group_and_missing_groups_are_refused_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c) = open(dir.path());
    assert_eq!(
        c.commit_offsets(OffsetCommitRequest {
            api_version: 9,
            ..commit(3, "m", 1)
        })
        .await,
        Err(GroupError::GroupIdNotFound)
    );
    assert_eq!(
        c.commit_offsets(commit(3, "m", 1)).await,
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(c.commit_offsets(commit(-1, "", 7)).await.unwrap(), vec![Ok(())]);
    assert_eq!(
        c.list(),
        vec![super::ListedGroup {
            group_id: "g".to_string(),
            protocol_type: String::new(),
            state: GroupState::Empty.name(),
            group_type: "classic",
        }]
    );
    assert_eq!(
        c.fetch_offsets("g", Some(vec![("t".into(), 0), ("t".into(), 1)]))[1].2,
        None
    );
}

#[tokio::test]
async fn session_timeouts_outside_the_configured_bounds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c) = open(dir.path());
    let r = c
        .join(JoinRequest {
            session_timeout_ms: 10,
            ..join_req("", None)
        })
        .await
        .unwrap();
    assert_eq!(r.error, Some(GroupError::InvalidSessionTimeout));
    let r = c
        .join(JoinRequest {
            group_id: String::new(),
            ..join_req("", None)
        })
        .await
        .unwrap();
    assert_eq!(r.error, Some(GroupError::InvalidGroupId));
}

#[tokio::test]
async fn offsets_of_groups_empty_for_longer_than_the_retention_expire_durably() {
    let dir = tempfile::tempdir().unwrap();
    {
        let meta = Arc::new(MetaStore::open(dir.path()).unwrap());
        let c = GroupCoordinator::open(
            meta,
            GroupCoordinatorConfig {
                offsets_retention_ms: 50,
                ..config()
            },
            Default::default(),
            CancellationToken::new(),
        )
        .unwrap();
        // A member-managed group that empties, and an offsets-only (simple) group.
        let a = join_new(&c).await.await.unwrap();
        c.sync(sync_req(&a.member_id, 1, vec![])).await.unwrap();
        assert_eq!(
            c.commit_offsets(commit(1, &a.member_id, 5)).await.unwrap(),
            vec![Ok(())]
        );
        c.leave("g", &a.member_id, None).unwrap();
        let simple = OffsetCommitRequest {
            group_id: "simple".into(),
            ..commit(-1, "", 9)
        };
        assert_eq!(c.commit_offsets(simple).await.unwrap(), vec![Ok(())]);
        // Within the retention both keep their offsets.
        c.tick(Instant::now());
        assert_eq!(c.fetch_offsets("g", None).len(), 1);
        assert_eq!(c.fetch_offsets("simple", None).len(), 1);
        std::thread::sleep(Duration::from_millis(80));
        c.tick(Instant::now());
        assert!(
            c.fetch_offsets("g", None).is_empty(),
            "the empty group's offsets expired"
        );
        assert!(
            c.fetch_offsets("simple", None).is_empty(),
            "the simple group's offsets expired"
        );
        assert!(c.list().is_empty());
    }
    // The expiry reached the store: nothing comes back after reopening.
    let (_, c) = open(dir.path());
    assert!(c.fetch_offsets("g", None).is_empty() && c.fetch_offsets("simple", None).is_empty());
}

#[tokio::test]
async fn the_initial_rebalance_delay_waits_for_members_arriving_together() {
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(MetaStore::open(dir.path()).unwrap());
    let c = GroupCoordinator::open(
        meta,
        GroupCoordinatorConfig {
            initial_rebalance_delay_ms: 200,
            ..config()
        },
        Default::default(),
        CancellationToken::new(),
    )
    .unwrap();
    let start = Instant::now();
    let a = join_new(&c).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The second member arrives within the delay and extends it: one generation for both.
    let b = join_new(&c).await;
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!((a.generation, b.generation), (1, 1));
    assert!(
        start.elapsed() >= Duration::from_millis(340),
        "the delay was extended by the second join"
    );
    assert_eq!(
        a.members.len() + b.members.len(),
        2,
        "the leader sees both members"
    );
}

#[tokio::test]
async fn a_restarted_static_leader_keeps_the_group_stable() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c) = open(dir.path());
    let leader = c.join(join_req("", Some("pod-0"))).await.unwrap();
    c.sync(SyncRequest {
        instance_id: Some("pod-0".into()),
        ..sync_req(
            &leader.member_id,
            1,
            vec![(leader.member_id.clone(), Bytes::from_static(b"all"))],
        )
    })
    .await
    .unwrap();
    let back = c.join(join_req("", Some("pod-0"))).await.unwrap();
    assert_eq!((back.error, back.generation), (None, 1));
    assert_eq!(
        back.leader, back.member_id,
        "still the leader, under its new member id"
    );
    assert!(
        back.skip_assignment,
        "the leader is told not to recompute the assignment"
    );
    assert_eq!(c.describe("g").unwrap().state, GroupState::Stable, "no rebalance");
    let synced = c
        .sync(SyncRequest {
            instance_id: Some("pod-0".into()),
            ..sync_req(&back.member_id, 1, vec![])
        })
        .await
        .unwrap();
    assert_eq!(synced.assignment, Bytes::from_static(b"all"));
}

/// A coordinator over an in-memory store that can be slowed down or made to fail.
fn in_memory() -> (Arc<store::MemoryStore>, Arc<GroupCoordinator>) {
    let store = Arc::new(store::MemoryStore::default());
    (store.clone(), GroupCoordinator::in_memory(config(), store))
}

fn stored_writes(store: &store::MemoryStore) -> Vec<GroupWrite> {
    store.written.lock().unwrap().iter().flatten().cloned().collect()
}

#[tokio::test]
async fn the_leaders_assignment_is_stored_before_any_member_learns_it() {
    let (store, c) = in_memory();
    let joined = join_new(&c).await.await.unwrap();
    let synced = sync_alone(&c, &joined.member_id).await;
    assert_eq!(synced.error, None);
    let stored = stored_writes(&store);
    let Some(GroupWrite::PutGroup(record)) = stored.last() else {
        panic!("the group's record was not stored before SyncGroup was answered: {stored:?}");
    };
    assert_eq!(
        (record.generation, record.members[0].assignment.clone()),
        (1, Bytes::from_static(b"a"))
    );
}

#[tokio::test]
async fn a_failed_write_of_the_assignment_is_an_error_and_a_new_rebalance() {
    let (store, c) = in_memory();
    let joined = join_new(&c).await.await.unwrap();
    store.failing.store(true, std::sync::atomic::Ordering::Release);
    let synced = sync_alone(&c, &joined.member_id).await;
    assert_eq!(synced.error, Some(GroupError::CoordinatorNotAvailable));
    assert_ne!(c.describe("g").unwrap().state, GroupState::Stable);
}

#[tokio::test]
async fn a_commit_that_cannot_be_stored_is_an_error_not_a_success() {
    let (store, c) = in_memory();
    store.failing.store(true, std::sync::atomic::Ordering::Release);
    assert_eq!(
        c.commit_offsets(commit(-1, "", 5)).await,
        Err(GroupError::CoordinatorNotAvailable)
    );
    store.failing.store(false, std::sync::atomic::Ordering::Release);
    assert_eq!(c.commit_offsets(commit(-1, "", 6)).await, Ok(vec![Ok(())]));
    assert!(matches!(
        stored_writes(&store).as_slice(),
        [GroupWrite::CommitOffsets { group, offsets }] if group == "g" && offsets[0].2.offset == 6
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_of_many_groups_share_synced_writes() {
    let (store, c) = in_memory();
    *store.delay.lock().unwrap() = Duration::from_millis(20);
    let commits: Vec<_> = (0..50)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut req = commit(-1, "", i);
                req.group_id = format!("g{i}");
                c.commit_offsets(req).await
            })
        })
        .collect();
    for commit in commits {
        assert_eq!(commit.await.unwrap(), Ok(vec![Ok(())]));
    }
    let writes = store.written.lock().unwrap().len();
    assert_eq!(stored_writes(&store).len(), 50, "each commit stored once");
    // One writer, many commits per synced write: no group waits for another's fsync alone.
    assert!(writes < 25, "{writes} synced writes for 50 commits");
}

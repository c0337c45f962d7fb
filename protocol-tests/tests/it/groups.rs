//! Shared pieces of the consumer-group tests (groups_*.rs): rdkafka group members that consume in
//! the background and record what they saw, and raw group requests over `WireClient`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, DescribeGroupsRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    JoinGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Message, TopicPartitionList};
use tokio::task::JoinHandle;

use crate::wire::WireClient;

// Kafka error codes the group tests expect.
pub const ILLEGAL_GENERATION: i16 = 22;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const MEMBER_ID_REQUIRED: i16 = 79;

pub fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

pub fn group_id(s: &str) -> GroupId {
    GroupId(str(s))
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(str(s))
}

// ---------------------------------------------------------------------------------------------
// rdkafka group members
// ---------------------------------------------------------------------------------------------

/// One record as a group member saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    /// How many assignments the member had received when it read the record: records read under
    /// one assignment must be contiguous per partition.
    pub assignment_epoch: usize,
}

/// Counts rebalance callbacks and commit failures.
#[derive(Default)]
pub struct MemberContext {
    pub assigns: AtomicUsize,
    pub revokes: AtomicUsize,
    pub commit_errors: Mutex<Vec<String>>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(_) => self.assigns.fetch_add(1, Ordering::SeqCst),
            Rebalance::Revoke(_) => self.revokes.fetch_add(1, Ordering::SeqCst),
            Rebalance::Error(_) => 0,
        };
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // Nothing stored since the last commit is not a failure.
            if !e.to_string().contains("No offset stored") {
                self.commit_errors
                    .lock()
                    .expect("commit error lock")
                    .push(e.to_string());
            }
        }
    }
}

type GroupConsumer = StreamConsumer<MemberContext>;

/// How long `GroupMember::close` waits for the consumer to finish closing.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// An rdkafka consumer subscribed to a topic in a group, reading on a task of its own (so it
/// keeps polling, heartbeating and answering rebalances), storing the offset of each record it
/// processed and committing them every 100 records or 200 ms (enable.auto.commit=false).
pub struct GroupMember {
    pub name: String,
    consumer: Arc<GroupConsumer>,
    stop: Arc<AtomicBool>,
    /// The read loop; `None` once stopped.
    task: Option<JoinHandle<()>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    assignment: Arc<Mutex<BTreeSet<i32>>>,
}

/// Settings every group member gets: fast heartbeats and short timeouts so rebalances and
/// expiry happen within a test's time.
pub fn member_config(bootstrap: &str, group: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "300")
        .set("max.poll.interval.ms", "10000")
        .set("fetch.wait.max.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "1000");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config
}

impl GroupMember {
    /// Subscribes to `topic` in `group` and starts reading.
    pub fn start(bootstrap: &str, group: &str, topic: &str, name: &str, extra: &[(&str, &str)]) -> Self {
        let consumer: GroupConsumer = member_config(bootstrap, group, extra)
            .set("client.id", name)
            .create_with_context(MemberContext::default())
            .expect("create group consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let assignment = Arc::new(Mutex::new(BTreeSet::new()));
        let task = tokio::spawn(read_loop(
            Arc::clone(&consumer),
            Arc::clone(&stop),
            Arc::clone(&seen),
            Arc::clone(&assignment),
        ));
        GroupMember {
            name: name.to_owned(),
            consumer,
            stop,
            task: Some(task),
            seen,
            assignment,
        }
    }

    /// The partitions the member holds right now.
    pub fn assignment(&self) -> BTreeSet<i32> {
        self.assignment.lock().expect("assignment lock").clone()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    pub fn assigns(&self) -> usize {
        self.consumer.context().assigns.load(Ordering::SeqCst)
    }

    pub fn revokes(&self) -> usize {
        self.consumer.context().revokes.load(Ordering::SeqCst)
    }

    pub fn commit_errors(&self) -> Vec<String> {
        self.consumer
            .context()
            .commit_errors
            .lock()
            .expect("lock")
            .clone()
    }

    pub fn consumer(&self) -> &GroupConsumer {
        &self.consumer
    }

    /// Stops reading and commits what was processed (synchronously), staying in the group. A
    /// test that closes several members stops them all first: a member's leaving revokes the
    /// others' partitions, and librdkafka forgets offsets stored for revoked partitions, so a
    /// member still reading could lose what it processed since its last commit.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(task) = self.task.take() else {
            return;
        };
        task.await.expect("member task");
        let consumer = Arc::clone(&self.consumer);
        tokio::task::spawn_blocking(move || match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(e) if e.to_string().contains("No offset stored") => {}
            Err(e) => panic!("final commit failed: {e}"),
        })
        .await
        .expect("final commit");
    }

    /// Stops reading, commits what was processed (synchronously) and closes the consumer, which
    /// leaves the group (a static member does not send LeaveGroup, as KIP-345 has it).
    ///
    /// The close runs on a thread of its own and is waited for up to `CLOSE_WAIT`: rust-rdkafka's
    /// `BaseConsumer` drop can block for good in `rd_kafka_assign` when a rebalance event reaches
    /// it after the consumer closed (seen once, with the member already out of the group;
    /// librdkafka issue #4884, open), and a client stuck in its own teardown must not hang the
    /// suite. Past the wait the test goes on
    /// and the thread is left to finish.
    pub async fn close(mut self) -> Vec<Seen> {
        self.stop().await;
        let seen = self.seen();
        let consumer = self.consumer;
        let (closed, wait) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            drop(consumer);
            let _ = closed.send(());
        });
        if tokio::time::timeout(CLOSE_WAIT, wait).await.is_err() {
            eprintln!("the rdkafka consumer did not finish closing within {CLOSE_WAIT:?}; going on");
        }
        seen
    }

    /// Stops reading and lets the consumer go on a thread of its own, for when the broker it
    /// talked to is gone (closing it could wait for a coordinator that never answers).
    pub async fn abandon(self) -> Vec<Seen> {
        let GroupMember {
            consumer,
            stop,
            task,
            seen,
            ..
        } = self;
        stop.store(true, Ordering::SeqCst);
        if let Some(task) = task {
            task.await.expect("member task");
        }
        let seen = seen.lock().expect("seen lock").clone();
        std::thread::spawn(move || drop(consumer));
        seen
    }
}

async fn read_loop(
    consumer: Arc<GroupConsumer>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    assignment: Arc<Mutex<BTreeSet<i32>>>,
) {
    let mut uncommitted = 0usize;
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if let Ok(result) = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await {
            match result {
                Ok(message) => {
                    seen.lock().expect("seen lock").push(Seen {
                        partition: message.partition(),
                        offset: message.offset(),
                        payload: message.payload().unwrap_or_default().to_vec(),
                        assignment_epoch: consumer.context().assigns.load(Ordering::SeqCst),
                    });
                    // Processed: only now may its offset be committed.
                    consumer
                        .store_offset_from_message(&message)
                        .expect("store offset");
                    uncommitted += 1;
                }
                Err(e) => eprintln!("group consumer error (retried by librdkafka): {e}"),
            }
        }
        if uncommitted > 0 && (uncommitted >= 100 || last_commit.elapsed() > Duration::from_millis(200)) {
            // Async: the result arrives in MemberContext::commit_callback.
            let _ = consumer.commit_consumer_state(CommitMode::Async);
            uncommitted = 0;
            last_commit = Instant::now();
        }
        let partitions = consumer
            .assignment()
            .map(|list| list.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        *assignment.lock().expect("assignment lock") = partitions;
    }
}

/// Waits until the members' assignments are disjoint, non-empty, cover `0..partitions` and stay
/// so for a second; returns them in the members' order.
pub async fn await_balanced(
    members: &[&GroupMember],
    partitions: i32,
    timeout: Duration,
) -> Vec<BTreeSet<i32>> {
    let deadline = Instant::now() + timeout;
    let mut stable_since: Option<(Instant, Vec<BTreeSet<i32>>)> = None;
    loop {
        let now: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assignment()).collect();
        if is_balanced(&now, partitions) {
            match &stable_since {
                Some((since, before)) if *before == now => {
                    if since.elapsed() >= Duration::from_secs(1) {
                        return now;
                    }
                }
                _ => stable_since = Some((Instant::now(), now.clone())),
            }
        } else {
            stable_since = None;
        }
        if Instant::now() > deadline {
            let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            panic!(
                "members {names:?} did not settle on disjoint, non-empty assignments covering \
                 0..{partitions} within {timeout:?}; last assignments: {now:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Disjoint, each non-empty, union is exactly `0..partitions`.
pub fn is_balanced(assignments: &[BTreeSet<i32>], partitions: i32) -> bool {
    let total: usize = assignments.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = assignments.iter().flatten().copied().collect();
    assignments.iter().all(|a| !a.is_empty())
        && total == union.len()
        && union == (0..partitions).collect::<BTreeSet<i32>>()
}

/// Produces records `range` with payload `<topic>-<i>` to partition `i % partitions`; returns
/// the payloads once every one is acknowledged.
pub async fn produce_payloads(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    range: std::ops::Range<usize>,
) -> BTreeSet<Vec<u8>> {
    let mut deliveries = Vec::new();
    let mut payloads = BTreeSet::new();
    for i in range {
        let payload = format!("{topic}-{i}");
        let partition = i32::try_from(i).expect("fits") % partitions;
        let record = FutureRecord::<(), _>::to(topic)
            .partition(partition)
            .payload(&payload);
        let delivery = producer
            .send_result(record)
            .unwrap_or_else(|(e, _)| panic!("enqueue {payload}: {e}"));
        deliveries.push(delivery);
        payloads.insert(payload.into_bytes());
    }
    for delivery in deliveries {
        delivery
            .await
            .expect("delivery report")
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
    payloads
}

/// Waits until the members (together with `earlier`, what members that left had seen) have seen
/// every payload in `expected` at least once.
pub async fn await_all_seen(
    members: &[&GroupMember],
    earlier: &[Seen],
    expected: &BTreeSet<Vec<u8>>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let seen: BTreeSet<Vec<u8>> = members
            .iter()
            .flat_map(|m| m.seen())
            .chain(earlier.iter().cloned())
            .map(|s| s.payload)
            .collect();
        let missing = expected.difference(&seen).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} records were not consumed by any member within {timeout:?}",
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Within one assignment a member reads each partition in order, without gaps or repeats:
/// duplicates may only come from a partition changing hands (or being handed back) in a rebalance.
pub fn assert_contiguous_within_assignments(name: &str, seen: &[Seen]) {
    let mut runs: BTreeMap<(usize, i32), Vec<i64>> = BTreeMap::new();
    for s in seen {
        runs.entry((s.assignment_epoch, s.partition))
            .or_default()
            .push(s.offset);
    }
    for ((epoch, partition), offsets) in runs {
        for pair in offsets.windows(2) {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "{name}: within assignment #{epoch}, partition {partition} went from offset {} to {} \
                 (duplicates or gaps without a rebalance)",
                pair[0],
                pair[1]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw group requests
// ---------------------------------------------------------------------------------------------

/// Consumer protocol subscription metadata (version 0) for `topics`, as Java clients send it.
pub fn subscription(topics: &[&str]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&0i16.to_be_bytes());
    ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| str(t)).collect())
        .encode(&mut buf, 0)
        .expect("encode subscription");
    buf.freeze()
}

/// A JoinGroup for protocol type "consumer" with the "range" protocol.
pub fn join_request(
    group: &str,
    member_id: &str,
    session_timeout_ms: i32,
    topics: &[&str],
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group_id(group))
        .with_session_timeout_ms(session_timeout_ms)
        .with_rebalance_timeout_ms(5_000)
        .with_member_id(str(member_id))
        .with_protocol_type(str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(str("range"))
            .with_metadata(subscription(topics))])
}

/// Joins at the highest JoinGroup version: first the KIP-394 round trip for a member id, then
/// the real join. Returns the response of the second.
pub fn join(
    client: &mut WireClient,
    group: &str,
    session_timeout_ms: i32,
    topics: &[&str],
) -> JoinGroupResponse {
    let version = client.version::<JoinGroupRequest>(9);
    let first = client.call(&join_request(group, "", session_timeout_ms, topics), version);
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED, "first JoinGroup v{version}");
    let member_id = first.member_id.to_string();
    rejoin(client, group, &member_id, session_timeout_ms, topics)
}

/// JoinGroup with a known member id; blocks until the rebalance completes.
pub fn rejoin(
    client: &mut WireClient,
    group: &str,
    member_id: &str,
    session_timeout_ms: i32,
    topics: &[&str],
) -> JoinGroupResponse {
    let version = client.version::<JoinGroupRequest>(9);
    let response = client.call(
        &join_request(group, member_id, session_timeout_ms, topics),
        version,
    );
    assert_eq!(response.error_code, 0, "JoinGroup v{version} of {member_id}");
    response
}

/// SyncGroup; the leader passes the assignments, others an empty list.
pub fn sync(
    client: &mut WireClient,
    group: &str,
    generation: i32,
    member_id: &str,
    assignments: &[(&str, &[u8])],
) -> SyncGroupResponse {
    let version = client.version::<SyncGroupRequest>(5);
    let request = SyncGroupRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(generation)
        .with_member_id(str(member_id))
        .with_protocol_type(Some(str("consumer")))
        .with_protocol_name(Some(str("range")))
        .with_assignments(
            assignments
                .iter()
                .map(|(member, assignment)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(str(member))
                        .with_assignment(Bytes::copy_from_slice(assignment))
                })
                .collect(),
        );
    client.call(&request, version)
}

pub fn heartbeat(client: &mut WireClient, group: &str, generation: i32, member_id: &str) -> i16 {
    let version = client.version::<HeartbeatRequest>(4);
    client
        .call(
            &HeartbeatRequest::default()
                .with_group_id(group_id(group))
                .with_generation_id(generation)
                .with_member_id(str(member_id)),
            version,
        )
        .error_code
}

pub fn describe(client: &mut WireClient, group: &str) -> DescribedGroup {
    let version = client.version::<DescribeGroupsRequest>(5);
    let mut response = client.call(
        &DescribeGroupsRequest::default().with_groups(vec![group_id(group)]),
        version,
    );
    assert_eq!(response.groups.len(), 1, "one group described");
    response.groups.remove(0)
}

/// Commits `(partition, offset, metadata)` of `topic` for `group`.
pub fn commit(
    client: &mut WireClient,
    group: &str,
    generation: i32,
    member_id: &str,
    topic: &str,
    offsets: &[(i32, i64, &str)],
) -> OffsetCommitResponse {
    let version = client.version::<OffsetCommitRequest>(9);
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(str(member_id))
        .with_retention_time_ms(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                offsets
                    .iter()
                    .map(|(partition, offset, metadata)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*partition)
                            .with_committed_offset(*offset)
                            .with_committed_leader_epoch(-1)
                            .with_committed_metadata(Some(str(metadata)))
                    })
                    .collect(),
            )]);
    client.call(&request, version)
}

/// The error codes of every partition in an OffsetCommit response.
pub fn commit_errors(response: &OffsetCommitResponse) -> Vec<i16> {
    response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

/// Committed (offset, metadata) per partition of `topic` for `group`, through the single-group
/// form of OffsetFetch (v1-v7).
pub fn fetch_offsets(
    client: &mut WireClient,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> BTreeMap<i32, (i64, String)> {
    let version = client.version::<OffsetFetchRequest>(7);
    let response = client.call(
        &OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(topic_name(topic))
                .with_partition_indexes(partitions.to_vec())])),
        version,
    );
    assert_eq!(response.error_code, 0, "OffsetFetch v{version} error");
    response
        .topics
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| &t.partitions)
        .map(|p| {
            assert_eq!(
                p.error_code, 0,
                "OffsetFetch error for partition {}",
                p.partition_index
            );
            let metadata = p.metadata.as_ref().map(ToString::to_string).unwrap_or_default();
            (p.partition_index, (p.committed_offset, metadata))
        })
        .collect()
}

/// Polls `condition` every 100 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates a topic from a synchronous test.
pub fn create_topic_blocking(bootstrap: &str, topic: &str, partitions: i32) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(crate::clients::create_topic(bootstrap, topic, partitions));
}

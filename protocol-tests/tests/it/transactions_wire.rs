//! The transaction coordinator at the wire, where clients hide it: Kafka's error codes for each
//! misuse, the markers it writes, fencing, KIP-360 bumps, produce checks by version, and a
//! transaction surviving a restart.

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::broker::TestBroker;
use crate::idempotence::{init_producer_id, log_end};
use crate::wire::{fetch_request, transactional_batch, WireClient};
use crate::wire_apis::create;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REQUEST: i16 = 42;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const CONCURRENT_TRANSACTIONS: i16 = 51;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const PRODUCER_FENCED: i16 = 90;
const TRANSACTION_ABORTABLE: i16 = 120;

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.into()))
}

fn tid(s: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(s.into()))
}

fn init(wire: &mut WireClient, id: &str, timeout_ms: i32, expected: (i64, i16)) -> (i16, i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(tid(id)))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(expected.0))
        .with_producer_epoch(expected.1);
    let r = wire.call(&request, 4);
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

/// AddPartitionsToTxn at `version`: the error code of each (topic, partition), in order.
fn add(
    wire: &mut WireClient,
    version: i16,
    id: &str,
    pid: i64,
    epoch: i16,
    partitions: &[(&str, i32)],
) -> Vec<i16> {
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (t, p) in partitions {
        match topics.iter_mut().find(|x| x.name.0.as_str() == *t) {
            Some(x) => x.partitions.push(*p),
            None => topics.push(
                AddPartitionsToTxnTopic::default()
                    .with_name(topic_name(t))
                    .with_partitions(vec![*p]),
            ),
        }
    }
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(tid(id))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(topics);
    let response = wire.call(&request, version);
    partitions
        .iter()
        .map(|(t, p)| {
            let topic = response
                .results_by_topic_v3_and_below
                .iter()
                .find(|r| r.name.0.as_str() == *t)
                .expect("topic in the response");
            topic
                .results_by_partition
                .iter()
                .find(|r| r.partition_index == *p)
                .expect("partition in the response")
                .partition_error_code
        })
        .collect()
}

/// EndTxn v3, retried while the coordinator is still completing the previous end
/// (CONCURRENT_TRANSACTIONS, which clients retry).
fn end_settled(wire: &mut WireClient, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let code = end(wire, 3, id, pid, epoch, commit);
        if code != CONCURRENT_TRANSACTIONS || std::time::Instant::now() > deadline {
            return code;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn end(wire: &mut WireClient, version: i16, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let request = EndTxnRequest::default()
        .with_transactional_id(tid(id))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    wire.call(&request, version).error_code
}

/// One transactional batch of `n` records from (pid, epoch) starting at `seq`.
fn txn_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let values: Vec<Vec<u8>> = (0..n).map(|i| format!("txn-{seq}-{i}").into_bytes()).collect();
    let records: Vec<(&[u8], &[u8])> = values.iter().map(|v| (&b"k"[..], v.as_slice())).collect();
    transactional_batch(&records, 1_700_000_000_000, (pid, epoch, seq))
}

fn produce(wire: &mut WireClient, version: i16, id: Option<&str>, topic: &str, batch: Bytes) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_transactional_id(id.map(tid))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let p = wire
        .call(&request, version)
        .responses
        .remove(0)
        .partition_responses
        .remove(0);
    (p.error_code, p.base_offset)
}

/// Aborted transactions as (producer id, first offset).
type Aborted = Vec<(i64, i64)>;
/// Batches as (base offset, is a control batch).
type Batches = Vec<(i64, bool)>;

/// (high watermark, last stable offset, aborted transactions as (pid, first offset), batches
/// as (base offset, is control)) of a read_committed fetch of partition 0 from `offset`.
fn fetch_committed(wire: &mut WireClient, topic: &str, offset: i64) -> (i64, i64, Aborted, Batches) {
    let request = fetch_request(topic, 0, offset, 0).with_isolation_level(1);
    let mut r = wire.call(&request, 12);
    let p = r.responses.remove(0).partitions.remove(0);
    let aborted = p
        .aborted_transactions
        .unwrap_or_default()
        .iter()
        .map(|a| (a.producer_id.0, a.first_offset))
        .collect();
    let mut batches = Vec::new();
    let mut records = p.records.unwrap_or_default();
    while records.len() >= 61 {
        let base = i64::from_be_bytes(records[0..8].try_into().unwrap());
        let len = i32::from_be_bytes(records[8..12].try_into().unwrap()) as usize + 12;
        let attributes = i16::from_be_bytes(records[21..23].try_into().unwrap());
        batches.push((base, attributes & 0x20 != 0));
        records = records.slice(len..);
    }
    (p.high_watermark, p.last_stable_offset, aborted, batches)
}

/// Everything a read_committed consumer fetches from offset 0 up to the LSO, one segment per
/// fetch as Kafka serves it: the aborted transactions (deduplicated) and the batches.
fn read_committed_all(wire: &mut WireClient, topic: &str) -> (Aborted, Batches) {
    let (mut aborted, mut batches) = (Vec::new(), Vec::new());
    let mut offset = 0;
    loop {
        let (_, lso, a, b) = fetch_committed(wire, topic, offset);
        for t in a {
            if !aborted.contains(&t) {
                aborted.push(t);
            }
        }
        let Some(&(last_base, _)) = b.last() else { break };
        batches.extend(b);
        // Every batch here is one record or a marker, except the data batches this file sends,
        // whose ends the next fetch finds: step past the last base offset.
        offset = last_base + 1;
        if offset >= lso {
            break;
        }
    }
    (aborted, batches)
}

fn wait_for_lso(wire: &mut WireClient, topic: &str, lso: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fetch_committed(wire, topic, 0).1 != lso {
        assert!(std::time::Instant::now() < deadline, "LSO never reached {lso}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn init_producer_id_checks_timeouts_and_bumps_epochs_as_kafka_does() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    let find = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(vec![
            StrBytes::from_static_str("t1"),
            StrBytes::from_static_str(""),
        ]);
    let found = wire.call(&find, 4).coordinators;
    assert_eq!(
        (found[0].error_code, found[0].port),
        (0, broker.bootstrap().rsplit(':').next().unwrap().parse().unwrap())
    );
    assert_eq!(found[1].error_code, INVALID_REQUEST);

    for timeout in [0, -5, 900_001, i32::MAX] {
        assert_eq!(
            init(&mut wire, "t1", timeout, (-1, -1)).0,
            INVALID_TRANSACTION_TIMEOUT,
            "timeout {timeout}"
        );
    }
    let (code, pid, epoch) = init(&mut wire, "t1", 900_000, (-1, -1));
    assert_eq!((code, epoch), (0, 0));
    assert_eq!(init(&mut wire, "t1", 60_000, (-1, -1)), (0, pid, 1));
    // KIP-360: the producer names its id and epoch; a retry of a bump gets the same answer.
    assert_eq!(init(&mut wire, "t1", 60_000, (pid, 1)), (0, pid, 2));
    assert_eq!(init(&mut wire, "t1", 60_000, (pid, 1)), (0, pid, 2));
    assert_eq!(init(&mut wire, "t1", 60_000, (pid, 0)).0, PRODUCER_FENCED);
    assert_eq!(init(&mut wire, "t1", 60_000, (pid + 1, 2)).0, PRODUCER_FENCED);
    assert_eq!(init(&mut wire, "t1", 60_000, (-1, 3)).0, INVALID_REQUEST);
    // Before v4 PRODUCER_FENCED is INVALID_PRODUCER_EPOCH.
    let old = InitProducerIdRequest::default()
        .with_transactional_id(Some(tid("t1")))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(0);
    assert_eq!(wire.call(&old, 3).error_code, INVALID_PRODUCER_EPOCH);
    assert_eq!(
        init_producer_id(&mut wire, Some(""), -1, -1).error_code,
        INVALID_REQUEST
    );
}

#[test]
fn add_partitions_end_txn_and_produce_follow_kafkas_state_rules() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "a", 1, 1, &[], false), 0);
    let (_, pid, e) = init(&mut wire, "t", 60_000, (-1, -1));

    // A transactional batch before its partition was added: refused, by version.
    assert_eq!(
        produce(&mut wire, 10, Some("t"), "a", txn_batch(pid, e, 0, 1)).0,
        INVALID_TXN_STATE
    );
    assert_eq!(
        produce(&mut wire, 11, Some("t"), "a", txn_batch(pid, e, 0, 1)).0,
        TRANSACTION_ABORTABLE
    );
    assert_eq!(
        produce(&mut wire, 11, None, "a", txn_batch(pid, e, 0, 1)).0,
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );
    assert_eq!(log_end(&mut wire, "a"), 0);
    assert_eq!(
        end(&mut wire, 3, "t", pid, e, true),
        INVALID_TXN_STATE,
        "nothing to commit in Empty"
    );

    assert_eq!(
        add(&mut wire, 3, "t", pid, e, &[("a", 0), ("nosuch", 0)]),
        vec![OPERATION_NOT_ATTEMPTED, UNKNOWN_TOPIC_OR_PARTITION]
    );
    assert_eq!(
        add(&mut wire, 3, "t", pid + 1, e, &[("a", 0)]),
        vec![INVALID_PRODUCER_ID_MAPPING]
    );
    assert_eq!(
        add(&mut wire, 3, "t", pid, e + 1, &[("a", 0)]),
        vec![PRODUCER_FENCED]
    );
    assert_eq!(
        add(&mut wire, 1, "t", pid, e + 1, &[("a", 0)]),
        vec![INVALID_PRODUCER_EPOCH]
    );
    assert_eq!(
        add(&mut wire, 3, "unknown", pid, e, &[("a", 0)]),
        vec![INVALID_PRODUCER_ID_MAPPING]
    );
    assert_eq!(add(&mut wire, 3, "t", pid, e, &[("a", 0)]), vec![0]);
    assert_eq!(
        add(&mut wire, 3, "t", pid, e, &[("a", 0)]),
        vec![0],
        "adding again changes nothing"
    );

    assert_eq!(
        produce(&mut wire, 11, Some("t"), "a", txn_batch(pid, e, 0, 3)),
        (0, 0)
    );
    let (hw, lso, aborted, batches) = fetch_committed(&mut wire, "a", 0);
    assert_eq!((hw, lso, aborted, batches), (3, 0, vec![], vec![]));

    assert_eq!(end(&mut wire, 3, "t", pid, e + 1, true), PRODUCER_FENCED);
    assert_eq!(end(&mut wire, 1, "t", pid, e + 1, true), INVALID_PRODUCER_EPOCH);
    assert_eq!(
        end(&mut wire, 3, "t", pid + 1, e, true),
        INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(end(&mut wire, 3, "t", pid, e, true), 0);
    wait_for_lso(&mut wire, "a", 4);
    let (aborted, batches) = read_committed_all(&mut wire, "a");
    assert_eq!((aborted, batches), (vec![], vec![(0, false), (3, true)]));
    assert_eq!(end_settled(&mut wire, "t", pid, e, true), 0, "a retried commit");
    assert_eq!(
        end(&mut wire, 3, "t", pid, e, false),
        INVALID_TXN_STATE,
        "abort after commit"
    );

    // An aborted transaction: its records are listed for read_committed consumers to drop.
    assert_eq!(add(&mut wire, 3, "t", pid, e, &[("a", 0)]), vec![0]);
    assert_eq!(
        produce(&mut wire, 11, Some("t"), "a", txn_batch(pid, e, 3, 2)),
        (0, 4)
    );
    assert_eq!(end(&mut wire, 3, "t", pid, e, false), 0);
    wait_for_lso(&mut wire, "a", 7);
    let (aborted, batches) = read_committed_all(&mut wire, "a");
    assert_eq!(aborted, vec![(pid, 4)]);
    assert_eq!(batches, vec![(0, false), (3, true), (4, false), (6, true)]);
}

#[test]
fn a_new_producer_fences_the_open_transaction_of_the_old_one() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "a", 1, 1, &[], false), 0);
    let (_, pid, e) = init(&mut wire, "t", 60_000, (-1, -1));
    assert_eq!(add(&mut wire, 3, "t", pid, e, &[("a", 0)]), vec![0]);
    assert_eq!(
        produce(&mut wire, 11, Some("t"), "a", txn_batch(pid, e, 0, 2)),
        (0, 0)
    );

    // The new producer is told to retry while the old transaction is aborted with epoch e+1.
    assert_eq!(init(&mut wire, "t", 60_000, (-1, -1)).0, CONCURRENT_TRANSACTIONS);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (pid2, e2) = loop {
        match init(&mut wire, "t", 60_000, (-1, -1)) {
            (0, p, e) => break (p, e),
            (CONCURRENT_TRANSACTIONS, _, _) => {}
            other => panic!("{other:?}"),
        }
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!((pid2, e2), (pid, e + 2));
    let (_, lso, aborted, batches) = fetch_committed(&mut wire, "a", 0);
    assert_eq!(
        (lso, aborted, batches),
        (3, vec![(pid, 0)], vec![(0, false), (2, true)])
    );

    // The old producer is fenced everywhere.
    assert_eq!(end(&mut wire, 3, "t", pid, e, true), PRODUCER_FENCED);
    assert_eq!(add(&mut wire, 3, "t", pid, e, &[("a", 0)]), vec![PRODUCER_FENCED]);
    assert_eq!(
        produce(&mut wire, 11, Some("t"), "a", txn_batch(pid, e, 2, 1)).0,
        INVALID_PRODUCER_EPOCH
    );
}

#[test]
fn an_open_transaction_survives_a_restart_and_a_crash_and_then_commits() {
    let mut broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "a", 1, 1, &[], false), 0);
    let (_, pid, e) = init(&mut wire, "t", 60_000, (-1, -1));
    assert_eq!(add(&mut wire, 3, "t", pid, e, &[("a", 0)]), vec![0]);
    assert_eq!(
        produce(&mut wire, 11, Some("t"), "a", txn_batch(pid, e, 0, 2)),
        (0, 0)
    );
    let plain = crate::wire::record_batch(&[(b"k", b"plain")], 1_700_000_000_000);
    assert_eq!(produce(&mut wire, 11, None, "a", plain).0, 0);
    assert_eq!(fetch_committed(&mut wire, "a", 0).1, 0);

    broker.restart();
    let mut wire = WireClient::connect(broker.bootstrap());
    let (hw, lso, _, _) = fetch_committed(&mut wire, "a", 0);
    assert_eq!(
        (hw, lso),
        (3, 0),
        "the open transaction still pins the LSO after a restart"
    );
    broker.kill9();
    broker.restart();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(fetch_committed(&mut wire, "a", 0).1, 0, "and after kill -9");
    // The transaction carries on: more data, then the commit.
    assert_eq!(
        produce(&mut wire, 11, Some("t"), "a", txn_batch(pid, e, 2, 1)),
        (0, 3)
    );
    assert_eq!(end(&mut wire, 3, "t", pid, e, true), 0);
    wait_for_lso(&mut wire, "a", 5);
    // (The restart rolled the log: its first batch's timestamp is older than segment.ms.)
    let (aborted, batches) = read_committed_all(&mut wire, "a");
    assert_eq!(aborted, vec![]);
    assert_eq!(batches, vec![(0, false), (2, false), (3, false), (4, true)]);
}

fn txn_offset_commit(
    wire: &mut WireClient,
    version: i16,
    id: &str,
    pid: i64,
    epoch: i16,
    group: &str,
    offset: i64,
) -> i16 {
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    let request = TxnOffsetCommitRequest::default()
        .with_transactional_id(tid(id))
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(topic_name("a"))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])]);
    wire.call(&request, version).topics[0].partitions[0].error_code
}

/// (error code, committed offset) of group `g`'s offset for a-0, with or without require_stable.
fn fetch_offset(wire: &mut WireClient, group: &str, require_stable: bool) -> (i16, i64) {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_require_stable(require_stable)
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name("a"))
            .with_partition_indexes(vec![0])]));
    let r = wire.call(&request, 7);
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.committed_offset)
}

fn add_offsets(wire: &mut WireClient, id: &str, pid: i64, epoch: i16, group: &str) -> i16 {
    let request = AddOffsetsToTxnRequest::default()
        .with_transactional_id(tid(id))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(StrBytes::from_string(group.into())));
    wire.call(&request, 3).error_code
}

#[test]
fn transactional_offsets_are_pending_until_the_commit_and_dropped_by_an_abort() {
    const UNSTABLE_OFFSET_COMMIT: i16 = 88;
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "a", 1, 1, &[], false), 0);
    let (_, pid, e) = init(&mut wire, "t", 60_000, (-1, -1));
    assert_eq!(add(&mut wire, 3, "t", pid, e, &[("a", 0)]), vec![0]);
    // Without AddOffsetsToTxn, by version.
    assert_eq!(
        txn_offset_commit(&mut wire, 3, "t", pid, e, "g", 7),
        INVALID_TXN_STATE
    );
    assert_eq!(
        txn_offset_commit(&mut wire, 4, "t", pid, e, "g", 7),
        TRANSACTION_ABORTABLE
    );

    assert_eq!(add_offsets(&mut wire, "t", pid, e, "g"), 0);
    assert_eq!(txn_offset_commit(&mut wire, 3, "t", pid, e, "g", 7), 0);
    assert_eq!(
        txn_offset_commit(&mut wire, 3, "t", pid, e + 1, "g", 7),
        INVALID_PRODUCER_EPOCH
    );
    assert_eq!(fetch_offset(&mut wire, "g", true), (UNSTABLE_OFFSET_COMMIT, -1));
    assert_eq!(
        fetch_offset(&mut wire, "g", false),
        (0, -1),
        "nothing committed yet"
    );
    assert_eq!(end_settled(&mut wire, "t", pid, e, true), 0);
    assert_eq!(end_settled(&mut wire, "t", pid, e, true), 0);
    assert_eq!(fetch_offset(&mut wire, "g", true), (0, 7));

    // Aborted: the group keeps its offset.
    assert_eq!(add_offsets(&mut wire, "t", pid, e, "g"), 0);
    assert_eq!(txn_offset_commit(&mut wire, 3, "t", pid, e, "g", 9), 0);
    assert_eq!(end_settled(&mut wire, "t", pid, e, false), 0);
    assert_eq!(end_settled(&mut wire, "t", pid, e, false), 0);
    assert_eq!(fetch_offset(&mut wire, "g", true), (0, 7));
}

#[test]
fn describe_and_list_transactions_report_the_coordinators_state() {
    const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "a", 2, 1, &[], false), 0);
    let (_, pid, e) = init(&mut wire, "open", 60_000, (-1, -1));
    assert_eq!(
        add(&mut wire, 3, "open", pid, e, &[("a", 0), ("a", 1)]),
        vec![0, 0]
    );
    assert_eq!(add_offsets(&mut wire, "open", pid, e, "g"), 0);
    let (_, idle_pid, _) = init(&mut wire, "idle", 30_000, (-1, -1));

    let request = DescribeTransactionsRequest::default().with_transactional_ids(vec![
        tid("open"),
        tid("idle"),
        tid("nosuch"),
        tid(""),
    ]);
    let states = wire.call(&request, 0).transaction_states;
    let open = &states[0];
    assert_eq!(
        (
            open.error_code,
            open.transaction_state.as_str(),
            open.producer_id.0,
            open.producer_epoch,
            open.transaction_timeout_ms
        ),
        (0, "Ongoing", pid, e, 60_000)
    );
    assert!(open.transaction_start_time_ms > 0);
    let mut topics: Vec<(String, Vec<i32>)> = open
        .topics
        .iter()
        .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
        .collect();
    topics.sort();
    assert_eq!(topics.len(), 2);
    assert_eq!(topics[0].1.len(), 1, "the group's offsets partition");
    assert!(topics[0].0 == "__consumer_offsets");
    assert_eq!(topics[1], ("a".to_string(), vec![0, 1]));
    assert_eq!(
        (
            states[1].transaction_state.as_str(),
            states[1].transaction_start_time_ms
        ),
        ("Empty", -1)
    );
    assert_eq!(states[2].error_code, TRANSACTIONAL_ID_NOT_FOUND);
    assert_eq!(states[3].error_code, INVALID_REQUEST);

    let list = |wire: &mut WireClient, states: &[&'static str], pids: &[i64], duration: i64| {
        let request = ListTransactionsRequest::default()
            .with_state_filters(states.iter().map(|s| StrBytes::from_static_str(s)).collect())
            .with_producer_id_filters(pids.iter().map(|p| ProducerId(*p)).collect())
            .with_duration_filter(duration);
        let r = wire.call(&request, 1);
        let mut ids: Vec<String> = r
            .transaction_states
            .iter()
            .map(|t| t.transactional_id.0.to_string())
            .collect();
        ids.sort();
        (
            ids,
            r.unknown_state_filters
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(list(&mut wire, &[], &[], -1).0, vec!["idle", "open"]);
    assert_eq!(
        list(&mut wire, &["Ongoing", "Bogus"], &[], -1),
        (vec!["open".to_string()], vec!["Bogus".to_string()])
    );
    assert_eq!(list(&mut wire, &[], &[idle_pid], -1).0, vec!["idle"]);
    // Running for at least a minute: only the Empty one, whose start is -1.
    assert_eq!(list(&mut wire, &[], &[], 60_000).0, vec!["idle"]);
}

#[test]
fn add_partitions_v4_verifies_without_changing_and_adds_in_batches() {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTransaction;
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(create(&mut wire, "a", 2, 1, &[], false), 0);
    let (_, pid, e) = init(&mut wire, "t", 60_000, (-1, -1));
    assert_eq!(add(&mut wire, 3, "t", pid, e, &[("a", 0)]), vec![0]);
    let txn = |id: &str, pid: i64, epoch: i16, verify_only: bool, partitions: Vec<i32>| {
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(tid(id))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_verify_only(verify_only)
            .with_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(topic_name("a"))
                .with_partitions(partitions)])
    };
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        txn("t", pid, e, true, vec![0, 1]),
        txn("t", pid, e + 1, true, vec![0]),
        txn("nosuch", pid, e, true, vec![0]),
    ]);
    let codes: Vec<Vec<i16>> = wire
        .call(&request, 5)
        .results_by_transaction
        .iter()
        .map(|r| {
            r.topic_results[0]
                .results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
                .collect()
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            vec![0, TRANSACTION_ABORTABLE],
            vec![PRODUCER_FENCED],
            vec![INVALID_PRODUCER_ID_MAPPING]
        ]
    );
    // Verifying changed nothing: a-1 is still outside the transaction; adding it (not
    // verify-only) puts it in.
    let request =
        AddPartitionsToTxnRequest::default().with_transactions(vec![txn("t", pid, e, false, vec![1])]);
    let added = wire.call(&request, 4);
    assert_eq!(
        added.results_by_transaction[0].topic_results[0].results_by_partition[0].partition_error_code,
        0
    );
    let request =
        AddPartitionsToTxnRequest::default().with_transactions(vec![txn("t", pid, e, true, vec![0, 1])]);
    let verified = wire.call(&request, 4);
    let codes: Vec<i16> = verified.results_by_transaction[0].topic_results[0]
        .results_by_partition
        .iter()
        .map(|p| p.partition_error_code)
        .collect();
    assert_eq!(codes, vec![0, 0]);
}

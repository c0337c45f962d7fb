//! Incremental fetch sessions (KIP-227) at the wire, where clients hide them, and through
//! kafka-python, whose consumer uses them by default.

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::broker::TestBroker;
use crate::metrics::{metrics_address, scrape};
use crate::wire::{record_batch, WireClient};
use crate::wire_apis::create;

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

fn produce(wire: &mut WireClient, topic: &str, partition: i32) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(record_batch(&[(b"k", b"v")], 1_000)))])]);
    let version = wire.version::<ProduceRequest>(12);
    let response = wire.call(&request, version);
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
}

/// A Fetch naming `partitions` (partition, fetch offset) of `topic`, by name (v12 and below) or
/// by id, with no wait.
fn fetch(session: (i32, i32), topic: &str, id: uuid::Uuid, partitions: &[(i32, i64)]) -> FetchRequest {
    let topics = if partitions.is_empty() {
        Vec::new()
    } else {
        vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_topic_id(id)
            .with_partitions(
                partitions
                    .iter()
                    .map(|&(p, offset)| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )]
    };
    FetchRequest::default()
        .with_session_id(session.0)
        .with_session_epoch(session.1)
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(4 << 20)
        .with_topics(topics)
}

/// (partition, has records) of each partition in the response, in order.
fn partitions_of(response: &FetchResponse) -> Vec<(i32, bool)> {
    response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            (
                p.partition_index,
                p.records.as_ref().is_some_and(|r| !r.is_empty()),
            )
        })
        .collect()
}

#[test]
fn fetch_sessions_carry_only_news_and_refuse_what_kafka_refuses() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    let topic = "sessions";
    assert_eq!(create(&mut wire, topic, 3, 1, &[], false), 0);
    produce(&mut wire, topic, 0);
    produce(&mut wire, topic, 1);
    let nil = uuid::Uuid::nil();

    // A full fetch asking for a session (epoch 0) gets one, and every partition.
    let full = wire.call(&fetch((0, 0), topic, nil, &[(0, 0), (1, 0), (2, 0)]), 12);
    assert_eq!(full.error_code, 0);
    let session = full.session_id;
    assert_ne!(session, 0, "a session was created");
    assert_eq!(partitions_of(&full), vec![(0, true), (1, true), (2, false)]);

    // Epoch 1, fetch positions moved past the records read: nothing new, nothing sent.
    let quiet = wire.call(&fetch((session, 1), topic, nil, &[(0, 1), (1, 1)]), 12);
    assert_eq!((quiet.error_code, quiet.session_id), (0, session));
    assert_eq!(partitions_of(&quiet), vec![]);

    // A record on partition 2: the next incremental fetch, naming no partition, brings it alone.
    produce(&mut wire, topic, 2);
    let news = wire.call(&fetch((session, 2), topic, nil, &[]), 12);
    assert_eq!((news.error_code, news.session_id), (0, session));
    assert_eq!(partitions_of(&news), vec![(2, true)]);

    // The same epoch again (a retry): refused at the top level, session id 0, session kept.
    let stale = wire.call(&fetch((session, 2), topic, nil, &[]), 12);
    assert_eq!(
        (stale.error_code, stale.session_id, stale.responses.len()),
        (INVALID_FETCH_SESSION_EPOCH, 0, 0)
    );
    // Partition 2 forgotten: later records there are not fetched any more.
    let forget =
        fetch((session, 3), topic, nil, &[]).with_forgotten_topics_data(vec![ForgottenTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![2])]);
    let forgot = wire.call(&forget, 12);
    assert_eq!((forgot.error_code, forgot.session_id), (0, session));
    produce(&mut wire, topic, 2);
    produce(&mut wire, topic, 0);
    let after = wire.call(&fetch((session, 4), topic, nil, &[]), 12);
    assert_eq!(
        partitions_of(&after),
        vec![(0, true)],
        "only the partition still in the session"
    );

    // A session made with topic names cannot go on with topic ids (Fetch v13).
    let by_id = wire.call(&fetch((session, 5), topic, uuid::Uuid::new_v4(), &[]), 13);
    assert_eq!(
        (by_id.error_code, by_id.session_id),
        (FETCH_SESSION_TOPIC_ID_ERROR, 0)
    );

    // An id nobody was given.
    let unknown = wire.call(&fetch((session ^ 0x5a5a, 1), topic, nil, &[]), 12);
    assert_eq!(
        (unknown.error_code, unknown.session_id),
        (FETCH_SESSION_ID_NOT_FOUND, 0)
    );

    // Epoch -1 closes the session and is served without one.
    let closing = wire.call(&fetch((session, -1), topic, nil, &[(1, 0)]), 12);
    assert_eq!((closing.error_code, closing.session_id), (0, 0));
    assert_eq!(partitions_of(&closing), vec![(1, true)]);
    let gone = wire.call(&fetch((session, 5), topic, nil, &[]), 12);
    assert_eq!(gone.error_code, FETCH_SESSION_ID_NOT_FOUND);
}

#[test]
fn fetch_sessions_by_topic_id_continue_by_id() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    let topic = "sessions-by-id";
    assert_eq!(create(&mut wire, topic, 2, 1, &[], false), 0);
    let metadata = wire.call(
        &MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(name(topic))),
        ])),
        12,
    );
    let id = metadata.topics[0].topic_id;
    assert!(!id.is_nil());
    produce(&mut wire, topic, 1);
    let full = wire.call(&fetch((0, 0), "", id, &[(0, 0), (1, 0)]), 13);
    assert_eq!(full.error_code, 0);
    assert_ne!(full.session_id, 0);
    assert_eq!(full.responses[0].topic_id, id);
    produce(&mut wire, topic, 0);
    let news = wire.call(&fetch((full.session_id, 1), "", id, &[(1, 1)]), 13);
    assert_eq!((news.error_code, news.session_id), (0, full.session_id));
    assert_eq!(partitions_of(&news), vec![(0, true)]);
    assert_eq!(news.responses[0].topic_id, id);
    // Back to names on the same session: refused.
    let by_name = wire.call(&fetch((full.session_id, 2), topic, uuid::Uuid::nil(), &[]), 12);
    assert_eq!(by_name.error_code, FETCH_SESSION_TOPIC_ID_ERROR);
}

#[test]
fn kafka_python_reads_every_record_through_incremental_fetch_sessions() {
    let broker = TestBroker::builder()
        .with("metrics.listener", "127.0.0.1:0")
        .start();
    let stdout = crate::python_client::run_script("fetch_sessions.py", broker.bootstrap());
    assert!(
        stdout.contains("kafka-python fetch sessions ok: 1440 records"),
        "{stdout}"
    );
    let metrics = scrape(&metrics_address(&broker));
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    };
    assert!(value("keel_fetch_sessions_created_total ") >= 1.0, "{metrics}");
    assert!(
        value("keel_fetch_incremental_total ") >= 10.0,
        "kafka-python's consumer did not fetch incrementally:\n{metrics}"
    );
}

//! Settings changed while the broker runs: KIP-226 dynamic broker settings (this broker and the
//! cluster-wide default) and KIP-848 group settings, through librdkafka's AdminClient and the raw
//! protocol — their validation, their effect on topics and groups, and their survival across a
//! restart.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, ConsumerGroupHeartbeatRequest, DescribeConfigsRequest, GroupId,
    IncrementalAlterConfigsRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AlterConfig, ConfigResource, ConfigSource, ResourceSpecifier};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

use crate::broker::TestBroker;
use crate::clients::{admin, admin_options, create_topic, producer};
use crate::wire::{decode_response, record_batch, WireClient};

const BROKER: i8 = 4;
const GROUP: i8 = 32;
const TOPIC: i8 = 2;
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// One IncrementalAlterConfigs resource; returns its error code.
pub(crate) fn alter(
    wire: &mut WireClient,
    resource_type: i8,
    name: &str,
    changes: &[(&str, i8, Option<&str>)],
) -> i16 {
    let configs = changes
        .iter()
        .map(|(k, op, v)| {
            AlterableConfig::default()
                .with_name(s(k))
                .with_config_operation(*op)
                .with_value(v.map(s))
        })
        .collect();
    let request =
        IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(s(name))
            .with_configs(configs)]);
    wire.call(&request, 1).responses[0].error_code
}

fn describe(wire: &mut WireClient, resource_type: i8, name: &str) -> DescribeConfigsResult {
    let request = DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(s(name))])
        .with_include_synonyms(true);
    wire.call(&request, 4).results.remove(0)
}

/// (value, config_source) of one described setting.
fn setting(result: &DescribeConfigsResult, name: &str) -> Option<(Option<String>, i8)> {
    result
        .configs
        .iter()
        .find(|c| c.name.as_str() == name)
        .map(|c| (c.value.as_ref().map(|v| v.to_string()), c.config_source))
}

fn some(v: &str, source: i8) -> Option<(Option<String>, i8)> {
    Some((Some(v.to_string()), source))
}

async fn produce_keyless(bootstrap: &str, topic: &str) -> Result<(), KafkaError> {
    producer(bootstrap, &[("message.timeout.ms", "10000")])
        .send(
            FutureRecord::<(), _>::to(topic).partition(0).payload("no key"),
            Duration::from_secs(15),
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

/// DescribeConfigs of broker 1 and of the topic `inherits`, through librdkafka.
async fn describe_both(bootstrap: &str) -> (ConfigResource, ConfigResource) {
    let mut results = admin(bootstrap)
        .describe_configs(
            &[ResourceSpecifier::Broker(1), ResourceSpecifier::Topic("inherits")],
            &admin_options(),
        )
        .await
        .expect("DescribeConfigs request");
    let topic = results.pop().unwrap().expect("topic described");
    let broker = results.pop().unwrap().expect("broker described");
    (broker, topic)
}

#[tokio::test]
async fn a_dynamic_broker_setting_reaches_topics_without_their_own_and_survives_restart() {
    let mut broker = TestBroker::start();
    create_topic(broker.bootstrap(), "inherits", 1).await;
    produce_keyless(broker.bootstrap(), "inherits")
        .await
        .expect("a delete-policy topic takes keyless records");
    // A topic with a cleanup.policy of its own does not follow the broker setting.
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(
        crate::wire_apis::create(
            &mut wire,
            "own-policy",
            1,
            1,
            &[("cleanup.policy", "delete")],
            false
        ),
        0
    );

    // AlterConfigs on broker 1: every topic without a cleanup.policy of its own is now compacted.
    let results = admin(broker.bootstrap())
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Broker(1)).set("log.cleanup.policy", "compact")],
            &admin_options(),
        )
        .await
        .expect("AlterConfigs request");
    assert!(results[0].is_ok(), "{results:?}");
    let err = produce_keyless(broker.bootstrap(), "inherits")
        .await
        .expect_err("a compacted topic refuses keyless records");
    assert_eq!(
        err.rdkafka_error_code(),
        Some(RDKafkaErrorCode::InvalidRecord),
        "{err}"
    );
    produce_keyless(broker.bootstrap(), "own-policy")
        .await
        .expect("its own cleanup.policy=delete still applies");

    broker.restart();
    let (broker_config, topic_config) = describe_both(broker.bootstrap()).await;
    let policy = broker_config
        .get("log.cleanup.policy")
        .expect("log.cleanup.policy");
    assert_eq!(policy.value.as_deref(), Some("compact"));
    assert_eq!(policy.source, ConfigSource::DynamicBroker);
    assert!(!policy.is_read_only);
    assert!(broker_config.get("node.id").expect("node.id").is_read_only);
    let inherited = topic_config.get("cleanup.policy").expect("cleanup.policy");
    assert_eq!(inherited.value.as_deref(), Some("compact"));
    assert_eq!(inherited.source, ConfigSource::DynamicBroker);
    assert!(
        produce_keyless(broker.bootstrap(), "inherits").await.is_err(),
        "still compacted after the restart"
    );

    // A read-only setting is refused, and the whole resource with it. (rdkafka 0.39's
    // alter_configs future reports every resource as Ok, dropping librdkafka's per-resource
    // error, so the refusal shows as nothing having changed; the error code itself is checked
    // over the raw protocol below.)
    admin(broker.bootstrap())
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Broker(1))
                .set("log.cleanup.policy", "delete")
                .set("node.id", "7")],
            &admin_options(),
        )
        .await
        .expect("AlterConfigs request");
    let (broker_config, _) = describe_both(broker.bootstrap()).await;
    let policy = broker_config
        .get("log.cleanup.policy")
        .expect("log.cleanup.policy");
    assert_eq!(policy.value.as_deref(), Some("compact"), "refused as a whole");
    assert_eq!(
        broker_config.get("node.id").and_then(|e| e.value.as_deref()),
        Some("1")
    );
    // AlterConfigs replaces the broker's whole dynamic set: an empty one clears it.
    let results = admin(broker.bootstrap())
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Broker(1))],
            &admin_options(),
        )
        .await
        .expect("AlterConfigs request");
    assert!(results[0].is_ok(), "{results:?}");
    produce_keyless(broker.bootstrap(), "inherits")
        .await
        .expect("back to the delete policy");
    let (broker_config, _) = describe_both(broker.bootstrap()).await;
    let policy = broker_config
        .get("log.cleanup.policy")
        .expect("log.cleanup.policy");
    assert_eq!(policy.value.as_deref(), Some("delete"));
    assert_eq!(policy.source, ConfigSource::Default);
}

#[test]
fn incremental_changes_to_the_cluster_default_and_this_broker_follow_kafkas_rules() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());

    // The cluster-wide default (empty name): a small log.segment.bytes makes topics without a
    // segment.bytes of their own roll segments at that size.
    assert_eq!(
        alter(&mut wire, BROKER, "", &[("log.segment.bytes", SET, Some("2048"))]),
        0
    );
    let default = describe(&mut wire, BROKER, "");
    assert_eq!(default.error_code, 0);
    assert_eq!(
        default.configs.len(),
        1,
        "the cluster default lists what is set there"
    );
    assert_eq!(setting(&default, "log.segment.bytes"), some("2048", 3));
    let this = describe(&mut wire, BROKER, "1");
    assert_eq!(setting(&this, "log.segment.bytes"), some("2048", 3));
    assert_eq!(crate::wire_apis::create(&mut wire, "rolls", 1, 1, &[], false), 0);
    let described = describe(&mut wire, TOPIC, "rolls");
    assert_eq!(setting(&described, "segment.bytes"), some("2048", 3));
    let payload = vec![b'x'; 700];
    for _ in 0..6 {
        let batch = record_batch(&[(b"k".as_slice(), payload.as_slice())], 1);
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(s("rolls")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch))])]);
        let r = wire.call(&request, 9);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    let segments = std::fs::read_dir(broker.data_dir().join("rolls-0"))
        .expect("partition directory")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
        .count();
    assert!(
        segments >= 2,
        "4 KiB in 2 KiB segments rolled, found {segments} segment(s)"
    );

    // This broker's value beats the cluster default.
    assert_eq!(
        alter(
            &mut wire,
            BROKER,
            "1",
            &[("log.segment.bytes", SET, Some("4096"))]
        ),
        0
    );
    let this = describe(&mut wire, BROKER, "1");
    let entry = this
        .configs
        .iter()
        .find(|c| c.name.as_str() == "log.segment.bytes")
        .unwrap();
    assert_eq!(entry.config_source, 2);
    let chain: Vec<(String, i8)> = entry
        .synonyms
        .iter()
        .map(|s| (s.value.as_ref().unwrap().to_string(), s.source))
        .collect();
    assert_eq!(
        chain,
        vec![
            ("4096".to_string(), 2),
            ("2048".to_string(), 3),
            ("1073741824".to_string(), 5)
        ]
    );

    // APPEND starts from the default list; SUBTRACT takes it away again.
    assert_eq!(
        alter(
            &mut wire,
            BROKER,
            "1",
            &[("log.cleanup.policy", APPEND, Some("compact"))]
        ),
        0
    );
    assert_eq!(
        setting(&describe(&mut wire, BROKER, "1"), "log.cleanup.policy"),
        some("delete,compact", 2)
    );
    assert_eq!(
        alter(
            &mut wire,
            BROKER,
            "1",
            &[("log.cleanup.policy", SUBTRACT, Some("compact"))]
        ),
        0
    );
    assert_eq!(
        setting(&describe(&mut wire, BROKER, "1"), "log.cleanup.policy"),
        some("delete", 2)
    );

    // Listener security settings are per broker only; read-only ones and bad values are refused;
    // another broker's id is not ours.
    let relogin = [("sasl.kerberos.min.time.before.relogin", SET, Some("58000"))];
    assert_eq!(alter(&mut wire, BROKER, "1", &relogin), 0);
    assert_eq!(alter(&mut wire, BROKER, "", &relogin), INVALID_REQUEST);
    assert_eq!(
        alter(&mut wire, BROKER, "1", &[("log.dirs", SET, Some("/tmp"))]),
        INVALID_REQUEST
    );
    assert_eq!(
        alter(&mut wire, BROKER, "1", &[("message.max.bytes", SET, Some("big"))]),
        INVALID_REQUEST
    );
    assert_eq!(
        alter(&mut wire, BROKER, "7", &[("background.threads", SET, Some("9"))]),
        INVALID_REQUEST
    );
    assert_eq!(
        alter(
            &mut wire,
            BROKER,
            "1",
            &[("background.threads", APPEND, Some("9"))]
        ),
        INVALID_CONFIG
    );
    // A name Keel does not know is kept, as Kafka keeps custom settings, and described as
    // sensitive (its type is unknown).
    assert_eq!(
        alter(&mut wire, BROKER, "1", &[("my.custom.setting", SET, Some("x"))]),
        0
    );
    let custom = describe(&mut wire, BROKER, "1");
    let entry = custom
        .configs
        .iter()
        .find(|c| c.name.as_str() == "my.custom.setting")
        .expect("custom setting described");
    assert!(entry.is_sensitive && entry.value.is_none() && entry.config_source == 2);
    assert!(entry.read_only, "Kafka reports custom settings read-only");
    // DELETE reverts to the next level.
    assert_eq!(
        alter(&mut wire, BROKER, "1", &[("log.segment.bytes", DELETE, None)]),
        0
    );
    assert_eq!(
        setting(&describe(&mut wire, BROKER, "1"), "log.segment.bytes"),
        some("2048", 3)
    );
}

/// The heartbeat interval the coordinator gives a new member of `group`.
fn group_heartbeat_interval(wire: &mut WireClient, group: &str) -> i32 {
    static MEMBERS: AtomicU32 = AtomicU32::new(0);
    let member = format!("member-{}", MEMBERS.fetch_add(1, Ordering::Relaxed));
    let request = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(&member))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(10_000)
        .with_subscribed_topic_names(Some(vec![TopicName(s("anything"))]))
        .with_topic_partitions(Some(Vec::new()));
    let response = wire.call(&request, 1);
    assert_eq!(response.error_code, 0, "{:?}", response.error_message);
    response.heartbeat_interval_ms
}

#[test]
fn group_settings_are_validated_kept_and_used_by_the_coordinator() {
    let mut broker = TestBroker::builder()
        .with("group.consumer.session.timeout.ms", 50000)
        .start();
    let mut wire = WireClient::connect(broker.bootstrap());
    let interval = [("consumer.heartbeat.interval.ms", SET, Some("6000"))];
    assert_eq!(alter(&mut wire, GROUP, "tuned-group", &interval), 0);
    assert_eq!(group_heartbeat_interval(&mut wire, "tuned-group"), 6000);
    assert_eq!(
        group_heartbeat_interval(&mut wire, "other-group"),
        5000,
        "other groups keep the broker default"
    );

    let described = describe(&mut wire, GROUP, "tuned-group");
    assert_eq!(described.error_code, 0);
    // GROUP_CONFIG (8) for the group's own value; an inherited one has its broker setting's
    // source: STATIC_BROKER_CONFIG (4) when set at start-up, DEFAULT_CONFIG (5) otherwise.
    assert_eq!(
        setting(&described, "consumer.heartbeat.interval.ms"),
        some("6000", 8)
    );
    assert_eq!(
        setting(&described, "consumer.session.timeout.ms"),
        some("50000", 4)
    );

    // Kafka's rules: known names, within the broker's bounds, session longer than heartbeat.
    for refused in [
        ("no.such.group.setting", "45000"),
        // Below group.consumer.min.session.timeout.ms (45000), above the heartbeat interval.
        ("consumer.session.timeout.ms", "44000"),
        ("consumer.session.timeout.ms", "999999"),
        ("consumer.heartbeat.interval.ms", "often"),
    ] {
        assert_eq!(
            alter(
                &mut wire,
                GROUP,
                "tuned-group",
                &[(refused.0, SET, Some(refused.1))]
            ),
            INVALID_CONFIG,
            "{refused:?}"
        );
    }
    assert_eq!(alter(&mut wire, GROUP, "", &interval), INVALID_REQUEST);

    broker.restart();
    let mut wire = WireClient::connect(broker.bootstrap());
    assert_eq!(
        group_heartbeat_interval(&mut wire, "tuned-group"),
        6000,
        "kept across a restart"
    );
    assert_eq!(
        alter(
            &mut wire,
            GROUP,
            "tuned-group",
            &[("consumer.heartbeat.interval.ms", DELETE, None)]
        ),
        0
    );
    assert_eq!(
        setting(
            &describe(&mut wire, GROUP, "tuned-group"),
            "consumer.heartbeat.interval.ms"
        ),
        some("5000", 5)
    );
}

#[test]
fn max_connections_changes_at_run_time_without_cutting_connections() {
    use std::io::{ErrorKind, Read, Write};

    let broker = TestBroker::start();
    let mut admin = WireClient::connect(broker.bootstrap());
    assert_eq!(
        alter(&mut admin, BROKER, "", &[("max.connections", SET, Some("1"))]),
        0
    );
    // The open connection keeps being served; a new one waits, unaccepted, in the backlog.
    assert_eq!(
        setting(&describe(&mut admin, BROKER, "1"), "max.connections"),
        some("1", 3)
    );
    let mut waiting = WireClient::connect_raw(broker.bootstrap());
    let correlation_id = waiting.next_correlation_id();
    let frame = waiting.frame(&ApiVersionsRequest::default(), 0);
    waiting.stream.write_all(&frame).expect("send ApiVersions");
    waiting
        .stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut byte = [0u8; 1];
    match waiting.stream.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a connection beyond max.connections was served: {other:?}"),
    }
    // Raising the limit lets it in, and its request is answered.
    assert_eq!(
        alter(&mut admin, BROKER, "", &[("max.connections", SET, Some("5"))]),
        0
    );
    waiting
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let frame = waiting.read_frame().expect("answered once accepted");
    let response = decode_response::<ApiVersionsRequest>(frame, 0, correlation_id);
    assert_eq!(response.error_code, 0);
}

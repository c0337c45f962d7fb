//! FindCoordinator: the single node answers for every group, with the endpoint of the
//! listener the client came through, in the single-key (v0-v3) and batched (v4+) forms.

use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::StrBytes;

use crate::broker::TestBroker;
use crate::wire::WireClient;

fn port_of(bootstrap: &str) -> i32 {
    bootstrap
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("bootstrap has a port")
}

#[test]
fn find_coordinator_names_this_broker_for_groups_in_every_version() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    let port = port_of(broker.bootstrap());
    for version in 0..=3 {
        let r = wire.call(
            &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("billing")),
            version,
        );
        assert_eq!(r.error_code, 0, "v{version} error");
        assert_eq!(
            (r.node_id.0, r.host.as_str(), r.port),
            (1, "127.0.0.1", port),
            "v{version}"
        );
    }
    let version = wire.version::<FindCoordinatorRequest>(6);
    assert!(version >= 4, "batched FindCoordinator is advertised");
    let keys = ["a", "b", ""].map(StrBytes::from_static_str).to_vec();
    let r = wire.call(
        &FindCoordinatorRequest::default().with_coordinator_keys(keys),
        version,
    );
    assert_eq!(r.coordinators.len(), 3);
    for c in &r.coordinators[..2] {
        assert_eq!(
            (c.error_code, c.node_id.0, c.host.as_str(), c.port),
            (0, 1, "127.0.0.1", port)
        );
    }
    // An empty group id is refused with INVALID_REQUEST (42), as Kafka does.
    assert_eq!(r.coordinators[2].error_code, 42);
}

#[test]
fn find_coordinator_v3_names_this_node_for_a_transactional_id() {
    let broker = TestBroker::start();
    let mut wire = WireClient::connect(broker.bootstrap());
    let port: i32 = broker.bootstrap().rsplit(':').next().unwrap().parse().unwrap();
    let r = wire.call(
        &FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str("txn"))
            .with_key_type(1),
        3,
    );
    assert_eq!((r.error_code, r.node_id.0, r.port), (0, 1, port));
    let empty = wire.call(&FindCoordinatorRequest::default().with_key_type(1), 3);
    assert_eq!(
        empty.error_code, 42,
        "an empty transactional id is INVALID_REQUEST"
    );
}

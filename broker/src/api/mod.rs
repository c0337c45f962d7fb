//! One module per Kafka API family. A handler translates a request into calls on the broker's
//! services and builds the response; the logic lives in the services.

pub mod api_versions;
pub mod configs;
pub mod consumer_group;
pub mod coordinator;
pub mod fetch;
pub mod groups;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod topics;

use kafka_protocol::protocol::StrBytes;

/// A response string from an owned one.
pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Kafka's "authorized operations not requested" marker.
pub(crate) const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// The single leader epoch of every partition on this one-node broker.
pub(crate) const LEADER_EPOCH: i32 = 0;

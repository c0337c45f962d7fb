//! One module per Kafka API family. A handler translates a request into calls on the broker's
//! services and builds the response; the logic lives in the services.

pub mod configs;
pub mod consumer_group;
pub mod coordinator;
pub mod delete_records;
pub mod fetch;
pub mod groups;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producers;
mod request;
pub mod topics;
pub mod transactions;

pub use request::{BoxFuture, Endpoint, Reply, ReplyBudget, RequestContext};

#[cfg(test)]
mod tests;

use kafka_protocol::protocol::StrBytes;

/// A response string from an owned one.
pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Kafka's "authorized operations not requested" marker.
pub(crate) const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// Without an authorizer every client may perform every operation a resource supports, and
/// Kafka reports exactly those when asked (`AclEntry.supportedOperations`; bit n is the
/// AclOperation with code n). Topic: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE,
/// DESCRIBE_CONFIGS, ALTER_CONFIGS.
pub(crate) const TOPIC_OPERATIONS: i32 = ops(&[3, 4, 5, 6, 7, 8, 10, 11]);
/// Cluster: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS,
/// IDEMPOTENT_WRITE.
pub(crate) const CLUSTER_OPERATIONS: i32 = ops(&[5, 7, 8, 9, 10, 11, 12]);
/// Group: READ, DELETE, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
pub(crate) const GROUP_OPERATIONS: i32 = ops(&[3, 6, 8, 10, 11]);

const fn ops(codes: &[i32]) -> i32 {
    let mut bits = 0;
    let mut i = 0;
    while i < codes.len() {
        bits |= 1 << codes[i];
        i += 1;
    }
    bits
}

/// The authorized operations to report: all of the resource's when requested.
pub(crate) fn authorized_operations(requested: bool, all: i32) -> i32 {
    if requested {
        all
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    }
}

/// The single leader epoch of every partition on this one-node broker.
pub(crate) const LEADER_EPOCH: i32 = 0;

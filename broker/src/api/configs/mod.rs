//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs on the three resources Keel
//! configures: topics (overrides kept with the topic), the broker (KIP-226 dynamic settings, for
//! this broker or as the cluster-wide default) and groups (KIP-848 group settings).

mod alter;
mod describe;

pub use alter::{alter_configs, incremental_alter_configs};
pub use describe::describe_configs;

use crate::broker::Broker;
use crate::config::Level;
use crate::error::BrokerError;

/// Kafka's ConfigResource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const GROUP: i8 = 32;

/// The level an AlterConfigs or DescribeConfigs BROKER resource name addresses: the empty name
/// is the cluster-wide default, otherwise it must be this broker's node id.
pub(super) fn broker_level(broker: &Broker, name: &str) -> Result<Level, BrokerError> {
    if name.is_empty() {
        return Ok(Level::ClusterDefault);
    }
    let id: i32 = name
        .parse()
        .map_err(|_| BrokerError::InvalidRequest(format!("Node id must be an integer, but it is: {name}")))?;
    if id != broker.node_id {
        return Err(BrokerError::InvalidRequest(format!(
            "Unexpected broker id, expected {}, but received {name}",
            broker.node_id
        )));
    }
    Ok(Level::PerBroker)
}

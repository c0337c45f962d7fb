//! Per-group settings (KIP-848 GROUP config resources) as the coordinator keeps them: by group
//! id, apart from the groups' state so that configuring a group never waits on the
//! coordinator's work, persisted before they take effect. Their definitions and rules are
//! `crate::config::group`.

use std::collections::{BTreeMap, HashMap};

use super::GroupCoordinator;
use crate::config::alter::{AlterError, Alteration};
use crate::config::group::{ConsumerGroupConfig, GroupConfig, InvalidGroupConfig};

/// Why a group's settings were not changed.
#[derive(Debug, thiserror::Error)]
pub enum SetGroupConfigError {
    #[error(transparent)]
    Alter(#[from] AlterError),
    #[error(transparent)]
    Invalid(#[from] InvalidGroupConfig),
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
}

pub(super) fn resolve_group_config(
    configs: &HashMap<String, BTreeMap<String, String>>,
    group_id: &str,
    defaults: &ConsumerGroupConfig,
) -> GroupConfig {
    let none = BTreeMap::new();
    GroupConfig::resolve(configs.get(group_id).unwrap_or(&none), defaults)
}

impl GroupCoordinator {
    /// A group's settings: its overrides over the broker's `group.consumer.*` defaults.
    pub fn group_config(&self, group_id: &str) -> GroupConfig {
        let configs = self.group_configs.read().unwrap_or_else(|e| e.into_inner());
        resolve_group_config(&configs, group_id, &self.config.consumer)
    }

    /// A group's overrides (empty when it has none; the group need not exist).
    pub fn group_config_overrides(&self, group_id: &str) -> BTreeMap<String, String> {
        let configs = self.group_configs.read().unwrap_or_else(|e| e.into_inner());
        configs.get(group_id).cloned().unwrap_or_default()
    }

    /// The broker defaults a group's settings fall back to.
    pub fn consumer_defaults(&self) -> &ConsumerGroupConfig {
        &self.config.consumer
    }

    /// Changes a group's overrides: `change` gets the current ones and returns the new set,
    /// which is validated and persisted before it takes effect (members pick it up at their next
    /// heartbeat). Changes are serialised; heartbeats only wait for the final swap.
    pub fn alter_group_config(
        &self,
        group_id: &str,
        alteration: &Alteration,
        validate_only: bool,
    ) -> Result<(), SetGroupConfigError> {
        let _serial = self.group_config_writes.lock().unwrap_or_else(|e| e.into_inner());
        let overrides = alteration.apply(&self.group_config_overrides(group_id))?;
        GroupConfig::validate(&overrides, &self.config.consumer)?;
        if validate_only {
            return Ok(());
        }
        self.settings_store.put_group_config(group_id, &overrides)?;
        tracing::info!(group = %group_id, ?overrides, "group configuration altered");
        let mut configs = self.group_configs.write().unwrap_or_else(|e| e.into_inner());
        if overrides.is_empty() {
            configs.remove(group_id);
        } else {
            configs.insert(group_id.to_string(), overrides);
        }
        Ok(())
    }
}

//! The config alter engine, as Kafka's ConfigAdminManager: a request's SET, DELETE, APPEND and
//! SUBTRACT changes applied to a copy of one resource's settings. Which settings a resource
//! knows, and whether the result is valid, is the business of the service that owns it; each
//! service takes an `Alteration` and applies it to its current settings under its own lock.

use std::collections::{BTreeMap, HashSet};

use super::defs::broker_def;
use super::group::group_config_def;
use super::topic::topic_def;
use super::Kind;

/// Why a change could not be applied (Kafka's INVALID_REQUEST and INVALID_CONFIG).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlterError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidConfig(String),
}

/// One requested change to a resource's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

impl Change {
    pub fn name(&self) -> &str {
        match self {
            Change::Set(n, _) | Change::Delete(n) | Change::Append(n, _) | Change::Subtract(n, _) => n,
        }
    }
}

/// The kinds of resource Keel configures; each knows its settings' names, list settings and
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Topic,
    Broker,
    Group,
}

impl ResourceKind {
    /// Whether a setting is a list (APPEND and SUBTRACT apply to lists only).
    fn is_list(self, name: &str) -> bool {
        match self {
            ResourceKind::Topic => topic_def(name).is_some_and(|d| d.kind == Kind::List),
            ResourceKind::Broker => broker_def(name).is_some_and(|d| d.kind == Kind::List),
            // Every group setting is an integer.
            ResourceKind::Group => false,
        }
    }

    /// The value APPEND and SUBTRACT start from when the resource does not set one.
    fn default(self, name: &str) -> Option<String> {
        match self {
            ResourceKind::Topic => topic_def(name).map(|d| d.fixed_default.to_string()),
            ResourceKind::Broker => broker_def(name).and_then(|d| d.default).map(str::to_string),
            ResourceKind::Group => None,
        }
    }

    /// Topic and group settings have fixed names; a broker may carry custom settings.
    fn refuses_unknown(self, name: &str) -> Option<&'static str> {
        match self {
            ResourceKind::Topic => topic_def(name).is_none().then_some("topic"),
            ResourceKind::Group => group_config_def(name).is_none().then_some("group"),
            ResourceKind::Broker => None,
        }
    }
}

/// One resource's requested changes. `replace` is AlterConfigs: the given settings replace all
/// of the resource's own; otherwise (IncrementalAlterConfigs) they change the current ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alteration {
    pub kind: ResourceKind,
    pub replace: bool,
    pub changes: Vec<Change>,
}

impl Alteration {
    /// Refuses an unknown topic or group setting (INVALID_CONFIG) before anything is applied.
    pub fn check_names(&self) -> Result<(), AlterError> {
        for change in &self.changes {
            if let Some(kind) = self.kind.refuses_unknown(change.name()) {
                return Err(AlterError::InvalidConfig(format!(
                    "Unknown {kind} config name: {}",
                    change.name()
                )));
            }
        }
        Ok(())
    }

    /// The resource's settings after the changes. Validating the result is the owner's job.
    pub fn apply(&self, current: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, AlterError> {
        self.check_names()?;
        let mut seen = HashSet::new();
        for change in &self.changes {
            if !seen.insert(change.name()) {
                return Err(AlterError::InvalidRequest(format!(
                    "Error due to duplicate config keys: {}",
                    change.name()
                )));
            }
        }
        let mut values = if self.replace {
            BTreeMap::new()
        } else {
            current.clone()
        };
        for change in &self.changes {
            match change {
                Change::Set(n, v) => {
                    values.insert(n.clone(), v.clone());
                }
                Change::Delete(n) => {
                    values.remove(n);
                }
                Change::Append(n, v) | Change::Subtract(n, v) if !self.kind.is_list(n) => {
                    return Err(AlterError::InvalidConfig(format!(
                        "Config value append/subtract is not allowed for config key {n} ({v})"
                    )));
                }
                Change::Append(n, v) => {
                    let mut items = self.current_list(&values, n);
                    for item in split_list(v) {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    }
                    values.insert(n.clone(), items.join(","));
                }
                Change::Subtract(n, v) => {
                    let remove = split_list(v);
                    let items: Vec<String> = self
                        .current_list(&values, n)
                        .into_iter()
                        .filter(|i| !remove.contains(i))
                        .collect();
                    values.insert(n.clone(), items.join(","));
                }
            }
        }
        Ok(values)
    }

    /// The list APPEND and SUBTRACT start from: the resource's value, else the setting's
    /// default (as Kafka's ConfigAdminManager does), so appending `compact` to a default
    /// `delete` policy gives `delete,compact`.
    fn current_list(&self, values: &BTreeMap<String, String>, name: &str) -> Vec<String> {
        match values.get(name) {
            Some(v) => split_list(v),
            None => self
                .kind
                .default(name)
                .map(|d| split_list(&d))
                .unwrap_or_default(),
        }
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alter(kind: ResourceKind, changes: Vec<Change>) -> Alteration {
        Alteration {
            kind,
            replace: false,
            changes,
        }
    }

    #[test]
    fn incremental_changes_merge_like_kafka() {
        let base = BTreeMap::from([("cleanup.policy".to_string(), "delete".to_string())]);
        let out = alter(
            ResourceKind::Topic,
            vec![
                Change::Append("cleanup.policy".into(), "compact".into()),
                Change::Set("retention.ms".into(), "10".into()),
            ],
        )
        .apply(&base)
        .unwrap();
        assert_eq!(out["cleanup.policy"], "delete,compact");
        assert_eq!(out["retention.ms"], "10");
        let out = alter(
            ResourceKind::Topic,
            vec![
                Change::Subtract("cleanup.policy".into(), "delete".into()),
                Change::Delete("retention.ms".into()),
            ],
        )
        .apply(&out)
        .unwrap();
        assert_eq!(out["cleanup.policy"], "compact");
        assert!(!out.contains_key("retention.ms"));
        // APPEND starts from the broker default when the level sets nothing.
        let out = alter(
            ResourceKind::Broker,
            vec![Change::Append("log.cleanup.policy".into(), "compact".into())],
        )
        .apply(&BTreeMap::new())
        .unwrap();
        assert_eq!(out["log.cleanup.policy"], "delete,compact");
        assert!(matches!(
            alter(
                ResourceKind::Broker,
                vec![Change::Append("background.threads".into(), "1".into())]
            )
            .apply(&BTreeMap::new()),
            Err(AlterError::InvalidConfig(_))
        ));
        assert!(matches!(
            alter(
                ResourceKind::Topic,
                vec![
                    Change::Delete("retention.ms".into()),
                    Change::Set("retention.ms".into(), "1".into())
                ],
            )
            .apply(&base),
            Err(AlterError::InvalidRequest(_))
        ));
    }

    #[test]
    fn replace_drops_what_the_request_does_not_name() {
        let base = BTreeMap::from([("retention.ms".to_string(), "5".to_string())]);
        let a = Alteration {
            kind: ResourceKind::Topic,
            replace: true,
            changes: vec![Change::Set("segment.ms".into(), "7".into())],
        };
        assert_eq!(
            a.apply(&base).unwrap(),
            BTreeMap::from([("segment.ms".to_string(), "7".to_string())])
        );
    }

    #[test]
    fn unknown_topic_and_group_settings_are_invalid_config_but_broker_ones_are_kept() {
        let set = |kind| alter(kind, vec![Change::Set("no.such.setting".into(), "1".into())]);
        assert_eq!(
            set(ResourceKind::Topic).apply(&BTreeMap::new()),
            Err(AlterError::InvalidConfig(
                "Unknown topic config name: no.such.setting".into()
            ))
        );
        assert_eq!(
            set(ResourceKind::Group).apply(&BTreeMap::new()),
            Err(AlterError::InvalidConfig(
                "Unknown group config name: no.such.setting".into()
            ))
        );
        assert!(set(ResourceKind::Broker).apply(&BTreeMap::new()).is_ok());
    }
}

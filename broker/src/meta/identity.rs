//! `meta.properties` in the data directory, as Kafka writes it: the node id and cluster id
//! this directory belongs to. Written on first start; a mismatch later refuses to start, so a
//! data directory is never served under another identity by mistake.

use std::path::Path;

const FILE: &str = "meta.properties";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node_id: i32,
    pub cluster_id: String,
}

/// Loads the identity recorded in `dir`, or records one: `cluster_id` from the environment
/// (CLUSTER_ID), else a fresh random one in Kafka's format.
pub fn load_or_create(dir: &Path, node_id: i32, cluster_id: Option<&str>) -> Result<NodeIdentity, String> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let get = |key: &str| {
                text.lines()
                    .filter_map(|l| l.split_once('='))
                    .find(|(k, _)| k.trim() == key)
                    .map(|(_, v)| v.trim().to_string())
            };
            let recorded_node = get("node.id")
                .and_then(|v| v.parse::<i32>().ok())
                .ok_or_else(|| format!("{} has no valid node.id", path.display()))?;
            let recorded_cluster =
                get("cluster.id").ok_or_else(|| format!("{} has no cluster.id", path.display()))?;
            if recorded_node != node_id {
                return Err(format!(
                    "node.id {node_id} does not match node.id {recorded_node} recorded in {}",
                    path.display()
                ));
            }
            if let Some(c) = cluster_id {
                if c != recorded_cluster {
                    return Err(format!(
                        "CLUSTER_ID {c} does not match cluster.id {recorded_cluster} recorded in {}",
                        path.display()
                    ));
                }
            }
            Ok(NodeIdentity {
                node_id,
                cluster_id: recorded_cluster,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cluster_id = cluster_id.map(str::to_string).unwrap_or_else(random_cluster_id);
            let text = format!(
                "# Written by Keel on first start.\nversion=1\nnode.id={node_id}\ncluster.id={cluster_id}\n"
            );
            // Write-then-rename so a crash never leaves a half-written identity behind, and the
            // directory synced so the rename itself survives a power loss.
            let tmp = dir.join(format!("{FILE}.tmp"));
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &path))
                .and_then(|_| std::fs::File::open(dir)?.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(NodeIdentity { node_id, cluster_id })
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// A random UUID in Kafka's cluster id format: URL-safe base64 without padding (22 chars).
fn random_cluster_id() -> String {
    crate::kafka_uuid::to_string(uuid::Uuid::new_v4().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_recorded_once_and_mismatches_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), 1, None).unwrap();
        assert_eq!(first.cluster_id.len(), 22);
        assert_eq!(load_or_create(dir.path(), 1, None).unwrap(), first);
        assert!(load_or_create(dir.path(), 2, None)
            .unwrap_err()
            .contains("node.id"));
        assert!(load_or_create(dir.path(), 1, Some("other"))
            .unwrap_err()
            .contains("CLUSTER_ID"));
    }
}

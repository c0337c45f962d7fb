//! What a log directory tells the next start about how the last one ended, in Kafka's files:
//! `recovery-point-offset-checkpoint` (each partition's recovery point: every offset below it
//! was fsynced) and `.kafka_cleanshutdown` (the broker stopped cleanly after flushing
//! everything). With them a start scans only what may be torn: nothing after a clean
//! shutdown, and after a crash only the segments from each partition's recovery point on.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::durable::{sync_all, sync_dir};

pub const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
pub const CLEAN_SHUTDOWN_MARKER: &str = ".kafka_cleanshutdown";

/// How the partition's last run ended, for `PartitionLog::open_in`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecoveryHint {
    /// The broker stopped cleanly: every segment and index on disk is whole.
    pub clean_shutdown: bool,
    /// The last checkpointed recovery point (possibly older than the true one).
    pub recovery_point: Option<i64>,
}

/// Reads the recovery points of a log directory: (topic, partition) -> offset. A missing file
/// is an empty map; an unreadable one too, with a warning (every partition is then scanned as
/// if it had no checkpoint, which is slower but safe).
pub fn read_recovery_points(log_dir: &Path) -> HashMap<(String, i32), i64> {
    read_offset_checkpoint(log_dir, RECOVERY_POINT_CHECKPOINT)
}

/// Reads one of Kafka's offset checkpoint files of a log directory (`name`): (topic,
/// partition) -> offset. A missing or unreadable file is an empty map (the latter with a
/// warning).
pub fn read_offset_checkpoint(log_dir: &Path, name: &str) -> HashMap<(String, i32), i64> {
    let path = log_dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read an offset checkpoint; ignoring it");
            return HashMap::new();
        }
    };
    match parse(&text) {
        Some(points) => points,
        None => {
            tracing::warn!(file = %path.display(), "ignoring an unreadable offset checkpoint");
            HashMap::new()
        }
    }
}

/// Kafka's OffsetCheckpointFile format: a version line (0), a count line, then one
/// `topic partition offset` line per partition.
fn parse(text: &str) -> Option<HashMap<(String, i32), i64>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut points = HashMap::with_capacity(count);
    for line in lines.by_ref().take(count) {
        let mut fields = line.split_whitespace();
        let topic = fields.next()?.to_string();
        let partition: i32 = fields.next()?.parse().ok()?;
        let offset: i64 = fields.next()?.parse().ok()?;
        if fields.next().is_some() || offset < 0 {
            return None;
        }
        points.insert((topic, partition), offset);
    }
    (points.len() == count && lines.all(|l| l.trim().is_empty())).then_some(points)
}

/// Writes the recovery points durably (temp file, fsync, rename, directory fsync).
pub fn write_recovery_points(log_dir: &Path, points: &[(String, i32, i64)]) -> std::io::Result<()> {
    write_offset_checkpoint(log_dir, RECOVERY_POINT_CHECKPOINT, points)
}

/// Writes one of Kafka's offset checkpoint files durably (temp file, fsync, rename, directory
/// fsync).
pub fn write_offset_checkpoint(
    log_dir: &Path,
    name: &str,
    points: &[(String, i32, i64)],
) -> std::io::Result<()> {
    let mut text = format!("0\n{}\n", points.len());
    for (topic, partition, offset) in points {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    let tmp = log_dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        sync_all(&f)?;
    }
    std::fs::rename(&tmp, log_dir.join(name))?;
    sync_dir(log_dir)
}

/// Whether the last run ended with a clean shutdown.
pub fn had_clean_shutdown(log_dir: &Path) -> bool {
    log_dir.join(CLEAN_SHUTDOWN_MARKER).exists()
}

/// Leaves the marker after a clean shutdown's final flush.
pub fn mark_clean_shutdown(log_dir: &Path) -> std::io::Result<()> {
    sync_all(&File::create(log_dir.join(CLEAN_SHUTDOWN_MARKER))?)?;
    sync_dir(log_dir)
}

/// Removes the marker once the logs are open: a crash from now on is unclean.
pub fn clear_clean_shutdown(log_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(log_dir.join(CLEAN_SHUTDOWN_MARKER)) {
        Ok(()) => sync_dir(log_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_points_round_trip_in_kafkas_format() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_recovery_points(dir.path()).is_empty());
        let points = vec![("orders".to_string(), 0, 42), ("orders".to_string(), 3, 7)];
        write_recovery_points(dir.path(), &points).unwrap();
        let text = std::fs::read_to_string(dir.path().join(RECOVERY_POINT_CHECKPOINT)).unwrap();
        assert_eq!(text, "0\n2\norders 0 42\norders 3 7\n");
        let read = read_recovery_points(dir.path());
        assert_eq!(read.get(&("orders".to_string(), 3)), Some(&7));
        assert_eq!(read.len(), 2);
    }

    #[test]
    fn a_damaged_checkpoint_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "1\n0\n",
            "0\n2\nt 0 1\n",
            "0\n1\nt 0 -5\n",
            "0\n1\nt x 1\n",
            "garbage",
        ] {
            std::fs::write(dir.path().join(RECOVERY_POINT_CHECKPOINT), text).unwrap();
            assert!(read_recovery_points(dir.path()).is_empty(), "{text:?}");
        }
    }

    #[test]
    fn the_clean_shutdown_marker_is_left_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!had_clean_shutdown(dir.path()));
        mark_clean_shutdown(dir.path()).unwrap();
        assert!(had_clean_shutdown(dir.path()));
        clear_clean_shutdown(dir.path()).unwrap();
        assert!(!had_clean_shutdown(dir.path()));
        clear_clean_shutdown(dir.path()).unwrap();
    }
}

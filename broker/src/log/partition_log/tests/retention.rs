//! Retention (`cleanup.policy=delete`): Kafka's deleteOldSegments by size and by time.

use super::*;
use crate::log::segment::segment_file;

const HOUR: i64 = 3_600_000;

/// One batch per segment: every append after the first rolls.
fn one_batch_segments(retention_ms: i64, retention_bytes: i64) -> LogConfig {
    LogConfig {
        segment_bytes: 100,
        retention_ms,
        retention_bytes,
        ..LogConfig::default()
    }
}

/// Appends one two-record batch per timestamp; returns the log's segment size (all equal).
fn fill(log: &PartitionLog, timestamps: &[i64]) -> u64 {
    for &ts in timestamps {
        log.append(&BatchSpec::new(2).timestamps(ts, 0).build(), ts)
            .unwrap();
    }
    log.size() / timestamps.len() as u64
}

fn deleted_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".deleted"))
        .collect();
    names.sort();
    names
}

#[test]
fn segments_older_than_retention_ms_go_and_the_log_start_follows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let log = open(&path, one_batch_segments(5 * HOUR, -1));
    let now = 100 * HOUR;
    // Largest timestamps 10, 6 and 4 hours before now, then the active segment's 1 hour.
    fill(
        &log,
        &[now - 10 * HOUR, now - 6 * HOUR, now - 4 * HOUR, now - HOUR],
    );
    assert_eq!(log.segment_bases(), [0, 2, 4, 6]);

    let deleted = log.delete_old_segments(now).unwrap();
    assert_eq!(deleted.len(), 2, "only the two segments older than 5 hours");
    assert_eq!(log.segment_bases(), [4, 6]);
    assert_eq!(log.log_start_offset(), 4);
    assert!(matches!(
        log.read(0, 1 << 20, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log).first().map(|h| h.base_offset()), Some(4));
    // The files wait under `.deleted` names for file.delete.delay.ms, then go.
    assert_eq!(deleted_files(&path).len(), 6, "{:?}", deleted_files(&path));
    assert!(!segment_file(&path, 0, "log").exists());
    deleted.remove().unwrap();
    assert!(deleted_files(&path).is_empty());
    // The new log start is durable.
    drop(log);
    let log = open(&path, one_batch_segments(5 * HOUR, -1));
    assert_eq!(log.log_start_offset(), 4);
}

#[test]
fn retention_bytes_deletes_the_oldest_segments_without_going_below_it() {
    for (keep_segments, extra, expect_deleted) in [(2, 0, 2), (2, 1, 1), (4, 0, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let log = open(&path, one_batch_segments(-1, -1));
        let segment = fill(&log, &[1_000, 2_000, 3_000, 4_000]);
        let mut config = log.config();
        config.retention_bytes = keep_segments * segment as i64 + extra;
        log.set_config(config);
        let deleted = log.delete_old_segments(10_000).unwrap();
        assert_eq!(
            deleted.len(),
            expect_deleted,
            "retention.bytes = {keep_segments} segments + {extra}"
        );
        assert_eq!(log.log_start_offset(), 2 * expect_deleted as i64);
        deleted.remove().unwrap();
    }
}

#[test]
fn an_idle_partition_ages_out_whole_and_keeps_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let log = open(&path, one_batch_segments(HOUR, -1));
    fill(&log, &[0, 1_000]);
    // Everything is older than an hour, the active segment too: the log rolls first.
    log.delete_old_segments(10 * HOUR).unwrap().remove().unwrap();
    assert_eq!(log.segment_bases(), [4]);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (4, 4));
    let info = log.append(&batch(1), 10 * HOUR).unwrap();
    assert_eq!(info.base_offset, 4, "offsets are never reused");
    drop(log);
    let log = open(&path, one_batch_segments(HOUR, -1));
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (4, 5));
}

#[test]
fn nothing_at_or_above_the_high_watermark_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        &dir.path().join("t-0"),
        LogConfig {
            flush_before_visible: true,
            ..one_batch_segments(HOUR, -1)
        },
    );
    fill(&log, &[0, 1_000, 2_000]);
    // Nothing is fsynced, so the high watermark is 0 and every segment is above it.
    assert_eq!(log.high_watermark(), 0);
    assert!(log.delete_old_segments(10 * HOUR).unwrap().is_empty());
    log.flush_until(6).unwrap();
    assert_eq!(log.high_watermark(), 6);
    // One more old batch, not yet fsynced: its segment ends above the high watermark.
    fill(&log, &[3_000]);
    assert_eq!(log.high_watermark(), 6);
    let deleted = log.delete_old_segments(10 * HOUR).unwrap();
    assert_eq!(deleted.len(), 3, "the segments below the high watermark");
    assert_eq!(log.segment_bases(), [6]);
    assert_eq!(log.log_start_offset(), 6);
    deleted.remove().unwrap();
}

#[test]
fn compacted_logs_and_infinite_retention_delete_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        &dir.path().join("t-0"),
        LogConfig {
            delete_retention: false,
            ..one_batch_segments(HOUR, 0)
        },
    );
    fill(&log, &[0, 1_000, 2_000]);
    assert!(log.delete_old_segments(10 * HOUR).unwrap().is_empty());
    let mut config = log.config();
    config.delete_retention = true;
    config.retention_ms = -1;
    config.retention_bytes = -1;
    log.set_config(config);
    assert!(log.delete_old_segments(10 * HOUR).unwrap().is_empty());
    assert_eq!(log.log_start_offset(), 0);
}

#[test]
fn a_start_removes_deleted_files_a_stop_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let log = open(&path, one_batch_segments(HOUR, -1));
    fill(&log, &[0, 1_000, 10 * HOUR]);
    let deleted = log.delete_old_segments(10 * HOUR).unwrap();
    assert_eq!(deleted.len(), 2);
    assert!(!deleted_files(&path).is_empty());
    // Stopped before the delayed removal.
    drop(deleted);
    drop(log);
    let log = open(&path, one_batch_segments(HOUR, -1));
    assert!(deleted_files(&path).is_empty());
    assert_eq!(log.log_start_offset(), 4);
    assert_eq!(read_all(&log).len(), 1);
}

//! `log.flush.before.visible`: the high watermark and the last stable offset stop at the
//! recovery point, so readers see only fsynced records.

use super::*;
use crate::log::TxnMarker;

fn durable_only() -> LogConfig {
    LogConfig {
        flush_before_visible: true,
        segment_bytes: 300,
        ..LogConfig::default()
    }
}

/// (high watermark, last stable offset, recovery point).
fn marks(log: &PartitionLog) -> (i64, i64, i64) {
    (
        log.high_watermark(),
        log.last_stable_offset(),
        log.recovery_point(),
    )
}

#[test]
fn an_appended_batch_is_readable_only_after_its_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir.path().join("t-0"), durable_only());
    let info = log.append(&batch(3), 0).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 2));
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(marks(&log), (0, 0, 0), "nothing is durable yet");
    let r = log.read(0, 1 << 20, true).unwrap();
    assert!(r.records.is_empty(), "a read stops at the high watermark");
    assert_eq!(r.high_watermark, 0);
    // ListOffsets LATEST is the high watermark.
    let latest = log
        .fetch_offset_by_timestamp(crate::log::OffsetSpec::Latest, false)
        .unwrap()
        .unwrap()
        .offset;
    assert_eq!(latest, 0);

    log.flush_until(3).unwrap();
    assert_eq!(marks(&log), (3, 3, 3));
    assert_eq!(read_all(&log).len(), 1);
}

#[test]
fn the_high_watermark_never_passes_the_recovery_point_across_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir.path().join("t-0"), durable_only());
    for round in 0..6 {
        // Small segments: most of these appends roll.
        for _ in 0..3 {
            log.append(&batch(2), 0).unwrap();
            let (hw, lso, rp) = marks(&log);
            assert!(hw <= rp && lso <= hw, "round {round}: hw {hw} lso {lso} rp {rp}");
        }
        log.flush_until(log.log_end_offset()).unwrap();
        assert_eq!(log.high_watermark(), log.log_end_offset(), "round {round}");
        // What is readable is exactly what is durable, batch by batch.
        let last = read_all(&log).last().unwrap().last_offset();
        assert_eq!(last + 1, log.recovery_point());
    }
}

#[test]
fn a_failed_fsync_leaves_the_records_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir.path().join("t-0"), durable_only());
    log.append(&batch(1), 0).unwrap();
    log.flush_until(1).unwrap();
    log.append(&batch(4), 0).unwrap();
    log.fail_fsyncs();
    assert!(log.flush_until(5).is_err());
    assert_eq!(
        log.high_watermark(),
        1,
        "records whose fsync failed are never served"
    );
}

#[test]
fn a_commit_marker_becomes_visible_with_its_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir.path().join("t-0"), durable_only());
    let txn = BatchSpec::new(2).producer(7, 0, 0).attributes(0x10).build();
    log.append(&txn, 0).unwrap();
    log.flush_until(2).unwrap();
    assert_eq!(marks(&log), (2, 0, 2), "the open transaction holds the LSO");
    let marker = TxnMarker {
        producer_id: 7,
        producer_epoch: 0,
        coordinator_epoch: 0,
        commit: true,
    };
    log.append_marker(&marker, 0).unwrap();
    assert_eq!(marks(&log), (2, 2, 2), "the marker is not durable yet");
    log.flush_until(3).unwrap();
    assert_eq!(marks(&log), (3, 3, 3));
}

#[test]
fn without_the_policy_the_high_watermark_follows_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush_before_visible: false,
        ..durable_only()
    };
    let log = open(&dir.path().join("t-0"), config);
    log.append(&batch(3), 0).unwrap();
    assert_eq!(marks(&log), (3, 3, 0));
}

//! Idempotent producers through the log: duplicates, snapshots at rolls, reloads.

use super::*;
use crate::log::ProducerSnapshot;

fn idempotent(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
    BatchSpec::new(n)
        .producer(pid, epoch, seq)
        .value_size(100)
        .build()
}

#[test]
fn a_retried_batch_gets_its_original_offsets_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let first = idempotent(3, 0, 0, 3);
    let info = log.append(&first, 5).unwrap();
    assert!(!info.duplicate);
    log.append(&idempotent(3, 0, 3, 2), 5).unwrap();
    let again = log.append(&first, 9).unwrap();
    assert!(again.duplicate);
    assert_eq!((again.base_offset, again.last_offset), (0, 2));
    // Kafka answers a duplicate with the original batch's maxTimestamp, even under CreateTime.
    let max_ts = RecordBatchHeader::parse(&first).unwrap().max_timestamp();
    assert_eq!(again.log_append_time, max_ts);
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(read_all(&log).len(), 2);
    assert!(matches!(
        log.append(&idempotent(3, 0, 9, 1), 5),
        Err(LogError::OutOfOrderSequence(_))
    ));
    assert_eq!(log.log_end_offset(), 5);
}

#[test]
fn producer_state_survives_a_clean_reopen_through_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let batches: Vec<Vec<u8>> = (0..7).map(|i| idempotent(1, 0, i, 1)).collect();
    let snapshot = {
        let log = open(dir.path(), LogConfig::default());
        for b in &batches {
            log.append(b, 5).unwrap();
        }
        log.flush_until(log.log_end_offset()).unwrap();
        log.producer_snapshot()
    };
    assert_eq!(snapshot.offset, 7);
    let log = PartitionLog::open_in(
        dir.path(),
        LogConfig::default(),
        LogDirHealth::new(dir.path()),
        vec![snapshot],
    )
    .unwrap();
    // Every batch of the window, not only the last one (as Kafka's snapshot keeps), is known.
    for (seq, b) in batches.iter().enumerate().skip(2) {
        assert!(log.append(b, 5).unwrap().duplicate, "seq {seq}");
    }
    assert!(matches!(
        log.append(&batches[1], 5),
        Err(LogError::OutOfOrderSequence(_))
    ));
    assert_eq!(log.append(&idempotent(1, 0, 7, 1), 5).unwrap().base_offset, 7);
}

#[test]
fn without_a_snapshot_the_state_is_replayed_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let batches: Vec<Vec<u8>> = (0..4).map(|i| idempotent(8, 2, i * 2, 2)).collect();
    {
        let log = open(dir.path(), small(600));
        for b in &batches {
            log.append(b, 5).unwrap();
        }
        log.append(&batch(1), 5).unwrap();
        assert!(log.segment_bases().len() > 1, "the test wants several segments");
    }
    let log = open(dir.path(), small(600));
    assert!(log.append(&batches[3], 5).unwrap().duplicate);
    assert!(log.append(&batches[0], 5).unwrap().duplicate);
    assert!(matches!(
        log.append(&idempotent(8, 1, 8, 1), 5),
        Err(LogError::InvalidProducerEpoch(_))
    ));
    assert!(!log.append(&idempotent(8, 2, 8, 1), 5).unwrap().duplicate);
}

#[test]
fn a_roll_leaves_a_snapshot_of_the_state_below_the_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small(600));
    let mut offsets = Vec::new();
    let mut seq = 0;
    while log.segment_bases().len() < 2 {
        offsets.push(log.append(&idempotent(4, 0, seq, 2), 5).unwrap());
        seq += 2;
    }
    let rolled = offsets.last().unwrap();
    assert!(rolled.rolled);
    let snapshot = log.take_roll_snapshot().expect("a snapshot at the roll");
    assert_eq!(snapshot.offset, rolled.base_offset);
    let entry = snapshot.table.get(4).unwrap();
    assert_eq!(
        entry.last_seq(),
        seq - 3,
        "the batch that rolled the log is not in it"
    );
    assert!(log.take_roll_snapshot().is_none(), "taken once");
    // Reopened from that snapshot, the batch after it is replayed from the log.
    drop(log);
    let log = PartitionLog::open_in(
        dir.path(),
        small(600),
        LogDirHealth::new(dir.path()),
        vec![snapshot],
    )
    .unwrap();
    assert!(log.append(&idempotent(4, 0, seq - 2, 2), 5).unwrap().duplicate);
}

#[test]
fn a_snapshot_beyond_the_recovered_log_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    log.append(&idempotent(5, 0, 0, 1), 5).unwrap();
    log.append(&idempotent(5, 0, 1, 1), 5).unwrap();
    let mut ahead = log.producer_snapshot();
    // A snapshot claiming offsets the log no longer has (acks=1 data a crash took back).
    ahead.offset = 10;
    let behind = ProducerSnapshot {
        offset: 0,
        table: Default::default(),
    };
    drop(log);
    let log = PartitionLog::open_in(
        dir.path(),
        LogConfig::default(),
        LogDirHealth::new(dir.path()),
        vec![ahead, behind],
    )
    .unwrap();
    // The replay from the older snapshot knows both batches.
    assert!(log.append(&idempotent(5, 0, 1, 1), 5).unwrap().duplicate);
    assert!(!log.append(&idempotent(5, 0, 2, 1), 5).unwrap().duplicate);
}

#[test]
fn idle_producers_expire() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let b = idempotent(6, 0, 0, 1);
    log.append(&b, 5).unwrap();
    let ts = RecordBatchHeader::parse(&b).unwrap().max_timestamp();
    assert_eq!(log.remove_expired_producers(ts + 10, 1000), 0);
    assert_eq!(log.remove_expired_producers(ts + 1000, 1000), 1);
    // Unknown again: a retry is no longer recognised, any sequence is accepted.
    assert!(!log.append(&idempotent(6, 0, 5, 1), 5).unwrap().duplicate);
}

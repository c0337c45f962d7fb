use super::*;
use crate::log::log_dir::LOG_START_CHECKPOINT;
use crate::log::testutil::{batch, BatchSpec};
use crate::log::{BatchHeaders, RecordBatchHeader};

fn small(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config).unwrap()
}

/// Headers of the batches in `records`, each checked to be whole and CRC-valid.
fn headers(records: &[u8]) -> Vec<RecordBatchHeader> {
    let mut it = BatchHeaders::new(records);
    let out: Vec<_> = it
        .by_ref()
        .map(|(pos, h)| {
            let batch = &records[pos..pos + h.size()];
            // Control batches (markers) are the broker's own, which produce validation refuses.
            if !h.is_control() {
                validate_produce_batch(batch).unwrap();
            }
            assert!(
                crate::log::batch::crc_matches(&h, batch),
                "CRC of the batch at {pos}"
            );
            h
        })
        .collect();
    assert_eq!(it.position(), records.len(), "partial batch returned");
    out
}

/// Every batch of the log, fetched the way a consumer does.
fn read_all(log: &PartitionLog) -> Vec<RecordBatchHeader> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let r = log.read(offset, 1 << 20, true).unwrap();
        let hs = headers(&r.records);
        assert!(!hs.is_empty(), "no progress at {offset}");
        offset = hs.last().unwrap().last_offset() + 1;
        out.extend(hs);
    }
    out
}

#[test]
fn partition_log_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<PartitionLog>();
    check::<Arc<PartitionLog>>();
}

#[test]
fn append_assigns_consecutive_offsets_and_keeps_crc() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let sent: Vec<Vec<u8>> = [2, 3, 1].iter().map(|&n| batch(n)).collect();
    let infos: Vec<AppendInfo> = sent.iter().map(|b| log.append(b, 77).unwrap()).collect();
    let offsets: Vec<(i64, i64)> = infos.iter().map(|i| (i.base_offset, i.last_offset)).collect();
    assert_eq!(offsets, vec![(0, 1), (2, 4), (5, 5)]);
    assert!(infos
        .iter()
        .all(|i| i.log_append_time == -1 && i.log_start_offset == 0));
    assert_eq!(
        (log.log_end_offset(), log.high_watermark(), log.log_start_offset()),
        (6, 6, 0)
    );
    let r = log.read(0, 1 << 20, false).unwrap();
    assert_eq!(r.high_watermark, 6);
    let hs = headers(&r.records);
    assert_eq!(hs.iter().map(|h| h.base_offset()).collect::<Vec<_>>(), [0, 2, 5]);
    assert!(hs.iter().all(|h| h.partition_leader_epoch() == 0));
    let mut pos = 0;
    for (h, b) in hs.iter().zip(&sent) {
        // The CRC-covered bytes are stored exactly as produced.
        assert_eq!(&r.records[pos + 21..pos + h.size()], &b[21..]);
        pos += h.size();
    }
}

#[test]
fn log_append_time_stamps_max_timestamp_and_attribute() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        leader_epoch: 4,
        ..LogConfig::default()
    };
    let log = open(dir.path(), config);
    let b = BatchSpec::new(3).timestamps(1000, 5).build();
    let info = log.append(&b, 99_000).unwrap();
    assert_eq!(info.log_append_time, 99_000);
    let r = log.read(0, 1 << 20, false).unwrap();
    let h = validate_produce_batch(&r.records).unwrap();
    assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!((h.max_timestamp(), h.base_timestamp()), (99_000, 1000));
    assert_eq!(h.partition_leader_epoch(), 4);
    assert_eq!(&r.records[61..], &b[61..]);
    assert_eq!(log.max_timestamp(), Some((2, 99_000)));
}

#[test]
fn rejected_batches_leave_the_log_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        LogConfig {
            max_message_bytes: 200,
            ..LogConfig::default()
        },
    );
    let big = BatchSpec::new(1).value_size(300).build();
    assert!(matches!(
        log.append(&big, 0),
        Err(LogError::MessageTooLarge { max: 200, .. })
    ));
    let mut bad = batch(1);
    bad[30] ^= 1;
    assert!(matches!(log.append(&bad, 0), Err(LogError::CorruptRecord(_))));
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.append(&batch(1), 0).unwrap().base_offset, 0);
}

#[test]
fn read_honours_max_bytes_min_one_batch_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let sizes: Vec<usize> = (0..5)
        .map(|_| {
            let b = batch(2);
            log.append(&b, 0).unwrap();
            b.len()
        })
        .collect();
    // Mid-batch fetch starts with the batch containing the offset.
    let r = log.read(3, 1 << 20, false).unwrap();
    assert_eq!(headers(&r.records)[0].base_offset(), 2);
    assert_eq!(headers(&r.records).len(), 4);
    // max_bytes cuts at whole batches.
    let r = log.read(0, sizes[0] * 2 + 10, false).unwrap();
    assert_eq!(headers(&r.records).len(), 2);
    // A first batch larger than max_bytes: all of it with min_one_batch, nothing without.
    let r = log.read(0, 10, true).unwrap();
    assert_eq!(headers(&r.records).len(), 1);
    assert!(log.read(0, 10, false).unwrap().records.is_empty());
    // At the high watermark: empty; past it or before the start: out of range.
    let r = log.read(10, 1 << 20, true).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.high_watermark, 10);
    assert!(matches!(
        log.read(11, 100, true),
        Err(LogError::OffsetOutOfRange {
            offset: 11,
            log_start: 0,
            log_end: 10
        })
    ));
    assert!(matches!(
        log.read(-1, 100, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn reads_span_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small(400));
    for i in 0..30 {
        log.append(&BatchSpec::new(1 + i % 4).build(), 0).unwrap();
    }
    assert!(log.segment_bases().len() > 5);
    let all = read_all(&log);
    let mut expected = 0;
    for h in &all {
        assert_eq!(h.base_offset(), expected);
        expected = h.last_offset() + 1;
    }
    assert_eq!(expected, log.log_end_offset());
    for offset in 0..log.log_end_offset() {
        let r = log.read(offset, 1, true).unwrap();
        let h = headers(&r.records);
        assert_eq!(h.len(), 1);
        assert!(h[0].base_offset() <= offset && offset <= h[0].last_offset());
    }
    // Segment files are named by base offset; a roll happens before a batch that won't fit.
    for base in log.segment_bases() {
        let p = dir.path().join(format!("{base:020}.log"));
        assert!(std::fs::metadata(&p).unwrap().len() <= 400);
    }
}

#[test]
fn rolls_on_age_and_on_relative_offset_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        LogConfig {
            segment_ms: 1000,
            ..LogConfig::default()
        },
    );
    log.append(&batch(1), 10_000).unwrap();
    log.append(&batch(1), 11_000).unwrap();
    assert_eq!(log.segment_bases(), [0]);
    log.append(&batch(1), 11_001).unwrap();
    assert_eq!(log.segment_bases(), [0, 2]);

    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let huge = BatchSpec::new(1).claimed_records(1 << 30).build();
    log.append(&huge, 0).unwrap();
    log.append(&huge, 0).unwrap();
    assert_eq!(log.segment_bases(), [0]);
    let info = log.append(&huge, 0).unwrap();
    assert_eq!(info.base_offset, 1 << 31);
    assert_eq!(log.segment_bases(), [0, 1 << 31]);
    let r = log.read((1 << 31) - 5, 1 << 20, true).unwrap();
    assert_eq!(headers(&r.records)[0].base_offset(), 1 << 30);
}

#[test]
fn offset_for_timestamp_and_max_timestamp_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small(300));
    assert_eq!(log.max_timestamp(), None);
    assert_eq!(log.offset_for_timestamp(0, 0).unwrap(), None);
    // Timestamps rise by 100 per batch, except batch 15 which jumps ahead.
    for i in 0..20i64 {
        let ts = if i == 15 { 5000 } else { 1000 + i * 100 };
        log.append(&BatchSpec::new(2).timestamps(ts, 1).build(), 0)
            .unwrap();
    }
    assert!(log.segment_bases().len() > 3);
    let first = |ts| {
        log.offset_for_timestamp(ts, 0)
            .unwrap()
            .map(|b| (b.base_offset, b.max_timestamp))
    };
    assert_eq!(first(0), Some((0, 1001)));
    assert_eq!(first(1001), Some((0, 1001)));
    assert_eq!(first(1002), Some((2, 1101)));
    assert_eq!(first(1650), Some((14, 1701)));
    assert_eq!(first(2000), Some((20, 2001)));
    // The first batch in offset order whose maxTimestamp reaches the target.
    assert_eq!(first(2450), Some((30, 5001)));
    assert_eq!(first(2801), Some((30, 5001)));
    assert_eq!(first(5001), Some((30, 5001)));
    assert_eq!(first(5002), None);
    // From an offset: batches wholly before it are passed over, the one holding it is not.
    let from = |ts, offset| {
        log.offset_for_timestamp(ts, offset)
            .unwrap()
            .map(|b| (b.base_offset, b.last_offset))
    };
    assert_eq!(from(0, 5), Some((4, 5)));
    assert_eq!(from(0, 6), Some((6, 7)));
    assert_eq!(from(5001, 31), Some((30, 31)));
    assert_eq!(from(5001, 32), None);
    assert_eq!(log.max_timestamp(), Some((31, 5001)));
}

#[test]
fn config_changes_apply_to_later_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    log.append(&batch(1), 5).unwrap();
    log.set_config(LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        segment_bytes: 1,
        ..LogConfig::default()
    });
    assert_eq!(log.config().segment_bytes, 1);
    assert_eq!(log.append(&batch(1), 5).unwrap().log_append_time, 5);
    assert_eq!(log.segment_bases(), [0, 1]);
    let types: Vec<TimestampType> = read_all(&log).iter().map(|h| h.timestamp_type()).collect();
    assert_eq!(types, [TimestampType::CreateTime, TimestampType::LogAppendTime]);
}

#[test]
fn flush_until_advances_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small(300));
    assert_eq!(log.recovery_point(), 0);
    for _ in 0..3 {
        log.append(&batch(2), 0).unwrap();
    }
    log.flush_until(2).unwrap();
    assert_eq!(log.recovery_point(), 6);
    log.flush_until(4).unwrap();
    assert_eq!(log.recovery_point(), 6);
    for _ in 0..10 {
        log.append(&batch(2), 0).unwrap();
    }
    // A roll does not sync under the writer lock: the recovery point waits for a flush.
    assert_eq!(log.recovery_point(), 6);
    log.flush_sealed().unwrap();
    let sealed_end = *log.segment_bases().last().unwrap();
    assert_eq!(
        log.recovery_point(),
        26,
        "flush_sealed covers the sealed segments and the tail"
    );
    assert!(sealed_end > 6);
    log.flush_until(i64::MAX).unwrap();
    assert_eq!(log.recovery_point(), 26);
}

#[test]
fn truncate_fully_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-3");
    let log = open(&path, small(300));
    for _ in 0..10 {
        log.append(&batch(2), 0).unwrap();
    }
    log.truncate_fully(100).unwrap();
    assert_eq!(log.segment_bases(), [100]);
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset(), log.high_watermark()),
        (100, 100, 100)
    );
    assert!(log.read(100, 100, true).unwrap().records.is_empty());
    assert!(matches!(
        log.read(0, 100, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.append(&batch(1), 0).unwrap().base_offset, 100);
    drop(log);
    let log = open(&path, small(300));
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 101));
    log.delete().unwrap();
    assert!(!path.exists());
    assert!(matches!(log.append(&batch(1), 0), Err(LogError::Closed(_))));
    assert!(matches!(log.read(100, 10, true), Err(LogError::Closed(_))));
}

#[test]
fn delete_records_moves_the_log_start_deletes_whole_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    let log = open(&path, small(300));
    for i in 0..20i64 {
        log.append(&BatchSpec::new(2).timestamps(1000 + i * 100, 1).build(), 0)
            .unwrap();
    }
    let bases = log.segment_bases();
    assert!(bases.len() > 3, "{bases:?}");
    // Beyond the high watermark, or negative: out of range, nothing changes.
    for bad in [41, -1] {
        assert!(matches!(
            log.delete_records_before(bad),
            Err(LogError::OffsetOutOfRange { .. })
        ));
    }
    assert_eq!(log.log_start_offset(), 0);
    // Into the third segment, past its first batch: the two segments before it go, the third
    // stays with its first batch unreadable.
    let start = bases[2] + 3;
    assert_eq!(log.delete_records_before(start).unwrap(), start);
    assert_eq!(log.segment_bases(), bases[2..].to_vec());
    assert!(matches!(
        log.read(start - 1, 1 << 20, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.read(start, 1 << 20, true).unwrap().log_start_offset, start);
    // Timestamps of deleted records no longer answer: the first batch holding a live record
    // (it straddles the start) does.
    assert_eq!(
        log.offset_for_timestamp(0, 0).unwrap().map(|b| b.base_offset),
        Some(start - 1)
    );
    // Moving backwards changes nothing.
    assert_eq!(log.delete_records_before(1).unwrap(), start);
    drop(log);

    let log = open(&path, small(300));
    assert_eq!(log.log_start_offset(), start, "the start survives a reopen");
    assert_eq!(log.log_end_offset(), 40);
    // Everything: the active segment stays, empty of readable records.
    assert_eq!(log.delete_records_before(40).unwrap(), 40);
    assert_eq!(log.segment_bases(), vec![*bases.last().unwrap()]);
    assert!(log.read(40, 1 << 20, true).unwrap().records.is_empty());
    assert_eq!(log.append(&batch(1), 0).unwrap().log_start_offset, 40);
    // Starting over empty forgets the deletion.
    log.truncate_fully(7).unwrap();
    drop(log);
    assert_eq!(open(&path, small(300)).log_start_offset(), 7);
}

#[test]
fn a_log_ending_below_its_checkpointed_start_restarts_empty_there() {
    // A crash lost unflushed records above the point DeleteRecords had reached.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small(300));
    for _ in 0..5 {
        log.append(&batch(2), 0).unwrap();
    }
    drop(log);
    std::fs::write(dir.path().join(LOG_START_CHECKPOINT), "50\n").unwrap();
    let log = open(dir.path(), small(300));
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset(), log.high_watermark()),
        (50, 50, 50)
    );
    assert_eq!(
        log.append(&batch(1), 0).unwrap().base_offset,
        50,
        "no offset is reused"
    );
    drop(log);
    assert_eq!(open(dir.path(), small(300)).log_start_offset(), 50);
}

#[test]
fn concurrent_readers_only_see_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), small(2000)));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut offset = 0;
                while offset < 600 {
                    let r = log.read(offset, 700, false).unwrap();
                    if let Some(h) = headers(&r.records).last() {
                        offset = h.last_offset() + 1;
                    }
                }
            })
        })
        .collect();
    for i in 0..200 {
        log.append(&BatchSpec::new(3).value_size(i % 50).build(), 0)
            .unwrap();
    }
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(read_all(&log).len(), 200);
}

mod power_loss;
mod producers;
mod recovery;
mod retention;
mod transactions;
mod visibility;

#[test]
fn a_failed_fsync_takes_the_whole_log_directory_offline_and_is_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let health = LogDirHealth::new(dir.path());
    let a = PartitionLog::open_in(
        &dir.path().join("a-0"),
        LogConfig::default(),
        Arc::clone(&health),
        Vec::new(),
    )
    .unwrap();
    let b = PartitionLog::open_in(
        &dir.path().join("b-0"),
        LogConfig::default(),
        Arc::clone(&health),
        Vec::new(),
    )
    .unwrap();
    a.append(&batch(1), 0).unwrap();
    b.append(&batch(1), 0).unwrap();
    a.fail_fsyncs();
    assert!(matches!(a.flush_until(1), Err(LogError::Io(_))));
    assert!(health.is_offline());
    assert_eq!(a.recovery_point(), 0, "nothing counted as durable");
    // No second fsync on the same descriptor, nor any write, in the whole directory.
    assert!(matches!(a.flush_until(1), Err(LogError::DirOffline(_))));
    assert!(matches!(b.flush_until(1), Err(LogError::DirOffline(_))));
    assert!(matches!(b.append(&batch(1), 0), Err(LogError::DirOffline(_))));
    assert_eq!((a.data_syncs(), b.data_syncs()), (0, 0));
}

//! Reopening logs after clean stops, crashes and damage.

use super::*;

fn seg_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

fn chop(path: &Path, cut: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - cut).unwrap();
}

/// (base offset, last offset) of a batch, or (offset, timestamp) of a lookup.
type Pair = (i64, i64);

/// What a consumer can observe: the batch served for every offset and timestamp lookups.
fn observe(log: &PartitionLog) -> (Vec<Pair>, Vec<Option<Pair>>) {
    let batches = (log.log_start_offset()..log.log_end_offset())
        .map(|o| {
            let h = headers(&log.read(o, 1, true).unwrap().records)[0];
            (h.base_offset(), h.last_offset())
        })
        .collect();
    let by_time = (0..40)
        .map(|i| {
            log.offset_for_timestamp(990 + i * 50, 0)
                .unwrap()
                .map(|b| (b.base_offset, b.max_timestamp))
        })
        .collect();
    (batches, by_time)
}

fn fill(log: &PartitionLog, batches: i64) {
    for i in 0..batches {
        let b = BatchSpec::new(1 + (i as usize % 3))
            .timestamps(1000 + i * 50, 7)
            .build();
        log.append(&b, 0).unwrap();
    }
}

#[test]
fn clean_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small(400));
    fill(&log, 30);
    let before = observe(&log);
    let (leo, max) = (log.log_end_offset(), log.max_timestamp());
    drop(log);
    let log = open(dir.path(), small(400));
    assert_eq!(observe(&log), before);
    assert_eq!((log.log_end_offset(), log.high_watermark()), (leo, leo));
    assert_eq!(log.recovery_point(), leo);
    assert_eq!(log.max_timestamp(), max);
    assert_eq!(log.append(&batch(1), 0).unwrap().base_offset, leo);
}

#[test]
fn torn_last_batch_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let sizes: Vec<u64> = (0..3)
        .map(|_| {
            let b = batch(2);
            log.append(&b, 0).unwrap();
            b.len() as u64
        })
        .collect();
    drop(log);
    let path = seg_path(dir.path(), 0, "log");
    chop(&path, 10);
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), sizes[0] + sizes[1]);
    assert_eq!(read_all(&log).len(), 2);
    assert_eq!((log.log_end_offset(), log.high_watermark()), (4, 4));
    assert_eq!(log.append(&batch(1), 0).unwrap().base_offset, 4);
    assert_eq!(read_all(&log).len(), 3);
    drop(log);

    // Torn inside a header.
    chop(&path, sizes[0] + sizes[1] - 30);
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), sizes[0]);
    assert_eq!(log.log_end_offset(), 2);
    drop(log);

    // Nothing valid left: the log restarts at the segment's base.
    chop(&path, 5);
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.max_timestamp(), None);
    assert!(log.read(0, 100, true).unwrap().records.is_empty());
}

#[test]
fn corrupt_batch_is_cut_with_everything_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let first = batch(2).len();
    for _ in 0..3 {
        log.append(&batch(2), 0).unwrap();
    }
    drop(log);
    let path = seg_path(dir.path(), 0, "log");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[first + 70] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(read_all(&log).len(), 1);
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), first as u64);
    assert_eq!(log.append(&batch(1), 0).unwrap().base_offset, 2);
}

#[test]
fn broken_indexes_are_rebuilt_identically() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small(400));
    fill(&log, 40);
    // What the appends' owner does after a roll: the sealed segments' files become durable.
    log.flush_sealed().unwrap();
    let bases = log.segment_bases();
    assert!(bases.len() >= 6);
    let before = observe(&log);
    drop(log);
    let sealed = &bases[..bases.len() - 1];
    let originals: Vec<(Vec<u8>, Vec<u8>)> = sealed
        .iter()
        .map(|&b| {
            (
                std::fs::read(seg_path(dir.path(), b, "index")).unwrap(),
                std::fs::read(seg_path(dir.path(), b, "timeindex")).unwrap(),
            )
        })
        .collect();
    assert!(originals.iter().all(|(i, t)| !i.is_empty() && !t.is_empty()));

    std::fs::remove_file(seg_path(dir.path(), bases[0], "index")).unwrap();
    std::fs::remove_file(seg_path(dir.path(), bases[1], "timeindex")).unwrap();
    std::fs::write(seg_path(dir.path(), bases[2], "index"), b"garbage").unwrap();
    std::fs::write(seg_path(dir.path(), bases[3], "timeindex"), [0xffu8; 24]).unwrap();
    // Well-formed entries pointing past the log.
    let mut past = originals[4].0.clone();
    past.extend_from_slice(&[0, 0, 0, 90, 0, 1, 0, 0]);
    std::fs::write(seg_path(dir.path(), bases[4], "index"), past).unwrap();
    std::fs::remove_file(seg_path(dir.path(), *bases.last().unwrap(), "index")).unwrap();

    let log = open(dir.path(), small(400));
    assert_eq!(observe(&log), before);
    for (&b, (index, time_index)) in sealed.iter().zip(&originals) {
        assert_eq!(&std::fs::read(seg_path(dir.path(), b, "index")).unwrap(), index);
        assert_eq!(
            &std::fs::read(seg_path(dir.path(), b, "timeindex")).unwrap(),
            time_index
        );
    }
}

#[test]
fn damaged_sealed_segment_keeps_its_good_prefix_and_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small(400));
    fill(&log, 20);
    let bases = log.segment_bases();
    let leo = log.log_end_offset();
    drop(log);
    // Media damage in a sealed segment whose index no longer matches: scanned and cut.
    chop(&seg_path(dir.path(), bases[1], "log"), 20);
    let log = open(dir.path(), small(400));
    assert_eq!(log.segment_bases(), bases);
    assert_eq!(log.log_end_offset(), leo);
    let offsets: Vec<i64> = read_all(&log).iter().map(|h| h.base_offset()).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    assert!(offsets.contains(&bases[2]));
    // A fetch inside the lost range continues at the next segment.
    let lost = bases[2] - 1;
    let r = log.read(lost, 1 << 20, true).unwrap();
    assert_eq!(headers(&r.records)[0].base_offset(), bases[2]);
}

#[test]
fn unexpected_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    log.append(&batch(1), 0).unwrap();
    drop(log);
    std::fs::write(dir.path().join("leader-epoch-checkpoint"), b"0\n").unwrap();
    std::fs::write(seg_path(dir.path(), 500, "index"), b"").unwrap();
    std::fs::write(dir.path().join("00000000000000000abc.log"), b"x").unwrap();
    std::fs::create_dir(dir.path().join("stray")).unwrap();
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.segment_bases(), [0]);
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn reopened_active_segment_keeps_indexing_sparsely() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small(1 << 20));
    fill(&log, 50);
    let entries = log.floor_segment(0).unwrap().index_entries();
    assert!(entries.0 > 3 && entries.0 < 50, "{entries:?}");
    drop(log);
    let log = open(dir.path(), small(1 << 20));
    assert_eq!(log.floor_segment(0).unwrap().index_entries(), entries);
}

fn reopen_with(dir: &Path, hint: crate::log::RecoveryHint) -> PartitionLog {
    PartitionLog::open_recovering(dir, small(400), LogDirHealth::new(dir), Vec::new(), hint).unwrap()
}

#[test]
fn a_segment_after_the_recovery_point_that_lost_its_tail_takes_the_later_segments_along() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small(400));
    fill(&log, 20);
    let bases = log.segment_bases();
    assert!(bases.len() >= 4, "{bases:?}");
    drop(log);
    // A crash before the roll flush of segment 1: its tail is torn, segment 2 on survived.
    chop(&seg_path(dir.path(), bases[1], "log"), 20);
    let log = reopen_with(
        dir.path(),
        crate::log::RecoveryHint {
            clean_shutdown: false,
            recovery_point: Some(bases[1]),
        },
    );
    assert_eq!(
        log.segment_bases(),
        bases[..2],
        "the segments after the torn one are gone"
    );
    assert!(log.log_end_offset() < bases[2]);
    for later in &bases[2..] {
        assert!(!seg_path(dir.path(), *later, "log").exists());
    }
    // No gap: the log reads to its end and appends continue right after the torn segment.
    let end = log.log_end_offset();
    assert_eq!(read_all(&log).last().unwrap().last_offset() + 1, end);
    assert_eq!(log.append(&batch(1), 0).unwrap().base_offset, end);
}

#[test]
fn after_a_clean_shutdown_the_active_segment_is_not_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small(1 << 20));
    fill(&log, 30);
    log.flush_until(log.log_end_offset()).unwrap();
    log.persist_active_indexes().unwrap();
    let end = log.log_end_offset();
    drop(log);
    // Damage inside the active segment, before its last index entry: a scan would cut there.
    let path = seg_path(dir.path(), 0, "log");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let clean = crate::log::RecoveryHint {
        clean_shutdown: true,
        recovery_point: Some(end),
    };
    assert_eq!(
        reopen_with(dir.path(), clean).log_end_offset(),
        end,
        "trusted, not scanned"
    );
    // The same files after a crash with no checkpoint: scanned whole, and cut at the damage.
    let crashed = crate::log::RecoveryHint {
        clean_shutdown: false,
        recovery_point: None,
    };
    assert!(reopen_with(dir.path(), crashed).log_end_offset() < end);
}

/// A crash after a checkpoint (recovery point `rp`, active indexes persisted with it) and more
/// appends; returns the directory, `rp`, the log end at the crash and the last offset of the
/// batch holding the last index entry below `rp`.
fn crash_after_checkpoint() -> (tempfile::TempDir, i64, i64) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small(1 << 20));
    fill(&log, 30);
    log.flush_until(log.log_end_offset()).unwrap();
    log.persist_active_indexes().unwrap();
    let rp = log.recovery_point();
    fill(&log, 10);
    let end = log.log_end_offset();
    drop(log);
    (dir, rp, end)
}

fn crashed_at(rp: i64) -> crate::log::RecoveryHint {
    crate::log::RecoveryHint {
        clean_shutdown: false,
        recovery_point: Some(rp),
    }
}

#[test]
fn after_a_crash_the_active_segment_is_read_only_from_the_recovery_point() {
    let (dir, rp, end) = crash_after_checkpoint();
    let path = seg_path(dir.path(), 0, "log");
    let mut bytes = std::fs::read(&path).unwrap();
    // Damage far below the recovery point (a full scan would cut the log there), and a torn
    // write at the end, after it.
    bytes[100] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    chop(&path, 5);
    let log = reopen_with(dir.path(), crashed_at(rp));
    assert_eq!(
        log.log_end_offset(),
        end - 1,
        "only the torn last batch (one record: `fill`'s tenth) is cut: nothing below the recovery point was read"
    );
    // The rebuilt indexes serve every offset after the resume point, and appends continue.
    let tail: Vec<_> = (rp..log.log_end_offset())
        .map(|o| headers(&log.read(o, 1, true).unwrap().records)[0].last_offset())
        .collect();
    assert!(tail.iter().zip(rp..).all(|(last, o)| *last >= o), "{tail:?}");
    assert_eq!(log.append(&batch(1), 0).unwrap().base_offset, end - 1);
}

#[test]
fn a_resume_point_the_log_does_not_confirm_means_a_scan_from_the_start() {
    let (dir, rp, _) = crash_after_checkpoint();
    // The batch the last index entry below rp points at is damaged: no resume there.
    let entries = crate::log::index::OffsetIndex::read_prefix(&seg_path(dir.path(), 0, "index"), 0);
    let &(_, pos) = entries.iter().rev().find(|(o, _)| *o < rp).unwrap();
    let path = seg_path(dir.path(), 0, "log");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[pos as usize + 70] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let log = reopen_with(dir.path(), crashed_at(rp));
    assert!(
        log.log_end_offset() < rp,
        "the scan from the start cut at the damaged batch"
    );
}

#[test]
fn garbage_after_the_persisted_index_entries_is_ignored() {
    let (dir, rp, end) = crash_after_checkpoint();
    // A torn index page: entries that do not follow the last sound one.
    let index = seg_path(dir.path(), 0, "index");
    let mut bytes = std::fs::read(&index).unwrap();
    bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff]);
    std::fs::write(&index, &bytes).unwrap();
    let log = reopen_with(dir.path(), crashed_at(rp));
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_all(&log).last().unwrap().last_offset() + 1, end);
    // The index file was rewritten without the garbage.
    let rewritten = std::fs::read(&index).unwrap();
    assert_eq!(rewritten.len() % 8, 0);
}

/// Reopens after a clean shutdown with a producer-state snapshot at the log end (as the broker
/// keeps them), so the start replays nothing.
fn reopen_clean_with_snapshot(dir: &Path, end: i64) -> PartitionLog {
    let snapshot = crate::log::ProducerSnapshot {
        offset: end,
        table: crate::log::ProducerStateTable::default(),
    };
    let hint = crate::log::RecoveryHint {
        clean_shutdown: true,
        recovery_point: Some(end),
    };
    PartitionLog::open_recovering(dir, small(400), LogDirHealth::new(dir), vec![snapshot], hint).unwrap()
}

/// A log of several segments in `dir`, everything flushed as a clean stop leaves it: (its
/// end, every batch, its segment bases).
fn filled_and_stopped_cleanly(dir: &Path) -> (i64, Vec<RecordBatchHeader>, Vec<i64>) {
    let log = open(dir, small(400));
    fill(&log, 40);
    log.flush_sealed().unwrap();
    log.flush_until(log.log_end_offset()).unwrap();
    log.persist_active_indexes().unwrap();
    (log.log_end_offset(), read_all(&log), log.segment_bases())
}

#[test]
fn sealed_segments_read_their_indexes_only_when_first_used() {
    let dir = tempfile::tempdir().unwrap();
    let (end, expected, _) = filled_and_stopped_cleanly(dir.path());

    let log = reopen_clean_with_snapshot(dir.path(), end);
    let bases = log.segment_bases();
    assert!(bases.len() >= 6, "{bases:?}");
    let loaded = |log: &PartitionLog| -> Vec<bool> {
        bases
            .iter()
            .map(|b| log.floor_segment(*b).unwrap().indexes_loaded())
            .collect()
    };
    let at_open = loaded(&log);
    assert!(
        at_open[..at_open.len() - 1].iter().all(|l| !l),
        "sealed segments read their indexes at open: {at_open:?}"
    );
    // A read in the third segment loads that one only.
    let h = headers(&log.read(bases[2], 1, true).unwrap().records)[0];
    assert_eq!(h.base_offset(), bases[2]);
    let after = loaded(&log);
    assert!(after[2] && !after[1] && !after[3], "{after:?}");
    // Everything reads back as before.
    assert_eq!(read_all(&log), expected);
}

#[test]
fn a_lazily_loaded_segment_with_unsound_indexes_is_rebuilt_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let (end, expected, bases) = filled_and_stopped_cleanly(dir.path());
    // The second segment's offset index is cut mid-entry.
    chop(&seg_path(dir.path(), bases[1], "index"), 3);
    let log = reopen_clean_with_snapshot(dir.path(), end);
    assert!(!log.floor_segment(bases[1]).unwrap().indexes_loaded());
    assert_eq!(
        read_all(&log),
        expected,
        "the rebuilt indexes serve the same batches"
    );
    let rebuilt = std::fs::metadata(seg_path(dir.path(), bases[1], "index"))
        .unwrap()
        .len();
    assert!(
        rebuilt > 0 && rebuilt % 8 == 0,
        "rebuilt index of {rebuilt} bytes written back"
    );
}

//! The cleaner on real partition logs: what a round keeps, the codecs, transactions, and crashes
//! at every step of a swap, with and without losing what was not fsynced.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::*;
use crate::log::batch::TRANSACTIONAL_BIT;
use crate::log::compression::compress;
use crate::log::record::{put_varlong, BatchFields};
use crate::log::{LogConfig, TxnMarker};

const NOW: i64 = 1_700_000_000_000;

/// A producer's batch of keyed records (`None` values are tombstones) with `codec`.
fn keyed_batch(
    records: &[(&str, Option<&str>)],
    codec_id: u8,
    attributes: i16,
    producer: (i64, i16, i32),
) -> Vec<u8> {
    let mut plain = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut body = vec![0u8];
        put_varlong(&mut body, i as i64); // timestamp delta
        put_varlong(&mut body, i as i64); // offset delta
        put_varlong(&mut body, key.len() as i64);
        body.extend_from_slice(key.as_bytes());
        match value {
            Some(v) => {
                put_varlong(&mut body, v.len() as i64);
                body.extend_from_slice(v.as_bytes());
            }
            None => put_varlong(&mut body, -1),
        }
        put_varlong(&mut body, 0);
        put_varlong(&mut plain, body.len() as i64);
        plain.extend_from_slice(&body);
    }
    let n = records.len() as i32;
    BatchFields {
        base_offset: 0,
        partition_leader_epoch: -1,
        attributes: attributes | i16::from(codec_id),
        last_offset_delta: n - 1,
        base_timestamp: NOW,
        max_timestamp: NOW + i64::from(n) - 1,
        producer_id: producer.0,
        producer_epoch: producer.1,
        base_sequence: producer.2,
        record_count: n,
    }
    .encode(&compress(codec(codec_id).unwrap(), &plain).unwrap())
}

fn plain_batch(records: &[(&str, Option<&str>)]) -> Vec<u8> {
    keyed_batch(records, 0, 0, (-1, -1, -1))
}

type Contents = BTreeMap<i64, (String, Option<String>)>;

/// Every record the log serves, by offset: (key, value).
fn contents(log: &PartitionLog) -> Contents {
    let mut out = BTreeMap::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let r = log.read(offset, 1 << 20, true).unwrap();
        if r.records.is_empty() {
            break;
        }
        for (pos, h) in BatchHeaders::new(&r.records) {
            assert!(
                crate::log::batch::crc_matches(&h, &r.records[pos..pos + h.size()]),
                "a corrupt batch at {}",
                h.base_offset()
            );
            offset = h.last_offset() + 1;
            if h.is_control() {
                out.insert(h.base_offset(), ("<marker>".to_string(), None));
                continue;
            }
            let section = r.records.slice(pos + BATCH_HEADER_SIZE..pos + h.size());
            let plain = decompress(codec(h.compression()).unwrap(), &section).unwrap();
            let mut reader = Reader::new(&plain);
            while !reader.at_end() {
                let rec = reader.record().unwrap();
                let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                out.insert(
                    h.base_offset() + i64::from(rec.offset_delta),
                    (text(rec.key.unwrap_or_default()), rec.value.map(text)),
                );
            }
        }
    }
    out
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 400,
        index_interval_bytes: 64,
        compact: true,
        ..LogConfig::default()
    }
}

/// Appends and makes everything durable (and so cleanable).
fn append_all(log: &PartitionLog, batches: &[Vec<u8>]) {
    for b in batches {
        let info = log.append(b, NOW).unwrap();
        if info.rolled {
            log.flush_sealed().unwrap();
        }
    }
    log.flush_until(log.log_end_offset()).unwrap();
}

fn run(log: &PartitionLog, checkpoint: Option<i64>, now_ms: i64) -> Option<CleanStats> {
    let range = cleanable(log, checkpoint, now_ms);
    let mut map = OffsetMap::new(1 << 20, 0.9);
    let abort = AtomicBool::new(false);
    let opts = CleanOptions {
        now_ms,
        io_buffer: 4096,
        throttle: &|_| {},
        abort: &abort,
    };
    let mut deleted = Vec::new();
    let stats = clean(log, &range, &mut map, &opts, &mut deleted).unwrap();
    for d in deleted {
        d.remove().unwrap();
    }
    stats
}

/// What compaction of `contents` up to `end` keeps: the latest record of each key below it
/// (tombstones too), everything from it on.
fn compacted(contents: &Contents, end: i64) -> Contents {
    let mut latest: BTreeMap<&str, i64> = BTreeMap::new();
    for (&o, (k, _)) in contents.range(..end) {
        latest.insert(k, o);
    }
    contents
        .iter()
        .filter(|(&o, (k, _))| o >= end || latest.get(k.as_str()) == Some(&o))
        .map(|(&o, kv)| (o, kv.clone()))
        .collect()
}

/// Overwrites of 10 keys, one key per batch, over several segments.
fn overwrites(rounds: usize) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    for r in 0..rounds {
        for k in 0..10 {
            let (key, value) = (format!("key-{k}"), format!("value-{k}-{r}"));
            batches.push(plain_batch(&[(&key, Some(&value))]));
        }
    }
    batches
}

#[test]
fn a_round_keeps_the_latest_record_of_each_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(&dir.path().join("t-0"), config()).unwrap();
    append_all(&log, &overwrites(8));
    let before = contents(&log);
    let segments_before = log.segments_list().len();
    assert!(segments_before > 4, "{segments_before} segments");
    let bytes_before = log.size();
    let range = cleanable(&log, None, NOW);
    assert!(range.dirty_ratio() > 0.99 && range.is_due(0.5), "{range:?}");
    let active_base = log.segments_list().last().unwrap().base_offset();
    assert_eq!(
        range.first_uncleanable, active_base,
        "the active segment is never cleaned"
    );

    let stats = run(&log, None, NOW).expect("a round ran");
    assert_eq!(stats.end_offset, active_base);
    assert!(
        log.size() < bytes_before / 2,
        "{} of {bytes_before} bytes left",
        log.size()
    );
    let after = contents(&log);
    assert_eq!(after, compacted(&before, active_base));
    assert!(after.len() < before.len());
    let size_before: u64 = before.len() as u64;
    assert!(log.size() > 0 && (after.len() as u64) < size_before);
    // The same log after a restart, and a second round with nothing new to clean does nothing.
    drop(log);
    let log = PartitionLog::open(&dir.path().join("t-0"), config()).unwrap();
    assert_eq!(contents(&log), after);
    assert!(run(&log, Some(stats.end_offset), NOW).is_none());
    // New overwrites: the next round reaches the clean section too.
    append_all(&log, &overwrites(3));
    let before = contents(&log);
    let stats = run(&log, Some(stats.end_offset), NOW).expect("a second round");
    assert_eq!(contents(&log), compacted(&before, stats.end_offset));
    let left: Vec<_> = std::fs::read_dir(dir.path().join("t-0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("cleaned") || n.contains("swap") || n.contains("deleted"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn tombstones_stay_until_their_delete_horizon_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(
        &dir.path().join("t-0"),
        LogConfig {
            delete_retention_ms: 1_000,
            ..config()
        },
    )
    .unwrap();
    let mut batches = overwrites(3);
    batches.push(plain_batch(&[("key-3", None)]));
    batches.extend(overwrites(1).into_iter().filter(|_| true).skip(4));
    batches.extend(overwrites(2));
    append_all(&log, &batches);
    let tombstone_at = contents(&log)
        .iter()
        .find(|(_, (_, v))| v.is_none())
        .map(|(o, _)| *o)
        .unwrap();
    let first = run(&log, None, NOW).unwrap();
    assert!(
        tombstone_at < first.end_offset,
        "the tombstone was in the cleaned range"
    );
    // key-3 was overwritten after the tombstone: the tombstone itself is superseded and goes.
    assert!(!contents(&log).contains_key(&tombstone_at));

    // A tombstone that is the latest record of its key stays through a round, stamped with its
    // delete horizon, and goes in a round after the horizon.
    append_all(
        &log,
        &[
            plain_batch(&[("gone", Some("v"))]),
            plain_batch(&[("gone", None)]),
        ],
    );
    append_all(&log, &overwrites(2));
    let tombstone = |log: &PartitionLog| {
        contents(log)
            .into_iter()
            .find(|(_, (k, v))| k == "gone" && v.is_none())
    };
    let second = run(&log, Some(first.end_offset), NOW).unwrap();
    let (at, _) = tombstone(&log).expect("kept before its horizon");
    assert!(!contents(&log).values().any(|(k, v)| k == "gone" && v.is_some()));
    let r = log.read(at, 1 << 20, true).unwrap();
    let h = RecordBatchHeader::parse(&r.records).unwrap();
    assert_eq!(
        h.delete_horizon_ms(),
        Some(NOW + 1_000),
        "the horizon is stamped into the batch"
    );
    // Before the horizon a round keeps it; after it, one removes it.
    append_all(&log, &overwrites(2));
    let third = run(&log, Some(second.end_offset), NOW + 999).unwrap();
    assert!(tombstone(&log).is_some());
    append_all(&log, &overwrites(2));
    run(&log, Some(third.end_offset), NOW + 1_000).unwrap();
    assert!(tombstone(&log).is_none(), "removed once the horizon passed");
}

#[test]
fn compressed_batches_are_rewritten_with_their_own_codec() {
    for codec_id in 1..=4u8 {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(&dir.path().join("t-0"), config()).unwrap();
        let mut batches = Vec::new();
        for r in 0..6 {
            let recs: Vec<(String, String)> =
                (0..4).map(|k| (format!("k{k}"), format!("v{k}-{r}"))).collect();
            let refs: Vec<(&str, Option<&str>)> =
                recs.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))).collect();
            batches.push(keyed_batch(&refs, codec_id, 0, (-1, -1, -1)));
        }
        append_all(&log, &batches);
        let before = contents(&log);
        let stats = run(&log, None, NOW).unwrap_or_else(|| panic!("codec {codec_id}: no round"));
        assert_eq!(
            contents(&log),
            compacted(&before, stats.end_offset),
            "codec {codec_id}"
        );
        let r = log.read(0, 1 << 20, true).unwrap();
        for (_, h) in BatchHeaders::new(&r.records) {
            if h.record_count() > 0 {
                assert_eq!(
                    h.compression(),
                    codec_id,
                    "codec {codec_id}: the batch keeps its codec"
                );
            }
        }
    }
}

#[test]
fn aborted_transactions_are_removed_and_a_producers_last_batch_stays() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(&dir.path().join("t-0"), config()).unwrap();
    let pid = 7;
    let txn = |seq: i32, key: &str, value: &str| {
        keyed_batch(&[(key, Some(value))], 0, TRANSACTIONAL_BIT, (pid, 0, seq))
    };
    append_all(&log, &[txn(0, "a", "aborted-1"), txn(1, "b", "aborted-2")]);
    log.append_marker(
        &TxnMarker {
            producer_id: pid,
            producer_epoch: 0,
            coordinator_epoch: 0,
            commit: false,
        },
        NOW,
    )
    .unwrap();
    append_all(&log, &[txn(2, "a", "committed")]);
    log.append_marker(
        &TxnMarker {
            producer_id: pid,
            producer_epoch: 0,
            coordinator_epoch: 0,
            commit: true,
        },
        NOW,
    )
    .unwrap();
    append_all(&log, &overwrites(4));
    let stats = run(&log, None, NOW).unwrap();
    let after = contents(&log);
    assert!(
        !after
            .values()
            .any(|(_, v)| v.as_deref().is_some_and(|v| v.starts_with("aborted"))),
        "{after:?}"
    );
    assert!(after.values().any(|(_, v)| v.as_deref() == Some("committed")));
    // Both markers stay this round (batches of both transactions were seen).
    assert_eq!(after.values().filter(|(k, _)| k == "<marker>").count(), 2);
    // A read_committed reader is told nothing is aborted any more in the data that is left, and
    // the producer's state survives a restart (its last batch is the committed one).
    drop(log);
    let log = PartitionLog::open(&dir.path().join("t-0"), config()).unwrap();
    assert_eq!(contents(&log), after);
    assert!(log
        .producers()
        .iter()
        .any(|p| p.producer_id == pid && p.last_seq() == 2));
    assert!(stats.end_offset > 0);
}

/// Copies a partition directory (test setup for a second, identical log).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// `contents` within `[from, to)`.
fn within(c: &Contents, from: i64, to: i64) -> Contents {
    c.range(from..to).map(|(o, kv)| (*o, kv.clone())).collect()
}

/// A round swaps its groups in one at a time, each atomically: after a crash every group reads
/// exactly as before or exactly as after its cleaning, and a group whose swap committed reads
/// as after.
#[test]
fn a_crash_at_any_step_of_a_swap_leaves_each_group_as_before_or_as_after() {
    use crate::log::durable::power_loss::{PowerLoss, Rng};
    for step in 0..=4u8 {
        for seed in 0..6u64 {
            let root = tempfile::tempdir().unwrap();
            let (dir, twin) = (root.path().join("t-0"), root.path().join("twin-0"));
            let log = PartitionLog::open(&dir, config()).unwrap();
            append_all(&log, &overwrites(6));
            log.persist_active_indexes().unwrap();
            let before = contents(&log);
            drop(log);
            copy_dir(&dir, &twin);
            let (after, groups) = {
                let twin_log = PartitionLog::open(&twin, config()).unwrap();
                let stats = run(&twin_log, None, NOW).unwrap();
                let mut bases: Vec<i64> = twin_log
                    .segments_list()
                    .iter()
                    .map(|s| s.base_offset())
                    .filter(|&b| b < stats.end_offset)
                    .collect();
                bases.push(stats.end_offset);
                (contents(&twin_log), bases)
            };
            assert_ne!(before, after);
            assert!(groups.len() > 2, "several groups: {groups:?}");

            let loss = PowerLoss::record(root.path());
            let log = PartitionLog::open(&dir, config()).unwrap();
            if step == 0 {
                // Stopped while writing the cleaned segment: only `.cleaned` files exist.
                let range = cleanable(&log, None, NOW);
                let mut out = CleanedSegment::create(&dir, 0, 64).unwrap();
                let first = log.read(0, 1 << 20, true).unwrap().records;
                out.append(&first).unwrap();
                let _ = range;
            } else {
                swap::STOP_AFTER.with(|s| s.set(Some(step)));
                let range = cleanable(&log, None, NOW);
                let mut map = OffsetMap::new(1 << 20, 0.9);
                let abort = AtomicBool::new(false);
                let opts = CleanOptions {
                    now_ms: NOW,
                    io_buffer: 4096,
                    throttle: &|_| {},
                    abort: &abort,
                };
                let stopped = clean(&log, &range, &mut map, &opts, &mut Vec::new());
                swap::STOP_AFTER.with(|s| s.set(None));
                assert!(stopped.is_err(), "step {step}: the test stop fired");
            }
            drop(log);
            let mut rng = Rng::new(seed);
            if seed % 2 == 1 {
                loss.crash(&mut rng);
            }
            let log = PartitionLog::open(&dir, config()).unwrap();
            let now = contents(&log);
            for (i, pair) in groups.windows(2).enumerate() {
                let (from, to) = (pair[0], pair[1]);
                let (b, a, n) = (
                    within(&before, from, to),
                    within(&after, from, to),
                    within(&now, from, to),
                );
                assert!(
                    n == b || n == a,
                    "step {step}, seed {seed}, group {from}..{to}: {n:?}"
                );
                // The stop came in the first group's swap: it committed from step 2 on; the
                // other groups were never swapped.
                if i == 0 && step >= 2 {
                    assert_eq!(n, a, "step {step}, seed {seed}: committed, so completed");
                } else {
                    assert_eq!(
                        n, b,
                        "step {step}, seed {seed}, group {from}..{to}: not committed, so undone"
                    );
                }
            }
            assert_eq!(
                within(&now, *groups.last().unwrap(), i64::MAX),
                within(&before, *groups.last().unwrap(), i64::MAX)
            );
            let names: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.contains("cleaned") || n.contains("swap"))
                .collect();
            assert!(names.is_empty(), "step {step}, seed {seed}: {names:?}");
        }
    }
}

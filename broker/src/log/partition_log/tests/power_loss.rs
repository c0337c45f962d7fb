//! The power-loss simulation: random interleavings of appends, fsyncs (what an acks=-1 produce
//! waits for), roll flushes, DeleteRecords, retention, recovery-point checkpoints, clean restarts and
//! crashes that drop or tear whatever was not fsynced (`durable::power_loss`). After each crash
//! the log is reopened (with no checkpoint, the latest one or an older one) and must hold every
//! acknowledged record byte for byte, keep its log start, and serve nothing corrupt.
//!
//! Deterministic and seeded: a failure names its seed, and `KEEL_POWER_LOSS_SEED=<seed>`
//! replays that one. `KEEL_POWER_LOSS_SEEDS=<n>` runs n seeds (the default suite runs a few;
//! scripts/power-loss.sh runs many).

use std::collections::BTreeMap;

use super::*;
use crate::log::durable::power_loss::{PowerLoss, Rng};
use crate::log::RecoveryHint;

/// What the test knows about the log.
#[derive(Default)]
struct Model {
    /// base offset -> (last offset, the batch's bytes from its magic byte on: everything the
    /// broker does not rewrite).
    batches: BTreeMap<i64, (i64, Vec<u8>)>,
    /// Every offset below this was acknowledged as durable (an fsync covered it).
    acknowledged_end: i64,
    /// The log start offset a DeleteRecords made durable.
    log_start: i64,
    /// The recovery points "written to the checkpoint file" so far: a crash reopens with none,
    /// the latest or an older one.
    checkpoints: Vec<i64>,
}

/// The part of a batch the broker keeps as produced: from the magic byte (offset 16) on.
fn kept(batch: &[u8]) -> &[u8] {
    &batch[16..]
}

fn config(rng: &mut Rng) -> LogConfig {
    LogConfig {
        segment_bytes: 200 + rng.below(3000),
        index_interval_bytes: 64 + rng.below(512) as u32,
        flush_before_visible: rng.chance(50),
        ..LogConfig::default()
    }
}

/// Every batch the reopened log serves, checked against the model; returns the new model.
fn verify(log: &PartitionLog, model: &Model, seed: u64, step: usize) -> Model {
    let context = format!("seed {seed}, step {step}");
    assert!(
        log.log_start_offset() >= model.log_start,
        "{context}: log start went back from {} to {}",
        model.log_start,
        log.log_start_offset()
    );
    assert!(
        log.log_end_offset() >= model.acknowledged_end,
        "{context}: log end {} below the acknowledged end {}",
        log.log_end_offset(),
        model.acknowledged_end
    );
    let mut served = BTreeMap::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let r = log
            .read(offset, 1 << 20, true)
            .unwrap_or_else(|e| panic!("{context}: read at {offset}: {e}"));
        let mut it = BatchHeaders::new(&r.records);
        let mut progressed = false;
        for (pos, h) in it.by_ref() {
            let batch = &r.records[pos..pos + h.size()];
            assert!(
                crate::log::batch::crc_matches(&h, batch),
                "{context}: corrupt batch at offset {} served",
                h.base_offset()
            );
            let Some((last, bytes)) = model.batches.get(&h.base_offset()) else {
                panic!(
                    "{context}: a batch at {}..={} that was never appended",
                    h.base_offset(),
                    h.last_offset()
                );
            };
            assert_eq!(
                (h.last_offset(), kept(batch)),
                (*last, bytes.as_slice()),
                "{context}: the batch at {} differs from the one appended",
                h.base_offset()
            );
            served.insert(h.base_offset(), (*last, bytes.clone()));
            assert!(
                h.last_offset() >= offset,
                "{context}: a read at {offset} went backwards"
            );
            offset = h.last_offset() + 1;
            progressed = true;
        }
        assert_eq!(it.position(), r.records.len(), "{context}: partial batch served");
        if !progressed {
            // A gap to the log end: a sealed segment lost unacknowledged records at its end
            // and nothing follows yet (reads skip a gap once data follows it, as they skip
            // compaction's gaps).
            break;
        }
    }
    for (&base, &(last, _)) in &model.batches {
        if last >= log.log_start_offset() && last < model.acknowledged_end {
            assert!(
                served.contains_key(&base),
                "{context}: acknowledged batch {base}..={last} lost (log {}..{})",
                log.log_start_offset(),
                log.log_end_offset()
            );
        }
    }
    Model {
        batches: served,
        // After the restart whatever the disk holds is durable (the open fsyncs the tail).
        acknowledged_end: log.log_end_offset(),
        log_start: log.log_start_offset(),
        checkpoints: Vec::new(),
    }
}

fn reopen(dir: &Path, config: LogConfig, hint: RecoveryHint, context: &str) -> PartitionLog {
    let health = LogDirHealth::new(dir.parent().unwrap());
    PartitionLog::open_recovering(dir, config, health, Vec::new(), hint)
        .unwrap_or_else(|e| panic!("{context}: reopen: {e}"))
}

fn run(seed: u64) {
    let mut rng = Rng::new(seed);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("t-0");
    let config = config(&mut rng);
    let loss = PowerLoss::record(root.path());
    let mut log = Some(open(&dir, config));
    let mut model = Model::default();
    let steps = 60 + rng.below(60) as usize;
    for step in 0..steps {
        let current = log.as_ref().unwrap();
        match rng.below(100) {
            0..=54 => {
                let n = 1 + rng.below(8) as usize;
                let batch = BatchSpec::new(n)
                    .value_size(1 + rng.below(200) as usize)
                    .timestamps(1_700_000_000_000 + rng.below(1_000_000) as i64, 1)
                    .build();
                let info = current.append(&batch, 0).unwrap();
                model
                    .batches
                    .insert(info.base_offset, (info.last_offset, kept(&batch).to_vec()));
            }
            55..=74 => {
                let end = current.log_end_offset();
                current.flush_until(end).unwrap();
                model.acknowledged_end = end;
            }
            75..=82 => current.flush_sealed().unwrap(),
            83..=84 => {
                // Retention (by size or by time, as the broker's retention task runs it): the
                // deleted segments' `.deleted` files removed now, or left for the next start.
                let mut retained = config;
                let now = if rng.chance(50) {
                    retained.retention_bytes = rng.below(4_000) as i64;
                    0
                } else {
                    retained.retention_ms = rng.below(1_000_000) as i64;
                    1_700_000_000_000 + rng.below(2_000_000) as i64
                };
                current.set_config(retained);
                let deleted = current.delete_old_segments(now).unwrap();
                if rng.chance(50) {
                    deleted.remove().unwrap();
                }
                current.set_config(config);
                model.log_start = current.log_start_offset();
            }
            85..=86 => {
                let (start, hw) = (current.log_start_offset(), current.high_watermark());
                let to = start + rng.below((hw - start) as u64 + 1) as i64;
                model.log_start = current.delete_records_before(to).unwrap();
            }
            87..=90 => {
                // As LogManager::checkpoint_recovery_points: the active indexes, then the point.
                current.persist_active_indexes().unwrap();
                model.checkpoints.push(current.recovery_point());
            }
            91..=92 => {
                // A clean shutdown and restart: everything flushed, the active segment's
                // indexes too; the start scans nothing.
                current.flush_sealed().unwrap();
                current.flush_until(current.log_end_offset()).unwrap();
                current.persist_active_indexes().unwrap();
                model.acknowledged_end = current.log_end_offset();
                drop(log.take());
                let hint = RecoveryHint {
                    clean_shutdown: true,
                    recovery_point: Some(model.acknowledged_end),
                };
                let context = format!("seed {seed}, step {step}");
                let reopened = reopen(&dir, config, hint, &context);
                model = verify(&reopened, &model, seed, step);
                log = Some(reopened);
            }
            _ => {
                drop(log.take());
                loss.crash(&mut rng);
                let recovery_point = match rng.below(3) {
                    0 => None,
                    1 => model.checkpoints.last().copied(),
                    _ => {
                        let n = model.checkpoints.len() as u64;
                        (n > 0).then(|| model.checkpoints[rng.below(n) as usize])
                    }
                };
                let hint = RecoveryHint {
                    clean_shutdown: false,
                    recovery_point,
                };
                let context = format!("seed {seed}, step {step}, {hint:?}");
                let reopened = reopen(&dir, config, hint, &context);
                model = verify(&reopened, &model, seed, step);
                log = Some(reopened);
            }
        }
    }
    drop(log.take());
    loss.crash(&mut rng);
    let reopened = PartitionLog::open(&dir, config).unwrap();
    verify(&reopened, &model, seed, steps);
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn acknowledged_records_survive_random_power_losses_and_nothing_corrupt_is_served() {
    if let Some(seed) = env_u64("KEEL_POWER_LOSS_SEED") {
        run(seed);
        return;
    }
    for seed in 0..env_u64("KEEL_POWER_LOSS_SEEDS").unwrap_or(40) {
        run(seed);
    }
}

#!/usr/bin/env bash
# Runs the power-loss simulation (broker/src/log/partition_log/tests/power_loss.rs) over many
# seeds: random appends, fsyncs, roll flushes, DeleteRecords, retention and crashes that drop or tear
# whatever was not fsynced, each crash followed by a reopen that must keep every acknowledged
# record byte for byte and serve nothing corrupt. scripts/test.sh runs 40 seeds; this runs
# more.
#
#   scripts/power-loss.sh              5000 seeds (a few minutes)
#   scripts/power-loss.sh 20000        that many seeds
#   KEEL_POWER_LOSS_SEED=123 scripts/power-loss.sh    replays one seed (a failure names it)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/keel/target}"
scripts/setup.sh
cargo build --workspace --all-targets
export KEEL_POWER_LOSS_SEEDS="${1:-5000}"
cargo test -p keel --lib -- --exact \
  log::partition_log::tests::power_loss::acknowledged_records_survive_random_power_losses_and_nothing_corrupt_is_served

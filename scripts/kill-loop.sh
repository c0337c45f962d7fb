#!/usr/bin/env bash
# The kill -9 loops of the test suite, longer: kills the broker N times (default 200) under a
# continuous acks=-1 load from librdkafka and checks that every acknowledged record reads back
# with identical content (protocol-tests restart::kill_9_loop_under_acks_all_load_...), then N
# times while the log cleaner works on a compacted topic under an idempotent producer's
# overwrites and checks that the log is a valid compaction of what was acknowledged
# (compaction::kill_9_during_cleaning_...).
#
#   scripts/kill-loop.sh [N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/keel/target}"
scripts/setup.sh
cargo build --workspace --all-targets
KEEL_KILL_LOOP_ROUNDS="${1:-200}" cargo test -p protocol-tests --test it -- --exact \
  restart::kill_9_loop_under_acks_all_load_loses_no_acknowledged_record --nocapture
KEEL_CLEANER_KILL_ROUNDS="${1:-200}" cargo test -p protocol-tests --test it -- --exact \
  compaction::kill_9_during_cleaning_loses_nothing_acknowledged --nocapture

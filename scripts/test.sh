#!/usr/bin/env bash
# Runs every test: the broker's unit tests and protocol-tests, which start the real keel binary
# and drive it with librdkafka (rdkafka), kcat and kafka-python.
# Extra arguments go to the test binaries, e.g. `scripts/test.sh restart` runs the restart tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# One target dir and one build command line for every script, so RocksDB compiles once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/keel/target}"

scripts/setup.sh

# kafka-python and aiokafka are pure-Python clients (no librdkafka), so they check the broker
# against independent implementations of the protocol.
venv="$HOME/.cache/keel/venv"
if ! "$venv/bin/python" -c 'import kafka, aiokafka' >/dev/null 2>&1; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet kafka-python aiokafka
fi
export KEEL_PYTHON="$venv/bin/python"

cargo build --workspace --all-targets
# Two test threads on two cores: each protocol test runs its own broker next to its clients.
# --no-fail-fast: a failing unit test must not hide the protocol tests (and vice versa).
status=0
cargo test --workspace --no-fail-fast -- --test-threads=2 "$@" || status=$?

# librdkafka's own test suite, the fast subset (scripts/compat/librdkafka.quick); the whole
# allow-list is `scripts/compat/librdkafka.sh`. Skipped when a test filter was given.
if [ $# -eq 0 ]; then
  scripts/compat/librdkafka.sh --quick --no-build || status=$?
  # The benchmark's short version: every kind of run once with tiny counts, so the script and
  # what it checks (every message delivered and read back, a clean stop) keep working.
  scripts/bench.sh --smoke >/dev/null || status=$?
  # The instruction count's short version (one small round under callgrind): the script and
  # its checks keep working; its figures are scripts/bench-instructions.sh's own to give.
  BENCH_INSTR_MESSAGES=2000 BENCH_INSTR_ROUNDS=1 BENCH_INSTR_IDLE_SECONDS=2 \
    scripts/bench-instructions.sh >/dev/null || status=$?
fi
exit $status

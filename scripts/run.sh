#!/usr/bin/env bash
# Builds Keel and runs the broker in the foreground. Arguments go to the broker unchanged, as for
# Kafka's kafka-server-start.sh: `scripts/run.sh [server.properties] [--override key=value]...`.
# Data goes to ./data (relative to the repository root) unless log.dirs says otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# One target dir and one build command line for every script, so RocksDB compiles once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/keel/target}"

scripts/setup.sh
cargo build --workspace --all-targets
exec "$CARGO_TARGET_DIR/debug/keel" "$@"

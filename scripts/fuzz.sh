#!/usr/bin/env bash
# Coverage-guided fuzzing of Keel's decoders with cargo-fuzz (libFuzzer), on the stable toolchain.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each target (default: all of request, record_batch, segment_recovery, properties) for
# SECONDS (default 900, the 15 minutes issue 8 asks before a release of the decoders), one after
# the other, starting from fuzz/corpus/<target> and adding what it finds to
# $HOME/.cache/keel/fuzz-corpus/<target> (not to the repository: minimise with `cargo fuzz cmin`
# before checking new seeds in). A crash leaves its input in fuzz/artifacts/<target>/ and
# stops the script with a non-zero status; reproduce it with
#   cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/<file>
# then copy the input into fuzz/corpus/<target>/ once fixed: the unit test
# `fuzzing::tests::checked_in_fuzz_corpora_replay_cleanly` replays every corpus file in
# scripts/test.sh, so a finding fixed once stays fixed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-900}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request record_batch segment_recovery properties)

main_target="${CARGO_TARGET_DIR:-$HOME/.cache/keel/target}"
scripts/setup.sh
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

# RocksDB's C++ takes ~20 minutes to compile: link the library the main build already made
# (librocksdb-sys links a prebuilt one from ROCKSDB_LIB_DIR) instead of compiling it again
# for the fuzz build's own target directory.
rocksdb_lib() { ls -t "$main_target"/debug/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -1; }
if [ -z "$(rocksdb_lib)" ]; then
  CARGO_TARGET_DIR="$main_target" cargo build -p keel
fi
export ROCKSDB_LIB_DIR="$(dirname "$(rocksdb_lib)")" ROCKSDB_STATIC=1
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-lstdc++"
export CARGO_TARGET_DIR="$HOME/.cache/keel/fuzz-target"

cd fuzz
status=0
for target in "${targets[@]}"; do
  work="$HOME/.cache/keel/fuzz-corpus/$target"
  mkdir -p "$work" "artifacts/$target"
  echo "== fuzzing $target for ${seconds}s"
  # No sanitizer: Rust's own checks (bounds, overflow with debug assertions, panics) are what
  # the targets assert, and sanitizers need a nightly toolchain. -rss_limit_mb catches a
  # decoder that allocates what a hostile length field claims; -timeout one that hangs.
  cargo fuzz run --sanitizer none --debug-assertions "$target" "$work" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    -artifact_prefix="artifacts/$target/" -print_final_stats=1 || status=$?
  [ $status -eq 0 ] || { echo "fuzz target $target failed (status $status); see fuzz/artifacts/$target/"; exit $status; }
done

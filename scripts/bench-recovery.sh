#!/usr/bin/env bash
# Measures how long Keel takes to open a large log directory: fills GB gigabytes over P
# partitions with rdkafka_performance (acks=1, 1 KiB messages), then times three starts, each
# from process start to the "keel started" log line: after a clean shutdown (the
# .kafka_cleanshutdown marker: nothing scanned), after a kill -9 with a recent recovery-point
# checkpoint (only what follows it scanned), and after a kill -9 without any checkpoint (every
# active segment scanned, as on a first start). The page cache is dropped before each start
# when this runs as root, so the figures are cold reads. See docs/benchmarks.md.
#
#   scripts/bench-recovery.sh           10 GB over 100 partitions
#   BENCH_RECOVERY_GB=2 BENCH_RECOVERY_PARTITIONS=20 scripts/bench-recovery.sh
#   KEEL_BENCH_DIR=/mnt/disk scripts/bench-recovery.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LC_ALL=C
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/keel/target}"

gb="${BENCH_RECOVERY_GB:-10}"
partitions="${BENCH_RECOVERY_PARTITIONS:-100}"

scripts/setup.sh
cargo build --workspace --all-targets
rdk="$(KEEL_COMPAT_BUILD_ONLY=1 scripts/compat/librdkafka.sh | tail -n 1)"
make -C "$rdk/examples" rdkafka_performance >"$rdk/keel-perf-build.log" 2>&1
perf="$rdk/examples/rdkafka_performance"
keel="$CARGO_TARGET_DIR/debug/keel"
bench="$CARGO_TARGET_DIR/debug/examples/bench"

base="${KEEL_BENCH_DIR:-${TMPDIR:-/tmp}}"
work="$(mktemp -d "$base/keel-recovery.XXXXXX")"
pid=""
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Starts the broker; sets $took to the seconds from exec to its "keel started" line.
took=""
start() {
  local log="$work/keel.$1.log"
  local t0
  t0="$(date +%s.%N)"
  NO_COLOR=1 RUST_LOG=info "$keel" --override listeners=PLAINTEXT://127.0.0.1:0 \
    --override "log.dirs=$work/data" --override log.flush.offset.checkpoint.interval.ms=1000 \
    "${@:2}" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 6000); do
    if grep -q "keel started" "$log"; then
      took="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"
      return
    fi
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log" >&2; echo "bench-recovery.sh: the broker died" >&2; exit 1; }
    sleep 0.01
  done
  echo "bench-recovery.sh: no 'keel started' within 60 s" >&2
  exit 1
}
bootstrap() {
  sed 's/\x1b\[[0-9;]*m//g' "$work/keel.$1.log" | grep -o 'bound=[^ ]*' | head -n 1 | cut -d= -f2
}
stop() {
  kill -TERM "$pid"
  wait "$pid" || { echo "bench-recovery.sh: unclean exit" >&2; exit 1; }
  pid=""
}
kill9() {
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
}
drop_caches() {
  sync
  if [ "$(id -u)" -eq 0 ]; then echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; fi
}

mkdir -p "$work/data"
start fill
addr="$(bootstrap fill)"
"$bench" create-topic --bootstrap "$addr" --topic big --partitions "$partitions"
messages=$((gb * 1000000000 / 1024))
echo "filling: $messages messages of 1 KiB over $partitions partitions" >&2
"$perf" -P -t big -b "$addr" -s 1024 -c "$messages" -a 1 -X linger.ms=5 -X batch.size=1000000 -q 2>&1 |
  grep 'messages produced' >&2
stop
bytes="$(du -sb "$work/data" | cut -f1)"

drop_caches
start clean
clean="$took"
grep -o 'clean_shutdown=[a-z]*' "$work/keel.clean.log" | head -n 1 >&2
# Let the checkpoint task record the recovery points, then crash.
sleep 3
kill9
drop_caches
start checkpointed
checkpointed="$took"
grep -o 'clean_shutdown=[a-z]*' "$work/keel.checkpointed.log" | head -n 1 >&2
kill9
rm -f "$work/data/recovery-point-offset-checkpoint"
drop_caches
start unchecked
unchecked="$took"
stop

echo
echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, Keel $(git rev-parse --short HEAD 2>/dev/null); data dir on $(df --output=source "$base" | tail -n 1)."
echo
echo "| log directory | start after a clean shutdown | after kill -9, recent checkpoint | after kill -9, no checkpoint |"
echo "|---|---:|---:|---:|"
printf '| %s partitions, %.1f GB on disk | %s s | %s s | %s s |\n' "$partitions" \
  "$(awk -v b="$bytes" 'BEGIN { print b / 1e9 }')" "$clean" "$checkpointed" "$unchecked"

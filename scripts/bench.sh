#!/usr/bin/env bash
# Measures Keel's produce and consume throughput with librdkafka (protocol-tests/examples/bench.rs)
# against one broker on an ephemeral port, next to the disk's own fdatasync bandwidth (dd), and
# prints a Markdown table. See docs/benchmarks.md.
#
# Environment:
#   KEEL_BENCH_DIR        where the broker's data and the dd file go (default: $TMPDIR or /tmp);
#                         it must be on the disk you mean to measure, not a tmpfs.
#   BENCH_MESSAGES_100    messages per run of 100-byte messages  (default 1500000)
#   BENCH_MESSAGES_1024   messages per run of 1 KiB messages     (default 1000000)
# Arguments go to every bench run, e.g. `scripts/bench.sh --partition-fetch-max-bytes 1048576`.
# Exits non-zero if the broker dies, fails to start or stop cleanly, or any run fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LC_ALL=C

# One target dir and one build command line for every script, so RocksDB compiles once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/keel/target}"

scripts/setup.sh
cargo build --workspace --all-targets

keel="$CARGO_TARGET_DIR/debug/keel"
bench="$CARGO_TARGET_DIR/debug/examples/bench"
sizes=(100 1024)
partition_counts=(1 8)
acks_values=(1 -1)
declare -A messages=([100]="${BENCH_MESSAGES_100:-1500000}" [1024]="${BENCH_MESSAGES_1024:-1000000}")

base="${KEEL_BENCH_DIR:-${TMPDIR:-/tmp}}"
mkdir -p "$base"
work="$(mktemp -d "$base/keel-bench.XXXXXX")"
broker_pid=""
bench_pid=""

cleanup() {
  if [ -n "$bench_pid" ]; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
  fi
  if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
    kill -KILL "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "bench.sh: $*" >&2
  if [ -f "$work/keel.log" ]; then
    echo "---- last lines of the broker log ----" >&2
    tail -n 40 "$work/keel.log" >&2
  fi
  exit 1
}

broker_alive() {
  kill -0 "$broker_pid" 2>/dev/null
}

# The value of key=value in a bench line.
field() {
  tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"
}

fstype="$(df --output=fstype "$work" | tail -n 1 | tr -d ' ')"
if [ "$fstype" = tmpfs ]; then
  echo "bench.sh: warning: $work is on tmpfs; fdatasync and acks=-1 figures mean nothing there" >&2
fi

# The disk's sequential write bandwidth with the data forced to the device, as acks=-1 must.
# Three runs, the median counts: a virtual disk's figure varies from one run to the next.
dd_runs=()
for _ in 1 2 3; do
  sync
  dd_out="$(dd if=/dev/zero of="$work/dd.bin" bs=1M count=512 conv=fdatasync 2>&1)"
  rm -f "$work/dd.bin"
  # "536870912 bytes (537 MB, 512 MiB) copied, 1.23 s, 436 MB/s": bytes over seconds, 10^6 B/s.
  mb_s="$(awk '/copied/ {
      bytes = $1
      for (i = 1; i <= NF; i++) if ($i == "s," || $i == "s") secs = $(i - 1)
      if (secs > 0) printf "%.1f", bytes / secs / 1e6
    }' <<<"$dd_out")"
  [ -n "$mb_s" ] || fail "could not read dd's output: $dd_out"
  echo "dd bs=1M count=512 conv=fdatasync in $work: $mb_s MB/s" >&2
  dd_runs+=("$mb_s")
done
dd_mb_s="$(printf '%s\n' "${dd_runs[@]}" | sort -g | sed -n 2p)"

mkdir -p "$work/data"
NO_COLOR=1 RUST_LOG=info "$keel" \
  --override listeners=PLAINTEXT://127.0.0.1:0 \
  --override "log.dirs=$work/data" >"$work/keel.log" 2>&1 &
broker_pid=$!

bootstrap=""
for _ in $(seq 300); do
  bootstrap="$(sed 's/\x1b\[[0-9;]*m//g' "$work/keel.log" | grep 'listener bound' |
    grep -o 'bound=[^ ]*' | head -n 1 | cut -d= -f2 | tr -d '"')" || true
  [ -n "$bootstrap" ] && break
  broker_alive || fail "the broker exited during startup"
  sleep 0.1
done
[ -n "$bootstrap" ] || fail "the broker printed no 'listener bound ... bound=' line within 30 s"
echo "keel listening on $bootstrap (pid $broker_pid)" >&2

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
# The matrix without idempotence, then the idempotent producer (enable.idempotence=true) on the
# acks=-1, 8-partition rows, whose cost against the same rows is reported below.
runs=()
for size in "${sizes[@]}"; do
  for partitions in "${partition_counts[@]}"; do
    for acks in "${acks_values[@]}"; do
      runs+=("$size $acks $partitions false")
    done
  done
done
for size in "${sizes[@]}"; do
  runs+=("$size -1 8 true")
done
rows=()
failed=0
for run in "${runs[@]}"; do
  read -r size acks partitions idempotence <<<"$run"
  {
      count="${messages[$size]}"
      echo "run: size=$size acks=$acks partitions=$partitions idempotence=$idempotence messages=$count" >&2
      # Earlier runs' dirty pages are written back now, not during this run.
      sync
      timeout 600 "$bench" --bootstrap "$bootstrap" --topic-prefix "bench-idem$idempotence" \
        --size "$size" --acks "$acks" --partitions "$partitions" --messages "$count" \
        --idempotence "$idempotence" "$@" \
        >"$work/bench.out" 2>"$work/bench.err" &
      bench_pid=$!
      # librdkafka would retry a vanished broker until its timeouts; notice the death at once.
      while kill -0 "$bench_pid" 2>/dev/null; do
        broker_alive || fail "the broker died during the run size=$size acks=$acks partitions=$partitions"
        sleep 0.2
      done
      status=0
      wait "$bench_pid" || status=$?
      bench_pid=""
      if [ "$status" -eq 0 ]; then
        line="$(cat "$work/bench.out")"
        echo "$line" >&2
        rows+=("$line")
      else
        broker_alive || fail "the broker died during the run size=$size acks=$acks partitions=$partitions"
        echo "bench.sh: run failed (exit $status):" >&2
        tail -n 20 "$work/bench.err" >&2
        rows+=("size=$size acks=$acks partitions=$partitions idempotence=$idempotence messages=$count failed=exit-$status")
        failed=1
      fi
      broker_alive || fail "the broker died after the run size=$size acks=$acks partitions=$partitions"
  }
done

# Clean shutdown: SIGTERM, then exit status 0 within 30 s.
kill -TERM "$broker_pid"
stopped=""
for _ in $(seq 300); do
  if ! broker_alive; then
    stopped=1
    break
  fi
  sleep 0.1
done
[ -n "$stopped" ] || fail "the broker did not exit within 30 s of SIGTERM"
broker_status=0
wait "$broker_pid" || broker_status=$?
broker_pid=""
[ "$broker_status" -eq 0 ] || fail "the broker exited with status $broker_status after SIGTERM"

echo
echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores; data dir on $(df --output=source "$base" | tail -n 1) ($fstype)."
echo "Load average before the runs: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg) (anything else running skews the figures)."
echo
echo "| size (B) | acks | partitions | idempotence | messages | produce msg/s | produce MB/s | p50 ms | p99 ms | consume msg/s | consume MB/s |"
echo "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"
for line in "${rows[@]}"; do
  if [ -n "$(field "$line" failed)" ]; then
    printf '| %s | %s | %s | %s | %s | failed | failed | failed | failed | failed | failed |\n' \
      "$(field "$line" size)" "$(field "$line" acks)" "$(field "$line" partitions)" \
      "$(field "$line" idempotence)" "$(field "$line" messages)"
  else
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
      "$(field "$line" size)" "$(field "$line" acks)" "$(field "$line" partitions)" \
      "$(field "$line" idempotence)" "$(field "$line" messages)" "$(field "$line" produce_msgs_s)" \
      "$(field "$line" produce_mb_s)" "$(field "$line" p50_ms)" "$(field "$line" p99_ms)" \
      "$(field "$line" consume_msgs_s)" "$(field "$line" consume_mb_s)"
  fi
done
echo
echo "Disk, dd bs=1M count=512 conv=fdatasync, median of three: **$dd_mb_s MB/s** (runs: ${dd_runs[*]} MB/s)."
echo
for line in "${rows[@]}"; do
  if [ "$(field "$line" size)" = 1024 ] && [ "$(field "$line" acks)" = -1 ] &&
    [ -z "$(field "$line" failed)" ]; then
    mb_s="$(field "$line" produce_mb_s)"
    ratio="$(awk -v a="$mb_s" -v b="$dd_mb_s" 'BEGIN { printf "%.0f", 100 * a / b }')"
    echo "- acks=-1, 1 KiB, $(field "$line" partitions) partition(s), idempotence=$(field "$line" idempotence): produce $mb_s MB/s = **$ratio %** of dd's fdatasync bandwidth (aim: >= 70 %)."
  fi
done
# The idempotent producer's cost: its produce rate against the same row without it (aim: at
# most 5 % lower).
for size in "${sizes[@]}"; do
  plain="" idem=""
  for line in "${rows[@]}"; do
    [ "$(field "$line" size)" = "$size" ] && [ "$(field "$line" acks)" = -1 ] &&
      [ "$(field "$line" partitions)" = 8 ] && [ -z "$(field "$line" failed)" ] || continue
    if [ "$(field "$line" idempotence)" = true ]; then idem="$(field "$line" produce_msgs_s)"; else plain="$(field "$line" produce_msgs_s)"; fi
  done
  if [ -n "$plain" ] && [ -n "$idem" ]; then
    cost="$(awk -v p="$plain" -v i="$idem" 'BEGIN { printf "%.1f", 100 * (p - i) / p }')"
    echo "- idempotent producer, $size B, acks=-1, 8 partitions: $idem msg/s against $plain msg/s without: **$cost %** slower (aim: <= 5 %)."
  fi
done
for size in "${sizes[@]}"; do
  range="$(for line in "${rows[@]}"; do
    [ "$(field "$line" size)" = "$size" ] && field "$line" consume_mb_s
  done | sort -g | sed -n '1p;$p' | paste -sd'-')" || true
  met="$(for line in "${rows[@]}"; do
    [ "$(field "$line" size)" = "$size" ] && [ "$(field "$line" idempotence)" = false ] && field "$line" consume_mb_s
  done | awk '$1 >= 500 { n++ } END { print n + 0 }')" || true
  echo "- consume, $size-byte messages: ${range:-no successful run} MB/s (lowest-highest); $met of $(( ${#partition_counts[@]} * ${#acks_values[@]} )) runs reach the aim of >= 500 MB/s."
done
echo
echo "Raw lines:"
echo
printf '    %s\n' "${rows[@]}"

exit "$failed"

#!/usr/bin/env bash
# Measures what Keel itself costs: produce and consume throughput driven by librdkafka's own
# `rdkafka_performance` (a light C client), with the broker's CPU seconds per GB and peak RSS
# beside every row, the disk's fdatasync bandwidth (dd) and the load average from the same run,
# the idempotent producer against the same rows without it (alternated), produce and
# end-to-end latency at half the peak rate, produce latency with the log cleaner idle and while
# it cleans 1 GB of overwrites on another topic, and the Rust example's per-message latency
# percentiles. Prints Markdown tables. See docs/benchmarks.md.
#
#   scripts/bench.sh            the whole matrix (about 15 minutes)
#   scripts/bench.sh --smoke    a few small runs of every kind, to check the script and the
#                               broker work (scripts/test.sh runs this; its figures mean nothing)
#
# Environment:
#   KEEL_BENCH_DIR        where the broker's data and the dd file go (default: $TMPDIR or /tmp);
#                         it must be on the disk you mean to measure, not a tmpfs.
#   BENCH_MESSAGES_100    messages per throughput run of 100-byte messages  (default 10000000)
#   BENCH_MESSAGES_1024   messages per throughput run of 1 KiB messages     (default 3000000)
# Exits non-zero if the broker dies, fails to start or stop cleanly, or any run fails (a run
# fails when fewer messages than sent are delivered or read back).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LC_ALL=C

smoke=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$ d'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# One target dir and one build command line for every script, so RocksDB compiles once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/keel/target}"

scripts/setup.sh
cargo build --workspace --all-targets

# rdkafka_performance from the librdkafka sources the rdkafka-sys crate vendors, built in the
# tree the compat harness keeps (the library is built there already; the example takes seconds).
rdk="$(KEEL_COMPAT_BUILD_ONLY=1 scripts/compat/librdkafka.sh | tail -n 1)"
[ -d "$rdk/examples" ] || { echo "bench.sh: no librdkafka tree at $rdk" >&2; exit 1; }
make -C "$rdk/examples" rdkafka_performance >"$rdk/keel-perf-build.log" 2>&1 ||
  { tail -n 20 "$rdk/keel-perf-build.log" >&2; echo "bench.sh: building rdkafka_performance failed" >&2; exit 1; }
perf="$rdk/examples/rdkafka_performance"

keel="$CARGO_TARGET_DIR/debug/keel"
bench="$CARGO_TARGET_DIR/debug/examples/bench"
clk_tck="$(getconf CLK_TCK)"

if [ -n "$smoke" ]; then
  sizes=(100 1024); partition_counts=(1 8); acks_values=(0 -1)
  declare -A messages=([100]=200000 [1024]=50000)
  idem_rounds=1; latency_seconds=1; rust_messages_100=20000; rust_messages_1024=5000; dd_count=16
else
  sizes=(100 1024); partition_counts=(1 8 64); acks_values=(0 1 -1)
  declare -A messages=([100]="${BENCH_MESSAGES_100:-10000000}" [1024]="${BENCH_MESSAGES_1024:-3000000}")
  idem_rounds=3; latency_seconds=5; rust_messages_100=1000000; rust_messages_1024=300000; dd_count=512
fi

base="${KEEL_BENCH_DIR:-${TMPDIR:-/tmp}}"
mkdir -p "$base"
work="$(mktemp -d "$base/keel-bench.XXXXXX")"
broker_pid=""
client_pids=()

cleanup() {
  for pid in "${client_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
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

broker_alive() { kill -0 "$broker_pid" 2>/dev/null; }

# The broker's CPU time so far (user + system), in clock ticks, from /proc/<pid>/stat.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$broker_pid/stat"; }
# Resets the broker's peak RSS (VmHWM) so the next reading is the peak of one run.
reset_peak_rss() { echo 5 >"/proc/$broker_pid/clear_refs"; }
peak_rss_mb() { awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$broker_pid/status"; }
rss_mb() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$broker_pid/status"; }
# CPU seconds per GB of payload: ticks over bytes.
per_gb() { awk -v t="$1" -v hz="$clk_tck" -v b="$2" 'BEGIN { printf "%.2f", t / hz / (b / 1e9) }'; }

# Runs a client in the background and waits for it, failing at once if the broker dies (a
# librdkafka client would retry a vanished broker until its own timeouts).
run_client() {
  local what="$1"; shift
  timeout 600 "$@" &
  local pid=$!
  client_pids=("$pid")
  while kill -0 "$pid" 2>/dev/null; do
    broker_alive || fail "the broker died during $what"
    sleep 0.1
  done
  local status=0
  wait "$pid" || status=$?
  client_pids=()
  broker_alive || fail "the broker died during $what"
  [ "$status" -eq 0 ] || fail "$what failed (exit $status)"
}

create_topic() { run_client "creating $1" "$bench" create-topic --bootstrap "$bootstrap" --topic "$1" --partitions "$2"; }
delete_topic() { run_client "deleting $1" "$bench" delete-topic --bootstrap "$bootstrap" --topic "$1"; }
partition_flags() { local p; for ((p = 0; p < $1; p++)); do printf -- '-p %d ' "$p"; done; }

# rdkafka_performance's producer settings for every run: librdkafka's defaults except a fixed
# linger and large batches (rdkafka_performance itself would linger for 1000 ms).
producer_conf=(-X linger.ms=5 -X batch.size=1000000 -X compression.type=none)

fstype="$(df --output=fstype "$work" | tail -n 1 | tr -d ' ')"
if [ "$fstype" = tmpfs ]; then
  echo "bench.sh: warning: $work is on tmpfs; fdatasync and acks=-1 figures mean nothing there" >&2
fi

# The disk's sequential write bandwidth with the data forced to the device, as acks=-1 must.
# Three runs, the median counts: a virtual disk's figure varies from one run to the next.
dd_runs=()
for _ in 1 2 3; do
  sync
  dd_out="$(dd if=/dev/zero of="$work/dd.bin" bs=1M count="$dd_count" conv=fdatasync 2>&1)"
  rm -f "$work/dd.bin"
  # "536870912 bytes (537 MB, 512 MiB) copied, 1.23 s, 436 MB/s": bytes over seconds, 10^6 B/s.
  mb_s="$(awk '/copied/ {
      bytes = $1
      for (i = 1; i <= NF; i++) if ($i == "s," || $i == "s") secs = $(i - 1)
      if (secs > 0) printf "%.1f", bytes / secs / 1e6
    }' <<<"$dd_out")"
  [ -n "$mb_s" ] || fail "could not read dd's output: $dd_out"
  echo "dd bs=1M count=$dd_count conv=fdatasync in $work: $mb_s MB/s" >&2
  dd_runs+=("$mb_s")
done
dd_mb_s="$(printf '%s\n' "${dd_runs[@]}" | sort -g | sed -n 2p)"

mkdir -p "$work/data"
NO_COLOR=1 RUST_LOG=info "$keel" \
  --override listeners=PLAINTEXT://127.0.0.1:0 \
  --override log.cleaner.backoff.ms=1000 \
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
sleep 1
idle_rss="$(rss_mb)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
run_no=0

# One throughput run: a fresh topic, rdkafka_performance producing COUNT messages, then reading
# them all back from the beginning; the broker's CPU and peak RSS around each half. Appends a
# `key=value` line to $rows_file.
throughput_run() {
  local size="$1" acks="$2" partitions="$3" idempotence="$4" count="$5" rows_file="$6"
  run_no=$((run_no + 1))
  local topic="perf-$run_no-${size}b-${partitions}p" bytes=$((size * count))
  echo "run $run_no: size=$size acks=$acks partitions=$partitions idempotence=$idempotence messages=$count" >&2
  create_topic "$topic" "$partitions"
  # Earlier runs' dirty pages are written back now, not during this run.
  sync
  local t0 t1 t2 rss_in rss_out
  reset_peak_rss
  t0="$(cpu_ticks)"
  run_client "producing ($topic)" "$perf" -P -t "$topic" -b "$bootstrap" -s "$size" -c "$count" \
    -a "$acks" "${producer_conf[@]}" -X "enable.idempotence=$idempotence" -q \
    >"$work/produce.out" 2>"$work/produce.err"
  t1="$(cpu_ticks)"
  rss_in="$(peak_rss_mb)"
  reset_peak_rss
  # shellcheck disable=SC2046
  run_client "consuming ($topic)" "$perf" -C -t "$topic" -b "$bootstrap" $(partition_flags "$partitions") \
    -o beginning -c "$count" -q >"$work/consume.out" 2>"$work/consume.err"
  t2="$(cpu_ticks)"
  rss_out="$(peak_rss_mb)"
  delete_topic "$topic"

  # "% 2000000 messages produced (200000000 bytes), 2000000 delivered (offset 1999999, 0 failed)
  #  in 1271ms: 1573259 msgs/s and 157.33 MB/s, ..."
  local p c
  # (|| true: without a summary the checks below say so, instead of set -e ending the script.)
  p="$(grep 'messages produced' "$work/produce.out" | tail -n 1 || true)"
  c="$(grep 'consumed in' "$work/consume.out" | tail -n 1 || true)"
  [ -n "$p" ] || fail "no summary from the producer of $topic: $(tail -n 5 "$work/produce.out" "$work/produce.err")"
  [ -n "$c" ] || fail "no summary from the consumer of $topic: $(tail -n 5 "$work/consume.out" "$work/consume.err")"
  local delivered failed consumed
  delivered="$(sed -E 's/.*, ([0-9]+) delivered.*/\1/' <<<"$p")"
  failed="$(sed -E 's/.*, ([0-9]+) failed\).*/\1/' <<<"$p")"
  consumed="$(sed -E 's/^% ([0-9]+) messages \(([0-9]+) bytes\) consumed.*/\1 \2/' <<<"$c")"
  [ "$delivered" = "$count" ] && [ "$failed" = 0 ] ||
    fail "$topic: $delivered of $count messages delivered, $failed failed: $p"
  [ "$consumed" = "$count $bytes" ] || fail "$topic: read back '$consumed' (messages bytes), produced $count $bytes: $c"
  local p_msgs p_mb c_msgs c_mb
  p_msgs="$(sed -E 's/.*: ([0-9]+) msgs\/s and.*/\1/' <<<"$p")"
  p_mb="$(sed -E 's/.*msgs\/s and ([0-9.]+) MB\/s.*/\1/' <<<"$p")"
  c_msgs="$(sed -E 's/.*: ([0-9]+) msgs\/s \(.*/\1/' <<<"$c")"
  c_mb="$(sed -E 's/.*msgs\/s \(([0-9.]+) MB\/s\).*/\1/' <<<"$c")"
  local line="size=$size acks=$acks partitions=$partitions idempotence=$idempotence messages=$count"
  line+=" produce_msgs_s=$p_msgs produce_mb_s=$p_mb cpu_in=$(per_gb $((t1 - t0)) "$bytes") rss_in=$rss_in"
  line+=" consume_msgs_s=$c_msgs consume_mb_s=$c_mb cpu_out=$(per_gb $((t2 - t1)) "$bytes") rss_out=$rss_out"
  echo "$line" >&2
  echo "$line" >>"$rows_file"
}

# The value of key=value in a row.
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

: >"$work/matrix"
for size in "${sizes[@]}"; do
  for partitions in "${partition_counts[@]}"; do
    for acks in "${acks_values[@]}"; do
      throughput_run "$size" "$acks" "$partitions" false "${messages[$size]}" "$work/matrix"
    done
  done
done

# The idempotent producer's cost: the acks=-1, 8-partition rows with and without
# enable.idempotence, alternated so that neither side always runs on a fuller disk and page cache.
: >"$work/idempotence"
for size in "${sizes[@]}"; do
  for ((round = 1; round <= idem_rounds; round++)); do
    for idempotence in false true; do
      throughput_run "$size" -1 8 "$idempotence" "${messages[$size]}" "$work/idempotence"
    done
  done
done

# Latency at half the peak rate: rdkafka_performance's producer with -l stamps each payload
# with the send time and records each delivery report's delay (-A writes one figure per message,
# in microseconds); a consumer started first records each message's delay from send to receipt
# (end to end). One partition, acks 1 and -1.
percentiles() {  # FILE -> "p50 p99 max" in ms
  sort -n "$1" | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "none none none"; exit }
    i50 = int(NR * 0.50 + 0.999999); i99 = int(NR * 0.99 + 0.999999)
    printf "%.2f %.2f %.2f", v[i50] / 1000, v[i99] / 1000, v[NR] / 1000 }'
}
: >"$work/latency"
for size in "${sizes[@]}"; do
  for acks in 1 -1; do
    # The matrix's one-partition produce rate for this size and acks.
    peak="$(awk -v size="$size" -v acks="$acks" '
      { delete f; for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
      f["size"] == size && f["acks"] == acks && f["partitions"] == 1 { print f["produce_msgs_s"]; exit }
    ' "$work/matrix")"
    [ -n "$peak" ] || peak=$((${messages[$size]} / 5))
    rate=$((peak / 2))
    count=$((rate * latency_seconds))
    run_no=$((run_no + 1))
    topic="latency-$run_no-${size}b"
    echo "latency run $run_no: size=$size acks=$acks rate=$rate msg/s messages=$count" >&2
    create_topic "$topic" 1
    sync
    rm -f "$work/lat_produce" "$work/lat_e2e"
    timeout 600 "$perf" -C -t "$topic" -b "$bootstrap" -p 0 -o beginning -c "$count" -l \
      -A "$work/lat_e2e" -q >"$work/lat_consume.out" 2>&1 &
    consumer_pid=$!
    sleep 2
    run_client "latency producer ($topic)" "$perf" -P -t "$topic" -b "$bootstrap" -s "$size" \
      -c "$count" -a "$acks" -r "$rate" -l -A "$work/lat_produce" "${producer_conf[@]}" -q \
      >"$work/lat_produce.out" 2>&1
    status=0
    wait "$consumer_pid" || status=$?
    [ "$status" -eq 0 ] || fail "the latency consumer of $topic failed (exit $status)"
    delete_topic "$topic"
    [ "$(wc -l <"$work/lat_produce")" = "$count" ] ||
      fail "$topic: $(wc -l <"$work/lat_produce") produce latencies for $count messages"
    [ "$(wc -l <"$work/lat_e2e")" = "$count" ] ||
      fail "$topic: $(wc -l <"$work/lat_e2e") end-to-end latencies for $count messages"
    read -r p50 p99 pmax <<<"$(percentiles "$work/lat_produce")"
    read -r e50 e99 emax <<<"$(percentiles "$work/lat_e2e")"
    line="size=$size acks=$acks rate=$rate messages=$count p50=$p50 p99=$p99 max=$pmax e2e_p50=$e50 e2e_p99=$e99 e2e_max=$emax"
    echo "$line" >&2
    echo "$line" >>"$work/latency"
  done
done

# The cleaner beside ingestion (issue 11): produce latency on one topic (1 KiB, acks=-1, one
# partition, at half the matrix's peak rate for that row) with the cleaner idle, then while it
# works through CLEANER_MB of overwrites of four keys on another topic, written with
# cleanup.policy=delete and switched to compact when the measured run starts. The cleaner's own
# report ("cleaned log ... seconds=") says how long its round took and how much it read.
cleaner_mb=1024; cleaner_latency_seconds=5
[ -n "$smoke" ] && { cleaner_mb=16; cleaner_latency_seconds=2; }
: >"$work/cleaner"
peak="$(awk '
  { delete f; for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
  f["size"] == 1024 && f["acks"] == -1 && f["partitions"] == 1 { print f["produce_msgs_s"]; exit }
' "$work/matrix")"
[ -n "$peak" ] || peak=20000
rate=$((peak / 2)); count=$((rate * cleaner_latency_seconds))
# The first report of a cleaning round of overwrites-0 after the MARKth "cleaned log" line.
cleaner_report() {
  sed 's/\x1b\[[0-9;]*m//g' "$work/keel.log" | grep 'cleaned log' | tail -n +$(($1 + 1)) |
    grep 'partition=overwrites-0' | head -n 1 || true
}
run_client "creating overwrites" "$bench" create-topic --bootstrap "$bootstrap" --topic overwrites \
  --partitions 1 --config cleanup.policy=delete --config segment.bytes=67108864
per_key=$((cleaner_mb * 1024 / 4))
for key in a b c d; do
  run_client "writing overwrites of $key" "$perf" -P -t overwrites -b "$bootstrap" -p 0 -s 1024 \
    -c "$per_key" -k "key-$key" -a 1 "${producer_conf[@]}" -q >"$work/overwrites.out" 2>&1
done
# A last record in a segment of its own, so that every overwrite lies in a sealed segment.
run_client "rolling overwrites" "$bench" alter-topic --bootstrap "$bootstrap" --topic overwrites \
  --config cleanup.policy=delete --config segment.ms=1
sleep 1
run_client "closing overwrites" "$perf" -P -t overwrites -b "$bootstrap" -p 0 -s 16 -c 1 -k last \
  -a -1 "${producer_conf[@]}" -q >"$work/overwrites.out" 2>&1
run_client "settling overwrites" "$bench" alter-topic --bootstrap "$bootstrap" --topic overwrites \
  --config cleanup.policy=delete --config segment.bytes=67108864
sync
for state in idle cleaning; do
  topic="cleaner-latency-$state"
  create_topic "$topic" 1
  rm -f "$work/lat_produce"
  mark="$(grep -c 'cleaned log' "$work/keel.log" || true)"
  if [ "$state" = cleaning ]; then
    run_client "switching overwrites to compact" "$bench" alter-topic --bootstrap "$bootstrap" \
      --topic overwrites --config cleanup.policy=compact --config segment.bytes=67108864
  fi
  t0="$(cpu_ticks)"
  run_client "latency producer ($topic)" "$perf" -P -t "$topic" -b "$bootstrap" -p 0 -s 1024 \
    -c "$count" -a -1 -r "$rate" -l -A "$work/lat_produce" "${producer_conf[@]}" -q \
    >"$work/lat_produce.out" 2>&1
  t1="$(cpu_ticks)"
  delete_topic "$topic"
  [ "$(wc -l <"$work/lat_produce")" = "$count" ] ||
    fail "$topic: $(wc -l <"$work/lat_produce") produce latencies for $count messages"
  read -r p50 p99 pmax <<<"$(percentiles "$work/lat_produce")"
  cleaned="$(cleaner_report "$mark")"
  if [ "$state" = cleaning ] && [ -z "$cleaned" ]; then
    # The round outlasted the measured run: wait for it, so its duration is reported.
    for _ in $(seq 600); do
      cleaned="$(cleaner_report "$mark")"
      [ -n "$cleaned" ] && break
      sleep 1
    done
  fi
  secs="$(grep -o 'seconds=[0-9.]*' <<<"$cleaned" | cut -d= -f2 || true)"
  [ -n "$secs" ] && secs="$(awk -v s="$secs" 'BEGIN { printf "%.2f", s }')"
  read_bytes="$(grep -o 'bytes_read=[0-9]*' <<<"$cleaned" | cut -d= -f2 || true)"
  line="state=$state rate=$rate messages=$count p50=$p50 p99=$p99 max=$pmax cpu_s=$(awk -v t=$((t1 - t0)) -v hz="$clk_tck" 'BEGIN { printf "%.1f", t / hz }') cleaner_s=${secs:-none} cleaner_read_mb=$(awk -v b="${read_bytes:-0}" 'BEGIN { printf "%.0f", b / 1e6 }')"
  echo "$line" >&2
  echo "$line" >>"$work/cleaner"
done
delete_topic overwrites

# The Rust example (rdkafka FutureProducer, one future per message, 16 MiB in flight): the
# latency a heavier client sees at its own full speed, one partition.
: >"$work/rust"
for size in "${sizes[@]}"; do
  for acks in 1 -1; do
    count="$rust_messages_100"
    [ "$size" = 1024 ] && count="$rust_messages_1024"
    echo "rust example: size=$size acks=$acks messages=$count" >&2
    sync
    run_client "the Rust example (size=$size acks=$acks)" "$bench" --bootstrap "$bootstrap" \
      --topic-prefix rust --size "$size" --acks "$acks" --partitions 1 --messages "$count" \
      >"$work/rust.out" 2>"$work/rust.err"
    cat "$work/rust.out" >&2
    cat "$work/rust.out" >>"$work/rust"
  done
done

end_rss="$(rss_mb)"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# Clean shutdown: SIGTERM, then exit status 0 within 30 s.
kill -TERM "$broker_pid"
stopped=""
for _ in $(seq 300); do
  if ! broker_alive; then stopped=1; break; fi
  sleep 0.1
done
[ -n "$stopped" ] || fail "the broker did not exit within 30 s of SIGTERM"
broker_status=0
wait "$broker_pid" || broker_status=$?
broker_pid=""
[ "$broker_status" -eq 0 ] || fail "the broker exited with status $broker_status after SIGTERM"

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || commit="$commit (with uncommitted changes)"
echo
[ -n "$smoke" ] && echo "**Smoke run: tiny message counts; these figures mean nothing.**" && echo
echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, Keel $commit; data dir on $(df --output=source "$base" | tail -n 1) ($fstype)."
echo "Load average before the runs: $load_before; after: $load_after (anything else running skews the figures)."
echo "Disk, dd bs=1M count=$dd_count conv=fdatasync, median of three: **$dd_mb_s MB/s** (runs: ${dd_runs[*]} MB/s)."
echo "Broker RSS: $idle_rss MB idle after start, $end_rss MB after the runs (their topics deleted)."
echo
echo "Throughput (rdkafka_performance; CPU = the broker's user+system seconds per GB of payload; RSS = the broker's peak during the produce / consume half):"
echo
print_throughput() {
  echo "| size (B) | acks | partitions | idempotence | messages | produce msg/s | produce MB/s | CPU s/GB in | RSS MB | consume msg/s | consume MB/s | CPU s/GB out | RSS MB |"
  echo "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  while read -r row; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
      "$(field "$row" size)" "$(field "$row" acks)" "$(field "$row" partitions)" \
      "$(field "$row" idempotence)" "$(field "$row" messages)" "$(field "$row" produce_msgs_s)" \
      "$(field "$row" produce_mb_s)" "$(field "$row" cpu_in)" "$(field "$row" rss_in)" \
      "$(field "$row" consume_msgs_s)" "$(field "$row" consume_mb_s)" "$(field "$row" cpu_out)" \
      "$(field "$row" rss_out)"
  done <"$1"
}
print_throughput "$work/matrix"
echo
while read -r row; do
  if [ "$(field "$row" size)" = 1024 ] && [ "$(field "$row" acks)" = -1 ]; then
    mb_s="$(field "$row" produce_mb_s)"
    echo "- acks=-1, 1 KiB, $(field "$row" partitions) partition(s): produce $mb_s MB/s = **$(awk -v a="$mb_s" -v b="$dd_mb_s" 'BEGIN { printf "%.0f", 100 * a / b }') %** of dd's fdatasync figure."
  fi
done <"$work/matrix"
echo
echo "The idempotent producer (acks=-1, 8 partitions), alternated with the same run without it:"
echo
print_throughput "$work/idempotence"
echo
for size in "${sizes[@]}"; do
  awk -v size="$size" '
    { delete f; for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
    f["size"] == size { k = f["idempotence"]; n[k]++; msgs[k] += f["produce_msgs_s"]; cpu[k] += f["cpu_in"] }
    END {
      if (n["false"] && n["true"]) {
        a = msgs["false"] / n["false"]; b = msgs["true"] / n["true"]
        printf "- %s B: %.0f msg/s with idempotence against %.0f without (mean of %d runs each): **%.1f %%** %s (aim: at most 5 %% slower); broker CPU %.2f against %.2f s/GB in.\n", \
          size, b, a, n["true"], (a > b ? 100 * (a - b) / a : 100 * (b - a) / a), (a > b ? "slower" : "faster"), \
          cpu["true"] / n["true"], cpu["false"] / n["false"]
      }
    }' "$work/idempotence"
done
echo
echo "Latency at half the peak rate (rdkafka_performance -l, one partition; produce = send to delivery report, end to end = send to receipt by a consumer):"
echo
echo "| size (B) | acks | rate msg/s | messages | produce p50 ms | p99 ms | max ms | end-to-end p50 ms | p99 ms | max ms |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
while read -r row; do
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
    "$(field "$row" size)" "$(field "$row" acks)" "$(field "$row" rate)" "$(field "$row" messages)" \
    "$(field "$row" p50)" "$(field "$row" p99)" "$(field "$row" max)" \
    "$(field "$row" e2e_p50)" "$(field "$row" e2e_p99)" "$(field "$row" e2e_max)"
done <"$work/latency"
echo
echo "Produce latency beside the log cleaner (1 KiB, acks=-1, one partition, rdkafka_performance -l; \"cleaning\": while the cleaner works through ${cleaner_mb} MB of overwrites on another topic; CPU = the broker's seconds during the run):"
echo
echo "| cleaner | rate msg/s | messages | p50 ms | p99 ms | max ms | broker CPU s | cleaner round s | cleaner read MB |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
while read -r row; do
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
    "$(field "$row" state)" "$(field "$row" rate)" "$(field "$row" messages)" "$(field "$row" p50)" \
    "$(field "$row" p99)" "$(field "$row" max)" "$(field "$row" cpu_s)" "$(field "$row" cleaner_s)" \
    "$(field "$row" cleaner_read_mb)"
done <"$work/cleaner"
awk '
  { delete f; for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } p99[f["state"]] = f["p99"] }
  END { if (p99["idle"] > 0) printf "\n- p99 while cleaning: **%.2fx** the idle run'"'"'s (aim: at most 1.5x).\n", p99["cleaning"] / p99["idle"] }
' "$work/cleaner"
echo
echo "The Rust example (protocol-tests/examples/bench.rs: a FutureProducer, one future per message, 16 MiB in flight, one partition):"
echo
echo "| size (B) | acks | messages | produce msg/s | produce MB/s | p50 ms | p99 ms | consume msg/s | consume MB/s |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
while read -r row; do
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
    "$(field "$row" size)" "$(field "$row" acks)" "$(field "$row" messages)" \
    "$(field "$row" produce_msgs_s)" "$(field "$row" produce_mb_s)" "$(field "$row" p50_ms)" \
    "$(field "$row" p99_ms)" "$(field "$row" consume_msgs_s)" "$(field "$row" consume_mb_s)"
done <"$work/rust"
echo
echo "Raw lines:"
echo
cat "$work/matrix" "$work/idempotence" "$work/latency" "$work/rust" | sed 's/^/    /'

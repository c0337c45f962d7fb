#!/usr/bin/env bash
# Measures what Keel costs in a unit the machine's noise cannot move: the broker's own
# instructions (valgrind's callgrind, event Ir) per message and per byte for a fixed workload,
# driven by librdkafka's `rdkafka_performance` against one broker on one 1-partition topic:
#   produce N messages of 1024 bytes (acks=-1), consume them from the beginning,
#   produce N messages of 100 bytes (acks=-1), consume them from the beginning,
# plus two idle phases (no client) that give the broker's background cost (timers) per second.
# Record its table before and after a change: wall-clock throughput moves with the load of the
# machine, these counts move only when the code (or the workload) does. Prints a Markdown table.
#
#   scripts/bench-instructions.sh     about a minute with the defaults (callgrind runs the
#                                     broker some 50x slower than natively; more messages or
#                                     rounds take proportionally longer)
#
# It builds nothing and never runs cargo: it measures the binary that is there (a copy of it, as
# the target dir is shared and another build may replace the file mid-run). Build it first
# (cargo build --workspace --all-targets). It uses the Rust example `bench` only to create the
# topics, and installs valgrind with apt-get when it is missing.
#
# Environment:
#   KEEL_BIN                  the broker to measure (default: $CARGO_TARGET_DIR/debug/keel)
#   CARGO_TARGET_DIR          default: $HOME/.cache/keel/target
#   KEEL_BENCH_EXAMPLE        the Rust example that creates topics
#                             (default: $CARGO_TARGET_DIR/debug/examples/bench)
#   KEEL_RDKAFKA_DIR          a built librdkafka tree to take rdkafka_performance from (default:
#                             the one scripts/compat/librdkafka.sh keeps, found as bench.sh does;
#                             that step runs `cargo metadata`, which builds nothing)
#   BENCH_INSTR_MESSAGES      messages per phase (default 20000)
#   BENCH_INSTR_ROUNDS        rounds of the four phases (default 3); the median round is shown
#   BENCH_INSTR_IDLE_SECONDS  length of each idle phase (default 10)
#   BENCH_INSTR_TIMEOUT       seconds one phase may take before the run fails (default 1800)
#   BENCH_INSTR_KEEP          a directory to copy each phase's callgrind dump (and the broker's log)
#                             into, to see where the instructions went: callgrind_annotate FILE
#   KEEL_BENCH_DIR            where the broker's data and callgrind's files go (default: $TMPDIR
#                             or /tmp); the disk does not matter here, kernel work is not counted
#
# What is counted: every instruction the broker process executes in user space, on all its
# threads, from just before a phase's client starts to just after it exits: request handling,
# but also the broker's idle background work (timers) for the phase's wall time, which under
# callgrind is ~50x what it would be natively. So the table gives the measured idle rate, the
# share of each phase it accounts for, and the per-message and per-byte figures net of it.
# Not counted: the kernel (syscalls, page cache, fsync) and the client. Each phase also carries
# its connection setup (ApiVersions, Metadata) and, for consume, a trailing long-poll fetch or
# two; both are fixed costs, spread over N messages. The producer keeps rdkafka_performance's
# linger.ms=1000, so batches are cut by size (batch.size=1000000, batch.num.messages=10000),
# not by timing: the number of produce requests does not depend on how fast the broker runs.
# What still moves from run to run is how a request's bytes arrive: the broker reads a frame into
# a buffer grown 64 KiB at a time (read_frame in broker/src/server/connection.rs), and whether
# realloc then copies what was read so far depends on timing and the heap's history. That is a
# few percent on produce (up to one extra copy of the payload), hence several rounds, the median
# round in the table and the range beside it: compare medians, and distrust a change smaller
# than the range.
#
# Exits non-zero if valgrind or the broker fails to start, the broker dies or does not stop
# cleanly on SIGTERM, a phase times out, or a phase moves fewer messages or bytes than N.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LC_ALL=C
started_at=$SECONDS

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$ d'; exit 0 ;;
    *) echo "bench-instructions.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/keel/target}"
keel_src="${KEEL_BIN:-$CARGO_TARGET_DIR/debug/keel}"
bench_src="${KEEL_BENCH_EXAMPLE:-$CARGO_TARGET_DIR/debug/examples/bench}"
messages="${BENCH_INSTR_MESSAGES:-20000}"
idle_seconds="${BENCH_INSTR_IDLE_SECONDS:-10}"
rounds="${BENCH_INSTR_ROUNDS:-3}"
phase_timeout="${BENCH_INSTR_TIMEOUT:-1800}"
keep="${BENCH_INSTR_KEEP:-}"

die() { echo "bench-instructions.sh: $*" >&2; exit 1; }
[[ "$messages" =~ ^[1-9][0-9]*$ ]] || die "BENCH_INSTR_MESSAGES must be a positive integer, not '$messages'"
[[ "$idle_seconds" =~ ^[1-9][0-9]*$ ]] || die "BENCH_INSTR_IDLE_SECONDS must be a positive integer, not '$idle_seconds'"
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "BENCH_INSTR_ROUNDS must be a positive integer, not '$rounds'"
[[ "$phase_timeout" =~ ^[1-9][0-9]*$ ]] || die "BENCH_INSTR_TIMEOUT must be a positive integer, not '$phase_timeout'"
[ -x "$keel_src" ] ||
  die "no broker binary at $keel_src: build it first (cargo build --workspace --all-targets) or set KEEL_BIN; this script builds nothing"
[ -x "$bench_src" ] ||
  die "no Rust example at $bench_src (it creates the topics): build it first (cargo build --workspace --all-targets) or set KEEL_BENCH_EXAMPLE"

# valgrind brings callgrind_control and vgdb, which it drives the running broker with.
if ! command -v valgrind >/dev/null 2>&1 || ! command -v callgrind_control >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind
fi

# rdkafka_performance from the librdkafka tree the compat harness keeps, as bench.sh finds it.
if [ -n "${KEEL_RDKAFKA_DIR:-}" ]; then
  rdk="$KEEL_RDKAFKA_DIR"
else
  rdk="$(KEEL_COMPAT_BUILD_ONLY=1 scripts/compat/librdkafka.sh | tail -n 1)"
fi
[ -d "$rdk/examples" ] || die "no librdkafka tree at $rdk"
perf="$rdk/examples/rdkafka_performance"
if [ ! -x "$perf" ]; then
  make -C "$rdk/examples" rdkafka_performance >"$rdk/keel-perf-build.log" 2>&1 ||
    { tail -n 20 "$rdk/keel-perf-build.log" >&2; die "building rdkafka_performance failed"; }
fi

base="${KEEL_BENCH_DIR:-${TMPDIR:-/tmp}}"
mkdir -p "$base"
work="$(mktemp -d "$base/keel-bench-instr.XXXXXX")"
broker_pid=""
client_pid=""
# vgdb (behind callgrind_control) finds the broker through FIFOs in $TMPDIR; valgrind and it must
# agree on that directory, so the broker gets the same TMPDIR as this script.
vgdb_dir="${TMPDIR:-/tmp}"

cleanup() {
  if [ -n "$client_pid" ]; then kill -TERM "$client_pid" 2>/dev/null || true; fi
  if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
    kill -KILL "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    # A killed valgrind leaves its vgdb FIFOs behind.
    rm -f "$vgdb_dir"/vgdb-pipe-*-"$broker_pid"-by-* 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "bench-instructions.sh: $*" >&2
  if [ -f "$work/keel.log" ]; then
    echo "---- last lines of the broker log ----" >&2
    tail -n 40 "$work/keel.log" >&2
  fi
  exit 1
}

# Copies: the shared target dir may be rebuilt while this runs.
cp "$keel_src" "$work/keel"
cp "$bench_src" "$work/bench"
keel_built="$(date -u -r "$keel_src" '+%Y-%m-%d %H:%M UTC')"
keel_sum="$(sha256sum "$work/keel" | cut -c1-12)"
mkdir -p "$work/data" "$work/callgrind"
if [ -n "$keep" ]; then mkdir -p "$keep"; fi

# Instrumentation off until a phase starts (--instr-atstart=no): startup and topic creation run
# uninstrumented, and `callgrind_control --instr=on` turns counting on. (--collect-atstart=no
# would not do: nothing callgrind_control sends turns collection back on, every dump reads 0.)
# env -i: Keel reads KAFKA_* variables as configuration; hand it none of ours.
env -i PATH="$PATH" HOME="$HOME" TMPDIR="$vgdb_dir" NO_COLOR=1 RUST_LOG=info \
  valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$work/callgrind/callgrind.out" \
  "$work/keel" \
  --override listeners=PLAINTEXT://127.0.0.1:0 \
  --override "log.dirs=$work/data" >"$work/keel.log" 2>&1 &
broker_pid=$!
broker_alive() { kill -0 "$broker_pid" 2>/dev/null; }

# Under valgrind the broker starts in seconds, not the usual fraction of one: allow 10 minutes.
bootstrap=""
for _ in $(seq 3000); do
  bootstrap="$(sed 's/\x1b\[[0-9;]*m//g' "$work/keel.log" | grep 'listener bound' |
    grep -o 'bound=[^ ]*' | head -n 1 | cut -d= -f2 | tr -d '"')" || true
  [ -n "$bootstrap" ] && break
  broker_alive || fail "the broker (under valgrind) exited during startup"
  sleep 0.2
done
[ -n "$bootstrap" ] || fail "the broker printed no 'listener bound ... bound=' line within 600 s"
echo "keel under callgrind listening on $bootstrap (pid $broker_pid)" >&2

# callgrind_control ACTION...: sends one command to this broker (never to every callgrind run on
# the machine, which is what it does without a pid). It exits 0 even when it reached nobody, so
# success is its "OK." line.
cg() {
  local out
  out="$(callgrind_control "$@" "$broker_pid" 2>&1)" || fail "callgrind_control $* failed: $out"
  grep -q '^ *OK\.' <<<"$out" || fail "callgrind_control $* got no OK from pid $broker_pid: $out"
}

# run_client WHAT COMMAND...: runs a client in the background, its output in $work/WHAT.out and
# .err, and waits for it, failing at once if the broker dies (a librdkafka client would retry a
# vanished broker until its own timeouts).
run_client() {
  local what="$1"; shift
  timeout "$phase_timeout" "$@" >"$work/$what.out" 2>"$work/$what.err" &
  client_pid=$!
  while kill -0 "$client_pid" 2>/dev/null; do
    broker_alive || fail "the broker died during $what"
    sleep 0.1
  done
  local status=0
  wait "$client_pid" || status=$?
  client_pid=""
  broker_alive || fail "the broker died during $what"
  [ "$status" -ne 124 ] || fail "$what did not finish within $phase_timeout s (BENCH_INSTR_TIMEOUT)"
  [ "$status" -eq 0 ] || fail "$what failed (exit $status): $(tail -n 5 "$work/$what.out" "$work/$what.err")"
}

# measure LABEL COMMAND...: the broker's Ir while COMMAND runs, as "IR SECONDS" in $work/LABEL.ir.
# Counting is switched on and zeroed, the command runs, the counters are dumped (a dump also
# zeroes them) and counting goes off again; the dump file is the one whose trigger names LABEL
# (summed over files, in case callgrind was told to write one per thread).
measure() {
  local label="$1"; shift
  cg --instr=on
  cg --zero
  local t0 t1
  t0="$(date +%s.%N)"
  run_client "$label" "$@"
  t1="$(date +%s.%N)"
  cg --dump="$label"
  cg --instr=off
  local files=() ir=""
  for _ in $(seq 100); do
    mapfile -t files < <(grep -l -x -F "desc: Trigger: dump $label" "$work"/callgrind/callgrind.out* 2>/dev/null || true)
    [ ${#files[@]} -gt 0 ] && break
    sleep 0.1
  done
  [ ${#files[@]} -gt 0 ] || fail "no callgrind dump for $label in $work/callgrind"
  # "summary: N" is what callgrind_annotate reports as PROGRAM TOTALS; "totals:" ends the file.
  ir="$(awk '/^summary:/ { s += $2; n++ } /^totals:/ { t += $2; m++ }
             END { if (n) print s; else if (m) print t }' "${files[@]}")"
  [[ "$ir" =~ ^[0-9]+$ ]] || fail "no summary:/totals: line in the dump for $label (${files[*]})"
  echo "$ir $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" >"$work/$label.ir"
  if [ -n "$keep" ]; then
    local f
    for f in "${files[@]}"; do cp "$f" "$keep/callgrind.$label.${f##*/callgrind.out.}"; done
  fi
  echo "$label: $ir Ir in $(cut -d' ' -f2 "$work/$label.ir") s" >&2
}

# rdkafka_performance's producer settings: its own linger.ms (1000) so batches are cut by size,
# batch.size as bench.sh sets it, and timeouts long enough for a broker under valgrind (a retry
# would resend a batch, count it twice and fail the read-back check).
producer_conf=(-X batch.size=1000000 -X compression.type=none
               -X request.timeout.ms=300000 -X message.timeout.ms=900000)
consumer_conf=(-X socket.timeout.ms=300000)

# "% 20000 messages produced (20480000 bytes), 20000 delivered (offset 19999, 0 failed) in ..."
check_produced() {
  local label="$1" count="$2" p delivered failed
  p="$(grep 'messages produced' "$work/$label.out" | tail -n 1 || true)"
  [ -n "$p" ] || fail "no summary from the producer ($label): $(tail -n 5 "$work/$label.out" "$work/$label.err")"
  delivered="$(sed -E 's/.*, ([0-9]+) delivered.*/\1/' <<<"$p")"
  failed="$(sed -E 's/.*, ([0-9]+) failed\).*/\1/' <<<"$p")"
  [ "$delivered" = "$count" ] && [ "$failed" = 0 ] ||
    fail "$label: $delivered of $count messages delivered, $failed failed: $p"
}
# "% 20000 messages (20480000 bytes) consumed in 83ms: ..."
check_consumed() {
  local label="$1" count="$2" bytes="$3" c consumed
  c="$(grep 'consumed in' "$work/$label.out" | tail -n 1 || true)"
  [ -n "$c" ] || fail "no summary from the consumer ($label): $(tail -n 5 "$work/$label.out" "$work/$label.err")"
  consumed="$(sed -E 's/^% ([0-9]+) messages \(([0-9]+) bytes\) consumed.*/\1 \2/' <<<"$c")"
  [ "$consumed" = "$count $bytes" ] || fail "$label: read back '$consumed' (messages bytes), produced $count $bytes: $c"
}

sizes=(1024 100)
# A fresh topic per size and round, all created before anything is measured.
for ((round = 1; round <= rounds; round++)); do
  for size in "${sizes[@]}"; do
    run_client "create-instr-$size-r$round" "$work/bench" create-topic --bootstrap "$bootstrap" \
      --topic "instr-$size-r$round" --partitions 1
  done
done
# Let the topic creations' aftermath (log lines, metadata) settle outside the idle phase.
sleep 1

measure idle-before sleep "$idle_seconds"
for ((round = 1; round <= rounds; round++)); do
  for size in "${sizes[@]}"; do
    topic="instr-$size-r$round"
    measure "produce-$size-r$round" "$perf" -P -t "$topic" -p 0 -b "$bootstrap" -s "$size" \
      -c "$messages" -a -1 "${producer_conf[@]}" -q
    check_produced "produce-$size-r$round" "$messages"
    measure "consume-$size-r$round" "$perf" -C -t "$topic" -p 0 -b "$bootstrap" -o beginning \
      -c "$messages" "${consumer_conf[@]}" -q
    check_consumed "consume-$size-r$round" "$messages" $((messages * size))
  done
done
measure idle-after sleep "$idle_seconds"

# Clean shutdown: SIGTERM (valgrind passes it on), then exit status 0; valgrind's exit is slow.
kill -TERM "$broker_pid"
stopped=""
for _ in $(seq 1200); do
  if ! broker_alive; then stopped=1; break; fi
  sleep 0.1
done
[ -n "$stopped" ] || fail "the broker did not exit within 120 s of SIGTERM"
broker_status=0
wait "$broker_pid" || broker_status=$?
broker_pid=""
[ "$broker_status" -eq 0 ] || fail "the broker exited with status $broker_status after SIGTERM"
if [ -n "$keep" ]; then cp "$work/keel.log" "$keep/keel.log"; fi

# The idle rate: both idle phases' instructions over their seconds.
read -r idle_b_ir idle_b_s <"$work/idle-before.ir"
read -r idle_a_ir idle_a_s <"$work/idle-after.ir"
idle_rate="$(awk -v a="$idle_b_ir" -v b="$idle_a_ir" -v s="$idle_b_s" -v t="$idle_a_s" \
  'BEGIN { printf "%.0f", (a + b) / (s + t) }')"

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# --no-optional-locks: status must not take the index lock from someone working in this tree.
[ -z "$(git --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null)" ] ||
  commit="$commit (with uncommitted changes)"

echo
echo "Broker instructions (callgrind Ir, user space, all threads), measured $(date -u '+%Y-%m-%d %H:%M UTC');"
echo "tree at $commit; binary $keel_src (built $keel_built, sha256 $keel_sum...), which may have been built from another state of the tree."
echo "rdkafka_performance, 1 partition, acks=-1, batch.size=1000000, linger.ms=1000, no compression; $messages messages per phase;"
echo "$rounds rounds, each on fresh topics: a row is the round with the median figure, the range of all rounds in parentheses."
echo "Idle: $idle_rate Ir/s ($idle_b_ir Ir in $idle_b_s s before, $idle_a_ir Ir in $idle_a_s s after the workload);"
echo "\"idle share\" = that rate times the phase's wall time; per message and per byte are net of it."
echo
echo "| workload | messages | broker instructions (Ir) | idle share (est.) | instructions per message | instructions per byte | wall s |"
echo "|---|---:|---:|---:|---:|---:|---:|"
# One row per workload: the round with the median net figure, and the rounds' range beside it.
row() {  # KIND SIZE DESCRIPTION
  local r ir secs
  for ((r = 1; r <= rounds; r++)); do
    read -r ir secs <"$work/$1-$2-r$r.ir"
    echo "$ir $secs"
  done | awk -v d="$3" -v n="$messages" -v size="$2" -v rate="$idle_rate" '
    { ir[NR] = $1; s[NR] = $2; idle[NR] = rate * $2; net[NR] = ($1 - idle[NR]) / n; order[NR] = NR }
    END {
      for (i = 1; i <= NR; i++) for (j = i + 1; j <= NR; j++)
        if (net[order[j]] < net[order[i]]) { t = order[i]; order[i] = order[j]; order[j] = t }
      m = order[int((NR + 1) / 2)]
      range = NR > 1 ? sprintf(" (%.0f-%.0f)", net[order[1]], net[order[NR]]) : ""
      printf "| %s | %d | %d | %d (%.1f %%) | **%.0f**%s | %.2f | %.1f |\n", d, n, ir[m], idle[m],
        100 * idle[m] / ir[m], net[m], range, net[m] / size, s[m]
    }'
}
for size in "${sizes[@]}"; do
  row produce "$size" "produce ${size} B, acks=-1"
  row consume "$size" "consume ${size} B, from the beginning"
done
echo
echo "Per round, instructions per message net of idle (produce 1024, consume 1024, produce 100, consume 100):"
for ((round = 1; round <= rounds; round++)); do
  line="- round $round:"
  for size in "${sizes[@]}"; do
    for kind in produce consume; do
      read -r ir secs <"$work/$kind-$size-r$round.ir"
      line+=" $(awk -v ir="$ir" -v s="$secs" -v rate="$idle_rate" -v n="$messages" 'BEGIN { printf "%.0f", (ir - rate * s) / n }')"
    done
  done
  echo "$line"
done
echo
echo "Took $((SECONDS - started_at)) s."

#!/usr/bin/env bash
# Runs librdkafka's own integration test suite against Keel.
#
#   scripts/compat/librdkafka.sh                 every test in scripts/compat/librdkafka.allow
#   scripts/compat/librdkafka.sh --quick         the fast subset in scripts/compat/librdkafka.quick
#   scripts/compat/librdkafka.sh --tests 0001,0004
#   scripts/compat/librdkafka.sh --all           every numbered broker test (a survey; failures expected)
#   other options: --timeout SECS (per test, default 1200; 0113 alone takes ~10 min), --results DIR, --no-build (skip cargo),
#                  --suite-quick (pass the test runner's -Q: it skips every sub-test not marked
#                  quick, so many tests then pass having run nothing; for smoke runs only),
#                  --keel-override k=v (an extra broker setting; repeatable),
#                  --idempotent (pass the test runner's -P: every producer gets enable.idempotence=true),
#                  --client-conf k=v (an extra line of test.conf, so a setting of every client the suite
#                  makes; repeatable)
#   Environment: SUBTESTS=<substring> runs only the matching sub-tests; TEST_DEBUG=<contexts>
#   turns on librdkafka debug logs; KEEL_RUST_LOG sets the broker's RUST_LOG (default info).
#
# The suite comes from the librdkafka sources vendored in the rdkafka-sys crate that
# protocol-tests already depends on (cargo downloads it; nothing of it is kept in this
# repository). It is copied and built once under $KEEL_CACHE/librdkafka-tests/<version>/ and
# rebuilt only when the rdkafka-sys version in Cargo.lock changes.
#
# TEST_KAFKA_VERSION (default 4.1.0) is the Kafka version the suite takes the broker for: Keel
# serves Kafka 4.x's API versions (no Produce v0-v2 and no message format v0/v1, KIP-896/KIP-724),
# so the suite must skip its pre-4.0 code paths (0052, 0092), as it does against Apache Kafka 4.
#
# Each test runs alone (`-p1`) against one Keel started on an ephemeral port with a temp data
# dir. One line per test (PASS/FAIL and the time or reason), then `N passed, M failed`; a listed
# test that the suite skipped (it ran nothing) is a FAIL, except with --all or --suite-quick. Every
# test's log is kept in the results dir. Exit status 1 when any test failed.
set -uo pipefail
self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo="$PWD"
compat="$repo/scripts/compat"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/keel/target}"
cache="${KEEL_CACHE:-$HOME/.cache/keel}"

mode=allow
tests_arg=""
timeout_s=1200
results=""
build_keel=1
suite_quick=""
idempotent=""
keel_overrides=()
client_conf=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) mode=quick ;;
    --all) mode=all ;;
    --tests) mode=list; tests_arg="$2"; shift ;;
    --tests=*) mode=list; tests_arg="${1#--tests=}" ;;
    --timeout) timeout_s="$2"; shift ;;
    --results) results="$2"; shift ;;
    --no-build) build_keel=0 ;;
    --suite-quick) suite_quick=1 ;;
    --idempotent) idempotent=1 ;;
    --keel-override) keel_overrides+=(--override "$2"); shift ;;
    --client-conf) client_conf+=("$2"); shift ;;
    -h|--help) sed -n "2,/^set -uo/p" "$self" | sed "$ d"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "[compat] $*" >&2; }
die() { echo "[compat] error: $*" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# System packages: a C toolchain, the compression/TLS headers librdkafka's configure probes, and
# RapidJSON (test 0053 checks the statistics JSON with it and skips itself without it).
# ---------------------------------------------------------------------------------------------
install_packages() {
  local need=() pkg
  for pkg in build-essential perl python3 python3-venv libssl-dev zlib1g-dev libzstd-dev \
             liblz4-dev rapidjson-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  [ ${#need[@]} -eq 0 ] && return
  log "installing ${need[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || {
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
  } || die "apt-get install ${need[*]} failed"
}

# kafka-python backs our kafka-topics.sh stand-in (tests 0052 and 0077 shell out to it).
ensure_python_client() {
  venv="$cache/venv"
  if ! "$venv/bin/python" -c 'import kafka' >/dev/null 2>&1; then
    log "creating $venv with kafka-python"
    rm -rf "$venv"
    python3 -m venv "$venv" && "$venv/bin/pip" install --quiet kafka-python \
      || die "cannot install kafka-python"
  fi
}

# ---------------------------------------------------------------------------------------------
# The librdkafka test runner, built from the rdkafka-sys crate's vendored sources.
# ---------------------------------------------------------------------------------------------
locate_rdkafka_sys() {
  local manifest
  manifest=$(cargo metadata --format-version 1 --manifest-path "$repo/Cargo.toml" 2>/dev/null |
    python3 -c 'import json,sys
d=json.load(sys.stdin)
print(next(p["manifest_path"]+" "+p["version"] for p in d["packages"] if p["name"]=="rdkafka-sys"))') \
    || die "cargo metadata found no rdkafka-sys package"
  rdkafka_sys_dir=$(dirname "${manifest% *}")
  rdkafka_sys_version="${manifest##* }"
  [ -d "$rdkafka_sys_dir/librdkafka/tests" ] || die "$rdkafka_sys_dir/librdkafka/tests missing"
}

# Bump when the build recipe below changes, so cached builds are redone.
build_recipe=2

build_test_runner() {
  locate_rdkafka_sys
  rdk="$cache/librdkafka-tests/$rdkafka_sys_version"
  if [ -x "$rdk/tests/test-runner" ] && [ "$(cat "$rdk/.keel-built" 2>/dev/null)" = "$build_recipe" ]; then
    return
  fi
  log "building librdkafka test runner ($rdkafka_sys_version) in $rdk (a few minutes, once)"
  rm -rf "$rdk"
  mkdir -p "$rdk"
  cp -a "$rdkafka_sys_dir/librdkafka/." "$rdk/"
  chmod -R u+w "$rdk"
  local blog="$rdk/keel-build.log"
  (
    cd "$rdk" &&
      ./configure --disable-gssapi --disable-curl &&
      make -j"$(nproc)" libs &&
      make -C tests -j"$(nproc)" build
  ) >"$blog" 2>&1 || { tail -40 "$blog" >&2; die "librdkafka build failed (log: $blog)"; }
  [ -x "$rdk/tests/test-runner" ] || die "no tests/test-runner after the build (log: $blog)"
  echo "$build_recipe" >"$rdk/.keel-built"
}

if [ "${KEEL_COMPAT_BUILD_ONLY:-}" = 1 ]; then
  install_packages; build_test_runner; echo "$rdk"; exit 0
fi

# ---------------------------------------------------------------------------------------------
# Which tests. An entry is a test number, optionally with a librdkafka scenario:
# `0107:noautocreate` runs the test's noautocreate variants against a Keel with topic
# auto-creation off (librdkafka's tests/scenarios/*.json). A trailing `@consumer` runs it with
# the KIP-848 consumer group protocol (TEST_CONSUMER_GROUP_PROTOCOL=consumer: every consumer
# gets group.protocol=consumer); without it, the protocol is the environment's (classic).
# ---------------------------------------------------------------------------------------------
read_list() {  # a list file: the first word of each line, comments and blank lines skipped
  sed -e 's/#.*//' "$1" | awk 'NF { print $1 }'
}

# Every numbered test that needs a broker: the test table in tests/test.c, without the
# TEST_F_LOCAL entries (broker-less: unit, mock-cluster and _local tests), the mock-cluster
# tests not flagged local, and the manual 8xxx tests.
all_broker_tests() {
  python3 - "$rdk/tests/test.c" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
table = src[src.index("struct test tests[]"):]
table = table[:table.index("{NULL}")]
seen = []
for chunk in table.split("_TEST(")[2:]:
    name, flags = [x.strip() for x in chunk.split(",")[:2]]
    flags = flags.rstrip(")")
    if "TEST_F_LOCAL" in flags or "TEST_F_MANUAL" in flags or "mock" in name:
        continue
    scen = re.search(r'\.scenario\s*=\s*"([^"]*)"', chunk)
    scens = scen.group(1).split(",") if scen else ["default"]
    entry = name[:4] if "default" in scens else name[:4] + ":" + scens[0]
    if entry not in seen:
        seen.append(entry)
print("\n".join(seen))
PY
}

# ---------------------------------------------------------------------------------------------
# Keel
# ---------------------------------------------------------------------------------------------
keel_pid=""
keel_port=""
keel_scenario=""
keel_starts=0
keel_log=""

stop_keel() {
  [ -n "$keel_pid" ] || return 0
  if kill -0 "$keel_pid" 2>/dev/null; then
    kill -TERM "$keel_pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$keel_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$keel_pid" 2>/dev/null
  fi
  wait "$keel_pid" 2>/dev/null
  keel_pid=""
}

# start_keel SCENARIO: a fresh Keel with a fresh data dir, configured like librdkafka's trivup
# scenario of that name (auto-created topics get 4 partitions, as the suite expects).
start_keel() {
  local scenario="$1" extra=()
  keel_starts=$((keel_starts + 1))
  keel_log="$results/keel-$keel_starts.log"
  keel_data="$results/keel-data-$keel_starts"
  mkdir -p "$keel_data"
  case "$scenario" in
    default|ak23) ;;
    noautocreate) extra+=(--override auto.create.topics.enable=false) ;;
    *) die "unknown scenario $scenario" ;;
  esac
  # env -i: Keel reads KAFKA_* variables as configuration; hand it none of ours.
  env -i PATH="$PATH" HOME="$HOME" RUST_LOG="${KEEL_RUST_LOG:-info}" RUST_BACKTRACE=1 \
    "$keel_bin" --override listeners=PLAINTEXT://127.0.0.1:0 --override log.dirs="$keel_data" \
    --override num.partitions=4 "${extra[@]}" "${keel_overrides[@]}" >"$keel_log" 2>&1 &
  keel_pid=$!
  keel_scenario="$scenario"
  for _ in $(seq 1 300); do
    keel_port=$(sed -n 's/.*listener bound.*bound=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$keel_log" | head -1)
    [ -n "$keel_port" ] && break
    kill -0 "$keel_pid" 2>/dev/null || { cat "$keel_log" >&2; die "keel exited at startup"; }
    sleep 0.1
  done
  [ -n "$keel_port" ] || die "keel did not report 'listener bound' within 30s ($keel_log)"
  cat >"$results/test.conf" <<CONF
# Written by scripts/compat/librdkafka.sh for Keel pid $keel_pid ($keel_log).
metadata.broker.list=127.0.0.1:$keel_port
test.timeout.multiplier=${KEEL_COMPAT_TIMEOUT_MULTIPLIER:-2}
CONF
  for line in "${client_conf[@]}"; do echo "$line" >>"$results/test.conf"; done
  log "keel #$keel_starts (scenario $scenario) on 127.0.0.1:$keel_port, log $keel_log"
}

# ---------------------------------------------------------------------------------------------
# One test
# ---------------------------------------------------------------------------------------------
passed=0; failed=0; skipped=0; failed_list=()

# The first failure reason the test runner printed, on one line.
failure_reason() {
  local r
  r=$(sed -e 's/\x1b\[[0-9;]*m//g' "$1" | awk '
      /^### Test .* failed at / { sub(/^### Test "[^"]*" failed at /, ""); sub(/ at [A-Z][a-z][a-z] .*$/, ""); where = $0; getline; print where ": " $0; exit }
      /Test .* timed out/ { print; exit }' | cut -c1-300)
  echo "${r:-see log}"
}

run_one() {
  local entry="$1" num scenario protocol spec out start end secs rc status reason blines
  spec="${entry%@*}"
  protocol="${TEST_CONSUMER_GROUP_PROTOCOL:-classic}"
  [ "$spec" != "$entry" ] && protocol="${entry#*@}"
  num="${spec%%:*}"
  scenario=default; [ "$spec" != "$num" ] && scenario="${spec#*:}"
  local name="${entry//[:@]/-}"
  out="$results/$name.log"

  if [ -z "$keel_pid" ] || [ "$keel_scenario" != "$scenario" ] || ! kill -0 "$keel_pid" 2>/dev/null; then
    stop_keel; start_keel "$scenario"
  fi
  blines=$(wc -l <"$keel_log")

  start=$(date +%s.%N)
  (
    cd "$rdk/tests" &&
      env TESTS="$num" TEST_KAFKA_VERSION="${TEST_KAFKA_VERSION:-4.1.0}" \
        TEST_SCENARIO="$scenario" TEST_CONSUMER_GROUP_PROTOCOL="$protocol" \
        RDKAFKA_TEST_CONF="$results/test.conf" \
        KAFKA_PATH="$compat/kafka" BROKERS="127.0.0.1:$keel_port" \
        TEST_REPORT="$results/$name.json" RDKAFKA_GITVER="$rdkafka_sys_version" \
        LD_LIBRARY_PATH="$rdk/src:$rdk/src-cpp" KEEL_CACHE="$cache" \
        timeout -k 10 "$timeout_s" ./test-runner -L -p1 ${suite_quick:+-Q} ${idempotent:+-P}
    exit $?  # not the last command, so this subshell reports a crash of the runner into $out
  ) >"$out" 2>&1 &
  test_pid=$!
  wait "$test_pid"
  rc=$?
  test_pid=""
  end=$(date +%s.%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  # The broker's log lines written during this test, next to the test's own log.
  tail -n +"$((blines + 1))" "$keel_log" >"$results/$name.keel.log"

  if ! kill -0 "$keel_pid" 2>/dev/null; then
    wait "$keel_pid"; local krc=$?
    status=FAIL; reason="keel died during the test (exit status $krc; $keel_log); restarted"
    keel_pid=""
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    status=FAIL; reason="timed out after ${timeout_s}s"
  elif [ $rc -ne 0 ]; then
    status=FAIL; reason=$(failure_reason "$out")
  # Not grep -q: it stops at the first match, sed then dies of SIGPIPE, and under pipefail the
  # pipeline fails, which would call a passed test skipped.
  elif ! sed -e 's/\x1b\[[0-9;]*m//g' "$out" | grep -aE '^\| [0-9]{4}_[a-z0-9_]* +\| +PASSED' >/dev/null; then
    reason=$(sed -e 's/\x1b\[[0-9;]*m//g' "$out" | grep -aE '^\| [0-9]{4}_' | tr -s ' ' | tr '\n' ';' | cut -c1-200)
    # A listed test that ran nothing proves nothing: it fails the run. Only a survey (--all)
    # and the runner's own quick mode (-Q, which skips sub-tests by design) let it pass.
    if [ "$mode" = all ] || [ -n "$suite_quick" ]; then
      status=SKIP
    else
      status=FAIL; reason="ran nothing (the suite skipped it): $reason"
    fi
  else
    status=PASS; reason=""
  fi
  case "$status" in
    PASS) passed=$((passed + 1)); echo "PASS $entry (${secs}s)" ;;
    SKIP) skipped=$((skipped + 1)); echo "SKIP $entry (${secs}s): $reason" ;;
    FAIL) failed=$((failed + 1)); failed_list+=("$entry")
          echo "FAIL $entry (${secs}s): $reason" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
install_packages
ensure_python_client
build_test_runner

case "$mode" in
  allow) mapfile -t tests < <(read_list "$compat/librdkafka.allow") ;;
  quick) mapfile -t tests < <(read_list "$compat/librdkafka.quick") ;;
  list) IFS=', ' read -r -a tests <<<"$tests_arg" ;;
  all) mapfile -t tests < <(all_broker_tests) ;;
esac
[ ${#tests[@]} -gt 0 ] || die "no tests selected"

if [ "$build_keel" = 1 ]; then
  log "building keel: cargo build --workspace --all-targets"
  cargo build --workspace --all-targets >&2 || die "cargo build failed"
fi
keel_bin="$CARGO_TARGET_DIR/debug/keel"
[ -x "$keel_bin" ] || die "$keel_bin missing"

results="${results:-$cache/compat-results/librdkafka-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$results"
# Run a copy: the target dir is shared, and another build may replace the binary mid-run.
cp "$keel_bin" "$results/keel" && keel_bin="$results/keel"
log "librdkafka $rdkafka_sys_version, ${#tests[@]} tests, logs in $results"
test_pid=""
stop_all() {
  [ -n "$test_pid" ] && pkill -TERM -P "$test_pid" 2>/dev/null  # the test's own timeout/runner
  stop_keel
}
trap 'stop_all' EXIT
trap 'stop_all; exit 130' INT TERM

for t in "${tests[@]}"; do
  run_one "$t"
done
stop_keel

echo "results: $results"
[ ${#failed_list[@]} -eq 0 ] || echo "failed: ${failed_list[*]}"
if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]

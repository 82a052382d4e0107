#!/usr/bin/env bash
# Single-node benchmarks of `radio serve`, measured with `radio loadtest`.
# Both are release builds on this machine, over loopback.
#
#   bench/single-node.sh                 # every scenario, 3 runs each
#   bench/single-node.sh one-18k storm   # only these scenarios
#   RUNS=5 DURATION=60s bench/single-node.sh
#
# Each run starts a fresh server, runs the load test with --server-pid and
# --json, and stops the server. Raw reports go to bench/out/ (not committed);
# the medians over the runs are printed as a Markdown table and written to
# bench/out/summary.md, to be copied into bench/RESULTS.md with the machine,
# date and commit printed at the top.
#
# Scenarios:
#   one-1k one-5k one-10k one-18k  N listeners on one station, one update a
#                                  second for DURATION (default 30s)
#   many-18k                       18,000 listeners over 100 stations
#   storm                          18,000 connections as fast as accepted
#                                  (the figures that matter: connect rate,
#                                  handshake latency, failures)
#   rate-18k                       18,000 listeners, one station, ten updates
#                                  a second: 180,000 deliveries/s offered, so
#                                  the box's delivery ceiling shows (with
#                                  conflation once fan-out takes longer than
#                                  100 ms)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

RUNS=${RUNS:-3}
DURATION=${DURATION:-30s}
OUT=${OUT:-bench/out}
ALL=(one-1k one-5k one-10k one-18k many-18k storm rate-18k)
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=("${ALL[@]}")

command -v jq >/dev/null || { echo "bench: needs jq (apt-get install jq)" >&2; exit 1; }
cargo build --release --locked --quiet
BIN=target/release/radio
mkdir -p "$OUT"

args_of() {
  case "$1" in
    one-1k)   echo "--listeners 1000 --duration $DURATION" ;;
    one-5k)   echo "--listeners 5000 --duration $DURATION" ;;
    one-10k)  echo "--listeners 10000 --duration $DURATION" ;;
    one-18k)  echo "--listeners 18000 --duration $DURATION" ;;
    many-18k) echo "--listeners 18000 --stations 100 --duration $DURATION" ;;
    storm)    echo "--listeners 18000 --duration 2s --connect-rate 0" ;;
    rate-18k) echo "--listeners 18000 --update-interval 100ms --duration $DURATION" ;;
    *) echo "bench: unknown scenario $1 (one of: ${ALL[*]})" >&2; exit 1 ;;
  esac
}

trap stop_server EXIT

run_one() {
  local name=$1 run=$2
  start_radio "$BIN" "$OUT/$name-$run.serve.log"
  local addr=$SERVER_ADDR
  # shellcheck disable=SC2046
  "$BIN" loadtest --url "$addr" --server-pid "$SERVER_PID" --json "$OUT/$name-$run.json" \
    $(args_of "$name") >"$OUT/$name-$run.txt" 2>&1 || echo "bench: $name run $run exited $? (see $OUT/$name-$run.txt)" >&2
  stop_server
  # Let the kernel settle (TIME_WAIT sockets, freed memory) between runs.
  sleep 3
}

row() {
  local name=$1; shift
  local files=("$@")
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
    "$name" \
    "$(median .listeners.connected "${files[@]}")/$(median .listeners.attempted "${files[@]}")" \
    "$(median .listeners.failed "${files[@]}")" \
    "$(median .fanout_ms.p50 "${files[@]}")" \
    "$(median .fanout_ms.p99 "${files[@]}")" \
    "$(median .fanout_ms.p999 "${files[@]}")" \
    "$(median .fanout_ms.max "${files[@]}")" \
    "$(median .last_listener_ms.p99 "${files[@]}")" \
    "$(median .final_state_delivery_pct "${files[@]}")" \
    "$(median 'if .delivery.expected > 0 then (.delivery.syncs_received / .delivery.expected * 1000 | round / 10) else null end' "${files[@]}")" \
    "$(median .deliveries_per_sec "${files[@]}")" \
    "$(median .listeners.connect_rate_per_sec "${files[@]}")" \
    "$(median .handshake_ms.p99 "${files[@]}")" \
    "$(median '(.server.rss_per_connection_bytes / 1024 * 100 | round / 100)' "${files[@]}")" \
    "$(median .generator.cpu_pct_of_machine_run "${files[@]}")/$(median .server.cpu_pct_of_machine_run "${files[@]}")"
}

SUMMARY="$OUT/summary.md"
{
  echo "Commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '-dirty'), $(date -u '+%Y-%m-%d %H:%M UTC'),"
  echo "$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)."
  echo "Medians of $RUNS runs; update interval 1s; duration $DURATION."
  echo
  echo '| scenario | connected | failed | fan-out p50 ms | p99 ms | p99.9 ms | max ms | last listener p99 ms | final state % | states delivered % | deliveries/s | connects/s | handshake p99 ms | server RSS/conn KiB | CPU % generator/server (run) |'
  echo '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'
} >"$SUMMARY"
LOADS=()
for name in "${SCENARIOS[@]}"; do
  args_of "$name" >/dev/null
  LOADS+=("$name: load average before $(cut -d' ' -f1-3 /proc/loadavg)")
  echo "bench: $name ($RUNS runs): radio loadtest $(args_of "$name")" >&2
  for run in $(seq "$RUNS"); do
    run_one "$name" "$run"
  done
  files=()
  for run in $(seq "$RUNS"); do
    [ -f "$OUT/$name-$run.json" ] && files+=("$OUT/$name-$run.json")
  done
  if [ ${#files[@]} -gt 0 ]; then
    row "$name" "${files[@]}" >>"$SUMMARY"
  else
    echo "| $name | no report | | | | | | | | | | | | | |" >>"$SUMMARY"
  fi
done
{
  echo
  for l in "${LOADS[@]}"; do echo "- $l"; done
  echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$SUMMARY"
cat "$SUMMARY"

#!/usr/bin/env bash
# A soak: one `radio serve` (release build) holding LISTENERS (10,000)
# listeners for DURATION (1h) while CHURN (1000/min) of them disconnect and
# are replaced, and a broadcaster updates its station every second. Every
# 10 s the server's resident memory, open files, threads, runtime tasks,
# WebSocket connections and listeners go to a CSV; at the end
# bench/soak-summary.py compares the last minute of the run with its first
# minute and with the minute a quarter of the way in, and says, per figure,
# whether it ended within 5% of each.
#
#   bench/soak.sh                                 # the full hour
#   DURATION=5m LISTENERS=2000 CHURN=200/min bench/soak.sh   # a quick look
#
# Out: bench/out/soak/samples.csv, loadtest.log, report.json, server.log,
# summary.md (for bench/RESULTS.md). The binary is copied to bench/out/soak
# first, so a rebuild while the soak runs does not change what is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

LISTENERS=${LISTENERS:-10000}
DURATION=${DURATION:-1h}
CHURN=${CHURN:-1000/min}
INTERVAL=${INTERVAL:-10}
TOLERANCE_PCT=${TOLERANCE_PCT:-5}
OUT=${OUT:-bench/out/soak}

command -v curl >/dev/null || { echo "bench: needs curl" >&2; exit 1; }
mkdir -p "$OUT"
if [ -z "${RADIO_BIN:-}" ]; then
  cargo build --release --locked --quiet
  RADIO_BIN=target/release/radio
fi
cp "$RADIO_BIN" "$OUT/radio"
BIN=$OUT/radio

LOADTEST_PID=""
cleanup() {
  if [ -n "$LOADTEST_PID" ]; then
    kill -TERM "$LOADTEST_PID" 2>/dev/null || true
    wait "$LOADTEST_PID" 2>/dev/null || true
  fi
  stop_server
}
trap cleanup EXIT

start_radio "$BIN" "$OUT/server.log"
echo "soak: server pid $SERVER_PID at $SERVER_ADDR; $LISTENERS listeners, $CHURN churn, for $DURATION"

# metric NAME: the value of an unlabelled series in the scrape in $SCRAPE.
metric() {
  awk -v n="$1" '$1 == n { print $2; exit }' <<<"$SCRAPE"
}

# sample PHASE: one CSV row.
sample() {
  local status rss threads fds
  status=$(cat "/proc/$SERVER_PID/status" 2>/dev/null) || return 0
  rss=$(awk '/^VmRSS:/ { print $2 * 1024 }' <<<"$status")
  threads=$(awk '/^Threads:/ { print $2 }' <<<"$status")
  fds=$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  SCRAPE=$(curl -s --max-time 5 "http://$SERVER_ADDR/metrics" || true)
  echo "$(date -u +%s),$1,$rss,$fds,$threads,$(metric radio_runtime_tasks),$(metric radio_connections),$(metric radio_listeners),$(metric radio_connections_accepted_total)" >>"$OUT/samples.csv"
}

echo "unix_s,phase,rss_bytes,open_files,threads,runtime_tasks,connections,listeners,connections_accepted_total" >"$OUT/samples.csv"
sample before

"$BIN" loadtest --url "$SERVER_ADDR" --listeners "$LISTENERS" --stations 1 \
  --update-interval 1s --duration "$DURATION" --churn "$CHURN" --connect-rate 1000 \
  --server-pid "$SERVER_PID" --json "$OUT/report.json" >"$OUT/loadtest.log" 2>&1 &
LOADTEST_PID=$!

while kill -0 "$LOADTEST_PID" 2>/dev/null; do
  if grep -q 'ramp done' "$OUT/loadtest.log"; then phase=run; else phase=ramp; fi
  sample "$phase"
  sleep "$INTERVAL"
done
status=0
wait "$LOADTEST_PID" || status=$?
LOADTEST_PID=""
sleep "$INTERVAL"
sample after
stop_server

python3 bench/soak-summary.py "$OUT/samples.csv" "$TOLERANCE_PCT" "$LISTENERS" "$DURATION" "$CHURN" "$status" \
  >"$OUT/summary.md"
cat "$OUT/summary.md"
exit "$status"

#!/usr/bin/env bash
# `radio serve` against the floor: the bare C epoll fan-out server in
# ../shared/floor, which builds each sync frame once and writes it with one
# write() per listener (its README). Both are measured by the same
# `radio loadtest`, alternately, in one run, and the script prints the
# ratios that matter: server CPU per delivered sync, and fan-out p99.
#
#   bench/floor.sh                     # 3 rounds of 10,000 and 18,000 listeners
#   ROUNDS=5 SIZES="18000" bench/floor.sh
#   RADIO_BIN=/path/to/other/radio bench/floor.sh   # measure another build
#
# Each run: a fresh server (radio serve on its defaults, or floor -t 2: two
# fan-out threads, the fair match for a 2-core machine), one station, one
# update a second for DURATION (30s), `radio loadtest --server-pid --json`.
# Rounds alternate which server goes first. Raw reports go to bench/out/floor/
# (not committed); the summary (medians and ratios) is printed and written to
# bench/out/floor/summary.md for bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"10000 18000"}
DURATION=${DURATION:-30s}
OUT=${OUT:-bench/out/floor}
FLOOR_SRC=${FLOOR_SRC:-../shared/floor/floor.c}

command -v jq >/dev/null || { echo "bench: needs jq (apt-get install jq)" >&2; exit 1; }
[ -f "$FLOOR_SRC" ] || { echo "bench: no floor source at $FLOOR_SRC (set FLOOR_SRC)" >&2; exit 1; }
mkdir -p "$OUT"
cargo build --release --locked --quiet
LOADTEST=target/release/radio
RADIO=${RADIO_BIN:-target/release/radio}
FLOOR="$OUT/floor"
cc -O2 -g -Wall -std=gnu11 -o "$FLOOR" "$FLOOR_SRC" -lpthread

trap stop_server EXIT

# radio_server LOG: starts radio serve; sets SERVER_PID and URL.
radio_server() {
  start_radio "$RADIO" "$1"
  URL=$SERVER_ADDR
}

# floor_server LOG: starts the floor on a free port; sets SERVER_PID and URL.
floor_server() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$FLOOR" -p "$port" -t 2 -x 900 -q >"$1" 2>&1 &
  SERVER_PID=$!
  URL="ws://127.0.0.1:$port/ws"
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "bench: floor did not start; see $1" >&2
  exit 1
}

run() { # run SERVER N ROUND
  local server=$1 n=$2 round=$3
  local base="$OUT/$server-$n-$round"
  "${server}_server" "$base.log"
  "$LOADTEST" loadtest --url "$URL" --listeners "$n" --duration "$DURATION" \
    --server-pid "$SERVER_PID" --json "$base.json" >"$base.txt" 2>&1 ||
    echo "bench: $server $n round $round exited $? (see $base.txt)" >&2
  stop_server
  sleep 3 # let TIME_WAIT sockets and freed memory settle
}

echo "bench: load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq "$ROUNDS"); do
  for n in $SIZES; do
    if [ $((round % 2)) -eq 1 ]; then order="radio floor"; else order="floor radio"; fi
    for server in $order; do
      echo "bench: round $round, $n listeners, $server" >&2
      run "$server" "$n" "$round"
    done
  done
done

# CPU per delivered sync, in microseconds.
CPU_PER='(if .delivery.syncs_received > 0 then (.server.cpu_seconds_run / .delivery.syncs_received * 1e6 * 100 | round / 100) else null end)'
ratio() { jq -n "if ($1) == null or ($2) == null or ($2) == 0 then null else ($1) / ($2) * 100 | round / 100 end"; }

SUMMARY="$OUT/summary.md"
{
  echo "Commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '-dirty'), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r)."
  echo "radio serve: $RADIO; floor: $FLOOR_SRC -t 2. Medians of $ROUNDS alternating rounds, one station, one update a second, $DURATION."
  echo
  echo '| listeners | server | fan-out p50 ms | p99 ms | server CPU per delivered sync µs | final state % | seq regressions | RSS/conn KiB | connects/s |'
  echo '|---|---|---|---|---|---|---|---|---|'
} >"$SUMMARY"
RATIOS=()
for n in $SIZES; do
  for server in radio floor; do
    files=("$OUT/$server-$n-"*.json)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$n" "$server" \
      "$(median .fanout_ms.p50 "${files[@]}")" \
      "$(median .fanout_ms.p99 "${files[@]}")" \
      "$(median "$CPU_PER" "${files[@]}")" \
      "$(median .final_state_delivery_pct "${files[@]}")" \
      "$(median .delivery.seq_regressions "${files[@]}")" \
      "$(median '(.server.rss_per_connection_bytes / 1024 * 100 | round / 100)' "${files[@]}")" \
      "$(median .listeners.connect_rate_per_sec "${files[@]}")" >>"$SUMMARY"
  done
  r_p99=$(ratio "$(median .fanout_ms.p99 "$OUT/radio-$n-"*.json)" "$(median .fanout_ms.p99 "$OUT/floor-$n-"*.json)")
  r_cpu=$(ratio "$(median "$CPU_PER" "$OUT/radio-$n-"*.json)" "$(median "$CPU_PER" "$OUT/floor-$n-"*.json)")
  RATIOS+=("$n listeners: radio/floor p99 ${r_p99}x, CPU per delivered sync ${r_cpu}x")
done
{
  echo
  for r in "${RATIOS[@]}"; do echo "- $r"; done
  echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$SUMMARY"
cat "$SUMMARY"

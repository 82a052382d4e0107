#!/usr/bin/env bash
# A server-run station against a shell broadcaster's, on one node: do N
# listeners of a station the server runs itself (`radio serve --station`)
# cost what they cost with a broadcaster? Both are release builds on this
# machine, over loopback, measured with `radio loadtest`.
#
#   bench/onair.sh                          # 18,000 listeners, 3 runs each
#   LISTENERS=1000 RUNS=1 bench/onair.sh    # a quick check that it works
#   RUNS=5 DURATION=60s bench/onair.sh
#
# Scenarios, run alternately so a change in the machine's load hits both:
#   shell   one station played by the load generator's broadcaster: one
#           update a second (--update-interval 1s, the default)
#   onair   one station the server runs from a library of one-second
#           tracks: one update a second too, published by the server;
#           the listeners tune in with `radio loadtest --listen-only`
# Both servers get the same library (--media), so they differ only in who
# plays the station.
#
# Raw reports go to bench/out/ (not committed); the medians over the runs
# are printed as a Markdown table and written to bench/out/onair.md, to be
# copied into bench/RESULTS.md with the machine, date and commit printed at
# the top.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

RUNS=${RUNS:-3}
DURATION=${DURATION:-30s}
LISTENERS=${LISTENERS:-18000}
TRACKS=${TRACKS:-10}
OUT=${OUT:-bench/out}

command -v jq >/dev/null || { echo "bench: needs jq (apt-get install jq)" >&2; exit 1; }
command -v ffmpeg >/dev/null || { echo "bench: needs ffmpeg (scripts/setup.sh installs it)" >&2; exit 1; }
cargo build --release --locked --quiet
BIN=target/release/radio
mkdir -p "$OUT"

# The library: TRACKS one-second tones, so the server-run station changes
# track (and publishes one update) every second, as the broadcaster does.
LIBRARY="$OUT/onair-library"
rm -rf "$LIBRARY"
mkdir -p "$LIBRARY"
for i in $(seq "$TRACKS"); do
  ffmpeg -v error -nostdin -y -f lavfi \
    -i "sine=frequency=$((220 + 20 * i)):sample_rate=8000:duration=1" \
    "$LIBRARY/$(printf 'tone-%02d' "$i").wav"
done

trap stop_server EXIT

run_one() {
  local name=$1 run=$2
  local common=(--listeners "$LISTENERS" --duration "$DURATION")
  case "$name" in
    shell)
      start_radio "$BIN" "$OUT/onair-$name-$run.serve.log" --media "$LIBRARY"
      ;;
    onair)
      start_radio "$BIN" "$OUT/onair-$name-$run.serve.log" --media "$LIBRARY" \
        --station onair=library
      common+=(--listen-only onair)
      ;;
  esac
  "$BIN" loadtest --url "$SERVER_ADDR" --server-pid "$SERVER_PID" \
    --json "$OUT/onair-$name-$run.json" "${common[@]}" \
    >"$OUT/onair-$name-$run.txt" 2>&1 \
    || echo "bench: $name run $run exited $? (see $OUT/onair-$name-$run.txt)" >&2
  stop_server
  # Let the kernel settle (TIME_WAIT sockets, freed memory) between runs.
  sleep 3
}

row() {
  local name=$1; shift
  local files=("$@")
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
    "$name" \
    "$(median .listeners.connected "${files[@]}")/$(median .listeners.attempted "${files[@]}")" \
    "$(median '.delivery.updates_sent' "${files[@]}")" \
    "$(median .fanout_ms.p50 "${files[@]}")" \
    "$(median .fanout_ms.p99 "${files[@]}")" \
    "$(median .fanout_ms.max "${files[@]}")" \
    "$(median .last_listener_ms.p99 "${files[@]}")" \
    "$(median 'if .delivery.expected > 0 then (.delivery.syncs_received / .delivery.expected * 1000 | round / 10) else null end' "${files[@]}")" \
    "$(median .final_state_delivery_pct "${files[@]}")" \
    "$(median .deliveries_per_sec "${files[@]}")" \
    "$(median '(.server.rss_per_connection_bytes / 1024 * 100 | round / 100)' "${files[@]}")" \
    "$(median .generator.cpu_pct_of_machine_run "${files[@]}")/$(median .server.cpu_pct_of_machine_run "${files[@]}")"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench: shell and onair, $LISTENERS listeners, $RUNS runs each, alternately" >&2
for run in $(seq "$RUNS"); do
  for name in shell onair; do
    run_one "$name" "$run"
  done
done

SUMMARY="$OUT/onair.md"
{
  echo "Commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '-dirty'), $(date -u '+%Y-%m-%d %H:%M UTC'),"
  echo "$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)."
  echo "Medians of $RUNS runs; $LISTENERS listeners on one station; one state a second; duration $DURATION."
  echo
  echo '| station played by | connected | states in the run | fan-out p50 ms | p99 ms | max ms | last listener p99 ms | states delivered % | final state % | deliveries/s | server RSS/conn KiB | CPU % generator/server (run) |'
  echo '|---|---|---|---|---|---|---|---|---|---|---|---|'
  for name in shell onair; do
    files=()
    for run in $(seq "$RUNS"); do
      [ -f "$OUT/onair-$name-$run.json" ] && files+=("$OUT/onair-$name-$run.json")
    done
    if [ ${#files[@]} -gt 0 ]; then
      row "$name" "${files[@]}"
    else
      echo "| $name | no report | | | | | | | | | | |"
    fi
  done
  echo
  echo "- load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$SUMMARY"
cat "$SUMMARY"

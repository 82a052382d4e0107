#!/usr/bin/env bash
# The fan-out over TLS: one `radio serve` with --tls-cert/--tls-key (wss)
# and one without (ws), the same listeners, measured by the same
# `radio loadtest`, alternately, in one run. Prints server CPU per
# delivered sync for each and the wss/ws ratio, and fan-out p99 for each.
#
#   bench/wss.sh                       # 3 rounds of 5,000 listeners, 15 s
#   ROUNDS=5 N=10000 DURATION=30s bench/wss.sh
#   RADIO_BIN=/path/to/other/radio bench/wss.sh   # measure another build
#
# The certificate is a fresh self-signed one (openssl, EC P-256, for
# 127.0.0.1), given to the load test with --ca-cert. Each run: a fresh
# server on its defaults, one station, one update a second for DURATION,
# `radio loadtest --server-pid --json`. Rounds alternate which goes first.
# Raw reports go to bench/out/wss/ (not committed); the summary is printed
# and written to bench/out/wss/summary.md for bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS=${ROUNDS:-3}
N=${N:-5000}
DURATION=${DURATION:-15s}
OUT=${OUT:-bench/out/wss}

command -v jq >/dev/null || { echo "bench: needs jq (apt-get install jq)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "bench: needs openssl" >&2; exit 1; }
mkdir -p "$OUT"
cargo build --release --locked --quiet
LOADTEST=target/release/radio
RADIO=${RADIO_BIN:-target/release/radio}

CERT="$OUT/cert.pem"
KEY="$OUT/key.pem"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$KEY" -out "$CERT" 2>/dev/null

trap stop_server EXIT

run() { # run ws|wss ROUND
  local kind=$1 round=$2
  local base="$OUT/$kind-$N-$round" tls=()
  [ "$kind" = wss ] && tls=(--tls-cert "$CERT" --tls-key "$KEY")
  start_radio "$RADIO" "$base.log" "${tls[@]}"
  "$LOADTEST" loadtest --url "$kind://$SERVER_ADDR/ws" --ca-cert "$CERT" \
    --listeners "$N" --duration "$DURATION" \
    --server-pid "$SERVER_PID" --json "$base.json" >"$base.txt" 2>&1 ||
    echo "bench: $kind round $round exited $? (see $base.txt)" >&2
  stop_server
  sleep 3 # let TIME_WAIT sockets and freed memory settle
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="ws wss"; else order="wss ws"; fi
  for kind in $order; do
    echo "bench: round $round, $N listeners, $kind" >&2
    run "$kind" "$round"
  done
done

# CPU per delivered sync, in microseconds.
CPU_PER='(if .delivery.syncs_received > 0 then (.server.cpu_seconds_run / .delivery.syncs_received * 1e6 * 100 | round / 100) else null end)'
ratio() { jq -n "if ($1) == null or ($2) == null or ($2) == 0 then null else ($1) / ($2) * 100 | round / 100 end"; }

SUMMARY="$OUT/summary.md"
{
  echo "Commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '-dirty'), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r)."
  echo "radio serve: $RADIO, with and without --tls-cert (self-signed EC P-256). Medians of $ROUNDS alternating rounds, $N listeners, one station, one update a second, $DURATION."
  echo
  echo '| scheme | fan-out p50 ms | p99 ms | server CPU per delivered sync µs | server CPU s (run) | syncs delivered | final state % | RSS/conn KiB |'
  echo '|---|---|---|---|---|---|---|---|'
  for kind in ws wss; do
    files=("$OUT/$kind-$N-"*.json)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$kind" \
      "$(median .fanout_ms.p50 "${files[@]}")" \
      "$(median .fanout_ms.p99 "${files[@]}")" \
      "$(median "$CPU_PER" "${files[@]}")" \
      "$(median .server.cpu_seconds_run "${files[@]}")" \
      "$(median .delivery.syncs_received "${files[@]}")" \
      "$(median .final_state_delivery_pct "${files[@]}")" \
      "$(median '(.server.rss_per_connection_bytes / 1024 * 100 | round / 100)' "${files[@]}")"
  done
  echo
  echo "- wss/ws CPU per delivered sync: $(ratio "$(median "$CPU_PER" "$OUT/wss-$N-"*.json)" "$(median "$CPU_PER" "$OUT/ws-$N-"*.json)")x"
  echo "- wss/ws fan-out p99: $(ratio "$(median .fanout_ms.p99 "$OUT/wss-$N-"*.json)" "$(median .fanout_ms.p99 "$OUT/ws-$N-"*.json)")x"
  echo "- load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$SUMMARY"
cat "$SUMMARY"

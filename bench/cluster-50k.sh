#!/usr/bin/env bash
# The cluster benchmark: one Redis, three `radio serve --redis`
# nodes sharing one port with --reuse-port, and `radio loadtest` with 50,000
# listeners on one station, one update a second, for 60 s, everything on this
# machine. Then what the Redis hop costs: 18,000 listeners on one node without
# Redis versus the same load on the three nodes.
#
#   bench/cluster-50k.sh                          # cluster-50k, single-18k, cluster-18k
#   bench/cluster-50k.sh cluster-50k              # only these scenarios
#   DURATION=30s N_BIG=20000 bench/cluster-50k.sh # smaller, for a quick look
#
# Each scenario starts a fresh Redis (--save '' --appendonly no) and fresh
# nodes, runs the load test with --server-pid for every node and --json, and
# stops them. Reports and logs go to bench/out/ (not committed); a Markdown
# summary (machine, date, commit, and the figures the issue's targets name)
# goes to bench/out/cluster-summary.md, to be copied into bench/RESULTS.md.
#
# Each node may hold ~19,900 connections here (open files are capped at
# 20,000 per process), so 50,000 listeners need all three. The kernel spreads
# connections over the nodes by hashing their addresses: near even, not exact.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-60s}
N_BIG=${N_BIG:-50000}
N_CMP=${N_CMP:-18000}
PORT=${PORT:-18280}
REDIS_PORT=${REDIS_PORT:-18279}
OUT=${OUT:-bench/out}
ALL=(cluster-50k single-18k cluster-18k)
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=("${ALL[@]}")

command -v jq >/dev/null || { echo "bench: needs jq (apt-get install jq)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "bench: needs redis-server (scripts/setup.sh)" >&2; exit 1; }
cargo build --release --locked --quiet
BIN=target/release/radio
mkdir -p "$OUT"

PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --loglevel warning >"$OUT/$1.redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench: redis-server did not start; see $OUT/$1.redis.log" >&2; exit 1
}

# start_node LOG READY_LINE FLAGS...: starts a node on the shared port and
# waits until its own log shows READY_LINE (the shared port cannot tell which
# node answers a probe); sets NODE_PID.
start_node() {
  local log=$1 ready=$2; shift 2
  "$BIN" serve --listen "127.0.0.1:$PORT" --max-connections-per-ip 0 \
    --max-stations-per-ip 0 --claim-rate 0 "$@" >/dev/null 2>"$log" &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  for _ in $(seq 300); do
    grep -qs "$ready" "$log" && return 0
    kill -0 "$NODE_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench: a node did not start; see $log" >&2; exit 1
}

run() {
  local name=$1 listeners=$2
  local node_pids=()
  case $name in
    single-*)
      start_node "$OUT/$name.serve.log" "listening on"
      node_pids+=("$NODE_PID")
      ;;
    cluster-*)
      start_redis "$name"
      for n in a b c; do
        start_node "$OUT/$name.serve-$n.log" "connected to Redis" \
          --redis "redis://127.0.0.1:$REDIS_PORT/0" --node-id "$n" --reuse-port
        node_pids+=("$NODE_PID")
      done
      ;;
  esac
  local args=(--url "127.0.0.1:$PORT" --listeners "$listeners" --stations 1
              --update-interval 1s --duration "$DURATION" --json "$OUT/$name.json")
  for p in "${node_pids[@]}"; do args+=(--server-pid "$p"); done
  echo "bench: $name: radio loadtest ${args[*]}" >&2
  "$BIN" loadtest "${args[@]}" >"$OUT/$name.txt" 2>&1 \
    || echo "bench: $name exited $? (see $OUT/$name.txt)" >&2
  if [ "${name%%-*}" = cluster ]; then
    redis-cli -p "$REDIS_PORT" info memory | tr -d '\r' | grep -E '^used_memory:' \
      | cut -d: -f2 >"$OUT/$name.redis-memory" || true
  fi
  stop_all
  # Let the kernel settle (TIME_WAIT sockets, freed memory) between runs.
  sleep 3
}

SUMMARY="$OUT/cluster-summary.md"
{
  echo "Commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '-dirty'), $(date -u '+%Y-%m-%d %H:%M UTC'),"
  echo "$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r), $(redis-server --version | cut -d' ' -f3)."
  echo "One station, update interval 1s, duration $DURATION; cluster = 3 nodes on one port (--reuse-port) and one Redis."
  echo
  echo '| scenario | connected | failed | fan-out p50 ms | p99 ms | max ms | final state % | seq regressions | skipped | server RSS/conn KiB | CPU % generator/servers (run) | Redis used memory |'
  echo '|---|---|---|---|---|---|---|---|---|---|---|---|'
} >"$SUMMARY"
for name in "${SCENARIOS[@]}"; do
  case $name in
    cluster-50k) n=$N_BIG ;;
    single-18k | cluster-18k) n=$N_CMP ;;
    *) echo "bench: unknown scenario $name (one of: ${ALL[*]})" >&2; exit 1 ;;
  esac
  echo "- $name: load average before $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/cluster-loads.txt"
  run "$name" "$n"
  if [ -f "$OUT/$name.json" ]; then
    jq -r --arg name "$name" --arg redis "$(cat "$OUT/$name.redis-memory" 2>/dev/null || echo -)" '
      "| \($name) | \(.listeners.connected)/\(.listeners.attempted) | \(.listeners.failed)"
      + " | \(.fanout_ms.p50) | \(.fanout_ms.p99) | \(.fanout_ms.max)"
      + " | \(.final_state_delivery_pct) | \(.delivery.seq_regressions) | \(.delivery.skipped)"
      + " | \(.server.rss_per_connection_bytes / 1024 * 100 | round / 100)"
      + " | \(.generator.cpu_pct_of_machine_run)/\(.server.cpu_pct_of_machine_run) | \($redis) |"' \
      "$OUT/$name.json" >>"$SUMMARY"
  else
    echo "| $name | no report (see $OUT/$name.txt) | | | | | | | | | | |" >>"$SUMMARY"
  fi
done
{
  echo
  cat "$OUT/cluster-loads.txt"
  echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$SUMMARY"
rm -f "$OUT/cluster-loads.txt"
cat "$SUMMARY"

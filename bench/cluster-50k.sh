#!/usr/bin/env bash
# The cluster benchmark: one Redis, three `radio serve --redis` nodes sharing
# one port with --reuse-port, and `radio loadtest` with 50,000 listeners on
# one station, one update a second, for 60 s, all on this machine. Also the
# comparison that shows what the Redis hop costs: 18,000 listeners on one
# node without Redis versus on the three nodes.
#
# Usage: bench/cluster-50k.sh [all|50k|18k-single|18k-cluster]   (default: all)
# Env:   PORT (shared node port, default 18280), REDIS_PORT (default 18279),
#        DURATION (default 60s), OUT (results directory, default bench/results)
#
# Writes one JSON report per scenario (radio loadtest --json) and a summary
# line per scenario to $OUT/cluster-<date>.txt, with the command, machine and
# date, for bench/RESULTS.md. Each node may hold ~19,900 connections (the
# open-file limit here is 20,000), so 50,000 listeners need all three. The
# kernel spreads connections over the nodes by hashing each connection's
# addresses, so the split is near even, not exact.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-all}
port=${PORT:-18280}
redis_port=${REDIS_PORT:-18279}
duration=${DURATION:-60s}
out=${OUT:-bench/results}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
summary="$out/cluster-$stamp.txt"

command -v redis-server >/dev/null || { echo "redis-server missing: run scripts/setup.sh" >&2; exit 1; }
cargo build --release --locked -q
radio=./target/release/radio

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap cleanup EXIT

start_redis() {
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --loglevel warning >"$out/redis-$stamp.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis-server did not start" >&2; exit 1
}

# start_node NAME READY_LOG_LINE [serve flags...]: starts a node and waits
# until its own log says READY_LOG_LINE (the shared port cannot tell which
# node answers); sets node_pid.
start_node() {
  local name=$1 ready=$2; shift 2
  local log="$out/node-$name-$stamp.log"
  RUST_LOG=warn,radio=info "$radio" serve --listen "127.0.0.1:$port" "$@" >"$log" 2>&1 &
  local pid=$!
  pids+=($pid)
  for _ in $(seq 200); do
    if grep -qs "$ready" "$log"; then
      node_pid=$pid
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "node $name did not become ready; see $out/node-$name-$stamp.log" >&2; exit 1
}

# run SCENARIO LISTENERS PID...: one loadtest against the shared port.
run() {
  local scenario=$1 listeners=$2; shift 2
  local json="$out/cluster-$scenario-$stamp.json"
  local cmd=("$radio" loadtest --url "ws://127.0.0.1:$port/ws" --listeners "$listeners"
             --stations 1 --update-interval 1s --duration "$duration" --json "$json")
  for p in "$@"; do cmd+=(--server-pid "$p"); done
  echo "== $scenario: ${cmd[*]}" | tee -a "$summary"
  "${cmd[@]}" 2>&1 | tee -a "$summary"
}

cluster() {
  start_redis
  local url="redis://127.0.0.1:$redis_port/0"
  local node_pids=()
  for n in a b c; do
    start_node "$n" "connected to Redis" --redis "$url" --node-id "$n" --reuse-port
    node_pids+=("$node_pid")
  done
  run "$1" "$2" "${node_pids[@]}"
  echo "redis: $(redis-cli -p "$redis_port" info memory | grep -E '^used_memory_human' | tr -d '\r')" \
    | tee -a "$summary"
  cleanup
}

single() {
  start_node single "listening on"
  run "$1" "$2" "$node_pid"
  cleanup
}

{
  echo "# bench/cluster-50k.sh $mode, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "# commit $(git rev-parse --short HEAD), $(nproc) cores, $(uname -sr)"
  echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
       "$(awk '/MemTotal/{printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)," \
       "open files $(ulimit -Hn), $(redis-server --version | cut -d' ' -f3)"
} | tee "$summary"

case $mode in
  50k) cluster 50k 50000 ;;
  18k-single) single 18k-single 18000 ;;
  18k-cluster) cluster 18k-cluster 18000 ;;
  all)
    cluster 50k 50000
    single 18k-single 18000
    cluster 18k-cluster 18000
    ;;
  *) echo "usage: $0 [all|50k|18k-single|18k-cluster]" >&2; exit 2 ;;
esac
echo "summary: $summary"

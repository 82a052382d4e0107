#!/usr/bin/env bash
# Server user-space RSS per tuned, idle WebSocket connection.
# Usage: bench/memory.sh [CONNECTIONS]   (default 10000; at most ~19000 here)
# Builds the release binary, starts `radio serve` on a free port, opens the
# connections with bench/idle_conns.py (raw handshake + tune_in, spread over
# 50 source addresses), and reports (RSS after - RSS before) / connections.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
port=${PORT:-18181}
cargo build --release --locked -q
./target/release/radio serve --listen 127.0.0.1:$port --max-connections-per-ip 0 >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 0.5
before=$(awk '/VmRSS/{print $2}' /proc/$server/status)
HOLD=4 python3 bench/idle_conns.py "$n" "$port" tune >/dev/null &
client=$!
sleep 3.5
after=$(awk '/VmRSS/{print $2}' /proc/$server/status)
wait $client
echo "connections=$n rss_before_kib=$before rss_after_kib=$after bytes_per_connection=$(( (after - before) * 1024 / n ))"

#!/usr/bin/env bash
# The picture of the Grafana dashboard (docs/grafana.png), fed by a real
# Prometheus scraping a real cluster under `radio loadtest`:
#
#   bench/dashboard.sh            # about four minutes
#
# What runs, all on loopback and all stopped at the end:
# - redis-server and two `radio serve --redis` nodes (release build);
# - Prometheus (Debian's package) scraping both every second;
# - `radio loadtest` 1: 2,000 listeners over 2 stations across both nodes,
#   connecting at 100 a second, for 150 s;
# - `radio loadtest` 2, 40 s later: 1,200 listeners over 4 stations, 40 s;
# - Redis stopped for 5 s, 90 s in, and started again (both nodes lose the
#   link and reconnect; listeners stay connected);
# - the picture: from the start to 125 s in, while the first load runs;
# then bench/dashboard.mjs draws contrib/grafana/radio.json's panels from
# Prometheus's query results in headless Chromium. Grafana itself is not
# installable here (not in Debian, PyPI or npm), so the panels are drawn by
# that script, not by Grafana: same queries, same layout, its own drawing.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

OUT=${OUT:-bench/out/dashboard}
PNG=${PNG:-docs/grafana.png}
BIN=${BIN:-target/release/radio}
mkdir -p "$OUT"
[ "$BIN" = target/release/radio ] && cargo build --release --locked --quiet

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

REDIS_PORT=$(free_port)
start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
}
start_redis

NODES=()
for id in a b; do
  start_radio "$BIN" "$OUT/node-$id.log" --redis "redis://127.0.0.1:$REDIS_PORT" --node-id "$id"
  PIDS+=("$SERVER_PID")
  NODES+=("$SERVER_ADDR")
  SERVER_PID=""
done

PROM_PORT=$(free_port)
rm -rf "$OUT/prometheus"
mkdir -p "$OUT/prometheus"
cat >"$OUT/prometheus/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: radio
    static_configs:
      - targets: ['${NODES[0]}', '${NODES[1]}']
EOF
prometheus --config.file="$OUT/prometheus/prometheus.yml" --storage.tsdb.path="$OUT/prometheus/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$OUT/prometheus.log" 2>&1 &
PIDS+=($!)
PROM="http://127.0.0.1:$PROM_PORT"
for _ in $(seq 100); do curl -fs "$PROM/-/ready" >/dev/null 2>&1 && break; sleep 0.2; done

# load NAME LISTENERS STATIONS RATE DURATION: a loadtest over both nodes in
# the background; its PID in LOAD.
load() {
  "$BIN" loadtest --url "${NODES[0]}" --url "${NODES[1]}" --listeners "$2" --stations "$3" \
    --station-prefix "$1" --connect-rate "$4" --duration "$5" --json "$OUT/$1.json" \
    >"$OUT/$1.txt" 2>&1 &
  LOAD=$!
  PIDS+=("$LOAD")
}

START=$(date +%s)
sleep 10
load morning 2000 2 100 150s
LOAD1=$LOAD
sleep 40
load evening 1200 4 200 40s
LOAD2=$LOAD
sleep 50
echo "dashboard: stopping Redis for 5 s"
kill -TERM "$REDIS_PID"
wait "$REDIS_PID" 2>/dev/null || true
sleep 5
start_redis
sleep 30
# The picture ends while the first load still runs, so the stat panels
# show a loaded server; the load then ends on its own.
END=$(date +%s)
node bench/dashboard.mjs "$PROM" "$START" "$END" "$PNG"
wait "$LOAD2" || true
wait "$LOAD1" || true

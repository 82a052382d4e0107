#!/usr/bin/env bash
# The track-change herd: N listeners of one station the server runs, each
# fetching its media as the web player does (`radio loadtest
# --fetch-media`), with and without the prefetch of the announced next
# track, alternated. Prints, per mode, the time from a track's start until
# a listener holds its first 256 KiB (p50/p99/max over every listener and
# track change), the same after tune-in, bytes per listener, requests
# refused, and the server's and the generator's CPU.
#
#   bench/herd.sh                          # 10,000 listeners, 75 s, 1 round
#   N=2000 DURATION=40s bench/herd.sh      # a quick look
#   ROUNDS=3 bench/herd.sh
#   NODES=2 bench/herd.sh                  # two nodes and one Redis on one port
#   MODES=current bench/herd.sh            # one mode only
#
# With NODES > 1 the server is a cluster as docs/cluster.md deploys it:
# one Redis, NODES `radio serve --redis ... --reuse-port` on one port
# (each naming the station; one drives it), so the kernel spreads the
# connections, WebSockets and media alike, over the nodes: each has its
# own accept queue and its own open-files limit.
#
# The library: TRACKS tones of TRACK_S seconds, MP3 at 128 kbit/s (made
# by ffmpeg, once), played in order by `radio serve --station herd=library`.
# Raw reports go to bench/out/herd/ (not committed); the summary is
# printed and written to bench/out/herd/summary.md for bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS=${ROUNDS:-1}
MODES=${MODES:-prefetch current}
N=${N:-10000}
DURATION=${DURATION:-75s}
TRACKS=${TRACKS:-4}
TRACK_S=${TRACK_S:-30}
OUT=${OUT:-bench/out/herd}
NODES=${NODES:-1}
PORT=${PORT:-18431}
REDIS_PORT=${REDIS_PORT:-18432}
# Listeners (and their fetches) from several loopback addresses: each
# fetch is a connection of its own.
SOURCES=${SOURCES:-127.0.0.1-127.0.0.4}
# Each listener holds a WebSocket and, while fetching, a second socket: a
# worker per 5,000 keeps each process well inside its open-files limit.
WORKERS=${WORKERS:-$(( (N + 4999) / 5000 ))}

command -v jq >/dev/null || { echo "bench: needs jq (apt-get install jq)" >&2; exit 1; }
command -v ffmpeg >/dev/null || { echo "bench: needs ffmpeg" >&2; exit 1; }
mkdir -p "$OUT"
cargo build --release --locked --quiet
RADIO=${RADIO_BIN:-target/release/radio}
# The load generator: the same binary unless GEN_BIN names another (to
# compare generators against one server).
GEN=${GEN_BIN:-$RADIO}

LIBRARY="$OUT/library-$TRACK_S"
mkdir -p "$LIBRARY"
for i in $(seq "$TRACKS"); do
  f="$LIBRARY/$(printf 'tone-%02d' "$i").mp3"
  [ -f "$f" ] || ffmpeg -nostdin -loglevel error -y -f lavfi \
    -i "sine=frequency=$((200 + 50 * i)):duration=$TRACK_S" -ac 2 -b:a 128k "$f"
done

PIDS=()
stop_all() {
  stop_server
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT

# start_cluster BASE: Redis and NODES nodes on PORT; sets PIDS, SERVER_ADDR.
start_cluster() {
  local base=$1
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --loglevel warning >"$base.redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  for n in $(seq "$NODES"); do
    "$RADIO" serve --listen "127.0.0.1:$PORT" --reuse-port --redis "redis://127.0.0.1:$REDIS_PORT/0" \
      --node-id "n$n" --max-connections-per-ip 0 --max-stations-per-ip 0 --claim-rate 0 \
      --media "$LIBRARY" --station herd=library >/dev/null 2>"$base.node$n.log" &
    PIDS+=($!)
    for _ in $(seq 300); do grep -qs "connected to Redis" "$base.node$n.log" && break; sleep 0.1; done
  done
  SERVER_ADDR="127.0.0.1:$PORT"
  # One node takes the station's lease and drives it: wait until it is live.
  for _ in $(seq 100); do
    curl -fs "http://$SERVER_ADDR/api/stations" | grep -q '"herd"' && break
    sleep 0.1
  done
}

run() { # run MODE ROUND
  local mode=$1 round=$2
  local base="$OUT/$mode-$N-$round"
  local pids=()
  if [ "$NODES" -gt 1 ]; then
    start_cluster "$base"
    for p in "${PIDS[@]:1}"; do pids+=(--server-pid "$p"); done
  else
    start_radio "$RADIO" "$base.log" --media "$LIBRARY" --station herd=library
    pids=(--server-pid "$SERVER_PID")
  fi
  local overflows_before
  overflows_before=$(nstat -az TcpExtListenOverflows 2>/dev/null | awk '/ListenOverflows/ {print $2}')
  "$GEN" loadtest --url "$SERVER_ADDR" --listen-only herd --listeners "$N" \
    --duration "$DURATION" --source-addrs "$SOURCES" --fetch-media="$mode" --workers "$WORKERS" \
    "${pids[@]}" --json "$base.json" >"$base.txt" 2>&1 ||
    echo "bench: $mode round $round exited $? (see $base.txt)" >&2
  # Connections the kernel's accept queues dropped (machine-wide: other
  # processes' too), each a SYN-ACK retransmitted a second or more later.
  echo $(( $(nstat -az TcpExtListenOverflows 2>/dev/null | awk '/ListenOverflows/ {print $2}') - overflows_before )) \
    >"$base.overflows"
  stop_all
  sleep 3
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order=$MODES; else order=$(echo "$MODES" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for mode in $order; do
    echo "bench: round $round, $N listeners, --fetch-media=$mode" >&2
    run "$mode" "$round"
  done
done

SUMMARY="$OUT/summary.md"
{
  echo "Commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '-dirty'), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r)."
  [ "$NODES" -gt 1 ] && echo "$NODES nodes and one Redis (radio serve --redis --reuse-port, one port)."
  echo "radio serve --station herd=library: $TRACKS tracks of ${TRACK_S} s, MP3 128 kbit/s ($(stat -c %s "$LIBRARY"/tone-01.mp3) bytes). $N listeners, --listen-only, $DURATION; medians of $ROUNDS round(s)."
  echo
  echo '| --fetch-media | track changes | first 256 KiB after a change p50 ms | p99 ms | max ms | fetched ahead | after tune-in p50 ms | p99 ms | MB per listener | requests | refused | server CPU s (run) | generator CPU % of machine (run) | sync fan-out p99 ms | accept queue overflows |'
  echo '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'
  for mode in $MODES; do
    files=("$OUT/$mode-$N-"*.json)
    overflows=$(cat "$OUT/$mode-$N-"*.overflows 2>/dev/null | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int(NR/2)+1]; else print "null"}')
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$mode" \
      "$(median .media.playable_ms.count "${files[@]}")" \
      "$(median .media.playable_ms.p50 "${files[@]}")" \
      "$(median .media.playable_ms.p99 "${files[@]}")" \
      "$(median .media.playable_ms.max "${files[@]}")" \
      "$(median .media.ahead_starts "${files[@]}")" \
      "$(median .media.tune_in_playable_ms.p50 "${files[@]}")" \
      "$(median .media.tune_in_playable_ms.p99 "${files[@]}")" \
      "$(median '(.media.bytes_per_listener / 1e6 * 100 | round / 100)' "${files[@]}")" \
      "$(median .media.requests "${files[@]}")" \
      "$(median .media.refused_total "${files[@]}")" \
      "$(median .server.cpu_seconds_run "${files[@]}")" \
      "$(median .generator.cpu_pct_of_machine_run "${files[@]}")" \
      "$(median .fanout_ms.p99 "${files[@]}")" "$overflows"
  done
  echo
  echo "- load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$SUMMARY"
cat "$SUMMARY"

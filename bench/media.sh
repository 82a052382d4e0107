#!/usr/bin/env bash
# `radio serve`'s /media against nginx (Debian's, `sendfile on`) on the same
# files under the same `wrk` load, alternated, several rounds; whole files
# and browser-like ranges. Prints (and writes to bench/out/media/summary.md)
# each server's median throughput and CPU per GB, and the ratios to nginx.
#
#   bench/media.sh                           # 5 rounds, 100 connections, 10 s
#   ROUNDS=3 CONNS=50 DURATION=5s bench/media.sh
#   RADIO_BIN=/path/to/other/radio bench/media.sh   # measure another build
#
# The files: a 4.8 MB MP3 (400 s of a tone, made by ffmpeg) and eight
# 30 s ones. Modes: `whole` (GET of the 4.8 MB file, 200) and `ranges`
# (wrk's Lua, bench/media-ranges.lua: what an <audio> element asks for
# across the nine files: `bytes=0-` at tune-in, `bytes=N-` after a seek
# into the middle, and 256 KiB windows `bytes=N-M`). Server CPU is utime +
# stime from /proc/PID/stat (every thread; nginx: master and workers)
# over the wrk run. nginx runs as many workers as there are cores, as
# `worker_processes auto` would. Installs nginx and wrk with apt if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-100}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
MODES=${MODES:-"whole ranges"}
OUT=${OUT:-bench/out/media}

need() { command -v "$1" >/dev/null || { apt-get install -y "$2" >/dev/null || { echo "bench: needs $2 (apt-get install $2)" >&2; exit 1; }; }; }
need nginx nginx-light
need wrk wrk
need ffmpeg ffmpeg
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cargo build --release --locked --quiet
RADIO=${RADIO_BIN:-target/release/radio}
TICK=$(getconf CLK_TCK)

MEDIA="$OUT/library"
mkdir -p "$MEDIA"
# tone FILE SECONDS HZ: an MP3 at 128 kbit/s (made once).
tone() {
  [ -f "$MEDIA/$1" ] && return
  ffmpeg -nostdin -loglevel error -y -f lavfi -i "sine=frequency=$3:duration=$2" \
    -ac 2 -b:a 128k "$MEDIA/.$1" && mv "$MEDIA/.$1" "$MEDIA/$1"
}
tone long.mp3 400 440
for i in 1 2 3 4 5 6 7 8; do tone "t$i.mp3" 30 $((200 + 50 * i)); done
# Both servers read them from the page cache.
cat "$MEDIA"/*.mp3 >/dev/null

NGINX_PID=""
cleanup() {
  stop_server
  if [ -n "$NGINX_PID" ]; then kill -TERM "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# nginx_server: starts nginx on a free port; sets NGINX_PID and URL.
nginx_server() {
  local port dir=$OUT/nginx
  port=$(free_port)
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<EOF
worker_processes $(nproc);
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  sendfile on;
  tcp_nopush on;
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $dir;
  default_type audio/mpeg;
  server {
    listen 127.0.0.1:$port;
    location /media/ { alias $MEDIA/; }
  }
}
EOF
  nginx -c "$dir/nginx.conf" -p "$dir" 2>"$dir/stderr.log" &
  NGINX_PID=$!
  URL="http://127.0.0.1:$port"
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "bench: nginx did not start; see $dir/error.log" >&2
  exit 1
}

stop_nginx() {
  kill -TERM "$NGINX_PID" 2>/dev/null || true
  wait "$NGINX_PID" 2>/dev/null || true
  NGINX_PID=""
}

# cpu_ticks PID...: utime + stime of each process (all its threads), summed.
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do
    # Fields 14 and 15, counted after the command's closing parenthesis.
    total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

# measure NAME MODE ROUND PIDS...: one wrk run against URL; writes its JSON.
measure() {
  local name=$1 mode=$2 round=$3
  shift 3
  local script=bench/media-whole.lua
  [ "$mode" = ranges ] && script=bench/media-ranges.lua
  local before after out=$OUT/$name-$mode-$round.json
  before=$(cpu_ticks "$@")
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$script" "$URL" >"$OUT/$name-$mode-$round.wrk" 2>&1
  after=$(cpu_ticks "$@")
  local summary
  summary=$(grep '^JSON ' "$OUT/$name-$mode-$round.wrk" | sed 's/^JSON //')
  jq -n --argjson s "$summary" --arg name "$name" --arg mode "$mode" \
    --argjson cpu "$(echo "($after - $before) / $TICK" | bc -l)" \
    '$s + {server: $name, mode: $mode, cpu_s: $cpu,
      gb_per_s: ($s.bytes / 1e9 / $s.seconds),
      cpu_s_per_gb: (if $s.bytes > 0 then $cpu / ($s.bytes / 1e9) else null end)}' >"$out"
  jq -c '{server, mode, gb_per_s, cpu_s_per_gb, requests, errors, non2xx}' "$out"
}

uptime | tee "$OUT/uptime.txt"
for round in $(seq "$ROUNDS"); do
  order="radio nginx"
  [ $((round % 2)) -eq 0 ] && order="nginx radio"
  for server in $order; do
    if [ "$server" = radio ]; then
      start_radio "$RADIO" "$OUT/radio-$round.log" --media "$MEDIA"
      URL="http://$SERVER_ADDR"
      pids=$SERVER_PID
    else
      nginx_server
      sleep 0.5
      pids="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
    fi
    for mode in $MODES; do
      # shellcheck disable=SC2086
      measure "$server" "$mode" "$round" $pids
    done
    if [ "$server" = radio ]; then stop_server; else stop_nginx; fi
  done
done
uptime | tee -a "$OUT/uptime.txt"

{
  echo "| mode | radio GB/s | nginx GB/s | throughput radio/nginx | radio CPU s/GB | nginx CPU s/GB | CPU/GB radio/nginx |"
  echo "|---|---|---|---|---|---|---|"
  for mode in $MODES; do
    jq -rs --arg mode "$mode" '
      def med: sort | .[length/2|floor];
      [.[] | select(.mode == $mode)] as $runs
      | ($runs | map(select(.server == "radio"))) as $r
      | ($runs | map(select(.server == "nginx"))) as $n
      | ($r | map(.gb_per_s) | med) as $rt | ($n | map(.gb_per_s) | med) as $nt
      | ($r | map(.cpu_s_per_gb) | med) as $rc | ($n | map(.cpu_s_per_gb) | med) as $nc
      # Per-round ratios (same round, alternated), then their median.
      | ([range(0; [$r, $n] | map(length) | min)] | map($r[.].gb_per_s / $n[.].gb_per_s) | med) as $tr
      | ([range(0; [$r, $n] | map(length) | min)] | map($r[.].cpu_s_per_gb / $n[.].cpu_s_per_gb) | med) as $cr
      | "| \($mode) | \($rt*100|round/100) | \($nt*100|round/100) | \($tr*100|round/100)x | \($rc*1000|round/1000) | \($nc*1000|round/1000) | \($cr*100|round/100)x |"
    ' "$OUT"/*-"$mode"-*.json
  done
} | tee "$OUT/summary.md"

#!/usr/bin/env bash
# bench/icecast.sh: radio's stream against Icecast's, side by side.
#
# The same number of stream listeners (`radio loadtest --stream`) read
#   icecast  icecast2 (the Debian package), fed by `ffmpeg -re` encoding the
#            file to MP3 at 128 kb/s (one encoder, as radio has per station)
#   radio    `radio serve --station bench=library` playing the same file,
#            its own stream (/stations/bench/stream, MP3 at 128 kb/s)
# alternated (icecast first in odd rounds, radio first in even ones), for
# ROUNDS rounds. Each run records the server's CPU over the run phase (from
# /proc/PID/stat: icecast plus ffmpeg; radio plus any process it started,
# such as an encoder), the stalls (over 1 s without audio), the start time
# (request to first audio byte) at p99, and the audio lost. Compare the
# ratios of a round, which survive a busy machine better than absolutes.
#
#   bench/icecast.sh                         # 2,000 listeners, 3 rounds of 30 s
#   bench/icecast.sh 10000 3 30s             # LISTENERS ROUNDS DURATION
#   LISTENERS=100 ROUNDS=1 DURATION=5s bench/icecast.sh   # a quick check
# Environment (or the arguments, in that order):
#   LISTENERS  stream listeners per run (default 2000)
#   ROUNDS     alternating rounds (default 3)
#   DURATION   the run phase of each loadtest (default 30s)
#   RADIO      the radio binary (default: target/release/radio, built here
#              with `cargo build --release --locked`)
#   FILE       an MP3 to play (default: 3 minutes of generated music-like
#              sound, MP3 128 kb/s CBR)
#   CONNECT_RATE  new readers a second (default 0: as fast as accepted, at
#              most 256 connecting per worker: a connect storm)
#   SIDES      which sides to run (default "icecast radio")
#   OUT        where the JSON reports, logs and the table go (default
#              bench/out/icecast-LISTENERS, not committed); the table
#              (table.md) is to be copied into bench/RESULTS.md
#   ICECAST_ENCODE  `copy` to feed Icecast the file's MP3 frames as they are
#              (no encoder: Icecast's cheapest setup) instead of encoding
#
# Needs: icecast2 and ffmpeg (installed with apt-get when missing and run
# as root), jq. Limits: a process may open 20,000 files here, so icecast
# and radio take at most ~19,000 listeners each; the load generator spreads
# readers over 127.0.0.x source addresses (10,000 each, ~28,000 ports per
# address) and worker processes (15,000 each) by itself.
set -euo pipefail

LISTENERS=${1:-${LISTENERS:-2000}}
ROUNDS=${2:-${ROUNDS:-3}}
DURATION=${3:-${DURATION:-30s}}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${RADIO:-}" ]; then
  (cd "$ROOT" && cargo build --release --locked --quiet)
  RADIO=$ROOT/target/release/radio
fi
SIDES=${SIDES:-icecast radio}
CONNECT_RATE=${CONNECT_RATE:-0}
OUT=${OUT:-$ROOT/bench/out/icecast-$LISTENERS}
ICECAST_ENCODE=${ICECAST_ENCODE:-encode}
SETTLE=3
mkdir -p "$OUT"

say() { printf '%s\n' "$*" >&2; }
die() { say "bench/icecast.sh: $*"; exit 1; }

# --- setup (the bench's own, not CI's) ---
need_apt() {
  command -v "$1" >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] || die "$1 is missing; install it (apt-get install $2) or run as root"
  say "installing $2 ..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >"$OUT/apt-$2.log" 2>&1 \
    || die "apt-get install $2 failed (see $OUT/apt-$2.log)"
}
need_apt icecast2 icecast2
need_apt ffmpeg ffmpeg
need_apt jq jq
[ -x "$RADIO" ] || die "no radio binary at $RADIO (cargo build --release --locked, or set RADIO)"
"$RADIO" loadtest --help | grep -q -- '--stream' || die "$RADIO has no loadtest --stream"

MEDIA=$OUT/media
rm -rf "$MEDIA" "$OUT"/table.md
mkdir -p "$MEDIA"
if [ -n "${FILE:-}" ]; then
  cp "$FILE" "$MEDIA/bench.mp3"
else
  # Pink noise under a slow chord: not silence, which encoders make cheap.
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "anoisesrc=color=pink:amplitude=0.2:duration=180" \
    -f lavfi -i "sine=frequency=220:duration=180" \
    -f lavfi -i "sine=frequency=277:duration=180" \
    -filter_complex "[0][1][2]amix=inputs=3,volume=2" \
    -ar 44100 -ac 2 -c:a libmp3lame -b:a 128k \
    -metadata title="Bench" -metadata artist="radio" "$MEDIA/bench.mp3"
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # URL SECONDS: until the URL answers 200 (headers only)
  local url=$1 limit=$2 i code
  for ((i = 0; i < limit * 10; i++)); do
    # A stream never ends: curl gives up after a second, having said the code.
    code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" 2>/dev/null || true)
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap cleanup EXIT

loadtest() { # SIDE ROUND PIDS ARGS...: one loadtest run, its JSON kept
  local side=$1 round=$2 pids=$3
  shift 3
  local json=$OUT/$side-$round.json
  "$RADIO" loadtest --stream --listeners "$LISTENERS" --duration "$DURATION" \
    --connect-rate "$CONNECT_RATE" \
    --server-pid "$pids" --json "$json" "$@" >"$OUT/$side-$round.log" 2>&1 \
    || say "  ($side: loadtest exited $?; see $OUT/$side-$round.log)"
  [ -s "$json" ] || die "$side round $round: no report (see $OUT/$side-$round.log)"
  summary "$side" "$round" "$json"
}

summary() { # SIDE ROUND JSON: one table row
  jq -r --arg side "$1" --arg round "$2" '
    [ $round, $side, .readers.started, .readers.failed, .readers.ended,
      (.server.cpu_seconds_run | tostring),
      (.server_cpu_us_per_reader_s | tostring),
      .stalls.count, .stalls.readers,
      (.start_ms.p50 | tostring), (.start_ms.p99 | tostring),
      (.audio.bytes_per_s.p50 | tostring), (.audio.lost_pct | tostring),
      (.generator.cpu_pct_of_machine_run | tostring) ]
    | "| " + join(" | ") + " |"' "$3" | tee -a "$OUT/table.md"
}

run_icecast() { # ROUND
  local port dir=$OUT/icecast-$1
  port=$(free_port)
  mkdir -p "$dir"
  chmod 777 "$dir"
  local owner=""
  if [ "$(id -u)" = 0 ]; then
    # icecast2 will not run as root; it drops to its own user.
    owner="<changeowner><user>icecast2</user><group>icecast</group></changeowner>"
  fi
  cat >"$dir/icecast.xml" <<EOF
<icecast>
  <location>bench</location><admin>bench@localhost</admin><hostname>127.0.0.1</hostname>
  <limits>
    <clients>$((LISTENERS + 100))</clients><sources>2</sources>
    <queue-size>524288</queue-size><client-timeout>30</client-timeout>
    <header-timeout>15</header-timeout><source-timeout>10</source-timeout>
    <burst-on-connect>1</burst-on-connect><burst-size>32000</burst-size>
  </limits>
  <authentication>
    <source-password>bench</source-password><relay-password>bench</relay-password>
    <admin-user>admin</admin-user><admin-password>bench</admin-password>
  </authentication>
  <listen-socket><port>$port</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>1</fileserve>
  <paths>
    <basedir>/usr/share/icecast2</basedir><logdir>$dir</logdir>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>
  </paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>2</loglevel></logging>
  <security><chroot>0</chroot>$owner</security>
</icecast>
EOF
  icecast2 -c "$dir/icecast.xml" >"$dir/stdout.log" 2>&1 &
  local ice=$!
  PIDS+=("$ice")
  sleep 0.5
  local codec=(-c:a libmp3lame -b:a 128k -ar 44100 -ac 2)
  [ "$ICECAST_ENCODE" = copy ] && codec=(-c:a copy)
  ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i "$MEDIA/bench.mp3" \
    "${codec[@]}" -content_type audio/mpeg -ice_name bench -f mp3 \
    "icecast://source:bench@127.0.0.1:$port/bench.mp3" >"$dir/ffmpeg.log" 2>&1 &
  local ff=$!
  PIDS+=("$ff")
  wait_http "http://127.0.0.1:$port/bench.mp3" 15 || die "icecast's mount did not come up (see $dir)"
  sleep "$SETTLE" # its burst queue fills, as a station's playing already
  loadtest icecast "$1" "$ice,$ff" --url "http://127.0.0.1:$port/bench.mp3"
  cleanup
}

run_radio() { # ROUND
  local port dir=$OUT/radio-$1
  port=$(free_port)
  mkdir -p "$dir"
  "$RADIO" serve --listen "127.0.0.1:$port" --media "$MEDIA" --station bench=library \
    --max-connections-per-ip 0 --log-format json >"$dir/serve.log" 2>&1 &
  local srv=$!
  PIDS+=("$srv")
  wait_http "http://127.0.0.1:$port/stations/bench/stream.m3u" 30 \
    || die "radio's station did not come up (see $dir/serve.log)"
  sleep "$SETTLE"
  loadtest radio "$1" "$srv" --url "http://127.0.0.1:$port" --listen-only bench
  cleanup
}

say "bench/icecast.sh: $LISTENERS listeners (connect rate $CONNECT_RATE), $ROUNDS rounds of $DURATION; reports in $OUT"
say "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) CPUs, $(uptime)"
{
  echo "| round | side | started | failed | ended | server CPU s | µs CPU/listener/s | stalls | stalled listeners | start p50 ms | start p99 ms | B/s p50 | lost % | generator CPU % |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} | tee "$OUT/table.md"
for ((round = 1; round <= ROUNDS; round++)); do
  order=$SIDES
  if ((round % 2 == 0)); then
    order=$(echo "$SIDES" | tr ' ' '\n' | tac | tr '\n' ' ')
  fi
  for side in $order; do
    "run_$side" "$round"
  done
done
say "load average at the end: $(uptime)"
# Medians over the rounds, per side.
for side in $SIDES; do
  jq -rs --arg side "$side" '
    def median: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
    "\($side): median over \(length) rounds: \(map(.server_cpu_us_per_reader_s) | median) µs CPU per listener-second, start p99 \(map(.start_ms.p99) | median) ms, stalls \(map(.stalls.count) | add), lost \(map(.audio.lost_pct) | median)%, failed \(map(.readers.failed) | add)"
  ' "$OUT"/"$side"-*.json | tee -a "$OUT/table.md"
done
if [[ "$SIDES" == *icecast* && "$SIDES" == *radio* ]]; then
  # Per round: radio's CPU per listener over Icecast's (below 1: radio is cheaper).
  for ((round = 1; round <= ROUNDS; round++)); do
    jq -rn --slurpfile r "$OUT/radio-$round.json" --slurpfile i "$OUT/icecast-$round.json" \
      --arg round "$round" '
      "round \($round): radio/icecast CPU per listener = \(
        if ($i[0].server_cpu_us_per_reader_s // 0) > 0
        then (($r[0].server_cpu_us_per_reader_s / $i[0].server_cpu_us_per_reader_s) * 100 | round / 100)
        else "-" end), start p99 = \(
        if ($i[0].start_ms.p99 // 0) > 0
        then (($r[0].start_ms.p99 / $i[0].start_ms.p99) * 100 | round / 100)
        else "-" end)"' | tee -a "$OUT/table.md"
  done
fi

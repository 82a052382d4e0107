#!/usr/bin/env bash
# A rescan of an unchanged library of 10,000 files: how long it takes, and
# that it decodes nothing (each file's loudness is measured once).
# Usage: bench/rescan.sh [FILES] [RUNS]   (default 10000 files, 3 rescans)
#
# Builds the release binary (or takes RADIO_BIN), writes FILES tiny WAV
# files (0.1 s of a tone each, 100 to a folder) in a temporary folder,
# starts `radio serve --media` on them with the library's debug log, and
# waits until every file is scanned and measured. Then it sends SIGHUP RUNS
# times, each after the last rescan ended, and reads each rescan's own time
# from its log line ("media library rescanned, unchanged ... elapsed_ms=N"),
# and the wall time from the signal to that line. Prints each run and the
# medians, and fails if radio_library_loudness_measured_total moved (a
# rescan decoded a file) or a rescan took 2 s or more.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

n=${1:-10000}
runs=${2:-3}
bin=${RADIO_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --locked -q
  bin=./target/release/radio
fi
dir=$(mktemp -d)
trap 'stop_server; rm -rf "$dir"' EXIT

python3 - "$dir/media" "$n" <<'EOF'
import math, os, struct, sys
root, n = sys.argv[1], int(sys.argv[2])
rate, frames = 8000, 800
data = b"".join(
    struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
    for i in range(frames)
)
wav = (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
       + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
       + b"data" + struct.pack("<I", len(data)) + data)
for i in range(n):
    folder = os.path.join(root, f"{i // 100:03d}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{i:05d}.wav"), "wb") as f:
        f.write(wav)
EOF
echo "bench: $n files in $dir/media"

export RUST_LOG=info,radio::server::media=debug
log=$dir/log
start_radio "$bin" "$log" --media "$dir/media" --loudness-cache "$dir/loudness.jsonl"

metric() {
  curl -sf "http://$SERVER_ADDR/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}
for _ in $(seq 600); do
  [ "$(metric radio_library_tracks)" = "$n" ] && [ "$(metric radio_library_loudness_pending)" = "0" ] &&
    [ "$(metric radio_library_loudness_measured_total)" = "$n" ] && break
  sleep 1
done
measured=$(metric radio_library_loudness_measured_total)
[ "$measured" = "$n" ] || { echo "bench: only $measured of $n files measured; see $log" >&2; exit 1; }
echo "bench: $n tracks scanned and measured"

scan_ms=()
wall_ms=()
for run in $(seq "$runs"); do
  before=$(grep -c 'media library rescanned' "$log" || true)
  t0=$(date +%s%N)
  kill -HUP "$SERVER_PID"
  for _ in $(seq 600); do
    [ "$(grep -c 'media library rescanned' "$log" || true)" -gt "$before" ] && break
    sleep 0.01
  done
  t1=$(date +%s%N)
  line=$(grep 'media library rescanned' "$log" | tail -1)
  case $line in
    *unchanged*) ;;
    *) echo "bench: rescan $run found changes: $line" >&2; exit 1 ;;
  esac
  ms=$(grep -o 'elapsed_ms=[0-9]*' <<<"$line" | cut -d= -f2)
  scan_ms+=("$ms")
  wall_ms+=("$(((t1 - t0) / 1000000))")
  echo "rescan $run: elapsed_ms=$ms (SIGHUP to log line: ${wall_ms[-1]} ms)"
done

# Rescans wake the measuring thread: give it time to (not) decode.
sleep 1
after=$(metric radio_library_loudness_measured_total)
[ "$after" = "$n" ] || { echo "bench: a rescan decoded files ($n -> $after)" >&2; exit 1; }

med() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
scan=$(med "${scan_ms[@]}")
wall=$(med "${wall_ms[@]}")
echo "files=$n runs=$runs rescan_median_ms=$scan sighup_to_log_median_ms=$wall loudness_measured_total=$after (unchanged)"
[ "$wall" -lt 2000 ] || { echo "bench: a rescan took 2 s or more" >&2; exit 1; }

#!/usr/bin/env bash
# A soak: one `radio serve` (release build) holding LISTENERS (10,000)
# listeners for DURATION (1h) while CHURN (1000/min) of them disconnect and
# are replaced, and a broadcaster updates its station every second. Every
# 10 s the server's resident memory, open files, threads, runtime tasks,
# WebSocket connections and listeners go to a CSV; at the end the script
# compares the first minute after the ramp with the last minute of the run
# and says, per figure, whether it ended within 5% of where it started.
#
#   bench/soak.sh                                 # the full hour
#   DURATION=5m LISTENERS=2000 CHURN=200/min bench/soak.sh   # a quick look
#
# Out: bench/out/soak/samples.csv, loadtest.log, report.json, server.log,
# summary.md (for bench/RESULTS.md). The binary is copied to bench/out/soak
# first, so a rebuild while the soak runs does not change what is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

LISTENERS=${LISTENERS:-10000}
DURATION=${DURATION:-1h}
CHURN=${CHURN:-1000/min}
INTERVAL=${INTERVAL:-10}
TOLERANCE_PCT=${TOLERANCE_PCT:-5}
OUT=${OUT:-bench/out/soak}

command -v curl >/dev/null || { echo "bench: needs curl" >&2; exit 1; }
mkdir -p "$OUT"
if [ -z "${RADIO_BIN:-}" ]; then
  cargo build --release --locked --quiet
  RADIO_BIN=target/release/radio
fi
cp "$RADIO_BIN" "$OUT/radio"
BIN=$OUT/radio

LOADTEST_PID=""
cleanup() {
  if [ -n "$LOADTEST_PID" ]; then
    kill -TERM "$LOADTEST_PID" 2>/dev/null || true
    wait "$LOADTEST_PID" 2>/dev/null || true
  fi
  stop_server
}
trap cleanup EXIT

start_radio "$BIN" "$OUT/server.log"
echo "soak: server pid $SERVER_PID at $SERVER_ADDR; $LISTENERS listeners, $CHURN churn, for $DURATION"

# metric NAME: the value of an unlabelled series in the scrape in $SCRAPE.
metric() {
  awk -v n="$1" '$1 == n { print $2; exit }' <<<"$SCRAPE"
}

# sample PHASE: one CSV row.
sample() {
  local status rss threads fds
  status=$(cat "/proc/$SERVER_PID/status" 2>/dev/null) || return 0
  rss=$(awk '/^VmRSS:/ { print $2 * 1024 }' <<<"$status")
  threads=$(awk '/^Threads:/ { print $2 }' <<<"$status")
  fds=$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  SCRAPE=$(curl -s --max-time 5 "http://$SERVER_ADDR/metrics" || true)
  echo "$(date -u +%s),$1,$rss,$fds,$threads,$(metric radio_runtime_tasks),$(metric radio_connections),$(metric radio_listeners),$(metric radio_connections_accepted_total)" >>"$OUT/samples.csv"
}

echo "unix_s,phase,rss_bytes,open_files,threads,runtime_tasks,connections,listeners,connections_accepted_total" >"$OUT/samples.csv"
sample before

"$BIN" loadtest --url "$SERVER_ADDR" --listeners "$LISTENERS" --stations 1 \
  --update-interval 1s --duration "$DURATION" --churn "$CHURN" --connect-rate 1000 \
  --server-pid "$SERVER_PID" --json "$OUT/report.json" >"$OUT/loadtest.log" 2>&1 &
LOADTEST_PID=$!

while kill -0 "$LOADTEST_PID" 2>/dev/null; do
  if grep -q 'ramp done' "$OUT/loadtest.log"; then phase=run; else phase=ramp; fi
  sample "$phase"
  sleep "$INTERVAL"
done
status=0
wait "$LOADTEST_PID" || status=$?
LOADTEST_PID=""
sleep "$INTERVAL"
sample after
stop_server

python3 - "$OUT/samples.csv" "$TOLERANCE_PCT" "$LISTENERS" "$DURATION" "$CHURN" "$status" >"$OUT/summary.md" <<'EOF'
import csv, statistics, sys
path, tol, listeners, duration, churn, status = sys.argv[1:]
tol = float(tol)
rows = list(csv.DictReader(open(path)))
run = [r for r in rows if r["phase"] == "run"]
cols = ["rss_bytes", "open_files", "threads", "runtime_tasks", "connections", "listeners"]
print(f"soak: {listeners} listeners, {churn} churn, {duration}; loadtest exit {status}; {len(run)} samples in the run")
if len(run) < 12:
    print("too few samples in the run phase to compare its start and end")
    sys.exit(0)
# A minute at each end (six samples), as medians: one sample may catch a
# churn or a scrape at a bad moment.
head, tail = run[:6], run[-6:]
def med(rs, c):
    vals = [float(r[c]) for r in rs if r[c] not in ("", None)]
    return statistics.median(vals) if vals else None
ok_all = True
print()
print("| figure | start (first minute) | end (last minute) | change | within %g%% |" % tol)
print("|---|---|---|---|---|")
for c in cols:
    a, b = med(head, c), med(tail, c)
    if a is None or b is None:
        print(f"| {c} | {a} | {b} | n/a | n/a |")
        continue
    change = (b - a) / a * 100 if a else 0.0
    ok = abs(change) <= tol
    if c == "threads":
        # Tokio's blocking pool starts and ends threads by itself (a file
        # read, a DNS lookup): shown, not judged; tasks are the leak check.
        print(f"| {c} | {a:.0f} | {b:.0f} | {change:+.1f}% | (not judged) |")
        continue
    ok_all &= ok
    fmt = (lambda v: f"{v/1048576:.1f} MiB") if c == "rss_bytes" else (lambda v: f"{v:.0f}")
    print(f"| {c} | {fmt(a)} | {fmt(b)} | {change:+.1f}% | {'yes' if ok else 'NO'} |")
accepted = [float(r["connections_accepted_total"]) for r in run if r["connections_accepted_total"]]
if len(accepted) >= 2:
    mins = (int(run[-1]["unix_s"]) - int(run[0]["unix_s"])) / 60
    print(f"\nconnections accepted during the run: {accepted[-1]-accepted[0]:.0f} over {mins:.0f} min")
before = [r for r in rows if r["phase"] == "before"]
after = [r for r in rows if r["phase"] == "after"]
if before and after:
    b, a = before[0], after[-1]
    print(f"idle before/after: rss {float(b['rss_bytes'])/1048576:.1f} -> {float(a['rss_bytes'])/1048576:.1f} MiB, "
          f"open files {b['open_files']} -> {a['open_files']}, tasks {b['runtime_tasks']} -> {a['runtime_tasks']}, "
          f"threads {b['threads']} -> {a['threads']}")
print(f"\nverdict: {'every figure ended within ' + str(tol) + '% of its start' if ok_all else 'some figure did NOT end within ' + str(tol) + '%'}")
EOF
cat "$OUT/summary.md"
exit "$status"

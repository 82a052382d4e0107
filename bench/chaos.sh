#!/usr/bin/env bash
# A chaos run, repeatable: three `radio serve` nodes behind Redis with a
# replica and three Sentinels, LISTENERS (30,000) listeners spread over the
# nodes by one `radio loadtest --reconnect` naming all three, STATIONS (10)
# stations updating once a second; then, GAP (30) seconds apart:
#
#   1. kill -9 the Redis master (the Sentinels promote the replica);
#   2. kill -9 the node that owns most stations;
#   3. start that node again;
#   4. SIGSTOP a node (the one owning most stations then) for 20 s, SIGCONT.
#
# Each fault is marked (SIGUSR1 to the load generator), which reports per
# mark: seconds until every listener held its station's newest state again,
# reconnects, seq regressions, listeners without a connection at the next
# mark. The script adds the stations whose owner changed (Redis leases,
# read before the fault and before the next one).
#
#   bench/chaos.sh                                  # the full run
#   LISTENERS=3000 GAP=20 bench/chaos.sh            # a quick look
#
# Out: bench/out/chaos/ (node logs, loadtest.log, report.json, summary.md).
# Needs redis-server (with its Sentinel mode), redis-cli, curl, jq, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

LISTENERS=${LISTENERS:-30000}
STATIONS=${STATIONS:-10}
GAP=${GAP:-30}
STOP_FOR=${STOP_FOR:-20}
OUT=${OUT:-bench/out/chaos}
MASTER=radiomaster

for tool in redis-server redis-cli curl jq python3; do
  command -v "$tool" >/dev/null || { echo "bench: needs $tool" >&2; exit 1; }
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/*.log "$OUT"/*.conf "$OUT"/owners-* "$OUT"/report.json "$OUT"/summary.md
if [ -z "${RADIO_BIN:-}" ]; then
  cargo build --release --locked --quiet
  RADIO_BIN=target/release/radio
fi
cp "$RADIO_BIN" "$OUT/radio"
BIN=$OUT/radio

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

declare -A REDIS_PID      # port -> pid
SENTINEL_PORTS=()
SENTINEL_PIDS=()
NODE_PORTS=()
NODE_PIDS=()
LOADTEST_PID=""

cleanup() {
  for pid in "${NODE_PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; done
  [ -n "$LOADTEST_PID" ] && kill -TERM "$LOADTEST_PID" 2>/dev/null || true
  for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${SENTINEL_PIDS[@]}" "${REDIS_PID[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# --- Redis: a master, its replica, three Sentinels -------------------------
redis_common=(--bind 127.0.0.1 --save "" --appendonly no)
master_port=$(free_port)
replica_port=$(free_port)
redis-server --port "$master_port" "${redis_common[@]}" >"$OUT/redis-$master_port.log" 2>&1 &
REDIS_PID[$master_port]=$!
redis-server --port "$replica_port" --replicaof 127.0.0.1 "$master_port" "${redis_common[@]}" \
  >"$OUT/redis-$replica_port.log" 2>&1 &
REDIS_PID[$replica_port]=$!
for i in 0 1 2; do
  port=$(free_port)
  cat >"$OUT/sentinel-$i.conf" <<EOF
port $port
bind 127.0.0.1
dir $OUT
sentinel monitor $MASTER 127.0.0.1 $master_port 2
sentinel down-after-milliseconds $MASTER 1500
sentinel failover-timeout $MASTER 6000
sentinel parallel-syncs $MASTER 1
EOF
  redis-server "$OUT/sentinel-$i.conf" --sentinel >"$OUT/sentinel-$i.log" 2>&1 &
  SENTINEL_PORTS+=("$port")
  SENTINEL_PIDS+=($!)
done

# until DESCRIPTION CMD...: retries CMD every 0.2 s for 30 s.
until_ok() {
  local what=$1
  shift
  for _ in $(seq 150); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "chaos: $what did not happen within 30 s" >&2
  exit 1
}
replica_synced() { redis-cli -p "$replica_port" info replication | grep -q 'master_link_status:up'; }
sentinels_settled() {
  local p
  for p in "${SENTINEL_PORTS[@]}"; do
    [ "$(redis-cli -p "$p" sentinel replicas $MASTER | grep -c '^flags$')" -ge 1 ] || return 1
    [ "$(redis-cli -p "$p" sentinel sentinels $MASTER | grep -c '^flags$')" -eq 2 ] || return 1
  done
}
until_ok "the replica's sync" replica_synced
until_ok "the Sentinels' discovery of the replica and each other" sentinels_settled

# The master's port, as the first Sentinel that answers names it.
current_master() {
  local p
  for p in "${SENTINEL_PORTS[@]}"; do
    if redis-cli -p "$p" sentinel get-master-addr-by-name $MASTER 2>/dev/null | sed -n 2p | grep .; then
      return 0
    fi
  done
  return 1
}

# --- the nodes -------------------------------------------------------------
hosts=$(printf '127.0.0.1:%s,' "${SENTINEL_PORTS[@]}")
REDIS_URL="redis+sentinel://${hosts%,}/$MASTER"
start_node() { # start_node I
  local i=$1
  "$BIN" serve --listen "127.0.0.1:${NODE_PORTS[$i]}" --redis "$REDIS_URL" --node-id "n$i" \
    --max-connections-per-ip 0 --max-stations-per-ip 0 --claim-rate 0 \
    >/dev/null 2>>"$OUT/node$i.log" &
  NODE_PIDS[$i]=$!
}
node_ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${NODE_PORTS[$1]}/readyz")" = 200 ]; }
urls=()
for i in 0 1 2; do
  NODE_PORTS[$i]=$(free_port)
  start_node "$i"
  urls+=(--url "ws://127.0.0.1:${NODE_PORTS[$i]}/ws")
done
for i in 0 1 2; do until_ok "node $i ready" node_ready "$i"; done

# owners FILE: "station node" per station with a lease, from the master.
owners() {
  local m key holder
  m=$(current_master) || { : >"$1"; return; }
  : >"$1"
  for key in $(redis-cli -p "$m" --scan --pattern 'radio:lease:*'); do
    holder=$(redis-cli -p "$m" get "$key")
    holder=${holder#grace:}
    echo "${key#radio:lease:} ${holder%%:*}" >>"$1"
  done
  sort -o "$1" "$1"
}
most_owning_node() { # the index of the node holding most leases now
  owners "$OUT/owners-now"
  awk '{print $2}' "$OUT/owners-now" | sort | uniq -c | sort -rn | awk 'NR==1 {sub(/^n/, "", $2); print $2}'
}

# --- the load --------------------------------------------------------------
DURATION=$((GAP * 5 + 10))
"$BIN" loadtest "${urls[@]}" --listeners "$LISTENERS" --stations "$STATIONS" \
  --update-interval 1s --duration "${DURATION}s" --reconnect --connect-rate 3000 \
  --json "$OUT/report.json" >"$OUT/loadtest.log" 2>&1 &
LOADTEST_PID=$!
until_ok_long() { for _ in $(seq 600); do grep -q 'ramp done' "$OUT/loadtest.log" && return 0; sleep 0.5; done; return 1; }
until_ok_long || { echo "chaos: the ramp did not finish; see $OUT/loadtest.log" >&2; exit 1; }
echo "chaos: ramp done; $(uptime)"
sleep "$GAP"

FAULTS=()
# fault N NAME: marks the moment, keeps the owners before it.
mark() {
  owners "$OUT/owners-before-$1"
  kill -USR1 "$LOADTEST_PID"
  FAULTS+=("$2")
  echo "chaos: fault $1 at $(date -u +%T): $2"
}

old_master=$(current_master)
mark 1 "kill -9 the Redis master"
kill -9 "${REDIS_PID[$old_master]}"
unset "REDIS_PID[$old_master]"
sleep "$GAP"

victim=$(most_owning_node)
mark 2 "kill -9 node n$victim (owned most stations)"
kill -9 "${NODE_PIDS[$victim]}"
sleep "$GAP"

mark 3 "start node n$victim again"
start_node "$victim"
sleep "$GAP"

frozen=$(most_owning_node)
mark 4 "SIGSTOP node n$frozen (owned most stations) for ${STOP_FOR}s, then SIGCONT"
kill -STOP "${NODE_PIDS[$frozen]}"
sleep "$STOP_FOR"
kill -CONT "${NODE_PIDS[$frozen]}"
sleep $((GAP - STOP_FOR > 0 ? GAP - STOP_FOR : 1))
owners "$OUT/owners-before-5"

status=0
wait "$LOADTEST_PID" || status=$?
LOADTEST_PID=""

# --- the table -------------------------------------------------------------
{
  echo "chaos: $LISTENERS listeners, $STATIONS stations at 1 update/s, 3 nodes, Redis master + replica + 3 Sentinels; faults $GAP s apart; loadtest exit $status"
  echo
  echo "| # | fault | converged after | reconnects | seq regressions | listeners down at next fault | stations that changed owner |"
  echo "|---|---|---|---|---|---|---|"
  for n in 1 2 3 4; do
    changed=$(join "$OUT/owners-before-$n" "$OUT/owners-before-$((n + 1))" | awk '$2 != $3' | wc -l)
    gone=$(join -v1 "$OUT/owners-before-$n" "$OUT/owners-before-$((n + 1))" | wc -l)
    jq -r --arg n "$n" --arg fault "${FAULTS[$((n - 1))]}" --arg changed "$changed" --arg gone "$gone" \
      '.marks[] | select(.n == ($n|tonumber)) |
       "| \(.n) | \($fault) | \(if .converged_after_s == null then "not converged" else "\(.converged_after_s) s" end) | \(.reconnects) | \(.seq_regressions) | \(.down_at_end) | \($changed) (\($gone) without a lease) |"' \
      "$OUT/report.json"
  done
  echo
  jq -r '"at the end: \(.listeners.connected) listeners connected at first, \(.listeners.down_at_end) without a connection (lost for good), \(.listeners.reconnects) reconnects, broadcasters resumed \(.listeners.broadcaster_resumes) times; final-state delivery \(.final_state_delivery_pct)%, seq regressions \(.seq_regressions)"' "$OUT/report.json"
  echo "load average at the end: $(uptime)"
} >"$OUT/summary.md"
cat "$OUT/summary.md"

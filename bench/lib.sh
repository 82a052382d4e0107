# Shared by the bench/ scripts (sourced, not run): starting and stopping a
# `radio serve`, and taking medians of report fields with jq.

SERVER_PID=""

# start_radio BIN LOG [FLAGS...]: starts `BIN serve --listen 127.0.0.1:0`
# with its log in LOG; sets SERVER_PID and SERVER_ADDR (host:port).
start_radio() {
  local bin=$1 log=$2
  shift 2
  # Every listener comes from a few loopback addresses, and every
  # broadcaster from one: no per-address cap on connections or stations.
  "$bin" serve --listen 127.0.0.1:0 --max-connections-per-ip 0 \
    --max-stations-per-ip 0 --claim-rate 0 "$@" >/dev/null 2>"$log" &
  SERVER_PID=$!
  SERVER_ADDR=""
  for _ in $(seq 300); do
    SERVER_ADDR=$(grep -so 'listening on https\?://[0-9.:]*' "$log" | sed 's|listening on https\?://||' || true)
    [ -n "$SERVER_ADDR" ] && return
    sleep 0.1
  done
  echo "bench: the server did not start; see $log" >&2
  exit 1
}

# stop_server: SIGTERM to SERVER_PID and wait for it (also the EXIT trap).
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}

# median JQ_EXPR FILES...: the median of a field over reports (null when none).
median() {
  local expr=$1
  shift
  jq -s "[.[] | $expr | select(. != null)] | sort | if length == 0 then null else .[length/2|floor] end" "$@"
}

#!/bin/bash
# Stop the throwaway PostgreSQL server that db/postgres/start.sh started in STATE_DIR.
#
#   db/postgres/stop.sh [STATE_DIR]      # default /tmp/campaign-postgres
#
# Fast shutdown (open sessions are disconnected); KILLs the recorded postmaster PID if it does
# not end within the deadline. Keeps the data; delete STATE_DIR for an empty server. Stopping a
# server that does not run is not an error.
set -euo pipefail

STATE_DIR=${1:-/tmp/campaign-postgres}
[ -d "$STATE_DIR" ] || { echo "postgres/stop: no $STATE_DIR, nothing to stop" >&2; exit 0; }
STATE_DIR=$(cd "$STATE_DIR" && pwd -P)
TIMEOUT_S=${CAMPAIGN_PG_STOP_TIMEOUT_S:-30}
DATA="$STATE_DIR/data"

log() { echo "postgres/stop: $*" >&2; }

exec 9>"$STATE_DIR/.lock"
flock -w 120 9 || { log "ERROR: another start/stop holds $STATE_DIR/.lock"; exit 1; }

alive() { # alive PID -> 0 when PID is a live (not zombie) process called postgres
  local stat comm state
  [ -n "$1" ] || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  comm=${stat#*(}; comm=${comm%%)*}
  state=${stat##*) }; state=${state%% *}
  [ "$state" != Z ] && [ "$state" != X ] && [ "$comm" = postgres ]
}

pid=$(cat "$STATE_DIR/postgres.pid" 2>/dev/null | tr -dc 0-9 || true)
if ! alive "$pid"; then
  rm -f "$STATE_DIR/postgres.pid"
  log "no server running in $STATE_DIR"
  exit 0
fi

BINDIR=$(dirname "$(readlink -f "/proc/$pid/exe")")
if [ "$(id -u)" = 0 ]; then as_owner() { runuser -u "$(stat -c %U "$DATA")" -- "$@"; }; else as_owner() { "$@"; }; fi
as_owner "$BINDIR/pg_ctl" -D "$DATA" -m fast -w -t "$TIMEOUT_S" stop >&2 9>&- || true

deadline=$((SECONDS + TIMEOUT_S))
while alive "$pid"; do
  if [ $SECONDS -ge $deadline ]; then
    log "postgres ($pid) did not stop in ${TIMEOUT_S}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    break
  fi
  sleep 0.1
done
rm -f "$STATE_DIR/postgres.pid" "$STATE_DIR/env"
log "stopped postgres ($pid) in $STATE_DIR"

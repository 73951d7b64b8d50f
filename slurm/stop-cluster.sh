#!/bin/bash
# Stop the Slurm cluster that slurm/start-cluster.sh started in STATE_DIR.
#
#   slurm/stop-cluster.sh [STATE_DIR]      # default /tmp/campaign-slurm
#
# Cancels the cluster's jobs, then stops exactly the daemons whose PID files are in STATE_DIR/run
# (slurmd-*, slurmctld, slurmdbd, mariadbd, munged): TERM, then KILL after a deadline. It keeps
# STATE_DIR (configuration, job state, accounting); delete it for a fresh cluster. Stopping a
# cluster that does not run is not an error.
set -euo pipefail

STATE_DIR=${1:-/tmp/campaign-slurm}
[ -d "$STATE_DIR" ] || { echo "stop-cluster: no $STATE_DIR, nothing to stop" >&2; exit 0; }
STATE_DIR=$(cd "$STATE_DIR" && pwd -P)
TIMEOUT_S=${CAMPAIGN_SLURM_STOP_TIMEOUT_S:-30}

log() { echo "stop-cluster: $*" >&2; }

exec 9>"$STATE_DIR/.lock"
flock -w 120 9 || { log "ERROR: another start/stop holds $STATE_DIR/.lock"; exit 1; }

pid_of() { cat "$STATE_DIR/run/$1.pid" 2>/dev/null | tr -dc 0-9 || true; }
alive() { # alive NAME PID -> 0 when PID is a live (not zombie) process called ${NAME%%-*}
  local stat comm state
  [ -n "$2" ] || return 1
  stat=$(cat "/proc/$2/stat" 2>/dev/null) || return 1
  comm=${stat#*(}; comm=${comm%%)*}
  state=${stat##*) }; state=${state%% *}
  [ "$state" != Z ] && [ "$state" != X ] && [ "$comm" = "${1%%-*}" ]
}

stop_daemon() { # stop_daemon NAME: TERM the process of STATE_DIR/run/NAME.pid, KILL it if it lingers
  local name=$1 pid deadline
  pid=$(pid_of "$name")
  if ! alive "$name" "$pid"; then rm -f "$STATE_DIR/run/$name.pid"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + TIMEOUT_S))
  while alive "$name" "$pid"; do
    if [ $SECONDS -ge $deadline ]; then
      log "$name ($pid) ignored TERM for ${TIMEOUT_S}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 10))
      while alive "$name" "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
      break
    fi
    sleep 0.1
  done
  rm -f "$STATE_DIR/run/$name.pid"
  log "stopped $name ($pid)"
}

slurmds=()
for f in "$STATE_DIR"/run/slurmd-*.pid; do [ -e "$f" ] && slurmds+=("$(basename "$f" .pid)"); done

# Cancel the cluster's jobs while slurmctld and the slurmds still run, so that no job outlives
# the cluster, and wait (with a deadline) until the queue is empty.
if [ -f "$STATE_DIR/slurm.conf" ] && alive slurmctld "$(pid_of slurmctld)"; then
  export SLURM_CONF="$STATE_DIR/slurm.conf"
  jobs=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    log "cancelling jobs $(echo $jobs)"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null || true
    deadline=$((SECONDS + TIMEOUT_S))
    while [ -n "$(timeout 10 squeue -h -o %A 2>/dev/null || true)" ] && [ $SECONDS -lt $deadline ]; do
      sleep 0.2
    done
  fi
fi

for name in "${slurmds[@]}" slurmctld slurmdbd mariadbd munged; do stop_daemon "$name"; done
rm -f "$STATE_DIR/env"
log "cluster in $STATE_DIR stopped"

#!/bin/bash
# Start a throwaway Slurm cluster on this one machine (munge, MariaDB, slurmdbd, slurmctld and one
# slurmd per GPU type) whose every file, socket, port and PID lives in STATE_DIR, for tests and
# for trying campaign on a laptop. See slurm/README.md for what it declares.
#
#   slurm/start-cluster.sh [STATE_DIR]      # default /tmp/campaign-slurm; needs root
#   eval "$(slurm/start-cluster.sh)"        # stdout is only the `export ...` lines a caller needs
#
# Idempotent: when the cluster of STATE_DIR is already up it only prints the env again. It keeps
# its state (job ids, accounting) across stop/start; delete STATE_DIR for a fresh cluster.
# Knobs, read on the first start of a STATE_DIR only (then kept in STATE_DIR/hardware):
#   CAMPAIGN_SLURM_GPU_TYPES="a100 v100"  one node, one partition, one GRES type per GPU type
#   CAMPAIGN_SLURM_GPUS_PER_TYPE=4        fake GPUs per node (symlinks to /dev/null)
#   CAMPAIGN_SLURM_CPUS=8 CAMPAIGN_SLURM_MEMORY_MB=16000 (per node)
#   CAMPAIGN_SLURM_MEM_PER_CPU_MB=500     DefMemPerCPU
#   CAMPAIGN_SLURM_MAX_ARRAY_SIZE=1001    MaxArraySize (an array of N tasks needs N <= it)
# and on every start: CAMPAIGN_SLURM_START_TIMEOUT_S=120, the deadline for each wait below.
set -euo pipefail

STATE_DIR=${1:-/tmp/campaign-slurm}
mkdir -p "$STATE_DIR"
STATE_DIR=$(cd "$STATE_DIR" && pwd -P)
HERE=$(cd "$(dirname "$0")" && pwd -P)
CLUSTER_NAME=campaign
TIMEOUT_S=${CAMPAIGN_SLURM_START_TIMEOUT_S:-120}

log() { echo "start-cluster: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and runs slurmd as root); try: sudo $0 $*"

# Serialize concurrent starts and stops of the same STATE_DIR (CI, pytest workers, a developer).
# Every daemon below is started with fd 9 closed, or it would hold this lock for its whole life.
exec 9>"$STATE_DIR/.lock"
flock -w "$TIMEOUT_S" 9 || die "another start/stop holds $STATE_DIR/.lock for more than ${TIMEOUT_S}s"

# ---------------------------------------------------------------------------------------------
# Packages
need_packages() {
  local missing=()
  command -v munged >/dev/null || missing+=(munge)
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  command -v slurmdbd >/dev/null || missing+=(slurmdbd)
  command -v mariadbd >/dev/null || missing+=(mariadb-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Refresh the package lists only when they are absent, or when installing from them fails.
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then apt-get update -qq >&2; fi
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}
need_packages

# ---------------------------------------------------------------------------------------------
# The hardware this cluster declares is fixed at its first start.
if [ ! -f "$STATE_DIR/hardware" ]; then
  cat >"$STATE_DIR/hardware.tmp" <<EOF
GPU_TYPES="${CAMPAIGN_SLURM_GPU_TYPES:-a100 v100}"
GPUS_PER_TYPE=${CAMPAIGN_SLURM_GPUS_PER_TYPE:-4}
CPUS=${CAMPAIGN_SLURM_CPUS:-8}
MEMORY_MB=${CAMPAIGN_SLURM_MEMORY_MB:-16000}
MEM_PER_CPU_MB=${CAMPAIGN_SLURM_MEM_PER_CPU_MB:-500}
MAX_ARRAY_SIZE=${CAMPAIGN_SLURM_MAX_ARRAY_SIZE:-1001}
EOF
  mv "$STATE_DIR/hardware.tmp" "$STATE_DIR/hardware"
fi
# shellcheck source=/dev/null
. "$STATE_DIR/hardware"
MAX_ARRAY_SIZE=${MAX_ARRAY_SIZE:-1001} # a state folder made before this knob
[[ $MAX_ARRAY_SIZE =~ ^[1-9][0-9]*$ ]] || die "MAX_ARRAY_SIZE=$MAX_ARRAY_SIZE in $STATE_DIR/hardware is not a positive integer"
for t in $GPU_TYPES; do
  [[ $t =~ ^[a-z0-9]+$ ]] || die "GPU type '$t' in $STATE_DIR/hardware is not lower-case letters and digits (it names a node, a partition and a GRES type)"
done
NODES=() # node name per GPU type: gpu-a100, gpu-v100, ...
for t in $GPU_TYPES; do NODES+=("gpu-$t"); done
NODE_LIST=$(IFS=,; echo "${NODES[*]}")
# Daemons in start order (stop-cluster.sh stops them in reverse); each has STATE_DIR/run/NAME.pid,
# and its command name is NAME up to the first '-'.
DAEMONS=(munged mariadbd slurmdbd slurmctld)
for n in "${NODES[@]}"; do DAEMONS+=("slurmd-$n"); done

# ---------------------------------------------------------------------------------------------
# Processes: a daemon is ours when its PID file in STATE_DIR/run names a live process with the
# expected command name. Zombies count as dead (PID 1 here reaps slowly, so kill -0 lies).
pid_of() { cat "$STATE_DIR/run/$1.pid" 2>/dev/null | tr -dc 0-9 || true; }
alive() { # alive NAME -> 0 when STATE_DIR/run/NAME.pid is a live process called ${NAME%%-*}
  local pid stat comm state
  pid=$(pid_of "$1")
  [ -n "$pid" ] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  comm=${stat#*(}; comm=${comm%%)*}
  state=${stat##*) }; state=${state%% *}
  [ "$state" != Z ] && [ "$state" != X ] && [ "$comm" = "${1%%-*}" ]
}

wait_for() { # wait_for WHAT COMMAND... : poll COMMAND until it succeeds or the deadline passes
  local what=$1; shift
  local deadline=$((SECONDS + TIMEOUT_S))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "timed out after ${TIMEOUT_S}s waiting for $what; last log lines in $STATE_DIR/log:"
      tail -n 15 "$STATE_DIR"/log/*.log >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.1
  done
}

port_free() { # nothing listens on the TCP port (read from /proc, so no ss needed; the daemons set
  # SO_REUSEADDR, so connections of an earlier run in TIME_WAIT do not block it)
  ! awk -v p="$(printf ':%04X' "$1")" 'FNR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { found = 1 }
    END { exit !found }' $(ls /proc/net/tcp /proc/net/tcp6 2>/dev/null)
}
PICKED_PORTS=""
next_port() { # set PORT to a free TCP port below the kernel's ephemeral range, not one picked already
  local tries=0
  while :; do
    PORT=$((20000 + RANDOM % 12000))
    if [[ " $PICKED_PORTS " != *" $PORT "* ]] && port_free "$PORT"; then
      PICKED_PORTS="$PICKED_PORTS $PORT"; return 0
    fi
    tries=$((tries + 1)); [ $tries -lt 500 ] || die "no free TCP port found in 20000-32000"
  done
}

export SLURM_CONF="$STATE_DIR/slurm.conf"
print_env() {
  {
    echo "export SLURM_CONF=$SLURM_CONF"
    echo "export CAMPAIGN_TEST_SLURM_STATE=$STATE_DIR"
  } >"$STATE_DIR/env.tmp"
  mv "$STATE_DIR/env.tmp" "$STATE_DIR/env"
  cat "$STATE_DIR/env"
}

node_states() { sinfo -h -N -o '%N %T' 2>/dev/null; }
nodes_registered() { # every node answers (no trailing *) and is past the UNKNOWN of a fresh start
  local states n; states=$(node_states)
  for n in "${NODES[@]}"; do
    grep -Eq "^$n [a-z+]+$" <<<"$states" || return 1
    grep -Eq "^$n unk" <<<"$states" && return 1
  done
  return 0
}
nodes_idle() {
  local states n; states=$(node_states)
  for n in "${NODES[@]}"; do grep -Eq "^$n (idle|mixed|allocated)$" <<<"$states" || return 1; done
}
cluster_registered() { sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER_NAME"; }
sacct_answers() { sacct -n -X -S now-1minutes -o JobID >/dev/null 2>&1; }
all_ready() {
  local d
  for d in "${DAEMONS[@]}"; do alive "$d" || return 1; done
  nodes_idle && sacct_answers
}

# ---------------------------------------------------------------------------------------------
# Already up: nothing to do. Partly up (a daemon died): stop the survivors, then start them all.
if [ -f "$STATE_DIR/slurm.conf" ] && all_ready; then
  log "cluster in $STATE_DIR already up"
  print_env
  exit 0
fi
for f in "$STATE_DIR"/run/*.pid; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .pid)
  if alive "$name"; then
    log "cluster in $STATE_DIR is partly up; stopping what runs of it first"
    flock -u 9
    "$HERE/stop-cluster.sh" "$STATE_DIR" 9>&-
    flock -w "$TIMEOUT_S" 9 || die "could not retake $STATE_DIR/.lock"
    break
  fi
done

T0=$SECONDS
mkdir -p "$STATE_DIR"/{run,log,spool/ctld,dev,munge,mysql}
for n in "${NODES[@]}"; do mkdir -p "$STATE_DIR/spool/$n"; done

# ---------------------------------------------------------------------------------------------
# Configuration, rewritten on every start with fresh free ports.
next_port; CTLD_PORT=$PORT
next_port; DBD_PORT=$PORT
next_port; MYSQL_PORT=$PORT
MUNGE_SOCKET="$STATE_DIR/munge/munge.socket.2"

# Fake GPUs: GRES files must be character devices, so they are symlinks to /dev/null; Slurm then
# sets CUDA_VISIBLE_DEVICES and SLURM_JOB_GPUS in the jobs that ask for --gres=gpu.
rm -f "$STATE_DIR"/dev/*
node_lines="" gres_conf="AutoDetect=off" tres="gres/gpu" partitions=""
for t in $GPU_TYPES; do
  n=gpu-$t
  for i in $(seq 0 $((GPUS_PER_TYPE - 1))); do ln -s /dev/null "$STATE_DIR/dev/$t-$i"; done
  next_port
  node_lines="$node_lines"$'\n'"NodeName=$n NodeHostname=localhost NodeAddr=127.0.0.1 Port=$PORT CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEMORY_MB Gres=gpu:$t:$GPUS_PER_TYPE Features=gpu,$t State=UNKNOWN"
  gres_conf="$gres_conf"$'\n'"NodeName=$n Name=gpu Type=$t File=$STATE_DIR/dev/$t-[0-$((GPUS_PER_TYPE - 1))]"
  tres="$tres,gres/gpu:$t"
  partitions="$partitions"$'\n'"PartitionName=$t Nodes=$n MaxTime=INFINITE State=UP"
done

cat >"$STATE_DIR/slurm.conf" <<EOF
# Written by slurm/start-cluster.sh on every start (ports change); edit that script, not this.
ClusterName=$CLUSTER_NAME
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job may start again 10 s after its end instead of 120 s.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$STATE_DIR/spool/ctld
# %n: several slurmd (one per node) share this host.
SlurmdSpoolDir=$STATE_DIR/spool/%n
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd-%n.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$STATE_DIR/plugstack.conf
# No cgroups in these containers.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Declare the CPUs, memory and GPUs below even though the machine has fewer.
SlurmdParameters=config_overrides
ReturnToService=2
# Without a default, a job with no --mem takes the whole node and serializes the rest.
DefMemPerCPU=$MEM_PER_CPU_MB
# Arrays of at most this many tasks (indices 0..MaxArraySize-1); Slurm's default is 1001.
MaxArraySize=$MAX_ARRAY_SIZE
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000,sched_interval=2,bf_interval=2
KillWait=5
InactiveLimit=0
MinJobAge=300
SlurmctldTimeout=120
SlurmdTimeout=300
MessageTimeout=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# Connections to slurmdbd take their munge socket from here, not from AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=$tres
JobCompType=jobcomp/none
GresTypes=gpu
$node_lines
PartitionName=cpu Nodes=$NODE_LIST Default=YES MaxTime=INFINITE State=UP$partitions
EOF
echo "$gres_conf" >"$STATE_DIR/gres.conf"
: >"$STATE_DIR/plugstack.conf" # keeps the system's /etc/slurm/plugstack.conf.d out

cat >"$STATE_DIR/slurmdbd.conf" <<EOF
# Written by slurm/start-cluster.sh on every start (ports change); edit that script, not this.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE_DIR/run/slurmdbd.pid
LogFile=$STATE_DIR/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=root
StoragePass=throwaway
StorageLoc=slurm_acct_db
EOF
chmod 600 "$STATE_DIR/slurmdbd.conf" # slurmdbd refuses a config that others can read

# ---------------------------------------------------------------------------------------------
# munged, as user munge, on its own socket so that it never meets a system munged. It refuses
# directories that others can write to, and writes only into its own directory; run/munged.pid
# and log/munged.log point there.
runuser -u munge -- test -x "$STATE_DIR" ||
  die "user munge cannot reach $STATE_DIR (a parent folder is private, as pytest's tmp_path is); use a folder under /tmp"
chown munge:munge "$STATE_DIR/munge"
chmod 755 "$STATE_DIR/munge"
if [ ! -s "$STATE_DIR/munge/munge.key" ]; then
  dd if=/dev/urandom of="$STATE_DIR/munge/munge.key" bs=1024 count=1 status=none
fi
chown munge:munge "$STATE_DIR/munge/munge.key"
chmod 400 "$STATE_DIR/munge/munge.key"
rm -f "$STATE_DIR/munge/munged.pid"
ln -sfn ../munge/munged.pid "$STATE_DIR/run/munged.pid"
ln -sfn ../munge/munged.log "$STATE_DIR/log/munged.log"
runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$STATE_DIR/munge/munge.key" \
  --pid-file="$STATE_DIR/munge/munged.pid" --log-file="$STATE_DIR/munge/munged.log" \
  --seed-file="$STATE_DIR/munge/munged.seed" --num-threads=4 9>&- \
  || die "munged failed to start; see $STATE_DIR/munge/munged.log"
wait_for "munged" alive munged
wait_for "munge credentials" bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'"
log "munged up ($((SECONDS - T0))s)"

# ---------------------------------------------------------------------------------------------
# Throwaway MariaDB for slurmdbd. Grant tables are skipped: it listens on 127.0.0.1 only and
# holds nothing but this cluster's accounting.
if [ ! -d "$STATE_DIR/mysql/mysql" ]; then
  mariadb-install-db --no-defaults --user=root --datadir="$STATE_DIR/mysql" --skip-test-db \
    --auth-root-authentication-method=normal >"$STATE_DIR/log/mariadb-install.log" 2>&1 9>&- \
    || die "mariadb-install-db failed; see $STATE_DIR/log/mariadb-install.log"
fi
rm -f "$STATE_DIR/run/mariadbd.pid"
setsid mariadbd --no-defaults --user=root --datadir="$STATE_DIR/mysql" \
  --socket="$STATE_DIR/run/mariadbd.sock" --port="$MYSQL_PORT" --bind-address=127.0.0.1 \
  --pid-file="$STATE_DIR/run/mariadbd.pid" --log-error="$STATE_DIR/log/mariadbd.log" \
  --skip-grant-tables --skip-log-bin --innodb-buffer-pool-size=256M --innodb-log-file-size=64M \
  --innodb-lock-wait-timeout=900 --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
  </dev/null >>"$STATE_DIR/log/mariadbd.log" 2>&1 9>&- &
wait_for "mariadbd" alive mariadbd
wait_for "MariaDB on 127.0.0.1:$MYSQL_PORT" \
  mariadb-admin --no-defaults -h127.0.0.1 -P"$MYSQL_PORT" -uroot --connect-timeout=2 ping
log "mariadbd up ($((SECONDS - T0))s)"

# ---------------------------------------------------------------------------------------------
# Slurm daemons. Each forks into the background and writes its own PID file; slurmdbd and slurmd
# find slurmdbd.conf, gres.conf and plugstack.conf beside $SLURM_CONF.
rm -f "$STATE_DIR"/run/slurm*.pid
slurmdbd 9>&- || die "slurmdbd failed to start; see $STATE_DIR/log/slurmdbd.log"
wait_for "slurmdbd" alive slurmdbd
wait_for "slurmdbd on port $DBD_PORT" sacctmgr -n show cluster
log "slurmdbd up ($((SECONDS - T0))s)"

slurmctld 9>&- || die "slurmctld failed to start; see $STATE_DIR/log/slurmctld.log"
wait_for "slurmctld" alive slurmctld
wait_for "slurmctld on port $CTLD_PORT" scontrol ping
log "slurmctld up ($((SECONDS - T0))s)"

for n in "${NODES[@]}"; do
  slurmd -N "$n" 9>&- || die "slurmd for node $n failed to start; see $STATE_DIR/log/slurmd-$n.log"
done
for n in "${NODES[@]}"; do wait_for "slurmd of node $n" alive "slurmd-$n"; done
wait_for "nodes $NODE_LIST to register" nodes_registered
# A node left down or drained by an earlier unclean stop does not come back by itself.
if node_states | grep -Eq ' (down|drain|fail)'; then
  scontrol update nodename="$NODE_LIST" state=resume >&2 || true
fi
wait_for "nodes $NODE_LIST idle (sinfo)" nodes_idle
wait_for "cluster $CLUSTER_NAME registered in slurmdbd" cluster_registered
wait_for "sacct" sacct_answers
log "cluster up in $((SECONDS - T0))s: partitions cpu (default) $GPU_TYPES; $GPUS_PER_TYPE fake GPUs per type; logs in $STATE_DIR/log"
print_env

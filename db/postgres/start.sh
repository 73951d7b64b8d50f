#!/bin/bash
# Start a throwaway PostgreSQL server whose data, socket, log and PID live in STATE_DIR, on
# 127.0.0.1 and a free port, with a role and a database `campaign` that logs in with a password.
#
#   db/postgres/start.sh [STATE_DIR]     # default /tmp/campaign-postgres
#
# The last line of stdout is the SQLAlchemy URL, postgresql+psycopg://campaign:PASS@127.0.0.1:PORT/campaign,
# also written to STATE_DIR/url (and `export CAMPAIGN_TEST_PG_URL=...` to STATE_DIR/env).
# Idempotent: a running server is only reported again. Data survive stop/start (the port may
# change when the old one was taken meanwhile); delete STATE_DIR for an empty server. Settings
# are for tests (fsync=off): never keep data you care about in it.
# As root it runs the server as user postgres (and installs Debian's postgresql if missing);
# as another user it runs the server as that user.
set -euo pipefail

STATE_DIR=${1:-/tmp/campaign-postgres}
mkdir -p "$STATE_DIR"
STATE_DIR=$(cd "$STATE_DIR" && pwd -P)
TIMEOUT_S=${CAMPAIGN_PG_START_TIMEOUT_S:-60}
DB_NAME=campaign
DB_USER=campaign

log() { echo "postgres/start: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

exec 9>"$STATE_DIR/.lock"
flock -w "$TIMEOUT_S" 9 || die "another start/stop holds $STATE_DIR/.lock for more than ${TIMEOUT_S}s"

# ---------------------------------------------------------------------------------------------
find_bindir() {
  local d
  # Debian keeps the server binaries (initdb, pg_ctl, postgres) out of PATH, one folder per version.
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  command -v pg_ctl >/dev/null && command -v initdb >/dev/null && { dirname "$(command -v pg_ctl)"; return 0; }
  return 1
}
if ! BINDIR=$(find_bindir); then
  [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed and installing it needs root: sudo apt-get install postgresql"
  command -v apt-get >/dev/null || die "PostgreSQL is not installed and there is no apt-get to install it"
  log "installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then apt-get update -qq >&2; fi
  if ! apt-get install -y -qq --no-install-recommends postgresql >&2; then
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
  fi
  BINDIR=$(find_bindir) || die "postgresql installed, but no initdb/pg_ctl found under /usr/lib/postgresql"
fi

# The server refuses to run as root: as root, run it as user postgres.
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "no user postgres to run the server as (apt-get install postgresql makes one)"
  as_owner() { runuser -u postgres -- "$@"; }
  OWNER=postgres
else
  as_owner() { "$@"; }
  OWNER=$(id -un)
fi

DATA="$STATE_DIR/data"
SOCK="$STATE_DIR/sock"
PGLOG="$STATE_DIR/postgres.log"

wait_for() { # wait_for WHAT COMMAND... : poll COMMAND until it succeeds or the deadline passes
  local what=$1; shift
  local deadline=$((SECONDS + TIMEOUT_S))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "timed out after ${TIMEOUT_S}s waiting for $what; end of $PGLOG:"
      tail -n 20 "$PGLOG" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.1
  done
}

running() { as_owner "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }
can_login() { # over TCP with the password, as the project will
  PGPASSWORD=$(cat "$STATE_DIR/password") PGCONNECT_TIMEOUT=2 \
    "$BINDIR/psql" -h 127.0.0.1 -p "$(cat "$STATE_DIR/port")" -U "$DB_USER" -d "$DB_NAME" -Atqc 'select 1' 2>/dev/null | grep -qx 1
}
write_url() {
  local url="postgresql+psycopg://$DB_USER:$(cat "$STATE_DIR/password")@127.0.0.1:$(cat "$STATE_DIR/port")/$DB_NAME"
  (umask 077; echo "$url" >"$STATE_DIR/url.tmp"; echo "export CAMPAIGN_TEST_PG_URL=$url" >"$STATE_DIR/env.tmp")
  mv "$STATE_DIR/url.tmp" "$STATE_DIR/url"
  mv "$STATE_DIR/env.tmp" "$STATE_DIR/env"
  echo "$url"
}

if [ -f "$DATA/PG_VERSION" ] && [ -f "$STATE_DIR/port" ] && running && can_login; then
  log "server in $STATE_DIR already up"
  write_url
  exit 0
fi

T0=$SECONDS
port_free() { # nothing listens on the TCP port (read from /proc, so no ss needed; the daemons set
  # SO_REUSEADDR, so connections of an earlier run in TIME_WAIT do not block it)
  ! awk -v p="$(printf ':%04X' "$1")" 'FNR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { found = 1 }
    END { exit !found }' $(ls /proc/net/tcp /proc/net/tcp6 2>/dev/null)
}
pick_port() { # a free TCP port below the kernel's ephemeral range
  local p tries=0
  while :; do
    p=$((20000 + RANDOM % 12000))
    port_free "$p" && { echo "$p"; return 0; }
    tries=$((tries + 1)); [ $tries -lt 500 ] || die "no free TCP port found in 20000-32000"
  done
}

if [ "$OWNER" = postgres ] && ! runuser -u postgres -- test -x "$(dirname "$STATE_DIR")"; then
  die "user postgres cannot reach $STATE_DIR (a parent folder is private, as pytest's tmp_path is); use a folder under /tmp"
fi
mkdir -p "$SOCK"
chown "$OWNER" "$STATE_DIR" "$SOCK"
chmod 700 "$STATE_DIR"

if [ ! -f "$DATA/PG_VERSION" ]; then
  rm -rf "$DATA"
  (umask 077; head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE_DIR/password")
  # Local socket connections are trusted (the socket folder is the owner's alone); TCP needs the password.
  as_owner "$BINDIR/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 --no-instructions --no-sync >"$STATE_DIR/initdb.log" 2>&1 9>&- \
    || die "initdb failed; see $STATE_DIR/initdb.log"
  rm -f "$STATE_DIR/created"
fi

# Keep the port of an earlier start when it is still free, so that a stored URL stays valid.
if [ -f "$STATE_DIR/port" ] && port_free "$(cat "$STATE_DIR/port")"; then PORT=$(cat "$STATE_DIR/port")
else PORT=$(pick_port); echo "$PORT" >"$STATE_DIR/port"; fi

# A server that runs but did not answer above (e.g. on a port taken meanwhile): restart it.
if running; then as_owner "$BINDIR/pg_ctl" -D "$DATA" -m fast -w -t "$TIMEOUT_S" stop >&2 9>&- || true; fi
touch "$PGLOG" && chown "$OWNER" "$PGLOG"
as_owner "$BINDIR/pg_ctl" -D "$DATA" -l "$PGLOG" -w -t "$TIMEOUT_S" start -o "\
 -c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$SOCK\
 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
  >&2 9>&- || { tail -n 20 "$PGLOG" >&2; die "the server did not start; see $PGLOG"; }
head -n1 "$DATA/postmaster.pid" >"$STATE_DIR/postgres.pid"
wait_for "the server on $SOCK" as_owner "$BINDIR/pg_isready" -q -h "$SOCK" -p "$PORT"

if [ ! -f "$STATE_DIR/created" ]; then
  as_owner "$BINDIR/psql" -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$(cat "$STATE_DIR/password")'" \
    -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >&2 9>&- || die "could not create role and database $DB_NAME"
  touch "$STATE_DIR/created"
fi
wait_for "a password login on 127.0.0.1:$PORT" can_login
log "server up in $((SECONDS - T0))s on 127.0.0.1:$PORT (pid $(cat "$STATE_DIR/postgres.pid")); log in $PGLOG"
write_url

#!/usr/bin/env bash
# Sets up the project (venv at .venv, editable install with dev tools) and runs the whole test
# suite against real services: a one-node Slurm cluster (slurm/start-cluster.sh), a PostgreSQL
# server (db/postgres/start.sh) and a local Ray cluster, started here once and stopped at the end.
# Usage: bash tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'

STATE=${CAMPAIGN_TEST_STATE:-/tmp/campaign-test-services}
export CAMPAIGN_TEST_STATE=$STATE
mkdir -p "$STATE"
started=()
cleanup() {
  for s in "${started[@]}"; do
    case $s in
      slurm) bash slurm/stop-cluster.sh "$STATE/slurm" >/dev/null 2>&1 || true ;;
      postgres) bash db/postgres/stop.sh "$STATE/postgres" >/dev/null 2>&1 || true ;;
      ray) .venv/bin/ray stop --force >/dev/null 2>&1 || true ;;
    esac
  done
}
trap cleanup EXIT

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # The services' Debian packages, installed up front so a missing one fails here, loudly.
  need=()
  for pkg in munge slurmctld slurmd slurm-client slurmdbd mariadb-server postgresql; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  if [ -z "${CAMPAIGN_TEST_SLURM_STATE:-}" ]; then
    bash slurm/start-cluster.sh "$STATE/slurm" >/dev/null
    export CAMPAIGN_TEST_SLURM_STATE=$STATE/slurm
    started+=(slurm)
  fi
  if [ -z "${CAMPAIGN_TEST_PG_URL:-}" ]; then
    CAMPAIGN_TEST_PG_URL=$(bash db/postgres/start.sh "$STATE/postgres" | tail -n 1)
    export CAMPAIGN_TEST_PG_URL
    started+=(postgres)
  fi
fi
if [ -z "${CAMPAIGN_TEST_RAY_ADDRESS:-}" ]; then
  export RAY_AUTH_MODE=disabled
  .venv/bin/ray start --head --num-cpus=2 --resources='{"gpu_a100": 1, "gpu_v100": 1}' \
    --include-dashboard=false --disable-usage-stats >/dev/null 2>&1 && {
    export CAMPAIGN_TEST_RAY_ADDRESS=auto
    started+=(ray)
  }
fi

.venv/bin/python -m ruff check campaign jobs db analysis tests benchmarks
.venv/bin/python -m mypy
.venv/bin/python -m pytest "$@"

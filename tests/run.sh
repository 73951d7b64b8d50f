#!/usr/bin/env bash
# Sets up the project (venv at .venv, editable install with dev tools) and runs the test suite,
# starting the services the integration tests need (one-node Slurm, PostgreSQL) when their
# start scripts exist. Usage: bash tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
export CAMPAIGN_TEST_STATE=${CAMPAIGN_TEST_STATE:-/tmp/campaign-test-services}
.venv/bin/python -m ruff check campaign jobs db analysis tests benchmarks
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# The test command: set up, then the whole default test run (Slurm and 2-rank DeepSpeed tests included).
# Arguments go to pytest, e.g. the fast tier for development: bash scripts/test.sh -m "not slow and not slurm"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/activate.sh
export KAMADO_REQUIRE_SLURM="${KAMADO_REQUIRE_SLURM:-1}"   # a missing Slurm is a failure, not a skip
exec python -m pytest -q "$@"

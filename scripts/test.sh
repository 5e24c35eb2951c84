#!/usr/bin/env bash
# The test command: set up, then the whole default test run (Slurm and 2-rank DeepSpeed tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export KAMADO_REQUIRE_SLURM="${KAMADO_REQUIRE_SLURM:-1}"   # a missing Slurm is a failure, not a skip
exec python -m pytest -q "$@"

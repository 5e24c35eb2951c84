#!/usr/bin/env bash
# Installs what kamado and its tests need on a fresh Debian machine: Slurm + munge (for the real local test
# cluster, root only), the CPU build of torch when no torch is present, and kamado itself with its dev extras.
# Safe to run again.
#
# Where it installs: the active virtual environment (or conda environment) if there is one; otherwise it creates
# `.venv` here and installs into that (never into the system Python). Versions: constraints/ci.txt (the pins CI
# tests); KAMADO_PINS=0 installs from pyproject's ranges only (a cluster environment with packages of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
  else
    echo "setup: slurm-wlm and munge are missing and this is not root; Slurm tests will be skipped" >&2
  fi
fi

if [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then
  PY=python
  where="the active environment (${VIRTUAL_ENV:-$CONDA_PREFIX})"
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
  where=".venv (activate it with: source .venv/bin/activate)"
fi

pins=()
if [ "${KAMADO_PINS:-1}" != 0 ]; then pins=(-c constraints/ci.txt); fi
# torch: the CPU build here; on a GPU cluster install your CUDA build of torch first and this line is a no-op.
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q "torch==2.13.0"
# KAMADO_EXTRAS: which extras besides the code itself (CI adds `eval` so the lm-evaluation-harness test runs)
"$PY" -m pip install -q "${pins[@]}" -e ".[${KAMADO_EXTRAS:-dev}]"
echo "setup: kamado installed into $where"

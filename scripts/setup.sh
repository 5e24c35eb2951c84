#!/usr/bin/env bash
# Installs what kamado and its tests need on a fresh Debian machine: Slurm + munge (for the real local test
# cluster), the CPU build of torch, and kamado itself with its dev extras. Safe to run again.
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
# torch: the CPU build here; on a GPU cluster install your CUDA build of torch first and this line is a no-op.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"

#!/usr/bin/env bash
# The demo: set up, then carry the committed Japanese sample all the way to a released HF checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/activate.sh
exec kamado run recipes/tiny-cpu.yaml "$@"

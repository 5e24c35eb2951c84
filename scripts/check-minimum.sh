#!/usr/bin/env bash
# The lower bounds in pyproject are tested, not guessed: a fresh virtual environment with every dependency at the
# version of constraints/minimum.txt (torch 2.13.0, the one CPU build available here), then the fast test tier.
# Usage: bash scripts/check-minimum.sh [pytest args]   (default: -m "not slow and not slurm")
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${KAMADO_MIN_VENV:-$(mktemp -d -t kamado-min-XXXXXX)/venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -c constraints/minimum.txt -e ".[dev]"
python -m pip list 2>/dev/null | grep -iE "^(torch|deepspeed|transformers|numpy|datasets|peft|pyarrow) "
if [ "$#" -eq 0 ]; then set -- -m "not slow and not slurm"; fi
exec python -m pytest -q -p no:cacheprovider "$@"

# Sourced by demo.sh and test.sh after setup.sh: use the environment setup.sh installed into.
if [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${CONDA_PREFIX:-}" ]; then
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi

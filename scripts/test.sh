#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs them all.
#   scripts/test.sh [pytest args...]
# System services the tests use (Docker engine, Prometheus) are installed and started when this runs
# as root; set KIT_SKIP_SYSTEM=1 to skip that (their tests then skip, unless KIT_REQUIRE names them).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export VENV
start=$(date +%s)

scripts/bootstrap.sh
scripts/ray-venv.sh  # .venv-ray: Ray Serve LLM beside the CPU vLLM, for tests/targets (issue 13)
if [[ "${KIT_SKIP_SYSTEM:-0}" != 1 && "$(id -u)" == 0 ]]; then
  scripts/ci-system-deps.sh
  scripts/ci-docker-deps.sh "$VENV"
fi
export PATH="$PWD/$VENV/bin:$PATH"
export DOCKER_TOOLS_VENV="${DOCKER_TOOLS_VENV:-$PWD/$VENV}"
export AUTO_ROUND_PATH="${AUTO_ROUND_PATH:-$PWD/$VENV/ar-target}"
echo "[test] setup took $(( $(date +%s) - start )) s" >&2

ruff check serve healthcheck tests scripts
ruff format --check serve healthcheck tests scripts
python -m serve docs --check

# pytest exits 5 when nothing was collected: that is a failure here too.
python -m pytest -m "not gpu" --durations=25 "$@"

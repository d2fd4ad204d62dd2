#!/usr/bin/env bash
# Rehearse the GPU machine's side of a bundle here, without a GPU (docs/gpu-bundle.md, "Rehearsal"):
#   scripts/gpu/rehearse.sh [bundle/vllm-0.33.0]
# 1. stage every callNN folder with stage.sh into a scratch folder (the last one unpacks and runs the
#    smoke checks that need no GPU); 2. load every CUDA extension of the bundle (vLLM's kernels, FA3,
#    torchvision) against a stub libcuda.so.1, which proves the pruned libraries still link against
#    torch 2.14 (0.24.0: the machine's torch 2.11); 3. on a second staging of call03 (or call01), show
#    idempotence.
# MACHINE_PY: a Python 3.12 that looks like the GPU machine (its torch 2.11 stack, only packages KINDS.md
# lists), default /tmp/kit-machine-sim/bin/python3. Make it once:
#   python3.12 -m venv /tmp/kit-machine-sim && /tmp/kit-machine-sim/bin/pip install torch==2.11.0 \
#     transformers==5.17.0 numpy==2.5.2 packaging psutil urllib3 aiohttp requests pillow cloudpickle uvloop \
#     py-cpuinfo prometheus-client einops && /tmp/kit-machine-sim/bin/pip uninstall -y pydantic \
#     pydantic-core annotated-types typing-inspection      # transformers pulls these; the machine lacks them
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=${1:-bundle/vllm-0.33.0}
MACHINE_PY=${MACHINE_PY:-/tmp/kit-machine-sim/bin/python3}
[[ -x "$MACHINE_PY" ]] || { echo "rehearse: $MACHINE_PY: no such interpreter; see the comment at the top of $0" >&2; exit 2; }
SCRATCH=$(mktemp -d /tmp/kit-rehearse.XXXXXX)
export PATH="$(dirname "$MACHINE_PY"):$PATH" KIT_STAGE="$SCRATCH/stage" KIT_SITE="$SCRATCH/site" KIT_SMOKE=cpu
echo "rehearse: $BUNDLE -> $SCRATCH (python3 = $MACHINE_PY)"
start=$(date +%s)
for call in "$BUNDLE"/call*; do
  bash scripts/gpu/stage.sh "$call"
done
AGAIN="$BUNDLE/call03"; [[ -d "$AGAIN" ]] || AGAIN="$BUNDLE/call01"   # 0.24.0 has 2 parts
bash scripts/gpu/stage.sh "$AGAIN"   # again: checked, left alone, not reinstalled
echo "rehearse: staged, unpacked and smoke-checked in $(( $(date +%s) - start )) s"
# A stub driver library exporting the cu* functions the extensions import, so that they load here.
mkdir -p "$SCRATCH/stub"
for f in $(find "$KIT_SITE" -name '*.so*' -type f); do nm -D --undefined-only "$f" 2>/dev/null; done \
  | awk '{print $NF}' | sed 's/@.*//' | grep -E '^cu[A-Z]' | sort -u | sed 's/.*/int &(void){return 999;}/' > "$SCRATCH/stub/s.c"
gcc -shared -fPIC -o "$SCRATCH/stub/libcuda.so.1" "$SCRATCH/stub/s.c" -Wl,-soname,libcuda.so.1
# shellcheck disable=SC1091
source "$KIT_SITE/kit-env.sh"
(cd "$SCRATCH" && LD_LIBRARY_PATH="$SCRATCH/stub${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" python3 - <<'PY'
import importlib
import importlib.util
import os
import torch
site = os.path.realpath(os.environ["KIT_SITE"])
for m in ("vllm._C_stable_libtorch", "vllm._flashmla_C", "vllm._deepselect_C", "vllm._flashkda_C", "vllm._qutlass_C",
          "vllm.third_party.deep_gemm._C_extension", "vllm.third_party.deep_gemm._C", "torchvision"):
    spec = importlib.util.find_spec(m)
    if spec is None or not os.path.realpath(spec.origin or "").startswith(site + "/"):
        print(f"rehearse: not in this bundle: {m}")  # 0.24.0: no _deepselect_C/_flashkda_C; torchvision is the machine's
        continue
    if m != "torchvision" and not spec.origin.endswith(".so"):
        continue  # 0.33.0's deep_gemm/_C.py wraps _C_extension; 0.24.0's deep_gemm/_C is the extension
    importlib.import_module(m)
    print(f"rehearse: loads against a stub libcuda: {m}")
from vllm.vllm_flash_attn import flash_attn_interface as fa
ops = [o for o in ("marlin_gemm", "machete_mm", "gptq_marlin_repack", "rms_norm") if not hasattr(torch.ops._C, o)]
assert not ops, f"missing ops: {ops}"
print(f"rehearse: FA3 available {fa.FA3_AVAILABLE}, FA2 available {fa.FA2_AVAILABLE}; marlin/machete ops registered")
PY
)
rm -rf "$SCRATCH"

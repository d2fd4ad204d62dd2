"""Checks of the GPU: found or assumed, compute capability, driver against the engine's CUDA, free memory."""

from __future__ import annotations

from serve.doctor.inputs import Check, DoctorInputs, GpuInfo
from serve.launch import memory
from serve.launch.target_gpu import short_name

# vLLM 0.24's CUDA wheels are built for CUDA 13 (torch 2.11.0+cu130, CONTEXT.md); a driver that
# reports an older CUDA cannot run them. Older vLLM releases used CUDA 12.8/12.9 wheels.
MIN_CUDA_DRIVER = {"default": (12, 8), "0.24": (13, 0)}


def _version_tuple(text: str | None) -> tuple[int, ...]:
    out: list[int] = []
    for part in (text or "").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def check_gpu(inp: DoctorInputs) -> list[Check]:
    eng = inp.engine
    if inp.gpu is None:
        why = f"; {inp.gpu_error}" if inp.gpu_error else ""
        p = inp.profile_gpu
        if p is not None:
            # A profile written for a GPU: the error names it, the assumption gets its own line.
            return [
                Check(
                    "gpu",
                    "error",
                    f"no GPU found (the profile assumes {short_name(p.name, p.count)}){why}",
                    {"origin": "none"},
                ),
                Check(
                    "gpu-assumed",
                    "info",
                    f"the profile was written for {_describe(p)} ({p.source}): not seen here; the plan and "
                    "fit checks below assume it",
                    {"origin": "assumed", "source": p.source},
                ),
            ]
        if eng is not None and eng.device == "cpu":
            return [Check("gpu", "info", "no GPU needed: the installed vLLM is the CPU build")]
        return [Check("gpu", "error", f"no GPU{why}; the CUDA build of vLLM needs an NVIDIA GPU and driver")]
    g = inp.gpu
    detected = g.origin == "detected"
    how = "detected" if detected else f"from {g.source}, named with --gpu: not measured here"
    out = [
        Check(
            "gpu",
            "ok" if detected else "info",
            f"{_describe(g)} ({how})",
            {"source": g.source, "origin": g.origin},
        )
    ]
    if inp.gpu_note:
        out.append(Check("gpu-profile", "info", inp.gpu_note))
    cc = f"{g.compute_capability[0]}.{g.compute_capability[1]}" if g.compute_capability else "unknown"
    if g.compute_capability and g.compute_capability < (8, 0):
        out.append(
            Check(
                "gpu-arch",
                "error",
                f"compute capability {cc} < 8.0: vLLM's Machete/Marlin int4 kernels need Ampere or newer",
            )
        )
    if g.cuda_driver_version and eng is not None and eng.device == "cuda":
        ver = _version_tuple(eng.version)
        need = MIN_CUDA_DRIVER["0.24"] if ver >= (0, 24) else MIN_CUDA_DRIVER["default"]
        have = _version_tuple(g.cuda_driver_version)
        if have and have < need:
            out.append(
                Check(
                    "driver",
                    "error",
                    f"driver {g.driver_version} supports CUDA {g.cuda_driver_version}, vLLM {eng.version} "
                    f"needs CUDA {need[0]}.{need[1]}: update the NVIDIA driver",
                )
            )
        else:
            out.append(Check("driver", "ok", f"driver {g.driver_version}, CUDA {g.cuda_driver_version}"))
    elif g.driver_version:
        out.append(
            Check("driver", "info", f"driver {g.driver_version}, CUDA {g.cuda_driver_version or 'unknown'}")
        )
    return out


def _describe(g: GpuInfo) -> str:
    cc = f"{g.compute_capability[0]}.{g.compute_capability[1]}" if g.compute_capability else "unknown"
    return f"{g.count} x {g.name}, {g.memory_bytes / memory.GiB:.1f} GiB, compute capability {cc}"


def check_vram(inp: DoctorInputs) -> list[Check]:
    g, s = inp.gpu, inp.serving
    if g is None or g.free_memory_bytes is None or s.kv_cache_memory_bytes is not None:
        return []
    want = g.memory_bytes * s.gpu_memory_utilization
    if g.free_memory_bytes < want:
        return [
            Check(
                "vram",
                "error",
                f"{g.free_memory_bytes / memory.GiB:.1f} GiB free of {g.memory_bytes / memory.GiB:.1f} GiB, "
                f"but gpu_memory_utilization {s.gpu_memory_utilization} asks for "
                f"{want / memory.GiB:.1f} GiB: "
                "vLLM refuses to start. Stop the other GPU processes or lower gpu_memory_utilization",
            )
        ]
    return [Check("vram", "ok", f"{g.free_memory_bytes / memory.GiB:.1f} GiB free")]

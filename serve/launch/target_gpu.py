"""Which GPU a plan is made for, and the one line that says so.

By default it is the GPU that NVML detects on this machine; a profile's ``hardware.gpu`` is what the
profile was written for, an expectation. Where the two differ, the plan follows the detected GPU and
one line names what changed (memory, compute capability, the rules that now apply or no longer do, the
settings that moved), found by planning for both and comparing. A profile that cannot work on the GPU
that is there is refused with the nearest shipped profile that can (:mod:`serve.launch.profile_choice`).
Where no GPU can be detected (rendering a command on a laptop, a CPU box) the profile's GPU is
assumed, and labelled so everywhere: the line, plan.json's ``facts.gpu.origin``, doctor.
``--gpu NAME`` plans for a description (origin ``description``), ``--gpu none`` for no GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from serve.errors import FactsError, Refusal
from serve.launch import config_files, probes
from serve.launch.facts import EngineFacts, GpuFacts, ModelFacts
from serve.launch.layering import LoadedProfile
from serve.launch.plan import Plan, plan

Origin = Literal["detected", "description", "assumed", "none"]


@dataclass(frozen=True)
class TargetGpu:
    facts: GpuFacts | None
    """What the plan is made for (None: no GPU)."""
    origin: Origin
    expected: GpuFacts | None = None
    """The description the profile's ``hardware.gpu`` names (None for none, auto or unset)."""
    profile_gpu: str | None = None
    """The profile's ``hardware.gpu`` as written."""
    detection: str | None = None
    """Why detection found no GPU, where it was tried and failed."""


def resolve(gpu_arg: str | None, loaded: LoadedProfile) -> TargetGpu:
    """``--gpu`` (None when not given) and the profile -> the GPU to plan for. I/O: NVML, files."""
    profile_gpu = loaded.profile.hardware.gpu
    source = config_files.display(loaded.path)
    expected = None
    if profile_gpu not in (None, "none", "auto"):
        expected = probes.gpu_description(profile_gpu, option=f"{source}: hardware.gpu")
    if gpu_arg == "none":
        return TargetGpu(None, "none", expected, profile_gpu)
    if gpu_arg == "auto":
        return TargetGpu(probes.probe_gpu(), "detected", expected, profile_gpu)
    if gpu_arg:
        return TargetGpu(
            probes.gpu_description(gpu_arg, option="--gpu"), "description", expected, profile_gpu
        )
    try:
        return TargetGpu(probes.probe_gpu(), "detected", expected, profile_gpu)
    except probes.NoGpuDetected as exc:
        reason = exc.reason
    if profile_gpu == "none":
        return TargetGpu(None, "none", None, profile_gpu, reason)
    if expected is None:
        says = "hardware.gpu auto (a detected GPU)" if profile_gpu == "auto" else "no hardware.gpu"
        raise FactsError(
            f"no GPU detected ({reason}) and {source} says {says}, so there is no GPU to plan for: "
            "name a GPU description (--gpu rtx5090), or --gpu none with the CPU build"
        )
    assumed = expected.model_copy(update={"origin": "assumed"})
    return TargetGpu(assumed, "assumed", expected, profile_gpu, reason)


def plan_for(loaded: LoadedProfile, target: TargetGpu, engine: EngineFacts, model: ModelFacts) -> Plan:
    """plan() on the target GPU, with the GPU line first in ``notes``; a refusal on a detected or
    named GPU says which shipped profile would work there."""
    try:
        result = plan(loaded, target.facts, engine, model)
    except Refusal as exc:
        if not _gpu_is_the_reason(loaded, target, engine, model):
            raise
        raise Refusal(f"{exc} -- {refusal_hint(loaded, target, engine)}") from None
    result.notes.insert(0, gpu_line(loaded, target, result, engine, model))
    return result


def _gpu_is_the_reason(
    loaded: LoadedProfile, target: TargetGpu, engine: EngineFacts, model: ModelFacts
) -> bool:
    """A refusal on a detected or named GPU is the GPU's doing when the profile plans on the GPU it was
    written for (or names none); otherwise the engine or the model is the reason, and another profile
    for this GPU is no answer."""
    g, e = target.facts, target.expected
    if target.origin not in ("detected", "description") or g is None:
        return False
    if e is None:
        return True
    if same_gpu(e, g):
        return False
    try:
        plan(loaded, e, engine, model)
    except Refusal:
        return False
    return True


def refusal_hint(loaded: LoadedProfile, target: TargetGpu, engine: EngineFacts) -> str:
    from serve.launch.profile_choice import (
        fitting_profiles,  # it plans; import here to keep this module light
    )

    where = _where(target)
    others = [
        p
        for p in fitting_profiles(target.facts, engine, model_id=loaded.profile.model.id)
        if p != loaded.name
    ]
    if not others:
        return (
            f"{where}: no shipped profile of {loaded.profile.model.id} plans on it with {engine.name} "
            f"{engine.version}"
        )
    also = f" (also: {', '.join(others[1:])})" if others[1:] else ""
    return f"{where}: the nearest shipped profile that plans on it is --profile {others[0]}{also}"


def _where(target: TargetGpu) -> str:
    g, e = target.facts, target.expected
    assert g is not None
    what = "the detected" if target.origin == "detected" else "the named"
    if e is not None and not same_gpu(e, g):
        return f"GPU: {what} {describe(g)}, not the {describe(e)} the profile was written for"
    return f"GPU: {what} {describe(g)}"


# ------------------------------------------------------------------ the one line (pure from here)


def describe(gpu: GpuFacts) -> str:
    count = f"{gpu.count} x " if gpu.count != 1 else ""
    return f"{count}{gpu.name} ({gpu.memory_gib:.1f} GiB, compute capability {gpu.compute_capability})"


def short_name(name: str, count: int = 1, *, article: bool = True) -> str:
    """``NVIDIA GeForce RTX 5090`` -> ``an RTX 5090``: the name with its article, for sentences."""
    name = name.removeprefix("NVIDIA ").removeprefix("GeForce ")
    if count != 1:
        return f"{count} x {name}"
    if not article:
        return name
    # Letters read with a leading vowel sound: "an H100", "an RTX 5090", "a B200".
    return f"{'an' if name[:1].upper() in 'AEFHILMNORSX' else 'a'} {name}"


def same_gpu(a: GpuFacts, b: GpuFacts) -> bool:
    """The same kind and number of GPUs (memory within 3%: drivers and VBIOS report a little apart)."""
    return (
        " ".join(a.name.split()).casefold() == " ".join(b.name.split()).casefold()
        and a.compute_capability == b.compute_capability
        and a.count == b.count
        and abs(a.memory_gib - b.memory_gib) <= 0.03 * max(a.memory_gib, b.memory_gib)
    )


def gpu_line(
    loaded: LoadedProfile, target: TargetGpu, result: Plan, engine: EngineFacts, model: ModelFacts
) -> str:
    """One line: which GPU the plan is for, where that came from, and what changed against the GPU
    the profile was written for (planned for that one too, to compare)."""
    g, e = target.facts, target.expected
    if target.origin == "none":
        if target.detection is not None:
            return f"GPU: none detected ({target.detection}); none needed: the profile was written for no GPU"
        return "GPU: none (--gpu none)"
    assert g is not None
    if target.origin == "assumed":
        assert e is not None
        return (
            f"GPU: none detected ({target.detection}); ASSUMED the {describe(e)} the profile was written for "
            f"({e.source}), not seen on this machine"
        )
    if target.origin == "description":
        return f"GPU: {describe(g)} from {g.source} (named with --gpu), not detected"
    if engine.device == "cpu":
        return f"GPU: detected {describe(g)}, unused: the engine is vLLM's CPU build"
    if target.profile_gpu in (None, "auto"):
        return f"GPU: detected {describe(g)}; the profile names no GPU of its own"
    if e is not None and same_gpu(e, g):
        return f"GPU: detected {describe(g)}, the GPU the profile was written for ({e.source})"
    written = (
        f"not the {describe(e)} the profile was written for ({e.source})"
        if e
        else "the profile was written for no GPU"
    )
    try:
        other: Plan | None = plan(loaded, e, engine, model)
    except Refusal:
        other = None
    return f"GPU: planned for the detected {describe(g)}, {written}: {changes(e, g, other, result)}"


def changes(before_gpu: GpuFacts | None, after_gpu: GpuFacts, before: Plan | None, after: Plan) -> str:
    """What differs between the plan for the profile's GPU and the plan for the detected one."""
    parts: list[str] = []
    if before_gpu is not None:
        if abs(before_gpu.memory_gib - after_gpu.memory_gib) >= 0.05:
            parts.append(f"memory {before_gpu.memory_gib:.1f} -> {after_gpu.memory_gib:.1f} GiB")
        if before_gpu.compute_capability != after_gpu.compute_capability:
            parts.append(
                f"compute capability {before_gpu.compute_capability} -> {after_gpu.compute_capability}"
            )
        if before_gpu.count != after_gpu.count:
            parts.append(f"GPUs {before_gpu.count} -> {after_gpu.count}")
    if before is None:
        parts.append("on the profile's own GPU the plan is refused")
        return "; ".join(parts)
    now = [r for r in after.rules_fired if r not in before.rules_fired]
    gone = [r for r in before.rules_fired if r not in after.rules_fired]
    if now:
        parts.append(f"rules now applying: {', '.join(now)}")
    if gone:
        parts.append(f"no longer applying: {', '.join(gone)}")
    moved = _moved(before, after)
    if moved:
        parts.append(f"settings: {', '.join(moved)}")
    kv_before = (before.memory or {}).get("kv_capacity_tokens")
    kv_after = (after.memory or {}).get("kv_capacity_tokens")
    if kv_before and kv_after and kv_before != kv_after:
        parts.append(f"KV cache {kv_before:,} -> {kv_after:,} tokens")
    if not (now or gone or moved):
        parts.append("same rules and settings")
    return "; ".join(parts)


def _moved(before: Plan, after: Plan) -> list[str]:
    out = []
    for kind in ("decisions", "env"):
        old: dict[str, Any] = {k: d.value for k, d in getattr(before, kind).items()}
        new: dict[str, Any] = {k: d.value for k, d in getattr(after, kind).items()}
        for key in dict.fromkeys([*new, *old]):
            if old.get(key) != new.get(key):
                label = f"env {key}" if kind == "env" else key
                out.append(f"{label} {_show(old.get(key))} -> {_show(new.get(key))}")
    return out


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)

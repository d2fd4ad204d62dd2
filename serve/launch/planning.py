"""The one way to a Plan: ``plan_for(profile, sets, environ, gpu, engine, model)``. The CLI
(serve.commands.common), doctor and the golden renders (tests/support/golden.py) all come here; what they
differ in is an argument, not a copy of the wiring. I/O (profile files, NVML, the installed vLLM, the model
directory) happens here, at the edge; plan() stays pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from serve.launch import config_files, probes, target_gpu
from serve.launch.facts import EngineFacts, GpuFacts, ModelFacts
from serve.launch.layering import LoadedProfile, load_profile
from serve.launch.plan import Plan, plan


@dataclass(frozen=True)
class Planned:
    loaded: LoadedProfile
    target: target_gpu.TargetGpu
    engine: EngineFacts
    model: ModelFacts
    plan: Plan


def plan_for(
    profile: str | LoadedProfile,
    *,
    sets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    gpu: str | target_gpu.TargetGpu | None = None,
    engine: str | EngineFacts = "auto",
    model: ModelFacts | None = None,
    described_model: bool = False,
    explain_gpu: bool = True,
) -> Planned:
    """``profile``: a name or path (loaded with ``sets`` and ``environ``'s SERVE_SET; ``environ`` None reads
    the process environment), or an already loaded profile. ``gpu``: as ``--gpu`` takes it (None: detect, else
    the profile's GPU, assumed), or a resolved target. ``engine``: as ``--engine`` takes it, or facts.
    ``model``: facts, or None to read them from the profile's model layer (``described_model``: from its
    description even where ``model.path`` is set). ``explain_gpu``: the GPU line in ``notes`` and the
    shipped-profile hint on a refusal (serve.launch.target_gpu); off, the bare plan() (the golden renders)."""
    if isinstance(profile, LoadedProfile):
        loaded = profile
    else:
        loaded = load_profile(profile, list(sets), environ=None if environ is None else dict(environ))
    target = gpu if isinstance(gpu, target_gpu.TargetGpu) else target_gpu.resolve(gpu, loaded)
    engine_facts = engine if isinstance(engine, EngineFacts) else probes.engine_facts(engine)
    if model is None:
        layer = loaded.profile.model
        if described_model and layer.facts:
            layer = layer.model_copy(update={"path": None})
        model = probes.model_facts(layer, profile_source=config_files.display(loaded.path))
    if explain_gpu:
        result = target_gpu.plan_for(loaded, target, engine_facts, model)
    else:
        result = plan(loaded, target.facts, engine_facts, model)
    return Planned(loaded, target, engine_facts, model, result)


def gpu_target(gpu: GpuFacts | None) -> target_gpu.TargetGpu:
    """Facts already in hand as a target (``description`` origin; none for None)."""
    return target_gpu.TargetGpu(gpu, "description" if gpu is not None else "none")

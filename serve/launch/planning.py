"""The one way to a Plan: ``plan_for(profile, sets, environ, gpu, engine, model)``. The CLI
(serve.commands.common), doctor and the golden renders (tests/support/golden.py) all come here; what they
differ in is an argument, not a copy of the wiring. I/O (profile files, NVML, the installed vLLM, the model
directory) happens here, at the edge; plan() stays pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from serve.launch import config_files, probes, profile_choice, target_gpu
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
    choice: profile_choice.Choice | None = None
    """What ``--profile auto`` picked and why (None: a profile was named)."""


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
    shipped-profile hint on a refusal (serve.launch.target_gpu); off, the bare plan() (the golden renders).
    ``profile`` ``auto``: the shipped profile that fits the GPU and engine (:func:`choose_profile`), its
    line in ``notes`` after the GPU line and in ``plan.profile_choice``."""
    engine_facts = engine if isinstance(engine, EngineFacts) else probes.engine_facts(engine)
    choice = None
    if profile == profile_choice.AUTO:
        choice = choose_profile(
            gpu=gpu, engine=engine_facts, sets=sets, environ=environ, described_model=described_model
        )
        profile = choice.chosen
    if isinstance(profile, LoadedProfile):
        loaded = profile
    else:
        loaded = load_profile(profile, list(sets), environ=None if environ is None else dict(environ))
    target = gpu if isinstance(gpu, target_gpu.TargetGpu) else target_gpu.resolve(gpu, loaded)
    if model is None:
        layer = loaded.profile.model
        if described_model and layer.facts:
            layer = layer.model_copy(update={"path": None})
        model = probes.model_facts(layer, profile_source=config_files.display(loaded.path))
    if explain_gpu:
        result = target_gpu.plan_for(loaded, target, engine_facts, model)
    else:
        result = plan(loaded, target.facts, engine_facts, model)
    if choice is not None:
        result.notes.insert(1 if explain_gpu else 0, choice.line())
        result.profile_choice = choice.as_dict()
    return Planned(loaded, target, engine_facts, model, result, choice)


def choose_profile(
    *,
    gpu: str | target_gpu.TargetGpu | None = None,
    engine: str | EngineFacts = "auto",
    sets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    described_model: bool = False,
) -> profile_choice.Choice:
    """``--profile auto``: the GPU as ``--gpu`` takes it (None or auto: NVML, and no GPU where it finds
    none; none; a description) and the engine -> the chosen shipped profile. I/O: NVML, files."""
    engine_facts = engine if isinstance(engine, EngineFacts) else probes.engine_facts(engine)
    hint = ""
    if isinstance(gpu, target_gpu.TargetGpu):
        facts = gpu.facts
        words = _gpu_words(facts, gpu.origin)
    elif gpu in (None, "auto"):
        try:
            facts = probes.probe_gpu()
            words = _gpu_words(facts, "detected")
        except probes.NoGpuDetected:
            if gpu == "auto":
                raise
            facts, words = None, "no GPU (none detected)"
            if engine_facts.device == "cuda":
                hint = " (name the GPU to plan for: --gpu NAME, python -m serve profiles lists them)"
    elif gpu == "none":
        facts, words = None, "no GPU (--gpu none)"
    else:
        facts = probes.gpu_description(gpu, option="--gpu")
        words = _gpu_words(facts, "description")
    return profile_choice.choose(
        facts,
        engine_facts,
        gpu_words=words,
        sets=sets,
        environ=environ,
        described_model=described_model,
        hint=hint,
    )


def _gpu_words(gpu: GpuFacts | None, origin: str) -> str:
    if gpu is None:
        return "no GPU"
    how = {"detected": "the detected", "description": "the named", "assumed": "the assumed"}.get(
        origin, "the"
    )
    return f"{how} {target_gpu.describe(gpu)}"


def gpu_target(gpu: GpuFacts | None) -> target_gpu.TargetGpu:
    """Facts already in hand as a target (``description`` origin; none for None)."""
    return target_gpu.TargetGpu(gpu, "description" if gpu is not None else "none")

"""Which shipped profiles can work on a given GPU and engine, nearest first: where a profile is refused
on the GPU that is there, the refusal names the profile to use instead (and ``--profile auto`` can
pick the first).

"Can work" means the launcher's own ``plan()`` accepts it on those facts (rules and memory planner
included), nothing looser. "Nearest" ranks the GPU each profile was written for against the given
one: the same kind first, then the same compute capability, the same GPU count, the closest memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve.errors import KitError, Refusal
from serve.launch import config_files, probes, target_gpu
from serve.launch.facts import EngineFacts, GpuFacts
from serve.launch.layering import LoadedProfile, load_profile
from serve.launch.plan import plan

AUTO = "auto"
"""``--profile auto`` / ``SERVE_PROFILE=auto``: the launcher picks (:func:`choose`)."""
CPU_DEFAULT = "cpu-real"
CPU_DEFAULT_REASON = "what `make demo` runs (scripts/demo.sh's DEMO_PROFILE default): a real trained model"
"""Without a GPU every CPU profile is written for the same (no) GPU; this one goes first."""


def _same_name(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def gpu_distance(written_for: GpuFacts | None, gpu: GpuFacts | None) -> tuple[int, int, int, float]:
    """How far the GPU a profile was written for is from ``gpu``; smaller is nearer. Pure."""
    if written_for is None and gpu is None:
        return (0, 0, 0, 0.0)
    if written_for is None or gpu is None:
        return (1, 1, 1, math.inf)
    return (
        0 if _same_name(written_for.name, gpu.name) else 1,
        0 if written_for.compute_capability == gpu.compute_capability else 1,
        0 if written_for.count == gpu.count else 1,
        abs(math.log2(written_for.memory_gib / gpu.memory_gib)),
    )


def written_for(loaded: LoadedProfile) -> GpuFacts | None:
    """The GPU description a profile names in ``hardware.gpu`` (None for none, auto or unset)."""
    name = loaded.profile.hardware.gpu
    if name in (None, "none", "auto"):
        return None
    return probes.gpu_description(name, option=f"{config_files.display(loaded.path)}: hardware.gpu")


@dataclass(frozen=True)
class Candidate:
    """One shipped profile judged for a GPU and engine."""

    name: str
    fits: bool
    reason: str
    """Why it ranks where it does (the GPU it was written for against this one), or why it does not fit
    (the plan's refusal, word for word)."""
    distance: tuple[int, int, int, float] = (1, 1, 1, math.inf)


@dataclass(frozen=True)
class Choice:
    """What ``--profile auto`` picked, why, and what else was judged (fitting first, nearest first)."""

    chosen: str
    reason: str
    gpu: str
    """The GPU it was chosen for, in words."""
    engine: str
    """The engine it was chosen for: name and version."""
    candidates: tuple[Candidate, ...]

    @property
    def runners_up(self) -> list[str]:
        return [c.name for c in self.candidates if c.fits and c.name != self.chosen]

    def line(self) -> str:
        """The one line render, launch and doctor print."""
        others = ", ".join(self.runners_up) or "none"
        return (
            f"profile: auto chose {self.chosen} for {self.gpu} with {self.engine}: {self.reason}; "
            f"runners-up: {others}"
        )

    def as_dict(self) -> dict[str, Any]:
        """plan.json's ``profile_choice``."""
        return {
            "requested": AUTO,
            "chosen": self.chosen,
            "reason": self.reason,
            "gpu": self.gpu,
            "engine": self.engine,
            "candidates": [{"profile": c.name, "fits": c.fits, "reason": c.reason} for c in self.candidates],
        }


def rank(
    gpu: GpuFacts | None,
    engine: EngineFacts,
    *,
    model_id: str | None = None,
    sets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    described_model: bool = False,
) -> list[Candidate]:
    """Every shipped profile judged on ``gpu`` with ``engine`` (loaded with ``sets`` and ``environ``'s
    SERVE_SET; ``environ`` None reads the process environment): those that plan first, nearest first, the
    CPU default ahead of its equals; then those that do not, nearest first, each with the refusal."""
    fitting: list[tuple[tuple[Any, ...], Candidate]] = []
    refused: list[tuple[tuple[Any, ...], Candidate]] = []
    env = {} if environ is None else dict(environ)
    for name in config_files.shipped("profiles"):
        try:
            loaded = load_profile(name, list(sets), environ=None if environ is None else env)
        except KitError as exc:
            refused.append(((1, 1, 1, math.inf, name), Candidate(name, False, f"cannot load: {exc}")))
            continue
        if model_id is not None and loaded.profile.model.id != model_id:
            continue
        try:
            target = written_for(loaded)
        except KitError as exc:
            refused.append(((1, 1, 1, math.inf, name), Candidate(name, False, str(exc))))
            continue
        distance = gpu_distance(target, gpu)
        if gpu is not None and engine.device == "cuda" and loaded.profile.hardware.gpu == "none":
            why = "written for no GPU (the CPU build): a tiny CPU demo model is no substitute on a GPU"
            refused.append(((*distance, name), Candidate(name, False, why, distance)))
            continue
        try:
            layer = loaded.profile.model
            if described_model and layer.facts:
                layer = layer.model_copy(update={"path": None})
            model = probes.model_facts(layer, profile_source=config_files.display(loaded.path))
            plan(loaded, gpu, engine, model)
        except KitError as exc:
            refused.append(((*distance, name), Candidate(name, False, f"refused: {exc}", distance)))
            continue
        why = _why(target, gpu, name, loaded)
        preferred = 0 if name == CPU_DEFAULT else 1
        # Secure by default (issue 16): between equals, a profile that listens without a key on an open
        # address (the seed card's 0.0.0.0, serving.allow_unauthenticated) comes after one that does not.
        open_without_key = 1 if loaded.profile.serving.allow_unauthenticated else 0
        fitting.append(((*distance, open_without_key, preferred, name), Candidate(name, True, why, distance)))
    return [c for _, c in sorted(fitting, key=lambda x: x[0])] + [
        c for _, c in sorted(refused, key=lambda x: x[0])
    ]


def fitting_profiles(gpu: GpuFacts | None, engine: EngineFacts, *, model_id: str | None = None) -> list[str]:
    """Shipped profiles that plan on ``gpu`` with ``engine`` (as shipped: no overrides), nearest first.
    ``model_id`` keeps only the profiles serving that model. Profiles written for no GPU are left out
    where there is a GPU and a CUDA engine: a tiny CPU demo model is no substitute."""
    return [c.name for c in rank(gpu, engine, model_id=model_id, environ={}) if c.fits]


def choose(
    gpu: GpuFacts | None,
    engine: EngineFacts,
    *,
    gpu_words: str,
    sets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    described_model: bool = False,
    hint: str = "",
) -> Choice:
    """``--profile auto``: the first of :func:`rank`; none fitting is a Refusal naming the nearest three
    with their refusals. ``gpu_words``: the GPU in words (where it came from); ``hint``: what to try."""
    candidates = rank(gpu, engine, sets=sets, environ=environ, described_model=described_model)
    engine_words = engine.name if engine.version in engine.name else f"{engine.name} {engine.version}"
    fitting = [c for c in candidates if c.fits]
    if not fitting:
        nearest = "; ".join(f"{c.name}: {c.reason}" for c in candidates[:3])
        raise Refusal(
            f"--profile auto: no shipped profile plans on {gpu_words} with {engine_words}{hint}; "
            f"nearest: {nearest}"
        )
    first = fitting[0]
    return Choice(first.name, first.reason, gpu_words, engine_words, tuple(candidates))


def _why(target: GpuFacts | None, gpu: GpuFacts | None, name: str, loaded: LoadedProfile) -> str:
    """Why a fitting profile ranks where it does, in words. Pure but for the model directory check."""
    if target is None:
        why = "written for no GPU (the CPU build)"
        if gpu is not None:
            why += "; the engine is the CPU build"
        if name == CPU_DEFAULT:
            why += f"; the CPU default ({CPU_DEFAULT_REASON})"
        path = loaded.profile.model.path
        if path and not (Path(path) / "config.json").is_file():
            why += f"; its model is not made yet ({path}: DEMO_PROFILE={name} make demo makes it)"
        return why
    written = f"written for {target_gpu.short_name(target.name, target.count)} ({target.source})"
    if gpu is None:
        return f"{written}; no GPU to compare"
    if target_gpu.same_gpu(target, gpu):
        return f"{written}, this GPU"
    same, differ = [], []
    (same if target.compute_capability == gpu.compute_capability else differ).append(
        f"compute capability {target.compute_capability}"
        if target.compute_capability == gpu.compute_capability
        else f"compute capability {target.compute_capability}, not {gpu.compute_capability}"
    )
    (same if target.count == gpu.count else differ).append(
        f"{target.count} GPU{'s' if target.count != 1 else ''}"
        if target.count == gpu.count
        else f"{target.count} GPU{'s' if target.count != 1 else ''}, not {gpu.count}"
    )
    parts = [written]
    if same:
        parts.append("same " + " and ".join(same))
    parts += differ
    parts.append(f"memory {target.memory_gib:.0f} GiB against {gpu.memory_gib:.0f}")
    return "; ".join(parts) + "; it plans here"

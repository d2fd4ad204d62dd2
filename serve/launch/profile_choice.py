"""Which shipped profiles can work on a given GPU and engine, nearest first: where a profile is refused
on the GPU that is there, the refusal names the profile to use instead (and ``--profile auto`` can
pick the first).

"Can work" means the launcher's own ``plan()`` accepts it on those facts (rules and memory planner
included), nothing looser. "Nearest" ranks the GPU each profile was written for against the given
one: the same kind first, then the same compute capability, the same GPU count, the closest memory.
"""

from __future__ import annotations

import math

from serve.errors import KitError
from serve.launch import config_files, probes
from serve.launch.facts import EngineFacts, GpuFacts
from serve.launch.layering import LoadedProfile, load_profile
from serve.launch.plan import plan


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


def fitting_profiles(gpu: GpuFacts | None, engine: EngineFacts, *, model_id: str | None = None) -> list[str]:
    """Shipped profiles that plan on ``gpu`` with ``engine`` (as shipped: no overrides), nearest first.
    ``model_id`` keeps only the profiles serving that model. Profiles written for no GPU are left out
    where there is a GPU and a CUDA engine: a tiny CPU demo model is no substitute."""
    ranked: list[tuple[tuple[int, int, int, float], str]] = []
    for name in config_files.shipped("profiles"):
        try:
            loaded = load_profile(name, environ={})
        except KitError:
            continue
        if model_id is not None and loaded.profile.model.id != model_id:
            continue
        if gpu is not None and engine.device == "cuda" and loaded.profile.hardware.gpu == "none":
            continue
        try:
            model = probes.model_facts(loaded.profile.model, profile_source=config_files.display(loaded.path))
            plan(loaded, gpu, engine, model)
            target = written_for(loaded)
        except KitError:
            continue
        ranked.append((gpu_distance(target, gpu), name))
    return [name for _, name in sorted(ranked)]

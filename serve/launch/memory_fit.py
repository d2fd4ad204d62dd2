"""The memory planner (serve.launch.memory) on a plan's settings: the KV cache vLLM will build for them, or
why it cannot. The rule ``memory-fit``, the last of the rule table, turns the result into effects:
``max_model_len: auto`` becomes the largest length that fits, and a profile that cannot fit is refused
before vLLM starts, with the numbers. Pure."""

from __future__ import annotations

import dataclasses
from typing import Any

from serve.launch import memory
from serve.launch.facts import EngineFacts, GpuFacts, ModelFacts


def computable(gpu: GpuFacts | None, engine: EngineFacts, model: ModelFacts) -> bool:
    """The fit needs the weights' size and, on CUDA, a GPU."""
    return model.weight_bytes is not None and not (engine.device == "cuda" and gpu is None)


def fit(
    settings: dict[str, Any], gpu: GpuFacts | None, engine: EngineFacts, model: ModelFacts
) -> memory.FitResult:
    """``settings``: vLLM argument dest -> value, as the rules left them (``max_model_len`` may be ``auto``)."""
    assert model.weight_bytes is not None
    requested = settings.get("max_model_len")
    spec = settings.get("speculative_config") or {}
    tp = int(settings.get("tensor_parallel_size") or 1)
    cache = (
        memory.CacheParams.cpu()
        if engine.device == "cpu"
        else memory.CacheParams.cuda(prefix_caching=bool(settings.get("enable_prefix_caching")))
    )
    shape = memory.shape_from_facts(model)
    dtype = settings.get("dtype")
    if dtype and dtype != "auto":
        # An explicit --dtype (e.g. float32 from rule cpu-eager-float32) is also the dtype of `auto` KV.
        shape = dataclasses.replace(shape, dtype=str(dtype))
    elif shape.dtype in ("float32", "float"):
        # --dtype auto serves a float32 checkpoint in the platform's 16-bit dtype (vLLM's
        # _resolve_auto_dtype, vllm/config/model.py: "Downcasting torch.float32 to torch.bfloat16").
        shape = dataclasses.replace(shape, dtype="bfloat16")
    return memory.fit(
        shape,
        model.weight_bytes // tp,
        total_memory_bytes=int(gpu.memory_gib * memory.GiB) if gpu is not None else 0,
        gpu_memory_utilization=settings.get("gpu_memory_utilization") or 0.9,
        kv_cache_dtype=settings.get("kv_cache_dtype") or "auto",
        max_model_len=None if requested == "auto" else (requested or model.max_position_embeddings),
        max_num_seqs=settings.get("max_num_seqs") or 1,
        num_speculative_tokens=int(spec.get("num_speculative_tokens", 0)),
        kv_cache_memory_bytes=settings.get("kv_cache_memory_bytes"),
        tensor_parallel_size=tp,
        cache=cache,
    )

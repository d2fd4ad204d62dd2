"""Wires the memory planner (serve.launch.memory) into plan(): ``max_model_len: auto`` becomes the largest
length that fits, and a profile that cannot fit is refused before vLLM starts, with the numbers. Pure."""

from __future__ import annotations

import dataclasses
from typing import Any

from serve.errors import Refusal
from serve.launch import memory
from serve.launch.facts import EngineFacts, GpuFacts, ModelFacts

RULE_ID = "memory-fit"


def apply(
    decisions: dict[str, Any],
    gpu: GpuFacts | None,
    engine: EngineFacts,
    model: ModelFacts,
    warnings: list[str],
) -> dict[str, Any] | None:
    from serve.launch.plan import Decision  # plan imports this module

    requested = decisions["max_model_len"].value
    if model.weight_bytes is None or (engine.device == "cuda" and gpu is None):
        if requested == "auto":
            raise Refusal(
                f"serving.max_model_len = auto needs the model's weight size, which {model.source} does not give; "
                "set max_model_len to a number or point model.path at local weights"
            )
        return None
    spec = decisions["speculative_config"].value or {}
    tp = int(decisions["tensor_parallel_size"].value or 1)
    cache = (
        memory.CacheParams.cpu()
        if engine.device == "cpu"
        else memory.CacheParams.cuda(prefix_caching=bool(decisions["enable_prefix_caching"].value))
    )
    shape = memory.shape_from_facts(model)
    dtype = decisions["dtype"].value if "dtype" in decisions else None
    if dtype and dtype != "auto":
        # An explicit --dtype (e.g. float32 from rule cpu-eager-float32) is also the dtype of `auto` KV.
        shape = dataclasses.replace(shape, dtype=str(dtype))
    elif shape.dtype in ("float32", "float"):
        # --dtype auto serves a float32 checkpoint in the platform's 16-bit dtype (vLLM's
        # _resolve_auto_dtype, vllm/config/model.py: "Downcasting torch.float32 to torch.bfloat16").
        shape = dataclasses.replace(shape, dtype="bfloat16")
    result = memory.fit(
        shape,
        model.weight_bytes // tp,
        total_memory_bytes=int(gpu.memory_gib * memory.GiB) if gpu is not None else 0,
        gpu_memory_utilization=decisions["gpu_memory_utilization"].value or 0.9,
        kv_cache_dtype=decisions["kv_cache_dtype"].value or "auto",
        max_model_len=None if requested == "auto" else (requested or model.max_position_embeddings),
        max_num_seqs=decisions["max_num_seqs"].value or 1,
        num_speculative_tokens=int(spec.get("num_speculative_tokens", 0)),
        kv_cache_memory_bytes=decisions["kv_cache_memory_bytes"].value,
        tensor_parallel_size=tp,
        cache=cache,
    )
    if result.verdict == "error":
        raise Refusal(f"memory: {result.message}")
    if result.verdict == "warn":
        warnings.append(f"[{RULE_ID}] {result.message}")
    if requested == "auto":
        decisions["max_model_len"] = Decision(
            "max_model_len", result.max_model_len, "rule", f"max_model_len auto: {result.message}", RULE_ID
        )
    return result.to_dict()

"""The memory planner (serve.launch.memory) on a plan's settings: the KV cache vLLM will build for them, or
why it cannot. The rule ``memory-fit``, the last of the rule table, turns the result into effects:
``max_model_len: auto`` becomes the largest length that fits, and a profile that cannot fit is refused
before vLLM starts, with the numbers. Pure."""

from __future__ import annotations

import dataclasses
from typing import Any

from packaging.version import Version

from serve.launch import memory
from serve.launch.facts import EngineFacts, GpuFacts, ModelFacts


def computable(gpu: GpuFacts | None, engine: EngineFacts, model: ModelFacts) -> bool:
    """The fit needs the weights' size and, on CUDA, a GPU."""
    return model.weight_bytes is not None and not (engine.device == "cuda" and gpu is None)


def prefix_caching_on(settings: dict[str, Any], engine: EngineFacts, model: ModelFacts) -> bool:
    """Prefix caching as vLLM will run it: the setting when given, else the engine's default for a hybrid
    model (on from vLLM 0.26: ``ModelConfig.is_prefix_caching_supported``; unknown counts as on, as in rule
    prefix-caching-off-mamba-align-spec). With it on, a hybrid model's linear-attention state takes Mamba's
    "align" mode: 2 + num_spec state blocks per request instead of 1 + num_spec. Seen on an H200 with
    vLLM 0.33.0 (docs/gpu-results/2026-12-01/plumbing, tiny Qwen3.5, prefix caching left to the default):
    "Mamba cache mode is set to 'align'", and "GPU KV cache size: 3,904,456 tokens" is what align mode
    gives; the "none" layout gave 3,728,256 (tests/unit/test_tp_memory.py)."""
    value = settings.get("enable_prefix_caching")
    if value is not None:
        return bool(value)
    return model.is_hybrid and engine.hybrid_prefix_caching_default is not False


# vLLM 0.33.0 is the first wheel whose Gated DeltaNet layer exports prefill checkpoints
# (qwen_gdn_linear_attn.py: ``_checkpoint_alignment``; 0.32.0 has none); the token grid of
# FlashInfer's GDN prefill (vllm/v1/attention/backends/gdn_attn.py).
GDN_CHECKPOINTS_SINCE = Version("0.33.0")
FLASHINFER_GDN_CHECKPOINT_ALIGNMENT = 64


def gdn_prefill_checkpoints(
    settings: dict[str, Any],
    gpu: GpuFacts | None,
    engine: EngineFacts,
    model: ModelFacts,
    prefix_caching: bool,
) -> bool:
    """Whether vLLM will give each Gated DeltaNet group a prefill-checkpoint state block per request.

    Read in vLLM 0.33.0's source, not yet measured: in align mode (prefix caching on), a Qwen3.5/3.6 or
    Qwen3-Next GDN layer whose prefill runs on FlashInfer exports mid-prefill states
    (``GatedDeltaNetAttention._checkpoint_alignment``), so its ``MambaSpec`` gets
    ``num_prefill_checkpoint_blocks=1``. ``_resolve_gdn_prefill_backend`` picks FlashInfer for
    ``--gdn-prefill-backend`` auto (vLLM's default) or flashinfer on Hopper (SM90), and on Blackwell
    (SM10x, SM12x) when ``linear_key_head_dim`` is 128 and the CUDA runtime is 13 or newer, which the
    PyPI 0.33.0 wheel is built on (it requires ``nvidia-cutlass-dsl[cu13]``); else Triton (as rule
    no-flashinfer-gdn-prefill sets where FlashInfer is missing). The H200 runs of
    docs/gpu-results/2026-12-02-ceiling ran Triton: 2 + num_spec state blocks, as measured."""
    if engine.device != "cuda" or gpu is None or not prefix_caching or not model.is_hybrid:
        return False
    if not model.model_type.startswith(("qwen3_5", "qwen3_next")):
        return False
    if engine.parsed_version < GDN_CHECKPOINTS_SINCE:
        return False
    if str(settings.get("gdn_prefill_backend") or "auto").lower() not in ("auto", "flashinfer"):
        return False
    major, minor = gpu.cc
    if (major, minor) == (9, 0):
        return True
    return major in (10, 12) and int(model.linear_attention.get("linear_key_head_dim", 0)) == 128


def cache_params(
    settings: dict[str, Any], gpu: GpuFacts | None, engine: EngineFacts, model: ModelFacts
) -> memory.CacheParams:
    """The block layout vLLM will use for these settings: prefix caching as it will run it (the engine's
    default for a hybrid model when unset) and, on CUDA, FlashInfer's GDN prefill checkpoints. What the
    planner's fit and doctor's fit check both use."""
    if engine.device == "cpu":
        return memory.CacheParams.cpu()
    prefix = prefix_caching_on(settings, engine, model)
    checkpoints = gdn_prefill_checkpoints(settings, gpu, engine, model, prefix)
    return memory.CacheParams.cuda(
        prefix_caching=prefix,
        prefill_checkpoint_alignment=FLASHINFER_GDN_CHECKPOINT_ALIGNMENT if checkpoints else 0,
    )


def fit(
    settings: dict[str, Any], gpu: GpuFacts | None, engine: EngineFacts, model: ModelFacts
) -> memory.FitResult:
    """``settings``: vLLM argument dest -> value, as the rules left them (``max_model_len`` may be ``auto``)."""
    assert model.weight_bytes is not None
    requested = settings.get("max_model_len")
    spec = settings.get("speculative_config") or {}
    tp = int(settings.get("tensor_parallel_size") or 1)
    cache = cache_params(settings, gpu, engine, model)
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
        max_num_batched_tokens=settings.get("max_num_batched_tokens"),
        kv_cache_memory_bytes=settings.get("kv_cache_memory_bytes"),
        tensor_parallel_size=tp,
        cache=cache,
    )

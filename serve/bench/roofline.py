"""The decode roofline of a bench row, from plan.json: the memory planner's bytes per decoded token
(``serve.launch.memory.decode_bytes_per_token``: weights decode reads, shared by the batch, plus each
sequence's KV at its context and its linear-attention state) over the GPU's memory bandwidth
(``serve.launch.memory.roofline_tok_s``). Pure: plan.json in, numbers out.

The ceiling assumes one token per sequence per step, so rows with speculative decoding (MTP) can
exceed 100% of it: that is the speed-up MTP buys, not a measurement error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serve.errors import KitError
from serve.launch import memory


@dataclass(frozen=True)
class Roofline:
    bandwidth_gbps: float
    """Per GPU, in GB/s (1e9 bytes per second), as plan.json's facts.gpu.memory_bandwidth_gbps."""
    weights: memory.WeightBytes
    shape: memory.ModelShape
    kv_cache_dtype: str
    tensor_parallel_size: int
    source: str
    """Where bandwidth and weight bytes came from, for the report."""

    def bytes_per_token(self, context_tokens: float, batch: int) -> int:
        """Per GPU, per decoded token of one sequence (the planner's figure)."""
        return memory.decode_bytes_per_token(
            self._per_gpu_weights(),
            self.shape,
            kv_cache_dtype=self.kv_cache_dtype,
            context_len=round(context_tokens),
            batch=batch,
            tensor_parallel_size=self.tensor_parallel_size,
        )

    def ceiling_tok_s(self, context_tokens: float, batch: int) -> float:
        """Output tok/s of all ``batch`` sequences together if decode ran at full bandwidth. The
        planner's bytes per token already share the weights over the batch, so bandwidth over them
        is the batch's total rate (one step moves W + batch*s bytes and yields batch tokens)."""
        return memory.roofline_tok_s(self.bandwidth_gbps * 1e9, self.bytes_per_token(context_tokens, batch))

    def _per_gpu_weights(self) -> memory.WeightBytes:
        # tensor parallelism splits every decode-read weight over the GPUs, each reading its share
        tp = self.tensor_parallel_size
        w = self.weights
        return memory.WeightBytes(
            total=w.total // tp, embedding=w.embedding // tp, vision=w.vision // tp, mtp=w.mtp // tp
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "bandwidth_gbps": self.bandwidth_gbps,
            "tensor_parallel_size": self.tensor_parallel_size,
            "weight_bytes_per_step": self.weights.decode_read,
            "kv_bytes_per_token": memory.kv_bytes_per_token(self.shape, self.kv_cache_dtype),
            "state_bytes_per_seq": memory.linear_state_bytes_per_sequence(self.shape),
            "kv_cache_dtype": self.kv_cache_dtype,
            "source": self.source,
        }


def shape_from_facts(model: Mapping[str, Any]) -> memory.ModelShape:
    """plan.json's facts.model (serve.launch.facts.ModelFacts) -> the planner's ModelShape."""
    linear = model.get("linear_attention") or {}
    dtype = str(model.get("torch_dtype") or "bfloat16").lower().removeprefix("torch.")
    if dtype not in memory.DTYPE_BYTES:
        dtype = "bfloat16"
    return memory.ModelShape(
        num_attention_layers=int(model.get("full_attention_layers", model.get("num_hidden_layers", 0))),
        num_kv_heads=int(model["num_key_value_heads"]),
        head_dim=int(model["head_dim"]),
        num_linear_layers=int(model.get("linear_attention_layers") or 0),
        linear_num_key_heads=int(linear.get("linear_num_key_heads") or 0),
        linear_key_head_dim=int(linear.get("linear_key_head_dim") or 0),
        linear_num_value_heads=int(linear.get("linear_num_value_heads") or 0),
        linear_value_head_dim=int(linear.get("linear_value_head_dim") or 0),
        linear_conv_kernel_dim=int(linear.get("linear_conv_kernel_dim") or 4),
        mtp_layers=int(model.get("mtp_layers") or 0),
        hidden_size=int(model.get("hidden_size") or 0),
        intermediate_size=int(model.get("intermediate_size") or 0),
        vocab_size=int(model.get("vocab_size") or 0),
        max_position_embeddings=int(model.get("max_position_embeddings") or 0),
        dtype=dtype,
        mamba_ssm_dtype=model.get("mamba_ssm_dtype"),
    )


def weights_from_facts(model: Mapping[str, Any], shape: memory.ModelShape) -> tuple[memory.WeightBytes, str]:
    """The planner's WeightBytes: facts.model.weights ({total, embedding, vision, mtp}) when the
    planner put the safetensors split there, else facts.model.weight_bytes less an untied embedding
    (a decode step gathers one row of it); the vision tower and MTP head are then counted as read,
    so the ceiling comes out a little low for vision-language checkpoints."""
    split = model.get("weights")
    if isinstance(split, Mapping) and split.get("total"):
        return (
            memory.WeightBytes(
                total=int(split["total"]),
                embedding=int(split.get("embedding") or 0),
                vision=int(split.get("vision") or 0),
                mtp=int(split.get("mtp") or 0),
            ),
            "facts.model.weights",
        )
    total = model.get("weight_bytes")
    if not total:
        raise KitError("plan.json facts.model has neither weights nor weight_bytes")
    embedding = 0
    if not model.get("tie_word_embeddings"):
        embedding = shape.vocab_size * shape.hidden_size * memory.DTYPE_BYTES[shape.dtype]
    note = "facts.model.weight_bytes less the embedding"
    if model.get("has_vision") or shape.mtp_layers:
        note += " (vision tower / MTP head counted as read: ceiling slightly low)"
    return memory.WeightBytes(total=int(total), embedding=min(embedding, int(total))), note


def roofline_from_plan(
    plan: Mapping[str, Any] | None, bandwidth_override_gbps: float | None = None
) -> tuple[Roofline | None, str | None]:
    """The row ceilings' inputs, or None and why there is none (CPU, no bandwidth, no model facts)."""
    if plan is None:
        return None, "no plan.json (pass --plan-file)"
    facts = plan.get("facts") or {}
    gpu = facts.get("gpu") or {}
    engine = facts.get("engine") or {}
    settings = plan.get("settings") or {}
    model = facts.get("model") or {}
    if engine.get("device") == "cpu" and not bandwidth_override_gbps:
        return None, "CPU engine: no GPU memory bandwidth"
    if gpu.get("origin") == "assumed" and not bandwidth_override_gbps:
        # The launcher found no GPU and planned for the profile's: its bandwidth is another GPU's.
        return None, (
            f"facts.gpu ({gpu.get('name') or '?'}) was assumed from the profile, not detected, so its "
            "bandwidth is not this machine's (pass --bandwidth-gbps, e.g. a copy bandwidth measured here)"
        )
    bandwidth = bandwidth_override_gbps or gpu.get("memory_bandwidth_gbps")
    if not bandwidth:
        return None, "facts.gpu.memory_bandwidth_gbps is unknown (pass --bandwidth-gbps)"
    if not model:
        return None, "plan.json has no facts.model"
    try:
        shape = shape_from_facts(model)
        weights, weight_source = weights_from_facts(model, shape)
        kv_dtype = memory.canonical_kv_dtype(str(settings.get("kv_cache_dtype") or "auto"))
    except (KeyError, TypeError, ValueError, KitError) as exc:
        return None, f"plan.json facts.model is incomplete for the roofline ({exc})"
    bw_source = (
        "--bandwidth-gbps"
        if bandwidth_override_gbps
        else "facts.gpu.memory_bandwidth_gbps "
        f"({gpu.get('bandwidth_source') or gpu.get('name') or 'plan.json'}"
        + (f"; GPU {gpu['origin']}" if gpu.get("origin") else "")
        + ")"
    )
    return (
        Roofline(
            bandwidth_gbps=float(bandwidth),
            weights=weights,
            shape=shape,
            kv_cache_dtype=kv_dtype,
            tensor_parallel_size=int(settings.get("tensor_parallel_size") or 1),
            source=f"bandwidth: {bw_source}; weights: {weight_source}",
        ),
        None,
    )

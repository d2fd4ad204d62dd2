"""A shape-exact random-weight Qwen3.6-27B INT4 AutoRound checkpoint, for sizing hardware and benchmarking
vLLM before (or instead of) downloading 18 GB.

``python -m serve synth-model DIR [--device cpu|cuda] [--seed N] [--scale full|mini] [--no-vision]
[--quantized-mtp-fc] [--int4-mtp-layer] [--agreeing-mtp] [--dry-run]``

What is exact (``--scale full``): tensor names, shapes and dtypes, which linears are int4 and which stay in
16 bits, the quantization_config that makes vLLM agree, and the file layout (numbered shards, an index,
the MTP head in ``model_extra_tensors.safetensors`` as AutoRound writes the tensors transformers drops).
What is not: the values. They are random, shaped so that activations stay finite: int4 words uniformly
random with every zero point 8 (stored as 7, ``auto_round:auto_gptq``), fp16 scales in [2^-8, 2^-7) so a
weight is about +-0.03, bf16 tensors of the same size, RMSNorm gains of 1. The model therefore emits
arbitrary tokens and its MTP head accepts no drafts; speed and memory are what it is for.

Where the layout comes from:
- names/shapes: transformers' ``Qwen3_5ForConditionalGeneration`` state dict (the checkpoint format), which
  vLLM's ``qwen3_5.py`` maps with ``model.language_model.`` -> ``language_model.model.`` and
  ``model.visual.`` -> ``visual.``, fusing ``in_proj_qkv``/``in_proj_z`` and ``in_proj_b``/``in_proj_a``;
  the MTP head as ``qwen3_5_mtp.py`` loads it (``mtp.fc``, ``mtp.pre_fc_norm_*``, ``mtp.norm``,
  ``mtp.layers.0.*`` = one full-attention decoder layer). The unit tests hold this module's explicit
  table to transformers' meta-device model at both scales.
- the int4 set: what AutoRound quantizes inside ``block_name_to_quantize`` (every 2-D linear of the 64
  decoder layers) minus ``extra_config`` entries with bits 16 (``linear_attn.in_proj_a/b``, ``mtp.fc``);
  vLLM's INC/AutoRound config parser (``quantization/inc/config_parser.py`` in 0.32, checked by a unit
  test; 0.24's ``auto_round.py`` reads the same two keys per CONTEXT.md) decides the same way. The MTP decoder layer is outside ``block_name_to_quantize`` and stays bf16,
  as in the published checkpoint ("MTP head kept in BF16"): that is what makes int4 qweight 12.16 GB and
  the total 19.5 GB measured on the H100 (../shared/CONTEXT.md).
- ``--quantized-mtp-fc``: the broken export the model card describes: ``mtp.fc`` packed as
  qweight/qzeros/scales while the config does not declare it quantized, so vLLM expects
  ``mtp.fc.weight`` and skips or refuses the packed tensors (``python -m serve fix-mtp`` repairs it).
- ``--int4-mtp-layer``: the MTP decoder layer packed as int4 as well (``"mtp.layers"`` in
  ``block_name_to_quantize``; ``mtp.fc`` still bf16). The published card says the MTP head is kept in
  BF16, but AutoRound packs the MTP tensors it copies from the source checkpoint, and this layout's
  18.997 GB = 17.69 GiB is what the published repository's file list was reported to hold (17.71 GiB with
  the tokenizer), where the default layout is 18.2 GiB. Which one the real files are is unverified.
- ``--agreeing-mtp``: the same tensors, shapes, dtypes and bytes, with the values of the "bigram" model
  (serve.checkpoint.bigram): every output projection zero (int4 nibbles at the zero point), so the next
  token is a fixed function of the current one, a long cycle through the tokenizer's ordinary ids; the MTP
  head (``mtp.fc`` = [I | 0] in bf16, its layer's output projections zero) predicts the main model's
  next-next token, so every draft is accepted while the answer is not one repeated token. For measuring
  the ceiling of MTP speculative decoding at the real model's speed.
- ``--no-vision``: the same config (vLLM 0.24 registers only the vision-language class for Qwen3.5)
  without the vision tower's 0.92 GB of weights. Serve it with ``--language-model-only`` so vLLM neither
  builds nor profiles the tower. Without that flag the CPU build (0.32) was seen starting anyway, with
  the tower allocated and never loaded: memory figures then include a tower of garbage.

Writing streams: each shard's header is computed from the layout, then tensors are generated in chunks of
at most ``CHUNK_BYTES`` and handed to a writer thread, so memory stays at a few chunks whatever the model
size. ``--device cuda`` generates with torch on the GPU, ``cpu`` with numpy's PCG64 raw output (~4 GB/s a
core); both are disk-bound: on the H100 machine the full 19.55 GB took 28 s (cuda) and 24 s (cpu), with
0.9 GB / 0.24 GB peak RSS. Every file is written
to a temporary name, fsynced and renamed; a marker (``synth-model.json``) lists finished files, so an
interrupted run resumes where it stopped and a finished one is not rewritten.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from serve import atomic
from serve.checkpoint import autoround, bigram, extras, tiny_model
from serve.checkpoint.model_dir import read_marker
from serve.checkpoint.safetensors_file import header_bytes, tensor_nbytes
from serve.errors import KitError
from serve.launch.memory import QWEN36_27B

SYNTH_VERSION = 1  # bump when the written bytes change, so finished directories are rebuilt
MARKER = "synth-model.json"
INDEX_NAME = "model.safetensors.index.json"
EXTRA_SHARD = "model_extra_tensors.safetensors"
GROUP_SIZE = 128
CHUNK_BYTES = 64 * 1024 * 1024
QZEROS_WORD = 0x77777777  # eight stored zero points of 7 = real zero point 8 (auto_round:auto_gptq)

Dtype = Literal["I32", "F16", "BF16"]

# Categories of the summary table. int4 tensors are counted by kind wherever they are; the bf16 roles
# follow serve.checkpoint.safetensors_file.tensor_role.
CATEGORIES = (
    "int4 qweight",
    "int4 qzeros",
    "int4 scales",
    "embedding (bf16)",
    "lm_head (bf16)",
    "vision tower (bf16)",
    "mtp head (bf16)",
    "other 16-bit",
)

# What ../shared/CONTEXT.md saw for the same layout on the H100 ("The real model's shape on an H100"):
# 19.5 GB in all, int4 qweight 12.16 GB, scales 0.38 GB, bf16 lm_head 2.54 GB. Decimal GB.
REFERENCE_BYTES: dict[str, float] = {
    "total": 19.5e9,
    "int4 qweight": 12.16e9,
    "int4 scales": 0.38e9,
    "lm_head (bf16)": 2.54e9,
}
REFERENCE_TOLERANCE = 0.01  # relative; the reference figures are rounded to 3-4 digits


# ---------------------------------------------------------------- dimensions


@dataclass(frozen=True)
class VisionDims:
    depth: int
    hidden: int
    intermediate: int
    heads: int
    num_position_embeddings: int  # a square: the tower interpolates a sqrt x sqrt grid
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3


@dataclass(frozen=True)
class Dims:
    """The numbers config.json carries; the layout follows from them."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    linear_key_heads: int
    linear_value_heads: int
    linear_key_dim: int
    linear_value_dim: int
    conv_kernel: int
    full_attention_interval: int
    mtp_layers: int
    max_positions: int
    mrope_section: tuple[int, int, int]  # halves of the rotary dims (head_dim x 0.25) per t/h/w axis
    vision: VisionDims


# The published Qwen3.6-27B (= Qwen3.5-27B shape) config: the linear-attention dims and the rest from the
# memory planner's shape so the two never disagree; 24 query heads and the vision tower (27 blocks of
# 1152, the Qwen3.5 VL tower) from the model's config.json.
FULL = Dims(
    hidden=QWEN36_27B.hidden_size,
    intermediate=QWEN36_27B.intermediate_size,
    layers=QWEN36_27B.num_attention_layers + QWEN36_27B.num_linear_layers,
    heads=24,
    kv_heads=QWEN36_27B.num_kv_heads,
    head_dim=QWEN36_27B.head_dim,
    vocab=QWEN36_27B.vocab_size,
    linear_key_heads=QWEN36_27B.linear_num_key_heads,
    linear_value_heads=QWEN36_27B.linear_num_value_heads,
    linear_key_dim=QWEN36_27B.linear_key_head_dim,
    linear_value_dim=QWEN36_27B.linear_value_head_dim,
    conv_kernel=QWEN36_27B.linear_conv_kernel_dim,
    full_attention_interval=(QWEN36_27B.num_attention_layers + QWEN36_27B.num_linear_layers)
    // QWEN36_27B.num_attention_layers,
    mtp_layers=QWEN36_27B.mtp_layers,
    max_positions=QWEN36_27B.max_position_embeddings,
    mrope_section=(11, 11, 10),
    vision=VisionDims(depth=27, hidden=1152, intermediate=4304, heads=16, num_position_embeddings=2304),
)

# Same structure, small enough for the CPU build of vLLM and unit tests: every int4 linear still has
# in_features a multiple of 128 and out_features a multiple of 8; in_proj_a/b (out = value heads) are
# not, as in the real model where AutoRound skips them.
MINI = Dims(
    hidden=256,
    intermediate=512,
    layers=4,
    heads=4,
    kv_heads=1,
    head_dim=64,
    vocab=1024,
    linear_key_heads=2,
    linear_value_heads=4,
    linear_key_dim=64,
    linear_value_dim=64,
    conv_kernel=4,
    full_attention_interval=4,
    mtp_layers=1,
    max_positions=8192,
    mrope_section=(3, 3, 2),
    vision=VisionDims(depth=2, hidden=64, intermediate=128, heads=2, num_position_embeddings=64),
)

SCALES: dict[str, Dims] = {"full": FULL, "mini": MINI}
# Largest shard: ~10 shards at full scale, as the published checkpoint has; several at mini scale too, so
# sharding is exercised by the tests.
SHARD_BYTES: dict[str, int] = {"full": 2_000_000_000, "mini": 1_000_000}


# ---------------------------------------------------------------- config


def layer_types(layers: int, interval: int) -> list[str]:
    return ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(layers)]


def build_config(
    dims: Dims, token_ids: dict[str, int], *, quantized_mtp_fc: bool = False, int4_mtp_layer: bool = False
) -> dict[str, Any]:
    """config.json of the AutoRound checkpoint (Qwen3_5ForConditionalGeneration + quantization_config)."""
    text: dict[str, Any] = {
        "model_type": "qwen3_5_text",
        "vocab_size": dims.vocab,
        "hidden_size": dims.hidden,
        "intermediate_size": dims.intermediate,
        "num_hidden_layers": dims.layers,
        "num_attention_heads": dims.heads,
        "num_key_value_heads": dims.kv_heads,
        "head_dim": dims.head_dim,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_output_gate": True,
        "layer_types": layer_types(dims.layers, dims.full_attention_interval),
        "full_attention_interval": dims.full_attention_interval,
        "linear_conv_kernel_dim": dims.conv_kernel,
        "linear_key_head_dim": dims.linear_key_dim,
        "linear_value_head_dim": dims.linear_value_dim,
        "linear_num_key_heads": dims.linear_key_heads,
        "linear_num_value_heads": dims.linear_value_heads,
        "mamba_ssm_dtype": "float32",
        "max_position_embeddings": dims.max_positions,
        "mtp_num_hidden_layers": dims.mtp_layers,
        "mtp_use_dedicated_embeddings": False,
        "partial_rotary_factor": 0.25,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000000,
            "partial_rotary_factor": 0.25,
            "mrope_section": list(dims.mrope_section),
            "mrope_interleaved": True,
        },
        "rms_norm_eps": 1e-6,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|endoftext|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
        "dtype": "bfloat16",
    }
    v = dims.vision
    vision: dict[str, Any] = {
        # "qwen3_5" as in the published config; transformers maps it to its qwen3_5_vision class.
        "model_type": "qwen3_5",
        "depth": v.depth,
        "hidden_size": v.hidden,
        "intermediate_size": v.intermediate,
        "num_heads": v.heads,
        "in_channels": v.in_channels,
        "patch_size": v.patch_size,
        "spatial_merge_size": v.spatial_merge_size,
        "temporal_patch_size": v.temporal_patch_size,
        "out_hidden_size": dims.hidden,
        "num_position_embeddings": v.num_position_embeddings,
        "hidden_act": "gelu_pytorch_tanh",
        "initializer_range": 0.02,
        "deepstack_visual_indexes": [],
    }
    config: dict[str, Any] = {
        "architectures": ["Qwen3_5ForConditionalGeneration"],
        "model_type": "qwen3_5",
        "text_config": text,
        "vision_config": vision,
        "image_token_id": token_ids["<|image_pad|>"],
        "video_token_id": token_ids["<|video_pad|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"],
        "vision_end_token_id": token_ids["<|vision_end|>"],
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
    }
    config["quantization_config"] = quantization_config(
        dims, quantized_mtp_fc=quantized_mtp_fc, int4_mtp_layer=int4_mtp_layer
    )
    return config


def quantization_config(
    dims: Dims, *, quantized_mtp_fc: bool = False, int4_mtp_layer: bool = False
) -> dict[str, Any]:
    """AutoRound's W4A16 export settings. extra_config lists, with bits 16, the linears inside the
    quantized blocks that stay in 16 bits; vLLM reads it per layer (and merges in_proj_a/b into
    in_proj_ba, which needs both halves configured alike)."""
    keep16 = {"bits": 16, "data_type": "float"}
    extra: dict[str, Any] = {}
    for i, kind in enumerate(layer_types(dims.layers, dims.full_attention_interval)):
        if kind == "linear_attention":
            for leaf in ("in_proj_a", "in_proj_b"):
                extra[f"model.language_model.layers.{i}.linear_attn.{leaf}"] = dict(keep16)
    if not quantized_mtp_fc:
        # The published checkpoint lists mtp.fc as 16-bit (it was dequantized after export, per the card).
        extra["mtp.fc"] = dict(keep16)
    return {
        "quant_method": "auto-round",
        "packing_format": "auto_round:auto_gptq",
        "bits": 4,
        "group_size": GROUP_SIZE,
        "sym": True,
        "data_type": "int",
        "iters": 200,
        "nsamples": 128,
        "seqlen": 2048,
        "low_gpu_mem_usage": True,
        "enable_torch_compile": True,
        "autoround_version": "0.12.0",
        # With int4_mtp_layer, "mtp.layers" as AutoRound's pass over the tensors transformers dropped adds it
        "block_name_to_quantize": [
            "model.language_model.layers",
            *(["mtp.layers"] if int4_mtp_layer else []),
        ],
        "extra_config": extra,
    }


# ---------------------------------------------------------------- layout

FillKind = Literal[
    "int4",
    "qzeros",
    "scales",
    "bf16",
    "zeros",
    "ones",
    "a_log",
    # --agreeing-mtp (serve.checkpoint.bigram)
    "zero_int4",
    "bigram_embed",
    "bigram_lm_head",
    "bigram_fc",
]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: Dtype
    category: str
    fill: FillKind

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.dtype, self.shape)


def _category(name: str) -> str:
    if name.endswith(".qweight"):
        return "int4 qweight"
    if name.endswith(".qzeros"):
        return "int4 qzeros"
    if name.endswith(".scales"):
        return "int4 scales"
    if name.startswith("mtp."):
        return "mtp head (bf16)"
    if name.startswith("model.visual."):
        return "vision tower (bf16)"
    if name == "lm_head.weight":
        return "lm_head (bf16)"
    if name.endswith("embed_tokens.weight"):
        return "embedding (bf16)"
    return "other 16-bit"


def _bf16_fill(name: str) -> FillKind:
    """Values that keep a random model numerically sane in vLLM's kernels."""
    if name.endswith(".bias"):
        return "zeros"
    if name.endswith("linear_attn.A_log"):
        return "a_log"
    if name.endswith("linear_attn.dt_bias"):
        return "ones"
    if name.startswith("model.visual.") and ".norm" in name:
        return "ones"  # LayerNorm: plain gain
    if name.endswith("linear_attn.norm.weight"):
        return "ones"  # gated RMSNorm: plain gain
    if name.endswith("norm.weight"):
        return "zeros"  # Qwen3.5's RMSNorms (GemmaRMSNorm in vLLM) scale by 1 + weight
    return "bf16"


def _text_layer(prefix: str, kind: str, d: Dims) -> list[tuple[str, tuple[int, ...]]]:
    """One decoder layer's tensors in checkpoint order (transformers' state_dict order)."""
    h = d.hidden
    out: list[tuple[str, tuple[int, ...]]] = []
    if kind == "linear_attention":
        key = d.linear_key_heads * d.linear_key_dim
        value = d.linear_value_heads * d.linear_value_dim
        conv = 2 * key + value
        la = f"{prefix}.linear_attn"
        out += [
            (f"{la}.dt_bias", (d.linear_value_heads,)),
            (f"{la}.A_log", (d.linear_value_heads,)),
            (f"{la}.conv1d.weight", (conv, 1, d.conv_kernel)),
            (f"{la}.norm.weight", (d.linear_value_dim,)),
            (f"{la}.out_proj.weight", (h, value)),
            (f"{la}.in_proj_qkv.weight", (conv, h)),
            (f"{la}.in_proj_z.weight", (value, h)),
            (f"{la}.in_proj_b.weight", (d.linear_value_heads, h)),
            (f"{la}.in_proj_a.weight", (d.linear_value_heads, h)),
        ]
    else:
        sa = f"{prefix}.self_attn"
        q = d.heads * d.head_dim
        kv = d.kv_heads * d.head_dim
        out += [
            (f"{sa}.q_proj.weight", (2 * q, h)),  # attn_output_gate: query and gate interleaved per head
            (f"{sa}.k_proj.weight", (kv, h)),
            (f"{sa}.v_proj.weight", (kv, h)),
            (f"{sa}.o_proj.weight", (h, q)),
            (f"{sa}.q_norm.weight", (d.head_dim,)),
            (f"{sa}.k_norm.weight", (d.head_dim,)),
        ]
    out += [
        (f"{prefix}.mlp.gate_proj.weight", (d.intermediate, h)),
        (f"{prefix}.mlp.up_proj.weight", (d.intermediate, h)),
        (f"{prefix}.mlp.down_proj.weight", (h, d.intermediate)),
        (f"{prefix}.input_layernorm.weight", (h,)),
        (f"{prefix}.post_attention_layernorm.weight", (h,)),
    ]
    return out


def _vision_tower(d: Dims) -> list[tuple[str, tuple[int, ...]]]:
    v = d.vision
    merged = v.hidden * v.spatial_merge_size**2
    out: list[tuple[str, tuple[int, ...]]] = [
        (
            "model.visual.patch_embed.proj.weight",
            (v.hidden, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size),
        ),
        ("model.visual.patch_embed.proj.bias", (v.hidden,)),
        ("model.visual.pos_embed.weight", (v.num_position_embeddings, v.hidden)),
    ]
    for i in range(v.depth):
        b = f"model.visual.blocks.{i}"
        out += [
            (f"{b}.norm1.weight", (v.hidden,)),
            (f"{b}.norm1.bias", (v.hidden,)),
            (f"{b}.norm2.weight", (v.hidden,)),
            (f"{b}.norm2.bias", (v.hidden,)),
            (f"{b}.attn.qkv.weight", (3 * v.hidden, v.hidden)),
            (f"{b}.attn.qkv.bias", (3 * v.hidden,)),
            (f"{b}.attn.proj.weight", (v.hidden, v.hidden)),
            (f"{b}.attn.proj.bias", (v.hidden,)),
            (f"{b}.mlp.linear_fc1.weight", (v.intermediate, v.hidden)),
            (f"{b}.mlp.linear_fc1.bias", (v.intermediate,)),
            (f"{b}.mlp.linear_fc2.weight", (v.hidden, v.intermediate)),
            (f"{b}.mlp.linear_fc2.bias", (v.hidden,)),
        ]
    out += [
        ("model.visual.merger.norm.weight", (v.hidden,)),
        ("model.visual.merger.norm.bias", (v.hidden,)),
        ("model.visual.merger.linear_fc1.weight", (merged, merged)),
        ("model.visual.merger.linear_fc1.bias", (merged,)),
        ("model.visual.merger.linear_fc2.weight", (d.hidden, merged)),
        ("model.visual.merger.linear_fc2.bias", (d.hidden,)),
    ]
    return out


def _mtp_head(d: Dims) -> list[tuple[str, tuple[int, ...]]]:
    """What vLLM's Qwen3_5MTP loads: fc over [embedding; hidden], three norms, and mtp_num_hidden_layers
    full-attention decoder layers."""
    out: list[tuple[str, tuple[int, ...]]] = [
        ("mtp.fc.weight", (d.hidden, 2 * d.hidden)),
        ("mtp.norm.weight", (d.hidden,)),
        ("mtp.pre_fc_norm_hidden.weight", (d.hidden,)),
        ("mtp.pre_fc_norm_embedding.weight", (d.hidden,)),
    ]
    for i in range(d.mtp_layers):
        out += _text_layer(f"mtp.layers.{i}", "full_attention", d)
    return out


def dims_from_config(config: dict[str, Any]) -> Dims:
    """The dimensions a config.json describes (inverse of :func:`build_config`)."""
    t, v = config["text_config"], config["vision_config"]
    layers = int(t["num_hidden_layers"])
    types = t.get("layer_types") or layer_types(layers, int(t["full_attention_interval"]))
    dims = Dims(
        hidden=int(t["hidden_size"]),
        intermediate=int(t["intermediate_size"]),
        layers=layers,
        heads=int(t["num_attention_heads"]),
        kv_heads=int(t["num_key_value_heads"]),
        head_dim=int(t["head_dim"]),
        vocab=int(t["vocab_size"]),
        linear_key_heads=int(t["linear_num_key_heads"]),
        linear_value_heads=int(t["linear_num_value_heads"]),
        linear_key_dim=int(t["linear_key_head_dim"]),
        linear_value_dim=int(t["linear_value_head_dim"]),
        conv_kernel=int(t["linear_conv_kernel_dim"]),
        full_attention_interval=int(t.get("full_attention_interval") or types.index("full_attention") + 1),
        mtp_layers=int(t.get("mtp_num_hidden_layers", 0)),
        max_positions=int(t["max_position_embeddings"]),
        mrope_section=tuple(t["rope_parameters"]["mrope_section"]),  # type: ignore[arg-type]
        vision=VisionDims(
            depth=int(v["depth"]),
            hidden=int(v["hidden_size"]),
            intermediate=int(v["intermediate_size"]),
            heads=int(v["num_heads"]),
            num_position_embeddings=int(v["num_position_embeddings"]),
            patch_size=int(v["patch_size"]),
            temporal_patch_size=int(v["temporal_patch_size"]),
            spatial_merge_size=int(v["spatial_merge_size"]),
            in_channels=int(v["in_channels"]),
        ),
    )
    if types != layer_types(layers, dims.full_attention_interval):
        raise KitError("synth-model: text_config.layer_types is not the every-Nth-full pattern of Qwen3.5")
    return dims


def _quantized(module: str, shape: tuple[int, ...], qcfg: dict[str, Any], quantized_mtp_fc: bool) -> bool:
    """Whether AutoRound packs this linear: inside a quantized block, not kept at 16 bits by extra_config,
    and of a shape its kernels take (in_features whole groups, out_features whole int32 words)."""
    if module == "mtp.fc" and quantized_mtp_fc:
        return True  # the broken export: packed although the config says nothing about it
    if len(shape) != 2:
        return False
    blocks = qcfg.get("block_name_to_quantize") or []
    if isinstance(blocks, str):
        blocks = [b for b in blocks.split(",") if b]
    if not any(module.startswith(b + ".") for b in blocks):
        return False
    extra = (qcfg.get("extra_config") or {}).get(module)
    if extra is not None and int(extra.get("bits", qcfg["bits"])) >= 16:
        return False
    out_f, in_f = shape
    return in_f % int(qcfg["group_size"]) == 0 and out_f % autoround.PACK_FACTOR == 0


def layout(
    config: dict[str, Any], *, vision: bool = True, quantized_mtp_fc: bool = False
) -> list[TensorSpec]:
    """Every tensor the checkpoint holds, in file order: (name, shape, dtype, category, fill). Pure: no
    data, so the full 19.5 GB layout is computed in milliseconds."""
    d = dims_from_config(config)
    qcfg = config["quantization_config"]
    group = int(qcfg["group_size"])
    names: list[tuple[str, tuple[int, ...]]] = [
        ("model.language_model.embed_tokens.weight", (d.vocab, d.hidden))
    ]
    for i, kind in enumerate(layer_types(d.layers, d.full_attention_interval)):
        names += _text_layer(f"model.language_model.layers.{i}", kind, d)
    names += [("model.language_model.norm.weight", (d.hidden,)), ("lm_head.weight", (d.vocab, d.hidden))]
    if vision:
        names += _vision_tower(d)
    names += _mtp_head(d)

    specs: list[TensorSpec] = []
    for name, shape in names:
        module = name.removesuffix(".weight")
        if name.endswith(".weight") and _quantized(module, shape, qcfg, quantized_mtp_fc):
            out_f, in_f = shape
            for suffix, shp, dtype, fill in (
                ("qweight", (in_f // autoround.PACK_FACTOR, out_f), "I32", "int4"),
                ("qzeros", (in_f // group, out_f // autoround.PACK_FACTOR), "I32", "qzeros"),
                ("scales", (in_f // group, out_f), "F16", "scales"),
            ):
                full = f"{module}.{suffix}"
                specs.append(TensorSpec(full, shp, dtype, _category(full), fill))  # type: ignore[arg-type]
        else:
            specs.append(TensorSpec(name, shape, "BF16", _category(name), _bf16_fill(name)))
    return specs


def agreeing_fills(specs: list[TensorSpec]) -> list[TensorSpec]:
    """The same tensors (names, shapes, dtypes, so the same bytes on disk and the same kernels) with the
    values of serve.checkpoint.bigram: zero output projections, the bigram embedding and lm_head, and
    mtp.fc = [I | 0]."""
    out = []
    for s in specs:
        module, _, suffix = s.name.rpartition(".")
        fill: FillKind = s.fill
        if bigram.is_zeroed(module) and suffix == "qweight":
            fill = "zero_int4"
        elif bigram.is_zeroed(module) and suffix == "weight":
            fill = "zeros"
        elif s.name.endswith("embed_tokens.weight"):
            fill = "bigram_embed"
        elif s.name == "lm_head.weight":
            fill = "bigram_lm_head"
        elif s.name == "mtp.fc.weight":
            fill = "bigram_fc"
        out.append(TensorSpec(s.name, s.shape, s.dtype, s.category, fill))
    return out


def totals(specs: list[TensorSpec]) -> dict[str, tuple[int, int]]:
    """category -> (tensors, bytes), in CATEGORIES order, plus "total"."""
    out = {c: (0, 0) for c in CATEGORIES}
    for s in specs:
        n, b = out[s.category]
        out[s.category] = (n + 1, b + s.nbytes)
    out["total"] = (len(specs), sum(s.nbytes for s in specs))
    return out


def reference_mismatches(sums: dict[str, tuple[int, int]], *, vision: bool = True) -> list[str]:
    """How the full layout's totals differ from what CONTEXT.md saw (empty when within tolerance)."""
    problems = []
    for key, want in REFERENCE_BYTES.items():
        if key == "total" and not vision:
            continue  # the 19.5 GB included the vision tower
        got = sums[key][1]
        if abs(got - want) > REFERENCE_TOLERANCE * want:
            problems.append(f"{key}: {got / 1e9:.3f} GB, CONTEXT.md saw {want / 1e9:.2f} GB")
    return problems


def format_table(sums: dict[str, tuple[int, int]]) -> str:
    rows = [f"{'category':<22} {'tensors':>8} {'bytes':>16} {'GB':>8}"]
    for key, (n, b) in sums.items():
        if key == "total":
            rows.append("-" * len(rows[0]))
        if n or key == "total":
            rows.append(f"{key:<22} {n:>8} {b:>16,} {b / 1e9:>8.3f}")
    return "\n".join(rows)


# ---------------------------------------------------------------- sharding


@dataclass
class Shard:
    filename: str
    tensors: list[tuple[int, TensorSpec]] = field(default_factory=list)  # (index in the layout, spec)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for _, s in self.tensors)


def plan_shards(specs: list[TensorSpec], max_shard_bytes: int) -> list[Shard]:
    """Greedy in file order, like transformers' save_pretrained: a new shard when the next tensor would
    overflow this one (a tensor larger than the limit gets a shard of its own). The MTP head goes to
    model_extra_tensors.safetensors, where AutoRound puts the tensors transformers' model lacks."""
    main: list[list[tuple[int, TensorSpec]]] = [[]]
    size = 0
    extra: list[tuple[int, TensorSpec]] = []
    for i, s in enumerate(specs):
        if s.name.startswith("mtp."):
            extra.append((i, s))
            continue
        if main[-1] and size + s.nbytes > max_shard_bytes:
            main.append([])
            size = 0
        main[-1].append((i, s))
        size += s.nbytes
    n = len(main)
    shards = [Shard(f"model-{k + 1:05d}-of-{n:05d}.safetensors", part) for k, part in enumerate(main)]
    if extra:
        shards.append(Shard(EXTRA_SHARD, extra))
    return shards


def index_json(shards: list[Shard]) -> dict[str, Any]:
    weight_map = {s.name: shard.filename for shard in shards for _, s in shard.tensors}
    total = sum(shard.nbytes for shard in shards)
    return {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}


# ---------------------------------------------------------------- random data

# 32-bit word recipes applied to uniformly random words; both 16-bit halves get the same treatment.
# bf16: keep sign, the two low exponent bits and the mantissa, then add exponent 119: |x| in [2^-8, 2^-4).
BF16_KEEP, BF16_ADD = 0x81FF81FF, 0x3B803B80
# fp16 scale: exponent 7 (2^-8), random mantissa: [0.0039, 0.0078). With q - 8 uniform in -8..7 (rms 4.6)
# a dequantized weight has rms ~0.027, like the bf16 tensors.
SCALE_KEEP, SCALE_OR = 0x03FF03FF, 0x1C001C00
ONES_BF16 = 0x3F803F80


def _as_int32(word: int) -> int:
    return word - (1 << 32) if word >= 1 << 31 else word


class _Generator:
    """Chunks of a tensor's bytes. Each tensor has its own stream seeded by (seed, index in the layout), so
    a resumed run writes the same bytes as an uninterrupted one on the same device."""

    def __init__(self, seed: int, device: str, model: bigram.Bigram | None = None) -> None:
        self.seed = seed
        self.device = device
        self.bigram = model
        if device != "numpy":
            import torch

            self.torch = torch

    def chunks(self, key: int, spec: TensorSpec) -> Iterator[np.ndarray]:
        nbytes = spec.nbytes
        if spec.fill == "a_log":
            # log of a decay rate in [1, 16], as Qwen3-Next/3.5 initialise it; tiny, so on the CPU
            rng = np.random.Generator(np.random.PCG64([self.seed, key]))
            values = np.log(rng.uniform(1.0, 16.0, spec.numel)).astype(np.float32)
            yield autoround.float32_to_bf16_bits(values).view(np.uint8)
            return
        if spec.fill in ("bigram_embed", "bigram_lm_head", "bigram_fc"):
            yield from self._bigram_chunks(spec)
            return
        constant = {
            "qzeros": QZEROS_WORD,
            "zeros": 0,
            "ones": ONES_BF16,
            "zero_int4": bigram.ZERO_INT4_WORD,
        }.get(spec.fill)
        done = 0
        words = self._words(key) if constant is None else None
        while done < nbytes:
            n = min(CHUNK_BYTES, nbytes - done)
            count = (n + 3) // 4
            if words is None:
                buf = np.full(count, constant, dtype=np.uint32)
            else:
                buf = self._shape_bits(words(count), spec.fill)
            yield buf.view(np.uint8)[:n]
            done += n

    def _bigram_chunks(self, spec: TensorSpec) -> Iterator[np.ndarray]:
        model = self.bigram
        if model is None:
            raise KitError(f"synth-model: {spec.name} needs the bigram model (--agreeing-mtp)")
        if spec.fill == "bigram_fc":
            yield bigram.bf16_bytes(model.fc())
            return
        rows_of = model.embedding_bf16 if spec.fill == "bigram_embed" else model.lm_head_bf16
        vocab, hidden = spec.shape
        step = max(1, CHUNK_BYTES // (2 * hidden))  # whole rows
        for start in range(0, vocab, step):
            yield rows_of(start, min(vocab, start + step)).view(np.uint8).reshape(-1)

    def _words(self, key: int) -> Callable[[int], Any]:
        if self.device == "numpy":
            bitgen = np.random.PCG64([self.seed, key])

            def draw_np(count: int) -> np.ndarray:
                # random_raw is PCG64's raw 64-bit output: ~4 GB/s, 10x numpy's Generator.bytes
                return bitgen.random_raw((count + 1) // 2).view(np.uint32)[:count]

            return draw_np
        torch = self.torch
        gen = torch.Generator(device=self.device)
        gen.manual_seed(int.from_bytes(hashlib.sha256(f"{self.seed}:{key}".encode()).digest()[:7], "little"))

        def draw_torch(count: int) -> Any:
            return torch.randint(
                -(1 << 31), 1 << 31, (count,), dtype=torch.int32, device=self.device, generator=gen
            )

        return draw_torch

    def _shape_bits(self, words: Any, fill: FillKind) -> np.ndarray:
        if self.device == "numpy":
            if fill == "bf16":
                words &= np.uint32(BF16_KEEP)
                words += np.uint32(BF16_ADD)
            elif fill == "scales":
                words &= np.uint32(SCALE_KEEP)
                words |= np.uint32(SCALE_OR)
            return words
        # torch: int32 arithmetic on the device (no carry crosses the 16-bit halves), then to host
        if fill == "bf16":
            words = (words & _as_int32(BF16_KEEP)) + BF16_ADD
        elif fill == "scales":
            words = (words & SCALE_KEEP) | SCALE_OR
        return words.cpu().numpy().view(np.uint32)


# ---------------------------------------------------------------- writing


class _StreamWriter:
    """Writes buffers to ``path`` through a temporary file on a background thread, so generating the
    next chunk overlaps writing this one (numpy, torch and file writes all release the GIL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.file = self.tmp.open("wb", buffering=0)
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.written = 0
        self.thread = threading.Thread(target=self._run, name=f"write-{path.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            buf = self.queue.get()
            if buf is None:
                return
            if self.error is not None:
                continue  # drain so the producer never blocks
            try:
                view = memoryview(buf).cast("B")
                while view:
                    n = self.file.write(view)
                    view = view[n:]
                    self.written += n
            except BaseException as exc:
                self.error = exc

    def write(self, buf: Any) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(buf)

    def commit(self, expected: int) -> None:
        self.queue.put(None)
        self.thread.join()
        try:
            if self.error is not None:
                raise self.error
            if self.written != expected:
                raise KitError(f"synth-model: wrote {self.written} bytes to {self.tmp}, expected {expected}")
            os.fsync(self.file.fileno())
            self.file.close()
            self.tmp.chmod(0o644)
            os.replace(self.tmp, self.path)
        finally:
            self.abort()

    def abort(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


def _write_shard(path: Path, shard: Shard, gen: _Generator) -> None:
    specs = [s for _, s in shard.tensors]
    head = header_bytes(((s.name, s.dtype, s.shape) for s in specs), {"format": "pt"})
    writer = _StreamWriter(path)
    try:
        writer.write(np.frombuffer(head, dtype=np.uint8))
        for key, spec in shard.tensors:
            for buf in gen.chunks(key, spec):
                writer.write(buf)
        writer.commit(len(head) + shard.nbytes)
    except BaseException:
        writer.abort()
        raise


# ---------------------------------------------------------------- the directory


@dataclass(frozen=True)
class SynthSpec:
    scale: str = "full"
    seed: int = 0
    vision: bool = True
    quantized_mtp_fc: bool = False
    device: str = "cpu"  # the bytes differ between the numpy and the torch generator
    int4_mtp_layer: bool = False
    agreeing_mtp: bool = False

    def validate(self) -> None:
        if self.agreeing_mtp and self.quantized_mtp_fc:
            raise KitError(
                "synth-model: --agreeing-mtp and --quantized-mtp-fc exclude each other (vLLM skips a packed "
                "mtp.fc, so no draft could be accepted); drop one"
            )
        if self.scale not in SCALES:
            raise KitError(f"synth-model: --scale {self.scale!r} is not one of {', '.join(SCALES)}")
        if self.device not in ("cpu", "cuda"):
            raise KitError(f"synth-model: --device {self.device!r} is not cpu or cuda")


@dataclass
class Plan:
    """Everything a run writes, computed before writing anything."""

    spec: SynthSpec
    config: dict[str, Any]
    specs: list[TensorSpec]
    shards: list[Shard]
    small_files: dict[str, bytes]  # config, tokenizer, index ... (written before / after the shards)
    bigram: bigram.Bigram | None = None  # --agreeing-mtp: the values of the embedding, lm_head and mtp.fc

    @property
    def weight_bytes(self) -> int:
        return sum(s.nbytes for s in self.specs)


def make_plan(spec: SynthSpec) -> Plan:
    spec.validate()
    extras.require("synth-model", "tokenizers", why=" to build the tokenizer")
    dims = SCALES[spec.scale]
    tokenizer_files, token_ids = _tokenizer_files(dims)
    config = build_config(
        dims, token_ids, quantized_mtp_fc=spec.quantized_mtp_fc, int4_mtp_layer=spec.int4_mtp_layer
    )
    specs = layout(config, vision=spec.vision, quantized_mtp_fc=spec.quantized_mtp_fc)
    model = None
    if spec.agreeing_mtp:
        specs = agreeing_fills(specs)
        model = bigram.build(dims.vocab, dims.hidden, ordinary_ids(), seed=spec.seed)
    shards = plan_shards(specs, SHARD_BYTES[spec.scale])
    small = {
        "config.json": _json(config),
        # AutoRound also writes the quantization settings on their own; vLLM reads config.json's copy
        "quantization_config.json": _json(config["quantization_config"]),
        "generation_config.json": _json(tiny_model.generation_config(token_ids, temperature=1.0)),
        **_processor_files(spec.scale),
        **tokenizer_files,
    }
    return Plan(spec, config, specs, shards, small, model)


def ordinary_ids() -> list[int]:
    """The tokenizer's ids but the special and markup ones: what the bigram model emits."""
    tok = tiny_model.build_tokenizer()
    skip = {tok.token_to_id(t) for t in (*tiny_model.SPECIAL_TOKENS, *tiny_model.MARKUP_TOKENS)}
    return [i for i in range(tok.get_vocab_size()) if i not in skip]


def write_synth_model(
    out_dir: str | Path,
    *,
    scale: str = "full",
    device: str = "cpu",
    seed: int = 0,
    vision: bool = True,
    quantized_mtp_fc: bool = False,
    int4_mtp_layer: bool = False,
    agreeing_mtp: bool = False,
    log: Callable[[str], None] = print,
    _generator_device: str | None = None,
) -> Path:
    """Write (or finish, or confirm) the synthetic checkpoint in out_dir and return its path.

    out_dir must be missing, empty, or a directory this function wrote before. ``_generator_device``
    overrides the generator for tests ("numpy", or a torch device such as "cpu").
    """
    spec = SynthSpec(scale, seed, vision, quantized_mtp_fc, device, int4_mtp_layer, agreeing_mtp)
    plan = make_plan(spec)
    out = Path(out_dir)
    marker = read_marker(out / MARKER)
    spec_dict = marker_spec(spec)
    if out.exists() and marker is None and any(out.iterdir()):
        raise KitError(
            f"synth-model: {out} is not empty and has no {MARKER}; give an empty or new directory "
            "(synth-model only replaces models it wrote itself)"
        )
    same = marker is not None and marker.get("spec") == spec_dict
    done: dict[str, int] = dict(marker.get("files", {})) if same and marker else {}
    done = {n: size for n, size in done.items() if (out / n).is_file() and (out / n).stat().st_size == size}
    expected_files = [*plan.small_files, *(s.filename for s in plan.shards), INDEX_NAME]
    if same and marker and marker.get("complete") and all(n in done for n in expected_files):
        log(f"synth-model: {out} already holds this model ({_describe(spec)}); nothing to write")
        return out

    if device == "cuda" and _generator_device is None:
        _require_cuda()
    out.mkdir(parents=True, exist_ok=True)
    if marker is not None:
        _remove_stale(out, marker, keep=set(done))
    generator_device = _generator_device or ("numpy" if device == "cpu" else "cuda")
    missing = sum(s.nbytes for s in plan.shards if s.filename not in done)
    free = shutil.disk_usage(out).free
    if missing > free:
        raise KitError(
            f"synth-model: {out} has {free / 1e9:.1f} GB free but the model needs {missing / 1e9:.1f} GB "
            "more; free some space or choose another directory"
        )
    gen = _Generator(seed, generator_device, plan.bigram)

    def save_marker(complete: bool) -> None:
        atomic.write_text(
            out / MARKER,
            json.dumps({"spec": spec_dict, "complete": complete, "files": done}, indent=2) + "\n",
        )
        (out / MARKER).chmod(0o644)

    save_marker(False)
    for name, data in plan.small_files.items():
        if name not in done:
            atomic.write_bytes(out / name, data)
            (out / name).chmod(0o644)
            done[name] = len(data)
    save_marker(False)
    size = f"{plan.weight_bytes / 1e9:.2f} GB in {len(plan.shards)} files"
    log(f"synth-model: {_describe(spec)} -> {out} ({size})")
    started = time.monotonic()
    written = 0
    for shard in plan.shards:
        if shard.filename in done:
            log(f"  {shard.filename}: already written")
            continue
        t0 = time.monotonic()
        _write_shard(out / shard.filename, shard, gen)
        done[shard.filename] = (out / shard.filename).stat().st_size
        save_marker(False)
        dt = max(time.monotonic() - t0, 1e-9)
        written += shard.nbytes
        rate = shard.nbytes / dt / 1e9
        log(f"  {shard.filename}: {shard.nbytes / 1e9:.3f} GB in {dt:.1f} s ({rate:.2f} GB/s)")
    # The index last: until it exists no loader takes the directory for a complete sharded checkpoint.
    index = _json(index_json(plan.shards))
    atomic.write_bytes(out / INDEX_NAME, index)
    (out / INDEX_NAME).chmod(0o644)
    done[INDEX_NAME] = len(index)
    save_marker(True)
    elapsed = time.monotonic() - started
    if written:
        log(f"synth-model: wrote {written / 1e9:.2f} GB of weights in {elapsed:.1f} s")
    return out


def marker_spec(spec: SynthSpec) -> dict[str, Any]:
    """The inputs the marker records. agreeing_mtp only when set, so that directories written before the
    option existed still match their (unchanged) bytes."""
    out = {"synth_version": SYNTH_VERSION, **asdict(spec)}
    if not spec.agreeing_mtp:
        del out["agreeing_mtp"]
    return out


def _remove_stale(out: Path, marker: dict[str, Any], keep: set[str]) -> None:
    """Files an earlier run with other settings wrote (listed in its marker), and temporaries of an
    interrupted run."""
    for name in marker.get("files", {}):
        if name not in keep and "/" not in name:
            (out / name).unlink(missing_ok=True)
    for p in out.glob(".*.tmp"):
        p.unlink(missing_ok=True)


def _require_cuda() -> None:
    extras.require("synth-model", "torch", why=" for --device cuda (or use --device cpu)")
    import torch

    if not torch.cuda.is_available():
        raise KitError("synth-model: --device cuda but torch sees no CUDA GPU; use --device cpu")


def _describe(spec: SynthSpec) -> str:
    parts = [f"Qwen3.6-27B INT4 AutoRound layout, {spec.scale} scale"]
    if not spec.vision:
        parts.append("no vision tower")
    if spec.quantized_mtp_fc:
        parts.append("quantized mtp.fc")
    if spec.int4_mtp_layer:
        parts.append("int4 MTP layer")
    if spec.agreeing_mtp:
        parts.append("agreeing MTP (bigram)")
    return ", ".join(parts) + f", seed {spec.seed}, {spec.device}"


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


# ---------------------------------------------------------------- tokenizer and processor files


def _tokenizer_files(dims: Dims) -> tuple[dict[str, bytes], dict[str, int]]:
    """The tiny-model factory's byte-level BPE with Qwen's ChatML and vision tokens (a few hundred ids);
    the embedding still has the real 248,320 rows, as vLLM only needs vocab_size >= the tokenizer's."""
    tok = tiny_model.build_tokenizer()
    names = (*tiny_model.SPECIAL_TOKENS, *tiny_model.MARKUP_TOKENS)
    ids = {t: tok.token_to_id(t) for t in names}
    if tok.get_vocab_size() > dims.vocab:
        raise KitError(f"synth-model: tokenizer has {tok.get_vocab_size()} ids, more than vocab {dims.vocab}")
    template = tiny_model.chat_template(tool_call_style="xml")  # Qwen3.5/3.6 tool calls: qwen3_xml parser
    added = {
        str(ids[t]): {
            "content": t,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "single_word": False,
            "special": t in tiny_model.SPECIAL_TOKENS,
        }
        for t in names
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": dims.max_positions,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_prefix_space": False,
        "split_special_tokens": False,
        "added_tokens_decoder": added,
        "chat_template": template,
    }
    files = {
        "tokenizer.json": tok.to_str().encode(),
        "tokenizer_config.json": _json(tokenizer_config),
        "chat_template.jinja": template.encode(),
        "special_tokens_map.json": _json(
            {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "additional_special_tokens": []}
        ),
    }
    return files, ids


def _processor_files(scale: str) -> dict[str, bytes]:
    """The published image/video processor settings at full scale (vLLM profiles the vision tower with
    the largest image they allow, which is part of the memory a user must plan for); small pixel limits
    at mini scale so the CPU build's start-up profiling stays quick."""
    full = scale == "full"
    common = {
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "Qwen3VLProcessor",
    }
    image_size = (
        {"shortest_edge": 65536, "longest_edge": 16777216}
        if full
        else {"shortest_edge": 4096, "longest_edge": 262144}
    )
    video_size = (
        {"shortest_edge": 4096, "longest_edge": 25165824}
        if full
        else {"shortest_edge": 4096, "longest_edge": 262144}
    )
    image = {"image_processor_type": "Qwen2VLImageProcessorFast", "size": image_size, **common}
    video = {
        "video_processor_type": "Qwen3VLVideoProcessor",
        "size": video_size,
        "fps": 2,
        "min_frames": 4,
        "max_frames": 768 if full else 8,
        **common,
    }
    return {"preprocessor_config.json": _json(image), "video_preprocessor_config.json": _json(video)}


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "out_dir", metavar="DIR", help="directory to write (created; resumed or reused if it matches)"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="generate the random bytes with numpy on the CPU or torch on the GPU (default cpu)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scale",
        choices=tuple(SCALES),
        default="full",
        help="full: the real 19.5 GB layout; mini: the same names and structure at toy size (tests)",
    )
    parser.add_argument(
        "--no-vision",
        action="store_true",
        help="leave out the vision tower's weights (then serve with vLLM's --language-model-only)",
    )
    parser.add_argument(
        "--quantized-mtp-fc",
        action="store_true",
        help="store mtp.fc packed as int4, the broken export vLLM's MTP drafter skips (see fix-mtp)",
    )
    parser.add_argument(
        "--int4-mtp-layer",
        action="store_true",
        help="pack the MTP decoder layer as int4 too (mtp.fc stays bf16): the other layout reported for the "
        "published checkpoint, ~19.0 GB",
    )
    parser.add_argument(
        "--agreeing-mtp",
        action="store_true",
        help="same layout and sizes, with values whose MTP head agrees with the model (every draft accepted) "
        "while the greedy answer walks hundreds of distinct tokens: the ceiling of MTP (serve.checkpoint.bigram)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the layout's table by category and write nothing"
    )


def run(args: argparse.Namespace) -> int:
    spec = SynthSpec(
        args.scale,
        args.seed,
        not args.no_vision,
        args.quantized_mtp_fc,
        args.device,
        args.int4_mtp_layer,
        args.agreeing_mtp,
    )
    plan = make_plan(spec)
    sums = totals(plan.specs)
    ref = ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in REFERENCE_BYTES.items())
    # Checked before writing: 19.5 GB of a layout that drifted from the measured one is worth nothing.
    # CONTEXT.md's figures are for the default layout (bf16 MTP layer)
    checked = spec.scale == "full" and not spec.int4_mtp_layer
    problems = reference_mismatches(sums, vision=spec.vision) if checked else []
    if problems:
        raise KitError(
            f"synth-model: the full layout differs from CONTEXT.md's H100 run ({ref}): " + "; ".join(problems)
        )
    if not args.dry_run:
        write_synth_model(
            args.out_dir,
            scale=args.scale,
            device=args.device,
            seed=args.seed,
            vision=spec.vision,
            quantized_mtp_fc=spec.quantized_mtp_fc,
            int4_mtp_layer=spec.int4_mtp_layer,
            agreeing_mtp=spec.agreeing_mtp,
        )
    print(format_table(sums))
    if checked:
        print(f"within {REFERENCE_TOLERANCE:.0%} of CONTEXT.md's H100 run ({ref})")
    if not spec.vision and not args.dry_run:
        print(
            "no vision tower: serve it with vLLM's --language-model-only (else vLLM allocates an unloaded tower)"
        )
    return 0

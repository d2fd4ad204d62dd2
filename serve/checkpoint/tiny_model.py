"""Tiny random-weight checkpoints that vLLM loads in seconds: for tests, the CPU demo and for users who
want to try a deployment without downloading 18 GB.

``python -m serve tiny-model DIR --arch qwen3|qwen3_5 [--int4] [--quantized-mtp-fc] [--agreeing-mtp]
[--bigram-mtp]``

- ``qwen3``: dense ``Qwen3ForCausalLM`` (the fast default).
- ``qwen3_5``: the Qwen3.5/3.6 hybrid (Gated DeltaNet + full attention) with an MTP head named as in the
  real checkpoint (``mtp.fc.weight``, ``mtp.layers.0.*``, ``mtp.pre_fc_norm_*``, ``mtp.norm``). Text-only
  ``Qwen3_5ForCausalLM`` by default (what the CPU build of vLLM serves); ``vl=True`` writes the real
  checkpoint's ``Qwen3_5ForConditionalGeneration`` layout with a one-block vision tower (the only Qwen3.5
  architecture vLLM 0.24 registers).
- ``int4``: the same weights as an INT4 AutoRound checkpoint (W4A16, group 128, symmetric,
  ``auto_round:auto_gptq``), quantization_config shaped like the real model's.
- ``quantized_mtp_fc``: mtp.fc stored as qweight/qzeros/scales, the broken case the model card describes
  (vLLM skips the weight and MTP accepts 0%); ``python -m serve fix-mtp`` repairs it.
- ``agreeing_mtp``: every hidden state is dominated by one direction that the LM head maps to one token, and
  the MTP head keeps that direction, so model and drafter emit the same constant token (even when sampling)
  and speculative decoding accepts drafts.
- ``bigram_mtp``: the values of serve.checkpoint.bigram, as ``synth-model --agreeing-mtp`` writes them at
  the real model's size: zero output projections, so the greedy next token is a fixed function of the
  current one (a cycle through all 512 ordinary ids: answers are not one repeated token), and an MTP head
  that predicts the model's next-next token, so every draft is accepted.

Tensor names and shapes come from transformers' own model classes (instantiated on the meta device), the
values from a seeded generator, so the same parameters always give byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from serve.checkpoint import autoround, extras
from serve.checkpoint.model_dir import read_marker
from serve.errors import KitError

FACTORY_VERSION = 2  # bump when the written files change, so cached models are rebuilt
MARKER = "tiny-model.json"
ARCHS = ("qwen3", "qwen3_5")
GROUP_SIZE = 128

# Small, but every quantized linear has in/out features that are multiples of 128 / 8.
HIDDEN = 128
INTERMEDIATE = 256
NUM_HEADS = 2
NUM_KV_HEADS = 1
HEAD_DIM = 64
MAX_POSITIONS = 8192
CONSTANT_TEXT = "a"  # the token an agreeing model emits forever

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Plain added tokens: single ids (vLLM's reasoning/tool parsers match them) that stay in decoded text,
# as in Qwen3's tokenizer where they are not "special".
MARKUP_TOKENS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
BPE_VOCAB = 512


@dataclass(frozen=True)
class TinySpec:
    arch: str = "qwen3"
    int4: bool = False
    quantized_mtp_fc: bool = False
    agreeing_mtp: bool = False
    seed: int = 0
    vl: bool = False
    bigram_mtp: bool = False

    def validate(self) -> None:
        if self.bigram_mtp and (self.arch != "qwen3_5" or self.agreeing_mtp or self.quantized_mtp_fc):
            raise KitError(
                "tiny-model: --bigram-mtp needs --arch qwen3_5 and excludes --agreeing-mtp and "
                "--quantized-mtp-fc (each sets the MTP head's values its own way)"
            )
        if self.arch not in ARCHS:
            raise KitError(f"tiny-model: --arch {self.arch!r} is not one of {', '.join(ARCHS)}")
        if self.arch == "qwen3" and (self.quantized_mtp_fc or self.agreeing_mtp or self.vl):
            raise KitError(
                "tiny-model: --quantized-mtp-fc, --agreeing-mtp and --vl need --arch qwen3_5 "
                "(the dense qwen3 model has no MTP head or vision tower)"
            )
        if self.quantized_mtp_fc and not self.int4:
            raise KitError(
                "tiny-model: --quantized-mtp-fc needs --int4 (it is a broken INT4 AutoRound export)"
            )


def make_tiny_model(
    out_dir: str | Path,
    arch: str = "qwen3",
    *,
    int4: bool = False,
    quantized_mtp_fc: bool = False,
    agreeing_mtp: bool = False,
    seed: int = 0,
    vl: bool = False,
    bigram_mtp: bool = False,
) -> Path:
    """Write a tiny model into out_dir (created if missing) and return its path.

    Idempotent: when out_dir already holds a complete model written with the same parameters, nothing is
    written. out_dir must be empty, missing, or a directory this function wrote before.
    """
    spec = TinySpec(arch, int4, quantized_mtp_fc, agreeing_mtp, seed, vl, bigram_mtp)
    spec.validate()
    extras.require("tiny-model", "torch", "transformers", "tokenizers")
    out = Path(out_dir)
    old_marker = read_marker(out / MARKER)
    if old_marker is not None and old_marker.get("spec") == _marker_spec(spec) and _complete(out, old_marker):
        return out
    if out.exists() and old_marker is None and any(out.iterdir()):
        raise KitError(
            f"tiny-model: {out} is not empty and has no {MARKER}; give an empty or new directory "
            "(tiny-model only replaces models it wrote itself)"
        )
    out.mkdir(parents=True, exist_ok=True)
    # Build beside the target, then move the files in with the marker last: a reader that sees the
    # marker sees a complete model, and an interrupted build leaves no marker.
    with tempfile.TemporaryDirectory(prefix=".tiny-", dir=out) as tmp:
        files = _write_model(Path(tmp), spec)
        (out / MARKER).unlink(missing_ok=True)
        for stale in set((old_marker or {}).get("files", {})) - set(files):
            (out / stale).unlink(missing_ok=True)
        for name in files:
            os.replace(Path(tmp) / name, out / name)
        marker = {"spec": _marker_spec(spec), "files": files}
        _write_json(out / MARKER, marker)
    return out


# ---------------------------------------------------------------- marker


def _marker_spec(spec: TinySpec) -> dict[str, Any]:
    out = {"factory_version": FACTORY_VERSION, **asdict(spec)}
    if not spec.bigram_mtp:
        del out["bigram_mtp"]  # models written before the option existed still match
    return out


def _complete(out: Path, marker: dict[str, Any]) -> bool:
    files = marker.get("files") or {}
    return bool(files) and all(
        (out / name).is_file() and (out / name).stat().st_size == size for name, size in files.items()
    )


# ---------------------------------------------------------------- the model


def _write_model(d: Path, spec: TinySpec) -> dict[str, int]:
    import torch

    tokenizer = build_tokenizer()
    vocab_size = tokenizer.get_vocab_size()
    ids = {t: tokenizer.token_to_id(t) for t in (*SPECIAL_TOKENS, *MARKUP_TOKENS)}
    _write_tokenizer(d, tokenizer, spec.arch)

    config = _config(spec, vocab_size, ids)
    names_shapes = _hf_names_and_shapes(config)
    gen = torch.Generator().manual_seed(spec.seed)
    tensors = {name: _init_tensor(name, shape, spec, gen) for name, shape in names_shapes.items()}
    if config["architectures"][0] == "Qwen3_5ForCausalLM":
        # Name the text-only model's tensors as the real (vision-language) checkpoint does; vLLM's
        # Qwen3_5ForCausalLM maps the `model.language_model.` prefix back.
        tensors = {_real_checkpoint_name(k): v for k, v in tensors.items()}
    if spec.arch == "qwen3_5":
        tensors.update(_mtp_tensors(tensors, config, spec, gen))
    if spec.agreeing_mtp:
        _make_agreeing(tensors, tokenizer.token_to_id(_byte_level(CONSTANT_TEXT)))
    if spec.bigram_mtp:
        _make_bigram(tensors, tokenizer, ids, spec.seed)
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}
    if spec.int4:
        tensors, config["quantization_config"] = _quantize(tensors, config, spec)

    _write_json(d / "config.json", config)
    _write_json(d / "generation_config.json", generation_config(ids))
    if spec.vl:
        _write_processor_configs(d)
    _write_safetensors(d, tensors, sharded=spec.arch == "qwen3_5")
    files = sorted(p for p in d.iterdir() if p.is_file())
    for p in files:
        p.chmod(0o644)  # safetensors writes 0600; containers running as another user must read it
    return {p.name: p.stat().st_size for p in files}


def _text_config(spec: TinySpec, vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": 2,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "dtype": "bfloat16",
    }
    if spec.arch == "qwen3":
        return {
            **common,
            "model_type": "qwen3",
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "use_sliding_window": False,
            "sliding_window": None,
            "max_window_layers": 2,
        }
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25}
    if spec.vl:
        # Qwen3-VL's multimodal RoPE: sections over the 16 rotary dims / 2 (head_dim 64 x 0.25 = 16).
        rope.update({"mrope_section": [2, 3, 3], "mrope_interleaved": True})
    return {
        **common,
        "model_type": "qwen3_5_text",
        "layer_types": ["linear_attention", "full_attention"],
        "full_attention_interval": 2,
        "linear_conv_kernel_dim": 4,
        "linear_key_head_dim": 64,
        "linear_value_head_dim": 64,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 2,
        "mtp_num_hidden_layers": 1,
        "mtp_use_dedicated_embeddings": False,
        "attn_output_gate": True,
        "rope_parameters": rope,
    }


def _config(spec: TinySpec, vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
    text = _text_config(spec, vocab_size, ids)
    if spec.arch == "qwen3":
        return {"architectures": ["Qwen3ForCausalLM"], **text}
    if not spec.vl:
        return {"architectures": ["Qwen3_5ForCausalLM"], **text}
    return {
        "architectures": ["Qwen3_5ForConditionalGeneration"],
        "model_type": "qwen3_5",
        "text_config": text,
        "vision_config": {
            "model_type": "qwen3_5_vision",
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "in_channels": 3,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": HIDDEN,
            "num_position_embeddings": 64,
            "hidden_act": "gelu_pytorch_tanh",
            "deepstack_visual_indexes": [],
        },
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
    }


def _hf_names_and_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of transformers' model for this config, without allocating memory."""
    import torch
    import transformers

    arch = config["architectures"][0]
    hf_config: Any
    if arch == "Qwen3ForCausalLM":
        hf_config = transformers.Qwen3Config(**_without(config, "architectures", "model_type"))
    elif arch == "Qwen3_5ForCausalLM":
        hf_config = transformers.Qwen3_5TextConfig(**_without(config, "architectures", "model_type"))
    else:
        hf_config = transformers.Qwen3_5Config(
            text_config=_without(config["text_config"], "model_type"),
            vision_config=_without(config["vision_config"], "model_type"),
            **_without(config, "architectures", "model_type", "text_config", "vision_config"),
        )
    with torch.device("meta"):
        model = getattr(transformers, arch)(hf_config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _real_checkpoint_name(name: str) -> str:
    return "model.language_model." + name[len("model.") :] if name.startswith("model.") else name


def _init_tensor(name: str, shape: tuple[int, ...], spec: TinySpec, gen: Any) -> Any:
    import torch

    gemma_norm = spec.arch == "qwen3_5"  # Qwen3.5's RMSNorm multiplies by (1 + weight): 0 is identity
    if name.endswith(".bias"):
        return torch.zeros(shape)
    if name.endswith("A_log"):
        return torch.log(torch.rand(shape, generator=gen) * 15 + 1)
    if name.endswith("dt_bias"):
        return torch.ones(shape)
    if "visual" in name and "norm" in name:
        return torch.ones(shape)  # LayerNorm weights
    if name.endswith("linear_attn.norm.weight"):
        return torch.ones(shape)  # gated RMSNorm: plain multiply
    if name.endswith("norm.weight"):
        return torch.zeros(shape) if gemma_norm else torch.ones(shape)
    return torch.randn(shape, generator=gen) * 0.02


def _mtp_tensors(tensors: dict[str, Any], config: dict[str, Any], spec: TinySpec, gen: Any) -> dict[str, Any]:
    """The MTP head as in the real checkpoint (transformers drops it, vLLM's Qwen3_5MTP loads it)."""
    import torch

    text = config.get("text_config", config)
    full = text["layer_types"].index("full_attention")
    prefix = next(n.split(f"layers.{full}.")[0] for n in tensors if f"layers.{full}." in n)
    out: dict[str, Any] = {}
    for name, t in tensors.items():
        if name.startswith(f"{prefix}layers.{full}."):
            short = name[len(f"{prefix}layers.{full}.") :]
            out[f"mtp.layers.0.{short}"] = _init_tensor(f"mtp.layers.0.{short}", tuple(t.shape), spec, gen)
    hidden = text["hidden_size"]
    out["mtp.fc.weight"] = torch.randn((hidden, 2 * hidden), generator=gen) * 0.02
    for norm in ("mtp.norm.weight", "mtp.pre_fc_norm_hidden.weight", "mtp.pre_fc_norm_embedding.weight"):
        out[norm] = torch.zeros(hidden)
    return out


def _make_agreeing(tensors: dict[str, Any], token: int) -> None:
    """Make model and MTP drafter emit `token` whatever the input.

    Every embedding gets a large component on hidden dim 0; the layers' outputs (std-0.02 weights) stay
    small beside it, so after the final norm the hidden state points along dim 0 and the LM head row of
    `token`, the only one with weight on dim 0, wins by a margin of ~100 logits (sampling too). The MTP
    head's fc passes dim 0 of the normalised embedding through, so its output points the same way.
    """
    embed = next(n for n in tensors if n.endswith("embed_tokens.weight"))
    tensors[embed][:, 0] = 4.0
    tensors["lm_head.weight"][:, 0] = 0.0
    tensors["lm_head.weight"][token, 0] = 16.0
    tensors["mtp.fc.weight"][0, 0] = 1.0


def _make_bigram(tensors: dict[str, Any], tokenizer: Any, ids: dict[str, int], seed: int) -> None:
    """serve.checkpoint.bigram's values (the construction synth-model --agreeing-mtp writes)."""
    import torch

    from serve.checkpoint import bigram

    vocab = tokenizer.get_vocab_size()
    special = set(ids.values())
    embed = next(n for n in tensors if n.endswith("embed_tokens.weight"))
    model = bigram.build(vocab, tensors[embed].shape[1], (i for i in range(vocab) if i not in special), seed)
    tensors[embed] = torch.from_numpy(model.embedding_rows(0, vocab))
    tensors["lm_head.weight"] = torch.from_numpy(model.lm_head_rows(0, vocab))
    tensors["mtp.fc.weight"] = torch.from_numpy(model.fc())
    for name in tensors:
        if name.endswith(".weight") and bigram.is_zeroed(name.removesuffix(".weight")):
            tensors[name] = torch.zeros_like(tensors[name])


def _byte_level(text: str) -> str:
    return text  # ASCII letters are their own byte-level symbols


# ---------------------------------------------------------------- int4


def _quant_blocks(tensors: dict[str, Any]) -> list[str]:
    prefix = next(n.split("layers.")[0] for n in tensors if ".layers." in n and not n.startswith("mtp."))
    blocks = [f"{prefix}layers"]
    if any(n.startswith("mtp.layers.") for n in tensors):
        blocks.append("mtp.layers")
    return blocks


def _is_quantized_linear(
    name: str, shape: tuple[int, ...], blocks: list[str], quantized_mtp_fc: bool
) -> bool:
    if not name.endswith(".weight") or len(shape) != 2:
        return False
    if name == "mtp.fc.weight":
        return quantized_mtp_fc
    module = name[: -len(".weight")]
    leaf = module.rsplit(".", 1)[-1]
    # AutoRound keeps in_proj_a/b (out_features 48 in the real model: not a whole number of packed
    # words for its kernels) and norms in 16 bits; everything else 2-D inside the blocks is packed.
    if leaf in ("in_proj_a", "in_proj_b") or "norm" in leaf:
        return False
    out_f, in_f = shape
    divisible = in_f % GROUP_SIZE == 0 and out_f % autoround.PACK_FACTOR == 0
    return divisible and any(module.startswith(b + ".") for b in blocks)


def _quantize(
    tensors: dict[str, Any], config: dict[str, Any], spec: TinySpec
) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    blocks = _quant_blocks(tensors)
    out: dict[str, Any] = {}
    for name, t in tensors.items():
        if not _is_quantized_linear(name, tuple(t.shape), blocks, spec.quantized_mtp_fc):
            out[name] = t
            continue
        module = name[: -len(".weight")]
        q, zero, scale = autoround.quantize_rtn(t.float().numpy(), GROUP_SIZE, sym=True)
        packed = autoround.pack(q, zero, scale, GROUP_SIZE)
        out[f"{module}.qweight"] = torch.from_numpy(packed.qweight)
        out[f"{module}.qzeros"] = torch.from_numpy(packed.qzeros)
        out[f"{module}.scales"] = torch.from_numpy(packed.scales)
    extra = {
        name[: -len(".weight")]: {"bits": 16, "data_type": "float"}
        for name in tensors
        if name.endswith(("in_proj_a.weight", "in_proj_b.weight"))
    }
    if not spec.quantized_mtp_fc and "mtp.fc.weight" in tensors:
        # The published checkpoint lists mtp.fc as kept in 16 bits (it was dequantized after export).
        extra["mtp.fc"] = {"bits": 16, "data_type": "float"}
    quant = {
        "quant_method": "auto-round",
        "packing_format": "auto_round:auto_gptq",
        "bits": 4,
        "group_size": GROUP_SIZE,
        "sym": True,
        "data_type": "int",
        "iters": 0,
        "autoround_version": "0.16.1",
        "block_name_to_quantize": blocks,
        "extra_config": extra,
    }
    return out, quant


# ---------------------------------------------------------------- files


def _write_safetensors(d: Path, tensors: dict[str, Any], sharded: bool) -> None:
    from safetensors.torch import save_file

    if not sharded:
        save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
        return
    # Like the real checkpoint: the MTP head lives in its own shard, listed in the index.
    shards = {
        "model-00001-of-00001.safetensors": {k: v for k, v in tensors.items() if not k.startswith("mtp.")},
        "model_extra_tensors.safetensors": {k: v for k, v in tensors.items() if k.startswith("mtp.")},
    }
    weight_map: dict[str, str] = {}
    total = 0
    for fname, part in shards.items():
        save_file(part, str(d / fname), metadata={"format": "pt"})
        for k, v in part.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    _write_json(d / "model.safetensors.index.json", index)


def _write_processor_configs(d: Path) -> None:
    """Image/video processor settings as Qwen3.5's, with small pixel limits: vLLM profiles the largest
    image at start-up and a 16M-pixel dummy image is slow through even a one-block tower on CPU."""
    common = {
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "size": {"shortest_edge": 4096, "longest_edge": 262144},
        "processor_class": "Qwen3VLProcessor",
    }
    image = {"image_processor_type": "Qwen2VLImageProcessorFast", **common}
    video = {"video_processor_type": "Qwen3VLVideoProcessor", "fps": 2, "min_frames": 4, "max_frames": 8}
    _write_json(d / "preprocessor_config.json", image)
    _write_json(d / "video_preprocessor_config.json", {**video, **common})


def generation_config(ids: dict[str, int], temperature: float = 0.6) -> dict[str, Any]:
    """Qwen3's sampling defaults (Qwen3.5/3.6 publish temperature 1.0) with this tokenizer's ids."""
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        "do_sample": True,
        "temperature": temperature,
        "top_p": 0.95,
        "top_k": 20,
    }


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


# ---------------------------------------------------------------- tokenizer

# Training text for the byte-level BPE: chat, code and JSON, so common words and markup become single
# tokens and prompts stay short. Any text still encodes (byte fallback through the byte alphabet).
_CORPUS = """
The quick brown fox jumps over the lazy dog. What is the capital of France? The capital of France is Paris.
You are a helpful assistant. Please answer the question and explain your reasoning step by step.
Write a short poem about the sea. Explain quantum computing in three paragraphs. What is 127 * 83?
def quicksort(items):
    if len(items) <= 1:
        return items
    pivot = items[0]
    return quicksort([x for x in items[1:] if x < pivot]) + [pivot] + quicksort(items[1:])
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
The user asked about the weather. I should call the tool and then report the temperature in the city.
Hello! How can I help you today? Thank you, that is all for now. Goodbye and have a nice day.
""".strip()


def build_tokenizer() -> Any:
    """A byte-level BPE tokenizer (tokenizers library, built locally) with Qwen's ChatML tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    return tok


def _write_tokenizer(d: Path, tok: Any, arch: str) -> None:
    tok.save(str(d / "tokenizer.json"))
    added = {}
    for t in (*SPECIAL_TOKENS, *MARKUP_TOKENS):
        added[str(tok.token_to_id(t))] = {
            "content": t,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "single_word": False,
            "special": t in SPECIAL_TOKENS,
        }
    template = chat_template(tool_call_style="xml" if arch == "qwen3_5" else "json")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": MAX_POSITIONS,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_prefix_space": False,
        "split_special_tokens": False,
        "added_tokens_decoder": added,
        "chat_template": template,
    }
    _write_json(d / "tokenizer_config.json", config)
    (d / "chat_template.jinja").write_text(template)
    _write_json(
        d / "special_tokens_map.json",
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "additional_special_tokens": []},
    )


# ---------------------------------------------------------------- chat template

# Written so that whitespace comes only from string literals: every tag trims around itself, so the
# output is the same whatever trim_blocks/lstrip_blocks the renderer uses (transformers sets both).
_TEMPLATE_HEAD = r"""
{%- macro text(content) -%}
  {%- if content is string -%}{{- content -}}
  {%- elif content is iterable and content is not mapping -%}
    {%- for part in content -%}{%- if part.type == 'text' -%}{{- part.text -}}{%- endif -%}{%- endfor -%}
  {%- elif content is not none -%}{{- content -}}
  {%- endif -%}
{%- endmacro -%}
"""

_TOOL_CALL_JSON = r"""
{%- macro tool_call_block(call) -%}
  {%- set fn = call.function if call.function is defined else call -%}
  {{- '<tool_call>\n{"name": "' + fn.name + '", "arguments": ' -}}
  {%- if fn.arguments is string -%}{{- fn.arguments -}}{%- else -%}{{- fn.arguments | tojson -}}{%- endif -%}
  {{- '}\n</tool_call>' -}}
{%- endmacro -%}
{%- set tool_call_format = 'For each function call, return a json object with function name and arguments '
  + 'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
  + '<args-json-object>}\n</tool_call>' -%}
"""

_TOOL_CALL_XML = r"""
{%- macro tool_call_block(call) -%}
  {%- set fn = call.function if call.function is defined else call -%}
  {{- '<tool_call>\n<function=' + fn.name + '>\n' -}}
  {%- if fn.arguments is mapping -%}
    {%- for key, value in fn.arguments.items() -%}
      {{- '<parameter=' + key + '>\n' -}}
      {%- if value is string -%}{{- value -}}{%- else -%}{{- value | tojson -}}{%- endif -%}
      {{- '\n</parameter>\n' -}}
    {%- endfor -%}
  {%- elif fn.arguments is string -%}{{- fn.arguments + '\n' -}}
  {%- endif -%}
  {{- '</function>\n</tool_call>' -}}
{%- endmacro -%}
{%- set tool_call_format = 'To call a function, reply in the following format inside <tool_call></tool_call> '
  + 'XML tags:\n<tool_call>\n<function=example_function_name>\n<parameter=example_parameter>\nvalue\n'
  + '</parameter>\n</function>\n</tool_call>' -%}
"""

_TEMPLATE_BODY = r"""
{%- set ns = namespace(last_user=-1) -%}
{%- for m in messages -%}
  {%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- set has_system = messages and messages[0].role == 'system' -%}
{%- if tools -%}
  {{- '<|im_start|>system\n' -}}
  {%- if has_system -%}{{- text(messages[0].content) + '\n\n' -}}{%- endif -%}
  {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' -}}
  {{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
  {%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
  {{- '\n</tools>\n\n' + tool_call_format + '<|im_end|>\n' -}}
{%- elif has_system -%}
  {{- '<|im_start|>system\n' + text(messages[0].content) + '<|im_end|>\n' -}}
{%- endif -%}
{%- for m in messages -%}
  {%- if m.role == 'system' -%}
    {%- if not loop.first -%}{{- '<|im_start|>system\n' + text(m.content) + '<|im_end|>\n' -}}{%- endif -%}
  {%- elif m.role == 'user' -%}
    {{- '<|im_start|>user\n' + text(m.content) + '<|im_end|>\n' -}}
  {%- elif m.role == 'assistant' -%}
    {%- set content = text(m.content) -%}
    {%- if m.reasoning_content is string -%}{%- set reasoning = m.reasoning_content -%}
    {%- elif m.reasoning is string -%}{%- set reasoning = m.reasoning -%}
    {%- else -%}{%- set reasoning = '' -%}
    {%- endif -%}
    {%- if '</think>' in content -%}
      {%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip() -%}
      {%- set content = content.split('</think>')[-1].lstrip() -%}
    {%- endif -%}
    {{- '<|im_start|>assistant\n' -}}
    {%- if loop.index0 > ns.last_user and reasoning -%}
      {{- '<think>\n' + reasoning.strip() + '\n</think>\n\n' -}}
    {%- endif -%}
    {{- content -}}
    {%- if m.tool_calls -%}
      {%- for call in m.tool_calls -%}
        {%- if content or not loop.first -%}{{- '\n' -}}{%- endif -%}
        {{- tool_call_block(call) -}}
      {%- endfor -%}
    {%- endif -%}
    {{- '<|im_end|>\n' -}}
  {%- elif m.role == 'tool' -%}
    {%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
    {{- '\n<tool_response>\n' + text(m.content) + '\n</tool_response>' -}}
    {%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\n' -}}
  {%- if enable_thinking is defined and enable_thinking is false -%}
    {{- '<think>\n\n</think>\n\n' -}}
  {%- endif -%}
{%- endif -%}
"""


def chat_template(tool_call_style: str = "json") -> str:
    """ChatML template like Qwen3's: tools in the system prompt, <tool_call> blocks for assistant calls
    (JSON like Qwen3, or XML like Qwen3.5/3.6 whose parser is qwen3_xml), <tool_response> blocks for tool
    results, reasoning as <think> for turns after the last user message, and enable_thinking=False giving
    an empty think block."""
    calls = _TOOL_CALL_XML if tool_call_style == "xml" else _TOOL_CALL_JSON
    return (_TEMPLATE_HEAD + calls + _TEMPLATE_BODY).strip() + "\n"


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="DIR", help="directory to write (created; reused if it matches)")
    parser.add_argument("--arch", choices=ARCHS, default="qwen3", help="dense qwen3 or hybrid qwen3_5 + MTP")
    parser.add_argument("--int4", action="store_true", help="INT4 AutoRound (auto_round:auto_gptq) weights")
    parser.add_argument(
        "--quantized-mtp-fc", action="store_true", help="store mtp.fc quantized (the broken export)"
    )
    parser.add_argument(
        "--agreeing-mtp", action="store_true", help="model and MTP head emit one constant token"
    )
    parser.add_argument(
        "--bigram-mtp",
        action="store_true",
        help="the model walks a fixed cycle of 512 tokens and its MTP head predicts it: every draft "
        "accepted, answers not constant (synth-model --agreeing-mtp's values)",
    )
    parser.add_argument(
        "--vl", action="store_true", help="Qwen3_5ForConditionalGeneration layout with a vision tower"
    )
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    out = make_tiny_model(
        args.out_dir,
        args.arch,
        int4=args.int4,
        quantized_mtp_fc=args.quantized_mtp_fc,
        agreeing_mtp=args.agreeing_mtp,
        seed=args.seed,
        vl=args.vl,
        bigram_mtp=args.bigram_mtp,
    )
    marker = json.loads((out / MARKER).read_text())
    total = sum(marker["files"].values())
    digest = hashlib.sha256(json.dumps(marker, sort_keys=True).encode()).hexdigest()[:12]
    print(f"tiny model ({_describe(TinySpec(**_without(marker['spec'], 'factory_version')))}) in {out}")
    print(f"  {len(marker['files'])} files, {total / 1e6:.1f} MB, marker {digest}")
    return 0


def _describe(spec: TinySpec) -> str:
    parts = [spec.arch + ("-vl" if spec.vl else "")]
    parts += [p for p, on in (("int4", spec.int4), ("quantized mtp.fc", spec.quantized_mtp_fc)) if on]
    if spec.agreeing_mtp:
        parts.append("agreeing MTP")
    if spec.bigram_mtp:
        parts.append("bigram, agreeing MTP")
    return ", ".join(parts) + f", seed {spec.seed}"

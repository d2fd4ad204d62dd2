"""The memory planner's tensor-parallel arithmetic (issue 15), against figures worked out here by hand
from the checkpoint's shapes and vLLM's sharding rules, never read back from the planner's own output:
per-GPU KV bytes and tokens, the Gated DeltaNet state, per-GPU weights, the activation overhead, for
TP 1, 2 and 4; and one GPU log line of vLLM 0.33 (H200) that the block layout must reproduce to the
token. Pure arithmetic and one layout of the synthetic checkpoint (no data): well under a second.

Qwen3.6-27B, as config.json gives it (CONTEXT.md): 16 full-attention layers with 4 KV heads of 256,
48 Gated DeltaNet layers with 16 key heads and 48 value heads of 128 and a conv kernel of 4, one MTP
layer (one more attention layer), hidden 5120, intermediate 17408, vocab 248320, recurrent state in
float32. vLLM shards per GPU: KV heads max(1, 4 // TP) (``get_num_kv_heads``), the GDN conv channels and
value heads by TP (``MambaStateShapeCalculator.gated_delta_net_state_shape``: ``divide(conv_dim, tp)``,
``divide(num_v_heads, tp)``), embeddings and lm_head by vocabulary, every linear by its parallel dim;
norms, the vision patch embedding, its position table and row-parallel biases are whole on every GPU.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from serve.checkpoint import synth_model
from serve.launch import memory, memory_fit, probes
from serve.launch.facts import ModelFacts

ROOT = Path(__file__).resolve().parents[2]
SHAPE = memory.QWEN36_27B
TPS = (1, 2, 4)

# ------------------------------------------------------------------ KV per token, per GPU

# Bytes of one K+V slot (one KV head, one token, one layer): fp8 2 x 256 x 1; bf16 2 x 256 x 2;
# turboquant_4bit_nc: key 256 x 4 / 8 = 128 bytes + 2 (fp16 norm), value 128 + 4 (fp16 scale and zero)
# = 262, already even.
SLOT = {"fp8": 512, "bfloat16": 1024, "turboquant_4bit_nc": 262}


@pytest.mark.parametrize("kv", sorted(SLOT))
@pytest.mark.parametrize("tp, heads_per_gpu", [(1, 4), (2, 2), (4, 1), (8, 1)])
def test_kv_bytes_per_token_per_gpu(kv, tp, heads_per_gpu):
    # TP 8 > 4 KV heads: vLLM replicates each head on 2 GPUs, so every GPU still holds one.
    plain = 16 * heads_per_gpu * SLOT[kv]
    with_mtp = 17 * heads_per_gpu * SLOT[kv]
    assert memory.kv_bytes_per_token(SHAPE, kv, tensor_parallel_size=tp) == plain
    assert memory.kv_bytes_per_token(SHAPE, kv, mtp=True, tensor_parallel_size=tp) == with_mtp


def test_kv_bytes_per_token_figures():
    """The figures people quote: 32 KiB/token in fp8 on one GPU, 16 KiB on each of two, 8 on each of four."""
    assert [memory.kv_bytes_per_token(SHAPE, "fp8", tensor_parallel_size=tp) for tp in TPS] == [
        32 * 1024,
        16 * 1024,
        8 * 1024,
    ]


# ------------------------------------------------------------------ Gated DeltaNet state, per GPU

# conv_dim = 2 x 16 x 128 + 48 x 128 = 10240 channels; conv state (10240 / TP) x (4 - 1 + spec) in bf16;
# recurrent state (48 / TP) x 128 x 128 in float32.
STATE_PER_LAYER = {
    # tp: (no spec, one MTP draft)
    1: (10240 * 3 * 2 + 48 * 128 * 128 * 4, 10240 * 4 * 2 + 48 * 128 * 128 * 4),  # 3,207,168 / 3,227,648
    2: (5120 * 3 * 2 + 24 * 128 * 128 * 4, 5120 * 4 * 2 + 24 * 128 * 128 * 4),  # 1,603,584 / 1,613,824
    4: (2560 * 3 * 2 + 12 * 128 * 128 * 4, 2560 * 4 * 2 + 12 * 128 * 128 * 4),  # 801,792 / 806,912
}


@pytest.mark.parametrize("tp", TPS)
def test_linear_attention_state_per_gpu(tp):
    plain, one_draft = STATE_PER_LAYER[tp]
    assert memory.linear_state_bytes_per_layer(SHAPE, tensor_parallel_size=tp) == plain
    assert (
        memory.linear_state_bytes_per_layer(SHAPE, num_speculative_tokens=1, tensor_parallel_size=tp)
        == one_draft
    )
    assert memory.linear_state_bytes_per_sequence(SHAPE, tensor_parallel_size=tp) == 48 * plain


def test_linear_state_figures():
    assert STATE_PER_LAYER[1][0] == 3_207_168 and 48 * STATE_PER_LAYER[1][0] == 153_944_064  # 146.8 MiB
    assert STATE_PER_LAYER[2][0] * 2 == STATE_PER_LAYER[1][0]


# ------------------------------------------------------------------ the block layout at TP 2


def test_block_layout_of_the_tp2_profile():
    """turboquant_4bit_nc + MTP 1 at TP 2 on CUDA, prefix caching on (vLLM >= 0.26's default for hybrid
    models: Mamba "align" mode). One attention layer's token costs 2 heads x 262 = 524 bytes per GPU; a
    GDN layer's state (MTP 1) is 1,613,824 bytes; the block is the smallest multiple of 16 tokens whose
    page holds it: 16 x ceil(1,613,824 / (16 x 524)) = 16 x 193 = 3088 tokens (the same as at TP 1,
    where both halves double). 17 attention layers and 48 GDN layers: groups of 17 (48 >= 1.5 x 17),
    one attention group and ceil(48 / 17) = 3 GDN groups; a block is 17 pages."""
    layout = memory.cache_layout(
        SHAPE,
        "turboquant_4bit_nc",
        num_speculative_tokens=1,
        cache=memory.CacheParams.cuda(prefix_caching=True),
        tensor_parallel_size=2,
    )
    assert layout.block_size == 16 * math.ceil(1_613_824 / (16 * 524)) == 3088
    assert layout.page_bytes == 3088 * 524 == 1_618_112
    assert (layout.group_size, layout.attn_groups, layout.linear_groups) == (17, 1, 3)
    assert layout.bytes_per_block == 17 * 1_618_112
    assert layout.linear_blocks_per_seq == 2 + 1  # align mode: 2 + num_spec
    # One request of 262,144 tokens: ceil(262144 / 3088) = 85 attention blocks + 3 groups x 3 state blocks.
    assert layout.blocks_per_seq(262_144) == 85 + 9


# ------------------------------------------------------------------ weights per GPU

# Tensor-name endings that vLLM keeps whole on every GPU (see the module docstring). Everything else in
# the checkpoint is split along its parallel dimension (for int4: qweight, qzeros and scales alike).
REPLICATED_SUFFIXES = (
    "layernorm.weight",  # input_/post_attention_layernorm
    "q_norm.weight",
    "k_norm.weight",
    "linear_attn.norm.weight",  # RMSNormGated over one value head
    "language_model.norm.weight",
    "mtp.norm.weight",
    "mtp.pre_fc_norm_hidden.weight",
    "mtp.pre_fc_norm_embedding.weight",
    "norm1.weight",
    "norm1.bias",
    "norm2.weight",
    "norm2.bias",
    "merger.norm.weight",
    "merger.norm.bias",
    "patch_embed.proj.weight",  # Conv3dLayer
    "patch_embed.proj.bias",
    "pos_embed.weight",  # nn.Embedding
    "attn.proj.bias",  # row-parallel biases are added once, after the all-reduce, on every GPU
    "mlp.linear_fc2.bias",
    "merger.linear_fc2.bias",
)


def _synth_specs():
    config = synth_model.build_config(synth_model.FULL, {t: i for i, t in enumerate(_TOKENS)})
    return synth_model.layout(config)


_TOKENS = ("<|endoftext|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def _per_gpu_bytes(specs, tp: int) -> int:
    total = 0
    for spec in specs:
        if spec.name.endswith(REPLICATED_SUFFIXES):
            total += spec.nbytes
        else:
            assert spec.nbytes % tp == 0, spec.name  # every split tensor divides evenly at TP 1, 2, 4
            total += spec.nbytes // tp
    return total


def test_replicated_bytes_by_hand():
    """The whole-on-every-GPU part, counted from the shapes: text norms (64 layers x 2 x 5120 + 5120)
    x 2 bytes, q/k norms 16 x 2 x 256 x 2, GDN norms 48 x 128 x 2, the MTP head's norms (3 x 5120 +
    2 x 5120 + 2 x 256) x 2; vision: 27 blocks x 4 x 1152 norm parameters x 2, merger norm 2 x 1152 x 2,
    patch embedding 1152 x 3 x 2 x 16 x 16 x 2 + 1152 x 2, position table 2304 x 1152 x 2, row-parallel
    biases (27 x 2 x 1152 + 5120) x 2. About 10.5 MB of 19.6 GB."""
    text = (64 * 2 * 5120 + 5120) * 2 + 16 * 2 * 256 * 2 + 48 * 128 * 2 + (5 * 5120 + 2 * 256) * 2
    vision = (
        27 * 4 * 1152 * 2
        + 2 * 1152 * 2
        + (1152 * 3 * 2 * 16 * 16 + 1152) * 2
        + 2304 * 1152 * 2
        + (27 * 2 * 1152 + 5120) * 2
    )
    replicated = sum(s.nbytes for s in _synth_specs() if s.name.endswith(REPLICATED_SUFFIXES))
    assert replicated == text + vision
    assert 10e6 < replicated < 11e6


@pytest.mark.parametrize("tp", TPS)
def test_per_gpu_weights_are_the_checkpoint_over_tp_within_the_replicated_part(tp):
    """The planner gives each GPU 1/TP of the checkpoint's bytes. vLLM gives it 1/TP of the split tensors
    plus every replicated one whole, so the planner is short by replicated x (1 - 1/TP): 5.3 MB per GPU
    at TP 2, 7.9 MB at TP 4 (0.05-0.16% of the per-GPU weights), about 300-500 tokens of fp8 KV at those
    sizes. Left so: the checkpoint's byte count is all the planner gets from a model description."""
    specs = _synth_specs()
    total = sum(s.nbytes for s in specs)
    replicated = sum(s.nbytes for s in specs if s.name.endswith(REPLICATED_SUFFIXES))
    exact = _per_gpu_bytes(specs, tp)
    assert exact == (total - replicated) // tp + replicated
    facts = probes.model_facts(
        probes.ModelLayer(id="x", facts="qwen3.6-27b-int4-autoround"), profile_source="test"
    ).model_copy(update={"weight_bytes": total})
    gpu = probes.gpu_facts("h200")
    settings = {"tensor_parallel_size": tp, "max_model_len": 8192, "kv_cache_dtype": "fp8_e4m3"}
    planned = memory_fit.fit(settings, gpu, probes.engine_facts("vllm-0.33"), facts).weight_bytes
    assert planned == total // tp
    short = exact - planned
    assert short == pytest.approx(replicated * (1 - 1 / tp), abs=1)
    assert short / exact < 0.002


# ------------------------------------------------------------------ activation overhead per GPU


@pytest.mark.parametrize("tp", TPS)
def test_activation_overhead_shards_the_mlp_intermediate_only(tp):
    """8192 batched tokens x (4 bf16 hidden-sized buffers, whole on every GPU: 8 x 5120 bytes, + the gate_up
    output, 2 x 17408 / TP bf16 values: 4 x 17408 / TP bytes). TP 1: 905,969,664 bytes; TP 2: 620,756,992;
    TP 4: 478,150,656. Before issue 15 the planner charged every GPU the TP 1 figure: 285 MB too much at
    TP 2 (0.27 GiB less KV predicted on each RTX 5090 of the TP 2 profile), 428 MB at TP 4."""
    expected = {1: 905_969_664, 2: 620_756_992, 4: 478_150_656}[tp]
    assert 8192 * (8 * 5120 + 4 * 17408 // tp) == expected
    over = memory.OverheadModel(fixed_bytes=0)
    assert over.activation_bytes(SHAPE, 8192, tp) == expected
    # The fixed part (CUDA context, graph pools) is every GPU's own: not divided.
    assert memory.DEFAULT_OVERHEAD.bytes(SHAPE, 8192, tp) - memory.DEFAULT_OVERHEAD.fixed_bytes == expected


# ------------------------------------------------------------------ the TP 2 profile's KV, end to end


def test_tp2_profile_kv_tokens_by_hand():
    """qwen3.6-27b-2x-rtx5090-tp2 on vllm-0.33: 31.84 GiB per GPU x 0.85; weights 19.5e9 / 2; overhead =
    the H100 calibration's fixed part + the TP 2 activations; KV = what is left; blocks of 17 pages of
    3136 tokens x 524 bytes; one 262,144-token request takes 84 + 12 blocks. The RTX 5090 (SM120, GDN key
    heads of 128) on vLLM 0.33 runs FlashInfer's GDN prefill, which adds a prefill-checkpoint state block
    per GDN group and makes the block a multiple of 64 tokens: 64 x ceil(1,613,824 / (64 x 524)) = 3136
    (memory_fit.gdn_prefill_checkpoints; 3088 and 85 + 9 without it, test_block_layout_of_the_tp2_profile)."""
    gib, mib = 2**30, 2**20
    # The calibration (CONTEXT.md): H100 81559 MiB at 0.85, 19.5e9 bytes of weights, 47 GiB of KV, 8192
    # batched tokens at TP 1.
    fixed = int(81559 * mib * 0.85) - 19_500_000_000 - 47 * gib - 905_969_664
    budget = int(int(31.84 * gib) * 0.85)
    kv = budget - 19_500_000_000 // 2 - (fixed + 620_756_992)
    blocks = kv // (17 * 3136 * 524)
    tokens = int(blocks / (84 + 12) * 262_144)

    model = probes.model_facts(
        probes.ModelLayer(id="x", facts="qwen3.6-27b-int4-autoround"), profile_source="test"
    )
    settings = {
        "tensor_parallel_size": 2,
        "max_model_len": 262_144,
        "max_num_seqs": 8,
        "kv_cache_dtype": "turboquant_4bit_nc",
        "gpu_memory_utilization": 0.85,
        "speculative_config": {"method": "mtp", "num_speculative_tokens": 1},
        "dtype": "half",
    }
    result = memory_fit.fit(settings, probes.gpu_facts("rtx5090-x2"), probes.engine_facts("vllm-0.33"), model)
    assert result.kv_cache_bytes == kv
    assert result.num_blocks == blocks
    assert result.vllm_reported_tokens == tokens
    # Weights halve as well as KV per token, so two GPUs hold more than twice one GPU's tokens.
    one = memory_fit.fit(
        {**settings, "tensor_parallel_size": 1},
        probes.gpu_facts("rtx5090"),
        probes.engine_facts("vllm-0.33"),
        model,
    )
    assert result.vllm_reported_tokens > 2 * one.vllm_reported_tokens


# ------------------------------------------------------------------ a real vLLM log line


@pytest.mark.parametrize("run", ["a-h100-fp8-mtp-int4", "d-seed-as-rtx5090.rerun"])
def test_the_h200_log_line_is_reproduced_to_the_token(run):
    """vLLM 0.33.0 on the H200 (docs/gpu-results/2026-12-01/plumbing, TP 1): the tiny Qwen3.5 with MTP,
    1 GiB of KV given explicitly, fp8_e4m3, max_model_len 4096, prefix caching left to vLLM's default
    (on: "Mamba cache mode is set to 'align'"), and a config.json without mamba_ssm_dtype (the state
    stays in the model dtype). The log: "Setting attention block size to 160 tokens", "GPU KV cache
    size: 3,904,456 tokens, Maximum concurrency for 4,096 tokens per request: 953.24x". The planner said
    3,728,256 before issue 15 (4.5% low): it took the state as float32 (block 288) and the layout as
    prefix caching off (1 + 1 state blocks instead of 2 + 1)."""
    folder = ROOT / "docs/gpu-results/2026-12-01/plumbing"
    log = (folder / f"{run}.vllm.log").read_text(errors="replace")
    assert "GPU KV cache size: 3,904,456 tokens" in log and "block size to 160 tokens" in log
    plan = json.loads((folder / f"{run}.plan.json").read_text())
    # The model read from that config.json, as the kit reads it now (the field is new since that run).
    model = ModelFacts(**{**plan["facts"]["model"], "mamba_ssm_dtype": "auto"})
    s = plan["settings"]
    settings = {
        "kv_cache_dtype": s["kv_cache_dtype"],
        "kv_cache_memory_bytes": s["kv_cache_memory_bytes"],
        "max_model_len": s["max_model_len"],
        "max_num_seqs": s["max_num_seqs"],
        "dtype": s["dtype"],
        "speculative_config": {"method": "mtp", "num_speculative_tokens": s["num_speculative_tokens"]},
        "enable_prefix_caching": s["enable_prefix_caching"],
        # Rule no-flashinfer-gdn-prefill set it there ("Using Triton/FLA GDN prefill kernel" in the log):
        # no prefill-checkpoint block (memory_fit.gdn_prefill_checkpoints).
        "gdn_prefill_backend": {d["setting"]: d["value"] for d in plan["decisions"]}["gdn_prefill_backend"],
    }
    result = memory_fit.fit(settings, probes.gpu_facts("h200"), probes.engine_facts("vllm-0.33"), model)
    assert result.block_size == 160
    assert result.vllm_reported_tokens == 3_904_456
    assert round(result.full_length_seqs, 2) == 953.24


def test_prefix_caching_default_follows_the_engine():
    model = probes.model_facts(
        probes.ModelLayer(id="x", facts="qwen3.6-27b-int4-autoround"), profile_source="test"
    )
    new, old = probes.engine_facts("vllm-0.33"), probes.engine_facts("vllm-0.24")
    assert memory_fit.prefix_caching_on({}, new, model) is True
    assert memory_fit.prefix_caching_on({}, old, model) is False
    assert memory_fit.prefix_caching_on({"enable_prefix_caching": False}, new, model) is False
    assert memory_fit.prefix_caching_on({"enable_prefix_caching": True}, old, model) is True


def test_mamba_ssm_dtype_is_read_from_config_json():
    """A config.json that names it (the synthetic checkpoint, the published Qwen3.5/3.6): float32, 4 bytes
    of recurrent state per element; one that does not (the kit's tiny models): auto, the model dtype."""
    from serve.launch.facts import model_facts_from_config

    config = synth_model.build_config(synth_model.FULL, {t: i for i, t in enumerate(_TOKENS)})
    named = model_facts_from_config(config, source="synth")
    assert named.mamba_ssm_dtype == "float32"
    assert memory.shape_from_facts(named).mamba_ssm_dtype == "float32"
    del config["text_config"]["mamba_ssm_dtype"]
    unnamed = model_facts_from_config(config, source="tiny")
    assert unnamed.mamba_ssm_dtype == "auto"
    shape = memory.shape_from_facts(unnamed)
    assert shape.mamba_ssm_dtype is None  # the model dtype
    # conv 10240 x 3 + recurrent 48 x 128 x 128, all in bf16
    assert memory.linear_state_bytes_per_layer(shape) == (10240 * 3 + 48 * 128 * 128) * 2

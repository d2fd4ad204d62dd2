"""The memory planner: KV arithmetic for the real shape, vLLM's block layout, the H100 calibration
point, fit verdicts and the decode roofline."""

from __future__ import annotations

from typing import ClassVar

import pytest

from serve.errors import KitError
from serve.launch import memory as m

REAL = m.QWEN36_27B
W = m.QWEN36_27B_INT4_WEIGHTS


# ------------------------------------------------------------------ per-token KV


def test_real_shape_kv_per_token_bf16_and_fp8() -> None:
    # 16 full-attention layers x 2 (K,V) x 4 heads x 256 x bytes (CONTEXT.md)
    assert m.kv_bytes_per_token(REAL, "auto") == 64 * 1024
    assert m.kv_bytes_per_token(REAL, "bf16") == 64 * 1024
    assert m.kv_bytes_per_token(REAL, "fp8") == 32 * 1024
    assert m.kv_bytes_per_token(REAL, "fp8_e5m2") == 32 * 1024


def test_mtp_adds_one_attention_layer() -> None:
    assert m.kv_bytes_per_token(REAL, "fp8", mtp=True) == 32 * 1024 * 17 // 16


def test_262k_fp8_is_about_8_gib() -> None:
    assert m.kv_bytes_per_token(REAL, "fp8") * 262144 == 8 * m.GiB


@pytest.mark.parametrize(
    ("dtype", "slot"),
    [
        # head_dim 256: key fp8 256 B | 4-bit value 128 B + fp16 scale + fp16 zero
        ("turboquant_k8v4", 256 + 132),
        # 4-bit MSE key 128 B + fp16 norm | 4-bit value 132 B
        ("turboquant_4bit_nc", 130 + 132),
        ("turboquant_k3v4_nc", 98 + 132),
        ("turboquant_3bit_nc", 98 + 100),
        ("tq-t4nc", 130 + 132),
    ],
)
def test_turboquant_slot_bytes_include_norms_and_scales(dtype: str, slot: int) -> None:
    assert m.turboquant_slot_bytes(dtype, 256) == slot
    assert m.kv_bytes_per_token(REAL, dtype) == 16 * 4 * slot


def test_turboquant_slot_rounds_to_even() -> None:
    # head_dim 100, 3-bit keys: ceil(300/8)=38 + 2, 3-bit values 38 + 4 = 82 (even);
    # head_dim 98: 37+2 + 37+4 = 80; head_dim 99: ceil(297/8)=38 -> 40 + 42 = 82
    assert m.turboquant_slot_bytes("turboquant_3bit_nc", 99) % 2 == 0


def test_tq_4bit_is_about_a_quarter_of_bf16() -> None:
    ratio = m.kv_bytes_per_token(REAL, "auto") / m.kv_bytes_per_token(REAL, "turboquant_4bit_nc")
    assert 3.8 < ratio < 4.0


def test_bytes_per_element() -> None:
    assert m.kv_bytes_per_element("auto") == 2
    assert m.kv_bytes_per_element("auto", model_dtype="float32") == 4
    assert m.kv_bytes_per_element("half") == 2
    assert m.kv_bytes_per_element("fp8_e4m3") == 1
    assert m.kv_bytes_per_element("turboquant_4bit_nc", 256) == pytest.approx(262 / 512)


def test_unknown_kv_dtype_names_the_choices() -> None:
    with pytest.raises(KitError, match="fp8_e4m3"):
        m.kv_bytes_per_element("int3")


# ------------------------------------------------------------------ linear-attention state


def test_gdn_state_real_shape() -> None:
    # conv: (2*16*128 + 48*128) x 3 in bf16; recurrent: 48 x 128 x 128 in float32
    assert m.linear_state_bytes_per_layer(REAL) == 10240 * 3 * 2 + 48 * 128 * 128 * 4
    # MTP with n drafts widens the conv window by n (gated_delta_net_state_shape num_spec)
    assert (
        m.linear_state_bytes_per_layer(REAL, num_speculative_tokens=2) == 10240 * 5 * 2 + 48 * 128 * 128 * 4
    )
    assert m.linear_state_bytes_per_sequence(REAL) == 48 * m.linear_state_bytes_per_layer(REAL)


def test_dense_model_has_no_state() -> None:
    dense = m.ModelShape(num_attention_layers=28, num_kv_heads=8, head_dim=128)
    assert m.linear_state_bytes_per_sequence(dense) == 0
    layout = m.cache_layout(dense, "auto")
    assert layout.block_size == 16 and layout.linear_groups == 0
    assert layout.bytes_per_block == 28 * 16 * 8 * 256 * 2


def test_from_config_reads_text_config_and_layer_types() -> None:
    cfg = {
        "architectures": ["Qwen3_5ForConditionalGeneration"],
        "text_config": {
            "num_hidden_layers": 8,
            "num_attention_heads": 24,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "hidden_size": 5120,
            "layer_types": ["linear_attention"] * 3
            + ["full_attention"]
            + ["linear_attention"] * 3
            + ["full_attention"],
            "linear_num_key_heads": 16,
            "linear_key_head_dim": 128,
            "linear_num_value_heads": 48,
            "linear_value_head_dim": 128,
            "mtp_num_hidden_layers": 1,
            "mamba_ssm_dtype": "float32",
            "dtype": "bfloat16",
        },
    }
    s = m.ModelShape.from_config(cfg)
    assert (s.num_attention_layers, s.num_linear_layers, s.mtp_layers) == (2, 6, 1)
    assert s.mamba_ssm_dtype == "float32"


def test_from_config_without_keys_is_a_kit_error() -> None:
    with pytest.raises(KitError, match=r"config\.json"):
        m.ModelShape.from_config({"model_type": "x"})


# ------------------------------------------------------------------ block layout and calibration


def test_hybrid_block_size_matches_vllm_alignment() -> None:
    # fp8, no MTP: state 3,207,168 B / (16 tokens x 2048 B) -> 98 x 16 = 1568 tokens per block
    layout = m.cache_layout(REAL, "fp8")
    assert layout.block_size == 1568
    assert layout.page_bytes >= layout.linear_state_bytes_per_layer
    assert (layout.group_size, layout.attn_groups, layout.linear_groups) == (16, 1, 3)


def test_mtp_layout_pads_linear_groups() -> None:
    # 17 attention layers (with the MTP head) vs 48 linear: groups of 17, 3 linear groups
    layout = m.cache_layout(REAL, "fp8", num_speculative_tokens=1)
    assert (layout.attn_layers, layout.group_size, layout.linear_groups) == (17, 17, 3)
    assert layout.linear_blocks_per_seq == 2


def test_h100_calibration_point() -> None:
    """CONTEXT.md: 0.85 of an 80 GB H100, 19.5 GB weights, max_model_len 8192, max_num_seqs 1:
    KV cache 47 GiB, about 900K tokens at fp8 (vLLM 0.24)."""
    r = m.fit(
        REAL,
        19_500_000_000,
        total_memory_bytes=81559 * m.MiB,
        gpu_memory_utilization=0.85,
        kv_cache_dtype="fp8",
        max_model_len=8192,
        max_num_seqs=1,
    )
    assert r.kv_cache_bytes == pytest.approx(47 * m.GiB, rel=0.001)
    # Not calibrated: vLLM's logged token figure follows from the block layout alone.
    assert r.vllm_reported_tokens == pytest.approx(900_000, rel=0.05)
    assert r.verdict == "ok"
    assert 2 * m.GiB < r.overhead_bytes < 3 * m.GiB


def test_overhead_grows_with_batched_tokens() -> None:
    small = m.DEFAULT_OVERHEAD.bytes(REAL, 2048)
    large = m.DEFAULT_OVERHEAD.bytes(REAL, 16384)
    assert large > small
    assert m.calibrate(m.H100_CALIBRATION).fixed_bytes == m.DEFAULT_OVERHEAD.fixed_bytes


# ------------------------------------------------------------------ fit verdicts


def _fit5090(dtype: str, max_model_len: int | None, seqs: int = 1, util: float = 0.9) -> m.FitResult:
    return m.fit(
        REAL,
        W,
        total_memory_bytes=m.described_gpus()["rtx5090"].memory_bytes,
        gpu_memory_utilization=util,
        kv_cache_dtype=dtype,
        max_model_len=max_model_len,
        max_num_seqs=seqs,
        num_speculative_tokens=1,
    )


def test_rtx5090_262k_turboquant4_fits_one_sequence() -> None:
    r = _fit5090("turboquant_4bit_nc", 262144, seqs=1)
    assert r.verdict == "ok", r.message
    assert 1 <= r.full_length_seqs < 2


def test_rtx5090_262k_three_sequences_warns_with_numbers() -> None:
    r = _fit5090("turboquant_4bit_nc", 262144, seqs=3)
    assert r.verdict == "warn"
    assert "max_num_seqs 3" in r.message and "262,144" in r.message
    assert r.max_model_len_all_seqs < 262144


def test_rtx5090_262k_fp8_refused_with_largest_that_fits() -> None:
    r = _fit5090("fp8", 262144)
    assert r.verdict == "error"
    assert f"{r.max_model_len_one_seq:,}" in r.message
    assert 150_000 < r.max_model_len_one_seq < 262144


def test_auto_max_model_len_is_largest_for_all_seqs() -> None:
    r = _fit5090("fp8", None, seqs=2)
    assert r.max_model_len == r.max_model_len_all_seqs - r.max_model_len_all_seqs % 1024
    assert r.verdict in ("ok", "warn")
    # one more block per sequence would not fit
    layout = m.cache_layout(REAL, "fp8", num_speculative_tokens=1)
    over = r.max_model_len_all_seqs + layout.block_size
    assert 2 * layout.blocks_per_seq(over) > r.num_blocks - 1


def test_auto_caps_at_max_position_embeddings() -> None:
    r = m.fit(REAL, W, total_memory_bytes=m.described_gpus()["h200"].memory_bytes, kv_cache_dtype="fp8")
    assert r.max_model_len == 262144


def test_weights_larger_than_budget_is_an_error() -> None:
    r = m.fit(
        REAL, W, total_memory_bytes=m.described_gpus()["rtx4090"].memory_bytes, gpu_memory_utilization=0.7
    )
    assert r.verdict == "error"
    assert "no memory left for the KV cache" in r.message


def test_beyond_max_position_embeddings_is_an_error() -> None:
    r = m.fit(REAL, W, total_memory_bytes=m.described_gpus()["h200"].memory_bytes, max_model_len=300_000)
    assert r.verdict == "error" and "max_position_embeddings" in r.message


def test_explicit_kv_bytes_bypass_budget() -> None:
    r = m.fit(REAL, W, kv_cache_memory_bytes=8 * m.GiB, kv_cache_dtype="fp8", max_model_len=65536)
    assert r.kv_cache_bytes == 8 * m.GiB and r.weight_bytes == 0
    with pytest.raises(KitError):
        m.fit(REAL, W, kv_cache_dtype="fp8")  # neither total memory nor explicit KV bytes


def test_vllm_reported_tokens_formula() -> None:
    layout = m.cache_layout(REAL, "fp8")
    kv = 10 * layout.bytes_per_block + 5
    tokens, conc = m.kv_capacity(layout, kv, 8192)
    assert conc == pytest.approx(10 / layout.blocks_per_seq(8192))
    assert tokens == int(conc * 8192)


def test_prefix_caching_align_mode_pins_more_state() -> None:
    none = m.cache_layout(REAL, "fp8", cache=m.CacheParams.cuda())
    align = m.cache_layout(REAL, "fp8", cache=m.CacheParams.cuda(prefix_caching=True))
    assert align.state_bytes_per_seq == 2 * none.state_bytes_per_seq


def test_shape_from_facts_adapter() -> None:
    class Facts:
        full_attention_layers, linear_attention_layers = 16, 48
        num_key_value_heads, head_dim, mtp_layers = 4, 256, 1
        hidden_size, intermediate_size, vocab_size, max_position_embeddings = 5120, 17408, 248320, 262144
        model_type, torch_dtype = "qwen3_5", "bfloat16"
        linear_attention: ClassVar[dict[str, int]] = {
            "linear_num_key_heads": 16,
            "linear_key_head_dim": 128,
            "linear_num_value_heads": 48,
            "linear_value_head_dim": 128,
            "linear_conv_kernel_dim": 4,
        }

    assert m.shape_from_facts(Facts()) == REAL


# ------------------------------------------------------------------ roofline


def test_decode_bytes_and_roofline_match_context() -> None:
    # CONTEXT.md: about 15.1 GB of weights read per token; 197 tok/s at 2.99 TB/s
    b = m.decode_bytes_per_token(W, REAL, kv_cache_dtype="fp8", context_len=0)
    assert W.decode_read == pytest.approx(15.1e9, rel=0.01)
    assert b > W.decode_read  # + the linear-attention state, read and written
    assert m.roofline_tok_s(2.99e12, b) == pytest.approx(197, rel=0.03)


def test_decode_bytes_grow_with_context_and_shrink_per_token_with_batch() -> None:
    short = m.decode_bytes_per_token(W, REAL, kv_cache_dtype="fp8", context_len=1000)
    long = m.decode_bytes_per_token(W, REAL, kv_cache_dtype="fp8", context_len=101000)
    assert long - short == 100000 * 32 * 1024
    assert m.decode_bytes_per_token(W, REAL, batch=4) < m.decode_bytes_per_token(W, REAL, batch=1)
    with pytest.raises(KitError):
        m.roofline_tok_s(1e12, 0)


def test_table_is_generated_and_answers_the_5090_question() -> None:
    table = m.prediction_table(m.described_gpus(("rtx5090",)))
    rows = {line.split("|")[2].strip(): line for line in table.splitlines()[2:]}
    assert rows["turboquant_4bit_nc"].rstrip(" |").split("|")[-2].strip() == "yes"
    assert rows["fp8"].rstrip(" |").split("|")[-2].strip() == "no"


def test_docs_tables_are_generated_and_current() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "memory.md").read_text()
    assert m.docs_section() in doc, "run: python -m serve.launch.memory --write-docs docs/memory.md"

"""The roofline from plan.json through the memory planner: the CONTEXT.md numbers for the real model
(15.1 GB read per token, 197 tok/s at the H100's measured 2.99 TB/s) and the cases with no roofline."""

from __future__ import annotations

import pytest

from serve.bench.roofline import roofline_from_plan, shape_from_facts
from serve.launch import memory

# facts.model as serve.launch.facts.ModelFacts dumps it for Qwen3.6-27B INT4 AutoRound
QWEN36_FACTS = {
    "architecture": "Qwen3_5ForConditionalGeneration",
    "model_type": "qwen3_5",
    "num_hidden_layers": 64,
    "full_attention_layers": 16,
    "linear_attention_layers": 48,
    "num_attention_heads": 24,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "hidden_size": 5120,
    "intermediate_size": 17408,
    "vocab_size": 248320,
    "max_position_embeddings": 262144,
    "mtp_layers": 1,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "linear_attention": {
        "linear_num_key_heads": 16,
        "linear_key_head_dim": 128,
        "linear_num_value_heads": 48,
        "linear_value_head_dim": 128,
        "linear_conv_kernel_dim": 4,
    },
    "has_vision": True,
    "weight_bytes": 19_500_000_000,
}
W = memory.QWEN36_27B_INT4_WEIGHTS


def _plan(model=QWEN36_FACTS, *, bandwidth=2990.0, device="cuda", kv="fp8", tp=1, weights_split=True) -> dict:
    model = dict(model)
    if weights_split:
        model["weights"] = {"total": W.total, "embedding": W.embedding, "vision": W.vision, "mtp": W.mtp}
    return {
        "settings": {"kv_cache_dtype": kv, "tensor_parallel_size": tp, "max_num_seqs": 3},
        "facts": {
            "gpu": {"name": "NVIDIA H100 80GB HBM3", "memory_bandwidth_gbps": bandwidth},
            "engine": {"device": device, "version": "0.24.0"},
            "model": model,
        },
    }


def test_shape_from_facts_matches_the_planners_qwen36():
    assert shape_from_facts(QWEN36_FACTS) == memory.QWEN36_27B.__class__(
        **{**memory.QWEN36_27B.__dict__, "mamba_ssm_dtype": None}
    )


def test_real_model_single_stream_ceiling_is_about_197_tok_s_on_the_test_h100():
    roof, reason = roofline_from_plan(_plan())
    assert reason is None and roof is not None
    assert roof.weights.decode_read == pytest.approx(15.1e9, rel=0.01)
    # short context: KV and state are small against 15 GB of weights
    assert roof.ceiling_tok_s(context_tokens=100, batch=1) == pytest.approx(197, rel=0.02)
    # 5090's 1.79 TB/s: the ~119 tok/s of CONTEXT.md
    roof5090, _ = roofline_from_plan(_plan(bandwidth=1792))
    assert roof5090.ceiling_tok_s(100, 1) == pytest.approx(119, rel=0.02)


def test_batch_shares_weights_and_long_context_costs_kv():
    roof, _ = roofline_from_plan(_plan())
    one = roof.ceiling_tok_s(100, 1)
    three = roof.ceiling_tok_s(100, 3)
    assert 2.9 * one < three < 3 * one  # weights read once per step for all three sequences
    # 200K tokens of fp8 KV (32 KiB per token): about 6.5 GB more per step
    long = roof.ceiling_tok_s(200_000, 1)
    expected = 2990e9 / (
        W.decode_read + 200_000 * 32 * 1024 + 2 * memory.linear_state_bytes_per_sequence(roof.shape)
    )
    assert long == pytest.approx(expected, rel=1e-6)


def test_tensor_parallel_splits_weights_over_gpus():
    one, _ = roofline_from_plan(_plan(tp=1))
    two, _ = roofline_from_plan(_plan(tp=2))
    assert two.ceiling_tok_s(100, 1) == pytest.approx(2 * one.ceiling_tok_s(100, 1), rel=0.01)


def test_without_the_weight_split_the_embedding_is_still_left_out():
    roof, _ = roofline_from_plan(_plan(weights_split=False))
    assert roof.weights.decode_read == W.total - 248320 * 5120 * 2
    assert "ceiling slightly low" in roof.source


def test_bandwidth_override_wins_and_is_named():
    roof, _ = roofline_from_plan(_plan(bandwidth=3350), bandwidth_override_gbps=2990)
    assert roof.bandwidth_gbps == 2990 and "--bandwidth-gbps" in roof.source


@pytest.mark.parametrize(
    ("plan", "why"),
    [
        (None, "no plan.json"),
        (_plan(device="cpu"), "CPU engine"),
        (_plan(bandwidth=None), "memory_bandwidth_gbps is unknown"),
        ({"facts": {"gpu": {"memory_bandwidth_gbps": 1792}, "engine": {"device": "cuda"}}}, "no facts.model"),
        (_plan(model={"architecture": "x"}, weights_split=False), "incomplete"),
    ],
)
def test_no_roofline_says_why(plan, why):
    roof, reason = roofline_from_plan(plan)
    assert roof is None and why in reason


def test_an_assumed_gpus_bandwidth_is_not_this_machines():
    """No GPU detected at launch: plan.json's GPU is the profile's (origin assumed), and its bandwidth
    belongs to a GPU that is not here; only a measured --bandwidth-gbps gives a roofline then."""
    assumed = _plan(bandwidth=1792)
    assumed["facts"]["gpu"]["origin"] = "assumed"
    roof, reason = roofline_from_plan(assumed)
    assert roof is None and "assumed from the profile" in reason and "--bandwidth-gbps" in reason
    roof, reason = roofline_from_plan(assumed, bandwidth_override_gbps=4270)
    assert reason is None and roof.bandwidth_gbps == 4270
    detected = _plan(bandwidth=4800)
    detected["facts"]["gpu"]["origin"] = "detected"
    roof, _ = roofline_from_plan(detected)
    assert roof.bandwidth_gbps == 4800 and "GPU detected" in roof.source


def test_cpu_with_an_explicit_bandwidth_gets_a_roofline():
    roof, reason = roofline_from_plan(_plan(device="cpu"), bandwidth_override_gbps=50)
    assert reason is None and roof.bandwidth_gbps == 50


def test_json_carries_the_inputs():
    roof, _ = roofline_from_plan(_plan())
    j = roof.to_json()
    assert j["bandwidth_gbps"] == 2990.0
    assert j["kv_bytes_per_token"] == 32 * 1024  # fp8, 16 full-attention layers
    assert j["weight_bytes_per_step"] == W.decode_read

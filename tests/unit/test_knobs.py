"""The knob table (serve.launch.knobs) drives the profile -> decision -> flag -> plan.json path. This test lists
no knob: it walks KNOBS, sets each profile-keyed knob to a value made from its schema field's type, and
checks the value reaches plan()'s decisions, the rendered command (as the knob's style says) and plan.json's
settings. A new row is covered the day it is added. ~20 plans, well under a second."""

from __future__ import annotations

import json
import types
import typing

import pytest

from serve.launch import knobs, probes
from serve.launch.layering import load_profile
from serve.launch.plan import plan
from serve.launch.profile import field_paths
from serve.launch.render import flags_for, plan_document, render_argv

PROFILE_KNOBS = [k for k in knobs.KNOBS if k.key is not None]


def _sample(key: str) -> tuple[str, typing.Any]:
    """A value for ``key`` that is not its default, as typed after --set, and as the plan holds it."""
    info = field_paths()[key]
    annotation = info.annotation
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    first = next(a for a in typing.get_args(annotation) if a is not type(None)) if union else annotation
    if typing.get_origin(first) is typing.Annotated:  # constrained: int with ge/le
        first = typing.get_args(first)[0]
    if typing.get_origin(first) is typing.Literal:
        choices = [c for c in typing.get_args(first) if c != info.default]
        return str(choices[-1]), choices[-1]
    if first is bool:
        return "true", True
    if key == "serving.max_num_batched_tokens":  # at least the profile's max_num_seqs, or it is refused
        return "4096", 4096
    if first is int:
        n = 2**31 if key.endswith("_bytes") else 2  # bytes: room for a KV cache
        return str(n), n
    if first is float:
        return "0.95", 0.95
    if key == "serving.host":  # an address other machines reach is refused without an API key
        return "127.0.0.2", "127.0.0.2"
    if first is str:
        return "sample-value", "sample-value"
    if isinstance(first, type) and hasattr(first, "model_fields"):  # a sub-model: its defaults
        value = first().model_dump()
        return json.dumps(value), value
    raise AssertionError(f"{key}: no sample for {info.annotation}; extend _sample")


def test_every_profile_key_in_the_table_is_a_profile_field():
    assert PROFILE_KNOBS and all(k.key in field_paths() for k in PROFILE_KNOBS)


@pytest.mark.parametrize("knob", PROFILE_KNOBS, ids=lambda k: k.key)
def test_a_knob_reaches_decision_flag_and_plan_json(knob):
    typed, value = _sample(knob.key)
    base = [] if knob.key == "serving.max_model_len" else ["serving.max_model_len=8192"]  # fits: no refusal
    loaded = load_profile("qwen3.6-27b-h100", cli_sets=[*base, f"{knob.key}={typed}"], environ={})
    gpu = probes.gpu_facts("rtx5090-x2")  # two GPUs: tensor_parallel_size 2 is no refusal
    engine = probes.engine_facts("vllm-0.33")
    model = probes.model_facts(loaded.profile.model, profile_source="test")
    result = plan(loaded, gpu, engine, model)
    decision = result.decisions[knob.setting]
    assert decision.source == "override" and decision.value == value, decision
    argv = render_argv(result)
    expected = flags_for(knob.setting, value)
    assert expected and expected[0] == knob.flag
    at = argv.index(knob.flag)
    assert argv[at : at + len(expected)] == expected
    if knob.style == "json":
        assert json.loads(argv[at + 1]) == value
    elif knob.style == "lower":
        assert argv[at + 1] == str(value).lower()
    elif knob.style == "value":
        assert argv[at + 1] == str(value)
    if knob.document is not None:
        assert plan_document(result).settings.model_dump()[knob.document] == value


def test_styles_render_as_documented():
    assert flags_for("enable_prefix_caching", False) == ["--no-enable-prefix-caching"]
    assert flags_for("enforce_eager", False) == []
    assert flags_for("dtype", "auto") == []  # omit: vLLM's default
    assert flags_for("attention_backend", "TRITON_ATTN") == ["--attention-backend", "TRITON_ATTN"]


def test_max_num_batched_tokens_reaches_the_memory_fit():
    """A smaller scheduler step needs fewer activation bytes: the planner leaves the difference to the KV cache
    (vLLM's own profiling run is sized by max_num_batched_tokens). Without the knob wired into
    memory_fit.fit, both plans would be the same."""
    gpu, engine = probes.gpu_facts("h200"), probes.engine_facts("vllm-0.33")

    def capacity(sets: list[str]) -> int:
        loaded = load_profile("qwen3.6-27b-h100", cli_sets=sets, environ={})
        result = plan(loaded, gpu, engine, probes.model_facts(loaded.profile.model, profile_source="test"))
        return plan_document(result).memory["kv_capacity_tokens"]

    default, small = capacity([]), capacity(["serving.max_num_batched_tokens=2048"])
    assert small > default
    assert capacity(["serving.max_num_batched_tokens=8192"]) == default  # vLLM's default on this GPU

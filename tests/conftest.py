"""Shared fixtures: the repository root on sys.path, tiny models cached per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Factory: tiny_models(arch="qwen3", **options) -> model dir, made once per session per options."""
    from serve.tiny_model import make_tiny_model

    base = tmp_path_factory.mktemp("tiny-models")
    made: dict[tuple, Path] = {}

    def get(arch: str = "qwen3", **options) -> Path:
        key = (arch, tuple(sorted(options.items())))
        if key not in made:
            name = arch + "".join(f"-{k}" for k, v in sorted(options.items()) if v)
            made[key] = make_tiny_model(base / name, arch, **options)
        return made[key]

    return get


def _server(request, tiny_models, profile: str, arch: str, **model_options):
    from tests.support.require import need_vllm
    from tests.support.vllm_server import VllmServer

    need_vllm()
    server = VllmServer(profile, tiny_models(arch, **model_options), engine="auto")
    server.start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def cpu_tiny_server(request, tiny_models):
    """vLLM (CPU build) serving the tiny dense Qwen3 through ``python -m serve launch --profile cpu-tiny``;
    shared by the tests that only read from it. Tests that kill or freeze vLLM start their own."""
    return _server(request, tiny_models, "cpu-tiny", "qwen3")


@pytest.fixture(scope="session")
def cpu_tiny_mtp_server(request, tiny_models):
    """The tiny Qwen3.5 hybrid whose MTP head agrees with the model (non-zero acceptance), served with
    MTP speculative decoding through ``--profile cpu-tiny-mtp``."""
    return _server(request, tiny_models, "cpu-tiny-mtp", "qwen3_5", agreeing_mtp=True)

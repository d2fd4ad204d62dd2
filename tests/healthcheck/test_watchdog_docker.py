"""Issue 16 item 3 with the real Docker engine: a vLLM container whose engine is hung with SIGSTOP is
restarted from inside (the launcher's watchdog kills vLLM and exits 75; ``restart: unless-stopped``
starts it again), with no Docker socket mounted anywhere.

The container is the kit's CPU image (``KIT_CPU_IMAGE``, built by tests/docker/test_compose.py or
``docker build --build-arg BASE_IMAGE=qwen-kit/vllm-cpu:0.32.0 -t qwen-kit:cpu .``) running the real
CPU vLLM on the tiny random model, with this checkout's serve/, healthcheck/, config/ and entrypoint
mounted over the image's copies, so the test needs no rebuild. Cost: two CPU vLLM starts (~1-2 min
each on 2 cores) plus ~20 s of failed probes: about 3-5 minutes (marked slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.healthcheck.conftest import REPO, free_port, wait_for
from tests.support.require import skip_or_fail

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = os.environ.get("KIT_CPU_IMAGE", "qwen-kit:cpu")
KEY = "watchdog-test-key"


def _docker(*args: str, timeout: float = 60, check: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr[-2000:]}")
    return proc.stdout


def _logs(name: str) -> str:
    """The container's output; the launcher and the watchdog write to stderr."""
    proc = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=30)
    return proc.stdout + proc.stderr


def _healthy(port: int) -> bool:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {KEY}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return r.status == 200 and bool(json.loads(r.read())["data"])
    except (OSError, ValueError):
        return False


@pytest.fixture
def vllm_container() -> Iterator[tuple[str, int]]:
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        skip_or_fail("docker", "no running Docker engine (scripts/ci-system-deps.sh starts dockerd)")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        skip_or_fail("docker", f"no image {IMAGE}: build it as tests/docker/test_compose.py does")
    port = free_port()
    name = f"kit-watchdog-test-{os.getpid()}"
    mounts = []
    for src, dst in (
        ("serve", "/app/serve"),
        ("healthcheck", "/app/healthcheck"),
        ("config", "/app/config"),
        ("docker/entrypoint.sh", "/usr/local/bin/kit-entrypoint"),
    ):
        mounts += ["-v", f"{REPO / src}:{dst}:ro"]
    env = {
        "SERVE_PROFILE": "cpu-tiny",
        "SERVE_DOWNLOAD": "0",
        "SERVE_TINY_MODEL_DIR": "/data/models/tiny",
        "VLLM_API_KEY": KEY,  # vLLM listens on 0.0.0.0 in the container: a key is required
        "SERVE_WATCHDOG_INTERVAL_S": "2",
        "SERVE_WATCHDOG_FAILURES": "3",
        "SERVE_WATCHDOG_PROBE_TIMEOUT_S": "5",
        "SERVE_WATCHDOG_START_PERIOD_S": "900",
    }
    envs = [x for k, v in env.items() for x in ("-e", f"{k}={v}")]
    _docker(
        "run", "-d", "--init", "--restart", "unless-stopped", "--name", name, "--shm-size", "1g",
        "-p", f"127.0.0.1:{port}:8000", *envs, *mounts, IMAGE,
    )  # fmt: skip
    try:
        yield name, port
    finally:
        print("\n".join(line for line in _logs(name).splitlines() if "[watchdog]" in line))
        _docker("rm", "-f", name, check=False, timeout=120)


def _state(name: str) -> dict:
    return json.loads(_docker("inspect", name))[0]


def test_sigstopped_engine_is_restarted_without_a_docker_socket(vllm_container: tuple[str, int]) -> None:
    name, port = vllm_container
    t0 = time.monotonic()
    wait_for(lambda: _healthy(port), 600, interval=2, what="vLLM in the container answering")
    # The watchdog must have seen vLLM ready (its own probe, a real chat completion with the key):
    # before that, failures are a cold start and kill nothing within the start period.
    wait_for(
        lambda: "[watchdog] vLLM at" in _logs(name),
        120,
        interval=1,
        what="the watchdog's first good probe",
    )
    first_start = time.monotonic() - t0
    info = _state(name)
    assert not [m for m in info["Mounts"] if "docker.sock" in (m.get("Source") or "")], info["Mounts"]
    assert info["RestartCount"] == 0
    # Every process of vLLM (API server, engine core) is stopped; tini and the launcher are not.
    top = _docker("top", name, "-eo", "pid,args").splitlines()[1:]
    frozen = []
    for line in top:
        pid, args = line.split(None, 1)
        if "docker-init" in args or "serve launch" in args:
            continue
        os.kill(int(pid), signal.SIGSTOP)
        frozen.append(args[:60])
    assert frozen, top
    stopped_at = time.monotonic()
    wait_for(lambda: _state(name)["RestartCount"] >= 1, 120, interval=1, what="the container restarting")
    restarted_s = time.monotonic() - stopped_at
    wait_for(lambda: _healthy(port), 600, interval=1, what="vLLM answering again")
    answering_s = time.monotonic() - stopped_at
    logs = _logs(name)
    print(
        f"\n[watchdog-docker] first start {first_start:.0f} s; froze {len(frozen)} processes; "
        f"container restarted {restarted_s:.1f} s after SIGSTOP; vLLM answering again "
        f"{answering_s:.1f} s after SIGSTOP"
    )
    assert "killing its process group and exiting 75" in logs, logs[-3000:]
    assert not [m for m in _state(name)["Mounts"] if "docker.sock" in (m.get("Source") or "")]

"""Helpers for the sidecar's tests: free ports in this project's range, the sidecar as a real
subprocess (``python -m healthcheck``), reading its /readyz and /metrics, the fake vLLM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.healthcheck.fault_server import FaultServer

REPO = Path(__file__).resolve().parents[2]
PORT_RANGE = range(18300, 18400)  # this machine's ports for these tests
_next_port = [18300 + (os.getpid() % 50)]


def free_port() -> int:
    """A port in PORT_RANGE that binds now (others share the machine, so probe, don't assume)."""
    for _ in range(len(PORT_RANGE)):
        port = _next_port[0]
        _next_port[0] = PORT_RANGE.start + (port + 1 - PORT_RANGE.start) % len(PORT_RANGE)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate} (last: {last!r})")


def parse_metrics(text: str) -> dict[str, float]:
    """Sample name with sorted labels -> value: ``healthcheck_probes_total{reason="ok"}``."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


class Sidecar:
    """``python -m healthcheck`` in a subprocess, configured through HEALTHCHECK_* env variables (the
    way compose configures it), with its log in a file the tests print on failure."""

    def __init__(self, vllm_url: str, log_dir: Path, **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHCHECK_")}
        env.update(
            {
                "HEALTHCHECK_VLLM_URL": vllm_url,
                "HEALTHCHECK_PORT": str(self.port),
                "HEALTHCHECK_HOST": "127.0.0.1",
                "HEALTHCHECK_PLAN_FILE": "",
                "PYTHONPATH": str(REPO),
            }
        )
        for key, value in settings.items():
            env[f"HEALTHCHECK_{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        self.log_path = log_dir / f"sidecar-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "healthcheck"],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        # A keyed sidecar wants the key on /metrics, / and /readyz's detail (healthcheck/access.py):
        # this client sends it, as Prometheus and Docker's healthcheck do.
        key = settings.get("api_key")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=self.url, timeout=5.0, trust_env=False, headers=headers)
        try:
            wait_for(self._live, 30, what="sidecar /livez")
        except AssertionError:
            self.stop()
            raise AssertionError(f"sidecar did not start:\n{self.log()}") from None

    def _live(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"sidecar exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.client.get("/livez").status_code == 200
        except httpx.HTTPError:
            return False

    def readyz(self) -> tuple[int, dict[str, Any]]:
        r = self.client.get("/readyz")
        return r.status_code, r.json()

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.client.get("/metrics").text)

    def wait_ready(self, ready: bool, timeout: float) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status, body = self.readyz()
            assert (status == 200) == body["ready"]
            return body if body["ready"] is ready else None

        try:
            return wait_for(check, timeout, what=f"ready={ready}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- sidecar log ---\n{self.log()[-4000:]}") from None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        self._log.close()


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[Callable[..., Sidecar]]:
    started: list[Sidecar] = []

    def make(vllm_url: str, **settings: Any) -> Sidecar:
        s = Sidecar(vllm_url, tmp_path, **settings)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer(free_port()).start()
    yield server
    server.stop()

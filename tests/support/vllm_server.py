"""A real vLLM server for the tests, started the way users start it: ``python -m serve launch``.

    with VllmServer("cpu-tiny", model_dir, port=18010) as server:
        server.base_url, server.plan, server.log_text(), server.pid

Started in its own process group; stopped with SIGTERM (then SIGKILL after a grace period). Waits for
/health 200 AND /v1/models listing the model, and fails with the log's tail when vLLM dies first.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = float(os.environ.get("KIT_VLLM_START_TIMEOUT", "420"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


class VllmServer:
    def __init__(
        self,
        profile: str,
        model_dir: Path | str,
        *,
        port: int | None = None,
        sets: list[str] | None = None,
        env: dict[str, str] | None = None,
        workdir: Path | None = None,
        engine: str = "auto",
    ) -> None:
        self.profile = profile
        self.model_dir = Path(model_dir)
        self.port = port or free_port()
        self.sets = [f"model.path={self.model_dir}", f"serving.port={self.port}", *(sets or [])]
        self.extra_env = env or {}
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="vllm-server-"))
        self.plan_file = self.workdir / "plan.json"
        self.log_path = self.workdir / "vllm.log"
        self.engine = engine
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_after_s: float | None = None

    # -- lifecycle
    @property
    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "serve", "launch", "--profile", self.profile, "--engine", self.engine]
        for item in self.sets:
            argv += ["--set", item]
        return [*argv, "--plan-file", str(self.plan_file)]

    def start(self) -> VllmServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERVE_")}
        env.update(self.extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        log = self.log_path.open("wb")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.ready_after_s = time.monotonic() - started
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"vLLM exited with {self.proc.returncode} before it was ready; log tail:\n{self.log_tail()}"
                )
            try:
                status, _ = http_get(f"{self.base_url}/health", timeout=2)
                if status == 200:
                    status, body = http_get(f"{self.base_url}/v1/models", timeout=5)
                    if status == 200 and json.loads(body).get("data"):
                        return
            except (OSError, ValueError):
                pass
            time.sleep(1.0)
        raise TimeoutError(f"vLLM not ready after {START_TIMEOUT_S:.0f} s; log tail:\n{self.log_tail()}")

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM the process group; SIGKILL after ``grace_s``. Returns vLLM's exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._reap_group()
        return self.proc.returncode

    def _reap_group(self) -> None:
        # Workers vLLM spawned share the process group; none may outlive the test.
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests look at
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def plan(self) -> dict[str, Any]:
        return json.loads(self.plan_file.read_text())

    @property
    def served_model(self) -> str:
        return str(self.plan["served_model_name"])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def metrics(self) -> str:
        return http_get(f"{self.base_url}/metrics", timeout=10)[1]

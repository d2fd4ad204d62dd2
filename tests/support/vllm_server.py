"""A real vLLM server for the tests, started the way users start it: ``python -m serve launch``.

    with VllmServer("cpu-tiny", model_dir, port=18010) as server:
        server.base_url, server.plan, server.log_text(), server.pid

Started in its own process group (serve.client.launched); stopped with SIGTERM to the group (then
SIGKILL after a grace period). Waits for /health 200 AND /v1/models listing the model, and fails with
the log's tail when vLLM dies first.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from serve.client.launched import LaunchedProcess, NotReady

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
        self.process: LaunchedProcess | None = None
        self.ready_after_s: float | None = None

    # -- lifecycle
    @property
    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "serve", "launch", "--profile", self.profile, "--engine", self.engine]
        for item in self.sets:
            argv += ["--set", item]
        return [*argv, "--plan-file", str(self.plan_file)]

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return None if self.process is None else self.process.proc

    def start(self) -> VllmServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERVE_")}
        # The launcher's watchdog (on by default in a container, as this machine may be) would send its own
        # chat completions every few seconds: traffic the tests' /metrics windows and the concurrency
        # checks must not see. Tests of the watchdog pass SERVE_WATCHDOG themselves.
        env["SERVE_WATCHDOG"] = "off"
        env.update(self.extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        self.process = LaunchedProcess(self.argv, self.log_path, cwd=ROOT, env=env).start()
        try:
            self.ready_after_s = self.process.wait_ready(self._ready, START_TIMEOUT_S)
        except NotReady as exc:
            self.stop()
            raise RuntimeError(f"vLLM did not become ready: {exc}") from None
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        try:
            status, _ = http_get(f"{self.base_url}/health", timeout=2)
            if status == 200:
                status, body = http_get(f"{self.base_url}/v1/models", timeout=5)
                return status == 200 and bool(json.loads(body).get("data"))
        except (OSError, ValueError):
            pass
        return False

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM the process group; SIGKILL after ``grace_s``. Returns vLLM's exit code (None when
        it was never started); no process of the group is left when it returns."""
        return None if self.process is None else self.process.stop(grace_s)

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

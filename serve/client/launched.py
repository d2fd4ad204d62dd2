"""A server started in its own process group (setsid), waited for, and stopped whole: the bench's and
parity's launched profiles, the tests' vLLM servers and the GPU suite's configurations.

vLLM's engine core (and any worker) is a child of the API server, which is a child of
``python -m serve launch`` until that execs: signalling the group reaches every one of them, so no
engine outlives its test or its A/B side and holds the port or the memory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

OWN_GROUP: dict = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
"""Popen arguments for a process group of the child's own in the caller's session."""


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NotReady(Exception):
    """The process exited, or ``ready`` did not hold within the timeout; the message has the log tail."""


class LaunchedProcess:
    """``argv`` in a new session (its own process group), stdout and stderr to ``log_file``.

    ``start()`` returns at once; ``wait_ready(ready, timeout_s)`` polls; ``stop()`` sends SIGTERM to
    the whole group, SIGKILL to what is left after ``grace_s``, and returns once the group is gone."""

    def __init__(
        self,
        argv: Sequence[str],
        log_file: Path,
        *,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_file = Path(log_file)
        self.cwd, self.env = cwd, dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def start(self) -> LaunchedProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # its own process group (stop() signals the whole of it), but the caller's session: with
                # scheduler autogroup on (Linux's default on desktops), a new session is a CPU-scheduling
                # group of its own, and on a loaded machine the client's reads of a stream then lagged
                # the server by up to 1.1 s (docs/scale-out-results/diagnosis/autogroup-experiment.md)
                **OWN_GROUP,
            )
        self.started_at = time.monotonic()
        return self

    def exited(self) -> str | None:
        """Why the process is gone (its exit code and log tail), or None while it runs."""
        if self.proc is None or self.proc.poll() is None:
            return None
        return (
            f"`{' '.join(self.argv)}` exited with {self.proc.returncode}; log {self.log_file}:\n"
            + log_tail(self.log_file)
        )

    def wait_ready(self, ready: Callable[[], bool], timeout_s: float, *, poll_s: float = 1.0) -> float:
        """Poll ``ready()`` until it holds; the seconds since start. NotReady when the process exits
        first (fails fast, with the log tail) or ``timeout_s`` passes."""
        assert self.started_at is not None, "not started"
        deadline = time.monotonic() + timeout_s
        while True:
            if dead := self.exited():
                raise NotReady(dead)
            if ready():
                return time.monotonic() - self.started_at
            if time.monotonic() > deadline:
                raise NotReady(
                    f"`{' '.join(self.argv)}` not ready after {timeout_s:.0f} s; log {self.log_file}:\n"
                    + log_tail(self.log_file)
                )
            time.sleep(poll_s)

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM to the group, SIGKILL after ``grace_s``; returns the launched process's exit code
        once no process of the group is left (None when it was never started)."""
        if self.proc is None:
            return None
        pgid = self.proc.pid  # its own group: the group id is the child's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        if not self._wait_group(pgid, grace_s):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self._wait_group(pgid, 15.0)
        return self.proc.poll()

    def _wait_group(self, pgid: int, timeout_s: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.proc.poll()  # reap the child itself, else its zombie keeps the group alive
            if not group_alive(pgid):
                return True
            time.sleep(0.2)
        return False

    def __enter__(self) -> LaunchedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

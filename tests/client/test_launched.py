"""serve.client.launched: a process in its own group, waited for, stopped whole. Real processes (a
Python child that spawns a grandchild, as `serve launch` -> vLLM -> engine core does); ~3 s."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from serve.client.launched import LaunchedProcess, NotReady, group_alive

# A parent that starts a child in its group and then waits, like the API server and its engine core;
# it ignores SIGTERM when asked, like a wedged server, so that only SIGKILL ends it.
PARENT = """
import signal, subprocess, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
print("child", child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("mode", ["polite", "stubborn"])
def test_stop_ends_the_whole_group(tmp_path: Path, mode: str) -> None:
    proc = LaunchedProcess([sys.executable, "-c", PARENT, mode], tmp_path / "log").start()
    assert os.getpgid(proc.pid) == proc.pid  # its own group: setsid
    proc.wait_ready(lambda: "child" in (tmp_path / "log").read_text(), timeout_s=30, poll_s=0.05)
    t0 = time.monotonic()
    code = proc.stop(grace_s=1.0)
    assert not group_alive(proc.pid), "a process of the group outlived stop()"
    assert code == (-signal.SIGTERM if mode == "polite" else -signal.SIGKILL)
    assert time.monotonic() - t0 < 10


def test_a_process_that_dies_fails_the_wait_fast_with_its_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('no such profile: x'); sys.exit(2)"]
    proc = LaunchedProcess(argv, tmp_path / "log").start()
    t0 = time.monotonic()
    with pytest.raises(NotReady, match=r"exited with 2(.|\n)*no such profile: x"):
        proc.wait_ready(lambda: False, timeout_s=60, poll_s=0.05)
    assert time.monotonic() - t0 < 10
    assert proc.stop() == 2


def test_not_ready_in_time_says_so(tmp_path: Path) -> None:
    proc = LaunchedProcess([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "log")
    with proc, pytest.raises(NotReady, match="not ready after 0 s"):
        proc.wait_ready(lambda: False, timeout_s=0.3, poll_s=0.05)
    assert not group_alive(proc.pid)

"""The launcher's watchdog (healthcheck/watchdog.py) without Docker: the restart policy, and the
supervisor as a real process tree: exit codes passed through, SIGTERM forwarded, a wedged server's
process group killed with exit 75, and no orphan when the launcher itself is killed with SIGKILL.

The child here is a small Python process (named as a FAKE engine: it serves nothing), and the probes go
to the FAKE vLLM of fault_server.py; the real vLLM and Docker are in test_watchdog_docker.py. ~20 s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from healthcheck.restart_policy import RESTART, WAIT_START_PERIOD, RestartPolicy
from healthcheck.watchdog import EXIT_WEDGED, WatchdogSettings, load_settings, probe_url
from tests.healthcheck.conftest import REPO, free_port, wait_for
from tests.healthcheck.fault_server import FaultServer


# --- the pure policy ---------------------------------------------------------------------------
def test_policy_kills_after_n_failures_of_a_server_that_was_ready() -> None:
    p = RestartPolicy(failures_to_restart=3, start_period_s=1000.0, started_at=0.0)
    assert p.observe(True, 1.0) is None
    assert [p.observe(False, t) for t in (2.0, 3.0)] == [None, None]
    assert p.observe(False, 4.0) == RESTART


def test_policy_failure_streak_resets_on_success() -> None:
    p = RestartPolicy(failures_to_restart=2, start_period_s=0.0, started_at=0.0)
    assert [p.observe(ok, float(t)) for t, ok in enumerate([False, True, False, True])] == [None] * 4


def test_policy_start_period_spares_a_cold_start() -> None:
    p = RestartPolicy(failures_to_restart=3, start_period_s=300.0, started_at=0.0)
    assert [p.observe(False, float(t)) for t in (10, 20, 30)] == [None, None, WAIT_START_PERIOD]
    assert p.observe(False, 301.0) == RESTART  # never came up within the start period


def test_settings_from_the_environment_and_errors_name_the_variable(tmp_path: Path) -> None:
    s = load_settings(
        {"SERVE_WATCHDOG": "on", "SERVE_WATCHDOG_FAILURES": "4", "SERVE_WATCHDOG_INTERVAL_S": ""}
    )
    assert (s.watchdog, s.watchdog_failures, s.watchdog_interval_s) == ("on", 4, 10.0)
    with pytest.raises(ValueError, match="SERVE_WATCHDOG_FAILURES='0'"):
        load_settings({"SERVE_WATCHDOG_FAILURES": "0"})
    with pytest.raises(ValueError, match="SERVE_WATCHDOG='maybe'"):
        load_settings({"SERVE_WATCHDOG": "maybe"})
    marker = tmp_path / ".dockerenv"
    auto = WatchdogSettings()
    assert not auto.enabled([marker])
    marker.touch()
    assert auto.enabled([marker]) and not WatchdogSettings(watchdog="off").enabled([marker])


def test_probe_url_maps_wildcards_to_loopback() -> None:
    assert probe_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert probe_url("::", 8000) == "http://[::1]:8000"
    assert probe_url("10.0.0.5", 8001) == "http://10.0.0.5:8001"


# --- the supervisor as a process tree ----------------------------------------------------------
# FAKE engine: a process with a child of its own (as vLLM has its engine core), which writes its
# pid, exits 0 on SIGTERM (code -2: ignores SIGTERM, it and its child), and otherwise sleeps or exits
# with the code given.
FAKE_ENGINE = r"""
import os, signal, subprocess, sys, time
pid_file, code = sys.argv[1], int(sys.argv[2])
if code == -2:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the child
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(pid_file, "w").write(f"{os.getpid()} {child.pid}")
if code != -2:
    signal.signal(signal.SIGTERM, lambda *_: (child.terminate(), sys.exit(0)))
if code >= 0:
    sys.exit(code)
time.sleep(600)
"""


def _supervisor(tmp_path: Path, port: int, code: int, **env: str) -> tuple[subprocess.Popen[str], Path]:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"host": "0.0.0.0", "port": port, "served_model_name": "fake-model"}))
    pid_file = tmp_path / "engine.pid"
    script = (
        "import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1); "
        "from pathlib import Path; from healthcheck.watchdog import load_settings, supervise; "
        f"sys.exit(supervise([sys.executable, '-c', {FAKE_ENGINE!r}, {str(pid_file)!r}, '{code}'], "
        f"dict(__import__('os').environ), Path({str(plan)!r}), load_settings()))"
    )
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "SERVE_WATCHDOG": "on", **env}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, env=full_env, stderr=subprocess.PIPE, text=True
    )
    return proc, pid_file


def _pids(pid_file: Path) -> list[int]:
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 20, what="engine pid file")
    return [int(p) for p in pid_file.read_text().split()]


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_exit_code_is_passed_through(tmp_path: Path) -> None:
    proc, _ = _supervisor(tmp_path, free_port(), 3)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert "[watchdog guard]" not in err, err  # the launcher stopped vLLM itself: the guard stays quiet


@pytest.mark.parametrize(
    "code, grace, how", [(-1, "10", "stopped by SIGTERM"), (-2, "1", "SIGKILL after 1 s")]
)
def test_a_launcher_killed_with_sigkill_leaves_no_orphan(
    tmp_path: Path, code: int, grace: str, how: str
) -> None:
    """Bare metal, SERVE_WATCHDOG=on: SIGKILL of the launcher (no handler runs) must not orphan vLLM's
    process group. Its guard stops it: SIGTERM, then SIGKILL for an engine that ignores SIGTERM."""
    proc, pid_file = _supervisor(tmp_path, free_port(), code, SERVE_WATCHDOG_ORPHAN_GRACE_S=grace)
    engine, engine_child = _pids(pid_file)
    others = [c.pid for c in psutil.Process(proc.pid).children() if c.pid != engine]  # the guard
    assert len(others) == 1, others
    t0 = time.monotonic()
    proc.kill()
    proc.wait(10)
    for pid in (engine, engine_child, *others):
        wait_for(lambda pid=pid: _gone(pid), 8, what=f"pid {pid} gone after the launcher's SIGKILL")
    took = time.monotonic() - t0
    err = proc.stderr.read() if proc.stderr else ""  # complete: the guard, its last writer, has exited
    print(f"\n[watchdog] launcher SIGKILLed -> engine, its child and the guard gone in {took:.1f} s ({how})")
    assert f"vLLM's process group {engine}: " in err and how in err, err
    assert took < (3 if code == -1 else 5), took


def test_sigterm_is_forwarded_and_the_engine_exit_code_returned(tmp_path: Path) -> None:
    proc, pid_file = _supervisor(tmp_path, free_port(), -1)
    engine, _ = _pids(pid_file)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not psutil.pid_exists(engine) or psutil.Process(engine).status() == psutil.STATUS_ZOMBIE


def test_a_wedged_engine_is_killed_with_its_group_and_the_launcher_exits_75(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    proc, pid_file = _supervisor(
        tmp_path,
        fault_server.server_port,
        -1,
        SERVE_WATCHDOG_INTERVAL_S="0.3",
        SERVE_WATCHDOG_FAILURES="3",
        SERVE_WATCHDOG_PROBE_TIMEOUT_S="1",
        SERVE_WATCHDOG_START_PERIOD_S="600",
    )
    engine, engine_child = _pids(pid_file)
    wait_for(lambda: fault_server.requests.get("/v1/chat/completions", 0) >= 2, 20, what="good probes")
    assert proc.poll() is None, "killed a healthy engine"
    t0 = time.monotonic()
    fault_server.mode = "hang"
    _, err = proc.communicate(timeout=30)
    print(f"\n[watchdog] hang -> launcher exit in {time.monotonic() - t0:.1f} s")
    assert proc.returncode == EXIT_WEDGED, err
    assert "killing its process group" in err and "timeout" in err, err
    for pid in (engine, engine_child):  # the whole group, the engine's own child included
        wait_for(
            lambda pid=pid: (
                not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            ),
            10,
            what=f"pid {pid} gone",
        )


def test_a_cold_start_is_not_killed_within_the_start_period(tmp_path: Path) -> None:
    proc, pid_file = _supervisor(
        tmp_path,
        free_port(),  # nothing listens: every probe fails, as during a cold start
        -1,
        SERVE_WATCHDOG_INTERVAL_S="0.2",
        SERVE_WATCHDOG_FAILURES="2",
        SERVE_WATCHDOG_START_PERIOD_S="600",
    )
    _pids(pid_file)
    time.sleep(2.0)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "within the start period" in err, err

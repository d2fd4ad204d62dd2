"""The sidecar under abuse (issue 16 item 5): half-open connections must not take its own healthcheck
down, it listens on loopback unless told otherwise, and no secret reaches a response or a log line.

The upstream here is the FAKE vLLM of tests/healthcheck/fault_server.py (a real HTTP server, not vLLM):
what is under test is the sidecar's own HTTP server and what it echoes. Cost: ~10 s."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.healthcheck.conftest import REPO, Sidecar, wait_for
from tests.healthcheck.fault_server import FaultServer

HALF_OPEN = 200


@contextlib.contextmanager
def half_open_connections(port: int, n: int) -> Iterator[list[socket.socket]]:
    """``n`` connections that each send half a request line and then nothing (slowloris)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /livez HT")
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.monotonic()
    out = fn()
    return time.monotonic() - t0, out


def test_half_open_connections_leave_the_healthcheck_answering(
    sidecar_factory: Callable[..., Sidecar], fault_server: FaultServer
) -> None:
    sc = sidecar_factory(
        f"http://127.0.0.1:{fault_server.server_port}", probe_interval_s=0.5, failure_threshold=1
    )
    sc.wait_ready(True, 30)
    check = [sys.executable, "-m", "healthcheck", "check", "--url", sc.url, "--timeout", "5"]
    with half_open_connections(sc.port, HALF_OPEN):
        livez_s, livez = _timed(lambda: httpx.get(sc.url + "/livez", timeout=5, trust_env=False))
        check_s, proc = _timed(
            lambda: subprocess.run(check, cwd=REPO, capture_output=True, text=True, timeout=10)
        )
    print(
        f"\n[half-open] {HALF_OPEN} half-open connections: /livez {livez.status_code} in {livez_s:.3f} s; "  # type: ignore[attr-defined]
        f"healthcheck check exit {proc.returncode} in {check_s:.3f} s"  # type: ignore[attr-defined]
    )
    assert livez.status_code == 200 and livez_s < 2.0, (livez, livez_s)  # type: ignore[attr-defined]
    assert proc.returncode == 0 and check_s < 2.0, (proc.stdout, proc.stderr, check_s)  # type: ignore[attr-defined]


def test_half_open_connections_are_closed_after_the_header_timeout(
    sidecar_factory: Callable[..., Sidecar], fault_server: FaultServer
) -> None:
    sc = sidecar_factory(f"http://127.0.0.1:{fault_server.server_port}", header_timeout_s=1.0)
    with half_open_connections(sc.port, 5) as socks:
        for s in socks:
            s.settimeout(5)
            t0 = time.monotonic()
            assert s.recv(1024) == b"", "the sidecar answered a half-sent request"
            assert time.monotonic() - t0 < 4
    # A body that never comes is cut off as well (the request line and headers are complete).
    with socket.create_connection(("127.0.0.1", sc.port), timeout=5) as s:
        s.sendall(b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        s.settimeout(5)
        t0 = time.monotonic()
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert time.monotonic() - t0 < 4, "a stalled body held the connection open"


def test_loopback_is_the_default_listen_address(tmp_path: Path) -> None:
    from healthcheck.config import parse_settings

    assert parse_settings([], environ={}).host == "127.0.0.1"
    assert parse_settings([], environ={"HEALTHCHECK_HOST": "0.0.0.0"}).host == "0.0.0.0"


def test_no_secret_in_readyz_root_or_log(
    sidecar_factory: Callable[..., Sidecar], fault_server: FaultServer
) -> None:
    key = "sk-verysecretkey-0123456789"
    fault_server.mode, fault_server.api_key = "echo_auth", key
    port = fault_server.server_port
    common = {"probe_interval_s": 0.5, "failure_threshold": 1, "log_level": "debug"}
    with_key = sidecar_factory(
        f"http://127.0.0.1:{port}",
        api_key=key,
        probe_extra_body='{"chat_template_kwargs": {"enable_thinking": false}, "api_key": "sk-bodysecret-99"}',
        **common,
    )
    # httpx sends URL userinfo as Basic auth: the fake echoes that one.
    with_userinfo = sidecar_factory(f"http://user:hunter2pass@127.0.0.1:{port}", **common)
    for sc in (with_key, with_userinfo):
        sc.wait_ready(False, 20)
        # not ready from the start ("not_probed_yet"): wait for the first probe's own verdict
        wait_for(lambda sc=sc: sc.readyz()[1]["reason"] != "not_probed_yet", 20, what="a first probe")
        body = sc.readyz()[1]
        # The fake echoed the request's Authorization header into its error: the sidecar saw the secret.
        assert body["reason"] == "request_failed", body
        assert "Authorization: [redacted]" in body["detail"], body
    time.sleep(1.0)  # a few more failed probes reach the logs
    root = with_userinfo.client.get("/").json()
    assert root["vllm_url"] == f"http://[redacted]@127.0.0.1:{port}", root
    for sc in (with_key, with_userinfo):
        shown = sc.client.get("/readyz").text + sc.client.get("/").text + sc.client.get("/metrics").text
        log = sc.log()
        for secret in (key, "hunter2pass", "sk-bodysecret-99", "dXNlcjpodW50ZXIycGFzcw"):
            assert secret not in shown, f"{secret} in a response"
            assert secret not in log, f"{secret} in the log:\n{log[-3000:]}"
    assert "enable_thinking" in with_key.log(), "the settings line must still show the extra body's keys"


def test_probes_and_scrapes_send_the_api_key(
    sidecar_factory: Callable[..., Sidecar], fault_server: FaultServer
) -> None:
    fault_server.mode, fault_server.api_key = "unauthorized", "s3cret-key"
    sc = sidecar_factory(
        f"http://127.0.0.1:{fault_server.server_port}",
        api_key="s3cret-key",
        probe_interval_s=0.5,
        metrics_interval_s=0.5,
    )
    sc.wait_ready(True, 20)
    wait_for(lambda: sc.metrics().get("healthcheck_vllm_metrics_up") == 1, 10, what="vLLM /metrics read")
    assert fault_server.unauthorized_requests == 0


@pytest.mark.parametrize("bad", ["", "nope"])
def test_scrape_without_the_key_is_refused_by_the_fake(fault_server: FaultServer, bad: str) -> None:
    """The fake must refuse /metrics without the key, or the test above could not fail."""
    fault_server.mode, fault_server.api_key = "unauthorized", "s3cret-key"
    headers = {"Authorization": f"Bearer {bad}"} if bad else {}
    r = httpx.get(f"http://127.0.0.1:{fault_server.server_port}/metrics", headers=headers, trust_env=False)
    assert r.status_code == 401

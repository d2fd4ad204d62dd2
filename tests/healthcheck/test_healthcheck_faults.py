"""The sidecar against the FAKE vLLM (tests/healthcheck/fault_server.py): every fault gives the right
not-ready reason, in bounded time and memory, and the sidecar process survives all of them. The answer
check against the real model: tests/healthcheck/test_readiness_real_model.py."""

from __future__ import annotations

import asyncio
import time
import tracemalloc

import psutil
import pytest

from healthcheck.probe import Prober, ProbeResult
from healthcheck.question import ProbeQuestion, compile_expect
from tests.healthcheck.conftest import free_port, wait_for
from tests.healthcheck.fault_server import MODEL, FaultServer

CAP = 256 * 1024
PARIS = ProbeQuestion(
    prompt="What is the capital of France? Answer with one word.",
    max_tokens=16,
    expect=compile_expect(r"(?i)\bparis\b"),
)
UNCHECKED = ProbeQuestion(prompt=PARIS.prompt, max_tokens=16, off_reason="random weights")


def _probe(
    url: str,
    *,
    api_key: str | None = None,
    model: str | None = MODEL,
    deadline: float = 2.0,
    question: ProbeQuestion = PARIS,
) -> ProbeResult:
    async def go() -> ProbeResult:
        prober = Prober(
            url,
            expected_model=lambda: model,
            api_key=api_key,
            deadline_s=deadline,
            request_timeout_s=1.0,
            max_response_bytes=CAP,
            question=lambda: question,
            temperature=0.0,
        )
        try:
            return await prober.run()
        finally:
            await prober.aclose()

    return asyncio.run(go())


EXPECTED = {
    "ok": "ok",
    "degenerate": "degenerate_output",  # a loop of "Paris": degenerate first, whatever it holds
    "wrong_answer": "wrong_answer",
    "empty": "degenerate_output",
    "health_500": "health_failed",
    "unauthorized": "unauthorized",
    "wrong_model": "model_not_listed",
    "malformed_models": "malformed_response",
    "malformed_stream": "malformed_response",
    "no_done": "malformed_response",
    "error_event": "request_failed",
    "down_chat": "request_failed",
    "huge_models": "response_too_large",
    "huge_declared": "response_too_large",
    "huge_stream": "response_too_large",
    "hang": "timeout",
    "slow_drip": "timeout",  # a byte every 0.5 s defeats the 1 s read timeout; the deadline ends it
}


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_each_fault_gives_its_reason_in_bounded_time_and_memory(fault_server: FaultServer, mode: str) -> None:
    fault_server.mode = mode
    tracemalloc.start()
    start = time.monotonic()
    result = _probe(f"http://127.0.0.1:{fault_server.server_port}")
    took = time.monotonic() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.reason == EXPECTED[mode], result
    assert took < 2.0 + 0.5  # deadline + cancellation slack
    # The huge bodies are 1 GiB or endless; what the probe held stays near the cap.
    assert peak < 8 * CAP, f"{mode}: peak {peak} bytes traced"
    if mode == "ok":
        assert result.ttft_s is not None and 0 < result.ttft_s <= result.total_s
        assert result.sample.startswith("The capital of France is Paris")
    if mode in ("ok", "wrong_answer", "degenerate"):
        assert result.answer_check == r"on: (?i)\bparis\b"
    if mode == "wrong_answer":
        assert "Berlin" in result.detail and "does not match" in result.detail
        assert result.sample == "The capital of France is Berlin. "  # shown on /readyz


def test_wrong_answer_passes_when_the_check_is_off(fault_server: FaultServer) -> None:
    fault_server.mode = "wrong_answer"
    result = _probe(f"http://127.0.0.1:{fault_server.server_port}", question=UNCHECKED)
    assert result.ok and result.answer_check == "off: random weights", result
    fault_server.mode = "degenerate"  # the floor stays: a loop fails without an answer check too
    result = _probe(f"http://127.0.0.1:{fault_server.server_port}", question=UNCHECKED)
    assert result.reason == "degenerate_output", result


def test_question_is_asked_as_configured(fault_server: FaultServer) -> None:
    # The fake answers by topic: another prompt gets another answer, so the check sees what was asked.
    colors = ProbeQuestion(
        prompt="Name three primary colors.", max_tokens=16, expect=compile_expect("(?i)red")
    )
    assert _probe(f"http://127.0.0.1:{fault_server.server_port}", question=colors).ok
    paris_for_colors = ProbeQuestion(prompt=colors.prompt, max_tokens=16, expect=PARIS.expect)
    result = _probe(f"http://127.0.0.1:{fault_server.server_port}", question=paris_for_colors)
    assert result.reason == "wrong_answer" and "primary colors" in result.detail


def test_api_key_is_sent(fault_server: FaultServer) -> None:
    fault_server.mode, fault_server.api_key = "unauthorized", "s3cret"
    result = _probe(f"http://127.0.0.1:{fault_server.server_port}", api_key="s3cret")
    assert result.ok, result
    wrong = _probe(f"http://127.0.0.1:{fault_server.server_port}", api_key="nope")
    assert wrong.reason == "unauthorized" and "HEALTHCHECK_API_KEY" in wrong.detail


def test_nothing_listening_is_engine_unreachable() -> None:
    result = _probe(f"http://127.0.0.1:{free_port()}")
    assert result.reason == "engine_unreachable" and not result.engine_reachable


def test_first_listed_model_when_none_configured(fault_server: FaultServer) -> None:
    result = _probe(f"http://127.0.0.1:{fault_server.server_port}", model=None)
    assert result.ok and result.model == MODEL


def test_sidecar_survives_every_fault(sidecar_factory, fault_server: FaultServer) -> None:
    """One sidecar process through all faults in turn: the right reason in /readyz and /metrics each
    time, ready again after each, bounded memory, same process at the end."""
    url = f"http://127.0.0.1:{fault_server.server_port}"
    sc = sidecar_factory(
        url,
        probe_interval_s=0.3,
        probe_timeout_s=1.0,
        request_timeout_s=0.8,
        failure_threshold=1,
        metrics_interval_s=0.3,
        max_response_bytes=CAP,
        metrics_max_bytes=CAP,
        model=MODEL,
        probe_expect=r"(?i)\bparis\b",  # no plan file here: the flag turns the answer check on
    )
    sc.wait_ready(True, 15)
    proc = psutil.Process(sc.proc.pid)
    for mode, reason in EXPECTED.items():
        if mode == "ok":
            continue
        fault_server.mode = mode
        wait_for(
            lambda r=reason: sc.readyz()[1]["reason"] == r and not sc.readyz()[1]["ready"],
            15,
            what=f"{mode} -> {reason}",
        )
        m = sc.metrics()
        assert m[f'healthcheck_last_probe_reason{{reason="{reason}"}}'] == 1
        assert m[f'healthcheck_probes_total{{reason="{reason}"}}'] >= 1
        assert m["healthcheck_ready"] == 0
        fault_server.mode = "ok"
        sc.wait_ready(True, 15)
    assert sc.proc.poll() is None and sc.client.get("/livez").status_code == 200
    rss = proc.memory_info().rss
    assert rss < 200 * 2**20, f"sidecar RSS {rss / 2**20:.0f} MiB after the huge-body faults"


def _connections_to(pid: int, port: int) -> int:
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.raddr and c.raddr.port == port and c.status != psutil.CONN_TIME_WAIT)


def test_no_probe_pile_up_on_a_hung_server(sidecar_factory, fault_server: FaultServer) -> None:
    """A server that accepts and never answers: the sidecar holds one probe connection (plus one for
    reading /metrics), and starts probes no faster than its deadline lets them end, not one per
    interval."""
    url = f"http://127.0.0.1:{fault_server.server_port}"
    sc = sidecar_factory(
        url,
        probe_interval_s=0.2,
        probe_timeout_s=1.0,
        request_timeout_s=5.0,
        metrics_interval_s=0.2,
        failure_threshold=1,
    )
    sc.wait_ready(True, 15)
    fault_server.mode = "hang"
    fault_server.reset_counts()
    start, peak = time.monotonic(), 0
    while time.monotonic() - start < 6.0:
        peak = max(peak, _connections_to(sc.proc.pid, fault_server.server_port))
        assert sc.metrics()["healthcheck_probes_in_flight"] <= 1
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    health_requests = fault_server.requests.get("/health", 0)
    fault_server.mode = "ok"
    assert peak <= 2, f"{peak} connections from the sidecar into the hung server"
    # One interval per probe would be ~30 in 6 s; one deadline per probe is ~6.
    assert 3 <= health_requests <= elapsed / 1.0 + 2, health_requests
    sc.wait_ready(True, 15)


def test_hung_server_does_not_hang_readyz_or_metrics(sidecar_factory, fault_server: FaultServer) -> None:
    fault_server.mode = "hang"
    sc = sidecar_factory(
        f"http://127.0.0.1:{fault_server.server_port}",
        probe_interval_s=0.5,
        probe_timeout_s=3.0,
        metrics_interval_s=0.5,
    )
    for _ in range(10):  # every answer comes from memory, not from the hung vLLM
        start = time.monotonic()
        assert sc.client.get("/readyz").status_code == 503
        assert sc.client.get("/metrics").status_code == 200
        assert time.monotonic() - start < 0.5
        time.sleep(0.2)
    body = sc.wait_ready(False, 10)
    assert body["reason"] in ("not_probed_yet", "timeout")
    wait_for(lambda: sc.readyz()[1]["reason"] == "timeout", 10, what="timeout reason")
    assert sc.metrics()["healthcheck_probes_in_flight"] <= 1


def test_check_subcommand_exit_codes(sidecar_factory, fault_server: FaultServer) -> None:
    import subprocess
    import sys

    from tests.healthcheck.conftest import REPO

    sc = sidecar_factory(
        f"http://127.0.0.1:{fault_server.server_port}", probe_interval_s=0.3, failure_threshold=1
    )
    sc.wait_ready(True, 15)

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "healthcheck", "check", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )

    ok = check("--url", sc.url)
    assert ok.returncode == 0, ok.stderr
    fault_server.mode = "degenerate"
    sc.wait_ready(False, 10)
    bad = check("--url", sc.url + "/readyz")
    assert bad.returncode == 1 and "degenerate_output" in bad.stderr
    down = check("--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert down.returncode == 1 and "cannot reach" in down.stderr


def test_fault_server_is_a_real_http_server() -> None:
    # Guard for the fake itself: what the tests above rely on it doing.
    import httpx

    server = FaultServer(free_port(), "ok").start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert httpx.get(base + "/health").status_code == 200
        assert "vllm:spec_decode_num_drafts_total" in httpx.get(base + "/metrics").text
    finally:
        server.stop()

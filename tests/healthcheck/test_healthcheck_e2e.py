"""The sidecar against a real vLLM (CPU build, tiny generated Qwen3), started by the launcher.

One vLLM start for the module (a start costs about a minute on this machine); the tests run in file
order: ready after start -> frozen (SIGSTOP) and thawed (SIGCONT) -> killed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest

from tests.healthcheck.conftest import Sidecar, free_port, wait_for
from tests.healthcheck.vllm_proc import VllmProcess, launch_vllm
from tests.support.require import need_vllm

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INTERVAL = 2.0
DEADLINE = 4.0
THRESHOLD = 2


@pytest.fixture(scope="module")
def stack(tiny_models, tmp_path_factory) -> Iterator[tuple[Sidecar, dict]]:
    need_vllm()
    work = tmp_path_factory.mktemp("hc-e2e")
    port = free_port()
    plan_file = work / f"vllm-{port}" / "plan.json"  # where launch_vllm's launcher writes it
    sidecar = Sidecar(
        f"http://127.0.0.1:{port}",
        work,
        plan_file=plan_file,
        probe_interval_s=INTERVAL,
        probe_timeout_s=DEADLINE,
        request_timeout_s=3.0,
        failure_threshold=THRESHOLD,
        metrics_interval_s=1.0,
    )
    state: dict = {"before": None}
    try:
        # Before vLLM exists: not ready, and the body says why.
        state["before"] = wait_for(lambda: sidecar.readyz()[1].get("last_probe") and sidecar.readyz(), 15)
        with launch_vllm(tiny_models("qwen3"), port, work) as vllm:
            assert vllm.plan_file == plan_file
            state["vllm"] = vllm
            yield sidecar, state
    finally:
        sidecar.stop()


def _connections(pid: int, port: int) -> int:
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.raddr and c.raddr.port == port and c.status != psutil.CONN_TIME_WAIT)


def test_ready_after_start(stack) -> None:
    sidecar, state = stack
    status, before = state["before"]
    assert status == 503 and before["reason"] == "engine_unreachable", before

    body = sidecar.wait_ready(True, 120)
    assert body["reason"] == "ok" and body["last_probe"]["model"] == "tiny-qwen3"  # from plan.json
    m = sidecar.metrics()
    assert m["healthcheck_ready"] == 1 and m["healthcheck_engine_reachable"] == 1
    assert m["healthcheck_probe_ttft_seconds_count"] >= 1
    wait_for(lambda: "healthcheck_vllm_kv_cache_usage_ratio" in sidecar.metrics(), 10, what="vLLM gauges")
    m = sidecar.metrics()
    assert (
        0 <= m["healthcheck_vllm_kv_cache_usage_ratio"] <= 1 and m["healthcheck_vllm_requests_waiting"] >= 0
    )
    info = [k for k in m if k.startswith("healthcheck_plan_info{")]
    assert len(info) == 1 and 'profile="cpu-tiny"' in info[0] and 'vllm_version="0.32.0"' in info[0], info
    assert not any(k.startswith("healthcheck_gpu_") for k in m)  # no GPU here: absent, not zero


def test_sigstop_not_ready_without_pile_up_then_sigcont_ready(stack) -> None:
    sidecar, state = stack
    vllm: VllmProcess = state["vllm"]
    sidecar.wait_ready(True, 60)
    probes_before = sum(v for k, v in sidecar.metrics().items() if k.startswith("healthcheck_probes_total"))
    vllm.freeze()
    frozen_at = time.monotonic()
    try:
        peak, became_not_ready = 0, None
        while time.monotonic() - frozen_at < 16.0:
            peak = max(peak, _connections(sidecar.proc.pid, vllm.port))
            t = time.monotonic()
            status, body = sidecar.readyz()
            assert time.monotonic() - t < 1.0, "/readyz must answer from memory while vLLM is frozen"
            if status == 503 and became_not_ready is None:
                became_not_ready = time.monotonic() - frozen_at
                assert body["reason"] == "timeout", body
            assert sidecar.metrics()["healthcheck_probes_in_flight"] <= 1
            time.sleep(0.2)
        frozen_for = time.monotonic() - frozen_at
        m = sidecar.metrics()
    finally:
        vllm.thaw()
    print(f"SIGSTOP: not ready after {became_not_ready} s; peak {peak} sidecar connections into vLLM")
    assert became_not_ready is not None and became_not_ready <= THRESHOLD * DEADLINE + INTERVAL + 1.0
    assert peak <= 2, f"{peak} connections from the sidecar into the frozen vLLM (probe + metrics read)"
    probes = sum(v for k, v in m.items() if k.startswith("healthcheck_probes_total")) - probes_before
    # Probing every interval regardless would be 8 in 16 s; one deadline per probe is at most ~5.
    assert probes <= frozen_for / DEADLINE + 1, probes
    assert m['healthcheck_probes_total{reason="timeout"}'] >= THRESHOLD
    assert m["healthcheck_ready"] == 0

    body = sidecar.wait_ready(True, 60)
    assert body["reason"] == "ok"


def test_killed_not_ready_within_two_intervals_and_metrics_say_why(stack) -> None:
    sidecar, state = stack
    vllm: VllmProcess = state["vllm"]
    sidecar.wait_ready(True, 60)
    vllm.kill()
    killed_at = time.monotonic()
    body = sidecar.wait_ready(False, 3 * INTERVAL)
    took = time.monotonic() - killed_at
    print(f"SIGKILL: not ready after {took:.2f} s (interval {INTERVAL} s)")
    assert took <= 2 * INTERVAL + 0.5  # 0.5 s: the test's polling and the probe's own duration
    assert body["reason"] in ("engine_unreachable", "connection_lost"), body
    assert "cannot connect" in body["detail"] or body["reason"] == "connection_lost"
    m = sidecar.metrics()
    assert m["healthcheck_ready"] == 0 and m["healthcheck_engine_reachable"] == 0
    assert m["healthcheck_consecutive_failures"] >= THRESHOLD
    assert m[f'healthcheck_last_probe_reason{{reason="{body["reason"]}"}}'] == 1
    assert m['healthcheck_probes_total{reason="engine_unreachable"}'] >= 1
    wait_for(lambda: sidecar.metrics()["healthcheck_vllm_metrics_up"] == 0, 5, what="vllm_metrics_up 0")
    assert "healthcheck_vllm_kv_cache_usage_ratio" not in sidecar.metrics()  # no stale gauges

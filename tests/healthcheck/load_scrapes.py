"""Load: scrape the sidecar's /metrics at a fixed rate (default 20/s for 60 s) while it probes, and
report scrape latency percentiles and the sidecar's peak RSS.

    python tests/healthcheck/load_scrapes.py                       # against the FAKE vLLM (fault_server)
    python tests/healthcheck/load_scrapes.py --vllm-url http://127.0.0.1:18301   # against a real vLLM

The sidecar runs as its own process (``python -m healthcheck``), probing every --probe-interval-s
seconds and reading vLLM's /metrics every second, so the scrapes race real probe work. Scrapes are
started on schedule whether or not earlier ones finished (open loop), so a slow sidecar shows up as
latency, not as a lower request rate. Peak RSS is the kernel's high-water mark (VmHWM)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _free_port() -> int:
    from tests.healthcheck.conftest import free_port

    return free_port()


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _scrape_load(url: str, rate: float, duration: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
    async with httpx.AsyncClient(timeout=10.0, limits=limits, trust_env=False) as client:

        async def one() -> None:
            nonlocal errors
            start = time.perf_counter()
            try:
                r = await client.get(url)
                if r.status_code != 200 or b"healthcheck_ready" not in r.content:
                    errors += 1
                    return
            except httpx.HTTPError:
                errors += 1
                return
            latencies.append(time.perf_counter() - start)

        tasks = []
        t0 = time.perf_counter()
        n = int(rate * duration)
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies, errors


def run(
    vllm_url: str | None = None, rate: float = 20.0, duration: float = 60.0, probe_interval_s: float = 1.0
) -> dict[str, Any]:
    fake = None
    if vllm_url is None:
        # Its own process: in this one, its threads would compete with the load generator for the GIL
        # and show up as scrape latency.
        fake_port = _free_port()
        fake = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("fault_server.py")), "--port", str(fake_port)],
            stdout=subprocess.DEVNULL,
        )
        vllm_url = f"http://127.0.0.1:{fake_port}"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHCHECK_")}
    env.update(
        {
            "HEALTHCHECK_VLLM_URL": vllm_url,
            "HEALTHCHECK_PORT": str(port),
            "HEALTHCHECK_HOST": "127.0.0.1",
            "HEALTHCHECK_PROBE_INTERVAL_S": str(probe_interval_s),
            "HEALTHCHECK_METRICS_INTERVAL_S": "1",
            "HEALTHCHECK_PLAN_FILE": "",
            "PYTHONPATH": str(REPO),
        }
    )
    log = tempfile.NamedTemporaryFile(prefix="sidecar-load-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthcheck"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"sidecar not ready; log in {log.name}")
            time.sleep(0.2)
        rss_before = _peak_rss_bytes(proc.pid)
        metrics_before = httpx.get(base + "/metrics", trust_env=False).text
        latencies, errors = asyncio.run(_scrape_load(base + "/metrics", rate, duration))
        readyz = httpx.get(base + "/readyz", trust_env=False).json()
        metrics_after = httpx.get(base + "/metrics", trust_env=False).text
        peak_rss = _peak_rss_bytes(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
        if fake is not None:
            fake.terminate()
            fake.wait(10)

    def probes(text: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("healthcheck_probes_total{")
        )

    return {
        "vllm": "fake (tests/healthcheck/fault_server.py)" if fake else vllm_url,
        "rate_per_s": rate,
        "duration_s": duration,
        "scrapes_ok": len(latencies),
        "scrape_errors": errors,
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2) if latencies else None,
        "max_ms": round(max(latencies) * 1000, 2) if latencies else None,
        "probes_during_run": probes(metrics_after) - probes(metrics_before),
        "ready_at_end": readyz["ready"],
        "peak_rss_mib_before_load": round(rss_before / 2**20, 1),
        "peak_rss_mib": round(peak_rss / 2**20, 1),
        "sidecar_log": log.name,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vllm-url", default=None, help="A running vLLM; default: start the fake one.")
    parser.add_argument("--rate", type=float, default=20.0, help="Scrapes per second.")
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of load.")
    parser.add_argument("--probe-interval-s", type=float, default=1.0)
    args = parser.parse_args()
    result = run(args.vllm_url, args.rate, args.duration, args.probe_interval_s)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""The metrics loop: every ``metrics_interval_s``, re-read plan.json, vLLM's /metrics (with the API key
when one is set) and NVML, and put the readings where the sidecar's /metrics collector finds them.

A reading that fails clears its series rather than leaving a stale value: a stale queue depth or KV
usage would mislead more than no value."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from healthcheck.bounded_http import ResponseTooLarge, read_capped
from healthcheck.gpu import NvmlTelemetry
from healthcheck.metrics import SidecarMetrics
from healthcheck.plan_info import PlanFile
from healthcheck.question import ProbeQuestion
from healthcheck.vllm_metrics import MetricsParseError, SpecDecodeWindow, parse_vllm_metrics

log = logging.getLogger(__name__)

NVML_TIMEOUT_S = 5.0


class MetricsLoop:
    def __init__(
        self,
        *,
        vllm_url: str,
        metrics: SidecarMetrics,
        plan: PlanFile,
        question: Callable[[], ProbeQuestion],
        api_key: str | None,
        interval_s: float,
        request_timeout_s: float,
        max_bytes: int,
        spec_window_s: float,
        gpu: NvmlTelemetry | None,
    ) -> None:
        self.url = vllm_url.rstrip("/") + "/metrics"
        self.metrics = metrics
        self.plan = plan
        self.question = question
        self.interval_s = interval_s
        self.request_timeout_s = request_timeout_s
        self.max_bytes = max_bytes
        self.window = SpecDecodeWindow(spec_window_s)
        self.gpu = gpu
        self._gpu_busy = False
        self._metrics_up: bool | None = None  # the latest read of vLLM's /metrics (None: none yet)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(request_timeout_s),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
        if self.gpu is not None:
            self.gpu.close()

    async def once(self) -> None:
        self.plan.refresh()
        labels, question = self.plan.labels, self.question()
        self.metrics.readings.plan = (
            None if labels is None else {**labels, "answer_check": question.answer_check}
        )
        self.metrics.answer_check_enabled.set(0 if question.expect is None else 1)
        await self._read_vllm_metrics()
        await self._read_gpu()

    async def run(self) -> None:
        while True:
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading vLLM metrics failed")
            await asyncio.sleep(self.interval_s)

    async def _fetch(self) -> bytes:
        async with self._client.stream("GET", self.url) as response:
            if response.status_code != 200:
                raise httpx.HTTPStatusError(
                    f"HTTP {response.status_code}", request=response.request, response=response
                )
            return await read_capped(response, self.max_bytes)

    async def _read_vllm_metrics(self) -> None:
        readings, m = self.metrics.readings, self.metrics
        try:
            body = await asyncio.wait_for(self._fetch(), self.request_timeout_s)
            # Parsing a large body is CPU work; off the event loop it cannot delay a scrape of ours.
            snapshot = await asyncio.to_thread(parse_vllm_metrics, body.decode("utf-8", errors="replace"))
        except (httpx.HTTPError, asyncio.TimeoutError, ResponseTooLarge, MetricsParseError) as exc:
            # Once per outage at WARNING: a server without vLLM's /metrics (Ray Serve LLM exports through
            # Ray's metrics agent, not on its app port) leaves the sidecar up with these series absent.
            log.log(
                logging.WARNING if self._metrics_up is not False else logging.DEBUG,
                "vLLM /metrics unavailable at %s: %s: %s; healthcheck_vllm_metrics_up 0, the vLLM "
                "gauges and spec-decode series absent; readiness does not depend on it",
                self.url, type(exc).__name__, exc,
            )  # fmt: skip
            self._metrics_up = False
            m.vllm_metrics_up.set(0)
            readings.vllm = None
            return
        self._metrics_up = True
        m.vllm_metrics_up.set(1)
        readings.vllm = snapshot
        if snapshot.spec is None:
            self.window.clear()
            readings.spec = None
        else:
            self.window.add(time.monotonic(), snapshot.spec)
            readings.spec = self.window.derived()

    async def _read_gpu(self) -> None:
        if self.gpu is None or not self.gpu.available or self._gpu_busy:
            return  # _gpu_busy: an NVML call stuck in a wedged driver holds its thread; never add more
        self._gpu_busy = True
        task = asyncio.ensure_future(asyncio.to_thread(self.gpu.sample))

        def done(_: Any) -> None:
            self._gpu_busy = False

        task.add_done_callback(done)
        try:
            self.metrics.readings.gpus = await asyncio.wait_for(asyncio.shield(task), NVML_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("NVML did not answer within %g s; GPU telemetry is stale", NVML_TIMEOUT_S)
            self.metrics.readings.gpus = []
        except Exception as exc:
            log.warning("NVML query failed: %s", exc)
            self.metrics.readings.gpus = []

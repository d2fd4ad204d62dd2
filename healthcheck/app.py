"""The sidecar: two background loops (readiness probes; vLLM /metrics + GPU + plan readings) and a
plain ASGI app serving /livez, /readyz and /metrics from their latest results.

Requests never wait on vLLM: every endpoint answers from state in memory, so a hung vLLM cannot hang
Docker's health check or a Prometheus scrape. Each loop awaits its own work before starting the next
round, which is what makes "at most one probe in flight" true by construction."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
from prometheus_client import make_asgi_app

from healthcheck.autoheal import RESTART, WAIT_BACKOFF, WAIT_START_PERIOD, AutohealPolicy, DockerRestarter
from healthcheck.bounded_http import ResponseTooLarge, read_capped
from healthcheck.config import Settings
from healthcheck.gpu import NvmlTelemetry
from healthcheck.metrics import SidecarMetrics
from healthcheck.plan_info import PlanFile
from healthcheck.probe import REASONS, Prober, ProbeResult
from healthcheck.question import ProbeQuestion, resolve_question
from healthcheck.readiness import Readiness
from healthcheck.vllm_metrics import MetricsParseError, SpecDecodeWindow, parse_vllm_metrics

log = logging.getLogger("healthcheck")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Sidecar:
    def __init__(
        self,
        settings: Settings,
        *,
        api_key: str | None = None,
        gpu: NvmlTelemetry | None = None,
        restarter: DockerRestarter | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = SidecarMetrics()
        self.readiness = Readiness(settings.failure_threshold, settings.success_threshold)
        self.plan = PlanFile(settings.plan_file)
        self.window = SpecDecodeWindow(settings.spec_window_s)
        self.prober = Prober(
            settings.vllm_url,
            expected_model=self.expected_model,
            api_key=api_key,
            deadline_s=settings.probe_timeout_s,
            request_timeout_s=settings.request_timeout_s,
            max_response_bytes=settings.max_response_bytes,
            question=self.question,
            temperature=settings.probe_temperature,
        )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._metrics_client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(settings.request_timeout_s),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            trust_env=False,
        )
        self.gpu = gpu if gpu is not None else (NvmlTelemetry() if settings.gpu else None)
        self._gpu_busy = False
        self.autoheal: AutohealPolicy | None = None
        self.restarter = restarter
        if settings.autoheal:
            self.autoheal = AutohealPolicy(
                failures_to_restart=settings.autoheal_failures,
                backoff_s=settings.autoheal_backoff_s,
                backoff_max_s=settings.autoheal_backoff_max_s,
                start_period_s=settings.autoheal_start_period_s,
                started_at=time.monotonic(),
            )
            if self.restarter is None:
                assert settings.autoheal_container is not None  # Settings validated it
                self.restarter = DockerRestarter(
                    settings.autoheal_container,
                    base_url=settings.docker_url,
                    stop_timeout_s=settings.autoheal_stop_timeout_s,
                    api_timeout_s=settings.autoheal_stop_timeout_s + 60,
                )
            self.metrics.autoheal_backoff.set(settings.autoheal_backoff_s)
        self.metrics.autoheal_enabled.set(1 if settings.autoheal else 0)
        self._restart_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def expected_model(self) -> str | None:
        return self.settings.model or self.plan.served_model_name

    def question(self) -> ProbeQuestion:
        """What the next probe asks and requires: flags over the plan's readiness block over defaults."""
        s = self.settings
        return resolve_question(
            prompt=s.probe_prompt,
            max_tokens=s.probe_max_tokens,
            extra_body=s.extra_body,
            expect=s.probe_expect,
            expect_off=s.probe_expect_off,
            plan_block=self.plan.readiness,
        )

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.plan.refresh()
        self._tasks = [
            asyncio.create_task(self._probe_loop(), name="healthcheck-probe"),
            asyncio.create_task(self._metrics_loop(), name="healthcheck-metrics"),
        ]

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._restart_task] if self._restart_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.prober.aclose()
        await self._metrics_client.aclose()
        if self.gpu is not None:
            self.gpu.close()
        if self.restarter is not None:
            self.restarter.close()

    def alive(self) -> bool:
        """False when a loop died: then the sidecar reports stale state and should be restarted."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    # --- readiness probes ----------------------------------------------------------------------
    async def probe_once(self) -> ProbeResult:
        m = self.metrics
        m.probes_in_flight.inc()
        try:
            result = await self.prober.run()
        finally:
            m.probes_in_flight.dec()
        changed = self.readiness.record(result)
        m.probes.labels(result.reason).inc()
        for reason in REASONS:
            m.last_reason.labels(reason).set(1 if reason == result.reason else 0)
        m.probe_duration.observe(result.total_s)
        if result.ttft_s is not None:
            m.probe_ttft.observe(result.ttft_s)
        m.last_probe_time.set(result.finished_at)
        m.ready.set(1 if self.readiness.ready else 0)
        m.engine_reachable.set(1 if result.engine_reachable else 0)
        m.consecutive_failures.set(self.readiness.consecutive_failures)
        if changed:
            if self.readiness.ready:
                log.info(
                    "READY: %s answers (model %s; answer check %s): %r",
                    self.settings.vllm_url,
                    result.model,
                    result.answer_check,
                    result.sample[:80],
                )
            else:
                log.warning("NOT READY: %s: %s", result.reason, result.detail)
        elif not result.ok:
            log.info(
                "probe failed (%d in a row): %s: %s",
                self.readiness.consecutive_failures,
                result.reason,
                result.detail,
            )
        if self.autoheal is not None:
            self._autoheal_step(result)
        return result

    async def _probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.probe_interval_s
        next_start = loop.time()
        while True:
            await asyncio.sleep(max(0.0, next_start - loop.time()))
            started = loop.time()
            try:
                await self.probe_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in bookkeeping must not end readiness probing for good
                log.exception("probe bookkeeping failed")
            # Fixed rate while probes are fast; after one that overran the interval (a hung server held
            # it until the deadline), the next starts at once: never a burst of catch-up probes.
            next_start = max(started + interval, loop.time())

    # --- autoheal ------------------------------------------------------------------------------
    def _autoheal_step(self, result: ProbeResult) -> None:
        assert self.autoheal is not None
        now = time.monotonic()
        decision = self.autoheal.observe(result.ok, now)
        if decision is None:
            return
        m = self.metrics
        if self._restart_task is not None and not self._restart_task.done():
            m.autoheal_held.labels("in_progress").inc()
            return
        if decision == WAIT_BACKOFF:
            m.autoheal_held.labels("backoff").inc()
            log.info(
                "autoheal: %d failures in a row, restart held by back-off for %.0f s more",
                self.autoheal.failures,
                self.autoheal.seconds_until_allowed(now),
            )
            return
        if decision == WAIT_START_PERIOD:
            m.autoheal_held.labels("start_period").inc()
            return
        assert decision == RESTART
        self.autoheal.restarted(now)
        m.autoheal_backoff.set(self.autoheal.current_backoff_s)
        log.warning(
            "autoheal: restarting container %s after %d failed probes (last: %s: %s)",
            self.settings.autoheal_container,
            self.settings.autoheal_failures,
            result.reason,
            result.detail,
        )
        self._restart_task = asyncio.create_task(self._restart(), name="healthcheck-autoheal")

    async def _restart(self) -> None:
        assert self.restarter is not None
        try:
            await asyncio.wait_for(asyncio.to_thread(self.restarter.restart), self.restarter.api_timeout_s)
        except Exception as exc:
            self.metrics.autoheal_restarts.labels("error").inc()
            log.error(
                "autoheal: restart of %s failed: %s: %s", self.restarter.container, type(exc).__name__, exc
            )
        else:
            self.metrics.autoheal_restarts.labels("ok").inc()
            log.warning("autoheal: container %s restarted", self.restarter.container)

    # --- vLLM /metrics, GPU, plan --------------------------------------------------------------
    async def metrics_once(self) -> None:
        self.plan.refresh()
        labels, question = self.plan.labels, self.question()
        check = question.answer_check
        self.metrics.readings.plan = None if labels is None else {**labels, "answer_check": check}
        self.metrics.answer_check_enabled.set(0 if question.expect is None else 1)
        await self._read_vllm_metrics()
        await self._read_gpu()

    async def _read_vllm_metrics(self) -> None:
        url = self.settings.vllm_url.rstrip("/") + "/metrics"
        readings, m = self.metrics.readings, self.metrics
        try:

            async def fetch() -> bytes:
                async with self._metrics_client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise httpx.HTTPStatusError(
                            f"HTTP {response.status_code}", request=response.request, response=response
                        )
                    return await read_capped(response, self.settings.metrics_max_bytes)

            body = await asyncio.wait_for(fetch(), self.settings.request_timeout_s)
            # Parsing a large body is CPU work; off the event loop it cannot delay a scrape of ours.
            snapshot = await asyncio.to_thread(parse_vllm_metrics, body.decode("utf-8", errors="replace"))
        except (httpx.HTTPError, asyncio.TimeoutError, ResponseTooLarge, MetricsParseError) as exc:
            log.debug("vLLM /metrics unavailable: %s: %s", type(exc).__name__, exc)
            m.vllm_metrics_up.set(0)
            readings.vllm = None  # stale queue depth or KV usage would mislead more than no value
            return
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
            self.metrics.readings.gpus = await asyncio.wait_for(asyncio.shield(task), 5.0)
        except asyncio.TimeoutError:
            log.warning("NVML did not answer within 5 s; GPU telemetry is stale")
            self.metrics.readings.gpus = []
        except Exception as exc:
            log.warning("NVML query failed: %s", exc)
            self.metrics.readings.gpus = []

    async def _metrics_loop(self) -> None:
        while True:
            try:
                await self.metrics_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading vLLM metrics failed")
            await asyncio.sleep(self.settings.metrics_interval_s)


# --- the ASGI app ------------------------------------------------------------------------------
async def _send_json(send: Send, status: int, doc: dict[str, Any], head: bool = False) -> None:
    body = json.dumps(doc, indent=1).encode() + b"\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


def build_app(sidecar: Sidecar) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    metrics_app = make_asgi_app(registry=sidecar.metrics.registry)

    async def lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await sidecar.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await sidecar.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/metrics":
            await metrics_app(scope, receive, send)
            return
        if method not in ("GET", "HEAD"):
            await _send_json(send, 405, {"error": f"{method} not allowed"})
            return
        head = method == "HEAD"
        if path == "/livez":
            alive = sidecar.alive()
            await _send_json(send, 200 if alive else 500, {"alive": alive}, head)
        elif path == "/readyz":
            body = sidecar.readiness.body(answer_check=sidecar.question().answer_check)
            await _send_json(send, 200 if body["ready"] else 503, body, head)
        elif path == "/":
            await _send_json(
                send,
                200,
                {"endpoints": ["/livez", "/readyz", "/metrics"], "vllm_url": sidecar.settings.vllm_url},
                head,
            )
        else:
            await _send_json(send, 404, {"error": f"no such endpoint: {path}"}, head)

    return app

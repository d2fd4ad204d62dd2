"""The sidecar: a probe loop (healthcheck.probe_loop) feeding sticky readiness and its metrics, a
metrics loop (healthcheck.metrics_loop: vLLM /metrics, GPU, plan), and a plain ASGI app serving /livez,
/readyz and /metrics from their latest results. Restarting vLLM is not the sidecar's job: the launcher
in the vLLM container does it (healthcheck.watchdog), so no container needs the Docker socket.

Requests never wait on vLLM: every endpoint answers from state in memory, so a hung vLLM cannot hang
Docker's health check or a Prometheus scrape. With an API key, a caller without it gets 401 everywhere
but /livez and /readyz, which give it their bare verdict only (healthcheck.access says why)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import make_asgi_app

from healthcheck.access import OPEN_TO_ANYONE, authorized
from healthcheck.config import Settings
from healthcheck.gpu import NvmlTelemetry
from healthcheck.metrics import SidecarMetrics
from healthcheck.metrics_loop import MetricsLoop
from healthcheck.plan_info import PlanFile
from healthcheck.probe import REASONS, Prober, ProbeResult
from healthcheck.probe_loop import ProbeLoop
from healthcheck.question import ProbeQuestion, resolve_question
from healthcheck.readiness import Readiness
from healthcheck.redact import redact_url

log = logging.getLogger("healthcheck")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Sidecar:
    def __init__(
        self, settings: Settings, *, api_key: str | None = None, gpu: NvmlTelemetry | None = None
    ) -> None:
        self.settings = settings
        self.api_key = api_key  # vLLM's, sent by the loops; and the sidecar's own (healthcheck.access)
        self.shown_url = redact_url(settings.vllm_url)
        self.metrics = SidecarMetrics()
        self.readiness = Readiness(settings.failure_threshold, settings.success_threshold)
        self.plan = PlanFile(settings.plan_file)
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
        self.probe_loop = ProbeLoop(self._probe, self.record, interval_s=settings.probe_interval_s)
        self.metrics_loop = MetricsLoop(
            vllm_url=settings.vllm_url,
            metrics=self.metrics,
            plan=self.plan,
            question=self.question,
            api_key=api_key,
            interval_s=settings.metrics_interval_s,
            request_timeout_s=settings.request_timeout_s,
            max_bytes=settings.metrics_max_bytes,
            spec_window_s=settings.spec_window_s,
            gpu=gpu if gpu is not None else (NvmlTelemetry() if settings.gpu else None),
        )
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
            asyncio.create_task(self.probe_loop.run(), name="healthcheck-probe"),
            asyncio.create_task(self.metrics_loop.run(), name="healthcheck-metrics"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.prober.aclose()
        await self.metrics_loop.aclose()

    def alive(self) -> bool:
        """False when a loop died: then the sidecar reports stale state and should be restarted."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    # --- readiness probes ----------------------------------------------------------------------
    async def _probe(self) -> ProbeResult:
        self.metrics.probes_in_flight.inc()
        try:
            return await self.prober.run()
        finally:
            self.metrics.probes_in_flight.dec()

    async def probe_once(self) -> ProbeResult:
        return await self.probe_loop.once()

    async def metrics_once(self) -> None:
        await self.metrics_loop.once()

    def record(self, result: ProbeResult) -> None:
        """One probe outcome into sticky readiness, the metrics and the log."""
        m = self.metrics
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
                    self.shown_url,
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


# --- the ASGI app ------------------------------------------------------------------------------
async def _send_json(
    send: Send,
    status: int,
    doc: dict[str, Any],
    head: bool = False,
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    body = json.dumps(doc, indent=1).encode() + b"\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *extra_headers,
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
        keyed = authorized(scope.get("headers") or [], sidecar.api_key)
        if not keyed and path not in OPEN_TO_ANYONE:
            await _send_json(
                send,
                401,
                {"error": "unauthorized: send 'Authorization: Bearer <key>' (the stack's API key)"},
                method == "HEAD",
                ((b"www-authenticate", b'Bearer realm="healthcheck"'),),
            )
            return
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
            ready = sidecar.readiness.ready
            # Without the key: the verdict only (a Kubernetes probe reads the status code).
            body = (
                sidecar.readiness.body(answer_check=sidecar.question().answer_check)
                if keyed
                else {"ready": ready}
            )
            await _send_json(send, 200 if ready else 503, body, head)
        elif path == "/":
            await _send_json(
                send,
                200,
                {"endpoints": ["/livez", "/readyz", "/metrics"], "vllm_url": sidecar.shown_url},
                head,
            )
        else:
            await _send_json(send, 404, {"error": f"no such endpoint: {path}"}, head)

    return app

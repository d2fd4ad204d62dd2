"""The sidecar's HTTP server: uvicorn, with deadlines uvicorn lacks.

uvicorn arms no timer until a first response is sent, so a connection that sends half a request line
and then nothing stays open for good, and each one counts against ``limit_concurrency``: 200 of them
made the sidecar answer its own healthcheck with 503 (issue 16). Here every connection must deliver
its request line and headers within ``header_timeout_s`` (again between two requests on a kept-alive
connection), and a declared body within ``body_timeout_s``; a connection that does not is closed.
The connection cap is far above what Docker and Prometheus need, so a few hundred stray connections
cannot starve the healthcheck while the deadlines clear them.

The deadlines hook uvicorn's httptools protocol (``on_headers_complete``, ``on_message_complete``,
``on_response_complete``): uvicorn's own extension point is the protocol class (``Config.http``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from healthcheck.config import Settings

log = logging.getLogger(__name__)


class DeadlineProtocol(HttpToolsProtocol):
    header_timeout_s: float = 5.0
    body_timeout_s: float = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for = ""  # "headers" | "body" | "" (the request is in; the app answers)

    def _arm(self, waiting_for: str, seconds: float, what: str) -> None:
        self._disarm()
        self._waiting_for = waiting_for
        self._deadline = self.loop.call_later(seconds, self._expire, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._waiting_for = None, ""

    def _expire(self, what: str) -> None:
        self._deadline, self._waiting_for = None, ""
        if not self.transport.is_closing():
            log.debug("closing a connection from %s: %s", self.client, what)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(
            "headers", self.header_timeout_s, f"no complete request headers in {self.header_timeout_s:g} s"
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()
        headers = dict(self.headers or [])
        declared = headers.get(b"content-length", b"0").strip()
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower() or (
            declared.isdigit() and int(declared) > 0
        ):
            self._arm("body", self.body_timeout_s, f"request body not complete in {self.body_timeout_s:g} s")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._waiting_for == "body":  # a body that ends after the response keeps the idle deadline
            self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._arm("headers", self.header_timeout_s, f"no next request in {self.header_timeout_s:g} s")


def protocol_for(settings: Settings) -> type[DeadlineProtocol]:
    return type(
        "SidecarProtocol",
        (DeadlineProtocol,),
        {"header_timeout_s": settings.header_timeout_s, "body_timeout_s": settings.body_timeout_s},
    )


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol_for(settings),
        lifespan="on",
        log_level=settings.log_level.lower(),
        access_log=False,  # Docker and Prometheus poll it every few seconds
        # Bounded: a flood gets 503s instead of unbounded memory; half-open connections count here, so
        # the cap is far above real use and the deadlines above clear them.
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=int(max(1, settings.header_timeout_s)),
    )

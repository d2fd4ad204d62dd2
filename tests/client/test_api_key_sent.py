"""Whenever a key is set (flag or $VLLM_API_KEY/$OPENAI_API_KEY), the smoke suite and the bench send it
on every request: the OpenAI client's calls, the raw /metrics and /tokenize calls, the bench's streams.
A real HTTP server on loopback records the Authorization header of each request (~1 s)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from serve.bench.client import chat_body, scrape_counters, stream_chat
from serve.client.endpoint import Endpoint
from serve.smoke.checks import SmokeOptions, build_context, count_tokens, scrape_metrics

MODELS = {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "vllm", "max_model_len": 64}]}
STREAM = (
    'data: {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}],'
    ' "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}\n\n'
    "data: [DONE]\n\n"
)


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, body: str, kind: str) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(
                    "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0.0\n", "text/plain"
                )
            else:
                self._send(json.dumps(MODELS), "application/json")

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/tokenize":
                self._send(json.dumps({"count": 3}), "application/json")
            else:
                self._send(STREAM, "text/event-stream")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_smoke_sends_the_key_everywhere(recording_server) -> None:
    url, seen = recording_server
    ctx = build_context(url + "/v1", api_key="sk-smoke", options=SmokeOptions(request_timeout_s=5))
    try:
        assert scrape_metrics(ctx) == {"vllm:num_requests_running": 0.0}
        assert count_tokens(ctx, "a b c") == 3
    finally:
        ctx.close()
    assert [path for path, _ in seen] == ["/v1/models", "/metrics", "/tokenize"]
    assert {auth for _, auth in seen} == {"Bearer sk-smoke"}


def test_bench_sends_the_key_and_none_without_one(recording_server) -> None:
    url, seen = recording_server

    async def go(key: str | None) -> None:
        ep = Endpoint(url, "m", key)
        async with httpx.AsyncClient() as client:
            await stream_chat(client, ep, chat_body("m", "hi", 1, ignore_eos=False, temperature=None))
            await scrape_counters(client, ep)

    asyncio.run(go("sk-bench"))
    asyncio.run(go(None))
    assert seen == [
        ("/v1/chat/completions", "Bearer sk-bench"),
        ("/metrics", "Bearer sk-bench"),
        ("/v1/chat/completions", None),
        ("/metrics", None),
    ]

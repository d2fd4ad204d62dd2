"""FAKE vLLM: a fault injector for the sidecar's tests. NOT vLLM.

A small real HTTP server (standard library, one thread per connection) that speaks just enough of
vLLM's OpenAI API (/health, /v1/models, streamed /v1/chat/completions, /metrics in vLLM's names) to be
probed, and that misbehaves on demand: degenerate text, a fluent wrong answer, malformed JSON, huge
bodies, hangs, slow drips, error statuses. Its "model" knows one fact: asked about France, it answers
Paris (or, in mode wrong_answer, Berlin); anything else gets the primary colors. The mode can change while it runs (``server.mode = "hang"``), and it counts requests in
flight so tests can prove the sidecar never piles probes onto a stuck server.

Run by hand: ``python tests/healthcheck/fault_server.py --port 18310 --mode degenerate``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "fake-model"
GOOD_TEXT = "Red, yellow and blue are the three primary colors of paint."
CAPITAL_TEXT = "The capital of France is Paris."
WRONG_CAPITAL_TEXT = "The capital of France is Berlin."  # fluent, not degenerate, wrong
MODES = (
    "ok",
    "degenerate",  # the TurboQuant+MTP failure: 200 everywhere, the text loops
    "wrong_answer",  # fluent text, wrong fact: what only an answer check can catch
    "empty",  # a completion with no text at all
    "health_500",
    "unauthorized",  # wants "Authorization: Bearer <api_key>" on /v1/*
    "wrong_model",
    "malformed_models",  # /v1/models is not JSON
    "malformed_stream",  # an event that is not JSON
    "no_done",  # the stream stops without [DONE]
    "error_event",  # vLLM's in-stream error object
    "huge_models",  # /v1/models body without end (no Content-Length)
    "huge_declared",  # Content-Length of 1 GiB
    "huge_stream",  # a completion that never stops streaming
    "hang",  # accepts, never answers
    "slow_drip",  # headers, then one byte every 0.5 s forever
    "down_chat",  # /health and /v1/models fine, /v1/chat/completions 500
    "echo_auth",  # /v1/chat/completions 500 with an error that echoes the request's Authorization header
)
# Rates per second of the fake spec-decode counters: n=3 MTP with per-position acceptance
# 0.85 / 0.63 / 0.44 (the figures users report for Qwen3.6 on an RTX 5090).
SPEC_RATES = {"drafts": 100.0, "draft_tokens": 300.0, "pos": (85.0, 63.0, 44.0)}


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, mode: str = "ok", api_key: str | None = None, spec: bool = True) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.mode = mode
        self.api_key = api_key
        self.spec = spec
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.unauthorized_requests = 0  # requests refused in mode "unauthorized" (a missing or wrong key)
        self._thread: threading.Thread | None = None

    # --- bookkeeping used by the tests -------------------------------------------------------------
    def enter(self, path: str) -> None:
        with self._lock:
            self.requests[path] = self.requests.get(path, 0) + 1
            self.in_flight[path] = self.in_flight.get(path, 0) + 1
            self.max_in_flight[path] = max(self.max_in_flight.get(path, 0), self.in_flight[path])

    def leave(self, path: str) -> None:
        with self._lock:
            self.in_flight[path] -= 1

    def reset_counts(self) -> None:
        with self._lock:
            self.max_in_flight = dict(self.in_flight)
            self.requests = {}

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self.serve_forever, name="fault-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases handlers stuck in hang / drip modes
        self.shutdown()
        self.server_close()

    def metrics_text(self) -> str:
        t = time.monotonic() - self.started
        labels = f'engine="0",model_name="{MODEL}"'
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{labels}}} 1.0",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{labels}}} 2.0",
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{labels}}} 0.25",
            "# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.",
            "# TYPE vllm:e2e_request_latency_seconds histogram",
            f'vllm:e2e_request_latency_seconds_bucket{{{labels},le="1.0"}} 3.0',
            f'vllm:e2e_request_latency_seconds_bucket{{{labels},le="+Inf"}} 4.0',
            f"vllm:e2e_request_latency_seconds_count{{{labels}}} 4.0",
            f"vllm:e2e_request_latency_seconds_sum{{{labels}}} 3.5",
        ]
        if self.spec:
            drafts = SPEC_RATES["drafts"] * t
            per_pos = [rate * t for rate in SPEC_RATES["pos"]]
            for name, value in (
                ("num_drafts", drafts),
                ("num_draft_tokens", SPEC_RATES["draft_tokens"] * t),
                ("num_accepted_tokens", sum(per_pos)),
            ):
                lines += [
                    f"# HELP vllm:spec_decode_{name} fake",
                    f"# TYPE vllm:spec_decode_{name} counter",
                    f"vllm:spec_decode_{name}_total{{{labels}}} {value}",
                ]
            lines += [
                "# HELP vllm:spec_decode_num_accepted_tokens_per_pos Accepted tokens per draft position.",
                "# TYPE vllm:spec_decode_num_accepted_tokens_per_pos counter",
            ]
            lines += [
                f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position="{p}"}} {v}'
                for p, v in enumerate(per_pos)
            ]
        return "\n".join(lines) + "\n"


def _chunk(text: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if text is None else {"content": text}
    doc = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def _answer(request: dict[str, Any], mode: str) -> str:
    messages = request.get("messages") or [{}]
    asked = str(messages[-1].get("content", ""))
    if "france" not in asked.lower():
        return GOOD_TEXT
    return WRONG_CAPITAL_TEXT if mode == "wrong_answer" else CAPITAL_TEXT


class _Handler(BaseHTTPRequestHandler):
    server: FaultServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests print what matters

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _open_stream(self, ctype: str = "text/event-stream") -> None:
        # No Content-Length: the body ends when the connection closes (HTTP/1.1 allows it).
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _hang(self) -> None:
        # Hold the request without answering until the client gives up (or the server stops), so
        # in_flight counts connections the client really keeps open.
        self.close_connection = True
        while not self.server.stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.2)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return  # the client closed its end
                except OSError:
                    return
                time.sleep(0.2)  # pipelined bytes: not a close; keep holding

    def _write_forever(self, piece: bytes, pause: float = 0.0, limit: int = 1 << 30) -> None:
        sent = 0
        try:
            while sent < limit and not self.server.stopping.is_set():
                self.wfile.write(piece)
                sent += len(piece)
                if pause:
                    self.wfile.flush()
                    time.sleep(pause)
        except OSError:
            pass  # the client gave up, as it should

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.server.enter(path)
        try:
            self._get(path)
        finally:
            self.server.leave(path)

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        self.server.enter(path)
        try:
            length = int(self.headers.get("Content-Length", "0"))
            request = json.loads(self.rfile.read(length) or b"{}")
            self._post(path, request)
        finally:
            self.server.leave(path)

    def _authorized(self) -> bool:
        if self.server.mode != "unauthorized":
            return True
        ok = self.headers.get("Authorization") == f"Bearer {self.server.api_key}"
        if not ok:
            with self.server._lock:
                self.server.unauthorized_requests += 1
        return ok

    def _get(self, path: str) -> None:
        mode = self.server.mode
        if mode == "hang":
            self._hang()
            return
        if mode == "slow_drip" and path != "/metrics":
            self._open_stream("application/json")
            self._write_forever(b" ", pause=0.5)
            return
        if path == "/health":
            self._send(500 if mode == "health_500" else 200, b"")
        elif path == "/metrics":
            if not self._authorized():
                self._send(401, b'{"error": "Unauthorized"}')
                return
            self._send(200, self.server.metrics_text().encode(), "text/plain; version=0.0.4")
        elif path == "/v1/models":
            if not self._authorized():
                self._send(401, b'{"error": "Unauthorized"}')
            elif mode == "malformed_models":
                self._send(200, b'{"object": "list", "data": [{"id": "fake-mo')
            elif mode == "huge_models":
                self._open_stream("application/json")
                self._write_forever(b'{"object": "list", "data": [' + b'{"id": "x"},' * 4096)
            elif mode == "huge_declared":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(1 << 30))
                self.end_headers()
                self._write_forever(b"[" * 65536)
            else:
                name = "some-other-model" if mode == "wrong_model" else MODEL
                body = {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "vllm"}]}
                self._send(200, json.dumps(body).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def _post(self, path: str, request: dict[str, Any]) -> None:
        mode = self.server.mode
        if path != "/v1/chat/completions":
            self._send(404, b'{"error": "not found"}')
            return
        if mode == "hang":
            self._hang()
            return
        if not self._authorized():
            self._send(401, b'{"error": "Unauthorized"}')
            return
        if mode == "echo_auth":
            # An engine (or proxy) error that quotes the request back, key included.
            echoed = {"message": f"bad request; headers: Authorization: {self.headers.get('Authorization')}"}
            self._send(400, json.dumps({"error": echoed}).encode())
            return
        if mode == "down_chat":
            self._send(500, b'{"error": {"message": "EngineCore died", "type": "InternalServerError"}}')
            return
        if not request.get("stream"):
            msg = {"role": "assistant", "content": _answer(request, mode)}
            self._send(200, json.dumps({"choices": [{"index": 0, "message": msg}]}).encode())
            return
        self._open_stream()
        try:
            if mode == "slow_drip":
                self.wfile.write(_chunk("Red"))
                self._write_forever(b": keep-alive\n", pause=0.5)
            elif mode == "huge_stream":
                self._write_forever(_chunk("lorem ipsum dolor sit amet "))
            elif mode == "malformed_stream":
                self.wfile.write(_chunk("Red") + b"data: {this is not json\n\n")
            elif mode == "error_event":
                self.wfile.write(
                    _chunk("Red") + b'data: {"error": {"message": "engine dead", "code": 500}}\n\n'
                )
            else:
                # The loop holds the right answer: the probe must call it degenerate, not correct.
                text = {"degenerate": "Paris Paris Paris Paris Paris Paris Paris ", "empty": ""}.get(
                    mode, _answer(request, mode)
                )
                if text:
                    for word in text.split(" "):
                        self.wfile.write(_chunk(word + " "))
                self.wfile.write(_chunk(finish="length"))
                if mode != "no_done":
                    self.wfile.write(b"data: [DONE]\n\n")
        except OSError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--no-spec", action="store_true", help="No spec-decode counters in /metrics.")
    args = parser.parse_args()
    server = FaultServer(args.port, args.mode, args.api_key, spec=not args.no_spec)
    print(f"FAKE vLLM (fault injector) on http://127.0.0.1:{args.port} mode={args.mode}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()

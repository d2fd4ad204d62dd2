"""scripts/stream_timing.py, the instrument behind the overhead figures (docs/scale-out.md), against a FAKE
chat server (a stdlib HTTP server streaming OpenAI-shaped events in HTTP/1.1 chunks, no model: what is
tested is the timing, not an answer). A stream sent one event at a time must come out spread, one sent
in a single burst must come out as a burst, and the kernel's arrival times must be those of the sending.
Cost: ~2 s."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import stream_timing

EVENTS = 20
GAP_S = 0.02


def _event(text: str) -> bytes:
    doc = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return f"data: {json.dumps(doc)}\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "spread"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        role = {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
        self._chunk(f"data: {json.dumps(role)}\n\n".encode())
        if self.mode == "burst":
            time.sleep(EVENTS * GAP_S)
        for i in range(EVENTS):
            if self.mode == "spread":
                time.sleep(GAP_S)
            self._chunk(_event(f"t{i} "))
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=["spread", "burst"])
def fake_server(request):
    handler = type("Handler", (_Handler,), {"mode": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield request.param, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_spread_stream_and_a_burst_are_told_apart(fake_server):
    mode, base_url = fake_server
    timing = stream_timing.time_one(base_url, "fake", max_tokens=EVENTS)
    assert timing.events == EVENTS  # the role-only chunk carries no text and is not counted
    total = EVENTS * GAP_S
    assert timing.last_kernel_s >= total * 0.9
    assert timing.read_lag_max_ms < 200  # this client was reading all along
    if mode == "spread":
        assert timing.spread > 0.8, timing
        assert timing.ttft_kernel_s < total / 2, timing
        assert timing.gap_p50_ms >= GAP_S * 1000 * 0.5, timing
    else:
        assert timing.spread < 0.2, timing
        assert timing.ttft_kernel_s >= total * 0.9, timing

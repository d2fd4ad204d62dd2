#!/usr/bin/env python3
"""When did each event of a streamed chat completion reach this machine's kernel, and when did the client
read it? A client of its own (a raw socket, no httpx, no asyncio) with the kernel's receive timestamps
(SO_TIMESTAMPNS: the time the segment reached the socket, whatever the client was doing then), so a
stream that *arrives* in one burst (the server sent it so) is told apart from one the client *read* late
(the client was not scheduled). Used by scripts/ray_serve_overhead.py beside `serve bench`.

    .venv/bin/python scripts/stream_timing.py http://127.0.0.1:8888 --model tiny-qwen3 [--requests 5]

Linux only (SO_TIMESTAMPNS). Plain HTTP/1.1 with chunked or close-delimited bodies: what vLLM and Ray
Serve answer."""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import statistics
import struct
import sys
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value; Python does not export it
PROMPT = "Explain quantum computing in 3 paragraphs"  # the bench's 256-token row


@dataclass(frozen=True)
class StreamTiming:
    """One request; times in seconds from just before the request was sent."""

    events: int  # data: events carrying generated text
    ttft_kernel_s: float  # first text event reached the socket
    ttft_read_s: float  # the client read it
    last_kernel_s: float  # last text event reached the socket
    spread: float  # (last - first) arrival / last arrival: ~1 a token at a time, ~0 one burst
    gap_p50_ms: float  # between consecutive arrivals
    gap_max_ms: float
    read_lag_max_ms: float  # the most any event waited in the socket before the client read it


def _request(host: str, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    ).encode() + body


def _dechunk(raw: bytes, start: int) -> list[tuple[int, int]]:
    """(start, end) offsets in ``raw`` of the payload pieces of a chunked body beginning at ``start``."""
    pieces, pos = [], start
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            return pieces
        size = int(raw[pos:eol].split(b";")[0] or b"0", 16)
        if size == 0:
            return pieces
        pieces.append((eol + 2, eol + 2 + size))
        pos = eol + 2 + size + 2


def time_one(base_url: str, model: str, max_tokens: int = 256, timeout: float = 300) -> StreamTiming:
    url = urlsplit(base_url)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},  # as serve bench asks
    }
    sock = socket.create_connection((url.hostname, url.port or 80), timeout=timeout)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    raw = bytearray()
    reads: list[tuple[int, float, float]] = []  # (end offset in raw, kernel arrival, read), epoch s
    t0 = time.time()
    sock.sendall(_request(url.netloc, "/v1/chat/completions", json.dumps(body).encode()))
    with sock:
        while True:
            # Small reads: each one's timestamp is that of the segment its bytes came in.
            data, ancillary, _, _ = sock.recvmsg(512, socket.CMSG_SPACE(16))
            now = time.time()
            if not data:
                break
            kernel = now
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    kernel = sec + nsec / 1e9
            raw += data
            reads.append((len(raw), kernel, now))
    head_end = raw.find(b"\r\n\r\n") + 4
    head = bytes(raw[:head_end]).lower()
    if not head.startswith(b"http/1.1 200"):
        raise RuntimeError(f"{base_url}: {bytes(raw[:300])!r}")
    pieces = _dechunk(raw, head_end) if b"transfer-encoding: chunked" in head else [(head_end, len(raw))]
    arrivals: list[tuple[float, float]] = []
    for start, end in pieces:
        for line in bytes(raw[start:end]).split(b"\n"):
            if not line.startswith(b"data:") or line.strip() == b"data: [DONE]":
                continue
            doc = json.loads(line[5:])
            delta = (doc.get("choices") or [{}])[0].get("delta") or {}
            if not any(delta.get(k) for k in ("content", "reasoning", "reasoning_content")):
                continue
            # The event is complete at its piece's last byte: the first read reaching that offset.
            read = next(r for r in reads if r[0] >= end)
            arrivals.append((read[1] - t0, read[2] - t0))
    if not arrivals:
        raise RuntimeError(f"{base_url}: no text events")
    kernel = [a[0] for a in arrivals]
    gaps = [b - a for a, b in itertools.pairwise(kernel)] or [0.0]
    return StreamTiming(
        events=len(arrivals),
        ttft_kernel_s=round(kernel[0], 4),
        ttft_read_s=round(arrivals[0][1], 4),
        last_kernel_s=round(kernel[-1], 4),
        spread=round((kernel[-1] - kernel[0]) / kernel[-1], 3) if kernel[-1] > 0 else 0.0,
        gap_p50_ms=round(statistics.median(gaps) * 1000, 3),
        gap_max_ms=round(max(gaps) * 1000, 2),
        read_lag_max_ms=round(max(r - k for k, r in arrivals) * 1000, 2),
    )


def run(base_url: str, model: str, requests: int) -> list[dict]:
    time_one(base_url, model, max_tokens=16)  # warm-up, not kept
    return [asdict(time_one(base_url, model)) for _ in range(requests)]


def summary(rows: list[dict]) -> str:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    return (
        f"{len(rows)} requests: {med('events'):.0f} text events each (median), first reached the socket "
        f"after {med('ttft_kernel_s') * 1000:.0f} ms, last after {med('last_kernel_s') * 1000:.0f} ms, spread "
        f"{med('spread'):.2f} (1 = evenly over the request, 0 = one burst), arrival gap p50 "
        f"{med('gap_p50_ms'):.2f} ms, max read lag {max(r['read_lag_max_ms'] for r in rows):.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("--model", required=True)
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args()
    rows = run(args.base_url, args.model, args.requests)
    print(json.dumps(rows, indent=1))
    print(summary(rows), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

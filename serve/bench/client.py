"""The I/O edge of `serve bench`: streamed chat completions timed chunk by chunk, /metrics scrapes and a
readiness wait that means "answers a completion" (vLLM's /health turns 200 before that). The stream,
the base URL and /metrics are parsed by :mod:`serve.client`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from serve.bench.stats import ROW_COUNTERS, CounterSnapshot, RequestSample, StreamEvent
from serve.client.endpoint import Endpoint
from serve.client.metrics import MetricsParseError, MetricsUnavailable, ascrape
from serve.client.sse import ChatStream, StreamError
from serve.errors import KitError


def chat_body(
    model: str, prompt: str, max_tokens: int, *, ignore_eos: bool, temperature: float | None
) -> dict:
    body: dict = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        # continuous_usage_stats is vLLM's: a running completion_tokens on every chunk, so a chunk that
        # carries several speculated tokens is counted right. Other servers ignore it and send usage once.
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True  # vLLM sampling extension: generate exactly max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    return body


async def stream_chat(client: httpx.AsyncClient, endpoint: Endpoint, body: dict) -> RequestSample:
    """Send one streamed chat completion and time every chunk that carried generated tokens."""
    events: list[StreamEvent] = []
    stream = ChatStream()
    seen_tokens = 0
    t0 = time.perf_counter()
    url = endpoint.url("/v1/chat/completions")
    async with client.stream("POST", url, json=body, headers=endpoint.headers) as resp:
        if resp.status_code != 200:
            text = (await resp.aread()).decode(errors="replace")[:500]
            raise KitError(
                f"POST {url} answered {resp.status_code}: {text}; check --base-url, --model and --api-key"
            )
        async for line in resp.aiter_lines():
            now = time.perf_counter() - t0
            try:
                chunk = stream.feed(line, now)
            except StreamError as exc:
                raise KitError(f"{url}: {exc.detail}") from None
            if stream.done:
                break
            if chunk is None or not chunk.choices:
                continue  # not an event, or the trailing usage-only chunk
            completion_tokens = (chunk.usage or {}).get("completion_tokens")
            if completion_tokens is not None:
                new = completion_tokens - seen_tokens
                seen_tokens = completion_tokens
            else:
                new = 1 if chunk.has_output else 0
            if new > 0:
                events.append(StreamEvent(t_s=now, tokens=new))
    e2e = time.perf_counter() - t0
    usage = stream.usage or {}
    if usage.get("completion_tokens") is None or usage.get("prompt_tokens") is None:
        raise KitError(
            f"{endpoint.base_url} streamed no usage although stream_options.include_usage was set; "
            "the bench counts tokens from usage, so it needs a vLLM (or OpenAI-compatible) server "
            "that sends it"
        )
    return RequestSample(
        prompt_tokens=int(usage["prompt_tokens"]),
        completion_tokens=int(usage["completion_tokens"]),
        e2e_s=e2e,
        events=tuple(events),
        finish_reason=stream.finish_reason,
    )


async def scrape_counters(client: httpx.AsyncClient, endpoint: Endpoint) -> CounterSnapshot | None:
    """The row counters from /metrics, or None when the endpoint has no /metrics (not vLLM, or a
    proxy in front): rows then go without server-side numbers rather than failing."""
    try:
        return await ascrape(client, endpoint, ROW_COUNTERS)
    except (MetricsUnavailable, MetricsParseError):
        return None


async def list_models(client: httpx.AsyncClient, endpoint: Endpoint) -> list[str]:
    resp = await client.get(endpoint.url("/v1/models"), headers=endpoint.headers)
    if resp.status_code != 200:
        raise KitError(
            f"GET {endpoint.url('/v1/models')} answered {resp.status_code}; check --base-url and --api-key"
        )
    return [m["id"] for m in resp.json().get("data", [])]


async def wait_ready(
    endpoint: Endpoint,
    timeout_s: float,
    *,
    alive: Callable[[], str | None] = lambda: None,
    poll_s: float = 2.0,
) -> float:
    """Poll until a one-token completion succeeds; returns the seconds waited. ``alive`` returns a
    reason when the server process died, so a crash fails fast instead of after the timeout."""
    t0 = time.monotonic()
    body = {
        "model": endpoint.model,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
    }
    last = "no answer yet"
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=2.0)) as client:
        while time.monotonic() - t0 < timeout_s:
            dead = alive()
            if dead:
                raise KitError(f"the server exited before it was ready: {dead}")
            try:
                resp = await client.post(
                    endpoint.url("/v1/chat/completions"), json=body, headers=endpoint.headers
                )
                if resp.status_code == 200 and resp.json().get("choices"):
                    return time.monotonic() - t0
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(poll_s)
    raise KitError(
        f"{endpoint.base_url} did not answer a completion within {timeout_s:.0f} s (last: {last}); "
        "raise --ready-timeout or check the server log"
    )

"""The I/O edge of `serve bench`: streamed chat completions timed chunk by chunk, /metrics scrapes and a
readiness wait that means "answers a completion" (vLLM's /health turns 200 before that)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from serve.bench.stats import CounterSnapshot, RequestSample, StreamEvent, parse_counters
from serve.errors import KitError


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # without /v1, e.g. http://127.0.0.1:8888
    model: str
    api_key: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def normalize_base_url(url: str) -> str:
    """Accept http://host:port, http://host:port/ and http://host:port/v1 alike."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


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


def _delta_has_output(choice: dict) -> bool:
    delta = choice.get("delta") or {}
    return any(delta.get(k) for k in ("content", "reasoning", "reasoning_content", "tool_calls"))


async def stream_chat(client: httpx.AsyncClient, endpoint: Endpoint, body: dict) -> RequestSample:
    """Send one streamed chat completion and time every chunk that carried generated tokens."""
    events: list[StreamEvent] = []
    prompt_tokens = completion_tokens = None
    seen_tokens = 0
    finish_reason = None
    t0 = time.perf_counter()
    async with client.stream(
        "POST", f"{endpoint.base_url}/v1/chat/completions", json=body, headers=endpoint.headers
    ) as resp:
        if resp.status_code != 200:
            text = (await resp.aread()).decode(errors="replace")[:500]
            raise KitError(
                f"POST {endpoint.base_url}/v1/chat/completions answered {resp.status_code}: {text}; "
                "check --base-url, --model and --api-key"
            )
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                break
            now = time.perf_counter() - t0
            chunk = json.loads(data)
            if "error" in chunk:
                raise KitError(f"the server reported an error mid-stream: {chunk['error']}")
            usage = chunk.get("usage")
            choices = chunk.get("choices") or []
            for choice in choices:
                finish_reason = choice.get("finish_reason") or finish_reason
            if usage:
                prompt_tokens = usage.get("prompt_tokens", prompt_tokens)
                completion_tokens = usage.get("completion_tokens", completion_tokens)
            if not choices:
                continue  # the trailing usage-only chunk
            if usage and completion_tokens is not None:
                new = completion_tokens - seen_tokens
                seen_tokens = completion_tokens
            else:
                new = 1 if any(_delta_has_output(c) for c in choices) else 0
            if new > 0:
                events.append(StreamEvent(t_s=now, tokens=new))
    e2e = time.perf_counter() - t0
    if completion_tokens is None or prompt_tokens is None:
        raise KitError(
            f"{endpoint.base_url} streamed no usage although stream_options.include_usage was set; "
            "the bench counts tokens from usage, so it needs a vLLM (or OpenAI-compatible) server "
            "that sends it"
        )
    return RequestSample(
        prompt_tokens=int(prompt_tokens),
        completion_tokens=int(completion_tokens),
        e2e_s=e2e,
        events=tuple(events),
        finish_reason=finish_reason,
    )


async def scrape_counters(client: httpx.AsyncClient, endpoint: Endpoint) -> CounterSnapshot | None:
    """The row counters from /metrics, or None when the endpoint has no /metrics (not vLLM, or a
    proxy in front): rows then go without server-side numbers rather than failing."""
    try:
        resp = await client.get(f"{endpoint.base_url}/metrics", headers=endpoint.headers)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    return parse_counters(resp.text)


async def list_models(client: httpx.AsyncClient, base_url: str, headers: dict[str, str]) -> list[str]:
    resp = await client.get(f"{base_url}/v1/models", headers=headers)
    if resp.status_code != 200:
        raise KitError(
            f"GET {base_url}/v1/models answered {resp.status_code}; check --base-url and --api-key"
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
                    f"{endpoint.base_url}/v1/chat/completions", json=body, headers=endpoint.headers
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

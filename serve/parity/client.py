"""The I/O edge of `serve parity`: one greedy chat completion per prompt, its generated token ids.

Each request asks vLLM for token ids both ways it knows, and the ids come from the first present:

- ``return_token_ids: true``: ``choices[0].token_ids``.
- ``logprobs: true`` with ``return_tokens_as_token_ids: true``: each ``logprobs.content[i].token`` is
  ``"token_id:N"``; the top candidates per position (``top_logprobs``) come with them, which is what
  tells a near tie (two candidates within rounding) from a real difference at a divergence.

A server that gives neither (not vLLM, or a proxy that strips vLLM's fields) cannot be compared token
by token, and says so instead of falling back to comparing text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from serve.bench.stats import ROW_COUNTERS, SpecDecodeStats, spec_decode_stats
from serve.client.endpoint import Endpoint, auth_headers
from serve.client.metrics import (
    GENERATION_TOKENS,
    CounterReset,
    MetricsParseError,
    MetricsUnavailable,
    Snapshot,
    delta,
    scrape,
    total,
)
from serve.errors import KitError

IdSource = Literal["return_token_ids", "logprobs"]
TOKEN_ID_PREFIX = "token_id:"
# Top log-probabilities asked per position: enough to find the other side's token at a divergence
# and say whether the two were a near tie (the same distribution rounded differently) or far apart.
TOP_LOGPROBS = 5


@dataclass(frozen=True)
class Generation:
    token_ids: tuple[int, ...]
    text: str
    finish_reason: str | None
    id_source: IdSource
    top_logprobs: tuple[dict[int, float], ...] = ()  # per position: token id -> logprob (empty: none)


def request_body(model: str, prompt: str, max_tokens: int, *, logprobs: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": False,
        "return_token_ids": True,
    }
    if logprobs:
        body.update(logprobs=True, top_logprobs=TOP_LOGPROBS, return_tokens_as_token_ids=True)
    return body


def _token_id(token: Any) -> int | None:
    if not isinstance(token, str) or not token.startswith(TOKEN_ID_PREFIX):
        return None
    try:
        return int(token[len(TOKEN_ID_PREFIX) :])
    except ValueError:
        return None


def token_ids_from(choice: dict[str, Any]) -> tuple[list[int], IdSource] | None:
    """The generated ids in one response choice and where they came from, or None when it has none."""
    ids = choice.get("token_ids")
    if isinstance(ids, list) and all(isinstance(i, int) for i in ids):
        return ids, "return_token_ids"
    content = (choice.get("logprobs") or {}).get("content")
    if not isinstance(content, list):
        return None
    out = []
    for entry in content:
        token_id = _token_id(entry.get("token") if isinstance(entry, dict) else None)
        if token_id is None:
            return None
        out.append(token_id)
    return out, "logprobs"


def top_logprobs_from(choice: dict[str, Any]) -> tuple[dict[int, float], ...]:
    """Per position, token id -> logprob of the top candidates (the chosen token included); empty when
    the answer has no logprobs as token ids."""
    content = (choice.get("logprobs") or {}).get("content")
    if not isinstance(content, list):
        return ()
    out = []
    for entry in content:
        if not isinstance(entry, dict):
            return ()
        top: dict[int, float] = {}
        for cand in [entry, *(entry.get("top_logprobs") or [])]:
            token_id = _token_id(cand.get("token") if isinstance(cand, dict) else None)
            logprob = cand.get("logprob") if isinstance(cand, dict) else None
            if token_id is None or not isinstance(logprob, int | float):
                return ()
            top[token_id] = float(logprob)
        out.append(top)
    return tuple(out)


def _text(choice: dict[str, Any]) -> str:
    message = choice.get("message") or {}
    parts = [message.get(k) for k in ("reasoning", "reasoning_content", "content")]
    return "".join(p for p in parts if isinstance(p, str))


class ParityClient:
    """One side: an endpoint; logprobs are asked for until the server refuses them once."""

    def __init__(self, side: str, endpoint: Endpoint, client: httpx.Client, where: str):
        self.side, self.endpoint, self.client, self.where = side, endpoint, client, where
        self.logprobs = True

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        url = self.endpoint.url("/v1/chat/completions")
        try:
            return self.client.post(url, json=body, headers=self.endpoint.headers)
        except httpx.HTTPError as exc:
            raise KitError(
                f"side {self.side}: POST {url} failed ({type(exc).__name__}: {exc}); is the server up? "
                f"check {self.where}"
            ) from None

    def generate(self, prompt: str, max_tokens: int) -> Generation:
        resp = self._post(request_body(self.endpoint.model, prompt, max_tokens, logprobs=self.logprobs))
        if resp.status_code == 400 and self.logprobs:
            # e.g. vLLM started with --max-logprobs 0: compare ids without the near-tie diagnosis
            self.logprobs = False
            resp = self._post(request_body(self.endpoint.model, prompt, max_tokens, logprobs=False))
        if resp.status_code != 200:
            raise KitError(
                f"side {self.side}: {self.endpoint.base_url}/v1/chat/completions answered "
                f"{resp.status_code}: {' '.join(resp.text[:300].split())}; check {self.where}, the model "
                "name and the API key"
            )
        try:
            choices = resp.json().get("choices") or []
        except ValueError:
            choices = []
        if not choices:
            raise KitError(f"side {self.side}: {self.endpoint.base_url} answered without choices")
        found = token_ids_from(choices[0])
        if found is None:
            raise KitError(
                f"side {self.side}: {self.endpoint.base_url} returns no token ids (neither token_ids for "
                "return_token_ids nor logprobs with return_tokens_as_token_ids); parity compares token ids "
                "and needs vLLM's OpenAI server"
            )
        ids, source = found
        top = top_logprobs_from(choices[0])
        return Generation(
            tuple(ids),
            _text(choices[0]),
            choices[0].get("finish_reason"),
            source,
            top if len(top) == len(ids) else (),
        )


def scrape_counters(client: httpx.Client, endpoint: Endpoint) -> Snapshot | None:
    """vLLM's row counters from /metrics; None when the endpoint has none (not vLLM, or a proxy)."""
    try:
        return scrape(client, endpoint, ROW_COUNTERS)
    except (MetricsUnavailable, MetricsParseError):
        return None


def spec_decode_over(
    client: httpx.Client,
    endpoint: Endpoint,
    before: Snapshot | None,
    generated: int,
    settle_s: float = 3.0,
) -> SpecDecodeStats | None:
    """Drafts and accepted tokens since ``before``: proof that speculative decoding really ran on a side
    whose output matched. The engine's stats reach /metrics asynchronously, so scrape until the
    generation counter has caught up with the tokens received (or ``settle_s`` passed)."""
    if before is None:
        return None
    deadline = time.monotonic() + settle_s
    while True:
        after = scrape_counters(client, endpoint)
        if after is None:
            return None
        try:
            moved = delta(before, after)
        except CounterReset:
            return None  # the server restarted in between: no honest figure
        counted = total(moved, GENERATION_TOKENS)
        if counted is None or counted >= generated or time.monotonic() > deadline:
            return spec_decode_stats(moved)
        time.sleep(0.1)


def resolve_model(base_url: str, explicit: str | None, api_key: str | None, where: str) -> str:
    """--model, else the endpoint's first served model. Also the reachability check: an endpoint that
    does not answer is one line naming the option to fix."""
    url = f"{base_url}/v1/models"
    try:
        resp = httpx.get(url, headers=auth_headers(api_key), timeout=httpx.Timeout(10.0, connect=5.0))
    except httpx.HTTPError as exc:
        raise KitError(
            f"cannot reach {base_url} ({type(exc).__name__}: {exc or 'no answer'}); is the server up? "
            f"check {where}"
        ) from None
    if resp.status_code != 200:
        raise KitError(f"GET {url} answered {resp.status_code}; check {where} and --api-key")
    try:
        models = [m["id"] for m in resp.json().get("data", [])]
    except (ValueError, AttributeError, KeyError, TypeError):
        raise KitError(
            f"GET {url} did not answer an OpenAI model list; is {where} a vLLM endpoint?"
        ) from None
    if explicit:
        return explicit
    if not models:
        raise KitError(f"{url} lists no model; pass --model")
    return str(models[0])

"""Stream parsing against canned server-sent events (httpx.MockTransport): token counts from
continuous usage, a chunk carrying several speculated tokens, the usage-only trailer, and errors."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from serve.bench.client import chat_body, scrape_counters, stream_chat
from serve.bench.stats import GENERATION_TOKENS, counter_total
from serve.client.endpoint import Endpoint
from serve.errors import KitError

EP = Endpoint(base_url="http://bench.test", model="tiny", api_key="k")


def _sse(chunks: list[dict]) -> bytes:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks).encode() + b"data: [DONE]\n\n"


def _chunk(content: str | None = None, usage: dict | None = None, finish: str | None = None, **delta) -> dict:
    d = dict(delta)
    if content is not None:
        d["content"] = content
    out: dict = {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}
    if usage is not None:
        out["usage"] = usage
    return out


def _usage(n: int) -> dict:
    return {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n}


def _run(handler, body=None):
    seen = {}

    def wrapped(request: httpx.Request) -> httpx.Response:
        seen["request"] = request
        return handler(request)

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(wrapped)) as client:
            return await stream_chat(
                client, EP, body or chat_body("tiny", "hi", 8, ignore_eos=True, temperature=None)
            )

    return asyncio.run(go()), seen


def test_continuous_usage_counts_tokens_per_chunk():
    chunks = [
        _chunk("", _usage(0), role="assistant"),  # vLLM's role chunk: no token yet
        _chunk("a", _usage(1)),
        _chunk("bc", _usage(3)),  # a speculated token accepted: two tokens in one chunk
        _chunk(None, _usage(3), reasoning=""),  # nothing new
        _chunk("d", _usage(4), finish="length"),
        {"choices": [], "usage": _usage(4)},
    ]
    sample, seen = _run(lambda r: httpx.Response(200, content=_sse(chunks)))
    assert (sample.prompt_tokens, sample.completion_tokens) == (9, 4)
    assert [e.tokens for e in sample.events] == [1, 2, 1]
    assert sample.finish_reason == "length"
    body = json.loads(seen["request"].content)
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert body["ignore_eos"] is True and body["max_tokens"] == 8 and body["stream"] is True
    assert seen["request"].headers["authorization"] == "Bearer k"


def test_without_continuous_usage_each_text_chunk_is_one_token_and_usage_comes_last():
    chunks = [
        _chunk("", role="assistant"),
        _chunk(None, reasoning="think"),  # reasoning parser output counts as output
        _chunk("x"),
        _chunk("y", finish="stop"),
        {"choices": [], "usage": _usage(5)},
    ]
    sample, _ = _run(lambda r: httpx.Response(200, content=_sse(chunks)))
    assert len(sample.events) == 3
    assert sample.completion_tokens == 5  # usage is the truth, not the chunk count


def test_no_usage_is_an_error_that_says_why():
    with pytest.raises(KitError, match="no usage"):
        _run(lambda r: httpx.Response(200, content=_sse([_chunk("x")])))


def test_a_malformed_event_is_one_clear_error():
    with pytest.raises(KitError, match="event is not JSON"):
        _run(lambda r: httpx.Response(200, content=b"data: {not json\n\n"))


def test_an_error_event_mid_stream_is_reported():
    body = _sse([_chunk("x", _usage(1))]).replace(
        b"data: [DONE]", b'data: {"error": {"message": "EngineDead"}}'
    )
    with pytest.raises(KitError, match="error event in the stream: EngineDead"):
        _run(lambda r: httpx.Response(200, content=body))


def test_http_error_names_the_url_and_status():
    with pytest.raises(KitError, match="answered 400"):
        _run(lambda r: httpx.Response(400, json={"error": "max_tokens too large"}))


def test_temperature_only_when_given():
    assert "temperature" not in chat_body("m", "p", 1, ignore_eos=False, temperature=None)
    body = chat_body("m", "p", 1, ignore_eos=False, temperature=0.0)
    assert body["temperature"] == 0.0 and "ignore_eos" not in body


def test_scrape_counters_reads_metrics_and_tolerates_absence():
    text = '# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total{engine="0"} 7.0\n'

    async def go(status: int):
        transport = httpx.MockTransport(lambda r: httpx.Response(status, text=text))
        async with httpx.AsyncClient(transport=transport) as client:
            return await scrape_counters(client, EP)

    assert counter_total(asyncio.run(go(200)), GENERATION_TOKENS) == 7.0
    assert asyncio.run(go(404)) is None

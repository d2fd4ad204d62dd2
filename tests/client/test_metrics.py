"""The one reader of vLLM's /metrics (serve.client.metrics): samples by label set, sums, deltas, and the
counter reset that the bench, parity and the sidecar each used to detect their own way."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from healthcheck.vllm_metrics import SpecCounters
from serve.client import metrics
from serve.client.endpoint import Endpoint

TEXT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} 100.0
vllm:generation_tokens_total{engine="1",model_name="m"} 20.0
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",position="0"} 8.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",position="0"} 2.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",position="1"} 5.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0"} NaN
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 4.0
"""


def test_sums_per_name_and_per_label() -> None:
    snap = metrics.parse_metrics(TEXT)
    assert metrics.total(snap, metrics.REQUESTS_RUNNING) == 3.0
    assert metrics.total(snap, metrics.GENERATION_TOKENS) == 120.0
    assert metrics.total(snap, "vllm:absent") is None
    assert metrics.by_label(snap, metrics.SPEC_ACCEPTED_PER_POS, "position") == {"0": 10.0, "1": 5.0}
    assert metrics.KV_CACHE_USAGE not in snap  # NaN is no value
    assert metrics.totals(snap)["process_cpu_seconds_total"] == 4.0


def test_names_and_prefixes_select() -> None:
    only = metrics.parse_metrics(TEXT, names=[metrics.GENERATION_TOKENS])
    assert set(only) == {metrics.GENERATION_TOKENS}
    vllm = metrics.parse_metrics(TEXT, prefixes=("vllm:num_requests", "vllm:generation"))
    assert set(vllm) == {metrics.REQUESTS_RUNNING, metrics.GENERATION_TOKENS}


def test_not_prometheus_text() -> None:
    with pytest.raises(metrics.MetricsParseError):
        metrics.parse_metrics("vllm:x{engine=0 1\n")


def test_delta_counts_new_series_from_zero_and_refuses_a_reset() -> None:
    before = metrics.parse_metrics(TEXT, names=[metrics.GENERATION_TOKENS])
    after = metrics.parse_metrics(
        TEXT.replace('model_name="m"} 100.0', 'model_name="m"} 130.0')
        + 'vllm:generation_tokens_total{engine="2",model_name="m"} 7.0\n',
        names=[metrics.GENERATION_TOKENS],
    )
    assert metrics.total(metrics.delta(before, after), metrics.GENERATION_TOKENS) == 37.0
    with pytest.raises(metrics.CounterReset, match="went from 130 to 100"):
        metrics.delta(after, before)
    # a series that vanished is a restart too (its counter began again, from nothing)
    assert metrics.first_decrease(after, {}) is not None
    assert metrics.first_decrease(before, before) is None


def test_the_sidecars_reset_check_is_the_same_one() -> None:
    old = SpecCounters(drafts=10, draft_tokens=30, accepted=12, accepted_per_pos={0: 8, 1: 4})
    assert not SpecCounters(11, 33, 13, {0: 9, 1: 4}).decreased_since(old)
    assert SpecCounters(1, 3, 1, {0: 1, 1: 0}).decreased_since(old)  # vLLM restarted
    assert SpecCounters(11, 33, 13, {0: 9}).decreased_since(old)  # a position series vanished


def test_scrape_sends_the_key_and_says_why_it_got_nothing() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200 if "good" in request.url.host else 404, text=TEXT)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        snap = metrics.scrape(client, Endpoint("http://good:1", "m", "sk"), [metrics.REQUESTS_RUNNING])
        with pytest.raises(metrics.MetricsUnavailable) as err:
            metrics.scrape(client, Endpoint("http://proxy:1", "m"))
    assert set(snap) == {metrics.REQUESTS_RUNNING}
    assert seen[0].headers["authorization"] == "Bearer sk" and seen[0].url.path == "/metrics"
    assert err.value.status == 404 and "HTTP 404" in err.value.detail

    async def unreachable() -> None:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
            await metrics.ascrape(client, Endpoint("http://down:1", "m"))

    with pytest.raises(metrics.MetricsUnavailable) as err:
        asyncio.run(unreachable())
    assert err.value.status is None and "ConnectError" in err.value.detail

"""vLLM's ``/metrics`` (Prometheus text), read once for bench, parity, smoke and the sidecar: samples
per name and label set, sums over labels, deltas between two scrapes, and the reset that a counter
going down means (the server restarted in between).

vLLM's v1 engine exports counters (``vllm:generation_tokens_total``, the spec-decode
``vllm:spec_decode_num_*_total``) and gauges (``vllm:num_requests_running``,
``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``), one series per engine and model name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

from serve.client.endpoint import Endpoint

# Names used by more than one reader.
REQUESTS_RUNNING = "vllm:num_requests_running"
REQUESTS_WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
GENERATION_TOKENS = "vllm:generation_tokens_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
REQUEST_SUCCESS = "vllm:request_success_total"
PREEMPTIONS = "vllm:num_preemptions_total"
SPEC_DRAFTS = "vllm:spec_decode_num_drafts_total"
SPEC_DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens_total"
SPEC_ACCEPTED = "vllm:spec_decode_num_accepted_tokens_total"
SPEC_ACCEPTED_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos_total"

Labels = frozenset[tuple[str, str]]
# sample name -> {label set: value}
Snapshot = dict[str, dict[Labels, float]]


class MetricsParseError(ValueError):
    """The text is not Prometheus exposition format."""


class MetricsUnavailable(Exception):
    """GET /metrics did not answer 200 (``status`` None: no answer at all)."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class CounterReset(ValueError):
    """A counter went down between two snapshots: the server restarted within the window."""


def _prefiltered(text: str, prefixes: tuple[str, ...]) -> str:
    # vLLM exports ~100 families with histogram buckets; parsing only the lines wanted keeps a scrape
    # cheap. HELP/TYPE lines of other families go with their samples.
    keep = []
    for line in text.splitlines():
        is_comment = line.startswith(("# TYPE ", "# HELP "))
        if line.startswith(prefixes) or (is_comment and line[7:].startswith(prefixes)):
            keep.append(line)
    return "\n".join(keep) + "\n"


def parse_metrics(
    text: str, *, names: Iterable[str] | None = None, prefixes: Iterable[str] | None = None
) -> Snapshot:
    """The samples in ``text`` by sample name then label set; only ``names`` (exact sample names) or
    only those starting with one of ``prefixes`` when given. NaN samples are left out. Raises
    MetricsParseError on text that is not Prometheus exposition format."""
    wanted = set(names) if names is not None else None
    starts = tuple(prefixes) if prefixes is not None else None
    if starts is not None:
        text = _prefiltered(text, starts)
    out: Snapshot = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if wanted is not None and sample.name not in wanted:
                    continue
                if starts is not None and not sample.name.startswith(starts):
                    continue
                value = float(sample.value)
                if math.isnan(value):
                    continue
                out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = value
    except (ValueError, TypeError, IndexError) as exc:
        raise MetricsParseError(f"/metrics is not Prometheus text: {exc}") from exc
    return out


def total(snapshot: Snapshot, name: str) -> float | None:
    """One series summed over all label sets (engines, model names); None when absent."""
    series = snapshot.get(name)
    return None if series is None else sum(series.values())


def totals(snapshot: Snapshot) -> dict[str, float]:
    """Every series summed over its label sets."""
    return {name: sum(series.values()) for name, series in snapshot.items()}


def by_label(snapshot: Snapshot, name: str, label: str) -> dict[str, float]:
    """One series summed per value of ``label`` over the other labels (accepted tokens per draft
    position over engines); label sets without ``label`` are left out."""
    out: dict[str, float] = {}
    for labels, value in snapshot.get(name, {}).items():
        key = dict(labels).get(label)
        if key is not None:
            out[key] = out.get(key, 0.0) + value
    return out


def first_decrease(before: Snapshot, after: Snapshot) -> str | None:
    """The first series of ``before`` that is lower in ``after``, described, or None. Counters only go
    up while a server lives; lower means it restarted. A series missing from ``after`` counts as 0."""
    for name, series in before.items():
        later = after.get(name, {})
        for labels, value in series.items():
            now = later.get(labels, 0.0)
            if now < value:
                return f"{name}{dict(labels)} went from {value:g} to {now:g}"
    return None


def delta(before: Snapshot, after: Snapshot) -> Snapshot:
    """after - before per series of ``after``; one that first appears in ``after`` counts from 0 (vLLM
    creates labelled children lazily). Raises CounterReset when a counter went down. Meant for
    counters: a gauge's difference means nothing."""
    reset = first_decrease(before, after)
    if reset is not None:
        raise CounterReset(reset)
    out: Snapshot = {}
    for name, series in after.items():
        prior = before.get(name, {})
        for labels, value in series.items():
            out.setdefault(name, {})[labels] = value - prior.get(labels, 0.0)
    return out


def _snapshot(response: httpx.Response, names: Iterable[str] | None) -> Snapshot:
    if response.status_code != 200:
        raise MetricsUnavailable(f"GET /metrics: HTTP {response.status_code}", response.status_code)
    return parse_metrics(response.text, names=names)


def scrape(client: httpx.Client, endpoint: Endpoint, names: Iterable[str] | None = None) -> Snapshot:
    """GET /metrics with the endpoint's key. MetricsUnavailable when it does not answer 200 (not vLLM,
    a proxy in front, the server down)."""
    try:
        response = client.get(endpoint.url("/metrics"), headers=endpoint.headers)
    except httpx.HTTPError as exc:
        raise MetricsUnavailable(f"GET /metrics: {type(exc).__name__}: {exc}") from None
    return _snapshot(response, names)


async def ascrape(
    client: httpx.AsyncClient, endpoint: Endpoint, names: Iterable[str] | None = None
) -> Snapshot:
    """:func:`scrape` for an async client."""
    try:
        response = await client.get(endpoint.url("/metrics"), headers=endpoint.headers)
    except httpx.HTTPError as exc:
        raise MetricsUnavailable(f"GET /metrics: {type(exc).__name__}: {exc}") from None
    return _snapshot(response, names)


def gauge_peak(samples: Iterable[Mapping[str, float]], name: str) -> float | None:
    """The highest value of one (label-summed) gauge over several scrapes; None when no scrape had it."""
    seen = [s[name] for s in samples if name in s]
    return max(seen) if seen else None

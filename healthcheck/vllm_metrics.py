"""vLLM's Prometheus text, read for the few series the sidecar re-exports, and the spec-decode figures
derived from its counters over a sliding window.

vLLM exports cumulative counters only (``vllm:spec_decode_num_drafts_total``,
``..._num_draft_tokens_total``, ``..._num_accepted_tokens_total``,
``..._num_accepted_tokens_per_pos_total{position}``), so "is MTP still accepting?" needs rates. The
formulas are the ones vLLM's own ``vllm/v1/spec_decode/metrics.py`` documents:
acceptance rate = accepted / draft tokens; mean acceptance length = 1 + accepted / drafts;
per-position acceptance = accepted at position p / drafts. Counters are summed over label sets
(one per engine with data parallelism).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from serve.client import metrics
from serve.client.metrics import MetricsParseError as MetricsParseError  # what parse_vllm_metrics raises
from serve.launch.spec_decode import acceptance

_SPEC = "vllm:spec_decode_"
_WANTED_PREFIXES = (
    _SPEC,
    "vllm:kv_cache_usage_perc",
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
)


@dataclass(frozen=True)
class SpecCounters:
    drafts: float
    draft_tokens: float
    accepted: float
    accepted_per_pos: dict[int, float] = field(default_factory=dict)

    def as_snapshot(self) -> metrics.Snapshot:
        return {
            metrics.SPEC_DRAFTS: {frozenset(): self.drafts},
            metrics.SPEC_DRAFT_TOKENS: {frozenset(): self.draft_tokens},
            metrics.SPEC_ACCEPTED: {frozenset(): self.accepted},
            metrics.SPEC_ACCEPTED_PER_POS: {
                frozenset({("position", str(p))}): v for p, v in self.accepted_per_pos.items()
            },
        }

    def decreased_since(self, older: SpecCounters) -> bool:
        """A counter went down: vLLM restarted, and its counters began again from zero."""
        return metrics.first_decrease(older.as_snapshot(), self.as_snapshot()) is not None


@dataclass(frozen=True)
class VllmSnapshot:
    kv_cache_usage: float | None = None  # 0..1 (vLLM names it _perc, but it is a fraction)
    requests_waiting: float | None = None
    requests_running: float | None = None
    spec: SpecCounters | None = None  # None when speculative decoding is off


def parse_vllm_metrics(text: str) -> VllmSnapshot:
    """The series the sidecar uses, from vLLM's /metrics text. Raises MetricsParseError on text that
    is not Prometheus exposition format."""
    snapshot = metrics.parse_metrics(text, prefixes=_WANTED_PREFIXES)
    sums = metrics.totals(snapshot)
    per_pos: dict[int, float] = {}
    for pos, value in metrics.by_label(snapshot, metrics.SPEC_ACCEPTED_PER_POS, "position").items():
        if pos.isdigit():
            per_pos[int(pos)] = value

    spec = None
    if _SPEC + "num_drafts_total" in sums:
        spec = SpecCounters(
            drafts=sums[_SPEC + "num_drafts_total"],
            draft_tokens=sums.get(_SPEC + "num_draft_tokens_total", 0.0),
            accepted=sums.get(_SPEC + "num_accepted_tokens_total", 0.0),
            accepted_per_pos=per_pos,
        )
    return VllmSnapshot(
        kv_cache_usage=sums.get("vllm:kv_cache_usage_perc"),
        requests_waiting=sums.get("vllm:num_requests_waiting"),
        requests_running=sums.get("vllm:num_requests_running"),
        spec=spec,
    )


@dataclass(frozen=True)
class SpecDerived:
    window_s: float  # the span the figures cover (<= the configured window)
    drafts: float  # drafts in that span
    acceptance_rate: float | None  # None when no draft tokens in the span
    mean_acceptance_length: float
    per_position: dict[int, float]


class SpecDecodeWindow:
    """Counter samples over the last ``window_s`` seconds; figures are the difference between the
    newest and the oldest sample, as Prometheus's ``increase()`` would compute them."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, SpecCounters]] = deque()

    def add(self, t: float, counters: SpecCounters) -> None:
        if self._samples and counters.decreased_since(self._samples[-1][1]):
            self._samples.clear()  # a restart: differences across it would be negative nonsense
        self._samples.append((t, counters))
        while len(self._samples) > 1 and self._samples[0][0] < t - self.window_s:
            self._samples.popleft()

    def clear(self) -> None:
        self._samples.clear()

    def derived(self) -> SpecDerived | None:
        """Figures over the window, or None when it holds no drafts (idle server or one sample)."""
        if len(self._samples) < 2:
            return None
        (t0, old), (t1, new) = self._samples[0], self._samples[-1]
        drafts = new.drafts - old.drafts
        if drafts <= 0:
            return None
        accepted_per_pos = {p: v - old.accepted_per_pos.get(p, 0.0) for p, v in new.accepted_per_pos.items()}
        figures = acceptance(
            drafts, new.draft_tokens - old.draft_tokens, new.accepted - old.accepted, accepted_per_pos
        )
        assert figures.mean_length is not None  # drafts > 0 here
        return SpecDerived(
            window_s=t1 - t0,
            drafts=drafts,
            acceptance_rate=figures.rate,
            mean_acceptance_length=figures.mean_length,
            per_position=figures.per_position,
        )

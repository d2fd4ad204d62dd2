"""The arithmetic of `serve bench`, kept pure so it is tested without a server: per-request timings
from stream events, percentiles, Prometheus counter snapshots and their deltas, speculative-decoding
acceptance, the memory-bandwidth roofline and A/B ratios.

Units are in the names: ``_s`` seconds, ``_ms`` milliseconds, ``_tok_s`` tokens per second,
``_bytes`` bytes, ``_gbps`` gigabytes (1e9 bytes) per second, as plan.json's
``facts.gpu.memory_bandwidth_gbps``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from serve.client.metrics import (
    GENERATION_TOKENS,
    PREEMPTIONS,
    PROMPT_TOKENS,
    REQUEST_SUCCESS,
    SPEC_ACCEPTED,
    SPEC_ACCEPTED_PER_POS,
    SPEC_DRAFT_TOKENS,
    SPEC_DRAFTS,
    Snapshot,
    by_label,
    delta,
    parse_metrics,
    total,
)
from serve.client.metrics import (
    CounterReset as CounterReset,  # re-exported: the bench's readers catch it
)
from serve.launch.spec_decode import acceptance

# vLLM v1 counters (vllm/v1/spec_decode/metrics.py), named once in serve.client.metrics.
# The counters a row's delta is taken over; anything else in /metrics is ignored.
ROW_COUNTERS = (
    SPEC_DRAFTS,
    SPEC_DRAFT_TOKENS,
    SPEC_ACCEPTED,
    SPEC_ACCEPTED_PER_POS,
    GENERATION_TOKENS,
    PROMPT_TOKENS,
    REQUEST_SUCCESS,
    PREEMPTIONS,
)

# Labels that split one logical counter across vLLM engines/models; summed over, never compared.
_POSITION_LABEL = "position"


# --------------------------------------------------------------------------------------------------
# One request
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent chunk that carried generated tokens: when it arrived (seconds after the request
    was sent) and how many tokens it carried (1 when the server does not report continuous usage)."""

    t_s: float
    tokens: int


@dataclass(frozen=True)
class RequestSample:
    """What one streamed request measured. ``events`` are the token-bearing chunks in arrival order."""

    prompt_tokens: int
    completion_tokens: int
    e2e_s: float
    events: tuple[StreamEvent, ...]
    finish_reason: str | None = None

    @property
    def ttft_s(self) -> float | None:
        return self.events[0].t_s if self.events else None

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first: (e2e - ttft) / (tokens - 1), the definition of
        vLLM's own benchmark, so a chunk carrying several speculated tokens counts each of them."""
        ttft = self.ttft_s
        if ttft is None or self.completion_tokens < 2:
            return None
        return (self.e2e_s - ttft) / (self.completion_tokens - 1)

    @property
    def itl_s(self) -> list[float]:
        """Gaps between successive token-bearing chunks. With speculative decoding one chunk carries
        up to 1 + num_speculative_tokens tokens, so ITL is per engine step, not per token (TPOT is
        per token); this is how vLLM's benchmark reports it too."""
        times = [e.t_s for e in self.events]
        return [b - a for a, b in itertools.pairwise(times)]

    @property
    def decode_tok_s(self) -> float | None:
        tpot = self.tpot_s
        return None if not tpot else 1.0 / tpot


# --------------------------------------------------------------------------------------------------
# Percentiles
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distribution:
    """p50/p99/mean of a set of samples, in milliseconds; all None when there were no samples."""

    p50_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    n: int


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's default),
    or None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    return float(np.percentile(np.asarray(values, dtype=float), q))


def distribution_ms(values_s: Sequence[float]) -> Distribution:
    if not values_s:
        return Distribution(None, None, None, 0)
    ms = [v * 1000.0 for v in values_s]
    return Distribution(
        p50_ms=percentile(ms, 50),
        p99_ms=percentile(ms, 99),
        mean_ms=float(np.mean(ms)),
        n=len(ms),
    )


# --------------------------------------------------------------------------------------------------
# Prometheus counters
# --------------------------------------------------------------------------------------------------

# sample name -> {frozenset of (label, value) pairs: value}; parsed, summed and differenced by
# serve.client.metrics, the one reader of vLLM's /metrics.
CounterSnapshot = Snapshot
counter_delta = delta
counter_total = total
counter_by_label = by_label


def parse_counters(text: str, names: Iterable[str] = ROW_COUNTERS) -> CounterSnapshot:
    """The samples of ``names`` (default: the row counters) in a Prometheus text exposition. Names
    absent from the text are absent from the result (spec-decode counters only exist when speculative
    decoding is configured)."""
    return parse_metrics(text, names=names)


# --------------------------------------------------------------------------------------------------
# Speculative decoding
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecDecodeStats:
    drafts: int
    draft_tokens: int
    accepted_tokens: int
    acceptance_rate: float | None  # accepted / draft tokens
    mean_acceptance_length: float | None  # 1 + accepted / drafts: tokens emitted per target step
    per_position: tuple[float, ...] = field(default_factory=tuple)  # accepted at k / drafts


def spec_decode_stats(delta: CounterSnapshot) -> SpecDecodeStats | None:
    """Acceptance over a window from counter deltas; None when the server has no spec-decode
    counters (speculative decoding off). Zero drafts in the window gives None ratios, not 0: nothing
    was proposed, which is different from nothing accepted (the mtp.fc-quantized failure)."""
    drafts = counter_total(delta, SPEC_DRAFTS)
    if drafts is None:
        return None
    draft_tokens = counter_total(delta, SPEC_DRAFT_TOKENS) or 0.0
    accepted = counter_total(delta, SPEC_ACCEPTED) or 0.0
    per_pos = counter_by_label(delta, SPEC_ACCEPTED_PER_POS, _POSITION_LABEL)
    figures = acceptance(drafts, draft_tokens, accepted, per_pos)
    return SpecDecodeStats(
        drafts=int(drafts),
        draft_tokens=int(draft_tokens),
        accepted_tokens=int(accepted),
        acceptance_rate=figures.rate,
        mean_acceptance_length=figures.mean_length,
        per_position=tuple(figures.per_position.values()),
    )


# --------------------------------------------------------------------------------------------------
# Roofline
# --------------------------------------------------------------------------------------------------

# (mean context tokens per sequence, concurrent sequences) -> ceiling tok/s over all sequences.
# The bytes arithmetic is the memory planner's (serve.launch.memory); serve.bench.cli adapts plan.json to it.
Ceiling = Callable[[float, int], float]


def mean_decode_context(prompt_tokens: float, completion_tokens: float) -> float:
    """The context a decode step sees on average over a request: the prompt plus half the output."""
    return prompt_tokens + completion_tokens / 2.0


# --------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowSpec:
    kind: str  # "single" (the seed's table) or "sweep" (concurrency)
    prompt: str
    max_tokens: int
    concurrency: int

    @property
    def key(self) -> str:
        return f"{self.kind}|c{self.concurrency}|{self.max_tokens}|{self.prompt}"


@dataclass(frozen=True)
class RowResult:
    spec: RowSpec
    requests: int
    errors: int
    wall_s: float
    prompt_tokens_mean: float | None
    output_tokens: int
    output_tokens_per_request: tuple[int, ...]
    output_tok_s: float | None  # all output tokens of the row over its wall time
    per_stream_tok_s_mean: float | None  # mean over requests of tokens / e2e
    ttft: Distribution
    tpot: Distribution
    itl: Distribution
    e2e: Distribution
    spec_decode: SpecDecodeStats | None
    server_generation_tokens: int | None  # vLLM's own count over the row (checks the client's)
    server_prompt_tokens: int | None
    server_requests_success: int | None
    server_preemptions: int | None
    context_tokens_mean: float | None
    roofline_tok_s: float | None
    roofline_fraction: float | None  # output_tok_s / roofline_tok_s

    def to_json(self) -> dict:
        d = asdict(self)
        d["spec"] = asdict(self.spec)
        d["key"] = self.spec.key
        return d


def summarize_row(
    spec: RowSpec,
    samples: Sequence[RequestSample],
    wall_s: float,
    errors: int,
    delta: CounterSnapshot | None,
    ceiling: Ceiling | None,
) -> RowResult:
    """One table row from its requests, its wall time and the server's counter deltas over it."""
    ok = [s for s in samples if s.completion_tokens > 0]
    out_tokens = sum(s.completion_tokens for s in samples)
    prompt_mean = float(np.mean([s.prompt_tokens for s in samples])) if samples else None
    per_stream = [s.completion_tokens / s.e2e_s for s in ok if s.e2e_s > 0]
    context = None
    ceiling_tok_s = None
    if ok and prompt_mean is not None:
        context = mean_decode_context(prompt_mean, float(np.mean([s.completion_tokens for s in ok])))
        if ceiling is not None:
            ceiling_tok_s = ceiling(context, spec.concurrency)
    tok_s = out_tokens / wall_s if wall_s > 0 and samples else None

    def server(name: str) -> int | None:
        value = counter_total(delta, name) if delta is not None else None
        return None if value is None else round(value)

    return RowResult(
        spec=spec,
        requests=len(samples),
        errors=errors,
        wall_s=wall_s,
        prompt_tokens_mean=prompt_mean,
        output_tokens=out_tokens,
        output_tokens_per_request=tuple(s.completion_tokens for s in samples),
        output_tok_s=tok_s,
        per_stream_tok_s_mean=float(np.mean(per_stream)) if per_stream else None,
        ttft=distribution_ms([t for s in samples if (t := s.ttft_s) is not None]),
        tpot=distribution_ms([t for s in samples if (t := s.tpot_s) is not None]),
        itl=distribution_ms([gap for s in samples for gap in s.itl_s]),
        e2e=distribution_ms([s.e2e_s for s in samples]),
        spec_decode=spec_decode_stats(delta) if delta is not None else None,
        server_generation_tokens=server(GENERATION_TOKENS),
        server_prompt_tokens=server(PROMPT_TOKENS),
        server_requests_success=server(REQUEST_SUCCESS),
        server_preemptions=server(PREEMPTIONS),
        context_tokens_mean=context,
        roofline_tok_s=ceiling_tok_s,
        roofline_fraction=tok_s / ceiling_tok_s if tok_s is not None and ceiling_tok_s else None,
    )


# --------------------------------------------------------------------------------------------------
# A/B
# --------------------------------------------------------------------------------------------------

# (label, path into a row's JSON, True when higher is better). The ratio is always B / A; the flag
# lets the report say which way is better without inverting the number.
AB_METRICS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("output_tok_s", ("output_tok_s",), True),
    ("ttft_p50_ms", ("ttft", "p50_ms"), False),
    ("ttft_p99_ms", ("ttft", "p99_ms"), False),
    ("tpot_p50_ms", ("tpot", "p50_ms"), False),
    ("tpot_p99_ms", ("tpot", "p99_ms"), False),
    ("itl_p50_ms", ("itl", "p50_ms"), False),
    ("itl_p99_ms", ("itl", "p99_ms"), False),
    ("mean_acceptance_length", ("spec_decode", "mean_acceptance_length"), True),
    ("roofline_fraction", ("roofline_fraction",), True),
)


def ratio(b: float | None, a: float | None) -> float | None:
    """b / a, or None when either is unknown or a is zero (no meaningful ratio)."""
    if a is None or b is None or a == 0 or math.isnan(a) or math.isnan(b):
        return None
    return b / a


def _dig(row: Mapping, path: Sequence[str]) -> float | None:
    cur: object = row
    for part in path:
        if not isinstance(cur, Mapping) or cur.get(part) is None:
            return None
        cur = cur[part]
    return float(cur) if isinstance(cur, (int, float)) else None


def ab_rows(rows_a: Sequence[Mapping], rows_b: Sequence[Mapping]) -> list[dict]:
    """Rows of A and B matched by key (kind, concurrency, max_tokens, prompt), in A's order, each with
    both values and B/A per metric. A row present on one side only is reported with ratios None."""
    by_key_b = {r["key"]: r for r in rows_b}
    keys = [r["key"] for r in rows_a] + [
        r["key"] for r in rows_b if r["key"] not in {x["key"] for x in rows_a}
    ]
    by_key_a = {r["key"]: r for r in rows_a}
    out = []
    for key in keys:
        a, b = by_key_a.get(key), by_key_b.get(key)
        spec = (a or b)["spec"]  # type: ignore[index]
        metrics = {}
        for name, path, higher_is_better in AB_METRICS:
            va = _dig(a, path) if a else None
            vb = _dig(b, path) if b else None
            metrics[name] = {
                "a": va,
                "b": vb,
                "b_over_a": ratio(vb, va),
                "higher_is_better": higher_is_better,
            }
        out.append({"key": key, "spec": spec, "metrics": metrics})
    return out

"""Pure arithmetic of `serve bench`: percentiles, request timings, Prometheus counter deltas,
spec-decode acceptance, row summaries and A/B ratios."""

from __future__ import annotations

import pytest

from serve.bench.stats import (
    GENERATION_TOKENS,
    SPEC_ACCEPTED,
    SPEC_ACCEPTED_PER_POS,
    SPEC_DRAFT_TOKENS,
    SPEC_DRAFTS,
    CounterReset,
    RequestSample,
    RowSpec,
    StreamEvent,
    ab_rows,
    counter_by_label,
    counter_delta,
    counter_total,
    distribution_ms,
    mean_decode_context,
    parse_counters,
    percentile,
    ratio,
    spec_decode_stats,
    summarize_row,
)

# What vLLM 0.32's /metrics looks like for these counters (two engines to check the summing).
METRICS_BEFORE = """\
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="tiny"} 100.0
vllm:generation_tokens_total{engine="1",model_name="tiny"} 50.0
# HELP vllm:generation_tokens_created Number of generation tokens processed.
# TYPE vllm:generation_tokens_created gauge
vllm:generation_tokens_created{engine="0",model_name="tiny"} 1.7e9
# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="tiny"} 10.0
# HELP vllm:spec_decode_num_draft_tokens_total Number of draft tokens.
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="tiny"} 30.0
# HELP vllm:spec_decode_num_accepted_tokens_total Number of accepted tokens.
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="tiny"} 12.0
# HELP vllm:spec_decode_num_accepted_tokens_per_pos_total Accepted tokens per draft position.
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="tiny",position="0"} 7.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="tiny",position="1"} 4.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="tiny",position="2"} 1.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 0.0
"""

# 100 more drafts of 3 tokens: 85 / 63 / 44 accepted per position (the RTX 5090 report in CONTEXT.md)
METRICS_AFTER = (
    METRICS_BEFORE.replace('engine="0",model_name="tiny"} 100.0', 'engine="0",model_name="tiny"} 392.0')
    .replace('engine="1",model_name="tiny"} 50.0', 'engine="1",model_name="tiny"} 50.0')
    .replace(
        'drafts_total{engine="0",model_name="tiny"} 10.0', 'drafts_total{engine="0",model_name="tiny"} 110.0'
    )
    .replace(
        'draft_tokens_total{engine="0",model_name="tiny"} 30.0',
        'draft_tokens_total{engine="0",model_name="tiny"} 330.0',
    )
    .replace(
        'accepted_tokens_total{engine="0",model_name="tiny"} 12.0',
        'accepted_tokens_total{engine="0",model_name="tiny"} 204.0',
    )
    .replace('position="0"} 7.0', 'position="0"} 92.0')
    .replace('position="1"} 4.0', 'position="1"} 67.0')
    .replace('position="2"} 1.0', 'position="2"} 45.0')
)


def test_percentile_interpolates_linearly_between_ranks():
    assert percentile([10.0, 20.0, 30.0, 40.0], 50) == pytest.approx(25.0)
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_distribution_is_in_milliseconds():
    d = distribution_ms([0.010, 0.020, 0.030])
    assert (d.p50_ms, d.mean_ms, d.n) == (pytest.approx(20.0), pytest.approx(20.0), 3)
    assert distribution_ms([]).p50_ms is None


def test_request_sample_ttft_tpot_itl():
    # first token at 0.5 s; then chunks at 0.6 (2 tokens: a speculated one accepted) and 0.8 (1 token)
    s = RequestSample(
        prompt_tokens=20,
        completion_tokens=4,
        e2e_s=0.8,
        events=(StreamEvent(0.5, 1), StreamEvent(0.6, 2), StreamEvent(0.8, 1)),
    )
    assert s.ttft_s == 0.5
    assert s.tpot_s == pytest.approx((0.8 - 0.5) / 3)  # per token after the first, not per chunk
    assert s.itl_s == pytest.approx([0.1, 0.2])  # per chunk
    assert s.decode_tok_s == pytest.approx(10.0)


def test_request_sample_without_tokens_has_no_latencies():
    s = RequestSample(prompt_tokens=5, completion_tokens=1, e2e_s=0.2, events=(StreamEvent(0.2, 1),))
    assert s.tpot_s is None and s.itl_s == []
    empty = RequestSample(prompt_tokens=5, completion_tokens=0, e2e_s=0.2, events=())
    assert empty.ttft_s is None and empty.tpot_s is None


def test_parse_counters_keeps_wanted_samples_per_label_set():
    snap = parse_counters(METRICS_BEFORE)
    assert counter_total(snap, GENERATION_TOKENS) == 150.0  # summed over both engines
    assert "vllm:generation_tokens_created" not in snap
    assert "vllm:num_requests_running" not in snap
    assert counter_by_label(snap, SPEC_ACCEPTED_PER_POS, "position") == {"0": 7.0, "1": 4.0, "2": 1.0}


def test_counter_delta_and_acceptance_arithmetic():
    delta = counter_delta(parse_counters(METRICS_BEFORE), parse_counters(METRICS_AFTER))
    assert counter_total(delta, GENERATION_TOKENS) == 292.0
    assert counter_total(delta, SPEC_DRAFTS) == 100.0
    stats = spec_decode_stats(delta)
    assert stats is not None
    assert (stats.drafts, stats.draft_tokens, stats.accepted_tokens) == (100, 300, 192)
    assert stats.acceptance_rate == pytest.approx(192 / 300)  # accepted / draft tokens
    assert stats.mean_acceptance_length == pytest.approx(1 + 192 / 100)  # 1 + accepted / drafts
    assert stats.per_position == pytest.approx((0.85, 0.63, 0.44))


def test_series_that_appears_later_counts_from_zero():
    before = parse_counters(METRICS_BEFORE.split("# HELP vllm:spec_decode")[0])
    delta = counter_delta(before, parse_counters(METRICS_BEFORE))
    assert counter_total(delta, SPEC_DRAFTS) == 10.0


def test_counter_going_down_is_a_restart():
    with pytest.raises(CounterReset):
        counter_delta(parse_counters(METRICS_AFTER), parse_counters(METRICS_BEFORE))


def test_no_spec_counters_means_no_spec_stats_and_zero_drafts_means_unknown_ratios():
    assert spec_decode_stats({GENERATION_TOKENS: {frozenset(): 5.0}}) is None
    zero = spec_decode_stats({SPEC_DRAFTS: {frozenset(): 0.0}, SPEC_DRAFT_TOKENS: {frozenset(): 0.0}})
    assert zero is not None and zero.acceptance_rate is None and zero.mean_acceptance_length is None
    none_accepted = spec_decode_stats(
        {
            SPEC_DRAFTS: {frozenset(): 4.0},
            SPEC_DRAFT_TOKENS: {frozenset(): 4.0},
            SPEC_ACCEPTED: {frozenset(): 0.0},
        }
    )
    assert none_accepted is not None
    assert none_accepted.acceptance_rate == 0.0 and none_accepted.mean_acceptance_length == 1.0


def _sample(tokens: int, e2e: float, ttft: float = 0.1, prompt: int = 10) -> RequestSample:
    step = (e2e - ttft) / max(1, tokens - 1)
    events = tuple(StreamEvent(ttft + i * step, 1) for i in range(tokens))
    return RequestSample(prompt_tokens=prompt, completion_tokens=tokens, e2e_s=e2e, events=events)


def test_summarize_row_throughput_and_roofline_fraction():
    spec = RowSpec("sweep", "p", 100, 2)
    samples = [_sample(100, 2.0), _sample(100, 2.0), _sample(100, 2.0), _sample(100, 2.0)]
    seen: list[tuple[float, int]] = []

    def ceiling(context: float, batch: int) -> float:
        seen.append((context, batch))
        return 400.0

    delta = counter_delta(parse_counters(METRICS_BEFORE), parse_counters(METRICS_AFTER))
    row = summarize_row(spec, samples, wall_s=4.0, errors=0, delta=delta, ceiling=ceiling)
    assert row.output_tokens == 400 and row.requests == 4
    assert row.output_tok_s == pytest.approx(100.0)  # 400 tokens over 4 s of wall time
    assert row.per_stream_tok_s_mean == pytest.approx(50.0)
    assert seen == [(pytest.approx(mean_decode_context(10, 100)), 2)]
    assert row.roofline_tok_s == 400.0 and row.roofline_fraction == pytest.approx(0.25)
    assert row.server_generation_tokens == 292
    assert row.spec_decode is not None and row.spec_decode.drafts == 100
    assert row.ttft.p50_ms == pytest.approx(100.0)
    assert row.tpot.p50_ms == pytest.approx(1900 / 99)
    assert row.to_json()["key"] == spec.key


def test_summarize_row_without_metrics_or_roofline():
    row = summarize_row(RowSpec("single", "p", 8, 1), [_sample(8, 1.0)], 1.0, 0, None, None)
    assert row.spec_decode is None and row.server_generation_tokens is None
    assert row.roofline_tok_s is None and row.roofline_fraction is None


def _row_json(key: str, tok_s: float | None, tpot: float | None, accept: float | None) -> dict:
    kind, conc, max_tokens, prompt = key.split("|")
    return {
        "key": key,
        "spec": {"kind": kind, "prompt": prompt, "max_tokens": int(max_tokens), "concurrency": int(conc[1:])},
        "output_tok_s": tok_s,
        "tpot": {"p50_ms": tpot, "p99_ms": None},
        "ttft": {"p50_ms": 100.0},
        "itl": None,
        "spec_decode": None if accept is None else {"mean_acceptance_length": accept},
        "roofline_fraction": None,
    }


def test_ab_ratios_are_b_over_a_per_matching_row():
    a = [_row_json("single|c1|128|haiku", 30.0, 32.0, None), _row_json("sweep|c2|256|q", 50.0, 40.0, None)]
    b = [_row_json("sweep|c2|256|q", 75.0, 20.0, 1.8), _row_json("single|c1|128|haiku", 60.0, 16.0, 1.9)]
    rows = ab_rows(a, b)
    assert [r["key"] for r in rows] == ["single|c1|128|haiku", "sweep|c2|256|q"]  # A's order
    m = rows[0]["metrics"]
    assert m["output_tok_s"] == {"a": 30.0, "b": 60.0, "b_over_a": 2.0, "higher_is_better": True}
    assert m["tpot_p50_ms"]["b_over_a"] == pytest.approx(0.5)
    assert m["tpot_p50_ms"]["higher_is_better"] is False
    assert m["ttft_p50_ms"]["b_over_a"] == 1.0
    assert m["mean_acceptance_length"] == {"a": None, "b": 1.9, "b_over_a": None, "higher_is_better": True}
    assert m["itl_p50_ms"]["b_over_a"] is None
    assert rows[1]["metrics"]["output_tok_s"]["b_over_a"] == pytest.approx(1.5)


def test_ab_row_on_one_side_only_has_no_ratio():
    rows = ab_rows(
        [_row_json("single|c1|128|haiku", 30.0, 1.0, None)], [_row_json("sweep|c3|256|q", 9.0, 1.0, None)]
    )
    assert [r["key"] for r in rows] == ["single|c1|128|haiku", "sweep|c3|256|q"]
    assert rows[0]["metrics"]["output_tok_s"] == {
        "a": 30.0,
        "b": None,
        "b_over_a": None,
        "higher_is_better": True,
    }
    assert rows[1]["metrics"]["output_tok_s"]["a"] is None


def test_ratio_guards_zero_and_unknown():
    assert ratio(2.0, 4.0) == 0.5
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 1.0) is None
    assert ratio(1.0, float("nan")) is None

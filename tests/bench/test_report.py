"""Rendering of bench results: the seed-shaped markdown table, the A/B table, n/a cells, the chart."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.bench import report
from serve.bench.stats import RequestSample, RowSpec, StreamEvent, ab_rows, summarize_row


def _row(
    kind: str, prompt: str, max_tokens: int, conc: int, tokens: int, e2e: float, ceiling=None, spec=None
) -> dict:
    samples = [
        RequestSample(
            prompt_tokens=12,
            completion_tokens=tokens,
            e2e_s=e2e,
            events=tuple(StreamEvent(0.05 + i * (e2e - 0.05) / max(1, tokens - 1), 1) for i in range(tokens)),
        )
    ] * conc
    row = summarize_row(RowSpec(kind, prompt, max_tokens, conc), samples, e2e, 0, spec, ceiling).to_json()
    return row


def _result(rows: list[dict], roofline: dict | None = None) -> dict:
    return {
        "started_at": "2026-11-27T00:00:00+00:00",
        "context": {
            "model": "tiny",
            "profile": "cpu-tiny",
            "base_url": "http://127.0.0.1:18600",
            "gpu": None,
            "engine": {"name": "vllm-0.32", "version": "0.32.0"},
            "settings": {"kv_cache_dtype": "auto", "max_num_seqs": 2},
        },
        "options": {"repeats": 1, "warmup": 1, "ignore_eos": True, "temperature": None},
        "roofline": roofline or {"reason": "CPU engine: no GPU memory bandwidth"},
        "rows": rows,
    }


SEED = [
    ("Write a haiku", 128),
    ("Explain quantum computing in 3 paragraphs", 256),
    ("Write 8 paragraphs about deep learning history", 1024),
    ("What is 127*83? Show reasoning", 256),
]


def test_single_stream_table_has_the_seeds_columns_first_and_one_row_per_prompt():
    rows = [_row("single", p, n, 1, n, n / 60.0) for p, n in SEED]
    table = report.single_stream_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| Prompt | max_tokens | tok/s | TTFT p50 / p99 (ms) |")
    assert len(lines) == 2 + 4
    assert lines[2].startswith('| "Write a haiku" | 128 | 60.0 |')
    assert lines[4].startswith('| "Write 8 paragraphs about deep learning history" | 1024 | 60.0 |')
    # no spec decode, no roofline on CPU: n/a, never 0
    assert lines[2].rstrip(" |").endswith("n/a | n/a | n/a | n/a | n/a")


def test_roofline_and_acceptance_cells():
    from serve.bench.stats import SPEC_ACCEPTED, SPEC_ACCEPTED_PER_POS, SPEC_DRAFT_TOKENS, SPEC_DRAFTS

    delta = {
        SPEC_DRAFTS: {frozenset(): 100.0},
        SPEC_DRAFT_TOKENS: {frozenset(): 100.0},
        SPEC_ACCEPTED: {frozenset(): 85.0},
        SPEC_ACCEPTED_PER_POS: {frozenset({("position", "0")}): 85.0},
    }
    row = _row("single", "Write a haiku", 128, 1, 128, 2.0, ceiling=lambda c, b: 128.0, spec=delta)
    cells = report.single_stream_table([row]).splitlines()[2].strip("| ").split(" | ")
    assert cells[2] == "64.0"  # 128 tokens in 2 s
    assert cells[6:11] == ["85%", "1.85", "0.85", "128", "50%"]


def test_sweep_table_and_markdown_report_sections():
    rows = [_row("single", p, n, 1, n, 1.0) for p, n in SEED] + [_row("sweep", SEED[1][0], 256, 2, 256, 2.0)]
    md = report.markdown_report(_result(rows))
    assert "## Single stream" in md and "## Concurrency sweep" in md
    sweep_line = next(line for line in md.splitlines() if line.startswith("| 2 |"))
    assert '| 2 | "Explain quantum computing in 3 paragraphs" | 256 | 256.0 | 128.0 |' in sweep_line
    assert "- roofline: n/a (CPU engine: no GPU memory bandwidth)" in md
    assert "- engine: vllm-0.32 0.32.0" in md


def test_markdown_escapes_pipes_in_prompts():
    table = report.md_table(["a"], [["x | y"]])
    assert table.splitlines()[2] == "| x \\| y |"


def test_ab_markdown_shows_both_sides_and_ratio():
    a = [_row("single", "Write a haiku", 128, 1, 128, 4.0)]
    b = [_row("single", "Write a haiku", 128, 1, 128, 2.0)]
    ab = {"a": {"name": "seed"}, "b": {"name": "fast"}, "rows": ab_rows(a, b)}
    md = report.ab_markdown(ab)
    line = next(line for line in md.splitlines() if line.startswith('| "Write a haiku"'))
    # TPOT B/A: (2.0 - 0.05) / (4.0 - 0.05) per token after the first
    assert line.startswith('| "Write a haiku" | 128 | 32.0 | 64.0 | 2.00x | 0.49x | 1.00x | 0.49x |')
    assert "tok/s seed" in md and "tok/s fast" in md


@pytest.mark.parametrize("series", [1, 2])
def test_chart_is_a_png(tmp_path: Path, series: int):
    pytest.importorskip("matplotlib")
    rows = [_row("single", p, n, 1, n, 1.0, ceiling=lambda c, b: 500.0) for p, n in SEED] + [
        _row("sweep", SEED[1][0], 256, 2, 256, 2.0)
    ]
    path = tmp_path / "bench.png"
    assert report.write_chart(path, [(f"s{i}", rows) for i in range(series)]) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_without_matplotlib_is_skipped_with_a_message(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(report, "_pyplot", lambda: None)
    path = tmp_path / "bench.png"
    assert report.write_chart(path, [("x", [])]) == report.MISSING_MATPLOTLIB
    assert not path.exists()


def test_formatting_helpers():
    assert report.fmt(None) == "n/a" and report.fmt(1.26) == "1.3"
    assert report.fmt_pct(0.444) == "44%" and report.fmt_ratio(1.5) == "1.50x"
    assert report.fmt_pair({"p50_ms": 1.0, "p99_ms": None}) == "1.0 / n/a"

"""What `serve bench` writes: the JSON result, markdown tables shaped like the seed card's throughput
table (prompt, max_tokens, tok/s, then the extra columns), a PNG chart and a progress bar.

Everything here reads the JSON form of the result (plain dicts), so a report can be re-rendered from a
saved bench.json, and A/B reports from two of them."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

NA = "n/a"


def fmt(value: float | None, digits: int = 1) -> str:
    return NA if value is None else f"{value:.{digits}f}"


def fmt_pct(value: float | None) -> str:
    return NA if value is None else f"{value * 100:.0f}%"


def fmt_pair(dist: Mapping[str, Any] | None, digits: int = 1) -> str:
    """p50 / p99 of a distribution in ms."""
    if not dist:
        return NA
    return f"{fmt(dist.get('p50_ms'), digits)} / {fmt(dist.get('p99_ms'), digits)}"


def fmt_ratio(value: float | None) -> str:
    return NA if value is None else f"{value:.2f}x"


def _or_default(value: object) -> str:
    return "server default" if value is None else str(value)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _spec_cells(row: Mapping[str, Any]) -> list[str]:
    spec = row.get("spec_decode")
    if not spec:
        return [NA, NA, NA]
    per_pos = spec.get("per_position") or []
    return [
        fmt_pct(spec.get("acceptance_rate")),
        fmt(spec.get("mean_acceptance_length"), 2),
        " / ".join(f"{p:.2f}" for p in per_pos) or NA,
    ]


def _prompt_label(prompt: str) -> str:
    return f'"{prompt}"'


_EXTRA_HEADER = [
    "TTFT p50 / p99 (ms)",
    "TPOT p50 / p99 (ms)",
    "ITL p50 / p99 (ms)",
    "accept rate",
    "mean accept len",
    "accept per pos",
    "roofline tok/s",
    "% of roofline",
]


def _extra_cells(row: Mapping[str, Any]) -> list[str]:
    return [
        fmt_pair(row.get("ttft")),
        fmt_pair(row.get("tpot"), 2),
        fmt_pair(row.get("itl"), 2),
        *_spec_cells(row),
        fmt(row.get("roofline_tok_s"), 0),
        fmt_pct(row.get("roofline_fraction")),
    ]


def single_stream_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The seed's table (prompt type, max_tokens, throughput) plus latency, acceptance and roofline."""
    body = [
        [
            _prompt_label(r["spec"]["prompt"]),
            str(r["spec"]["max_tokens"]),
            fmt(r.get("output_tok_s")),
            *_extra_cells(r),
        ]
        for r in rows
        if r["spec"]["kind"] == "single"
    ]
    return md_table(["Prompt", "max_tokens", "tok/s", *_EXTRA_HEADER], body)


def sweep_table(rows: Sequence[Mapping[str, Any]]) -> str:
    body = [
        [
            str(r["spec"]["concurrency"]),
            _prompt_label(r["spec"]["prompt"]),
            str(r["spec"]["max_tokens"]),
            fmt(r.get("output_tok_s")),
            fmt(r.get("per_stream_tok_s_mean")),
            *_extra_cells(r),
        ]
        for r in rows
        if r["spec"]["kind"] == "sweep"
    ]
    return md_table(
        ["Concurrency", "Prompt", "max_tokens", "tok/s (all streams)", "tok/s per stream", *_EXTRA_HEADER],
        body,
    )


def header_lines(result: Mapping[str, Any]) -> list[str]:
    """Who/what/where: the card, engine and versions a published table must name."""
    ctx = result.get("context", {})
    opts = result.get("options", {})
    gpu = ctx.get("gpu") or {}
    engine = ctx.get("engine") or {}
    roof = result.get("roofline") or {}
    lines = [
        f"- model: `{ctx.get('model')}`" + (f" (profile `{ctx['profile']}`)" if ctx.get("profile") else ""),
        f"- endpoint: {ctx.get('base_url')}",
        f"- GPU: {gpu.get('name') or NA}" + (f", {gpu['count']}x" if gpu.get("count", 1) != 1 else ""),
        f"- engine: {engine.get('name') or NA} {engine.get('version') or ''}".rstrip(),
    ]
    settings = ctx.get("settings") or {}
    if settings:
        keys = (
            "kv_cache_dtype",
            "speculative_method",
            "num_speculative_tokens",
            "cudagraph_mode",
            "max_num_seqs",
        )
        lines.append("- settings: " + ", ".join(f"{k}={settings.get(k)}" for k in keys if k in settings))
    lines.append(
        f"- {opts.get('repeats')} repeats after {opts.get('warmup')} warm-up round(s) per row; "
        f"ignore_eos={opts.get('ignore_eos')}; temperature={_or_default(opts.get('temperature'))}"
    )
    if roof.get("bandwidth_gbps"):
        lines.append(
            f"- roofline: {roof['weight_bytes_per_step'] / 1e9:.2f} GB of weights per decode step + KV at "
            f"the row's mean context, over {roof['bandwidth_gbps']:.0f} GB/s ({roof.get('source')}); "
            "one token per sequence per step, so speculative decoding can exceed 100%"
        )
    else:
        lines.append(f"- roofline: n/a ({roof.get('reason', 'no GPU bandwidth known')})")
    lines.append(f"- when: {result.get('started_at')}")
    return lines


def markdown_report(result: Mapping[str, Any]) -> str:
    rows = result.get("rows", [])
    parts = ["## Single stream", "", *header_lines(result), "", single_stream_table(rows)]
    if any(r["spec"]["kind"] == "sweep" for r in rows):
        parts += ["", "## Concurrency sweep", "", sweep_table(rows)]
    parts += [
        "",
        "TPOT is per output token after the first; ITL is per streamed chunk (an engine step, which carries "
        "several tokens under speculative decoding). Acceptance comes from /metrics deltas over each row.",
    ]
    return "\n".join(parts) + "\n"


def ab_markdown(ab: Mapping[str, Any]) -> str:
    """Per row: A, B and B/A for throughput, latency and acceptance."""
    a_name, b_name = ab["a"]["name"], ab["b"]["name"]
    header = [
        "Row",
        "max_tokens",
        f"tok/s {a_name}",
        f"tok/s {b_name}",
        "tok/s B/A",
        "TPOT p50 B/A",
        "TTFT p50 B/A",
        "ITL p50 B/A",
        f"accept len {a_name}",
        f"accept len {b_name}",
        "% roofline A / B",
    ]
    body = []
    for row in ab["rows"]:
        spec, m = row["spec"], row["metrics"]
        label = (
            _prompt_label(spec["prompt"])
            if spec["kind"] == "single"
            else f"c={spec['concurrency']} {_prompt_label(spec['prompt'])}"
        )
        body.append(
            [
                label,
                str(spec["max_tokens"]),
                fmt(m["output_tok_s"]["a"]),
                fmt(m["output_tok_s"]["b"]),
                fmt_ratio(m["output_tok_s"]["b_over_a"]),
                fmt_ratio(m["tpot_p50_ms"]["b_over_a"]),
                fmt_ratio(m["ttft_p50_ms"]["b_over_a"]),
                fmt_ratio(m["itl_p50_ms"]["b_over_a"]),
                fmt(m["mean_acceptance_length"]["a"], 2),
                fmt(m["mean_acceptance_length"]["b"], 2),
                f"{fmt_pct(m['roofline_fraction']['a'])} / {fmt_pct(m['roofline_fraction']['b'])}",
            ]
        )
    lines = [
        f"## A/B: A = `{a_name}`, B = `{b_name}`",
        "",
        "Ratios are B / A: above 1x is better for tok/s and acceptance length, "
        "below 1x is better for latencies.",
        "",
        md_table(header, body),
    ]
    return "\n".join(lines) + "\n"


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------
# Chart
# --------------------------------------------------------------------------------------------------


def _pyplot():
    """matplotlib with the Agg backend (no display), or None when it is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MISSING_MATPLOTLIB = "matplotlib is not installed, so no PNG chart: pip install 'qwen-vllm-kit[bench]'"


def _short(prompt: str, width: int = 22) -> str:
    return prompt if len(prompt) <= width else prompt[: width - 1] + "…"


def write_chart(
    path: Path, series: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], title: str | None = None
) -> str | None:
    """Left: single-stream tok/s per prompt (one bar group per series, roofline ceiling as a tick);
    right: all-stream tok/s over concurrency. Returns a message instead of writing when matplotlib is
    missing. ``series`` is [(name, rows)], one entry for a plain run, two for A/B."""
    plt = _pyplot()
    if plt is None:
        return MISSING_MATPLOTLIB
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    prompts: list[str] = []
    for _, rows in series:
        for r in rows:
            if r["spec"]["kind"] == "single" and r["spec"]["prompt"] not in prompts:
                prompts.append(r["spec"]["prompt"])
    width = 0.8 / max(1, len(series))
    levels: set[int] = set()
    any_ceiling = False
    for i, (name, rows) in enumerate(series):
        single = {r["spec"]["prompt"]: r for r in rows if r["spec"]["kind"] == "single"}
        xs = [j + i * width for j in range(len(prompts))]
        values = [(single.get(p) or {}).get("output_tok_s") or 0.0 for p in prompts]
        bars = left.bar(xs, values, width=width, label=name)
        left.bar_label(bars, fmt="%.1f", fontsize=7)
        ceilings = [(single.get(p) or {}).get("roofline_tok_s") for p in prompts]
        for x, c in zip(xs, ceilings, strict=True):
            if c:
                any_ceiling = True
                left.hlines(c, x - width / 2, x + width / 2, colors="black", linestyles="dashed")
        sweep = sorted(
            (r for r in rows if r["spec"]["kind"] == "sweep"), key=lambda r: r["spec"]["concurrency"]
        )
        if sweep:
            # the sweep's concurrency 1 is the single-stream row of the same prompt
            first = single.get(sweep[0]["spec"]["prompt"])
            points = ([first] if first else []) + sweep
            levels.update(r["spec"]["concurrency"] for r in points)
            right.plot(
                [r["spec"]["concurrency"] for r in points],
                [r.get("output_tok_s") or 0.0 for r in points],
                marker="o",
                label=name,
            )
    if len(series) > 1:
        left.set_ylim(top=left.get_ylim()[1] * 1.2)  # room for the legend above the bars
    left.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(prompts))])
    left.set_xticklabels([_short(p) for p in prompts], rotation=15, ha="right", fontsize=8)
    left.set_ylabel("output tok/s (single stream)")
    left.set_title("Seed prompts" + (" (dashed: roofline ceiling)" if any_ceiling else ""))
    right.set_xticks(sorted(levels))
    right.set_xlabel("concurrent streams")
    right.set_ylabel("output tok/s (all streams)")
    right.set_title("Concurrency sweep")
    for ax in (left, right):
        ax.grid(True, axis="y", alpha=0.3)
        if len(series) > 1 or ax is right:
            handles, _ = ax.get_legend_handles_labels()
            if handles:
                ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------------


class Progress:
    """A progress bar over requests on stderr: tqdm when installed, else one line rewritten in place.
    Disabled (silent) when stderr is not a terminal and ``force`` is False, so logs stay clean."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True) -> None:
        self.total, self.desc, self.done, self.enabled = total, desc, 0, enabled
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=desc, unit="req", file=sys.stderr, leave=True)
            except ImportError:
                self._bar = None

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(n)
        else:
            print(f"\r{self.desc}: {self.done}/{self.total} {note}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            print(file=sys.stderr)

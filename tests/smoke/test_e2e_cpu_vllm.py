"""The smoke suite against a real vLLM (CPU build) on a tiny generated model, started the way users
start it: ``python -m serve launch --profile cpu-tiny --set model.path=DIR --set serving.port=N``.

The expectations come from the plan file the launcher wrote, so a setting that did not take effect
(reasoning or tool parser, max_num_seqs, max_model_len, speculative decoding) fails a check.

The server comes from tests/support/vllm_server.py (launch, readiness, stop by process group)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve.smoke.checks import (
    CHECKS,
    CheckFailed,
    SmokeOptions,
    build_context,
    judge_concurrency,
    observe_running,
    overlap_max_tokens,
    run_suite,
)
from serve.smoke.cli import expectations_from_plan, read_plan
from tests.support.require import need_vllm
from tests.support.vllm_server import VllmServer, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def launched(profile: str, model_dir: Path, work: Path) -> Iterator[VllmServer]:
    with VllmServer(profile, model_dir, port=free_port(), workdir=work) as server:
        yield server


@pytest.fixture(scope="module")
def dense_vllm(tiny_models, tmp_path_factory) -> Iterator[VllmServer]:
    need_vllm()
    with launched("cpu-tiny", tiny_models("qwen3"), tmp_path_factory.mktemp("smoke-e2e")) as server:
        yield server


def _smoke_cli(server: VllmServer, report: Path, *extra: str) -> tuple[int, dict]:
    argv = [
        sys.executable,
        "-m",
        "serve",
        "smoke",
        "--plan-file",
        str(server.plan_file),
        "--report",
        str(report),
    ]
    done = subprocess.run([*argv, *extra], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert report.exists(), done.stdout + done.stderr
    return done.returncode, json.loads(report.read_text())


def test_every_plumbing_check_passes_on_cpu_vllm(dense_vllm: VllmServer, tmp_path: Path) -> None:
    code, report = _smoke_cli(dense_vllm, tmp_path / "report.json")
    results = {r["name"]: r for r in report["results"]}
    assert code == 0, json.dumps(report["results"], indent=1) + "\n" + dense_vllm.log_tail()
    plumbing = [name for name, spec in CHECKS.items() if not spec.quality]
    # The plan turns every feature the checks look at on or off: nothing is left to skip.
    assert {n: results[n]["status"] for n in plumbing} == {n: "pass" for n in plumbing}
    assert report["option_sources"]["max_num_seqs"] == "plan"
    # vLLM 0.32 names the field "reasoning" (older versions: "reasoning_content"); notice a change.
    assert results["reasoning"]["data"]["field"] == "reasoning"
    # decided by the server's own gauge, sampled while the max_num_seqs (4) streams ran
    concurrency = results["concurrency"]["data"]
    assert concurrency["requests"] == 4 and concurrency["server_running_peak"] >= 2, concurrency
    assert results["unknown_model"]["detail"].startswith("HTTP 404")
    assert results["prompt_too_long"]["detail"].startswith("HTTP 400")


def test_quality_checks_fail_on_random_weights(dense_vllm: VllmServer) -> None:
    """A random-weight model is the honest negative control: the quality checks must not pass it."""
    plan = read_plan(dense_vllm.plan_file)
    options = SmokeOptions(**expectations_from_plan(plan), quality_max_tokens=64)
    ctx = build_context(dense_vllm.base_url, options=options)
    report = run_suite(ctx, only=["factual", "tool_round_trip"])
    ctx.close()
    assert [r.status for r in report.results] == ["fail", "fail"], report.results


def test_concurrency_fails_when_the_requests_go_one_after_another(dense_vllm: VllmServer) -> None:
    """The negative control of the concurrency check on the real server: the same requests sent one
    after another (each stream finished before the next is sent) must fail it, from the server's own
    vllm:num_requests_running, with no retry to rescue it."""
    options = SmokeOptions(**expectations_from_plan(read_plan(dense_vllm.plan_file)))
    ctx = build_context(dense_vllm.base_url, options=options)
    try:
        seen = observe_running(ctx, 4, overlap_max_tokens(options), at_once=False)
    finally:
        ctx.close()
    assert not seen.errors and len(seen.outs) == 4
    assert seen.running and max(seen.running) <= 1.0, seen.running
    with pytest.raises(CheckFailed, match="one after another"):
        judge_concurrency(seen, {})


def test_plan_that_disagrees_with_the_server_fails(dense_vllm: VllmServer, tmp_path: Path) -> None:
    """A launcher that wrote one thing and started another is caught from the server side."""
    plan = read_plan(dense_vllm.plan_file)
    plan["settings"]["max_model_len"] = plan["settings"]["max_model_len"] * 2
    wrong = tmp_path / "plan.json"
    wrong.write_text(json.dumps(plan))
    report = tmp_path / "report.json"
    argv = [sys.executable, "-m", "serve", "smoke", "--plan-file", str(wrong), "--report", str(report)]
    done = subprocess.run([*argv, "--only", "models"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "served max_model_len" in json.loads(report.read_text())["results"][0]["detail"]


def test_spec_acceptance_on_an_agreeing_mtp_model(tiny_models, tmp_path: Path) -> None:
    """MTP on the hybrid model whose drafter agrees with it: the spec-decode counters move and the
    acceptance floor holds, read the way a user's deployment is read (deltas of /metrics)."""
    need_vllm()
    model = tiny_models("qwen3_5", agreeing_mtp=True)
    with launched("cpu-tiny-mtp", model, tmp_path) as server:
        code, report = _smoke_cli(
            server, tmp_path / "report.json", "--only", "models,chat,metrics,spec_acceptance"
        )
    results = {r["name"]: r for r in report["results"]}
    assert code == 0, json.dumps(report["results"], indent=1)
    assert results["metrics"]["data"]["spec_decode_series"] is True
    assert results["spec_acceptance"]["data"]["acceptance_rate"] >= 0.3

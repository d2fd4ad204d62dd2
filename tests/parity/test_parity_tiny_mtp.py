"""MTP on vs off on the tiny random-weight Qwen3.5 hybrid (Gated DeltaNet + full attention), cpu-tiny-mtp.

Measured (docs/parity.md): with random weights greedy parity is NOT identity. The model whose MTP head
agrees with it emits one constant token, so on and off are identical. The one whose head does not agree
(every draft rejected) diverges on 3 of 8 prompts, at the same positions on every run, and at each
divergence the two candidates were a near tie: equal logprobs on one side, one bf16 step (2^-8 = 0.0039
nats at these magnitudes) apart on the other. Random weights give near-uniform logits, so the verify
step (two query tokens) and a plain decode step (one) round to different winners. What is stable, and
asserted: identity for the agreeing head; for the other, every divergence is such a near tie (a wrong
token of the PR 51812 kind would be a real gap). The exact positions are not asserted: they hang on
kernel rounding.

Cost: the agreeing "on" side is the session's cpu_tiny_mtp_server; three tiny starts (~1 min each)."""

from __future__ import annotations

import pytest

from tests.parity.conftest import run_parity

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Two bf16 steps at |logit| < 1: the largest gap a near tie of rounding can show here.
NEAR_TIE_NATS = 2 * 2**-8
MAX_TOKENS = "32"
# MTP on a hybrid turns prefix caching off (rule cpu-hybrid-spec-no-prefix-caching) and the model's
# sampling defaults off (cpu-spec-no-model-sampling-defaults); the "off" side gets the same, so that
# speculation is the only difference.
SAME_AS_MTP_SIDE = ("--set-b", "serving.enable_prefix_caching=false", "--set-b", "serving.speculative=null")
GENERATION_CONFIG_VLLM = ("--set-b", "serving.generation_config=vllm")


def test_agreeing_mtp_head_on_vs_off_is_identical(cpu_tiny_mtp_server, tiny_models, tmp_path):
    run = run_parity(
        tmp_path,
        "--base-url-a",
        cpu_tiny_mtp_server.base_url,
        "--profile",
        "cpu-tiny-mtp",
        "--set",
        f"model.path={tiny_models('qwen3_5', agreeing_mtp=True)}",
        *SAME_AS_MTP_SIDE,
        *GENERATION_CONFIG_VLLM,
        "--max-tokens",
        MAX_TOKENS,
    )
    assert run.rc == 0, run.log
    assert run.result is not None and run.result["identical_prompts"] == 8
    spec = run.result["a"]["spec_decode"]
    assert spec is not None and spec["accepted_tokens"] > 0, run.out  # drafts were accepted on A
    assert run.result["b"]["spec_decode"] is None


def test_non_agreeing_mtp_head_drifts_only_at_near_ties(tiny_models, tmp_path):
    # both sides launched by the CLI, one after the other (the --profile path end to end)
    run = run_parity(
        tmp_path,
        "--profile",
        "cpu-tiny-mtp",
        "--set",
        f"model.path={tiny_models('qwen3_5')}",
        "--set",
        "serving.enable_prefix_caching=false",
        "--set-b",
        "serving.speculative=null",
        *GENERATION_CONFIG_VLLM,
        "--max-tokens",
        MAX_TOKENS,
        "--threshold",
        "0",
    )
    assert run.rc == 0, run.log
    result = run.result
    assert result is not None
    spec = result["a"]["spec_decode"]
    assert spec is not None and spec["draft_tokens"] > 0, run.out  # MTP drafted on A (and was rejected)
    print(run.out)  # the measured table, in the test log
    for prompt in result["prompts"]:
        if prompt["identical"]:
            continue
        position, gap = prompt["first_divergence"], prompt["divergence_gap"]
        assert gap is not None and not prompt["gap_is_lower_bound"], (prompt["index"], position, run.out)
        assert gap <= NEAR_TIE_NATS, (
            f"prompt {prompt['index']} diverges at {position} with a gap of {gap:.4f} nats: not a rounding "
            f"tie, a real difference between MTP on and off\n{run.out}"
        )

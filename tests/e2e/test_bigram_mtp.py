"""The "bigram" agreeing-MTP model (serve.checkpoint.bigram; what ``synth-model --agreeing-mtp`` writes at
the real size) served by the CPU build of vLLM with MTP 3 through ``--profile cpu-tiny-mtp``: every draft
at every position is accepted (read from /metrics), the greedy answers are long walks of distinct tokens
(the model's f, computed here from the construction), and ``serve parity`` MTP on vs off is identical.

Unlike the tiny ``--agreeing-mtp`` model (one constant token), a wrong draft here would show: each
position has a different token, so parity identity and acceptance 1.0 are not trivially true. (The
answer depends on the last prompt token only: all 8 chat prompts end with the template's tokens and get
the same 32-token walk.)

Seen on this build at temperature 1.0 (not asserted): the same server samples tokens of logprob -27 and
rejects drafts, while greedy follows f exactly; the MTP ceiling is measured greedy.

Cost: one tiny server start with MTP 3 (~1-2 min on 2 loaded cores) plus the parity run's MTP-off server
(~1-2 min) and 2 x 8 greedy answers of 32 tokens: about 4 min."""

from __future__ import annotations

import json

import pytest

from serve.checkpoint import bigram
from serve.checkpoint.synth_model import ordinary_ids
from serve.client.metrics import SPEC_ACCEPTED, SPEC_DRAFT_TOKENS, parse_metrics, total
from tests.parity.conftest import run_parity

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MTP_TOKENS = 3
MAX_TOKENS = 32
SPEC = f"serving.speculative={{method: mtp, num_speculative_tokens: {MTP_TOKENS}}}"
# MTP on a hybrid turns prefix caching and the model's sampling defaults off (rules
# cpu-hybrid-spec-no-prefix-caching, cpu-spec-no-model-sampling-defaults); the "off" side gets the same.
SAME_AS_MTP_SIDE = ("--set-b", "serving.enable_prefix_caching=false", "--set-b", "serving.speculative=null")


@pytest.fixture(scope="module")
def bigram_server(request, tiny_models):
    from tests.support.require import need_vllm
    from tests.support.vllm_server import VllmServer

    need_vllm()
    server = VllmServer("cpu-tiny-mtp", tiny_models("qwen3_5", bigram_mtp=True), sets=[SPEC], engine="auto")
    server.start()
    request.addfinalizer(server.stop)
    return server


def test_every_draft_accepted_answers_not_constant_and_mtp_on_off_identical(
    bigram_server, tiny_models, tmp_path
):
    model_dir = tiny_models("qwen3_5", bigram_mtp=True)
    run = run_parity(
        tmp_path,
        "--base-url-a",
        bigram_server.base_url,
        "--profile",
        "cpu-tiny-mtp",
        "--set",
        f"model.path={model_dir}",
        *SAME_AS_MTP_SIDE,
        "--set-b",
        "serving.generation_config=vllm",
        "--max-tokens",
        str(MAX_TOKENS),
    )
    assert run.rc == 0, run.log
    result = run.result
    assert result is not None
    print(run.out)

    # every draft accepted, at each of the 3 positions (the parity run's /metrics deltas on side A)
    spec = result["a"]["spec_decode"]
    assert spec is not None and spec["draft_tokens"] >= MAX_TOKENS, run.out
    assert spec["accepted_tokens"] == spec["draft_tokens"] and spec["acceptance_rate"] == 1.0, spec
    assert list(spec["per_position"]) == [1.0] * MTP_TOKENS, spec
    assert result["b"]["spec_decode"] is None

    # the same from the server's own counters since it started
    snapshot = parse_metrics(bigram_server.metrics())
    drafted, accepted = total(snapshot, SPEC_DRAFT_TOKENS), total(snapshot, SPEC_ACCEPTED)
    assert drafted and accepted == drafted, (drafted, accepted)

    # greedy answers: walks of f, 32 distinct tokens each; identical with MTP off
    config = json.loads((model_dir / "config.json").read_text())
    walk_of = bigram.build(config["vocab_size"], config["hidden_size"], ordinary_ids(), seed=0).successor
    assert result["identical_prompts"] == len(result["prompts"]) == 8, run.out
    for prompt in result["prompts"]:
        tokens = prompt["tokens_a"]
        assert len(tokens) == MAX_TOKENS and len(set(tokens)) == MAX_TOKENS, prompt
        assert tokens[1:] == bigram.walk(walk_of, tokens[0], MAX_TOKENS - 1), prompt
        assert prompt["tokens_b"] == tokens

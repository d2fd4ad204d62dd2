"""INT4 (auto-round W4A16, group 64, served in bfloat16: vLLM's INC method refuses float32) vs the fp32
checkpoint it was made from. Not lossless: the agreement is a quality figure, asserted only against a
loose floor from measurement, plus the two answers the INT4 model still gets right.

Measured on this machine (docs/parity.md), 4 prompts x 32 tokens: no prompt identical; first divergences
at tokens 6, 4, 5 and 7 (the INT4 model keeps talking where fp32 stops: "The capital of France is
Paris, capital of the European nation-state..."); token agreement 0.54. The floor is 0.3. Over the 8
built-in prompts it was 0.23 (0 of 8 identical, two diverging at token 0).
Cost: one INT4 start (~40 s), ~60-100 tokens per side; the INT4 fixture itself is built (or reused)
by real_model_dir(int4=True)."""

from __future__ import annotations

import pytest

from tests.parity.conftest import FACT_PROMPTS, prompts_file, run_parity

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FLOOR = 0.3


def test_int4_vs_full_precision_agreement_floor(cpu_real_server, real_model_dir, tmp_path):
    run = run_parity(
        tmp_path,
        "--base-url-a",
        cpu_real_server.base_url,
        "--profile",
        "cpu-real-int4",
        "--set-b",
        f"model.path={real_model_dir(int4=True)}",
        "--prompts",
        str(prompts_file(tmp_path, FACT_PROMPTS)),
        "--threshold",
        str(FLOOR),
    )
    assert run.rc == 0, run.log
    result = run.result
    assert result is not None
    print(run.out)  # the measured table, in the test log
    assert (
        result["b"]["model"] == "smollm2-135m-instruct-int4"
        and result["a"]["model"] == "smollm2-135m-instruct"
    )
    texts = {p["prompt"]: p["text_b"] for p in result["prompts"]}
    assert "Paris" in texts["What is the capital of France?"] and "5" in texts["What is 2 + 3?"], run.out

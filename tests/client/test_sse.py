"""The one chat-stream parser (serve.client.sse), fed the shapes vLLM sends and the faults the three
former copies (sidecar probe, smoke suite, bench) each caught."""

from __future__ import annotations

import json

import pytest

from healthcheck.probe import ChatStream as ProbeChatStream
from healthcheck.probe import ProbeFailure, parse_chat_json
from serve.client.sse import ChatStream, StreamError, message_parts, parse_chunk


def _data(doc: object) -> str:
    return "data: " + json.dumps(doc)


def _delta(**delta: object) -> dict:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


def test_a_vllm_stream_with_reasoning_usage_and_done() -> None:
    s = ChatStream()
    lines = [
        _data(_delta(role="assistant", content="")),
        "",
        ": keep-alive comment",
        _data(_delta(reasoning="Okay, ")),
        _data(_delta(reasoning_content="the user")),  # older vLLM's field name
        _data(_delta(content=" asks.")),
        _data({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        _data({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
        "data: [DONE]",
    ]
    for t, line in enumerate(lines):
        s.feed(line, float(t))
    assert (s.content, s.reasoning, s.text) == (" asks.", "Okay, the user", "Okay, the user asks.")
    assert s.first_text_at == 3.0 and s.done and s.finish_reason == "stop"
    assert s.usage == {"prompt_tokens": 3, "completion_tokens": 4}
    assert [c.choices for c in s.chunks] == [1, 1, 1, 1, 1, 0]


def test_both_reasoning_fields_are_one_text_not_two() -> None:
    chunk = parse_chunk(json.dumps(_delta(reasoning="think", reasoning_content="think")))
    assert chunk.reasoning == "think"


def test_tool_calls_count_as_output_and_completions_text_as_content() -> None:
    call = parse_chunk(json.dumps(_delta(tool_calls=[{"index": 0, "function": {"name": "f"}}])))
    assert call.has_output and call.content == ""
    text = parse_chunk(json.dumps({"choices": [{"index": 0, "text": "Paris", "finish_reason": None}]}))
    assert text.content == "Paris" and text.has_output
    role = parse_chunk(json.dumps(_delta(role="assistant", content="")))
    assert not role.has_output


@pytest.mark.parametrize(
    ("payload", "kind", "says"),
    [
        ("{not json", "malformed", "not JSON"),
        ('{"object": "chat.completion.chunk"}', "malformed", "without 'choices'"),
        ('{"error": {"message": "EngineDeadError"}}', "server_error", "EngineDeadError"),
        ('{"error": "plain string"}', "server_error", "plain string"),
    ],
)
def test_bad_events(payload: str, kind: str, says: str) -> None:
    with pytest.raises(StreamError) as err:
        ChatStream().feed("data: " + payload)
    assert err.value.kind == kind and says in err.value.detail


def test_nothing_after_done_is_read() -> None:
    s = ChatStream()
    s.feed("data: [DONE]")
    assert s.feed("data: {not json") is None and s.done


def test_the_probe_keeps_its_reasons() -> None:
    """The sidecar's ChatStream is the shared parser with its failure reasons."""
    for payload, reason in (
        ("{not json", "malformed_response"),
        ('{"error": {"message": "x"}}', "request_failed"),
    ):
        with pytest.raises(ProbeFailure) as err:
            ProbeChatStream().feed("data: " + payload, 0.0)
        assert err.value.reason == reason
    body = json.dumps({"choices": [{"message": {"content": "Paris", "reasoning": "hm. "}}]}).encode()
    assert parse_chat_json(body) == "Parishm. "


def test_message_parts_of_anything() -> None:
    assert message_parts(None) == ("", "")
    assert message_parts({"content": None, "reasoning": 3}) == ("", "")

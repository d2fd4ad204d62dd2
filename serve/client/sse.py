"""The chat-completion event stream (``stream: true``), parsed once for the sidecar's probe, the smoke
suite and the bench.

OpenAI-compatible servers (vLLM included) send one JSON document per ``data:`` line, a blank line
after each, and ``data: [DONE]`` last; a usage-only chunk (``"choices": []``) comes before it when
``stream_options.include_usage`` is set. Lines that are not ``data:`` (blank separators, ``:``
comments, ``event:``) carry nothing here. Each ``data:`` line is taken as one event: no server of this
API splits a document over several ``data:`` lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

DONE = "[DONE]"
_REASONING_KEYS = ("reasoning", "reasoning_content")  # vLLM >= 0.10 sends the first, older the second


class StreamError(Exception):
    """A stream that is not the OpenAI chat stream (``kind`` "malformed"), or an error event the server
    sent mid-stream (``kind`` "server_error"). Callers turn it into their own failure."""

    def __init__(self, kind: Literal["malformed", "server_error"], detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def error_message(doc: Any) -> str | None:
    """The message of an OpenAI error document (``{"error": {"message": ...}}`` or ``{"error": "..."}``),
    or None when ``doc`` is not one."""
    if isinstance(doc, dict) and "error" in doc:
        err = doc["error"]
        msg = err.get("message") if isinstance(err, dict) else err
        return str(msg)[:300]
    return None


def message_parts(part: Any) -> tuple[str, str]:
    """(content, reasoning) of a message or a delta; ("", "") for anything that is not a dict. A
    reasoning parser moves thinking out of content into ``reasoning`` (``reasoning_content`` before
    vLLM 0.10; a server that sends both sends the same text twice, so the first present wins)."""
    if not isinstance(part, dict):
        return "", ""
    content = part.get("content")
    reasoning = next((r for k in _REASONING_KEYS if isinstance(r := part.get(k), str) and r), "")
    return (content if isinstance(content, str) else ""), reasoning


@dataclass(frozen=True)
class ChatChunk:
    """One event of a chat (or completions) stream."""

    choices: int  # how many choices it carried (0: the usage-only trailer)
    content: str  # delta.content, or text for /v1/completions streams
    reasoning: str
    has_output: bool  # any generated token shows: content, reasoning or tool calls
    finish_reason: str | None
    usage: dict[str, Any] | None


def data_payload(line: str) -> str | None:
    """The payload of a ``data:`` line, None for any other line."""
    if not line.startswith("data:"):
        return None
    return line[len("data:") :].strip()


def parse_chunk(payload: str) -> ChatChunk:
    """One ``data:`` payload (not ``[DONE]``) as a chunk; StreamError when it is not JSON, is an error
    event, or has no ``choices`` list."""
    try:
        doc = json.loads(payload)
    except json.JSONDecodeError:
        raise StreamError("malformed", f"event is not JSON: {payload[:120]!r}") from None
    err = error_message(doc)
    if err is not None:
        raise StreamError("server_error", f"error event in the stream: {err}")
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not isinstance(choices, list):
        raise StreamError("malformed", f"event without 'choices': {payload[:120]!r}")
    content = reasoning = ""
    has_output = False
    finish_reason = None
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        c, r = message_parts(delta)
        text = choice.get("text")  # a /v1/completions stream
        if not c and isinstance(text, str):
            c = text
        content, reasoning = content + c, reasoning + r
        has_output = has_output or bool(c or r or (isinstance(delta, dict) and delta.get("tool_calls")))
        finish_reason = choice.get("finish_reason") or finish_reason
    usage = doc.get("usage")
    return ChatChunk(
        choices=len(choices),
        content=content,
        reasoning=reasoning,
        has_output=has_output,
        finish_reason=finish_reason,
        usage=usage if isinstance(usage, dict) and usage else None,
    )


@dataclass
class ChatStream:
    """A chat stream folded line by line: the text in arrival order, the last usage and finish reason,
    whether ``[DONE]`` came, and when the first generated text arrived (the caller's clock)."""

    content: str = ""
    reasoning: str = ""
    text: str = ""  # content and reasoning interleaved as they arrived
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    done: bool = False
    first_text_at: float | None = None
    chunks: list[ChatChunk] = field(default_factory=list)

    def feed(self, line: str, now: float = 0.0) -> ChatChunk | None:
        """Fold one line; returns the chunk it carried (None for ``[DONE]`` and non-data lines).
        Raises StreamError (see :func:`parse_chunk`)."""
        payload = data_payload(line)
        if payload is None or self.done:
            return None
        if payload == DONE:
            self.done = True
            return None
        chunk = parse_chunk(payload)
        self.chunks.append(chunk)
        piece = chunk.content + chunk.reasoning
        if piece and self.first_text_at is None:
            self.first_text_at = now
        self.content += chunk.content
        self.reasoning += chunk.reasoning
        self.text += piece
        self.usage = chunk.usage or self.usage
        self.finish_reason = chunk.finish_reason or self.finish_reason
        return chunk

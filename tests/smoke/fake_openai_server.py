"""A FAKE OpenAI-compatible server, for proving that each smoke check can fail.

It is not vLLM and stands in for nothing: the smoke suite's truth comes from the e2e test against a
real vLLM (CPU build). This fake serves canned answers over real HTTP (stdlib ``http.server``) with
switchable faults (a 500 for an unknown model, a "stream" flushed in one piece, looping text, usage
that does not add up, serialised requests, ...), so a test can show each check passing on good
behaviour and failing on the one fault it exists to catch.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GOOD_LONG_ANSWER = (
    "A bicycle's gears change how far the rear wheel turns for each turn of the pedals. The chain "
    "runs from a chainring at the cranks to a sprocket on the rear hub. When the chain sits on a large "
    "chainring and a small rear sprocket, one pedal stroke turns the wheel several times: the bike goes "
    "fast but each stroke takes more force, which suits flat roads and descents. On a small chainring "
    "and a large sprocket the ratio drops, so climbing takes less force per stroke at a lower speed. "
    "Derailleurs move the chain sideways between sprockets while you pedal; the rear derailleur also "
    "keeps the chain tight with a spring-loaded cage. Hub gears hide planetary gear sets inside the rear "
    "hub instead, which protects them from dirt and lets you shift while stopped. Riders pick a gear "
    "that keeps their cadence, the pedalling rate, comfortable, usually between seventy and ninety "
    "revolutions per minute, so their muscles work efficiently across changing terrain and wind."
)
LOOP_ANSWER = "The gears work by turning the wheel. " * 30


@dataclass
class FakeBehaviour:
    """Good behaviour by default; each field below ``# faults`` breaks one thing."""

    model: str = "fake-model"
    max_model_len: int = 4096
    reasoning: bool = True  # answers carry a separate "reasoning" field
    tool_parser: bool = True  # exports vllm:tool_call_parser_invocations_total and parses auto calls
    spec_tokens: int = 0  # exports spec-decode counters when > 0
    spec_acceptance: float = 0.75
    token_delay_s: float = 0.01
    # faults
    unknown_model_status: int = 404
    too_long_status: int = 400
    buffered_stream: bool = False  # sends every SSE chunk in one write at the end
    serial: bool = False  # one request at a time
    wrong_usage: bool = False  # total_tokens off by one
    degenerate: bool = False  # every answer loops
    wrong_answers: bool = False
    think_in_content: bool = False  # "<think>...</think>" left inside content, no reasoning field
    no_tool_calls: bool = False  # tool_choice=required answered with plain text
    metrics_frozen: bool = False  # counters never move
    metrics_missing: bool = False  # /metrics is 404
    ignores_tool_result: bool = False
    empty_text: bool = False  # generates tokens (usage says so) but returns no text: a broken detokenizer


@dataclass
class _Counters:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    requests: int = 0
    running: int = 0
    tool_parser_invocations: int = 0
    drafts: int = 0
    draft_tokens: int = 0
    accepted: int = 0
    accepted_per_pos: list[int] = field(default_factory=list)


class FakeOpenAIServer:
    """``with FakeOpenAIServer(FakeBehaviour(...), port) as url:`` serves on 127.0.0.1:port."""

    def __init__(self, behaviour: FakeBehaviour | None = None, port: int = 0) -> None:
        self.behaviour = behaviour or FakeBehaviour()
        self.counters = _Counters(accepted_per_pos=[0] * max(1, self.behaviour.spec_tokens))
        self.lock = threading.Lock()
        self.serial_lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ generation

    def reply_for(self, messages: list[dict[str, Any]], prompt: str) -> str:
        b = self.behaviour
        if b.degenerate:
            return LOOP_ANSWER
        tool_results = [m for m in messages if m.get("role") == "tool"]
        if tool_results:
            if b.ignores_tool_result:
                return "I could not get the weather for Paris."
            result = json.loads(tool_results[-1]["content"])
            return f"It is {result['temperature_c']} °C in {result['city']} with {result['condition']}."
        if "The capital of France is" in prompt:  # a raw completion prompt
            return " Paris, which is also the largest city of France."
        if "capital of France" in prompt:
            return "Lyon." if b.wrong_answers else "Paris."
        if "127 * 83" in prompt:
            return "10451" if b.wrong_answers else "10,541"
        if "secret code" in prompt:
            found = re.search(r"secret code for the vault is (\S+?)\.", prompt)
            return "I don't know." if b.wrong_answers or not found else found.group(1)
        if "bicycle" in prompt:
            return GOOD_LONG_ANSWER
        if "count from 1" in prompt.lower():
            return " ".join(str(i) for i in range(1, 41))
        return "Hello there, how can I help you today? " + "I am a fake server with canned answers. " * 3

    def tokens(self, text: str) -> list[str]:
        return re.findall(r"\S+\s*", text)

    def record(self, prompt_tokens: int, generated: int) -> None:
        with self.lock:
            if self.behaviour.metrics_frozen:
                return
            c = self.counters
            c.prompt_tokens += prompt_tokens
            c.generation_tokens += generated
            c.requests += 1
            k = self.behaviour.spec_tokens
            if k:
                drafts = max(1, generated // (k + 1))
                c.drafts += drafts
                c.draft_tokens += drafts * k
                for pos in range(k):
                    hit = round(drafts * self.behaviour.spec_acceptance ** (pos + 1))
                    c.accepted_per_pos[pos] += hit
                    c.accepted += hit

    def metrics_text(self) -> str:
        c, b = self.counters, self.behaviour
        label = f'engine="0",model_name="{b.model}"'
        lines = [
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{label}}} {c.running}",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{label}}} 0",
            "# TYPE vllm:prompt_tokens counter",
            f"vllm:prompt_tokens_total{{{label}}} {c.prompt_tokens}",
            "# TYPE vllm:generation_tokens counter",
            f"vllm:generation_tokens_total{{{label}}} {c.generation_tokens}",
            "# TYPE vllm:request_success counter",
            f'vllm:request_success_total{{{label},finished_reason="stop"}} {c.requests}',
        ]
        if b.tool_parser:
            lines += [
                "# TYPE vllm:tool_call_parser_invocations counter",
                f'vllm:tool_call_parser_invocations_total{{model_name="{b.model}",mode="non_streaming"}} '
                f"{c.tool_parser_invocations}",
            ]
        if b.spec_tokens:
            lines += [
                "# TYPE vllm:spec_decode_num_drafts counter",
                f"vllm:spec_decode_num_drafts_total{{{label}}} {c.drafts}",
                "# TYPE vllm:spec_decode_num_draft_tokens counter",
                f"vllm:spec_decode_num_draft_tokens_total{{{label}}} {c.draft_tokens}",
                "# TYPE vllm:spec_decode_num_accepted_tokens counter",
                f"vllm:spec_decode_num_accepted_tokens_total{{{label}}} {c.accepted}",
                "# TYPE vllm:spec_decode_num_accepted_tokens_per_pos counter",
            ]
            lines += [
                f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{label},position="{i}"}} {n}'
                for i, n in enumerate(c.accepted_per_pos)
            ]
        return "\n".join(lines) + "\n"


def _prompt_of(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    messages = body.get("messages") or []
    if messages:
        return messages, "\n".join(str(m.get("content") or "") for m in messages)
    return [], str(body.get("prompt") or "")


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # close-delimited bodies: streaming needs no chunked encoding

        def log_message(self, *args: object) -> None:  # quiet
            pass

        # ---------------------------------------------------------------- plumbing

        def _json(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str = "BadRequestError") -> None:
            self._json(status, {"error": {"message": message, "type": kind, "code": status}})

        def do_GET(self) -> None:
            b = server.behaviour
            if self.path == "/v1/models":
                card = {
                    "id": b.model,
                    "object": "model",
                    "owned_by": "fake",
                    "max_model_len": b.max_model_len,
                }
                self._json(200, {"object": "list", "data": [card]})
            elif self.path == "/metrics" and not b.metrics_missing:
                data = server.metrics_text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self._error(404, f"no route {self.path}", "NotFoundError")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path not in ("/v1/chat/completions", "/v1/completions"):
                self._error(404, f"no route {self.path}", "NotFoundError")
                return
            b = server.behaviour
            if body.get("model") != b.model:
                self._error(b.unknown_model_status, f"The model `{body.get('model')}` does not exist.")
                return
            messages, prompt = _prompt_of(body)
            prompt_tokens = len(server.tokens(prompt)) + 4 * len(messages)
            if prompt_tokens > b.max_model_len:
                self._error(
                    b.too_long_status,
                    f"This model's maximum context length is {b.max_model_len} tokens. "
                    f"However, your prompt contains {prompt_tokens} input tokens.",
                )
                return
            lock = server.serial_lock if b.serial else _NoLock()
            with lock:
                server.counters.running += 1
                try:
                    self._generate(body, messages, prompt, prompt_tokens)
                finally:
                    server.counters.running -= 1

        # ---------------------------------------------------------------- generation

        def _generate(
            self, body: dict[str, Any], messages: list[dict[str, Any]], prompt: str, n_prompt: int
        ) -> None:
            b = server.behaviour
            chat = self.path == "/v1/chat/completions"
            max_tokens = int(body.get("max_tokens") or 64)
            tools = body.get("tools") or []
            choice = body.get("tool_choice")
            tool_call = None
            if chat and tools and choice == "auto" and b.tool_parser:
                with server.lock:
                    server.counters.tool_parser_invocations += 1
            wants_tool = choice == "required" or isinstance(choice, dict)
            auto_call = choice in (None, "auto") and "Use the tool" in prompt and b.tool_parser
            answered = any(m.get("role") == "tool" for m in messages)
            if chat and tools and not b.no_tool_calls and not answered and (wants_tool or auto_call):
                city = "Paris" if "Paris" in prompt else "Tokyo"
                tool_call = {"name": "get_weather", "arguments": json.dumps({"city": city})}
            text = "" if tool_call else server.reply_for(messages, prompt)
            tokens = server.tokens(text)[:max_tokens] if text else ["<call>"]
            finish = (
                "tool_calls" if tool_call else ("length" if len(server.tokens(text)) > max_tokens else "stop")
            )
            reasoning = "The user asks a question. I will answer it." if chat and b.reasoning else None
            usage = {"prompt_tokens": n_prompt, "completion_tokens": len(tokens)}
            usage["total_tokens"] = n_prompt + len(tokens) + (1 if b.wrong_usage else 0)
            server.record(n_prompt, len(tokens))
            if b.empty_text:
                tokens = [""] * len(tokens)
                reasoning = None
            if body.get("stream"):
                self._stream(body, chat, tokens, finish, reasoning, tool_call, usage)
            else:
                self._complete(
                    chat, "".join(tokens) if not tool_call else "", finish, reasoning, tool_call, usage
                )

        def _message(
            self, content: str, reasoning: str | None, tool_call: dict[str, str] | None
        ) -> dict[str, Any]:
            b = server.behaviour
            msg: dict[str, Any] = {"role": "assistant", "content": content}
            if reasoning and b.think_in_content:
                msg["content"] = f"<think>{reasoning}</think>{content}"
            elif reasoning:
                msg["reasoning"] = reasoning
            if tool_call:
                msg["tool_calls"] = [
                    {"id": "call_" + uuid.uuid4().hex[:8], "type": "function", "function": tool_call}
                ]
            return msg

        def _complete(
            self, chat: bool, text: str, finish: str, reasoning: str | None, tool_call: Any, usage: Any
        ) -> None:
            time.sleep(min(0.3, server.behaviour.token_delay_s * max(1, usage["completion_tokens"])))
            base = {
                "id": "fake-" + uuid.uuid4().hex[:8],
                "created": int(time.time()),
                "model": server.behaviour.model,
            }
            if chat:
                choice = {
                    "index": 0,
                    "message": self._message(text, reasoning, tool_call),
                    "finish_reason": finish,
                }
                self._json(200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
            else:
                choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
                self._json(200, {**base, "object": "text_completion", "choices": [choice], "usage": usage})

        def _stream(
            self,
            body: dict[str, Any],
            chat: bool,
            tokens: list[str],
            finish: str,
            reasoning: str | None,
            tool_call: Any,
            usage: Any,
        ) -> None:
            b = server.behaviour
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            base = {"id": "fake-" + uuid.uuid4().hex[:8], "created": int(time.time()), "model": b.model}
            obj = "chat.completion.chunk" if chat else "text_completion"
            pending: list[bytes] = []

            def send(payload: Any) -> None:
                line = (
                    b"data: "
                    + (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
                    + b"\n\n"
                )
                if b.buffered_stream:
                    pending.append(line)
                else:
                    self.wfile.write(line)
                    self.wfile.flush()
                    time.sleep(b.token_delay_s)

            def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
                if chat:
                    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
                else:
                    choice = {"index": 0, "text": delta.get("content", ""), "finish_reason": finish_reason}
                return {**base, "object": obj, "choices": [choice]}

            if chat:
                send(chunk({"role": "assistant", "content": ""}))
            if reasoning and not b.think_in_content:
                send(chunk({"reasoning": reasoning}))
            for token in tokens if not tool_call else []:
                send(chunk({"content": token}))
            send(chunk({}, finish))
            if (body.get("stream_options") or {}).get("include_usage"):
                send({**base, "object": obj, "choices": [], "usage": usage})
            send(b"[DONE]")
            if pending:
                time.sleep(b.token_delay_s * len(pending))
                self.wfile.write(b"".join(pending))
                self.wfile.flush()

    return Handler


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@contextmanager
def serve_fake(behaviour: FakeBehaviour | None = None, **faults: Any) -> Iterator[str]:
    """Serve on a free port of 18250-18299 (this project's test port range) and yield the base URL."""
    chosen = replace(behaviour or FakeBehaviour(), **faults)
    last_error: OSError | None = None
    for port in range(18250, 18300):
        try:
            server = FakeOpenAIServer(chosen, port)
        except OSError as exc:
            last_error = exc
            continue
        with server as url:
            yield url
        return
    raise RuntimeError(f"no free port in 18250-18299: {last_error}")

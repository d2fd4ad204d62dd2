"""The smoke checks as a library: each check takes a :class:`SmokeContext` and returns a :class:`CheckResult`.

Plumbing checks prove the OpenAI surface works end to end and that the launcher's settings took effect
(they pass on a random-weight model). Quality checks (``quality=True``) need a real model: they ask
questions with known answers, and catch the HTTP-200-but-garbage failure of vLLM issues 40831/40880/
52475/53180 that ``/health`` cannot see.

Entry points: :func:`build_context`, :func:`run_suite`, :func:`select_checks` and :data:`CHECKS`.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import httpx
import openai
from openai.types import CompletionUsage

from serve.client import metrics
from serve.client.endpoint import Endpoint, auth_headers, normalize_base_url
from serve.client.sse import ChatStream, StreamError
from serve.errors import KitError
from serve.launch.detectors import degeneration_reason
from serve.launch.spec_decode import acceptance

Status = Literal["pass", "fail", "skip"]
REPORT_SCHEMA_VERSION = 1

# Two chunks closer than this arrived in one read: a server (or proxy) that buffers the whole
# answer and flushes it at the end delivers every chunk within a fraction of a millisecond.
_BURST_GAP_S = 0.002
# A name no deployment serves, for the unknown-model error path.
_NO_SUCH_MODEL = "smoke-test-no-such-model"

# The tool the plumbing checks force. An enum keeps guided decoding short: a random-weight model
# must emit one of these strings and close the JSON, instead of an endless random string.
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Tokyo", "Lima"]}},
            "required": ["city"],
        },
    },
}


@dataclass(frozen=True)
class FactualQuestion:
    """A question with one right answer: ``expect`` is a regular expression the answer must match
    (``re.search``, after thousands separators between digits are dropped)."""

    prompt: str
    expect: str
    label: str  # the right answer as the report names it


# What a capable model must answer. A small model may know less: give it its own questions (option
# factual_questions, `--factual`), never a looser pattern for these.
FACTUAL_QUESTIONS: tuple[FactualQuestion, ...] = (
    FactualQuestion("What is the capital of France? Answer in one word.", r"(?i)paris", "Paris"),
    FactualQuestion("What is 127 * 83? Reply with just the number.", r"10541", "10541"),
)


# --------------------------------------------------------------------------------------------------
# Records


@dataclass
class CheckResult:
    name: str
    status: Status
    detail: str
    duration_s: float
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["duration_s"] = round(self.duration_s, 3)
        return out


@dataclass
class SmokeOptions:
    """What the suite expects of the endpoint. ``None`` means: not known, detect it."""

    max_num_seqs: int | None = None
    max_model_len: int | None = None
    expect_reasoning: bool | None = None
    expect_tools: bool | None = None
    num_speculative_tokens: int | None = None
    request_timeout_s: float = 300.0
    # Reasoning models think before they answer; the quality checks must leave room for that.
    quality_max_tokens: int = 4096
    needle_max_tokens: int = 16384
    spec_acceptance_floor: float = 0.3
    factual_questions: tuple[FactualQuestion, ...] = FACTUAL_QUESTIONS
    # Sampling fields merged into every request of the quality checks (they win over the checks' own
    # temperature 0): the deployment's recommended sampling, or a deliberately bad one to see a check fail.
    sampling: dict[str, Any] = field(default_factory=dict)
    # tool_round_trip's first request: "auto" (the model decides: the real test), "required" or "named"
    # (forced: structured output makes the call; the model still has to use the result).
    tool_choice: Literal["auto", "required", "named"] = "auto"
    # Where each expectation came from ("flag", "plan", "endpoint", "default"), for the report.
    sources: dict[str, str] = field(default_factory=dict)


@dataclass
class SmokeContext:
    base_url: str  # server root, without /v1: /metrics lives there
    api_key: str | None  # sent as Authorization: Bearer on every request; None: no key
    model: str | None
    client: openai.OpenAI
    http: httpx.Client
    options: SmokeOptions
    discovery_error: str | None = None
    is_vllm: bool = False  # /v1/models says owned_by "vllm": vLLM's extra sampling fields are safe

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.base_url, self.model or "", self.api_key)

    def require_model(self) -> str:
        if self.model is None:
            raise CheckSkipped(f"no model to ask: {self.discovery_error or 'none listed'}")
        return self.model

    def close(self) -> None:
        self.client.close()
        self.http.close()


@dataclass
class SuiteReport:
    base_url: str
    model: str | None
    started_at: str
    duration_s: float
    options: SmokeOptions
    results: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(r.status != "fail" for r in self.results)

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "fail": 0, "skip": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        opts = asdict(self.options)
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "base_url": self.base_url,
            "model": self.model,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "passed": self.passed,
            "counts": self.counts(),
            "options": {k: v for k, v in opts.items() if k != "sources"},
            "option_sources": opts["sources"],
            "results": [r.to_dict() for r in self.results],
        }


class CheckFailed(Exception):
    def __init__(self, detail: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.data = data or {}


class CheckSkipped(Exception):
    pass


@dataclass
class Passed:
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


CheckBody = Callable[["SmokeContext"], Passed]
CheckFn = Callable[["SmokeContext"], CheckResult]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    fn: CheckFn
    quality: bool
    summary: str


# Ordered: the order checks run in and the report lists them.
CHECKS: dict[str, CheckSpec] = {}


def check(name: str, *, quality: bool = False) -> Callable[[CheckBody], CheckFn]:
    """Register a check. The body returns :class:`Passed` or raises CheckFailed/CheckSkipped; an API
    error or any other exception is a failure whose detail names it (a check never crashes the suite)."""

    def register(body: CheckBody) -> CheckFn:
        @functools.wraps(body)
        def run(ctx: SmokeContext) -> CheckResult:
            started = time.monotonic()
            status: Status
            data: dict[str, Any] = {}
            try:
                outcome = body(ctx)
                status, detail, data = "pass", outcome.detail, outcome.data
            except CheckSkipped as exc:
                status, detail = "skip", str(exc)
            except CheckFailed as exc:
                status, detail, data = "fail", exc.detail, exc.data
            except openai.APIStatusError as exc:
                status, detail = "fail", f"HTTP {exc.status_code}: {_error_message(exc)}"
            except (openai.APIError, httpx.HTTPError) as exc:
                status, detail = "fail", f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a check must report, not crash the suite
                status, detail = "fail", f"unexpected {type(exc).__name__}: {exc}"
            return CheckResult(name, status, detail, time.monotonic() - started, data)

        doc = " ".join((body.__doc__ or name).split())
        CHECKS[name] = CheckSpec(name, run, quality, doc.split(". ")[0].rstrip("."))
        return run

    return register


# --------------------------------------------------------------------------------------------------
# Context and suite


def build_context(
    base_url: str,
    *,
    api_key: str | None = None,
    model: str | None = None,
    options: SmokeOptions | None = None,
) -> SmokeContext:
    """Connect and discover what the caller did not say: the model (first of /v1/models) and
    max_model_len (vLLM's ``max_model_len`` field there). Never raises on an unreachable endpoint:
    the ``models`` check reports that, and the checks that need a model skip."""
    root = normalize_base_url(base_url)  # the suite needs the server root: /metrics lives there
    opts = options or SmokeOptions()
    timeout = httpx.Timeout(opts.request_timeout_s, connect=10.0)
    # The OpenAI client insists on a key; "EMPTY" is the convention for a server without one.
    client = openai.OpenAI(base_url=root + "/v1", api_key=api_key or "EMPTY", timeout=timeout, max_retries=0)
    http = httpx.Client(timeout=timeout, headers=auth_headers(api_key))
    ctx = SmokeContext(root, api_key, model, client, http, opts)
    try:
        listed = _list_models(ctx)
    except (openai.APIError, httpx.HTTPError) as exc:
        ctx.discovery_error = f"GET /v1/models failed: {exc}"
        return ctx
    ctx.is_vllm = any(card.get("owned_by") == "vllm" for card in listed.values())
    if ctx.model is None and listed:
        ctx.model = next(iter(listed))
        opts.sources.setdefault("model", "endpoint")
    served_len = listed.get(ctx.model or "", {}).get("max_model_len")
    if opts.max_model_len is None and isinstance(served_len, int):
        opts.max_model_len = served_len
        opts.sources["max_model_len"] = "endpoint"
    return ctx


def select_checks(*, quality: bool = False, only: Iterable[str] | None = None) -> list[CheckSpec]:
    """The checks to run, in suite order. ``only`` names checks explicitly (quality ones included)."""
    if only is None:
        return [spec for spec in CHECKS.values() if quality or not spec.quality]
    wanted = list(dict.fromkeys(n.strip() for n in only if n.strip()))
    unknown = [n for n in wanted if n not in CHECKS]
    if unknown:
        raise KitError(f"--only {','.join(unknown)}: unknown check; known: {', '.join(CHECKS)}")
    return [CHECKS[n] for n in CHECKS if n in wanted]


def run_suite(
    ctx: SmokeContext,
    *,
    quality: bool = False,
    only: Iterable[str] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> SuiteReport:
    """Run the selected checks one after another (each sees a quiet server, which the metrics
    deltas rely on) and collect their results."""
    specs = select_checks(quality=quality, only=only)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.monotonic()
    results = []
    for spec in specs:
        result = spec.fn(ctx)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return SuiteReport(ctx.base_url, ctx.model, started_at, time.monotonic() - t0, ctx.options, results)


# --------------------------------------------------------------------------------------------------
# Helpers


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
        if body.get("message"):
            return str(body["message"])[:300]
    return str(exc.message)[:300]


def _list_models(ctx: SmokeContext) -> dict[str, dict[str, Any]]:
    """id -> the raw model card (vLLM adds max_model_len, root, parent)."""
    page = ctx.client.models.list()
    return {m.id: m.model_dump() for m in page.data}


def _chat(ctx: SmokeContext, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    kwargs.setdefault("temperature", 0.0)
    kwargs.setdefault("max_tokens", 16)
    return ctx.client.chat.completions.create(
        model=kwargs.pop("model", None) or ctx.require_model(), messages=messages, **kwargs
    )


def _fixed_length(ctx: SmokeContext) -> dict[str, Any]:
    """Request kwargs that make vLLM generate exactly max_tokens (a random-weight model may stop
    after a few tokens, too few to time); nothing for other servers, which would refuse the field."""
    return {"extra_body": {"ignore_eos": True}} if ctx.is_vllm else {}


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def reasoning_of(message: Any) -> tuple[str | None, str | None]:
    """(field name, text) of the reasoning a message or delta carries. vLLM 0.32 sends ``reasoning``;
    older vLLM and other servers send ``reasoning_content``."""
    for name in ("reasoning", "reasoning_content"):
        value = getattr(message, name, None)
        if value is None and getattr(message, "model_extra", None):
            value = message.model_extra.get(name)
        if isinstance(value, str) and value:
            return name, value
    return None, None


def _text_of(message: Any) -> str:
    return (message.content or "") + (reasoning_of(message)[1] or "")


def scrape_snapshot(ctx: SmokeContext) -> metrics.Snapshot | None:
    """/metrics by series and label set, or None when it is absent (404); any other failure to get it
    fails the check that asked."""
    try:
        return metrics.scrape(ctx.http, ctx.endpoint)
    except metrics.MetricsUnavailable as exc:
        if exc.status == 404:
            return None
        raise CheckFailed(exc.detail) from None
    except metrics.MetricsParseError as exc:
        raise CheckFailed(str(exc)) from None


def scrape_metrics(ctx: SmokeContext) -> dict[str, float] | None:
    """Sum of every sample per series name (labels summed over), or None when /metrics is absent."""
    snapshot = scrape_snapshot(ctx)
    return None if snapshot is None else metrics.totals(snapshot)


def _per_position(ctx: SmokeContext) -> dict[str, float]:
    return metrics.by_label(scrape_snapshot(ctx) or {}, metrics.SPEC_ACCEPTED_PER_POS, "position")


def _wait_for_counter(ctx: SmokeContext, name: str, at_least: float, timeout_s: float = 5.0) -> float:
    """vLLM updates its counters from the engine's output loop, a moment after the response."""
    deadline = time.monotonic() + timeout_s
    value = 0.0
    while True:
        value = (scrape_metrics(ctx) or {}).get(name, 0.0)
        if value >= at_least or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def count_bursts(arrivals: list[float], gap_s: float = _BURST_GAP_S) -> int:
    """How many separate reads the arrivals fell into."""
    if not arrivals:
        return 0
    return 1 + sum(1 for a, b in itertools.pairwise(arrivals) if b - a >= gap_s)


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (closed intervals: touching counts)."""
    events = sorted([(s, 0) for s, _ in intervals] + [(e, 1) for _, e in intervals])
    open_now = peak = 0
    for _, kind in events:
        open_now += 1 if kind == 0 else -1
        peak = max(peak, open_now)
    return peak


def _check_usage(usage: Any, max_tokens: int, finish_reason: str | None, where: str) -> list[str]:
    if usage is None:
        return [f"{where}: no usage"]
    problems = []
    p, c, t = usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
    if not p or p <= 0:
        problems.append(f"{where}: prompt_tokens {p}")
    if c is None or c <= 0 or c > max_tokens:
        problems.append(f"{where}: completion_tokens {c} outside 1..max_tokens={max_tokens}")
    if p is not None and c is not None and t != p + c:
        problems.append(f"{where}: total_tokens {t} != prompt {p} + completion {c}")
    if finish_reason == "length" and c != max_tokens:
        problems.append(f"{where}: finish_reason length but completion_tokens {c} != max_tokens {max_tokens}")
    return problems


@dataclass
class StreamResult:
    started: float
    event_times: list[float] = field(default_factory=list)  # arrival of each choice-carrying event
    read_times: list[float] = field(default_factory=list)  # each network read that completed one
    stream: ChatStream = field(default_factory=ChatStream)

    @property
    def content(self) -> str:
        return self.stream.content

    @property
    def reasoning(self) -> str:
        return self.stream.reasoning

    @property
    def usage(self) -> CompletionUsage | None:
        usage = self.stream.usage
        return None if usage is None else CompletionUsage.model_validate(usage)

    @property
    def finish_reason(self) -> str | None:
        return self.stream.finish_reason


def _stream_chat(ctx: SmokeContext, messages: list[dict[str, Any]], **kwargs: Any) -> StreamResult:
    """Stream a chat completion and time the network reads, not the parsed chunks: parsing a
    buffered body one chunk at a time takes as long as a tiny model needs per token, so only the
    reads show whether the server flushed each token as it came."""
    kwargs.setdefault("temperature", 0.0)
    kwargs.setdefault("max_tokens", 32)
    out = StreamResult(time.monotonic())
    pending = b""
    with ctx.client.chat.completions.with_streaming_response.create(
        model=ctx.require_model(),
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        **kwargs,
    ) as resp:
        for data in resp.iter_bytes():
            now = time.monotonic()
            pending += data
            *lines, pending = pending.split(b"\n")
            n = sum(_absorb_line(out, line) for line in lines)
            out.event_times += [now] * n
            if n:
                out.read_times.append(now)
        _absorb_line(out, pending)
    return out


def _absorb_line(out: StreamResult, line: bytes) -> int:
    """Fold one line of the event stream into ``out``; the number of choices it carried."""
    try:
        chunk = out.stream.feed(line.rstrip(b"\r").decode("utf-8", errors="replace"))
    except StreamError as exc:
        raise CheckFailed(exc.detail) from None
    return 0 if chunk is None else chunk.choices


# --------------------------------------------------------------------------------------------------
# Plumbing checks (pass on a random-weight model)


@check("models")
def check_models(ctx: SmokeContext) -> Passed:
    """GET /v1/models lists the model, with the max_model_len the deployment asked for."""
    if ctx.discovery_error:
        raise CheckFailed(ctx.discovery_error)
    listed = _list_models(ctx)
    if not listed:
        raise CheckFailed("/v1/models lists no model")
    if ctx.model not in listed:
        raise CheckFailed(f"model {ctx.model!r} not listed; listed: {', '.join(listed)}")
    served_len = listed[ctx.model].get("max_model_len")
    wanted_len = ctx.options.max_model_len
    if isinstance(served_len, int) and wanted_len is not None and served_len != wanted_len:
        source = ctx.options.sources.get("max_model_len", "option")
        raise CheckFailed(f"served max_model_len {served_len} != {wanted_len} ({source})")
    return Passed(f"{ctx.model} (max_model_len {served_len})", {"models": list(listed)})


@check("chat")
def check_chat(ctx: SmokeContext) -> Passed:
    """A chat completion returns an assistant message with text."""
    resp = _chat(ctx, _user("Say hello in five words."), max_tokens=16)
    if not resp.choices:
        raise CheckFailed("no choices in the response")
    choice = resp.choices[0]
    msg = choice.message
    if msg.role != "assistant":
        raise CheckFailed(f"role {msg.role!r}, expected 'assistant'")
    if choice.finish_reason not in ("stop", "length"):
        raise CheckFailed(f"finish_reason {choice.finish_reason!r}")
    generated = resp.usage.completion_tokens if resp.usage else None
    # One token may be the end-of-sequence token, which has no text; more must show.
    if (
        not _text_of(msg)
        and not msg.tool_calls
        and (choice.finish_reason == "length" or (generated or 0) > 1)
    ):
        raise CheckFailed(f"generated {generated} tokens but returned no text (content or reasoning)")
    return Passed(f"{generated} tokens, finish {choice.finish_reason}: {_text_of(msg)[:60]!r}")


def _judge_stream(out: StreamResult) -> tuple[str | None, dict[str, Any]]:
    """(why the stream looks buffered or None, measurements)."""
    reads = out.read_times
    spread = reads[-1] - reads[0] if reads else 0.0
    total = (reads[-1] if reads else time.monotonic()) - out.started
    data = {
        "events": len(out.event_times),
        "reads": len(reads),
        "completion_tokens": out.usage.completion_tokens if out.usage else None,
        "spread_s": round(spread, 4),
        "total_s": round(total, 4),
    }
    # A buffered body arrives in one read, or a few within a blink at the end; a real stream spends
    # a good share of the request delivering. 5% leaves room for a long queue before the first token.
    if len(reads) < 3 or spread < 0.05 * total:
        # Many separate reads in a burst: the server wrote each chunk but late (held back, or starved
        # of CPU); few reads: one buffered body (a proxy, or a server that only pretends to stream).
        held = "written separately but held back" if len(reads) >= 0.5 * len(out.event_times) else "buffered"
        return (
            f"{len(out.event_times)} chunks came in {len(reads)} reads within {spread * 1000:.1f} ms "
            f"at the end of {total * 1000:.0f} ms: the stream is {held}"
        ), data
    return None, data


@check("streaming")
def check_streaming(ctx: SmokeContext) -> Passed:
    """stream=True delivers the answer in many network reads spread over the generation, not in one
    buffered flush at the end (a proxy with buffering on, or a server that fakes streaming)."""
    problem, data = None, {}
    # A tiny model on a busy CPU can finish 64 tokens while the API process waits for a core, and
    # then flush them together; a longer second try tells that apart from a buffering server.
    for attempt, max_tokens in enumerate((64, 256, 512), start=1):
        prompt = _user("Count from 1 to 200, separated by spaces.")
        out = _stream_chat(ctx, prompt, max_tokens=max_tokens, **_fixed_length(ctx))
        generated = out.usage.completion_tokens if out.usage else None
        if len(out.event_times) < 3:
            if generated is not None and generated < 3:
                raise CheckSkipped(f"the model stopped after {generated} tokens: too few to judge streaming")
            raise CheckFailed(f"only {len(out.event_times)} chunks for {generated} tokens")
        problem, data = _judge_stream(out)
        data["attempt"] = attempt
        if problem is None:
            detail = f"{data['events']} chunks in {data['reads']} reads over {data['spread_s']:.2f} of "
            return Passed(detail + f"{data['total_s']:.2f} s", data)
    raise CheckFailed(problem or "buffered", data)


@check("completions")
def check_completions(ctx: SmokeContext) -> Passed:
    """The legacy /v1/completions endpoint answers a raw prompt."""
    resp = ctx.client.completions.create(
        model=ctx.require_model(), prompt="The capital of France is", max_tokens=8, temperature=0.0
    )
    if not resp.choices:
        raise CheckFailed("no choices in the response")
    choice = resp.choices[0]
    if choice.finish_reason not in ("stop", "length"):
        raise CheckFailed(f"finish_reason {choice.finish_reason!r}")
    generated = resp.usage.completion_tokens if resp.usage else None
    if not choice.text and (choice.finish_reason == "length" or (generated or 0) > 1):
        raise CheckFailed(f"generated {generated} tokens but returned no text")
    return Passed(f"{generated} tokens, finish {choice.finish_reason}: {choice.text[:60]!r}")


@check("usage")
def check_usage(ctx: SmokeContext) -> Passed:
    """Token counts add up (prompt + completion = total, completion <= max_tokens) in chat, streamed
    chat and completions, and the same prompt counts the same with and without streaming."""
    max_tokens = 5
    messages = _user("Write a long story about a lighthouse keeper.")
    chat = _chat(ctx, messages, max_tokens=max_tokens)
    problems = _check_usage(chat.usage, max_tokens, chat.choices[0].finish_reason, "chat")
    streamed = _stream_chat(ctx, messages, max_tokens=max_tokens)
    problems += _check_usage(streamed.usage, max_tokens, streamed.finish_reason, "streamed chat")
    if chat.usage and streamed.usage and chat.usage.prompt_tokens != streamed.usage.prompt_tokens:
        problems.append(
            f"prompt_tokens {chat.usage.prompt_tokens} (chat) != {streamed.usage.prompt_tokens} (streamed)"
        )
    comp = ctx.client.completions.create(
        model=ctx.require_model(), prompt="Once upon a time", max_tokens=max_tokens, temperature=0.0
    )
    problems += _check_usage(comp.usage, max_tokens, comp.choices[0].finish_reason, "completions")
    if problems:
        raise CheckFailed("; ".join(problems))
    u = chat.usage
    return Passed(
        f"chat {u.prompt_tokens}+{u.completion_tokens}={u.total_tokens}; streamed and completions agree"
    )


@check("reasoning")
def check_reasoning(ctx: SmokeContext) -> Passed:
    """With a reasoning parser, thinking comes back separated (``reasoning``), not inside content."""
    expect = ctx.options.expect_reasoning
    resp = _chat(ctx, _user("What is 2 + 3? Think briefly, then answer."), max_tokens=48)
    msg = resp.choices[0].message
    field_name, reasoning = reasoning_of(msg)
    content = msg.content or ""
    leaked = "</think>" in content or "<think>" in content
    if expect is None and field_name is None:
        raise CheckSkipped("no reasoning field in the answer: no reasoning parser detected (--reasoning)")
    if expect is False:
        if field_name is not None:
            raise CheckFailed(f"answer carries {field_name!r} though the reasoning parser is expected off")
        return Passed("no reasoning field, as expected with the reasoning parser off")
    if field_name is None:
        hint = "thinking tags left in content" if leaked else "no reasoning/reasoning_content field"
        raise CheckFailed(f"{hint}: is --reasoning-parser set? content: {content[:80]!r}")
    if leaked:
        raise CheckFailed(f"reasoning separated but content still holds think tags: {content[:80]!r}")
    streamed = _stream_chat(ctx, _user("What is 2 + 3? Think briefly, then answer."), max_tokens=48)
    if not streamed.reasoning:
        raise CheckFailed(f"non-streamed answer has {field_name!r} but no streamed delta carried reasoning")
    data = {"field": field_name, "reasoning_chars": len(reasoning or ""), "content_chars": len(content)}
    return Passed(f"reasoning in {field_name!r} ({len(reasoning or '')} chars), streamed too", data)


def _tool_parser_invocations(ctx: SmokeContext) -> float | None:
    """vLLM registers this counter only when --tool-call-parser is set (vllm/parser/metrics.py)."""
    metrics = scrape_metrics(ctx)
    if not metrics or not any(k.startswith("vllm:") for k in metrics):
        return None
    return metrics.get("vllm:tool_call_parser_invocations_total", -1.0)


@check("tool_call")
def check_tool_call(ctx: SmokeContext) -> Passed:
    """tool_choice="required" returns a parsed call in ``tool_calls``; with tool_choice="auto" vLLM's
    tool parser runs (its invocation counter moves)."""
    expect = ctx.options.expect_tools
    before = _tool_parser_invocations(ctx)
    parser_seen = None if before is None else before >= 0
    if expect is None and not parser_seen:
        raise CheckSkipped("no tool parser detected in /metrics (--tools to require one)")
    if expect is False:
        if parser_seen:
            raise CheckFailed("vllm:tool_call_parser_invocations_total present: a tool parser is on")
        return Passed("no tool parser, as expected")
    # Thinking off for this request (Qwen's chat_template_kwargs): with a reasoning parser, vLLM only
    # constrains the output after </think>, which a random-weight model never writes.
    resp = _chat(
        ctx,
        _user("What is the weather in Paris?"),
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=96,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    choice = resp.choices[0]
    calls = choice.message.tool_calls or []
    if not calls:
        raise CheckFailed(f"tool_choice=required gave no tool_calls; content {choice.message.content!r:.120}")
    call = calls[0]
    if call.function.name != "get_weather":
        raise CheckFailed(f"tool call names {call.function.name!r}, expected 'get_weather'")
    try:
        args = json.loads(call.function.arguments)
    except json.JSONDecodeError as exc:
        raise CheckFailed(f"arguments are not JSON ({exc}): {call.function.arguments[:80]!r}") from exc
    if not isinstance(args, dict):
        raise CheckFailed(f"arguments {args!r} are not a JSON object")
    # A random-weight model may pad the constrained output until max_tokens, leaving the call open:
    # vLLM still parses the name. A call that finished must carry the required argument.
    if "city" not in args and choice.finish_reason != "length":
        raise CheckFailed(f"finished call get_weather({args}) lacks the required 'city'")
    detail = f"required -> get_weather({args})"
    if before is not None:
        if before < 0:
            raise CheckFailed(
                f"{detail}, but /metrics lacks vllm:tool_call_parser_invocations_total: no tool parser"
            )
        _chat(
            ctx,
            _user("What is the weather in Tokyo?"),
            tools=[WEATHER_TOOL],
            tool_choice="auto",
            max_tokens=16,
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
        after = _wait_for_counter(ctx, "vllm:tool_call_parser_invocations_total", before + 1)
        if after <= before:
            raise CheckFailed(f"{detail}, but the tool parser did not run for tool_choice=auto")
        detail += "; auto ran the tool parser"
    return Passed(detail, {"arguments": args, "tool_calls": len(calls)})


@dataclass
class RunningObservation:
    """What the concurrency check saw: the server's own count of running requests
    (vllm:num_requests_running, summed over engines), sampled from before the first request was sent
    until the last stream ended. The client's clock decides nothing: a busy API process writes
    streams late and in bursts, so when their chunks arrived says little about whether the engine
    batched them; the engine's count, over streams that last seconds, does."""

    requests: int
    max_tokens: int
    outs: list[StreamResult]
    errors: list[str]
    running: list[float]  # the gauge at each sample; empty when /metrics lacks it
    window_s: float  # from the first request sent to the last stream's end
    scrape_error: str | None = None

    @property
    def peak(self) -> float | None:
        return max(self.running) if self.running else None


_RUNNING_POLL_S = 0.05


class _RunningSampler:
    """Samples vllm:num_requests_running on a thread while the block runs."""

    def __init__(self, ctx: SmokeContext) -> None:
        self.ctx = ctx
        self.samples: list[float] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while True:
            try:
                value = metrics.total(scrape_snapshot(self.ctx) or {}, metrics.REQUESTS_RUNNING)
            except (CheckFailed, httpx.HTTPError) as exc:
                self.error = str(exc)[:200]
                return
            if value is not None:
                self.samples.append(value)
            if self._stop.wait(_RUNNING_POLL_S):
                return

    def __enter__(self) -> _RunningSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def overlap_max_tokens(options: SmokeOptions) -> int:
    """max_tokens per concurrent request: a stream of seconds, long against the moments a busy API
    process leaves /metrics unanswered, within max_model_len."""
    return max(128, min(1024, (options.max_model_len or 2048) - 64))


def observe_running(
    ctx: SmokeContext, n: int, max_tokens: int, *, at_once: bool = True
) -> RunningObservation:
    """Send ``n`` streamed requests of ``max_tokens`` (all at once, or one after another with
    ``at_once=False``: the negative control) and sample the server's running gauge until the last
    stream has ended."""
    barrier = threading.Barrier(n) if at_once else None

    def one(i: int) -> StreamResult:
        if barrier is not None:
            barrier.wait(timeout=30)
        prompt = _user(f"Request {i}: count from 1 to 200.")
        return _stream_chat(ctx, prompt, max_tokens=max_tokens, **_fixed_length(ctx))

    errors: list[str] = []
    outs: list[StreamResult] = []
    t0 = time.monotonic()
    with _RunningSampler(ctx) as sampler, ThreadPoolExecutor(max_workers=n if at_once else 1) as pool:
        for future in [pool.submit(one, i) for i in range(n)]:
            try:
                outs.append(future.result())
            except Exception as exc:  # report every failed request, not the first
                errors.append(f"{type(exc).__name__}: {exc}"[:160])
    window = time.monotonic() - t0
    return RunningObservation(n, max_tokens, outs, errors, sampler.samples, window, sampler.error)


def judge_concurrency(seen: RunningObservation, data: dict[str, Any]) -> Passed:
    """Pass when the server ran two or more of the requests at once; CheckFailed otherwise."""
    n = seen.requests
    peak = seen.peak
    data.update(
        max_tokens=seen.max_tokens,
        window_s=round(seen.window_s, 3),
        server_running_samples=len(seen.running),
        server_running_peak=peak,
        peak_overlap=peak_overlap(
            [(o.event_times[0], o.event_times[-1]) for o in seen.outs if o.event_times]
        ),
    )
    if seen.errors:
        data["errors"] = seen.errors
        raise CheckFailed(f"{len(seen.errors)} of {n} concurrent requests failed: {seen.errors[0]}", data)
    if peak is None:
        why = seen.scrape_error or "/metrics has no vllm:num_requests_running"
        raise CheckSkipped(
            f"all {n} requests ok, but {why}: nothing tells whether the server ran them at once"
        )
    if peak < 2:
        raise CheckFailed(
            f"all {n} succeeded but were generated one after another: vllm:num_requests_running never "
            f"exceeded {peak:g} in {len(seen.running)} samples over {seen.window_s:.1f} s",
            data,
        )
    return Passed(f"{n} requests ok; the server ran up to {peak:g} at once (vllm:num_requests_running)", data)


@check("concurrency")
def check_concurrency(ctx: SmokeContext) -> Passed:
    """max_num_seqs streamed requests at once all succeed, and the server generates them at the same
    time: its own vllm:num_requests_running, sampled while the streams run, reaches 2 or more."""
    n = ctx.options.max_num_seqs or 4
    ctx.require_model()
    data: dict[str, Any] = {"requests": n, "source": ctx.options.sources.get("max_num_seqs", "default")}
    if n < 2:
        raise CheckSkipped(f"max_num_seqs {n}: the server runs one request at a time, nothing can overlap")
    return judge_concurrency(observe_running(ctx, n, overlap_max_tokens(ctx.options)), data)


@check("unknown_model")
def check_unknown_model(ctx: SmokeContext) -> Passed:
    """A request for a model the server does not serve is a clean 404/400, not a 500 or an answer."""
    ctx.require_model()
    try:
        _chat(ctx, _user("hello"), model=_NO_SUCH_MODEL, max_tokens=4)
    except openai.APIStatusError as exc:
        if exc.status_code in (400, 404):
            return Passed(f"HTTP {exc.status_code}: {_error_message(exc)[:80]}")
        raise CheckFailed(f"HTTP {exc.status_code} (want 404 or 400): {_error_message(exc)[:120]}") from exc
    raise CheckFailed(f"model {_NO_SUCH_MODEL!r} answered 200")


@check("prompt_too_long")
def check_prompt_too_long(ctx: SmokeContext) -> Passed:
    """A prompt longer than max_model_len is a clean 400 that says so, not a 500 or a hang."""
    max_len = ctx.options.max_model_len
    if max_len is None:
        raise CheckSkipped("max_model_len unknown (not in /v1/models; pass --max-model-len or --plan-file)")
    # Every tokenizer spends at least one token on each " hello".
    prompt = " hello" * (max_len + 64)
    try:
        _chat(ctx, _user(prompt), max_tokens=4)
    except openai.APIStatusError as exc:
        if exc.status_code in (400, 413):
            return Passed(f"HTTP {exc.status_code}: {_error_message(exc)[:100]}")
        raise CheckFailed(f"HTTP {exc.status_code} (want 400): {_error_message(exc)[:120]}") from exc
    raise CheckFailed(f"a prompt of more than {max_len} tokens answered 200")


_CORE_SERIES = ("vllm:num_requests_running", "vllm:prompt_tokens_total", "vllm:generation_tokens_total")
_SPEC_SERIES = (
    "vllm:spec_decode_num_drafts_total",
    "vllm:spec_decode_num_draft_tokens_total",
    "vllm:spec_decode_num_accepted_tokens_total",
)


@check("metrics")
def check_metrics(ctx: SmokeContext) -> Passed:
    """/metrics exposes vLLM's series, generation_tokens_total counts a request's tokens, and the
    spec-decode counters are there exactly when speculative decoding is on."""
    before = scrape_metrics(ctx)
    if before is None:
        raise CheckFailed("GET /metrics: 404")
    missing = [s for s in _CORE_SERIES if s not in before]
    if missing:
        vllm_count = sum(1 for k in before if k.startswith("vllm:"))
        raise CheckFailed(f"missing {', '.join(missing)} ({vllm_count} vllm: series in all)")
    resp = ctx.client.completions.create(
        model=ctx.require_model(), prompt="One, two, three,", max_tokens=8, temperature=0.0
    )
    generated = resp.usage.completion_tokens if resp.usage else 1
    start = before["vllm:generation_tokens_total"]
    after = _wait_for_counter(ctx, "vllm:generation_tokens_total", start + generated)
    if after < start + generated:
        raise CheckFailed(
            f"generation_tokens_total moved {after - start:g}, the request generated {generated}"
        )
    spec_present = all(s in before for s in _SPEC_SERIES)
    spec = ctx.options.num_speculative_tokens
    if spec and not spec_present:
        raise CheckFailed(f"num_speculative_tokens {spec} but no spec-decode counters in /metrics")
    if spec == 0 and spec_present and before["vllm:spec_decode_num_drafts_total"] > 0:
        raise CheckFailed("speculative decoding expected off, but spec_decode_num_drafts_total > 0")
    vllm_count = sum(1 for k in before if k.startswith("vllm:"))
    data = {"vllm_series": vllm_count, "spec_decode_series": spec_present}
    return Passed(f"{vllm_count} vllm: samples; generation_tokens_total +{after - start:g}", data)


# --------------------------------------------------------------------------------------------------
# Quality checks (real models only)


def _quality_chat(ctx: SmokeContext, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    """A quality check's request, with the suite's sampling fields on top (extra_body wins over the
    named arguments in the OpenAI client, so ``{"temperature": 1.5}`` there replaces the check's 0)."""
    if ctx.options.sampling:
        kwargs["extra_body"] = {**kwargs.get("extra_body", {}), **ctx.options.sampling}
    return _chat(ctx, messages, **kwargs)


def _answer(ctx: SmokeContext, question: str, **kwargs: Any) -> str:
    kwargs.setdefault("max_tokens", ctx.options.quality_max_tokens)
    resp = _quality_chat(ctx, _user(question), **kwargs)
    choice = resp.choices[0]
    content = choice.message.content or ""
    if not content.strip() and choice.finish_reason == "length":
        raise CheckFailed(f"no answer within {kwargs['max_tokens']} tokens (still reasoning?)")
    return content


@check("factual", quality=True)
def check_factual(ctx: SmokeContext) -> Passed:
    """Questions with one right answer (default: the capital of France, and 127 * 83)."""
    answers: dict[str, str] = {}
    for q in ctx.options.factual_questions:
        answer = _answer(ctx, q.prompt)
        answers[q.prompt] = answer
        digits = re.sub(r"(?<=\d)[,\s](?=\d{3})", "", answer)
        if not re.search(q.expect, digits):
            raise CheckFailed(
                f"{q.prompt!r}: expected {q.label} (/{q.expect}/), answer: {answer[:120]!r}",
                {"answers": answers},
            )
    return Passed("; ".join(q.label for q in ctx.options.factual_questions), {"answers": answers})


_WEATHER_FREE = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name, e.g. Berlin"}},
            "required": ["city"],
        },
    },
}


@check("tool_round_trip", quality=True)
def check_tool_round_trip(ctx: SmokeContext) -> Passed:
    """The model calls a tool on its own (auto), reads the result we send back, and answers from it."""
    if ctx.options.expect_tools is False:
        raise CheckSkipped("tool parser expected off")
    messages: list[dict[str, Any]] = _user("What's the weather in Paris right now? Use the tool.")
    forced = ctx.options.tool_choice
    tool_choice: Any = (
        {"type": "function", "function": {"name": "get_weather"}} if forced == "named" else forced
    )
    first = _quality_chat(
        ctx,
        messages,
        tools=[_WEATHER_FREE],
        tool_choice=tool_choice,
        max_tokens=ctx.options.quality_max_tokens,
    )
    msg = first.choices[0].message
    if not msg.tool_calls:
        raise CheckFailed(
            f"no tool call with tool_choice={forced}; content: {(msg.content or '')[:120]!r}",
            {"content": msg.content},
        )
    call = msg.tool_calls[0]
    args = json.loads(call.function.arguments or "{}")
    if call.function.name != "get_weather" or "paris" not in str(args.get("city", "")).lower():
        raise CheckFailed(
            f"called {call.function.name}({call.function.arguments}), expected get_weather(Paris)"
        )
    messages.append(
        {
            "role": "assistant",
            "content": msg.content or "",
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.function.arguments},
                }
            ],
        }
    )
    result = {"city": "Paris", "temperature_c": 23, "condition": "light drizzle"}
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
    final = _quality_chat(ctx, messages, tools=[_WEATHER_FREE], max_tokens=ctx.options.quality_max_tokens)
    answer = final.choices[0].message.content or ""
    data = {"tool_choice": forced, "arguments": args, "answer": answer}
    if "23" not in answer:
        raise CheckFailed(f"final answer ignores the tool result (23 °C): {answer[:160]!r}", data)
    how = "" if forced == "auto" else f" (first call forced: tool_choice={forced})"
    return Passed(f"get_weather({args}) -> {answer[:60]!r}{how}", data)


@check("no_degeneration", quality=True)
def check_no_degeneration(ctx: SmokeContext) -> Passed:
    """A longer answer is not a loop (the TurboQuant + spec-decode failure, vLLM issue 40831)."""
    resp = _quality_chat(
        ctx,
        _user("Explain in about 250 words how the gears on a bicycle work."),
        max_tokens=ctx.options.quality_max_tokens,
    )
    msg = resp.choices[0].message
    content = msg.content or ""
    _, reasoning = reasoning_of(msg)
    for label, text in (("reasoning", reasoning), ("content", content)):
        if text:
            reason = degeneration_reason(text)
            if reason:
                raise CheckFailed(f"{label} degenerate: {reason}", {"tail": text[-300:]})
    if len(content) < 200:
        raise CheckFailed(f"answer only {len(content)} chars: {content[:120]!r}")
    return Passed(f"{len(content)} chars of content, {len(reasoning or '')} of reasoning: no loop")


_FILLER_WORDS = [
    *("river", "stone", "garden", "market", "winter", "lantern", "harbor", "orchard", "letter"),
    *("mirror", "candle", "bridge", "meadow", "copper", "violin", "thunder", "pepper", "saddle"),
    *("window", "forest", "marble", "pocket", "ladder", "feather", "castle"),
]


def needle_prompt(target_chars: int, secret: str, depth: float = 0.6, seed: int = 7) -> str:
    """A long haystack of varied sentences (not one repeated block, which a model may skim) with one
    sentence holding ``secret`` at ``depth`` of its length."""
    rng = random.Random(seed)
    sentences: list[str] = []
    chars = 0
    while chars < target_chars:
        words = rng.sample(_FILLER_WORDS, 5)
        sentence = f"The {words[0]} near the {words[1]} held a {words[2]}, a {words[3]} and a {words[4]}."
        sentences.append(sentence)
        chars += len(sentence) + 1
    needle = f"Remember this: the secret code for the vault is {secret}."
    sentences.insert(int(len(sentences) * depth), needle)
    return " ".join(sentences)


def count_tokens(ctx: SmokeContext, text: str) -> int | None:
    """Tokens in ``text`` by the server's own tokenizer (vLLM's /tokenize), or None elsewhere."""
    try:
        resp = ctx.http.post(ctx.base_url + "/tokenize", json={"model": ctx.require_model(), "prompt": text})
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    count = resp.json().get("count")
    return count if isinstance(count, int) else None


@check("needle", quality=True)
def check_needle(ctx: SmokeContext) -> Passed:
    """A fact buried in a long context (scaled to max_model_len) is recalled."""
    reserve = ctx.options.quality_max_tokens + 256
    limit = ctx.options.max_model_len or ctx.options.needle_max_tokens
    target = min(ctx.options.needle_max_tokens, limit - reserve)
    if target < 512:
        raise CheckSkipped(f"max_model_len {limit} leaves no room for a long context")
    secret = "7319-ALBATROSS"
    haystack = needle_prompt(target * 4, secret)  # English filler runs about 4 characters a token
    counted = count_tokens(ctx, haystack)
    if counted and counted > target:
        haystack = needle_prompt(int(len(haystack) * target / counted * 0.95), secret)
    question = "\n\nWhat is the secret code for the vault? Reply with the code only."
    resp = _quality_chat(ctx, _user(haystack + question), max_tokens=ctx.options.quality_max_tokens)
    answer = resp.choices[0].message.content or ""
    prompt_tokens = resp.usage.prompt_tokens if resp.usage else None
    data = {"prompt_tokens": prompt_tokens, "target_tokens": target}
    if "7319" not in answer or "albatross" not in answer.lower():
        raise CheckFailed(f"needle not recalled from {prompt_tokens} tokens: {answer[:120]!r}", data)
    return Passed(f"recalled from {prompt_tokens} prompt tokens", data)


@check("spec_acceptance", quality=True)
def check_spec_acceptance(ctx: SmokeContext) -> Passed:
    """Speculative decoding accepts at least the floor share of drafted tokens during a generation
    (0% is the quantized-mtp.fc failure: vLLM skips the weight and the drafter guesses blind)."""
    spec = ctx.options.num_speculative_tokens
    if spec == 0:
        raise CheckSkipped("no speculative decoding")
    before = scrape_metrics(ctx) or {}
    if not all(s in before for s in _SPEC_SERIES):
        if spec:
            raise CheckFailed(f"num_speculative_tokens {spec} but no spec-decode counters in /metrics")
        raise CheckSkipped("no spec-decode counters in /metrics: speculative decoding off")
    per_pos_before = _per_position(ctx)
    _quality_chat(ctx, _user("Write a short paragraph about the history of the bicycle."), max_tokens=256)
    draft_key = "vllm:spec_decode_num_draft_tokens_total"
    _wait_for_counter(ctx, draft_key, before[draft_key] + 1)
    after = scrape_metrics(ctx) or {}
    deltas = {k: after.get(k, 0.0) - before[k] for k in _SPEC_SERIES}
    drafts, draft_tokens = deltas["vllm:spec_decode_num_drafts_total"], deltas[draft_key]
    accepted = deltas["vllm:spec_decode_num_accepted_tokens_total"]
    if draft_tokens <= 0:
        raise CheckFailed("no draft tokens proposed during a 256-token generation")
    per_pos_after = _per_position(ctx) if drafts else {}
    accepted_per_pos = {p: v - per_pos_before.get(p, 0.0) for p, v in per_pos_after.items()}
    figures = acceptance(drafts, draft_tokens, accepted, accepted_per_pos)
    assert figures.rate is not None  # draft_tokens > 0 here
    rate = figures.rate
    data = {
        "acceptance_rate": round(rate, 4),
        "mean_acceptance_length": round(figures.mean_length, 3) if figures.mean_length is not None else None,
        "draft_tokens": draft_tokens,
        "accepted_tokens": accepted,
        "floor": ctx.options.spec_acceptance_floor,
    }
    if drafts:
        data["acceptance_per_position"] = {pos: round(v, 4) for pos, v in figures.per_position.items()}
    if math.isnan(rate) or rate < ctx.options.spec_acceptance_floor:
        raise CheckFailed(
            f"acceptance {rate:.0%} below the floor {ctx.options.spec_acceptance_floor:.0%}", data
        )
    return Passed(f"acceptance {rate:.0%} (mean length {data['mean_acceptance_length']})", data)

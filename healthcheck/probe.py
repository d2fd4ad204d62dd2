"""The readiness probe: vLLM's /health, then /v1/models, then a real streamed chat completion with a
tiny max_tokens whose text must not look degenerate and, where the profile's model can answer, must
give the known answer (healthcheck.question: the capital of France, ``(?i)\bparis\b``).

/health alone is not enough: it turns 200 before the server answers correctly, and stays 200 while a
TurboQuant + speculative decoding + CUDA graph engine answers with repeating garbage (vLLM issues
40831, 40880, 52475, 53180). Only a real completion, checked by the detector the smoke suite shares,
tells the truth.

Every outcome is one of ``REASONS`` (a bounded label set for the metrics) plus a human detail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from healthcheck.bounded_http import ResponseTooLarge, iter_lines_capped, read_capped
from healthcheck.question import ProbeQuestion
from healthcheck.redact import Redactor
from serve.client import sse
from serve.client.endpoint import normalize_base_url
from serve.client.sse import error_message
from serve.launch.detectors import degeneration_reason

log = logging.getLogger(__name__)

OK = "ok"
REASONS: tuple[str, ...] = (
    OK,
    "engine_unreachable",  # connection refused / DNS: nothing listens
    "connection_lost",  # connected, then the connection broke (killed mid-request)
    "timeout",  # a call or the whole probe ran past its deadline (hung, frozen, overloaded)
    "health_failed",  # /health answered, but not 200
    "unauthorized",  # 401/403: vLLM wants an API key we do not have (or a wrong one)
    "model_not_listed",  # /v1/models does not list the served model
    "request_failed",  # non-2xx from /v1/models or the completion, or an error event mid-stream
    "malformed_response",  # not the JSON / event stream the OpenAI API promises
    "response_too_large",  # a body past max_response_bytes
    "degenerate_output",  # the completion came back, but empty or repeating
    "wrong_answer",  # not degenerate, but not the known answer (readiness.expect / --probe-expect)
    "internal_error",  # a bug in the sidecar; logged with a traceback
)


@dataclass(frozen=True)
class ProbeResult:
    reason: str
    detail: str = ""
    stage: str = ""  # health | models | chat: where it failed ("" when ok)
    engine_reachable: bool = False  # /health answered with any HTTP response
    model: str | None = None
    ttft_s: float | None = None
    total_s: float = 0.0
    sample: str = ""  # the start of the generated text, for the readiness body
    answer_check: str = ""  # ProbeQuestion.answer_check of the question asked ("" before the chat)
    health: str = ""  # "ok"; "absent (HTTP 404)": a server without /health (Ray Serve LLM); "" before
    finished_at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.reason == OK


class ProbeFailure(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_model_ids(body: bytes) -> list[str]:
    """Model ids from a /v1/models body (``{"data": [{"id": ...}, ...]}``)."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProbeFailure("malformed_response", f"/v1/models is not JSON: {exc}") from exc
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise ProbeFailure("malformed_response", "/v1/models has no 'data' list")
    ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
    if len(ids) != len(data):
        raise ProbeFailure("malformed_response", "/v1/models has entries without a string 'id'")
    return ids


# The probe judges ChatStream.text, content and reasoning together: a tiny max_tokens often ends
# inside the thinking that a reasoning parser moves out of "content".
_STREAM_REASONS = {"malformed": "malformed_response", "server_error": "request_failed"}


class ChatStream(sse.ChatStream):
    """The shared chat-stream parser (serve.client.sse), its faults as the probe's reasons."""

    def feed(self, line: str, now: float = 0.0) -> sse.ChatChunk | None:
        try:
            return super().feed(line, now)
        except sse.StreamError as exc:
            raise ProbeFailure(_STREAM_REASONS[exc.kind], exc.detail) from exc


def parse_chat_json(body: bytes) -> str:
    """Text of a non-streamed chat completion (a server that ignored ``stream: true``)."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProbeFailure("malformed_response", f"completion is not JSON: {exc}") from exc
    err = error_message(doc)
    if err is not None:
        raise ProbeFailure("request_failed", f"completion error: {err}")
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ProbeFailure("malformed_response", "completion has no choices")
    return "".join(sse.message_parts(choices[0].get("message")))


def _status_failure(stage: str, response: httpx.Response, body: bytes) -> ProbeFailure:
    if response.status_code in (401, 403):
        return ProbeFailure(
            "unauthorized",
            f"{stage}: HTTP {response.status_code}; vLLM requires an API key: set HEALTHCHECK_API_KEY, "
            "VLLM_API_KEY or HEALTHCHECK_API_KEY_FILE to the key vLLM was started with",
        )
    try:
        msg = error_message(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError):
        msg = None
    shown = msg or body[:200].decode("utf-8", errors="replace")
    return ProbeFailure("request_failed", f"{stage}: HTTP {response.status_code}: {shown}")


class Prober:
    """Runs one probe at a time against one vLLM server. The caller owns scheduling; ``run`` never
    raises and never takes longer than ``deadline_s`` (plus the time to cancel)."""

    def __init__(
        self,
        base_url: str,
        *,
        expected_model: Callable[[], str | None],
        api_key: str | None,
        deadline_s: float,
        request_timeout_s: float,
        max_response_bytes: int,
        question: Callable[[], ProbeQuestion],
        temperature: float,
    ) -> None:
        self.base_url = normalize_base_url(base_url, where="--vllm-url")
        self.expected_model = expected_model
        self.deadline_s = deadline_s
        self.max_response_bytes = max_response_bytes
        self.question = question  # asked per probe: the plan file may appear or change meanwhile
        self.temperature = temperature
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # An engine error may quote the request back (its Authorization header): details are shown on
        # /readyz and logged, so the key and anything shaped like a credential are taken out.
        self._redact = Redactor([api_key]).text
        # One connection is all a sequential probe needs; the cap makes a leak show up as an error
        # rather than as a growing number of sockets into a frozen server.
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(request_timeout_s),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            trust_env=False,
        )
        self._stage = ""
        self._reachable = False
        self._sample = ""
        self._answer_check = ""
        self._health = ""
        self._model: str | None = None

    async def aclose(self) -> None:
        await self._client.aclose()

    async def run(self) -> ProbeResult:
        start = time.monotonic()
        self._stage, self._reachable, self._sample, self._answer_check = "health", False, "", ""
        self._health = ""
        self._model = None
        try:
            model, ttft, text = await asyncio.wait_for(self._probe(), self.deadline_s)
        except asyncio.TimeoutError:
            return self._fail(
                start, "timeout", f"{self._stage}: no complete answer within {self.deadline_s:g} s"
            )
        except ProbeFailure as exc:
            return self._fail(start, exc.reason, exc.detail)
        except ResponseTooLarge as exc:
            return self._fail(start, "response_too_large", f"{self._stage}: {exc}")
        except httpx.TimeoutException as exc:
            return self._fail(start, "timeout", f"{self._stage}: {type(exc).__name__} {exc}".strip())
        except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
            return self._fail(
                start, "engine_unreachable", f"{self._stage}: cannot connect to {self.base_url}: {exc}"
            )
        except httpx.TransportError as exc:
            return self._fail(start, "connection_lost", f"{self._stage}: {type(exc).__name__}: {exc}")
        except Exception as exc:  # the loop must survive anything a broken server provokes
            log.exception("probe raised")
            return self._fail(start, "internal_error", f"{self._stage}: {type(exc).__name__}: {exc}")
        return ProbeResult(
            reason=OK,
            engine_reachable=True,
            model=model,
            ttft_s=ttft,
            total_s=time.monotonic() - start,
            sample=text[:200],
            answer_check=self._answer_check,
            health=self._health,
        )

    def _fail(self, start: float, reason: str, detail: str) -> ProbeResult:
        return ProbeResult(
            reason=reason,
            detail=self._redact(detail),
            stage=self._stage,
            engine_reachable=self._reachable,
            model=self._model,
            total_s=time.monotonic() - start,
            sample=self._redact(self._sample),
            answer_check=self._answer_check,
            health=self._health,
        )

    async def _get(self, path: str) -> tuple[httpx.Response, bytes]:
        async with self._client.stream("GET", self.base_url + path) as response:
            body = await read_capped(response, self.max_response_bytes)
        return response, body

    async def _probe(self) -> tuple[str, float | None, str]:
        response, body = await self._get("/health")
        self._reachable = True
        if response.status_code == 404:
            # No such route, not a failed health: Ray Serve LLM's OpenAI ingress serves /v1/* only
            # (Ray 2.60). /health was never enough anyway; the completion below decides, as for vLLM.
            self._health = "absent (HTTP 404)"
        elif response.status_code != 200:
            raise ProbeFailure("health_failed", f"/health: HTTP {response.status_code}")
        else:
            self._health = "ok"

        self._stage = "models"
        response, body = await self._get("/v1/models")
        if response.status_code != 200:
            raise _status_failure("/v1/models", response, body)
        ids = parse_model_ids(body)
        wanted = self.expected_model()
        if wanted is None:
            if not ids:
                raise ProbeFailure("model_not_listed", "/v1/models lists no model")
            wanted = ids[0]
        elif wanted not in ids:
            shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
            raise ProbeFailure("model_not_listed", f"/v1/models lists [{shown}], not {wanted!r}")

        self._stage, self._model = "chat", wanted
        question = self.question()
        self._answer_check = question.answer_check
        ttft, text = await self._chat(wanted, question)
        self._sample = text[:200]
        # A loop first: it is the louder fault, and a looping answer may even contain "Paris".
        reason = degeneration_reason(text)
        if reason is not None:
            raise ProbeFailure(
                "degenerate_output", f"completion looks degenerate: {reason}; text {text[:80]!r}"
            )
        miss = question.wrong_answer(text)
        if miss is not None:
            raise ProbeFailure("wrong_answer", f"{question.prompt!r}: {miss}")
        return wanted, ttft, text

    async def _chat(self, model: str, question: ProbeQuestion) -> tuple[float | None, str]:
        request = {
            "model": model,
            "messages": [{"role": "user", "content": question.prompt}],
            "max_tokens": question.max_tokens,
            "temperature": self.temperature,
            "stream": True,
            **question.extra_body,
        }
        sent = time.monotonic()
        async with self._client.stream(
            "POST", self.base_url + "/v1/chat/completions", json=request
        ) as response:
            if response.status_code != 200:
                body = await read_capped(response, self.max_response_bytes)
                raise _status_failure("/v1/chat/completions", response, body)
            if "text/event-stream" not in response.headers.get("content-type", ""):
                body = await read_capped(response, self.max_response_bytes)
                return None, parse_chat_json(body)
            stream = ChatStream()
            async for line in iter_lines_capped(response, self.max_response_bytes):
                stream.feed(line, time.monotonic())
                if stream.done:
                    break
        if not stream.done:
            raise ProbeFailure("malformed_response", "the event stream ended without [DONE]")
        ttft = None if stream.first_text_at is None else stream.first_text_at - sent
        return ttft, stream.text

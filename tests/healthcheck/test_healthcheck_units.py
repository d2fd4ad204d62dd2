"""Unit tests of the sidecar's pure parts: settings, vLLM metrics parsing, the spec-decode window,
sticky readiness, chat stream parsing and degenerate detection, plan labels (the restart policy: test_watchdog.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from healthcheck.config import Settings, SettingsError, parse_settings
from healthcheck.plan_info import PLAN_LABELS, PlanFile, plan_labels
from healthcheck.probe import (
    REASONS,
    ChatStream,
    ProbeFailure,
    ProbeResult,
    parse_chat_json,
    parse_model_ids,
)
from healthcheck.question import NO_PLAN_OFF_REASON, UNCHECKED_MAX_TOKENS, resolve_question
from healthcheck.readiness import Readiness
from healthcheck.vllm_metrics import (
    MetricsParseError,
    SpecCounters,
    SpecDecodeWindow,
    parse_vllm_metrics,
)

# Shaped like vLLM 0.32's /metrics (names and labels from vllm/v1/spec_decode/metrics.py and
# vllm/v1/metrics/loggers.py), with two engines to check summing, plus a family we ignore.
VLLM_TEXT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
# HELP vllm:num_requests_waiting_by_reason Number of waiting requests by reason.
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 4.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="m"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 1.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 1.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 0.2
# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 10.0
vllm:spec_decode_num_drafts_total{engine="1",model_name="m"} 6.0
# HELP vllm:spec_decode_num_draft_tokens_total Number of draft tokens.
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 30.0
vllm:spec_decode_num_draft_tokens_total{engine="1",model_name="m"} 18.0
# HELP vllm:spec_decode_num_accepted_tokens_total Number of accepted tokens.
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 20.0
vllm:spec_decode_num_accepted_tokens_total{engine="1",model_name="m"} 4.0
# HELP vllm:spec_decode_num_accepted_tokens_per_pos_total Accepted tokens per draft position.
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 9.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="1"} 7.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="2"} 4.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="m",position="0"} 3.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="m",position="1"} 1.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="m",position="2"} 0.0
"""


# --- vLLM metrics parsing ----------------------------------------------------------------------
def test_parse_sums_engines_and_reads_gauges() -> None:
    snap = parse_vllm_metrics(VLLM_TEXT)
    assert snap.requests_running == 3.0
    assert snap.requests_waiting == 4.0  # not mixed up with num_requests_waiting_by_reason
    assert snap.kv_cache_usage == 0.5
    assert snap.spec == SpecCounters(16.0, 48.0, 24.0, {0: 12.0, 1: 8.0, 2: 4.0})


def test_parse_without_spec_decode_gives_no_counters() -> None:
    text = "\n".join(line for line in VLLM_TEXT.splitlines() if "spec_decode" not in line)
    snap = parse_vllm_metrics(text)
    assert snap.spec is None
    assert snap.kv_cache_usage == 0.5


def test_parse_rejects_garbage_in_a_wanted_family() -> None:
    with pytest.raises(MetricsParseError):
        parse_vllm_metrics('vllm:kv_cache_usage_perc{engine="0" 0.5 oops\n')


def test_parse_ignores_garbage_elsewhere_and_empty_text() -> None:
    # A family we do not use may be anything; it must not cost us the ones we do use.
    snap = parse_vllm_metrics("<html>502 Bad Gateway</html>\n" + VLLM_TEXT)
    assert snap.kv_cache_usage == 0.5
    assert parse_vllm_metrics("").spec is None


# --- the sliding window ------------------------------------------------------------------------
def _counters(t: float, accept_per_pos: tuple[float, ...] = (0.8, 0.5, 0.2)) -> SpecCounters:
    drafts = 10.0 * t
    per_pos = {p: a * drafts for p, a in enumerate(accept_per_pos)}
    return SpecCounters(drafts, 3 * drafts, sum(per_pos.values()), per_pos)


def test_window_math_matches_vllm_formulas() -> None:
    w = SpecDecodeWindow(60)
    for t in range(0, 31, 5):
        w.add(float(t), _counters(t))
    d = w.derived()
    assert d is not None
    assert d.window_s == 30.0
    assert d.drafts == 300.0
    assert d.acceptance_rate == pytest.approx(1.5 / 3)  # accepted / draft tokens
    assert d.mean_acceptance_length == pytest.approx(1 + 1.5)  # 1 + accepted / drafts
    assert d.per_position == pytest.approx({0: 0.8, 1: 0.5, 2: 0.2})


def test_window_forgets_samples_older_than_the_window() -> None:
    # 100 s of good acceptance, then 30 s where nothing is accepted: a 20 s window sees only the drop.
    w = SpecDecodeWindow(20)
    good = _counters(100.0)
    for t in range(0, 101, 5):
        w.add(float(t), _counters(t))
    for t in range(105, 131, 5):
        extra = 10.0 * (t - 100)
        w.add(
            float(t),
            SpecCounters(
                good.drafts + extra, good.draft_tokens + 3 * extra, good.accepted, good.accepted_per_pos
            ),
        )
    d = w.derived()
    assert d is not None and d.window_s == 20.0
    assert d.acceptance_rate == 0.0
    assert d.mean_acceptance_length == 1.0


def test_window_resets_on_counter_decrease_and_needs_two_samples() -> None:
    w = SpecDecodeWindow(60)
    w.add(0.0, _counters(50))
    w.add(5.0, _counters(55))
    assert w.derived() is not None
    w.add(10.0, _counters(1))  # vLLM restarted
    assert w.derived() is None  # one sample: no difference yet, and none across the restart
    w.add(15.0, _counters(6))
    d = w.derived()
    assert d is not None and d.drafts == pytest.approx(50.0)


def test_window_without_drafts_is_unknown_not_zero() -> None:
    w = SpecDecodeWindow(60)
    w.add(0.0, _counters(5))
    w.add(5.0, _counters(5))  # idle server: counters did not move
    assert w.derived() is None


# --- readiness stickiness ----------------------------------------------------------------------
OK = ProbeResult("ok", engine_reachable=True)
FAIL = ProbeResult("timeout", "chat: no answer", stage="chat", engine_reachable=True)


def test_readiness_is_sticky_for_threshold_failures() -> None:
    r = Readiness(failure_threshold=3)
    assert not r.ready and r.reason == "not_probed_yet"
    assert r.record(OK) is True and r.ready
    assert r.record(FAIL) is False and r.ready
    assert r.record(FAIL) is False and r.ready
    body = r.body()
    assert body["ready"] and "ready until 3 failures" in body["detail"]
    assert r.record(FAIL) is True and not r.ready
    assert r.body()["reason"] == "timeout" and r.body()["failed_stage"] == "chat"


def test_readiness_failure_streak_resets_on_success() -> None:
    r = Readiness(failure_threshold=2)
    r.record(OK)
    for _ in range(5):
        r.record(FAIL)
        r.record(OK)
    assert r.ready and r.consecutive_failures == 0


def test_readiness_needs_success_threshold_to_recover() -> None:
    r = Readiness(failure_threshold=1, success_threshold=2)
    r.record(FAIL)
    r.record(OK)
    assert not r.ready
    assert r.body()["reason"] == "timeout"  # why it is still not ready
    r.record(OK)
    assert r.ready


# --- probe parsing and degenerate detection ----------------------------------------------------
def _event(doc: object) -> str:
    return "data: " + json.dumps(doc)


def test_chat_stream_collects_content_and_reasoning() -> None:
    s = ChatStream()
    s.feed(_event({"choices": [{"delta": {"role": "assistant"}}]}), 1.0)
    s.feed("", 1.1)
    s.feed(_event({"choices": [{"delta": {"reasoning_content": "Okay, "}}]}), 1.2)
    s.feed(_event({"choices": [{"delta": {"reasoning": "the user"}}]}), 1.3)
    s.feed(_event({"choices": [{"delta": {"content": " asks."}}]}), 1.4)
    s.feed(_event({"choices": [], "usage": {"completion_tokens": 3}}), 1.5)
    s.feed("data: [DONE]", 1.6)
    assert s.text == "Okay, the user asks." and s.done and s.first_text_at == 1.2


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("data: {not json", "malformed_response"),
        ('data: {"object": "chat.completion.chunk"}', "malformed_response"),
        ('data: {"error": {"message": "EngineDeadError"}}', "request_failed"),
    ],
)
def test_chat_stream_rejects_bad_events(line: str, reason: str) -> None:
    with pytest.raises(ProbeFailure) as err:
        ChatStream().feed(line, 0.0)
    assert err.value.reason == reason


def test_non_streamed_completion_and_models() -> None:
    body = json.dumps({"choices": [{"message": {"content": "Red, blue, yellow."}}]}).encode()
    assert parse_chat_json(body) == "Red, blue, yellow."
    assert parse_model_ids(b'{"data": [{"id": "a"}, {"id": "b"}]}') == ["a", "b"]
    for bad in (b"[]", b'{"data": [{"name": "a"}]}', b"\xff\xfe", b'{"data": "a"}'):
        with pytest.raises(ProbeFailure) as err:
            parse_model_ids(bad)
        assert err.value.reason == "malformed_response"


@pytest.mark.parametrize(
    ("text", "degenerate"),
    [
        ("Red, yellow and blue are the primary colors.", False),
        ("<think>\nOkay, the user wants three primary colors. Let", False),
        ("the the the the the the the the the the ", True),
        ("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!", True),
        ("   ", True),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", True),  # what the tiny "agreeing" MTP model emits
    ],
)
def test_degenerate_detection_through_the_shared_detector(text: str, degenerate: bool) -> None:
    # The probe uses serve.launch.detectors (shared with the smoke suite); this pins the texts the sidecar
    # must tell apart at its tiny max_tokens.
    from serve.launch.detectors import degeneration_reason

    assert (degeneration_reason(text) is not None) is degenerate


# --- settings ----------------------------------------------------------------------------------
def test_settings_from_env_and_flags_flag_wins(tmp_path: Path) -> None:
    env = {
        "HEALTHCHECK_PORT": "18399",
        "HEALTHCHECK_MODEL": "vllm",
        "HEALTHCHECK_PROBE_INTERVAL_S": "2.5",
        "HEALTHCHECK_PLAN_FILE": str(tmp_path / "p.json"),
    }
    s = parse_settings(["--port", "18398", "--no-gpu"], env)
    assert (s.port, s.model, s.probe_interval_s, s.gpu) == (
        18398,
        "vllm",
        2.5,
        False,
    )
    assert s.plan_file == tmp_path / "p.json"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "x"], {}, "--port"),
        ([], {"HEALTHCHECK_GPU": "maybe"}, "HEALTHCHECK_GPU"),
        (["--autoheal"], {}, "SERVE_WATCHDOG"),
        ([], {"HEALTHCHECK_HEADER_TIMEOUT_S": "0"}, "HEALTHCHECK_HEADER_TIMEOUT_S = 0.0 must be > 0"),
        (["--probe-extra-body", "[1]"], {}, "JSON object"),
        (["--vllm-url", "localhost:8000"], {}, "http://"),
        (["--probe-expect", "(?i)(paris"], {}, "--probe-expect / HEALTHCHECK_PROBE_EXPECT .* not a valid"),
        ([], {"HEALTHCHECK_PROBE_EXPECT": "x*"}, "HEALTHCHECK_PROBE_EXPECT .* matches the empty string"),
        (["--probe-expect", "p" * 301], {}, "at most 300 characters"),
        (["--probe-expect", "paris", "--probe-expect-off", "why"], {}, "conflicts with --probe-expect"),
        (["--probe-expect-off", " "], {}, "must say why"),
        (["--probe-max-tokens", "0"], {}, "--probe-max-tokens"),
    ],
)
def test_settings_errors_name_flag_and_env(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_settings(argv, env)


def test_api_key_precedence_and_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    s = Settings(api_key_file=key_file)
    assert s.resolve_api_key({}) == "from-file"
    assert s.resolve_api_key({"VLLM_API_KEY": "from-vllm-env"}) == "from-vllm-env"
    assert Settings(api_key="direct", api_key_file=key_file).resolve_api_key({}) == "direct"
    assert Settings(api_key="direct").redacted()["api_key"] == "***"
    shown = Settings(
        vllm_url="http://u:pw@h:1", probe_extra_body='{"api_key": "sk-x", "chat_template_kwargs": {}}'
    ).redacted()
    assert shown["vllm_url"] == "http://[redacted]@h:1"
    assert json.loads(shown["probe_extra_body"]) == {"api_key": "[redacted]", "chat_template_kwargs": {}}
    with pytest.raises(SettingsError, match="cannot read"):
        Settings(api_key_file=tmp_path / "missing").resolve_api_key({})


# --- plan file ---------------------------------------------------------------------------------
def test_plan_labels_tolerate_missing_and_extra_keys(tmp_path: Path) -> None:
    full = {
        "schema_version": 1,
        "profile": "qwen3.6-27b-rtx5090",
        "served_model_name": "Lorbus/Q",
        "settings": {
            "kv_cache_dtype": "turboquant_4bit_nc",
            "speculative_method": "mtp",
            "num_speculative_tokens": 1,
            "cudagraph_mode": "NONE",
            "new_key": 1,
        },
        "facts": {"gpu": {"name": "NVIDIA GeForce RTX 5090", "count": 1}, "engine": {"version": "0.24.0"}},
        "something_new": {"x": 1},
    }
    assert plan_labels(full) == {
        "profile": "qwen3.6-27b-rtx5090",
        "served_model_name": "Lorbus/Q",
        "kv_cache_dtype": "turboquant_4bit_nc",
        "speculative_method": "mtp",
        "num_speculative_tokens": "1",
        "cudagraph_mode": "NONE",
        "vllm_version": "0.24.0",
        "gpu": "NVIDIA GeForce RTX 5090",
        "gpu_origin": "",  # an older plan: no facts.gpu.origin
        "answer_check": "off: " + NO_PLAN_OFF_REASON,  # an older plan without a readiness block
    }
    assumed = {**full, "facts": {"gpu": {"name": "NVIDIA GeForce RTX 5090", "origin": "assumed"}}}
    assert plan_labels(assumed)["gpu_origin"] == "assumed"
    assert plan_labels({"facts": {"gpu": {"origin": "none"}}})["gpu_origin"] == "none"
    assert plan_labels({"model": "m"})["served_model_name"] == "m"
    assert {k: v for k, v in plan_labels({}).items() if k != "answer_check"} == dict.fromkeys(
        PLAN_LABELS[:-1], ""
    )
    on = plan_labels({**full, "readiness": {"expect": "(?i)\\bparis\\b"}})["answer_check"]
    off = plan_labels({**full, "readiness": {"expect": None, "off_reason": "random weights"}})
    assert (on, off["answer_check"]) == ("on: (?i)\\bparis\\b", "off: random weights")

    path = tmp_path / "plan.json"
    pf = PlanFile(path)
    pf.refresh()
    assert pf.labels is None
    path.write_text(json.dumps(full))
    pf.refresh()
    assert pf.served_model_name == "Lorbus/Q"
    path.write_text("{ truncated")  # a torn write: keep the last good reading
    pf.refresh()
    assert pf.labels is not None and pf.labels["profile"] == "qwen3.6-27b-rtx5090"


# --- the probe's question and answer check ------------------------------------------------------
_NO_FLAGS = {"prompt": None, "max_tokens": None, "extra_body": None, "expect": None, "expect_off": None}
_QWEN_BLOCK = {
    "prompt": "What is the capital of France? Answer with one word.",
    "expect": "(?i)\\bparis\\b",
    "off_reason": None,
    "max_tokens": 16,
    "extra_body": {"chat_template_kwargs": {"enable_thinking": False}},
}


def test_question_comes_from_the_plan_block() -> None:
    q = resolve_question(**_NO_FLAGS, plan_block=_QWEN_BLOCK)
    assert (q.prompt, q.max_tokens, q.extra_body, q.source) == (
        _QWEN_BLOCK["prompt"],
        16,
        {"chat_template_kwargs": {"enable_thinking": False}},
        "plan",
    )
    assert q.answer_check == "on: (?i)\\bparis\\b"
    assert q.wrong_answer("The capital of France is Paris.") is None
    assert q.wrong_answer("<think>France... Paris</think>") is None  # reasoning counts too
    assert "does not match" in (q.wrong_answer("The capital of France is Berlin.") or "")
    assert q.wrong_answer("Parisian cafés") is not None  # \b: the word, not a prefix of another


def test_flags_override_the_plan_and_can_turn_the_check_off() -> None:
    flags = {**_NO_FLAGS, "expect": "(?i)berlin", "prompt": "Capital of Germany?", "max_tokens": 8}
    q = resolve_question(**flags, plan_block=_QWEN_BLOCK)
    assert (q.prompt, q.max_tokens, q.source, q.answer_check) == (
        "Capital of Germany?",
        8,
        "flag",
        "on: (?i)berlin",
    )
    assert q.extra_body == _QWEN_BLOCK["extra_body"]  # not overridden: still the plan's
    off = resolve_question(**{**_NO_FLAGS, "expect_off": "testing"}, plan_block=_QWEN_BLOCK)
    assert off.expect is None and off.answer_check == "off: testing"
    assert off.wrong_answer("anything at all") is None
    replaced = resolve_question(**{**_NO_FLAGS, "extra_body": {}}, plan_block=_QWEN_BLOCK)
    assert replaced.extra_body == {}


def test_random_weight_plans_say_why_the_check_is_off() -> None:
    block = {"expect": None, "off_reason": "random weights: the tiny generated model cannot answer"}
    q = resolve_question(**_NO_FLAGS, plan_block=block)
    assert q.answer_check == "off: random weights: the tiny generated model cannot answer"
    assert q.source == "plan" and q.max_tokens == 16  # the layer's default; cpu-tiny sets 32


def test_no_plan_or_a_bad_plan_block_leaves_the_answer_unchecked_and_says_so() -> None:
    none = resolve_question(**_NO_FLAGS, plan_block=None)
    assert none.answer_check == "off: " + NO_PLAN_OFF_REASON and none.max_tokens == UNCHECKED_MAX_TOKENS
    assert none.prompt.startswith("What is the capital of France")  # the schema's default question
    bad = resolve_question(**_NO_FLAGS, plan_block={"expect": "(paris"})
    assert bad.expect is None and "plan.json readiness.expect is invalid" in bad.answer_check
    assert "not a valid Python regular expression" in bad.answer_check
    assert "not an object" in resolve_question(**_NO_FLAGS, plan_block=[1]).answer_check
    flagged = resolve_question(**{**_NO_FLAGS, "expect": "(?i)paris"}, plan_block={"expect": "(paris"})
    assert flagged.answer_check == "on: (?i)paris"  # an explicit flag still wins


def test_wrong_answer_is_a_reason_of_its_own() -> None:
    assert "wrong_answer" in REASONS and REASONS.index("wrong_answer") > REASONS.index("degenerate_output")
    body = Readiness(1).body(answer_check="off: random weights")
    assert list(body)[:3] == ["ready", "reason", "answer_check"]


def test_nan_is_not_a_reading() -> None:
    snap = parse_vllm_metrics('vllm:kv_cache_usage_perc{engine="0"} NaN\n')
    assert snap.kv_cache_usage is None or not math.isnan(snap.kv_cache_usage)


# --- the ASGI app's routes (in process, loops not started) -------------------------------------
def test_routes_before_the_loops_run() -> None:
    import asyncio

    import httpx

    from healthcheck.app import Sidecar, build_app

    async def go() -> dict[str, httpx.Response]:
        sidecar = Sidecar(Settings(vllm_url="http://127.0.0.1:9", plan_file=None, gpu=False))
        transport = httpx.ASGITransport(app=build_app(sidecar))
        async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as client:
            out = {
                "livez": await client.get("/livez"),
                "readyz": await client.get("/readyz"),
                "metrics": await client.get("/metrics"),
                "missing": await client.get("/nope"),
                "post": await client.post("/readyz"),
            }
        await sidecar.stop()
        return out

    r = asyncio.run(go())
    assert r["livez"].status_code == 500  # no probe loop running: state would be stale, so not alive
    assert r["readyz"].status_code == 503 and r["readyz"].json()["reason"] == "not_probed_yet"
    assert r["readyz"].json()["answer_check"] == "off: " + NO_PLAN_OFF_REASON  # no plan, no flag
    assert r["readyz"].headers["cache-control"] == "no-store"
    assert r["metrics"].status_code == 200 and "healthcheck_ready 0.0" in r["metrics"].text
    assert "_created" not in r["metrics"].text
    assert r["missing"].status_code == 404 and r["post"].status_code == 405


# --- redaction ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("upstream said: Authorization: Bearer abc.def-123 was refused", "abc.def-123"),
        ('{"headers": {"authorization": "Basic dXNlcjpwYXNz"}}', "dXNlcjpwYXNz"),
        ("bad key sk-proj-AAAAAAAAAAAAAAAAAAAA", "sk-proj-AAAAAAAAAAAAAAAAAAAA"),
        ('{"api_key": "k-123456", "max_tokens": 32}', "k-123456"),
        ("GET http://bob:hunter2@proxy:3128/v1", "hunter2"),
        ("the configured key my-own-key-42 leaked", "my-own-key-42"),
    ],
)
def test_redactor_removes_credentials(text: str, secret: str) -> None:
    from healthcheck.redact import Redactor

    out = Redactor(["my-own-key-42"]).text(text)
    assert secret not in out and "[redacted]" in out, out


def test_redactor_leaves_ordinary_text() -> None:
    from healthcheck.redact import Redactor

    text = "/v1/chat/completions: HTTP 500: EngineCore died; max_tokens 32, temperature 0"
    assert Redactor(["my-own-key-42"]).text(text) == text

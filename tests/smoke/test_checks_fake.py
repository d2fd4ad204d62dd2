"""Every smoke check can fail: each runs against a FAKE OpenAI server (tests/smoke/fake_openai_server.py)
that behaves well, and then with the one fault the check exists to catch. The checks' truth on a real
vLLM is test_e2e_cpu_vllm.py; this module only proves they are not checks that cannot fail."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from serve.errors import KitError
from serve.smoke.checks import (
    CHECKS,
    SmokeContext,
    SmokeOptions,
    build_context,
    normalize_base_url,
    peak_overlap,
    run_suite,
    select_checks,
)
from tests.smoke.fake_openai_server import FakeBehaviour, serve_fake

GOOD_OPTIONS = {
    "max_num_seqs": 4,
    "expect_reasoning": True,
    "expect_tools": True,
    "num_speculative_tokens": 3,
    "quality_max_tokens": 256,
    "needle_max_tokens": 2000,
    "request_timeout_s": 20.0,
}


@contextmanager
def fake_context(options: dict[str, Any] | None = None, **faults: Any) -> Iterator[SmokeContext]:
    with serve_fake(FakeBehaviour(spec_tokens=3), **faults) as url:
        ctx = build_context(url, options=SmokeOptions(**{**GOOD_OPTIONS, **(options or {})}))
        try:
            yield ctx
        finally:
            ctx.close()


def test_good_fake_passes_every_check() -> None:
    with fake_context() as ctx:
        report = run_suite(ctx, quality=True)
    assert {r.name: r.status for r in report.results} == {name: "pass" for name in CHECKS}, [
        (r.name, r.detail) for r in report.results if r.status != "pass"
    ]
    assert report.passed


FAULTS = [
    # (check, faults on the fake, options, words the failure must say)
    ("models", {}, {"max_model_len": 8192}, "served max_model_len 4096 != 8192"),
    ("chat", {"empty_text": True}, {}, "returned no text"),
    ("completions", {"empty_text": True}, {}, "returned no text"),
    ("streaming", {"buffered_stream": True}, {}, "buffered"),
    ("usage", {"wrong_usage": True}, {}, "total_tokens"),
    ("reasoning", {"think_in_content": True}, {}, "thinking tags left in content"),
    ("reasoning", {"reasoning": False}, {}, "no reasoning/reasoning_content field"),
    ("reasoning", {}, {"expect_reasoning": False}, "expected off"),
    ("tool_call", {"no_tool_calls": True}, {}, "gave no tool_calls"),
    ("tool_call", {"tool_parser": False}, {}, "lacks vllm:tool_call_parser_invocations_total"),
    ("tool_call", {}, {"expect_tools": False}, "a tool parser is on"),
    ("concurrency", {"serial": True}, {}, "one after another"),
    ("unknown_model", {"unknown_model_status": 500}, {}, "HTTP 500"),
    ("prompt_too_long", {"too_long_status": 500}, {}, "HTTP 500"),
    ("metrics", {"metrics_frozen": True}, {}, "generation_tokens_total moved 0"),
    ("metrics", {"metrics_missing": True}, {}, "404"),
    ("metrics", {"spec_tokens": 0}, {}, "no spec-decode counters"),
    ("factual", {"wrong_answers": True}, {}, "Lyon"),
    ("tool_round_trip", {"ignores_tool_result": True}, {}, "ignores the tool result"),
    ("no_degeneration", {"degenerate": True}, {}, "repeats"),
    ("needle", {"wrong_answers": True}, {}, "needle not recalled"),
    ("spec_acceptance", {"spec_acceptance": 0.0}, {}, "below the floor"),
]


@pytest.mark.parametrize(
    ("check", "faults", "options", "says"),
    FAULTS,
    ids=[f"{c}-{'-'.join(f) or '-'.join(o)}" for c, f, o, _ in FAULTS],
)
def test_check_fails_on_its_fault(
    check: str, faults: dict[str, Any], options: dict[str, Any], says: str
) -> None:
    with fake_context(options, **faults) as ctx:
        result = CHECKS[check].fn(ctx)
    assert result.status == "fail", result
    assert says in result.detail


def test_every_check_has_a_fault_that_fails_it() -> None:
    assert {check for check, *_ in FAULTS} == set(CHECKS)


@pytest.mark.parametrize(
    ("check", "faults"),
    [
        ("reasoning", {"reasoning": False}),
        ("tool_call", {"tool_parser": False}),
        ("spec_acceptance", {"spec_tokens": 0}),
    ],
)
def test_undetected_feature_is_skipped_when_nothing_was_expected(check: str, faults: dict[str, Any]) -> None:
    unknown = {"expect_reasoning": None, "expect_tools": None, "num_speculative_tokens": None}
    with fake_context(unknown, **faults) as ctx:
        result = CHECKS[check].fn(ctx)
    assert result.status == "skip", result


def test_features_off_as_expected_pass() -> None:
    off = {"expect_reasoning": False, "expect_tools": False, "num_speculative_tokens": 0}
    with fake_context(off, reasoning=False, tool_parser=False, spec_tokens=0) as ctx:
        results = {
            name: CHECKS[name].fn(ctx) for name in ("reasoning", "tool_call", "metrics", "spec_acceptance")
        }
    assert {n: r.status for n, r in results.items()} == {
        "reasoning": "pass",
        "tool_call": "pass",
        "metrics": "pass",
        "spec_acceptance": "skip",
    }


def test_context_discovers_model_and_max_model_len() -> None:
    with serve_fake(model="served-name", max_model_len=3000) as url:
        ctx = build_context(url + "/v1/")
        ctx.close()
    assert (ctx.base_url, ctx.model, ctx.options.max_model_len) == (url, "served-name", 3000)
    assert ctx.options.sources == {"model": "endpoint", "max_model_len": "endpoint"}


def test_unreachable_endpoint_fails_models_and_skips_the_rest() -> None:
    with serve_fake() as url:
        pass  # closed again: nothing listens there now
    ctx = build_context(url, options=SmokeOptions(request_timeout_s=5.0))
    report = run_suite(ctx, only=["models", "chat", "unknown_model"])
    ctx.close()
    assert [r.status for r in report.results] == ["fail", "skip", "skip"]
    assert "GET /v1/models failed" in report.results[0].detail
    assert not report.passed


def test_report_shape() -> None:
    with fake_context() as ctx:
        report = run_suite(ctx, only=["models", "chat"])
    data = report.to_dict()
    assert data["schema_version"] == 1
    assert data["passed"] is True and data["counts"] == {"pass": 2, "fail": 0, "skip": 0}
    assert [r["name"] for r in data["results"]] == ["models", "chat"]
    assert set(data["results"][0]) == {"name", "status", "detail", "duration_s", "data"}
    assert data["options"]["max_num_seqs"] == 4 and "sources" not in data["options"]


def test_select_checks() -> None:
    plumbing = [s.name for s in select_checks()]
    assert "factual" not in plumbing and plumbing[0] == "models"
    assert [s.name for s in select_checks(quality=True)] == list(CHECKS)
    assert [s.name for s in select_checks(only=["factual", "metrics"])] == ["metrics", "factual"]
    with pytest.raises(KitError, match="no_such_check"):
        select_checks(only=["no_such_check"])


def test_normalize_base_url() -> None:
    assert normalize_base_url("http://h:8000/v1/") == "http://h:8000"
    assert normalize_base_url("https://h/api") == "https://h/api"
    with pytest.raises(KitError):
        normalize_base_url("h:8000")


def test_peak_overlap() -> None:
    assert peak_overlap([(0, 1), (2, 3), (4, 5)]) == 1
    assert peak_overlap([(0, 3), (1, 4), (2, 5)]) == 3
    assert peak_overlap([(0, 1), (1, 2)]) == 2

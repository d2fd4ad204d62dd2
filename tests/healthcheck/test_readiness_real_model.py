"""Readiness that checks the answer, against the REAL model: vLLM's CPU build serving the trained
SmolLM2-135M-Instruct through ``python -m serve launch --profile cpu-real`` (the session fixture
``cpu_real_server``, shared with the smoke suite's quality tests), and the sidecar as a real process.

The profile's readiness layer (the capital of France, ``(?i)\\bparis\\b``) reaches the sidecar through
plan.json. With the right expectation the sidecar is ready; when the expected answer is wrong (the plan
rewritten while it runs, or ``HEALTHCHECK_PROBE_EXPECT``) the same real answer turns readiness to
``wrong_answer`` on /readyz and in the metrics. Costs about 20 s beside the shared server's start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.healthcheck.conftest import Sidecar, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PARIS = r"(?i)\bparis\b"
BERLIN = r"(?i)\bberlin\b"
# One probe is a 16-token completion: about 1-3 s on this 2-core machine while other servers run.
FAST = {
    "probe_interval_s": 1.0,
    "probe_timeout_s": 30.0,
    "request_timeout_s": 20.0,
    "metrics_interval_s": 0.5,
    "failure_threshold": 1,
}


def _plan_info(metrics: dict[str, float]) -> str:
    info = [k for k in metrics if k.startswith("healthcheck_plan_info{")]
    assert len(info) == 1, info
    return info[0]


def _write_plan(path: Path, plan: dict, expect: str) -> None:
    plan = {**plan, "readiness": {**plan["readiness"], "expect": expect}}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(plan))
    tmp.replace(path)  # the launcher writes atomically too; the sidecar re-reads on a new mtime/size


def test_plan_carries_the_answer_check(cpu_real_server) -> None:
    readiness = cpu_real_server.plan["readiness"]
    assert readiness["expect"] == PARIS and readiness["off_reason"] is None, readiness
    assert "capital of France" in readiness["prompt"]


def test_right_answer_ready_then_wrong_expectation_turns_wrong_answer(cpu_real_server, tmp_path) -> None:
    plan = cpu_real_server.plan
    plan_file = tmp_path / "plan.json"  # a copy this test may rewrite; the server's own stays as written
    _write_plan(plan_file, plan, PARIS)
    sc = Sidecar(cpu_real_server.base_url, tmp_path, plan_file=plan_file, **FAST)
    try:
        body = sc.wait_ready(True, 90)
        print("/readyz, right expectation:", json.dumps(body, indent=1))
        assert body["reason"] == "ok" and body["answer_check"] == f"on: {PARIS}", body
        assert "paris" in body["last_probe"]["sample"].lower(), body  # a real answer, checked
        m = sc.metrics()
        assert m["healthcheck_ready"] == 1 and m["healthcheck_answer_check_enabled"] == 1
        assert f'answer_check="on: {PARIS}"' in _plan_info(m)

        _write_plan(plan_file, plan, BERLIN)  # same server, same answer, another expectation
        wait_for(lambda: sc.readyz()[1]["reason"] == "wrong_answer", 60, what="wrong_answer")
        status, body = sc.readyz()
        print("/readyz, wrong expectation:", json.dumps(body, indent=1))
        assert status == 503 and not body["ready"] and body["failed_stage"] == "chat", body
        assert body["answer_check"] == f"on: {BERLIN}"
        assert "does not match" in body["detail"] and "Paris" in body["detail"], body
        m = sc.metrics()
        assert m["healthcheck_ready"] == 0
        assert m['healthcheck_last_probe_reason{reason="wrong_answer"}'] == 1
        assert m['healthcheck_probes_total{reason="wrong_answer"}'] >= 1
        assert m['healthcheck_probes_total{reason="degenerate_output"}'] == 0  # a fluent answer
        assert f'answer_check="on: {BERLIN}"' in _plan_info(m)

        _write_plan(plan_file, plan, PARIS)
        assert sc.wait_ready(True, 60)["reason"] == "ok"
    finally:
        sc.stop()


def test_flag_overrides_the_plan_and_off_says_why(cpu_real_server, tmp_path) -> None:
    wrong = Sidecar(
        cpu_real_server.base_url,
        tmp_path,
        plan_file=cpu_real_server.plan_file,
        probe_expect=BERLIN,
        **FAST,
    )
    off = Sidecar(
        cpu_real_server.base_url,
        tmp_path,
        plan_file=cpu_real_server.plan_file,
        probe_expect_off="testing the override",
        probe_prompt="What is the capital of Germany? Answer with one word.",
        **FAST,
    )
    try:
        wait_for(lambda: wrong.readyz()[1]["reason"] == "wrong_answer", 60, what="wrong_answer (flag)")
        assert wrong.readyz()[1]["answer_check"] == f"on: {BERLIN}"
        body = off.wait_ready(True, 60)  # whatever it answers: the check is off, and says so
        assert body["answer_check"] == "off: testing the override", body
        assert off.metrics()["healthcheck_answer_check_enabled"] == 0
        assert 'answer_check="off: testing the override"' in _plan_info(off.metrics())
    finally:
        wrong.stop()
        off.stop()

"""`python -m serve smoke`: exit codes, the report file, the table, and where expectations come from
(flags over the plan file over the endpoint). Runs against the FAKE server, in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from serve.cli import main
from tests.smoke.fake_openai_server import serve_fake

PLUMBING_ONLY = "models,chat,streaming,usage,reasoning,tool_call,unknown_model,metrics"


def plan_for(url: str, **settings: Any) -> dict[str, Any]:
    base = {
        "max_model_len": 4096,
        "max_num_seqs": 2,
        "reasoning_parser": "qwen3",
        "tool_call_parser": "qwen3_xml",
        "num_speculative_tokens": 0,
    }
    return {
        "schema_version": 1,
        "base_url": url,
        "served_model_name": "fake-model",
        "settings": {**base, **settings},
    }


def test_passing_run_writes_report_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "out" / "smoke.json"
    with serve_fake() as url:
        code = main(["smoke", "--base-url", url, "--report", str(report), "--only", PLUMBING_ONLY])
    out = capsys.readouterr().out
    assert code == 0, out
    data = json.loads(report.read_text())
    assert data["passed"] and data["model"] == "fake-model" and data["base_url"] == url
    assert [r["name"] for r in data["results"]] == PLUMBING_ONLY.split(",")
    assert "PASSED: 8 passed, 0 failed" in out
    assert "streaming" in out and "PASS" in out


def test_failing_check_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "smoke.json"
    with serve_fake(unknown_model_status=500) as url:
        code = main(["smoke", "--base-url", url, "--report", str(report), "--only", "models,unknown_model"])
    assert code == 1
    data = json.loads(report.read_text())
    assert not data["passed"] and data["counts"]["fail"] == 1
    assert "FAILED" in capsys.readouterr().out


def test_plan_file_supplies_url_model_and_expectations(tmp_path: Path) -> None:
    report, plan = tmp_path / "smoke.json", tmp_path / "plan.json"
    with serve_fake(reasoning=False) as url:
        plan.write_text(json.dumps(plan_for(url, reasoning_parser=None)))
        code = main(["smoke", "--plan-file", str(plan), "--report", str(report), "--only", PLUMBING_ONLY])
    data = json.loads(report.read_text())
    assert code == 0, data
    assert data["options"]["max_num_seqs"] == 2 and data["options"]["expect_reasoning"] is False
    assert data["option_sources"]["max_num_seqs"] == "plan" and data["option_sources"]["model"] == "plan"


def test_plan_expectation_the_server_does_not_meet_fails(tmp_path: Path) -> None:
    report, plan = tmp_path / "smoke.json", tmp_path / "plan.json"
    with serve_fake(reasoning=False) as url:
        plan.write_text(json.dumps(plan_for(url)))  # the plan says reasoning_parser qwen3
        code = main(["smoke", "--plan-file", str(plan), "--report", str(report), "--only", "reasoning"])
    assert code == 1
    assert "is --reasoning-parser set?" in json.loads(report.read_text())["results"][0]["detail"]


def test_flags_override_the_plan(tmp_path: Path) -> None:
    report, plan = tmp_path / "smoke.json", tmp_path / "plan.json"
    with serve_fake(reasoning=False) as url:
        plan.write_text(json.dumps(plan_for(url)))
        argv = ["smoke", "--plan-file", str(plan), "--report", str(report), "--only", "reasoning,concurrency"]
        code = main([*argv, "--no-reasoning", "--max-num-seqs", "3"])
    data = json.loads(report.read_text())
    assert code == 0, data
    assert data["option_sources"]["expect_reasoning"] == "flag"
    assert data["results"][1]["data"]["requests"] == 3


def test_old_plan_without_settings_is_tolerated(tmp_path: Path) -> None:
    report, plan = tmp_path / "smoke.json", tmp_path / "plan.json"
    with serve_fake() as url:
        plan.write_text(json.dumps({"base_url": url, "future_key": {"x": 1}}))
        code = main(["smoke", "--plan-file", str(plan), "--report", str(report), "--only", "models"])
    assert code == 0
    assert json.loads(report.read_text())["option_sources"] == {
        "model": "endpoint",
        "max_model_len": "endpoint",
    }


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--plan-file", "/nonexistent/plan.json"], "/nonexistent/plan.json: cannot read it"),
        (["--base-url", "http://127.0.0.1:1", "--only", "nope"], "--only nope: unknown check"),
        ([], "--base-url is required"),
        (["--base-url", "localhost:8000"], "expected http://HOST:PORT"),
    ],
)
def test_bad_input_is_a_one_line_error(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["smoke", *argv]) == 2
    assert says in capsys.readouterr().err


def test_list_names_every_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["smoke", "--list"]) == 0
    out = capsys.readouterr().out
    assert "needle" in out and "quality" in out and "prompt_too_long" in out

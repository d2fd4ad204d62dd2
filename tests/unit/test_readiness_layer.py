"""The profile's readiness layer (serve/launch/profile.py): the question the sidecar asks and the answer it
requires. Defaults, the shipped profiles' choices, plan.json, and bad input (exit 2, one line naming the
key), for the profile and for the smoke suite's ``--factual``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from serve.launch.layering import load_profile
from serve.launch.profile import ReadinessLayer

ROOT = Path(__file__).resolve().parents[2]
PARIS = r"(?i)\bparis\b"


def _serve(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serve", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_defaults_ask_a_question_with_one_answer() -> None:
    layer = ReadinessLayer()
    assert (layer.prompt, layer.expect, layer.off_reason, layer.max_tokens, layer.extra_body) == (
        "What is the capital of France? Answer with one word.",
        PARIS,
        None,
        16,
        {},
    )


def test_shipped_profiles_check_the_answer_where_the_model_can_give_it() -> None:
    for name in ("cpu-tiny", "cpu-tiny-mtp"):
        r = load_profile(name, environ={}).profile.readiness
        assert r.expect is None and r.off_reason and "random weights" in r.off_reason, name
        assert r.max_tokens >= 24, name  # the loop detector's floor, with no answer check above it
    for name in ("qwen3.6-27b-rtx5090", "qwen3.6-27b-h100", "qwen3.6-27b-rtx5090-fast"):
        r = load_profile(name, environ={}).profile.readiness
        assert r.expect == PARIS, name
        # Thinking off: 16 tokens of a reasoning model would end inside <think>, before the answer.
        assert r.extra_body == {"chat_template_kwargs": {"enable_thinking": False}}, name


def test_off_reason_is_dropped_while_the_check_is_on() -> None:
    # A profile that extends a random-weight one only sets expect; the inherited reason cannot linger.
    layer = ReadinessLayer.model_validate({"expect": PARIS, "off_reason": "random weights"})
    assert layer.off_reason is None


def test_plan_json_carries_the_readiness_block() -> None:
    done = _serve("render", "--profile", "cpu-tiny", "--gpu", "none", "--engine", "vllm-cpu-0.32", "--json")
    assert done.returncode == 0, done.stderr
    block = json.loads(done.stdout)["readiness"]
    assert block["expect"] is None and block["off_reason"].startswith("random weights"), block
    cpu_real = ("render", "--profile", "cpu-real", "--gpu", "none", "--engine", "vllm-cpu-0.32", "--json")
    done = _serve(*cpu_real)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["readiness"]["expect"] == PARIS  # a trained model: checked
    done = _serve(*cpu_real, "--set", "readiness.expect=(?i)rome")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["readiness"]["expect"] == "(?i)rome"


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("readiness.expect=(?i)(paris", ["readiness.expect", "not a valid Python regular expression"]),
        ("readiness.expect=x*", ["readiness.expect", "matches the empty string"]),
        ("readiness.expect=null", ["readiness.off_reason", "required when readiness.expect is null"]),
        ("readiness.expect=" + "p" * 301, ["readiness.expect", "at most 300 characters"]),
        ("readiness.max_tokens=0", ["readiness.max_tokens"]),
        ("readiness.extra_body=[1]", ["readiness.extra_body"]),
    ],
    ids=["malformed", "matches-empty", "off-without-reason", "too-long", "max-tokens", "extra-body"],
)
def test_bad_readiness_is_one_line_exit_2(override: str, says: list[str]) -> None:
    done = _serve(
        "render", "--profile", "qwen3.6-27b-h100", "--gpu", "h100", "--engine", "vllm-0.24", "--set", override
    )
    assert done.returncode == 2 and not done.stdout, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in says:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("no separator", "expected QUESTION=>REGEX"),
        ("Q?=>(unclosed", "not a valid Python regular expression"),
        ("Q?=>a?", "matches the empty string"),
    ],
)
def test_bad_factual_question_is_one_line_exit_2(item: str, says: str, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    done = _serve("smoke", "--base-url", "http://127.0.0.1:9", "--factual", item, "--report", str(report))
    assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not report.exists()  # refused before any request, nothing written

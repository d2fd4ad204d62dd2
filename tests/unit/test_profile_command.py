"""`python -m serve profile`: the merged profile as YAML, and loading that YAML as a profile gives the same
plan, for every shipped profile (and with --set overrides, whose values become plain profile values).
Costs about 2 s (two plans per shipped profile; engine descriptions parsed once per session)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from serve.cli import main
from serve.launch import config_files
from serve.launch.layering import LoadedProfile, load_profile
from serve.launch.plan import Plan
from serve.launch.render import plan_document
from tests.unit.test_plan_document import plan_on_own_hardware

ROOT = Path(__file__).resolve().parents[2]
PROFILES = config_files.shipped("profiles")
SETS = ("serving.max_num_seqs=2", "serving.speculative={method: mtp, num_speculative_tokens: 2}")


def printed(profile: str, sets: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    argv = ["profile", "--profile", profile]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    return capsys.readouterr().out


def reloaded(text: str, tmp_path: Path, original: LoadedProfile) -> LoadedProfile:
    """The printed YAML loaded as a profile file, with the original's provenance: which keys a user (not a
    shipped profile) wrote is an input of the security rules (issue 16), and no YAML value carries it."""
    copy = tmp_path / "merged.yaml"
    copy.write_text(text)
    loaded = load_profile(str(copy), environ={})
    inputs = dataclasses.replace(loaded.inputs, user_keys=original.inputs.user_keys)
    return dataclasses.replace(loaded, inputs=inputs)


def comparable(p: Plan, *, keep_sources: bool) -> dict:
    """The plan as plan.json, less the profile's name; with overrides, less where each value came from."""
    doc = plan_document(p).to_dict()
    doc.pop("profile")
    if not keep_sources:
        doc["decisions"] = [{"setting": d["setting"], "value": d["value"]} for d in doc["decisions"]]
    return doc


@pytest.mark.parametrize("profile", PROFILES)
def test_the_printed_profile_plans_the_same(
    profile: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = printed(profile, (), capsys)
    assert "extends" not in yaml.safe_load(text)
    original = load_profile(profile, environ={})
    again = plan_on_own_hardware(reloaded(text, tmp_path, original))
    assert comparable(again, keep_sources=True) == comparable(
        plan_on_own_hardware(original), keep_sources=True
    )


@pytest.mark.parametrize("profile", ["qwen3.6-27b-rtx5090-fast", "cpu-tiny-mtp"])
def test_overrides_are_printed_as_values_and_plan_the_same(
    profile: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = printed(profile, SETS, capsys)
    data = yaml.safe_load(text)
    assert (
        data["serving"]["max_num_seqs"] == 2 and data["serving"]["speculative"]["num_speculative_tokens"] == 2
    )
    assert "#   serving.max_num_seqs  (--set)" in text
    original = load_profile(profile, list(SETS), environ={})
    direct = plan_on_own_hardware(original)
    assert direct.value("max_num_seqs") == 2
    again = plan_on_own_hardware(reloaded(text, tmp_path, original))
    assert comparable(again, keep_sources=False) == comparable(direct, keep_sources=False)


def test_defaults_are_not_printed_because_being_set_is_an_input_of_the_plan(
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = yaml.safe_load(printed("cpu-tiny", (), capsys))
    assert "cudagraph_mode" not in data["serving"]  # unset: a rule may fill it; printed, it would win
    assert (
        data["serving"]["max_num_seqs"] == load_profile("cpu-tiny", environ={}).profile.serving.max_num_seqs
    )


def test_bad_input_is_one_line_and_exit_2() -> None:
    for argv, says in (
        (["profile"], "no profile given"),
        (["profile", "--profile", "no-such-profile"], "no-such-profile"),
        (
            ["profile", "--profile", "cpu-tiny", "--set", "serving.max_num_seq=2"],
            "did you mean 'serving.max_num_seqs'",
        ),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "serve", *argv], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 2, proc.stderr
        assert says in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr

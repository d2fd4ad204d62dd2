"""``--profile auto`` (issue 14 item 4): the launcher picks the shipped profile that fits the GPU and
engine, says which and why, and records it in plan.json; ``serve profiles --gpu`` lists what fits. GPUs
are detected through the FAKE NVML (tests/support/fake_nvml, a test double named as such), so every
case runs on a machine without a GPU. In-process cases about 0.3 s each; three CLI runs about 3 s each."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from serve.errors import Refusal
from serve.launch import probes, profile_choice
from serve.launch.planning import plan_for
from serve.launch.render import plan_document
from tests.support.engines import newest_cuda_engine
from tests.support.fake_gpu import REPO, detected, subprocess_env

CUDA = newest_cuda_engine()
CPU = "vllm-cpu-0.32"
UNKNOWN_GPU = 'name: NVIDIA Imaginary 1\ncompute_capability: "9.0"\nmemory_gib: 64\n'


@pytest.fixture
def unknown_gpu(tmp_path: Path) -> str:
    path = tmp_path / "imaginary.yaml"
    path.write_text(UNKNOWN_GPU)
    return str(path)


def _auto(gpu: str | None, engine: str, sets: tuple[str, ...] = ()):
    with detected(gpu):
        return plan_for("auto", sets=sets, environ={}, engine=engine, described_model=True)


# GPU detected (None: none) x engine -> the pick, and why it must be that one.
PICKS = [
    ("h100", CUDA, "qwen3.6-27b-h100", "written for this GPU"),
    ("h200", CUDA, "qwen3.6-27b-h100", "no H200 profile: the H100's has the same compute capability"),
    # ties with the seed profile, which listens on 0.0.0.0 without a key (allow_unauthenticated): the
    # loopback one wins (secure by default, issue 16)
    ("rtx5090", CUDA, "qwen3.6-27b-rtx5090-fast", "written for it, loopback"),
    ("rtx5090-x2", CUDA, "qwen3.6-27b-2x-rtx5090-tp2", "two GPUs: the tensor-parallel profile"),
    ("gb10", CUDA, "qwen3.6-27b-dgx-spark", "written for the GB10"),
    (None, CPU, "cpu-real", "no GPU: the CPU default, the one make demo runs"),
    ("h100", CPU, "cpu-real", "a GPU, but the CPU build: a CPU profile"),
]


@pytest.mark.parametrize(("gpu", "engine", "expected", "why"), PICKS)
def test_auto_picks_the_profile_for_the_gpu_and_engine_and_it_plans(gpu, engine, expected, why):
    planned = _auto(gpu, engine)
    assert planned.choice is not None and planned.choice.chosen == expected, why
    assert planned.plan.profile == expected  # planned as the chosen profile, not refused
    line = planned.plan.notes[1]  # after the GPU line
    assert line == planned.choice.line()
    assert line.startswith(f"profile: auto chose {expected} for ")
    engine_facts = probes.engine_facts(engine)
    assert engine_facts.name in line and "runners-up: " in line
    if gpu is not None:
        assert probes.gpu_description(gpu, option="test").nvml_names[0] in line
    # Every runner-up plans too; none of those that do not fit is offered.
    fitting = [c.name for c in planned.choice.candidates if c.fits]
    assert fitting[0] == expected and planned.choice.runners_up == fitting[1:]
    for name in planned.choice.runners_up:
        with detected(gpu):
            plan_for(name, environ={}, engine=engine, described_model=True)


def test_the_picks_differ_where_the_gpus_do():
    picks = {gpu: _auto(gpu, CUDA).plan.profile for gpu in ("h100", "rtx5090", "rtx5090-x2", "gb10")}
    assert len(set(picks.values())) == 4, picks


def test_an_unknown_gpu_gets_the_nearest_by_compute_capability_and_memory(unknown_gpu):
    planned = _auto(unknown_gpu, CUDA)
    assert planned.plan.profile == "qwen3.6-27b-h100"
    assert "NVIDIA Imaginary 1" in planned.choice.line()
    assert "same compute capability 9.0" in planned.choice.reason


def test_a_profile_the_plan_refuses_is_never_picked():
    # Two RTX 5090s plan the TP2 profile; one cannot, so auto must not offer it there.
    single = _auto("rtx5090", CUDA).choice
    tp2 = next(c for c in single.candidates if c.name == "qwen3.6-27b-2x-rtx5090-tp2")
    assert not tp2.fits and "tensor_parallel_size = 2" in tp2.reason
    assert "qwen3.6-27b-2x-rtx5090-tp2" not in single.runners_up


def test_an_engine_that_refuses_mtp_fits_nothing_and_says_why():
    # vllm-0.24: speculative decoding on a GDN hybrid is refused before 0.28 (rule spec-gdn-hybrid-needs-0.28),
    # and every shipped GPU profile uses MTP.
    with pytest.raises(Refusal) as exc:
        _auto("h100", "vllm-0.24")
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("--profile auto: no shipped profile plans on the detected NVIDIA H100")
    assert "nearest: qwen3.6-27b-h100: refused: " in message and "0.28.0" in message


def test_the_same_engine_with_mtp_turned_off_picks_again():
    # The candidates are judged with the user's --set, so the pick is what will be launched.
    planned = _auto("h100", "vllm-0.24", sets=("serving.speculative=null",))
    assert planned.plan.profile == "qwen3.6-27b-h100"
    assert planned.plan.value("speculative_config") is None


def test_a_cuda_engine_without_a_gpu_says_to_name_one():
    with pytest.raises(Refusal, match=r"no GPU \(none detected\) with vllm-.*--gpu NAME"):
        _auto(None, CUDA)


def test_plan_json_records_the_choice_and_named_profiles_do_not():
    document = plan_document(_auto("h200", CUDA).plan).to_dict()
    choice = document["profile_choice"]
    assert (choice["requested"], choice["chosen"]) == ("auto", "qwen3.6-27b-h100")
    assert choice["candidates"][0] == {
        "profile": "qwen3.6-27b-h100",
        "fits": True,
        "reason": choice["reason"],
    }
    assert list(document)[:3] == ["schema_version", "profile", "profile_choice"]
    with detected("h200"):
        named = plan_for("qwen3.6-27b-h100", environ={}, engine=CUDA, described_model=True)
    assert plan_document(named.plan).to_dict()["profile_choice"] is None


def test_the_cpu_default_is_the_one_make_demo_runs():
    demo = (REPO / "scripts" / "demo.sh").read_text()
    make = (REPO / "Makefile").read_text()
    assert re.search(r'PROFILE="\$\{DEMO_PROFILE:-([\w.-]+)\}"', demo)[1] == profile_choice.CPU_DEFAULT
    assert re.search(r"^DEMO_PROFILE \?= ([\w.-]+)$", make, re.M)[1] == profile_choice.CPU_DEFAULT


# ------------------------------------------------------------------ the CLI, as users type it


def _serve(*args: str, gpu: str | None, extra_env: dict[str, str] | None = None):
    env = subprocess_env(gpu) | (extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "serve", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_serve_profile_auto_env_renders_the_pick_as_json():
    run = _serve("render", "--json", "--engine", CUDA, gpu="gb10", extra_env={"SERVE_PROFILE": "auto"})
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    assert document["profile"] == "qwen3.6-27b-dgx-spark"
    assert document["profile_choice"]["chosen"] == "qwen3.6-27b-dgx-spark"
    assert document["notes"][1].startswith("profile: auto chose qwen3.6-27b-dgx-spark for the detected ")


def test_serve_profiles_gpu_auto_lists_best_first_and_what_does_not_fit():
    run = _serve("profiles", "--gpu", "auto", "--engine", CUDA, gpu="rtx5090-x2")
    assert run.returncode == 0, run.stderr
    fits, _, refused = run.stdout.partition("\ndo not fit:\n")
    rows = [line.split()[0] for line in fits.splitlines()[1:]]
    assert rows[0] == "qwen3.6-27b-2x-rtx5090-tp2"
    assert rows == [c.name for c in _auto("rtx5090-x2", CUDA).choice.candidates if c.fits]
    assert re.search(r"^  cpu-real +written for no GPU", refused, re.M)


def test_none_fitting_is_one_line_and_exit_2():
    run = _serve("render", "--profile", "auto", "--engine", "vllm-0.24", gpu="h100")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "no shipped profile plans on the detected" in lines[0], run.stderr
    assert "Traceback" not in run.stderr

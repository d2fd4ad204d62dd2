"""The plan is made for the GPU that is there (issue 18). Detection runs through the launcher's own
probe against a FAKE NVML (tests/support/fake_nvml, a pynvml-shaped test double named as such) that
reports the GPU of a description file, so every case below runs on a machine without a GPU, and the
"no GPU" case is forced too (a real GPU on the test machine changes nothing). About 3 s in all."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from serve.errors import FactsError, KitError, Refusal
from serve.launch import config_files, memory, probes, target_gpu
from serve.launch.facts import EngineFacts
from serve.launch.layering import LoadedProfile, load_profile
from serve.launch.plan import Plan, plan
from serve.launch.profile_choice import fitting_profiles, gpu_distance
from serve.launch.render import plan_document
from tests.support.engines import newest_cuda_engine
from tests.support.fake_gpu import REPO, detected, subprocess_env

PROFILES = config_files.shipped("profiles")


CUDA_ENGINE = newest_cuda_engine()


def _engine(loaded: LoadedProfile) -> EngineFacts:
    return probes.engine_facts("vllm-cpu-0.32" if loaded.profile.hardware.gpu == "none" else CUDA_ENGINE)


def _model(loaded: LoadedProfile):
    layer = loaded.profile.model
    if layer.facts:  # the description, never whatever model directory this checkout holds
        layer = layer.model_copy(update={"path": None})
    return probes.model_facts(layer, profile_source=config_files.display(loaded.path))


def _other_gpu(loaded: LoadedProfile) -> str:
    """A shipped GPU description that differs from the one the profile was written for."""
    return "rtx-pro-6000" if loaded.profile.hardware.gpu in ("h100", "h200") else "h200"


def _plan_detected(profile: str, gpu: str | None) -> tuple[LoadedProfile, target_gpu.TargetGpu, Plan]:
    loaded = load_profile(profile, environ={})
    with detected(gpu):
        target = target_gpu.resolve(None, loaded)
        return loaded, target, target_gpu.plan_for(loaded, target, _engine(loaded), _model(loaded))


# ------------------------------------------------------------------ the probe


@pytest.mark.parametrize("gpu", config_files.shipped("gpus"))
def test_the_probe_takes_bandwidth_from_the_description_matching_the_nvml_name(gpu):
    description = probes.gpu_description(gpu, option="test")
    assert description.nvml_names, (
        f"config/gpus/{gpu}.yaml: no nvml_names, a detected {gpu} gets no bandwidth"
    )
    with detected(gpu):
        facts = probes.probe_gpu()
    assert (facts.origin, facts.source) == ("detected", "nvml")
    assert facts.name == description.nvml_names[0]
    assert facts.compute_capability == description.compute_capability
    assert facts.count == description.count
    assert facts.memory_gib == pytest.approx(description.memory_gib, abs=0.01)
    assert facts.memory_bandwidth_gbps == description.memory_bandwidth_gbps
    assert "matched by NVML name" in (facts.bandwidth_source or "")


def test_a_gpu_no_description_names_gets_no_bandwidth_rather_than_another_gpus(tmp_path):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text('name: NVIDIA Imaginary 1\ncompute_capability: "9.0"\nmemory_gib: 64\n')
    with detected(str(unknown)):
        facts = probes.probe_gpu()
    assert facts.name == "NVIDIA Imaginary 1"
    assert facts.memory_bandwidth_gbps is None and facts.bandwidth_source is None


def test_h200_b200_and_rtx4090_descriptions_carry_the_datasheet_figures():
    h200, b200, ada = (probes.gpu_description(n, option="test") for n in ("h200", "b200", "rtx4090"))
    assert (h200.compute_capability, h200.memory_bandwidth_gbps, h200.memory_gib) == ("9.0", 4800, 140.4)
    assert (b200.compute_capability, b200.memory_bandwidth_gbps) == ("10.0", 8000)
    assert 178 < b200.memory_gib < 181  # 180 GB exposed, not the 192 GB of physical HBM
    assert (ada.compute_capability, ada.memory_bandwidth_gbps) == ("8.9", 1008)


# ------------------------------------------------------------------ every shipped profile


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_follows_a_detected_gpu_that_differs_and_says_what_changed(profile):
    loaded = load_profile(profile, environ={})
    other = _other_gpu(loaded)
    written = (
        probes.gpu_description(loaded.profile.hardware.gpu, option="test")
        if loaded.profile.hardware.gpu not in (None, "none")
        else None
    )
    engine, model = _engine(loaded), _model(loaded)
    with detected(other):
        target = target_gpu.resolve(None, loaded)
        assert target.origin == "detected" and target.facts is not None
        g = target.facts
        try:
            result = target_gpu.plan_for(loaded, target, engine, model)
        except Refusal as exc:
            message = str(exc)
            # Refused on the GPU that is there: the message names it and a shipped profile that works.
            assert f"the detected {target_gpu.describe(g)}" in message
            suggested = re.search(r"--profile (\S+)", message)
            assert suggested, message
            alternative = load_profile(suggested.group(1), environ={})
            assert target_gpu.plan_for(alternative, target, engine, _model(alternative)).gpu == g
            return
    assert result.gpu == g and result.gpu.origin == "detected"
    line = result.notes[0]
    if engine.device == "cpu":  # a CPU profile: the GPU is reported, and said to be unused
        assert line == f"GPU: detected {target_gpu.describe(g)}, unused: the engine is vLLM's CPU build"
        return
    assert written is not None
    assert line.startswith(f"GPU: planned for the detected {target_gpu.describe(g)}")
    assert f"not the {target_gpu.describe(written)} the profile was written for" in line
    assert f"memory {written.memory_gib:.1f} -> {g.memory_gib:.1f} GiB" in line
    if written.compute_capability != g.compute_capability:
        assert f"compute capability {written.compute_capability} -> {g.compute_capability}" in line
    before = plan(loaded, written, engine, model)
    for rule in set(result.rules_fired) ^ set(before.rules_fired):
        assert rule in line, (rule, line)
    if result.memory:  # the memory planner sized for the detected GPU
        util = result.value("gpu_memory_utilization")
        assert result.memory["budget_bytes"] == pytest.approx(g.memory_gib * memory.GiB * util, rel=0.01)


def test_an_rtx5090_mtp_profile_on_an_h200_drops_the_sm120_rule_and_gains_hoppers():
    # The fast profile (fp8 KV, MTP 3): the seed's own MTP is off with TurboQuant KV on both GPUs (rule
    # turboquant-spec-off), so graphs-off-sm12x-mtp would apply to it on neither.
    _, _, result = _plan_detected("qwen3.6-27b-rtx5090-fast", "h200")
    line = result.notes[0]
    assert "compute capability 12.0 -> 9.0" in line
    assert re.search(r"no longer applying: [^;]*graphs-off-sm12x-mtp", line), line
    assert "graphs-off-sm12x-mtp" not in result.rules_fired
    assert result.gpu is not None and result.gpu.memory_bandwidth_gbps == 4800


def test_the_h100_profile_on_the_h200_plans_for_141_gb():
    _, _, result = _plan_detected("qwen3.6-27b-h100", "h200")
    assert "memory 79.7 -> 140.4 GiB" in result.notes[0]
    assert "same rules and settings" in result.notes[0]


def test_the_same_gpu_detected_says_so():
    _, target, result = _plan_detected("qwen3.6-27b-rtx5090", "rtx5090")
    assert target.origin == "detected"
    assert result.notes[0].startswith("GPU: detected NVIDIA GeForce RTX 5090")
    assert "the GPU the profile was written for" in result.notes[0]


def test_a_profile_that_cannot_fit_the_detected_gpu_is_refused_with_the_nearest_that_can():
    with pytest.raises(Refusal) as info:
        _plan_detected("qwen3.6-27b-h100", "rtx4090")
    message = str(info.value)
    assert "does not fit" in message and "the detected NVIDIA GeForce RTX 4090" in message
    assert "the nearest shipped profile that plans on it is --profile qwen3.6-27b-rtx5090-fast" in message
    with pytest.raises(Refusal) as info:  # two GPUs' worth of tensor parallelism on one H200
        _plan_detected("qwen3.6-27b-2x-rtx5090-tp2", "h200")
    assert "--profile qwen3.6-27b-h100" in str(info.value)


def test_a_refusal_that_is_not_the_gpus_doing_suggests_no_other_profile():
    # On the GPU it was written for, a refusal comes from the engine or the model, not the GPU.
    loaded = load_profile("qwen3.6-27b-rtx5090", ["serving.speculative.method=no-such-method"], environ={})
    with detected("rtx5090"), pytest.raises(Refusal) as info:
        target = target_gpu.resolve(None, loaded)
        target_gpu.plan_for(loaded, target, _engine(loaded), _model(loaded))
    assert "no-such-method" in str(info.value) and "--profile" not in str(info.value)


# ------------------------------------------------------------------ no GPU, named GPU, none


def test_without_a_gpu_the_profiles_gpu_is_assumed_and_labelled():
    _, target, result = _plan_detected("qwen3.6-27b-rtx5090", None)
    assert target.origin == "assumed" and result.gpu is not None and result.gpu.origin == "assumed"
    assert result.notes[0].startswith("GPU: none detected (")
    assert "ASSUMED the NVIDIA GeForce RTX 5090" in result.notes[0]
    gpu = plan_document(result).to_dict()["facts"]["gpu"]
    assert (gpu["origin"], gpu["source"]) == ("assumed", "config/gpus/rtx5090.yaml")


def test_without_a_gpu_a_cpu_profile_plans_for_none():
    _, target, result = _plan_detected("cpu-tiny", None)
    assert target.origin == "none" and result.gpu is None
    assert plan_document(result).to_dict()["facts"]["gpu"] == {"origin": "none"}
    assert "none needed" in result.notes[0]


def test_without_a_gpu_or_a_profile_gpu_there_is_nothing_to_assume(tmp_path):
    bare = tmp_path / "bare.yaml"
    bare.write_text("extends: qwen3.6-27b-rtx5090\nhardware: {gpu: null}\n")
    loaded = load_profile(str(bare), environ={})
    with detected(None), pytest.raises(FactsError, match=r"no GPU detected .* says no hardware\.gpu"):
        target_gpu.resolve(None, loaded)


def test_gpu_name_and_gpu_none_stay_explicit():
    loaded = load_profile("qwen3.6-27b-rtx5090", environ={})
    with detected("h200"):  # a GPU is there, and --gpu still wins
        named = target_gpu.resolve("h100", loaded)
        nothing = target_gpu.resolve("none", loaded)
    assert named.origin == "description" and named.facts is not None and named.facts.origin == "description"
    assert named.facts.name == "NVIDIA H100 80GB HBM3"
    assert nothing.origin == "none" and nothing.facts is None


def test_explicit_auto_without_a_gpu_is_an_error_not_an_assumption():
    loaded = load_profile("qwen3.6-27b-rtx5090", environ={})
    with detected(None), pytest.raises(KitError, match="--gpu auto"):
        target_gpu.resolve("auto", loaded)


# ------------------------------------------------------------------ the chooser


def test_fitting_profiles_ranks_the_same_compute_capability_first():
    h200 = probes.gpu_description("h200", option="test")
    names = fitting_profiles(
        h200, probes.engine_facts(CUDA_ENGINE), model_id="Lorbus/Qwen3.6-27B-int4-AutoRound"
    )
    assert names[0] == "qwen3.6-27b-h100"
    assert "qwen3.6-27b-2x-rtx5090-tp2" not in names  # tensor parallelism 2 on one GPU: refused
    assert not any(n.startswith("cpu-") for n in names)


def test_gpu_distance_prefers_the_same_kind():
    rtx5090, pro, h100 = (
        probes.gpu_description(n, option="test") for n in ("rtx5090", "rtx-pro-6000", "h100")
    )
    assert gpu_distance(rtx5090, rtx5090) < gpu_distance(pro, rtx5090) < gpu_distance(h100, rtx5090)


# ------------------------------------------------------------------ the CLI, as the container runs it


def test_render_without_gpu_flag_plans_for_the_detected_gpu_in_plan_json():
    """The container's entrypoint runs `serve launch` without --gpu; render shares that path."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "serve",
            "render",
            "--profile",
            "qwen3.6-27b-rtx5090",
            "--engine",
            CUDA_ENGINE,
            "--json",
        ],
        cwd=REPO,
        env=subprocess_env("h200"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    gpu = document["facts"]["gpu"]
    assert (gpu["name"], gpu["origin"], gpu["source"]) == ("NVIDIA H200", "detected", "nvml")
    assert gpu["driver_version"] == "fake-nvml"  # says which NVML it was
    assert document["notes"][0].startswith("GPU: planned for the detected NVIDIA H200")

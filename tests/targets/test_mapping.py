"""Every flag of the ``vllm`` target reaches each other target: the argv is rebuilt from the target's
document the way that target turns it into ``vllm serve`` (Ray: engine_kwargs by name; the Helm chart
0.1.12's template; KServe's container) and compared with the plan's argv, pair by pair. Plus what each
target refuses, where the API key, environment, GPUs and caches go, and the ``scale`` keys."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from serve.errors import KitError
from serve.launch.render import FLAGS, flags_for, render_argv
from serve.targets.common import CACHE_ENV
from tests.targets.support import CASES, TARGETS, planned, rendered

ROOT = Path(__file__).resolve().parents[2]
DEST_OF_FLAG = {flag: setting for setting, flag, _ in FLAGS}
# A profile whose raw serving.extra_args must reach the Kubernetes targets too.
EXTRA = ("serving.extra_args=[--seed, '0']",)


def pairs(tokens: list[str]) -> Counter[tuple[str, str | None]]:
    """``--flag value`` / ``--flag`` pairs, underscores in flag names read as vLLM reads them (dashes)."""
    out: Counter[tuple[str, str | None]] = Counter()
    i = 0
    while i < len(tokens):
        flag = tokens[i].replace("_", "-") if tokens[i].startswith("--") else tokens[i]
        if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            out[(flag, tokens[i + 1])] += 1
            i += 2
        else:
            out[(flag, None)] += 1
            i += 1
    return out


def argv_from_ray(doc: dict) -> tuple[str, list[str]]:
    config = doc["applications"][0]["args"]["llm_configs"][0]
    loading = config["model_loading_config"]
    tokens: list[str] = []
    if loading["model_id"] != loading["model_source"]:
        tokens += flags_for("served_model_name", loading["model_id"])
    for key, value in config["engine_kwargs"].items():
        if key == "compilation_config":
            tokens += flags_for("compilation_config.cudagraph_mode", value["cudagraph_mode"])
        else:
            tokens += flags_for(key, value)
    tokens += flags_for("port", doc["http_options"]["port"]) + flags_for("host", doc["http_options"]["host"])
    return loading["model_source"], tokens


def argv_from_chart(values: dict) -> tuple[str, list[str]]:
    """What templates/deployment-vllm-multi.yaml (vllm-stack 0.1.12) puts after ``vllm serve``."""
    engine = values["servingEngineSpec"]
    spec = engine["modelSpec"][0]
    vc = spec["vllmConfig"]
    tokens = ["--host", "0.0.0.0", "--port", str(engine["containerPort"])]
    tokens += ["--enable-prefix-caching"] if vc.get("enablePrefixCaching") else ["--no-enable-prefix-caching"]
    for key, flag in [
        ("maxModelLen", "--max-model-len"),
        ("dtype", "--dtype"),
        ("tensorParallelSize", "--tensor-parallel-size"),
        ("maxNumSeqs", "--max-num-seqs"),
        ("gpuMemoryUtilization", "--gpu_memory_utilization"),
    ]:
        if key in vc:
            tokens += [flag, str(vc[key])]
    tokens += [str(a) for a in vc.get("extraArgs", [])]
    if spec.get("modelRevision"):
        tokens += ["--revision", spec["modelRevision"]]
    return spec["modelURL"], tokens


def argv_from_kserve(docs: list) -> tuple[str, list[str]]:
    service = next(d for d in docs if d["kind"] == "LLMInferenceService")
    main = next(c for c in service["spec"]["template"]["containers"] if c["name"] == "main")
    assert main["command"] == ["vllm", "serve", "/mnt/models"]
    return service["spec"]["model"]["uri"].removeprefix("hf://"), list(main["args"])


REBUILD = {"ray-serve": argv_from_ray, "production-stack": argv_from_chart, "kserve": argv_from_kserve}


def expected_pairs(argv: list[str], target: str) -> Counter[tuple[str, str | None]]:
    want = pairs(argv[3:])
    host = next((v for f, v in want if f == "--host"), None)
    if target == "production-stack":
        if host is not None:
            del want[("--host", host)]
        want[("--host", "0.0.0.0")] += 1  # the chart binds all addresses (said in a note)
        if not any(f in ("--enable-prefix-caching", "--no-enable-prefix-caching") for f, _ in want):
            want[("--enable-prefix-caching", None)] += 1  # vLLM's default, written out for the chart
    if target == "kserve":
        if host is not None:
            del want[("--host", host)]  # vLLM's default: the pod's addresses (said in a note)
        if not any(f == "--served-model-name" for f, _ in want):
            # vLLM serves /mnt/models there: the name clients use is said explicitly.
            want[("--served-model-name", argv[2])] += 1
    return want


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("profile", sorted(CASES))
def test_every_flag_of_the_plan_reaches_the_target(profile, target):
    sets = EXTRA if target != "ray-serve" else ()
    plan, doc, _ = rendered(profile, target, sets)
    argv = render_argv(plan)
    model, tokens = REBUILD[target](doc)
    assert pairs(tokens) == expected_pairs(argv, target)
    loaded, _ = planned(profile, sets)
    assert model == (loaded.profile.model.id if target != "ray-serve" else argv[2])


def test_the_rebuild_notices_a_missing_flag():
    """The comparison above can fail: drop one engine kwarg and it does."""
    plan, doc, _ = rendered("cpu-tiny", "ray-serve")
    del doc["applications"][0]["args"]["llm_configs"][0]["engine_kwargs"]["max_num_seqs"]
    _, tokens = argv_from_ray(doc)
    assert pairs(tokens) != expected_pairs(render_argv(plan), "ray-serve")


def test_rules_reach_the_targets_too():
    """TurboQuant + MTP set explicitly: the kv-cache name, the cudagraph rule's NONE and the spec config."""
    spec = ("serving.speculative={method: mtp, num_speculative_tokens: 1}",)
    plan, doc, _ = rendered("qwen3.6-27b-rtx5090", "ray-serve", spec)
    kwargs = doc["applications"][0]["args"]["llm_configs"][0]["engine_kwargs"]
    assert kwargs["kv_cache_dtype"] == plan.value("kv_cache_dtype")
    assert str(plan.value("compilation_config.cudagraph_mode")).upper() == "NONE"
    assert kwargs["compilation_config"] == {"cudagraph_mode": "NONE"}
    assert (
        kwargs["speculative_config"]
        == plan.value("speculative_config")
        == {
            "method": "mtp",
            "num_speculative_tokens": 1,
        }
    )


def test_turboquant_spec_off_reaches_the_targets_too():
    """The rtx5090 profile as shipped: rule turboquant-spec-off drops its MTP, so no target gets a
    speculative config, and CUDA graphs stay at the engine's default."""
    plan, doc, _ = rendered("qwen3.6-27b-rtx5090", "ray-serve")
    kwargs = doc["applications"][0]["args"]["llm_configs"][0]["engine_kwargs"]
    assert plan.value("speculative_config") is None
    assert kwargs.get("speculative_config") is None
    assert "compilation_config" not in kwargs
    assert kwargs["kv_cache_dtype"] == plan.value("kv_cache_dtype")


def _one_line_refusal(profile: str, target: str, sets: tuple[str, ...], key: str) -> str:
    with pytest.raises(KitError) as info:
        rendered(profile, target, sets)
    message = str(info.value)
    assert "\n" not in message and key in message and target in message
    return message


def test_ray_refuses_raw_extra_args():
    _one_line_refusal("cpu-tiny", "ray-serve", EXTRA, "serving.extra_args")


def test_ray_refuses_an_api_key_it_cannot_check():
    _one_line_refusal("cpu-tiny", "ray-serve", ("scale.api_key_secret=vllm-key",), "scale.api_key_secret")


def test_kserve_refuses_autoscaling_it_cannot_express():
    sets = ("scale.min_replicas=1", "scale.max_replicas=3")
    _one_line_refusal("cpu-tiny", "kserve", sets, "scale.min_replicas")


def test_kserve_refuses_a_model_revision():
    _one_line_refusal("qwen3.6-27b-rtx5090", "kserve", ("model.revision=abc123",), "model.revision")


def test_the_chart_carries_the_revision():
    _, values, _ = rendered("qwen3.6-27b-rtx5090", "production-stack", ("model.revision=abc123",))
    assert values["servingEngineSpec"]["modelSpec"][0]["modelRevision"] == "abc123"


def test_api_key_is_a_secret_reference_never_a_value():
    sets = ("scale.api_key_secret=vllm-key", "scale.api_key_secret_key=token")
    _, values, text = rendered("qwen3.6-27b-rtx5090", "production-stack", sets)
    assert values["servingEngineSpec"]["vllmApiKey"] == {"secretName": "vllm-key", "secretKey": "token"}
    _, docs, ktext = rendered("qwen3.6-27b-rtx5090", "kserve", sets)
    service = docs[1]
    for container in service["spec"]["template"]["containers"]:
        key = [e for e in container["env"] if e["name"] == "VLLM_API_KEY"]
        assert key == [
            {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "vllm-key", "key": "token"}}}
        ]
    for out in (text, ktext):
        assert "--api-key" not in out


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(
    "sets", [("serving.env={VLLM_API_KEY: s3cret}",), ("serving.extra_args=[--api-key, s3cret]",)]
)
def test_a_literal_api_key_is_refused_not_written(target, sets):
    message = _one_line_refusal("cpu-tiny", target, sets, "scale.api_key_secret")
    assert "s3cret" not in message


def test_no_api_key_without_a_secret():
    _, _, text = rendered("qwen3.6-27b-rtx5090", "kserve")
    assert "VLLM_API_KEY" not in text


@pytest.mark.parametrize("target", TARGETS)
def test_the_kits_environment_rules_go_to_the_targets_env(target):
    plan, doc, _ = rendered("cpu-tiny", target)
    assert plan.env["VLLM_TARGET_DEVICE"].value == "cpu"  # rule cpu-target-device
    if target == "ray-serve":
        env = doc["applications"][0]["args"]["llm_configs"][0]["runtime_env"]["env_vars"]
    elif target == "production-stack":
        env = {e["name"]: e["value"] for e in doc["servingEngineSpec"]["modelSpec"][0]["env"]}
    else:
        main = doc[1]["spec"]["template"]["containers"][0]
        env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["VLLM_TARGET_DEVICE"] == "cpu"
    if target != "ray-serve":
        assert {k: env[k] for k in CACHE_ENV} == CACHE_ENV


def test_gpus_and_tensor_parallelism():
    _, ray, _ = rendered("qwen3.6-27b-2x-rtx5090-tp2", "ray-serve")
    config = ray["applications"][0]["args"]["llm_configs"][0]
    assert config["accelerator_config"] == {"kind": "gpu"}
    assert config["placement_group_config"]["bundles"] == [{"GPU": 1, "CPU": 1}] * 2
    assert config["engine_kwargs"]["tensor_parallel_size"] == 2
    _, values, _ = rendered("qwen3.6-27b-2x-rtx5090-tp2", "production-stack")
    spec = values["servingEngineSpec"]["modelSpec"][0]
    assert (spec["requestGPU"], spec["vllmConfig"]["tensorParallelSize"]) == (2, 2)
    _, docs, _ = rendered("qwen3.6-27b-2x-rtx5090-tp2", "kserve")
    service = docs[1]
    assert service["spec"]["parallelism"] == {"tensor": 2}
    main = service["spec"]["template"]["containers"][0]
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_cpu_plans_ask_for_no_gpu():
    _, ray, _ = rendered("cpu-tiny", "ray-serve")
    config = ray["applications"][0]["args"]["llm_configs"][0]
    assert config["accelerator_config"] == {"kind": "cpu"} and "accelerator_type" not in config
    assert "placement_group_config" not in config
    _, docs, _ = rendered("cpu-tiny", "kserve")
    assert "nvidia.com/gpu" not in str(docs)


def test_sidecar_probes_and_compile_cache_volume():
    _, docs, _ = rendered("qwen3.6-27b-rtx5090", "kserve")
    claim, service = docs
    assert claim["kind"] == "PersistentVolumeClaim"
    template = service["spec"]["template"]
    main, sidecar = template["containers"]
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert sidecar["readinessProbe"]["httpGet"]["port"] == 8889
    assert "--probe-expect" in sidecar["args"]  # the profile's readiness answer check
    assert template["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert main["volumeMounts"] == [{"name": "compile-cache", "mountPath": "/data/cache"}]


def test_autoscaling_bounds():
    sets = ("scale.replicas=2", "scale.min_replicas=1", "scale.max_replicas=4")
    _, ray, _ = rendered("cpu-tiny", "ray-serve", sets)
    auto = ray["applications"][0]["args"]["llm_configs"][0]["deployment_config"]["autoscaling_config"]
    assert auto == {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 2}
    _, values, _ = rendered("cpu-tiny", "production-stack", sets)
    spec = values["servingEngineSpec"]["modelSpec"][0]
    assert spec["keda"] == {"enabled": True, "minReplicaCount": 1, "maxReplicaCount": 4}
    assert spec["replicaCount"] == 2
    _, docs, _ = rendered("cpu-tiny", "kserve", ("scale.replicas=3",))
    assert docs[1]["spec"]["replicas"] == 3


@pytest.mark.parametrize(
    "sets, words",
    [
        (("scale.min_replicas=2",), "set both min_replicas and max_replicas"),
        (("scale.min_replicas=2", "scale.max_replicas=3"), "replicas 1 must lie within"),
        (("scale.storage=lots",), "scale.storage"),
    ],
)
def test_bad_scale_keys_are_one_clear_line(sets, words):
    with pytest.raises(KitError) as info:
        planned("cpu-tiny", sets)
    assert words in str(info.value)


def test_cache_layout_is_the_images():
    """CACHE_ENV repeats the Dockerfile's ENV: the same paths, or the volume would hold nothing."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name, value in CACHE_ENV.items():
        assert re.search(rf"\b{name}={re.escape(value)}\b", dockerfile), name


def test_cli_target_vllm_is_todays_output_and_refusals_exit_2():
    """The default target prints the same command as the golden render; a refusal is one line, exit 2."""
    base = [sys.executable, "-m", "serve", "render", "--profile", "qwen3.6-27b-rtx5090"]
    base += ["--gpu", "rtx5090", "--engine", "vllm-0.33"]
    golden = (ROOT / "tests/golden/qwen3.6-27b-rtx5090.txt").read_text()
    section = golden.split("## --gpu rtx5090 --engine vllm-0.33\n", 1)[1]
    for extra in ([], ["--target", "vllm"]):
        out = subprocess.run(base + extra, cwd=ROOT, capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0] == section.splitlines()[0]
    bad = subprocess.run(
        [*base, "--target", "kserve", "--set", "model.revision=abc"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "model.revision" in bad.stderr

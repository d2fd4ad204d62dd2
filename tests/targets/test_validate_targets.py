"""The rendered documents checked by the targets' own validators, where they can be had here:
- Kubernetes core kinds (the KServe PodSpec and PersistentVolumeClaim; the production-stack engine
  container's env, probes and resources as the chart renders them into a Pod) by the registry's
  ``kubernetes-validate`` (schemas of Kubernetes 1.37, strict: unknown fields fail);
- the Ray Serve app config by Ray 2.60's own pydantic models (LLMServingArgs with its LLMConfigs).
Both live in the Ray venv (scripts/ray-venv.sh), so they run there in one subprocess (~15 s, Ray's import).
The CRD and the Helm values are checked by the typed models in serve/targets/models.py at render time."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support.require import skip_or_fail
from tests.targets.support import CASES, rendered

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.37.0"

_VALIDATE = r"""
import json, sys
import kubernetes_validate
from ray.serve.llm import LLMServingArgs
docs = json.load(open(sys.argv[1]))
failures = []
for label, kind, doc in docs:
    try:
        if kind == "k8s":
            kubernetes_validate.validate(doc, sys.argv[2], strict=True)
        else:
            for app in doc["applications"]:
                LLMServingArgs.model_validate(app["args"])
    except Exception as exc:
        failures.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
print(json.dumps(failures))
"""


def ray_venv() -> Path:
    venv = Path(os.environ.get("KIT_RAY_VENV", ROOT / ".venv-ray"))
    if not (venv / "bin" / "python").exists():
        skip_or_fail(
            "ray", f"no Ray venv at {venv} (kubernetes-validate and Ray live there): run scripts/ray-venv.sh"
        )
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import kubernetes_validate"], capture_output=True
    )
    if probe.returncode != 0:
        skip_or_fail("ray", f"kubernetes-validate is not installed in {venv}: run scripts/ray-venv.sh")
    return venv


def chart_pod(values: dict) -> dict:
    """The engine Pod the chart 0.1.12 renders from these values, reduced to the fields the kit wrote."""
    engine = values["servingEngineSpec"]
    spec = engine["modelSpec"][0]
    requests = {"cpu": str(spec["requestCPU"]), "memory": spec["requestMemory"]}
    limits = {}
    if spec["requestGPU"]:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(spec["requestGPU"])
    container = {
        "name": "vllm",
        "image": f"{spec['repository']}:{spec['tag']}",
        "env": spec["env"],
        "ports": [{"name": "container-port", "containerPort": engine["containerPort"]}],
        "resources": {"requests": requests, **({"limits": limits} if limits else {})},
        **{k: engine[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")},
    }
    if "vllmApiKey" in engine:
        ref = engine["vllmApiKey"]
        container["env"] = [
            *spec["env"],
            {
                "name": "VLLM_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": ref["secretName"], "key": ref["secretKey"]}},
            },
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": spec["name"]},
        "spec": {"containers": [container]},
    }


def kserve_docs(docs: list) -> list[tuple[str, dict]]:
    claim, service = docs
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": service["metadata"],
        "spec": service["spec"]["template"],
    }
    return [("PersistentVolumeClaim", claim), ("Pod from spec.template", pod)]


def validate(venv: Path, tmp_path: Path, docs: list[tuple[str, str, dict]]) -> list[str]:
    path = tmp_path / "docs.json"
    path.write_text(json.dumps(docs))
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _VALIDATE, str(path), K8S_VERSION],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_rendered_documents_pass_the_targets_validators(tmp_path):
    venv = ray_venv()
    docs: list[tuple[str, str, dict]] = []
    secret = ("scale.api_key_secret=vllm-key",)
    for profile in sorted(CASES):
        for sets in ((), secret):
            _, kdocs, _ = rendered(profile, "kserve", sets)
            docs += [(f"{profile} kserve {label}", "k8s", d) for label, d in kserve_docs(kdocs)]
            _, values, _ = rendered(profile, "production-stack", sets)
            docs.append((f"{profile} production-stack engine Pod", "k8s", chart_pod(values)))
        _, ray, _ = rendered(profile, "ray-serve")
        docs.append((f"{profile} ray-serve", "ray", ray))
    # Two that must fail, so that a validator that accepts anything is noticed.
    _, kdocs, _ = rendered("cpu-tiny", "kserve")
    broken_pod = kserve_docs(kdocs)[1][1]
    broken_pod["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/health"
    _, ray, _ = rendered("cpu-tiny", "ray-serve")
    ray["applications"][0]["args"]["llm_configs"][0]["accelerator_config"] = {"kind": "fpga"}
    docs += [("broken pod", "k8s", broken_pod), ("broken ray", "ray", ray)]
    failures = validate(venv, tmp_path, docs)
    assert [f.split(":")[0] for f in failures] == ["broken pod", "broken ray"], failures

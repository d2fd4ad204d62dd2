"""What every target shares: the plan's engine settings in argv order, the kit's cache layout, names,
the sidecar's probe arguments, and the one-line refusal."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from serve.errors import KitError
from serve.launch.layering import LoadedProfile
from serve.launch.plan import Plan
from serve.launch.render import FLAGS, flags_for

# The kit image's cache layout (Dockerfile ENV, checked by tests/targets/test_common.py): vLLM's
# torch.compile artifacts, Inductor, Triton and Humming kernels. On a volume they make restarts skip compilation.
CACHE_ROOT = "/data/cache"
CACHE_ENV = {
    "VLLM_CACHE_ROOT": f"{CACHE_ROOT}/vllm",
    "TORCHINDUCTOR_CACHE_DIR": f"{CACHE_ROOT}/inductor",
    "TRITON_CACHE_DIR": f"{CACHE_ROOT}/triton",
    "HUMMING_CACHE_DIR": f"{CACHE_ROOT}/humming",
}
SIDECAR_PORT = 8889
"""The readiness sidecar's port (docker-compose.yml: HEALTHCHECK_PORT)."""


@dataclass
class Rendered:
    """A target's document and the lines a person should read beside it (stderr)."""

    target: str
    document: Any
    notes: list[str] = field(default_factory=list)
    header: str = ""

    def text(self) -> str:
        docs = self.document if isinstance(self.document, list) else [self.document]
        body = "---\n".join(yaml.safe_dump(d, sort_keys=False, width=120) for d in docs)
        return self.header + body


def engine_settings(plan: Plan) -> dict[str, Any]:
    """Every setting the ``vllm`` target turns into a flag, in argv order, with its planned value: the one
    source each target maps. A setting that renders no flag (vLLM's default) is left out here as in argv."""
    out: dict[str, Any] = {}
    for setting, _, _ in FLAGS:
        if setting in plan.decisions and flags_for(setting, plan.decisions[setting].value):
            out[setting] = plan.decisions[setting].value
    return out


def planned_env(plan: Plan) -> dict[str, str]:
    """The environment the plan's rules and the profile's serving.env give vLLM."""
    return {name: str(d.value) for name, d in plan.env.items()}


def refuse(target: str, profile: str, key: str, value: Any, why: str) -> KitError:
    return KitError(f"render --target {target}: profile {profile}: {key} = {value!r} {why}")


def refuse_literal_api_key(target: str, loaded: LoadedProfile, plan: Plan) -> None:
    """A key in serving.env or serving.extra_args would be written into the document in clear."""
    if "VLLM_API_KEY" in plan.env:
        raise refuse(
            target, loaded.name, "serving.env.VLLM_API_KEY", "***",
            "would put the API key itself into the rendered file; store it in a Kubernetes Secret and set "
            "scale.api_key_secret (NAME) instead",
        )  # fmt: skip
    if any(a == "--api-key" or a.startswith(("--api-key=", "--api_key")) for a in plan.extra_args):
        raise refuse(
            target, loaded.name, "serving.extra_args --api-key", "***",
            "would put the API key itself into the rendered file; store it in a Kubernetes Secret and set "
            "scale.api_key_secret (NAME) instead",
        )  # fmt: skip


def k8s_name(text: str) -> str:
    """A DNS-1123 label from a model name (``Lorbus/Qwen3.6-27B-int4-AutoRound`` -> ``qwen3-6-27b-int4-autoround``)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.rsplit("/", 1)[-1].lower()).strip("-")
    return name[:63].rstrip("-") or "model"


def served_name(plan: Plan) -> str:
    return str(plan.value("served_model_name") or plan.value("model"))


def cluster_model(loaded: LoadedProfile, plan: Plan) -> tuple[str, list[str]]:
    """The model a cluster pulls: a local ``model.path`` exists only on this machine, so the cluster
    downloads ``model.id`` (said in a note)."""
    if loaded.profile.model.path:
        return loaded.profile.model.id, [
            f"model.path {loaded.profile.model.path} is local to this machine: the cluster pulls model.id "
            f"{loaded.profile.model.id}"
        ]
    return str(plan.value("model")), []


def split_image(image: str) -> tuple[str, str]:
    repository, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return repository, tag


def sidecar_args(plan: Plan) -> list[str]:
    """The readiness layer (plan.readiness) as the sidecar's --probe-* flags: no plan.json in a pod."""
    readiness = plan.readiness or {}
    args = ["--no-gpu", "--model", served_name(plan)]
    if readiness.get("prompt"):
        args += ["--probe-prompt", str(readiness["prompt"])]
    if readiness.get("expect"):
        args += ["--probe-expect", str(readiness["expect"])]
    elif readiness.get("off_reason"):
        args += ["--probe-expect-off", str(readiness["off_reason"])]
    if readiness.get("max_tokens"):
        args += ["--probe-max-tokens", str(readiness["max_tokens"])]
    if readiness.get("extra_body"):
        args += ["--probe-extra-body", json.dumps(readiness["extra_body"], sort_keys=True)]
    return args


def header(target: str, plan: Plan, modelled_on: str) -> str:
    return (
        f"# Rendered by: python -m serve render --target {target} --profile {plan.profile}\n"
        f"# Modelled on: {modelled_on}. Engine planned for: {plan.engine.name}.\n"
    )

"""The plan as a KServe LLMInferenceService (serving.kserve.io/v1alpha1) and the PersistentVolumeClaim for
vLLM's compile cache: ``kubectl apply -f FILE``.

The container ``main`` replaces the one in KServe's default template (kserve-config-llm-template): the same
``vllm serve /mnt/models`` (the storage initializer downloads spec.model.uri there), with the plan's
flags rendered exactly as the ``vllm`` target renders them. Served name and tensor parallelism go to
spec.model.name and spec.parallelism; the kit's readiness sidecar runs beside it and its /readyz is the
pod's readiness, /livez its liveness."""

from __future__ import annotations

from typing import Any

from serve.launch.layering import LoadedProfile
from serve.launch.plan import Plan
from serve.launch.render import flags_for
from serve.targets import models
from serve.targets.common import (
    CACHE_ENV,
    CACHE_ROOT,
    SIDECAR_PORT,
    Rendered,
    cluster_model,
    engine_settings,
    header,
    k8s_name,
    planned_env,
    refuse,
    refuse_literal_api_key,
    served_name,
    sidecar_args,
)

TARGET = "kserve"
MODELLED_ON = "KServe 0.20 LLMInferenceService serving.kserve.io/v1alpha1 (CRD at kserve commit aaac4e2)"


def _env(values: dict[str, str], api_key: dict[str, Any] | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values.items()]
    if api_key:
        env.append({"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": api_key}})
    return env


def render(loaded: LoadedProfile, plan: Plan) -> Rendered:
    scale = loaded.profile.scale
    name = loaded.name
    refuse_literal_api_key(TARGET, loaded, plan)
    if scale.autoscaled:
        raise refuse(
            TARGET,
            name,
            "scale.min_replicas/max_replicas",
            [scale.min_replicas, scale.max_replicas],
            "need KEDA triggers in LLMInferenceService spec.scaling, which the kit does not model; set "
            "scale.replicas and leave min/max null for this target",
        )
    if plan.value("revision"):
        raise refuse(
            TARGET,
            name,
            "model.revision",
            plan.value("revision"),
            "has no field in spec.model (the storage initializer downloads the uri's default branch); "
            "pin the revision in a copy you serve from s3:// or pvc://",
        )
    settings = engine_settings(plan)
    model, notes = cluster_model(loaded, plan)
    port = int(plan.value("port") or 8000)
    args = ["--port", str(port)]
    for setting, value in settings.items():
        if setting in ("served_model_name", "tensor_parallel_size", "host", "port"):
            continue
        args += flags_for(setting, value)
    served = served_name(plan)
    args = ["--served-model-name", served, *args, *plan.extra_args]
    tp = int(settings.get("tensor_parallel_size") or 1)
    gpu = plan.gpu is not None and plan.engine.device != "cpu"
    if "tensor_parallel_size" in settings:
        args += flags_for("tensor_parallel_size", tp)
    resources: dict[str, Any] = {
        "requests": {"cpu": str(scale.request_cpu), "memory": scale.request_memory},
        "limits": {"memory": scale.request_memory},
    }
    if gpu:
        resources["requests"]["nvidia.com/gpu"] = str(tp)
        resources["limits"]["nvidia.com/gpu"] = str(tp)
    api_key = (
        {"name": scale.api_key_secret, "key": scale.api_key_secret_key} if scale.api_key_secret else None
    )
    cache_claim = f"{k8s_name(served)}-compile-cache"
    main = {
        "name": "main",
        "image": scale.image,
        "command": ["vllm", "serve", "/mnt/models"],
        "args": args,
        "ports": [{"containerPort": port, "protocol": "TCP"}],
        "env": _env({**planned_env(plan), **CACHE_ENV}, api_key),
        "resources": resources,
        "startupProbe": {
            "httpGet": {"path": "/health", "port": port},
            "periodSeconds": 30,
            "failureThreshold": 120,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": port},
            "periodSeconds": 15,
            "failureThreshold": 3,
        },
        "volumeMounts": [{"name": "compile-cache", "mountPath": CACHE_ROOT}],
    }
    sidecar = {
        "name": "readiness",
        "image": scale.image,
        "command": ["python3", "-m", "healthcheck"],
        "args": sidecar_args(plan),
        "ports": [{"containerPort": SIDECAR_PORT, "name": "readiness", "protocol": "TCP"}],
        # All addresses: the kubelet's probes come to the pod's IP. With the Secret's key the sidecar
        # requires it except for the bare verdict of /readyz and /livez, which is all a probe reads
        # (an httpGet probe could only carry the key in clear: healthcheck/access.py).
        "env": _env(
            {
                "HEALTHCHECK_VLLM_URL": f"http://127.0.0.1:{port}",
                "HEALTHCHECK_PORT": str(SIDECAR_PORT),
                "HEALTHCHECK_HOST": "0.0.0.0",
                **({} if api_key else {"HEALTHCHECK_ALLOW_UNAUTHENTICATED": "true"}),
            },
            api_key,
        ),
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": SIDECAR_PORT}, "periodSeconds": 10},
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": SIDECAR_PORT},
            "periodSeconds": 15,
            "failureThreshold": 3,
        },
    }
    spec: dict[str, Any] = {
        "model": {"uri": f"hf://{model}", "name": served},
        "replicas": scale.replicas,
    }
    if "tensor_parallel_size" in settings:
        spec["parallelism"] = {"tensor": tp}
    spec["template"] = {
        "containers": [main, sidecar],
        "volumes": [{"name": "compile-cache", "persistentVolumeClaim": {"claimName": cache_claim}}],
    }
    # An empty route and gateway: the controller creates the HTTPRoute on its default Gateway, and the
    # scheduler (llm-d's endpoint picker) routes between replicas.
    spec["router"] = {"route": {}, "gateway": {}, "scheduler": {}}
    service = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LLMInferenceService",
        "metadata": {"name": k8s_name(served)},
        "spec": spec,
    }
    models.LLMInferenceService.model_validate(service)
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": cache_claim},
        "spec": {
            # One claim shared by every replica: ReadWriteMany (the compile cache is keyed by config hash).
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": scale.storage}},
        },
    }
    if plan.value("host") not in (None, "0.0.0.0"):
        notes.append(f"kserve: host {plan.value('host')} -> vLLM's default (all addresses: the pod's IP)")
    notes.append(
        "kserve: the main container serves plain HTTP on its port (KServe's default template adds TLS "
        "flags; these args replace them)"
    )
    if api_key is None:
        notes.append(
            "kserve: no scale.api_key_secret: vLLM's port and the readiness sidecar's "
            "(HEALTHCHECK_ALLOW_UNAUTHENTICATED=true) answer anyone on the cluster network without a key; "
            "set scale.api_key_secret to require one"
        )
    return Rendered(TARGET, [claim, service], notes, header(TARGET, plan, MODELLED_ON))

"""The plan as vLLM production-stack Helm values (chart ``vllm-stack`` 0.1.12): ``helm install ... -f FILE``.

The chart's template builds ``vllm serve MODEL --host 0.0.0.0 --port <containerPort>`` itself, then the
vllmConfig fields it knows, then ``extraArgs``; every other planned flag goes into extraArgs, rendered
exactly as the ``vllm`` target renders it. The pvcStorage volume is mounted at /data (the chart sets
HF_HOME there), so the compile caches go to /data/cache on the same volume."""

from __future__ import annotations

from typing import Any

from serve.launch.layering import LoadedProfile
from serve.launch.plan import Plan
from serve.launch.render import flags_for
from serve.targets import models
from serve.targets.common import (
    CACHE_ENV,
    Rendered,
    cluster_model,
    engine_settings,
    header,
    k8s_name,
    planned_env,
    refuse_literal_api_key,
    served_name,
    split_image,
)

TARGET = "production-stack"
MODELLED_ON = "vLLM production-stack Helm chart vllm-stack 0.1.12 (values.schema.json)"
# planned setting -> vllmConfig field the chart turns into the same flag.
VLLM_CONFIG_FIELDS = {
    "tensor_parallel_size": "tensorParallelSize",
    "max_model_len": "maxModelLen",
    "dtype": "dtype",
    "max_num_seqs": "maxNumSeqs",
    "gpu_memory_utilization": "gpuMemoryUtilization",
}


def render(loaded: LoadedProfile, plan: Plan) -> Rendered:
    scale = loaded.profile.scale
    refuse_literal_api_key(TARGET, loaded, plan)
    settings = engine_settings(plan)
    model, notes = cluster_model(loaded, plan)
    vllm_config: dict[str, Any] = {}
    extra: list[str] = []
    for setting, value in settings.items():
        if setting in VLLM_CONFIG_FIELDS:
            vllm_config[VLLM_CONFIG_FIELDS[setting]] = value
        elif setting in ("host", "port", "revision", "enable_prefix_caching"):
            continue  # below
        else:
            extra += flags_for(setting, value)
    # The chart renders --no-enable-prefix-caching unless this is true: write vLLM's default (on) explicitly.
    vllm_config["enablePrefixCaching"] = plan.value("enable_prefix_caching") is not False
    vllm_config["extraArgs"] = extra + list(plan.extra_args)
    tp = int(settings.get("tensor_parallel_size") or 1)
    gpus = 0 if plan.gpu is None or plan.engine.device == "cpu" else tp
    repository, tag = split_image(scale.image)
    env = {**planned_env(plan), **CACHE_ENV}
    spec: dict[str, Any] = {
        "name": k8s_name(served_name(plan)),
        "repository": repository,
        "tag": tag,
        "modelURL": model,
    }
    if plan.value("revision"):
        spec["modelRevision"] = str(plan.value("revision"))
    spec |= {
        "replicaCount": scale.replicas,
        "requestCPU": scale.request_cpu,
        "requestMemory": scale.request_memory,
        "requestGPU": gpus,
        "pvcStorage": scale.storage,
        "vllmConfig": vllm_config,
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }
    if scale.autoscaled:
        bounds = scale.bounds()
        spec["keda"] = {
            "enabled": True,
            "minReplicaCount": bounds["min_replicas"],
            "maxReplicaCount": bounds["max_replicas"],
        }
        notes.append(
            "production-stack: KEDA scales on the chart's default trigger (vllm:num_requests_waiting > 5 "
            "from prometheus-operated.monitoring.svc); KEDA must be installed"
        )
    port = int(plan.value("port") or 8000)
    engine: dict[str, Any] = {"containerPort": port}
    if scale.api_key_secret:
        engine["vllmApiKey"] = {"secretName": scale.api_key_secret, "secretKey": scale.api_key_secret_key}
    engine |= {
        # Cold starts compile for minutes: a long startup window, then vLLM's own /health.
        "startupProbe": {
            "httpGet": {"path": "/health", "port": port},
            "initialDelaySeconds": 30,
            "periodSeconds": 30,
            "failureThreshold": 120,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": port},
            "periodSeconds": 15,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": port},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "modelSpec": [spec],
    }
    document = {"servingEngineSpec": engine}
    models.ProductionStackValues.model_validate(document)
    if plan.value("host") not in (None, "0.0.0.0"):
        notes.append(
            f"production-stack: host {plan.value('host')} -> 0.0.0.0 (the chart binds all addresses)"
        )
    notes.append(
        "production-stack: the chart 0.1.12 has no slot for the kit's readiness sidecar: its probes use "
        "vLLM's /health (the answer check is not a pod condition there; the kserve target has it)"
    )
    return Rendered(TARGET, document, notes, header(TARGET, plan, MODELLED_ON))

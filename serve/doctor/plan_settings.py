"""The serving settings doctor checks: the profile's, then the launcher's plan (rules applied) on the GPU it
would plan for."""

from __future__ import annotations

from typing import Any

from serve.doctor.inputs import DoctorInputs, ServingIntent
from serve.errors import KitError
from serve.launch import kv, memory_fit


def serving_from_profile(profile: Any, model_dir_override: str | None) -> tuple[ServingIntent, str | None]:
    """A loaded ``serve.launch.profile.Profile`` -> (ServingIntent, model dir)."""
    s = profile.serving
    mml = s.max_model_len if isinstance(s.max_model_len, int) else None
    intent = ServingIntent(
        kv_cache_dtype=kv.memory_name(s.kv_cache),
        max_model_len=mml,
        max_num_seqs=s.max_num_seqs or 1,
        max_num_batched_tokens=s.max_num_batched_tokens,
        gpu_memory_utilization=s.gpu_memory_utilization or 0.9,
        num_speculative_tokens=s.speculative.num_speculative_tokens if s.speculative else 0,
        kv_cache_memory_bytes=s.kv_cache_memory_bytes,
        prefix_caching=bool(s.enable_prefix_caching),
        tensor_parallel_size=profile.hardware.tensor_parallel_size,
    )
    return intent, model_dir_override or profile.model.path


def _settings_from_plan(inp: DoctorInputs, loaded: Any, target: Any, engine: Any) -> dict[str, Any] | None:
    """The settings the launcher would use (rules applied, e.g. the CPU build's explicit KV size) on
    the GPU it would plan for (``serve.launch.target_gpu.TargetGpu``), or None when the plan cannot be made;
    a refusal is recorded for :func:`check_plan`."""
    from serve.launch import probes, target_gpu
    from serve.launch.planning import plan_for

    try:
        model = probes.model_facts(loaded.profile.model, profile_source=str(loaded.path))
        inp.model_facts = model
        p = plan_for(loaded, gpu=target, engine=engine, model=model).plan
    except KitError as exc:
        inp.plan_error = str(exc)
        return None
    inp.plan_warnings = list(p.warnings)
    g, e = target.facts, target.expected
    moved = e is not None and g is not None and not target_gpu.same_gpu(e, g)
    if target.origin == "detected" and p.notes and (moved or target.profile_gpu == "none"):
        inp.gpu_note = p.notes[0]
    spec = p.value("speculative_config") or {}
    out: dict[str, Any] = {
        "kv_cache_dtype": p.value("kv_cache_dtype") or "auto",
        "max_model_len": p.value("max_model_len") if isinstance(p.value("max_model_len"), int) else None,
        "max_num_seqs": p.value("max_num_seqs") or 1,
        "max_num_batched_tokens": p.value("max_num_batched_tokens"),
        "num_speculative_tokens": int(spec.get("num_speculative_tokens") or 0) if spec else 0,
        "kv_cache_memory_bytes": p.value("kv_cache_memory_bytes"),
    }
    if p.engine.device != "cpu":
        # the block layout the planner fits (prefix caching as vLLM runs it, GDN prefill checkpoints)
        settings = {name: decision.value for name, decision in p.decisions.items()}
        cache = memory_fit.cache_params(settings, p.gpu, p.engine, p.model)
        out["prefix_caching"] = cache.mamba_cache_mode == "align"
        out["prefill_checkpoint_alignment"] = cache.prefill_checkpoint_alignment
    else:
        out["prefix_caching"] = bool(p.value("enable_prefix_caching"))
    if p.value("gpu_memory_utilization"):
        out["gpu_memory_utilization"] = p.value("gpu_memory_utilization")
    return out

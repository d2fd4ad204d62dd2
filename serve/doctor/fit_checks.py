"""Checks of what the launcher would do: its plan (refusal, warnings), the memory fit, room on disk."""

from __future__ import annotations

from serve.doctor.inputs import Check, DoctorInputs
from serve.errors import KitError
from serve.launch import memory
from serve.launch.target_gpu import short_name

# Room the Hugging Face cache needs to download the real checkpoint (about 19.5 GB) once.
HF_CACHE_NEEDED_BYTES = 25 * 10**9


def _assumed_prefix(inp: DoctorInputs) -> str:
    p = inp.profile_gpu
    return (
        f"on the assumed {short_name(p.name, p.count, article=False)} (not seen here): "
        if inp.gpu_assumed and p
        else ""
    )


def check_disk(inp: DoctorInputs) -> list[Check]:
    out = []
    for path, free in inp.disk_free.items():
        if free < HF_CACHE_NEEDED_BYTES and "cache" in path:
            out.append(
                Check(
                    "disk",
                    "warn",
                    f"{path}: {free / 1e9:.1f} GB free, the checkpoint needs about "
                    f"{HF_CACHE_NEEDED_BYTES / 1e9:.0f} GB to download",
                )
            )
        else:
            out.append(Check("disk", "ok", f"{path}: {free / 1e9:.1f} GB free"))
    return out


def check_fit(inp: DoctorInputs) -> list[Check]:
    s = inp.serving
    gpu = inp.gpu or (inp.profile_gpu if inp.gpu_assumed else None)
    prefix = _assumed_prefix(inp) if inp.gpu is None else ""
    if not inp.config and inp.model_facts is None:
        return [Check("fit", "info", "memory fit not checked: no model config")]
    if gpu is None and s.kv_cache_memory_bytes is None:
        return [Check("fit", "info", "memory fit not checked: no GPU and no kv_cache_memory_bytes")]
    try:
        if inp.config:
            shape = memory.ModelShape.from_config(inp.config)
        else:
            shape = memory.shape_from_facts(inp.model_facts)
        if inp.files and inp.files.total_bytes:
            weights = inp.files.weight_bytes
        else:
            weights = memory.WeightBytes(int(getattr(inp.model_facts, "weight_bytes", None) or 0))
        cpu = inp.engine is not None and inp.engine.device == "cpu"
        if cpu:
            cache = memory.CacheParams.cpu(prefix_caching=s.prefix_caching, avx512_bf16=inp.cpu_avx512_bf16)
        else:
            cache = memory.CacheParams.cuda(
                prefix_caching=s.prefix_caching, prefill_checkpoint_alignment=s.prefill_checkpoint_alignment
            )
        r = memory.fit(
            shape,
            weights,
            total_memory_bytes=gpu.memory_bytes if gpu else 0,
            gpu_memory_utilization=s.gpu_memory_utilization,
            kv_cache_dtype=s.kv_cache_dtype,
            max_model_len=s.max_model_len,
            max_num_seqs=s.max_num_seqs,
            max_num_batched_tokens=s.max_num_batched_tokens,
            num_speculative_tokens=s.num_speculative_tokens,
            kv_cache_memory_bytes=s.kv_cache_memory_bytes,
            tensor_parallel_size=s.tensor_parallel_size,
            cache=cache,
        )
    except KitError as exc:
        return [Check("fit", "error", prefix + str(exc))]
    return [Check("fit", r.verdict, prefix + r.message, r.to_dict())]


def check_plan(inp: DoctorInputs) -> list[Check]:
    prefix = _assumed_prefix(inp)
    chosen = [Check("profile-auto", "info", inp.profile_choice)] if inp.profile_choice else []
    if inp.plan_error:
        return [
            *chosen,
            Check("plan", "error", f"{prefix}the launcher refuses this profile: {inp.plan_error}"),
        ]
    return [*chosen, *(Check("plan", "warn", prefix + w) for w in inp.plan_warnings)]

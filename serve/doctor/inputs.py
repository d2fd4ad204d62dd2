"""What doctor's checks look at: the facts (:class:`DoctorInputs`) and a finding (:class:`Check`).
The checks are pure functions of these; :mod:`serve.doctor.gather` fills them at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from serve.checkpoint.safetensors_index import ModelFiles
from serve.launch import memory

Severity = Literal["ok", "info", "warn", "error"]


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
    max_num_batched_tokens: int | None = None
    """Tokens per scheduler step (the activations the fit reserves); None: vLLM's default."""
    gpu_memory_utilization: float = 0.9
    num_speculative_tokens: int = 0
    kv_cache_memory_bytes: int | None = None
    prefix_caching: bool = False
    """Prefix caching as vLLM will run it: from the launcher's plan, the engine's default for a hybrid model
    where the profile leaves it unset (serve.launch.memory_fit.cache_params); the profile's value without
    a plan."""
    prefill_checkpoint_alignment: int = 0
    """FlashInfer's GDN prefill checkpoints (one more state block per request), from the plan as above."""
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
    profile_choice: str | None = None
    """With ``--profile auto``: the line naming the profile chosen and why (serve.launch.profile_choice)."""
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

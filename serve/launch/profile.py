"""The profile schema: the one source of truth for what a profile may say.

A profile is YAML with four layers (``model``, ``hardware``, ``serving``, ``readiness``) and may
``extends`` another profile (deep merge, the child wins). Validation, the generated reference (docs/profile-reference.md)
and the keys accepted by ``--set`` all derive from the pydantic models below; each field's docstring
is its documentation.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

KvCacheIntent = Literal[
    "auto",
    "bf16",
    "fp8",
    "fp8_e4m3",
    "fp8_e5m2",
    "turboquant-4bit",
    "turboquant-3bit",
    "turboquant-k8v4",
    "turboquant-k3v4",
]
"""What the profile wants from the KV cache; the planner maps it to a name the engine accepts."""

CudagraphMode = Literal["NONE", "PIECEWISE", "FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE"]
Dtype = Literal["auto", "half", "float16", "bfloat16", "float32"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True)


class ModelLayer(Strict):
    """Which weights to serve and what they are."""

    id: str
    """Hugging Face repository id of the model (e.g. ``Lorbus/Qwen3.6-27B-int4-AutoRound``). vLLM serves
    this id unless ``path`` is set."""

    path: str | None = None
    """Local directory holding the weights (config.json, safetensors). When set, vLLM serves this
    directory and the planner reads the model's facts from its config.json."""

    facts: str | None = None
    """Name of a model description in ``config/models/NAME.yaml`` (or a path to one): the model's shape
    for planning when the weights are not local yet."""

    served_name: str | None = None
    """Name clients send as ``model``; defaults to ``id``."""

    revision: str | None = None
    """Git revision of the Hugging Face repository (branch, tag or commit)."""

    trust_remote_code: bool = False
    """Pass ``--trust-remote-code``: lets the repository run its own Python code. Only when needed."""


class HardwareLayer(Strict):
    """The hardware the profile was written for."""

    gpu: str | None = None
    """The GPU this profile was written for (``config/gpus/NAME.yaml``, or ``none`` for the CPU build).
    An expectation, not a fact: without ``--gpu`` the plan is made for the GPU NVML detects and says
    what changed when it differs; only where no GPU can be detected is this one assumed (and labelled
    so). ``auto`` requires a detected GPU."""

    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs one model is split over (vLLM ``--tensor-parallel-size``)."""


class Speculative(Strict):
    """Speculative decoding; for Qwen3.5/3.6 the model's own MTP head."""

    method: str = "mtp"
    """vLLM speculative method (``mtp`` uses the checkpoint's multi-token-prediction head)."""

    num_speculative_tokens: int = Field(1, ge=1, le=16)
    """Tokens drafted per step. More drafts cost more per step; acceptance falls with position."""


class ServingLayer(Strict):
    """How vLLM serves the model."""

    host: str = "0.0.0.0"
    """Address the API server binds inside its container or host."""

    port: int = Field(8000, ge=1, le=65535)
    """API port (OpenAI endpoints and ``/metrics``)."""

    dtype: Dtype = "auto"
    """Activation dtype (vLLM ``--dtype``)."""

    max_model_len: int | Literal["auto"] | None = None
    """Longest sequence (prompt + output) in tokens; ``null`` leaves vLLM's default (the model's
    maximum); ``auto`` asks the memory planner for the largest that fits."""

    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    """Share of GPU memory vLLM may use for weights, activations and KV cache."""

    kv_cache: KvCacheIntent = "auto"
    """KV-cache intent. ``turboquant-4bit`` maps to the name the installed vLLM accepts
    (``turboquant_4bit_nc``, or ``tq-t4nc`` on the pre-merge fork), else falls back to fp8, else auto,
    with a warning for every step down."""

    kv_cache_memory_bytes: int | None = Field(None, ge=1)
    """Explicit KV-cache size in bytes. Needed on the CPU build of vLLM (see the rule table)."""

    max_num_seqs: int | None = Field(None, ge=1)
    """Most sequences in one batch."""

    speculative: Speculative | None = None
    """Speculative decoding config; ``null`` turns it off."""

    cudagraph_mode: CudagraphMode | None = None
    """CUDA graph mode. ``null`` lets the rules decide (e.g. ``NONE`` for TurboQuant + speculative
    decoding); a value set here wins over the rules, with a warning when a rule disagrees."""

    enforce_eager: bool = False
    """Run without torch.compile and CUDA graphs (``--enforce-eager``)."""

    enable_prefix_caching: bool | None = None
    """Prefix caching; ``null`` leaves vLLM's default unless a rule must turn it off."""

    reasoning_parser: str | None = None
    """Reasoning parser (``qwen3`` separates ``<think>`` content into ``reasoning_content``)."""

    enable_auto_tool_choice: bool = False
    """Let the model decide to call tools (needs ``tool_call_parser``)."""

    tool_call_parser: str | None = None
    """Tool-call parser (``qwen3_xml`` for Qwen3.5/3.6)."""

    extra_args: list[str] = Field(default_factory=list)
    """Raw vLLM flags the schema does not model, appended as given, e.g. ``["--seed", "0"]``. Checked
    by vLLM's own parser at launch."""

    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables for the vLLM process."""

    @field_validator("tool_call_parser", "reasoning_parser")
    @classmethod
    def _not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a parser name or null, not an empty string")
        return value

    @model_validator(mode="after")
    def _tools_need_parser(self) -> ServingLayer:
        if self.enable_auto_tool_choice and not self.tool_call_parser:
            raise ValueError(
                "enable_auto_tool_choice is true but tool_call_parser is not set; set one (qwen3_xml)"
            )
        return self


_DEFAULT_QUESTION = "What is the capital of France? Answer with one word."


def compile_answer_pattern(pattern: str) -> re.Pattern[str]:
    """An expected-answer pattern (readiness.expect, the smoke suite's --factual) compiled. ValueError
    when it is malformed, or when it matches the empty string: then no answer could fail it."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid Python regular expression ({exc}); fix the pattern") from None
    if compiled.search("") is not None:
        raise ValueError("matches the empty string, so no answer could fail it; make it require the answer")
    return compiled


class ReadinessLayer(Strict):
    """The question the readiness sidecar asks, and the answer it requires before it calls vLLM ready."""

    # Written into plan.json ("readiness"); the sidecar's --probe-* flags override it. A miss is the
    # not-ready reason wrong_answer; an empty or looping answer is degenerate_output either way.

    prompt: str = Field(_DEFAULT_QUESTION, min_length=1, max_length=2000)
    """User message of the probe's chat completion: a question with one known answer."""

    expect: str | None = Field(r"(?i)\bparis\b", min_length=1, max_length=300)
    """Python regular expression the answer (content and reasoning together) must match (``re.search``);
    ``null`` turns the answer check off (then ``off_reason`` is required). A pattern that matches the
    empty string is refused: it could never fail."""

    off_reason: str | None = Field(None, min_length=1, max_length=200)
    """Why the answer check is off (e.g. ``random weights``): required when ``expect`` is ``null``, shown
    on the sidecar's /readyz and in its plan info metric; ignored (dropped) while ``expect`` is set, so a
    profile that extends a random-weight one only needs to set ``expect``."""

    max_tokens: int = Field(16, ge=1, le=1024)
    """max_tokens of the probe's chat completion: room for the answer, and short, since the probe runs
    every few seconds. The shared loop detector judges texts of 24 characters or more, so a profile
    without an answer check wants about 32."""

    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Fields merged into the probe's chat request, e.g. ``{"chat_template_kwargs": {"enable_thinking":
    false}}`` so that a reasoning model answers instead of spending max_tokens thinking."""

    @field_validator("expect")
    @classmethod
    def _expect_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_answer_pattern(value)
        return value

    @field_validator("off_reason")
    @classmethod
    def _off_needs_reason(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "expect" not in info.data:
            return value  # expect itself is invalid: that error is the one to show
        if info.data["expect"] is not None:
            return None
        if value is None or not value.strip():
            raise ValueError(
                "required when readiness.expect is null: say why the answer is not checked "
                "(e.g. 'random weights: the model cannot answer')"
            )
        return value


class Profile(Strict):
    """A deployment: model, hardware and serving settings."""

    description: str = ""
    """One line saying what this profile is for."""

    extends: str | None = None
    """Another profile (name or path) this one starts from; keys here win, mappings merge deeply."""

    model: ModelLayer
    """The model layer."""

    hardware: HardwareLayer = Field(default_factory=HardwareLayer)
    """The hardware layer."""

    serving: ServingLayer = Field(default_factory=ServingLayer)
    """The serving layer."""

    readiness: ReadinessLayer = Field(default_factory=ReadinessLayer)
    """The readiness layer: the question the sidecar asks and the answer it requires."""


def field_paths(model: type[BaseModel] = Profile, prefix: str = "") -> dict[str, Any]:
    """Every settable dotted key (``serving.max_num_seqs``) -> its pydantic FieldInfo."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        out[path] = info
        inner = _submodel(info.annotation)
        if inner is not None:
            out.update(field_paths(inner, prefix=f"{path}."))
    return out


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None

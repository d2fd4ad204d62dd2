"""The profile schema: the one source of truth for what a profile may say.

A profile is YAML with four layers (``model``, ``hardware``, ``serving``, ``readiness``) and may
``extends`` another profile (deep merge, the child wins). Validation, the generated reference (docs/profile-reference.md)
and the keys accepted by ``--set`` all derive from the pydantic models below; each field's docstring
is its documentation.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from serve.launch.kv import KV_INTENTS

KvCacheIntent = Literal[KV_INTENTS]  # type: ignore[valid-type]  # the choices live in serve.launch.kv
"""What the profile wants from the KV cache; the planner maps it to a name the engine accepts."""

CudagraphMode = Literal["NONE", "PIECEWISE", "FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE"]
Dtype = Literal["auto", "half", "float16", "bfloat16", "float32"]

# Bounds on what a profile may say (issue 16): far above any real deployment, low enough that a typo or
# a hostile value fails here, in one line, instead of in vLLM or the memory planner.
MAX_MODEL_LEN = 1 << 24
"""16M tokens: ten times the longest context any model here has."""
MAX_KV_CACHE_BYTES = 1 << 50
"""1 PiB."""
MAX_NUM_SEQS = 1 << 16
MAX_NUM_BATCHED_TOKENS = 1 << 24
MAX_GPUS = 64
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
"""A POSIX environment variable name: no ``=`` (it would split the name), no NUL, no spaces."""
HF_REPO_ID = re.compile(
    r"^(?!.*(--|\.\.))[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$"
)
"""Hugging Face's repository id rule: ``name`` or ``namespace/name``, letters, digits, ``-_.``, not starting
with ``-`` or ``.``, no ``--`` or ``..``, at most 96 characters each (huggingface_hub validate_repo_id)."""
HOST = re.compile(r"^([A-Za-z0-9][A-Za-z0-9.-]*|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$")
"""An IPv4 address, a host name or an IPv6 address: never starting with ``-``, no spaces."""
SERVED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")
"""What clients send as ``model``: printable, no spaces, not starting with ``-`` (it would become a flag)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True)


class ModelLayer(Strict):
    """Which weights to serve and what they are."""

    id: str = Field(min_length=1, max_length=200)
    """Hugging Face repository id of the model (e.g. ``Lorbus/Qwen3.6-27B-int4-AutoRound``). vLLM serves
    this id unless ``path`` is set."""

    path: str | None = Field(None, min_length=1, max_length=4096)
    """Local directory holding the weights (config.json, safetensors). When set, vLLM serves this
    directory and the planner reads the model's facts from its config.json."""

    facts: str | None = None
    """Name of a model description in ``config/models/NAME.yaml`` (or a path to one): the model's shape
    for planning when the weights are not local yet."""

    served_name: str | None = Field(None, min_length=1, max_length=200)
    """Name clients send as ``model``; defaults to ``id``."""

    revision: str | None = Field(None, min_length=1, max_length=200)
    """Git revision of the Hugging Face repository (branch, tag or commit)."""

    trust_remote_code: bool = False
    """Pass ``--trust-remote-code``: lets the repository run its own Python code. Only when needed."""

    @field_validator("id")
    @classmethod
    def _repo_id(cls, value: str) -> str:
        if not HF_REPO_ID.match(value):
            raise ValueError(
                "not a Hugging Face repository id (namespace/name: letters, digits, '-', '_', '.', not "
                "starting with '-' or '.'); a local directory goes in model.path"
            )
        return value

    @field_validator("path", "revision")
    @classmethod
    def _not_a_flag(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("-") or not value.strip() or not value.isprintable()):
            raise ValueError(
                "must not start with '-' (vLLM would read it as a flag) or hold control characters"
            )
        return value

    @field_validator("served_name")
    @classmethod
    def _served_name(cls, value: str | None) -> str | None:
        if value is not None and not SERVED_NAME.match(value):
            raise ValueError(
                "a served name is letters, digits and ._:/@+- without spaces, not starting with '-'; rename it"
            )
        return value


class HardwareLayer(Strict):
    """The hardware the profile was written for."""

    gpu: str | None = None
    """The GPU this profile was written for (``config/gpus/NAME.yaml``, or ``none`` for the CPU build).
    An expectation, not a fact: without ``--gpu`` the plan is made for the GPU NVML detects and says
    what changed when it differs; only where no GPU can be detected is this one assumed (and labelled
    so). ``auto`` requires a detected GPU."""

    tensor_parallel_size: int = Field(1, ge=1, le=MAX_GPUS)
    """GPUs one model is split over (vLLM ``--tensor-parallel-size``)."""


class Speculative(Strict):
    """Speculative decoding; for Qwen3.5/3.6 the model's own MTP head."""

    method: str = "mtp"
    """vLLM speculative method (``mtp`` uses the checkpoint's multi-token-prediction head)."""

    num_speculative_tokens: int = Field(1, ge=1, le=16)
    """Tokens drafted per step. More drafts cost more per step; acceptance falls with position."""


class ServingLayer(Strict):
    """How vLLM serves the model."""

    host: str = Field("127.0.0.1", min_length=1, max_length=253)
    """Address the API server binds on its host (the container's entrypoint sets 0.0.0.0 there, behind a
    port compose publishes on 127.0.0.1). Any address other machines can reach needs an API key
    (``VLLM_API_KEY``) or ``allow_unauthenticated`` (rule api-key-off-loopback)."""

    allow_unauthenticated: bool = False
    """Serve without an API key on an address other machines can reach, with a loud warning. Not
    inherited through ``extends``: each profile (or ``--set``) says it for itself."""

    port: int = Field(8000, ge=1, le=65535)
    """API port (OpenAI endpoints and ``/metrics``)."""

    dtype: Dtype = "auto"
    """Activation dtype (vLLM ``--dtype``)."""

    generation_config: (
        Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^[^\x00-\x1f-][^\x00-\x1f]*$")] | None
    ) = None
    """Where vLLM takes the sampling defaults from (``--generation-config``): ``auto`` (the model's
    generation_config.json), ``vllm`` (vLLM's own: ignore the model's top-k/top-p), or a folder; ``null``
    leaves it to vLLM and the rules."""

    max_model_len: Annotated[int, Field(ge=1, le=MAX_MODEL_LEN)] | Literal["auto"] | None = None
    """Longest sequence (prompt + output) in tokens; ``null`` leaves vLLM's default (the model's
    maximum); ``auto`` asks the memory planner for the largest that fits."""

    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    """Share of GPU memory vLLM may use for weights, activations and KV cache."""

    kv_cache: KvCacheIntent = "auto"
    """KV-cache intent. ``turboquant-4bit`` maps to the name the installed vLLM accepts
    (``turboquant_4bit_nc``, or ``tq-t4nc`` on the pre-merge fork), else falls back to fp8, else auto,
    with a warning for every step down."""

    kv_cache_memory_bytes: int | None = Field(None, ge=1, le=MAX_KV_CACHE_BYTES)
    """Explicit KV-cache size in bytes. Needed on the CPU build of vLLM (see the rule table)."""

    max_num_seqs: int | None = Field(None, ge=1, le=MAX_NUM_SEQS)
    """Most sequences in one batch."""

    max_num_batched_tokens: int | None = Field(None, ge=1, le=MAX_NUM_BATCHED_TOKENS)
    """Most tokens one scheduler step takes (``--max-num-batched-tokens``; long prompts are prefilled in
    chunks of this size); ``null`` leaves vLLM's default (8192 on the GPUs measured). Lower gives the first
    token of a long prompt sooner and slows the decode of everything running beside it: on an H200 under
    4096-token prompts at 4 streams, 2048 halved the median time to first token (1205 vs 2308 ms) and
    doubled the time per output token (18.6 vs 9.7 ms), same throughput (docs/gpu.md, 'Levers side by
    side'). At least max_num_seqs."""

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

    extra_args: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=list, max_length=64
    )
    """Raw vLLM flags the schema does not model, appended as given, e.g. ``["--seed", "0"]``. Checked
    by vLLM's own parser at launch."""

    env: dict[str, Annotated[str, Field(max_length=32768)]] = Field(default_factory=dict, max_length=128)
    """Environment variables for the vLLM process."""

    @field_validator("tool_call_parser", "reasoning_parser")
    @classmethod
    def _not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a parser name or null, not an empty string")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(ENV_NAME, name):
                raise ValueError(
                    f"{name!r} is not an environment variable name (letters, digits and _, not starting with "
                    "a digit; no '=', spaces or NUL); rename it"
                )
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not HOST.match(value):
            raise ValueError("not an IP address or host name (e.g. 127.0.0.1, 0.0.0.0, ::1)")
        return value

    @field_validator("tool_call_parser", "reasoning_parser")
    @classmethod
    def _parser_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", value.strip()):
            raise ValueError(
                "a parser name is letters, digits and _.- (e.g. qwen3_xml), not starting with '-'"
            )
        return value

    @model_validator(mode="after")
    def _batch_holds_every_sequence(self) -> ServingLayer:
        tokens, seqs = self.max_num_batched_tokens, self.max_num_seqs
        if tokens is not None and seqs is not None and tokens < seqs:
            raise ValueError(
                f"max_num_batched_tokens {tokens} is below max_num_seqs {seqs}: vLLM refuses to start (every "
                f"running sequence needs a token of each step); raise max_num_batched_tokens to at least {seqs} "
                "or lower max_num_seqs"
            )
        return self

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


class ScaleLayer(Strict):
    """Replicas and cluster resources for the scale-out targets (``python -m serve render --target``).
    Each replica is the whole planned server (its tensor-parallel GPUs)."""

    replicas: int = Field(1, ge=1)
    """Replicas to run; with ``min_replicas``/``max_replicas`` set, the number to start with."""

    min_replicas: int | None = Field(None, ge=1)
    """Autoscaling floor (with ``max_replicas``); ``null``: a fixed ``replicas``."""

    max_replicas: int | None = Field(None, ge=1)
    """Autoscaling ceiling (with ``min_replicas``)."""

    api_key_secret: str | None = Field(None, min_length=1)
    """Name of the Kubernetes Secret holding vLLM's API key (never the key itself); the targets reference
    it (production-stack ``vllmApiKey``, KServe ``secretKeyRef``). Ray Serve LLM has no API key check and
    refuses it."""

    api_key_secret_key: str = Field("api-key", min_length=1)
    """Key inside ``api_key_secret`` that holds the API key."""

    image: str = "qwen-kit:gpu"
    """Container image for the Kubernetes targets: the kit's image (vLLM plus the readiness sidecar),
    pushed to a registry the cluster can pull from."""

    storage: str = Field("200Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)$")
    """Persistent volume size: weights and compile cache (production-stack ``pvcStorage``), the compile
    cache claim (KServe)."""

    request_cpu: int = Field(8, ge=1)
    """CPU cores requested per replica."""

    request_memory: str = Field("64Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)$")
    """Memory requested (and limited to) per replica."""

    @model_validator(mode="after")
    def _bounds(self) -> ScaleLayer:
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError(
                "set both min_replicas and max_replicas (autoscaling) or neither (fixed replicas)"
            )
        low, high = self.min_replicas, self.max_replicas
        if low is not None and high is not None and not low <= self.replicas <= high:
            raise ValueError(
                f"replicas {self.replicas} must lie within min_replicas {low} and max_replicas {high}"
            )
        return self

    @property
    def autoscaled(self) -> bool:
        return self.min_replicas is not None and self.min_replicas != self.max_replicas

    def bounds(self) -> dict[str, int]:
        """min/max/initial replicas; a fixed count is min = max = replicas."""
        low = self.min_replicas if self.min_replicas is not None else self.replicas
        high = self.max_replicas if self.max_replicas is not None else self.replicas
        return {"min_replicas": low, "max_replicas": high, "initial_replicas": self.replicas}


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

    scale: ScaleLayer = Field(default_factory=ScaleLayer)
    """The scale-out layer: replicas, image and secrets for ``render --target`` (Ray Serve,
    production-stack, KServe; docs/scale-out.md). Ignored by ``launch``."""


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

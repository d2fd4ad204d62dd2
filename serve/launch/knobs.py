"""THE knob table: profile key -> vLLM setting (its argument dest) -> flag -> how the value becomes the flag.

One row per vLLM flag the kit renders, in the order the flags appear in the command (the seed card's order
where it has one). Everything else derives from it: plan()'s initial decisions (:data:`PROFILE_TO_SETTING`),
render's flags (:data:`FLAGS`, :data:`OMIT`) and the ``settings`` of plan.json (:func:`document_settings`);
the profile keys are checked against the profile schema when this module loads. Adding a knob: its typed,
documented field in serve.launch.profile, and one row here. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from serve.launch.profile import field_paths

Style = Literal["value", "bool", "tristate", "json", "lower"]
"""``value``: --flag VALUE; ``bool``: --flag when true (omitted when false/None); ``tristate``: --flag /
--no-flag; ``json``: --flag '<json>'; ``lower``: --flag value-in-lower-case."""

_UNSET = object()


@dataclass(frozen=True)
class Knob:
    setting: str
    """vLLM's argument dest (``compilation_config.cudagraph_mode`` for a nested one)."""
    flag: str
    style: Style = "value"
    key: str | None = None
    """The profile key that sets it; None where only the planner or a rule does."""
    omit: Any = _UNSET
    """The value that means "vLLM's default": no flag."""
    document: str | None = None
    """Its name in plan.json ``settings``; None: not there."""
    document_default: Any = None
    """What plan.json says when the value is None."""


KNOBS: tuple[Knob, ...] = (
    Knob("served_model_name", "--served-model-name"),
    Knob("revision", "--revision", key="model.revision"),
    Knob("generation_config", "--generation-config", key="serving.generation_config"),
    Knob("dtype", "--dtype", key="serving.dtype", omit="auto", document="dtype"),
    Knob("max_model_len", "--max-model-len", key="serving.max_model_len", document="max_model_len"),
    Knob(
        "gpu_memory_utilization",
        "--gpu-memory-utilization",
        key="serving.gpu_memory_utilization",
        document="gpu_memory_utilization",
    ),
    Knob(
        "kv_cache_dtype", "--kv-cache-dtype", omit="auto", document="kv_cache_dtype", document_default="auto"
    ),
    Knob(
        "kv_cache_memory_bytes",
        "--kv-cache-memory-bytes",
        key="serving.kv_cache_memory_bytes",
        document="kv_cache_memory_bytes",
    ),
    Knob("max_num_seqs", "--max-num-seqs", key="serving.max_num_seqs", document="max_num_seqs"),
    Knob("max_num_batched_tokens", "--max-num-batched-tokens", key="serving.max_num_batched_tokens"),
    Knob(
        "tensor_parallel_size",
        "--tensor-parallel-size",
        key="hardware.tensor_parallel_size",
        omit=1,
        document="tensor_parallel_size",
        document_default=1,
    ),
    Knob(
        "reasoning_parser", "--reasoning-parser", key="serving.reasoning_parser", document="reasoning_parser"
    ),
    Knob(
        "enable_auto_tool_choice", "--enable-auto-tool-choice", "bool", key="serving.enable_auto_tool_choice"
    ),
    Knob(
        "tool_call_parser", "--tool-call-parser", key="serving.tool_call_parser", document="tool_call_parser"
    ),
    Knob("port", "--port", key="serving.port"),
    Knob("host", "--host", key="serving.host"),
    Knob("trust_remote_code", "--trust-remote-code", "bool", key="model.trust_remote_code"),
    Knob(
        "enable_prefix_caching",
        "--enable-prefix-caching",
        "tristate",
        key="serving.enable_prefix_caching",
        document="enable_prefix_caching",
    ),
    Knob(
        "enforce_eager",
        "--enforce-eager",
        "bool",
        key="serving.enforce_eager",
        document="enforce_eager",
        document_default=False,
    ),
    Knob("gdn_prefill_backend", "--gdn-prefill-backend"),
    Knob("attention_backend", "--attention-backend"),
    Knob("linear_backend", "--linear-backend"),
    Knob(
        "compilation_config.cudagraph_mode",
        "--compilation-config.cudagraph_mode",
        "lower",
        key="serving.cudagraph_mode",
        document="cudagraph_mode",
    ),
    Knob("speculative_config", "--speculative-config", "json", key="serving.speculative"),
)

PROFILE_TO_SETTING: list[tuple[str, str]] = [(k.key, k.setting) for k in KNOBS if k.key]
"""profile key -> vLLM setting, for plan()'s initial decisions."""
FLAGS: list[tuple[str, str, str]] = [(k.setting, k.flag, k.style) for k in KNOBS]
"""setting -> flag -> style, in command order, for render."""
OMIT: dict[str, Any] = {k.setting: k.omit for k in KNOBS if k.omit is not _UNSET}
"""Values that mean "leave vLLM's default": no flag."""


def document_settings(value: Callable[[str], Any]) -> dict[str, Any]:
    """plan.json ``settings`` for the knobs that have a name there; ``value`` reads a setting of the plan."""
    out: dict[str, Any] = {}
    for knob in KNOBS:
        if knob.document is not None:
            v = value(knob.setting)
            out[knob.document] = knob.document_default if v is None else v
    return out


def _check_keys() -> None:
    paths = field_paths()
    unknown = [k.key for k in KNOBS if k.key is not None and k.key not in paths]
    if unknown:
        raise AssertionError(f"serve.launch.knobs: {unknown} are not profile keys (serve.launch.profile)")
    settings = [k.setting for k in KNOBS]
    if len(set(settings)) != len(settings):
        raise AssertionError("serve.launch.knobs: a setting is in KNOBS twice")


_check_keys()

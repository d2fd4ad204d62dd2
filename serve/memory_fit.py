"""Wires the memory planner (serve.memory) into plan(): ``max_model_len: auto`` and the refusal of a
profile that cannot fit. Pure."""

from __future__ import annotations

from typing import Any

from serve.errors import Refusal
from serve.facts import EngineFacts, GpuFacts, ModelFacts


def apply(decisions: dict[str, Any], gpu: GpuFacts | None, engine: EngineFacts, model: ModelFacts,
          warnings: list[str]) -> dict[str, Any] | None:
    if decisions["max_model_len"].value == "auto":
        raise Refusal("serving.max_model_len = auto: the memory planner is not wired in yet; give a number")
    return None

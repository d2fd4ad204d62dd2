"""Speculative-decoding acceptance from vLLM's counters, defined once for the bench, the smoke suite
and the sidecar: acceptance rate = accepted / draft tokens; mean acceptance length = 1 + accepted /
drafts; per-position acceptance = accepted at position p / drafts. Inputs are counter differences over
the window the caller chose. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", int, str)


@dataclass(frozen=True)
class Acceptance(Generic[K]):
    rate: float | None
    """None when no draft token was proposed: nothing proposed differs from nothing accepted."""
    mean_length: float | None
    """Tokens emitted per target step; None without drafts."""
    per_position: dict[K, float] = field(default_factory=dict)
    """Position -> share of drafts accepted there, in position order; empty without drafts."""


def acceptance(
    drafts: float, draft_tokens: float, accepted: float, accepted_per_position: Mapping[K, float]
) -> Acceptance[K]:
    positions = sorted(accepted_per_position, key=int)
    return Acceptance(
        rate=accepted / draft_tokens if draft_tokens > 0 else None,
        mean_length=1.0 + accepted / drafts if drafts > 0 else None,
        per_position={p: accepted_per_position[p] / drafts for p in positions} if drafts > 0 else {},
    )

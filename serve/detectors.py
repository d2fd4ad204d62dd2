"""Detectors for answers that are HTTP 200 but wrong: the failure mode of vLLM issues 40831, 40880,
52475 and 53180 (TurboQuant KV + speculative decoding + CUDA graphs), where /health stays 200 and
every answer is a repeating loop. Shared by the smoke suite and the readiness sidecar.

Each detector returns ``None`` for text that looks fine and a short human reason otherwise.
"""

from __future__ import annotations

import re
from collections import Counter

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def _tail_loop(text: str, *, max_period: int = 200, min_repeats: int = 3) -> tuple[str, int, int] | None:
    """The shortest unit that repeats back to back at the end of ``text``.

    Returns (unit, repeats, covered_chars) for the unit whose repetition covers the most characters,
    or None when nothing repeats ``min_repeats`` times."""
    best: tuple[str, int, int] | None = None
    n = len(text)
    for period in range(1, min(max_period, n // min_repeats) + 1):
        unit = text[n - period :]
        repeats = 1
        pos = n - period
        while pos - period >= 0 and text[pos - period : pos] == unit:
            repeats += 1
            pos -= period
        covered = repeats * period
        if repeats >= min_repeats and (best is None or covered > best[2]):
            best = (unit, repeats, covered)
    return best


def degeneration_reason(text: str, *, min_chars: int = 24) -> str | None:
    """Why ``text`` looks like a degenerate generation, or None.

    Flags: empty output; a unit repeated back to back over at least half of a text of ``min_chars``
    or more (``"the the the ..."``, ``"!!!!!!"``, a sentence looping); very low token diversity in a
    longer text (few distinct tokens, or most 4-grams seen before)."""
    stripped = text.strip()
    if not stripped:
        return "empty output"
    if len(stripped) >= min_chars:
        loop = _tail_loop(stripped)
        if loop is not None:
            unit, repeats, covered = loop
            if covered >= 0.5 * len(stripped) and not unit.isspace():
                shown = unit if len(unit) <= 40 else unit[:37] + "..."
                return f"{shown!r} repeats {repeats} times back to back ({covered} of {len(stripped)} chars)"
    tokens = _TOKEN.findall(stripped.lower())
    if len(tokens) >= 16:
        distinct = len(set(tokens)) / len(tokens)
        if distinct < 0.12:
            return f"only {len(set(tokens))} distinct tokens in {len(tokens)} ({distinct:.0%})"
        if len(tokens) >= 40:
            grams = Counter(tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3))
            repeated = sum(c - 1 for c in grams.values() if c > 1)
            share = repeated / max(1, len(tokens) - 3)
            if share > 0.6:
                return f"{share:.0%} of 4-grams are repeats"
    return None


def looks_degenerate(text: str) -> bool:
    return degeneration_reason(text) is not None

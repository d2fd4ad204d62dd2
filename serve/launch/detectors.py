"""Detectors for answers that are HTTP 200 but wrong: the failure mode of vLLM issues 40831, 40880,
52475 and 53180 (TurboQuant KV + speculative decoding + CUDA graphs), where /health stays 200, the
spec-decode metrics look normal (a loop is easy to draft, so acceptance even rises), and the answers
loop, or repeat tokens in place. Shared by the smoke suite and the readiness sidecar.

Each detector returns ``None`` for text that looks fine and a short human reason otherwise.
``degeneration_reason`` runs them all; tests/smoke/data/detector_samples.json holds the good and
degenerate samples they are tested on.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
# A word (or two or three) immediately repeated with only whitespace between ("for for x in in arr",
# "arr if arr if"), or an attribute name doubled ("parameter=parameter="): what vLLM issue 40831 shows
# when drafted tokens are accepted twice.
_DOUBLED = re.compile(r"\b([^\W\d_]{2,}(?:\s+[^\W\d_]{2,}){0,2})\s+\1\b|\b([^\W\d_]{2,})=\2=", re.UNICODE)
_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)


def _tail_loop(text: str, *, max_period: int = 400, min_repeats: int = 3) -> tuple[str, int, int] | None:
    """The unit that repeats back to back at the end of ``text`` (a loop cut by max_tokens ends
    mid-unit, and any suffix of a periodic text repeats too, so the end is where to look).

    Returns (unit, repeats, covered_chars) for the unit whose repetition covers the most characters,
    or None when nothing repeats ``min_repeats`` times."""
    best: tuple[str, int, int] | None = None
    n = len(text)
    for period in range(1, min(max_period, n // min_repeats) + 1):
        unit = text[n - period :]
        if text[n - 2 * period : n - period] != unit:
            continue
        repeats = 2
        pos = n - 2 * period
        while pos - period >= 0 and text[pos - period : pos] == unit:
            repeats += 1
            pos -= period
        covered = repeats * period
        if repeats >= min_repeats and (best is None or covered > best[2]):
            best = (unit, repeats, covered)
    return best


def empty_reason(text: str) -> str | None:
    return "empty output" if not text.strip() else None


def loop_reason(text: str, *, min_chars: int = 24) -> str | None:
    """A unit repeated back to back at the end: over half of the text (``"!!!!"``, ``"the the the"``,
    a sentence looping), or many times over a good start ("coherent, then ``Need implement.`` to
    max_tokens")."""
    stripped = text.strip()
    if len(stripped) < min_chars:
        return None
    loop = _tail_loop(stripped)
    if loop is None:
        return None
    unit, repeats, covered = loop
    if unit.isspace():
        return None
    dominant = covered >= 0.5 * len(stripped)
    # A separator line ("-----") or a closing "}}}}" repeats a short unit a few times; a loop that
    # took over the answer repeats a real phrase many times.
    persistent = repeats >= 6 and covered >= 80 and len(unit.strip()) >= 2
    if not (dominant or persistent):
        return None
    shown = unit if len(unit) <= 40 else unit[:37] + "..."
    return f"{shown!r} repeats {repeats} times back to back ({covered} of {len(stripped)} chars)"


def low_diversity_reason(text: str) -> str | None:
    """Few distinct tokens in a longer text, or most 4-grams seen before: a loop that is not clean
    enough to be periodic (a handful of tokens shuffled, a paragraph with small variations)."""
    tokens = _TOKEN.findall(text.strip().lower())
    if len(tokens) < 16:
        return None
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


def doubled_words_reason(text: str) -> str | None:
    """Words duplicated in place ("for for x in in arr", "<parameter=parameter=unit>"): the token
    corruption of vLLM issue 40831 that leaves text almost readable. English doubles a word now and
    then ("that that", "had had"); three or more, and one in fifty words, is not prose."""
    hits = [m.group(0) for m in _DOUBLED.finditer(text)]
    if len(hits) < 3:
        return None
    words = len(_WORD.findall(text))
    if len(hits) < 0.02 * words:
        return None
    shown = ", ".join(repr(h) for h in hits[:3])
    return f"{len(hits)} words doubled in place in {words} ({shown})"


DETECTORS: dict[str, Callable[[str], str | None]] = {
    "empty": empty_reason,
    "loop": loop_reason,
    "diversity": low_diversity_reason,
    "doubled": doubled_words_reason,
}


def degeneration_reason(text: str, *, min_chars: int = 24) -> str | None:
    """Why ``text`` looks like a degenerate generation, or None (the first detector that fires).
    ``min_chars``: shorter texts are never called a loop."""
    for name, detect in DETECTORS.items():
        reason = loop_reason(text, min_chars=min_chars) if name == "loop" else detect(text)
        if reason is not None:
            return reason
    return None


def looks_degenerate(text: str) -> bool:
    return degeneration_reason(text) is not None

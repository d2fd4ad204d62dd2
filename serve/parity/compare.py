"""Greedy parity, the pure part: two token-id sequences per prompt in, divergence and agreement out.

Definitions (the report and the threshold use exactly these):

- first divergence: the first position where the two sequences differ, or where one has ended and
  the other goes on; ``None`` when they are identical (same ids, same length).
- positions compared: up to the shorter length, plus the one position where one side ended while the
  other went on (that position counts as unequal: stopping is itself an output).
- token agreement: positions equal / positions compared, over all prompts.
- prompt agreement: prompts whose sequences are identical / prompts.
- divergence gap (when the servers sent top logprobs): at the first divergence, how much more likely
  each side found its own token than the other side's, in nats, the larger of the two. Near 0 means
  a near tie that the two configurations rounded differently (both sides saw the two candidates as
  equally likely); a large gap is a real difference. When the other side's token is not among a side's
  top candidates the gap is a lower bound (own token minus the last candidate listed).

The gate is on token agreement: ``passed`` when it is at least the threshold. With the default 1.0 that
means every prompt identical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_THRESHOLD = 1.0


@dataclass(frozen=True)
class PromptParity:
    index: int
    prompt: str
    tokens_a: tuple[int, ...]
    tokens_b: tuple[int, ...]
    first_divergence: int | None
    equal_positions: int
    compared_positions: int
    text_a: str = ""
    text_b: str = ""
    divergence_gap: float | None = None
    gap_is_lower_bound: bool = False

    @property
    def identical(self) -> bool:
        return self.first_divergence is None

    @property
    def agreement(self) -> float | None:
        return self.equal_positions / self.compared_positions if self.compared_positions else None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "prompt": self.prompt,
            "identical": self.identical,
            "first_divergence": self.first_divergence,
            "equal_positions": self.equal_positions,
            "compared_positions": self.compared_positions,
            "agreement": self.agreement,
            "divergence_gap": self.divergence_gap,
            "gap_is_lower_bound": self.gap_is_lower_bound,
            "tokens_a": list(self.tokens_a),
            "tokens_b": list(self.tokens_b),
            "text_a": self.text_a,
            "text_b": self.text_b,
        }


@dataclass(frozen=True)
class ParityResult:
    prompts: tuple[PromptParity, ...]
    threshold: float

    @property
    def equal_positions(self) -> int:
        return sum(p.equal_positions for p in self.prompts)

    @property
    def compared_positions(self) -> int:
        return sum(p.compared_positions for p in self.prompts)

    @property
    def token_agreement(self) -> float | None:
        """None when nothing was generated on either side: there is nothing to agree on."""
        compared = self.compared_positions
        return self.equal_positions / compared if compared else None

    @property
    def identical_prompts(self) -> int:
        return sum(p.identical for p in self.prompts)

    @property
    def prompt_agreement(self) -> float | None:
        return self.identical_prompts / len(self.prompts) if self.prompts else None

    @property
    def passed(self) -> bool:
        agreement = self.token_agreement
        return agreement is not None and agreement >= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "passed": self.passed,
            "token_agreement": self.token_agreement,
            "equal_positions": self.equal_positions,
            "compared_positions": self.compared_positions,
            "prompt_agreement": self.prompt_agreement,
            "identical_prompts": self.identical_prompts,
            "prompts": [p.to_json() for p in self.prompts],
        }


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


TopLogprobs = Sequence[Mapping[int, float]]


def _side_gap(top: Mapping[int, float], own: int, other: int) -> tuple[float, bool] | None:
    if own not in top:
        return None
    if other in top:
        return top[own] - top[other], False
    return top[own] - min(top.values()), True


def divergence_gap(
    position: int | None,
    tokens_a: Sequence[int],
    tokens_b: Sequence[int],
    top_a: TopLogprobs,
    top_b: TopLogprobs,
) -> tuple[float | None, bool]:
    """(gap, is_lower_bound) at the first divergence; (None, False) when there is none, it is a length
    difference (one side stopped), or a side sent no logprobs for that position."""
    if position is None or position >= min(len(tokens_a), len(tokens_b)):
        return None, False
    if position >= len(top_a) or position >= len(top_b):
        return None, False
    tok_a, tok_b = tokens_a[position], tokens_b[position]
    gaps = [_side_gap(top_a[position], tok_a, tok_b), _side_gap(top_b[position], tok_b, tok_a)]
    if any(g is None for g in gaps):
        return None, False
    known = [g for g in gaps if g is not None]
    return max(g for g, _ in known), any(bound for _, bound in known)


def compare_prompt(
    index: int,
    prompt: str,
    tokens_a: Sequence[int],
    tokens_b: Sequence[int],
    *,
    text_a: str = "",
    text_b: str = "",
    top_a: TopLogprobs = (),
    top_b: TopLogprobs = (),
) -> PromptParity:
    shorter = min(len(tokens_a), len(tokens_b))
    equal = sum(1 for x, y in zip(tokens_a, tokens_b, strict=False) if x == y)
    compared = shorter + (1 if len(tokens_a) != len(tokens_b) else 0)
    position = first_divergence(tokens_a, tokens_b)
    gap, bound = divergence_gap(position, tokens_a, tokens_b, top_a, top_b)
    return PromptParity(
        index=index,
        prompt=prompt,
        tokens_a=tuple(tokens_a),
        tokens_b=tuple(tokens_b),
        first_divergence=position,
        equal_positions=equal,
        compared_positions=compared,
        text_a=text_a,
        text_b=text_b,
        divergence_gap=gap,
        gap_is_lower_bound=bound,
    )


def check_threshold(value: float) -> float:
    """The threshold is a fraction; anything outside [0, 1] is a typo (e.g. 95 for 0.95)."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{value}: a fraction between 0 and 1 (e.g. 0.95), not a percentage")
    return value


def compare(
    prompts: Sequence[str],
    side_a: Sequence[Sequence[int]],
    side_b: Sequence[Sequence[int]],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    texts_a: Sequence[str] | None = None,
    texts_b: Sequence[str] | None = None,
    tops_a: Sequence[TopLogprobs] | None = None,
    tops_b: Sequence[TopLogprobs] | None = None,
) -> ParityResult:
    if not (len(prompts) == len(side_a) == len(side_b)):
        raise ValueError(f"{len(prompts)} prompts but {len(side_a)} answers from A and {len(side_b)} from B")
    check_threshold(threshold)
    texts_a = texts_a or [""] * len(prompts)
    texts_b = texts_b or [""] * len(prompts)
    no_tops: list[TopLogprobs] = [()] * len(prompts)
    rows = zip(prompts, side_a, side_b, texts_a, texts_b, tops_a or no_tops, tops_b or no_tops, strict=True)
    return ParityResult(
        prompts=tuple(
            compare_prompt(i, p, a, b, text_a=ta, text_b=tb, top_a=xa, top_b=xb)
            for i, (p, a, b, ta, tb, xa, xb) in enumerate(rows)
        ),
        threshold=threshold,
    )


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table(result: ParityResult, *, prompt_width: int = 40) -> str:
    """A markdown table, one row per prompt, then the totals and the verdict."""
    lines = [
        "| # | prompt | tokens A | tokens B | first divergence | gap (nats) | agreement |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in result.prompts:
        div = "none" if p.first_divergence is None else str(p.first_divergence)
        agree = "n/a" if p.agreement is None else f"{p.agreement:.3f}"
        gap = (
            "" if p.divergence_gap is None else f"{'≥' if p.gap_is_lower_bound else ''}{p.divergence_gap:.4f}"
        )
        lines.append(
            f"| {p.index} | {_short(p.prompt, prompt_width).replace('|', '/')} | {len(p.tokens_a)} "
            f"| {len(p.tokens_b)} | {div} | {gap} | {agree} |"
        )
    lines.append("")
    lines.append(summary(result))
    return "\n".join(lines)


def summary(result: ParityResult) -> str:
    agreement = result.token_agreement
    token = (
        "no tokens generated on either side"
        if agreement is None
        else f"{agreement:.4f} ({result.equal_positions}/{result.compared_positions} positions)"
    )
    verdict = "PASS" if result.passed else "FAIL"
    return (
        f"token agreement {token}; prompts identical {result.identical_prompts}/{len(result.prompts)}; "
        f"threshold {result.threshold:g}: {verdict}"
    )

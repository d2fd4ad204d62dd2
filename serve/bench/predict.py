"""A PREDICTION of MTP speculative decoding's speed at a given per-position acceptance, from three
measurements on one server sizing (``python -m serve bench --predict ...``).

Inputs, all measured at the same concurrency with the same engine and flags:

- ``tpot_nospec``: TPOT without speculative decoding (s per output token per stream);
- ``tpot_reject``: TPOT with MTP n when nothing is accepted (the random-weight synthetic checkpoint): every
  target step emits 1 token, so this is the cost of one step at accepted length 0;
- ``tpot_accept``: TPOT with MTP n when everything is accepted (``synth-model --agreeing-mtp``): every step
  emits n + 1 tokens, so one step costs ``(n + 1) * tpot_accept``.

What it assumes (and so what it can get wrong):

1. A step's cost is linear in the number of drafts accepted, between the two measured brackets:
   ``step(k) = step_0 + (step_n - step_0) * k / n`` for k accepted of n. (The drafter always drafts n
   and the verifier always checks n + 1 positions; what grows with k is the extra work of accepted
   tokens: sampling, state updates, the next draft's inputs. Linear is the simplest curve through the
   two ends, not a measured one.)
2. The expected step cost is the step cost at the expected accepted length (true under 1: it is linear).
3. Acceptance is independent of the workload otherwise (prompt, length, concurrency).

Per-position rates come in two kinds. vLLM's own (its log's "Per-position acceptance rate" and the
``..._per_pos`` counters over ``num_drafts``, as this kit's bench reports them) are MARGINAL: position k
is counted only when positions 1..k-1 were accepted too, so the expected accepted length is their sum.
CONDITIONAL rates (P(k accepted | 1..k-1 accepted)) multiply: ``sum_k prod_{j<=k} a_j``. Which one a
user's "0.85 / 0.63 / 0.44" is must be said; the default here is marginal, vLLM's.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from serve.errors import KitError

# What users report for Qwen3.6-27B with MTP 3 (vLLM's per-position printout: marginal)
USERS_ACCEPTANCE = (0.85, 0.63, 0.44)
AcceptanceKind = Literal["marginal", "conditional"]
KINDS: tuple[AcceptanceKind, ...] = ("marginal", "conditional")


@dataclass(frozen=True)
class Prediction:
    num_speculative_tokens: int
    acceptance: tuple[float, ...]
    kind: AcceptanceKind
    expected_accepted: float  # drafts accepted per step
    tokens_per_step: float  # 1 + expected_accepted
    step_s: float  # predicted cost of one target step
    tpot_s: float  # step_s / tokens_per_step
    tok_s_per_stream: float
    tok_s: float  # all streams
    speedup: float  # over no speculation (tpot_nospec / tpot)
    concurrency: int
    # the brackets, for the label
    tpot_nospec_s: float
    step_reject_s: float
    step_accept_s: float


def expected_accepted(acceptance: Sequence[float], kind: AcceptanceKind = "marginal") -> float:
    """Drafts accepted per step. marginal: sum of the rates (they must not increase: position k is
    accepted only with all before it); conditional: sum of their running products."""
    rates = [float(a) for a in acceptance]
    if not rates or any(not 0.0 <= a <= 1.0 for a in rates):
        raise KitError(f"bench --predict: acceptance rates must be in 0..1, got {rates}")
    if kind == "marginal":
        if any(b > a + 1e-12 for a, b in itertools.pairwise(rates)):
            raise KitError(
                f"bench --predict: marginal per-position rates {rates} increase; a later position is accepted "
                "only with every earlier one (give --acceptance-kind conditional if they are conditional)"
            )
        return sum(rates)
    if kind == "conditional":
        total, running = 0.0, 1.0
        for a in rates:
            running *= a
            total += running
        return total
    raise KitError(f"bench --predict: --acceptance-kind {kind!r} is not one of {', '.join(KINDS)}")


def predict(
    *,
    tpot_nospec_s: float,
    tpot_reject_s: float,
    tpot_accept_s: float,
    num_speculative_tokens: int,
    acceptance: Sequence[float] = USERS_ACCEPTANCE,
    kind: AcceptanceKind = "marginal",
    concurrency: int = 1,
) -> Prediction:
    """tok/s and TPOT of MTP n at ``acceptance``, interpolated between the 0% and 100% brackets (see the
    module docstring for the assumptions). Pure."""
    n = int(num_speculative_tokens)
    if n < 1:
        raise KitError(f"bench --predict: --mtp must be 1 or more, got {n}")
    if len(acceptance) != n:
        raise KitError(
            f"bench --predict: {len(acceptance)} acceptance rates for MTP {n}; give one per position"
        )
    for name, value in (("no-spec", tpot_nospec_s), ("0%", tpot_reject_s), ("100%", tpot_accept_s)):
        if not value > 0:
            raise KitError(f"bench --predict: the {name} TPOT must be a positive time, got {value}")
    if concurrency < 1:
        raise KitError(f"bench --predict: --concurrency must be 1 or more, got {concurrency}")
    accepted = expected_accepted(acceptance, kind)
    step_reject = tpot_reject_s  # one token per step
    step_accept = tpot_accept_s * (n + 1)  # n + 1 tokens per step
    step = step_reject + (step_accept - step_reject) * accepted / n
    tokens = 1.0 + accepted
    tpot = step / tokens
    return Prediction(
        num_speculative_tokens=n,
        acceptance=tuple(float(a) for a in acceptance),
        kind=kind,
        expected_accepted=accepted,
        tokens_per_step=tokens,
        step_s=step,
        tpot_s=tpot,
        tok_s_per_stream=1.0 / tpot,
        tok_s=concurrency / tpot,
        speedup=tpot_nospec_s / tpot,
        concurrency=concurrency,
        tpot_nospec_s=tpot_nospec_s,
        step_reject_s=step_reject,
        step_accept_s=step_accept,
    )


def format_prediction(p: Prediction) -> str:
    rates = " / ".join(f"{a:.2f}" for a in p.acceptance)
    return "\n".join(
        [
            f"PREDICTION (not a measurement): MTP {p.num_speculative_tokens} at {p.kind} per-position acceptance "
            f"{rates}, concurrency {p.concurrency}",
            f"  brackets measured: no-spec TPOT {p.tpot_nospec_s * 1e3:.2f} ms; one MTP step "
            f"{p.step_reject_s * 1e3:.2f} ms at 0% accepted, {p.step_accept_s * 1e3:.2f} ms at 100%",
            f"  assumes: step cost linear in accepted drafts between the brackets "
            f"({p.expected_accepted:.2f} of {p.num_speculative_tokens} accepted per step)",
            f"  predicted: {p.tokens_per_step:.2f} tokens per step, step {p.step_s * 1e3:.2f} ms, "
            f"TPOT {p.tpot_s * 1e3:.2f} ms, {p.tok_s_per_stream:.1f} tok/s per stream, {p.tok_s:.1f} tok/s in all, "
            f"{p.speedup:.2f}x no-spec",
        ]
    )

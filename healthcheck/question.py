"""What the readiness probe asks, and which answer it requires.

The probe's chat completion asks a question with one known answer (the capital of France by default)
and the answer must match a pattern; a miss is the not-ready reason ``wrong_answer``. Random-weight
models cannot answer, so their profiles turn the check off with a reason that /readyz and the metrics
show (``answer_check: "off: random weights ..."``); the degeneration check applies either way.

Each field comes from, in order: the sidecar's flag or environment variable (``--probe-expect``,
``--probe-expect-off``, ``--probe-prompt``, ``--probe-max-tokens``, ``--probe-extra-body``), then the
``readiness`` block of plan.json (the profile's readiness layer, serve/launch/profile.py), then the defaults
of that layer. Without a readiness block and without ``--probe-expect`` the answer is not checked: the
sidecar does not know which model it watches, and says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from serve.launch.profile import ReadinessLayer

# max_tokens when the answer is not checked: the shared loop detector judges texts of 24+ characters
# only, and a looping 1-character token must reach that.
UNCHECKED_MAX_TOKENS = 32
NO_PLAN_OFF_REASON = "no readiness block in plan.json and no --probe-expect: the answer is not checked"


def compile_expect(pattern: str) -> re.Pattern[str]:
    """The pattern compiled, after the profile schema's own checks (length, syntax, not matching the
    empty string); ValueError naming the problem otherwise."""
    try:
        ReadinessLayer.model_validate({"expect": pattern})
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    return re.compile(pattern)


@dataclass(frozen=True)
class ProbeQuestion:
    prompt: str
    max_tokens: int
    expect: re.Pattern[str] | None = None
    off_reason: str | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    source: str = "default"  # where the answer check came from: flag | plan | default

    @property
    def answer_check(self) -> str:
        """``on: PATTERN`` or ``off: REASON``: the /readyz field and the plan info metric's label."""
        if self.expect is not None:
            return f"on: {self.expect.pattern}"
        return f"off: {self.off_reason or 'no reason given'}"

    def wrong_answer(self, text: str) -> str | None:
        """None when the answer passes (or is not checked); else the detail of the miss."""
        if self.expect is None or self.expect.search(text):
            return None
        return f"the answer does not match {self.expect.pattern!r}: {text[:120]!r}"


def from_plan_block(block: Any) -> tuple[ReadinessLayer | None, str | None]:
    """The plan's readiness block validated by the profile schema's own model: (layer, None), or
    (None, why) when the block is absent or invalid (a hand-edited plan.json)."""
    if block is None:
        return None, None
    if not isinstance(block, dict):
        return None, f"plan.json readiness is {type(block).__name__}, not an object"
    try:
        return ReadinessLayer.model_validate(block), None
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        return None, f"plan.json readiness.{key} is invalid: {first['msg']}"


def resolve_question(
    *,
    prompt: str | None,
    max_tokens: int | None,
    extra_body: dict[str, Any] | None,
    expect: str | None,
    expect_off: str | None,
    plan_block: Any,
) -> ProbeQuestion:
    """Flags (the first five arguments; None = not set) over the plan's readiness block over defaults.
    Flag values were validated with the settings; a bad plan block turns the check off, saying why."""
    layer, problem = from_plan_block(plan_block)
    defaults = ReadinessLayer.model_construct()  # the schema's defaults, nothing validated twice
    base = layer or defaults
    if expect is not None:
        pattern, off_reason, source = compile_expect(expect), None, "flag"
    elif expect_off is not None:
        pattern, off_reason, source = None, expect_off, "flag"
    elif layer is not None:
        pattern = None if layer.expect is None else compile_expect(layer.expect)
        off_reason, source = layer.off_reason, "plan"
    else:
        pattern, off_reason, source = None, problem or NO_PLAN_OFF_REASON, "default"
    if max_tokens is None:
        max_tokens = base.max_tokens if layer is not None else UNCHECKED_MAX_TOKENS
    return ProbeQuestion(
        prompt=prompt if prompt is not None else base.prompt,
        max_tokens=max_tokens,
        expect=pattern,
        off_reason=off_reason,
        extra_body=extra_body if extra_body is not None else dict(base.extra_body),
        source=source,
    )

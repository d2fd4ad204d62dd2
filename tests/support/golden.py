"""Render every shipped profile on every shipped GPU (and none) with every shipped engine: the
outcome (command, decisions, warnings, or the refusal) is what the golden files hold."""

from __future__ import annotations

import functools
from typing import Any

from serve.errors import KitError
from serve.launch import config_files, probes
from serve.launch.plan import Plan
from serve.launch.planning import plan_for
from serve.launch.render import command_line, render_argv

GPUS = [*config_files.shipped("gpus"), "none"]
# Engines whose renders would repeat another engine's line for line, left out of the golden files to keep
# them reviewable; tests/unit/test_golden.py checks that they still render the same. vllm-0.32 rendered as
# vllm-0.33 until the memory planner counted 0.33's GDN prefill-checkpoint block on Hopper and Blackwell
# (serve.launch.memory_fit.gdn_prefill_checkpoints; 0.32's GDN layer has none).
RENDERS_AS: dict[str, str] = {}
GOLDEN_ENGINES = [e for e in config_files.shipped("engines") if e not in RENDERS_AS]

# Parsed once per session: an engine description holds ~500 architectures, and reading it again for every
# profile x GPU took most of the golden renders' time. plan() only reads the facts.
engine_facts = functools.cache(probes.engine_facts)


def described_plan(profile: str, gpu: Any, engine: str, sets: tuple[str, ...]) -> Plan:
    """The plan from the model description, never from whatever model directory this checkout holds; the
    bare plan (no GPU line, no shipped-profile hint on a refusal). ``gpu``: a name or a TargetGpu.
    KitError on a refusal."""
    return plan_for(
        profile,
        sets=sets,
        environ={},
        gpu=gpu,
        engine=engine_facts(engine),
        described_model=True,
        explain_gpu=False,
    ).plan


def outcome(
    profile: str, gpu: str, engine: str, sets: list[str] | None = None
) -> tuple[str, list[str] | None]:
    """(text for the golden file, argv or None when refused); ``sets`` as typed after ``--set``.
    Computed once per session (the golden, parser and rule tests ask for the same renders)."""
    text, argv = _outcome(profile, gpu, engine, tuple(sets or ()))
    return text, None if argv is None else list(argv)


@functools.cache
def _outcome(
    profile: str, gpu: str, engine: str, sets: tuple[str, ...]
) -> tuple[str, tuple[str, ...] | None]:
    try:
        result = described_plan(profile, gpu, engine, sets)
    except KitError as exc:
        return f"REFUSED: {exc}\n", None
    argv = render_argv(result)
    lines = [command_line(argv)]
    for d in list(result.decisions.values()) + list(result.env.values()):
        if d.source == "default":
            continue
        tag = f"{d.source}:{d.rule}" if d.rule else d.source
        lines.append(f"  {d.setting} = {d.value!r}  [{tag}]")
    lines += [f"  ! {w}" for w in result.warnings]
    return "\n".join(lines) + "\n", tuple(argv)


def golden_text(profile: str) -> str:
    left_out = f" (but {', '.join(RENDERS_AS)}, which\n# render as {', '.join(RENDERS_AS.values())})"
    parts = [
        f"# Golden renders of profile {profile}: every shipped GPU x engine{left_out * bool(RENDERS_AS)}"
        ". Regenerate with\n"
        "# UPDATE_GOLDEN=1 pytest tests/unit/test_golden.py, then review the diff.\n"
    ]
    for engine in GOLDEN_ENGINES:
        for gpu in GPUS:
            text, _ = outcome(profile, gpu, engine)
            parts.append(f"\n## --gpu {gpu} --engine {engine}\n{text}")
    return "".join(parts)

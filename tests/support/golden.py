"""Render every shipped profile on every shipped GPU (and none) with every shipped engine: the
outcome (command, decisions, warnings, or the refusal) is what the golden files hold."""

from __future__ import annotations

from serve import config_files, probes
from serve.errors import KitError
from serve.layering import load_profile
from serve.plan import plan
from serve.render import command_line, render_argv

GPUS = [*config_files.shipped("gpus"), "none"]


def outcome(profile: str, gpu: str, engine: str) -> tuple[str, list[str] | None]:
    """(text for the golden file, argv or None when refused)."""
    try:
        loaded = load_profile(profile, environ={})
        gpu_facts = None if gpu == "none" else probes.gpu_facts(gpu)
        # Facts from the model description, never from whatever model directory this checkout holds.
        layer = loaded.profile.model
        if layer.facts:
            layer = layer.model_copy(update={"path": None})
        result = plan(
            loaded,
            gpu_facts,
            probes.engine_facts(engine),
            probes.model_facts(layer, profile_source=config_files.display(loaded.path)),
        )
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
    return "\n".join(lines) + "\n", argv


def golden_text(profile: str) -> str:
    parts = [
        f"# Golden renders of profile {profile}: every shipped GPU x engine. Regenerate with\n"
        "# UPDATE_GOLDEN=1 pytest tests/unit/test_golden.py, then review the diff.\n"
    ]
    for engine in config_files.shipped("engines"):
        for gpu in GPUS:
            text, _ = outcome(profile, gpu, engine)
            parts.append(f"\n## --gpu {gpu} --engine {engine}\n{text}")
    return "".join(parts)

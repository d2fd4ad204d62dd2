"""Property-based fuzzing of the launcher's inputs (issue 16): profile YAML, ``--set`` and ``SERVE_SET``
strings and the environment the launcher reads go through load_profile + plan + render + the plan document,
and only two outcomes may ever come out: success, or a KitError whose message is one line. Any other
exception (a traceback for the user) fails the test with the input that caused it.

Real loader, planner and renderer; shipped GPU and engine descriptions. Bounded: a fixed number of examples
per property and a per-example deadline, about 20 s in all on the 2-core CI machine (measured figures in
the docstring of each property are what `pytest --durations` showed). The checkpoint inputs (safetensors
headers, config.json) are fuzzed beside their readers (tests/unit/test_safetensors_index.py and friends).
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from serve.errors import KitError  # noqa: E402
from serve.launch import config_files, probes  # noqa: E402
from serve.launch.layering import load_profile  # noqa: E402
from serve.launch.plan import plan  # noqa: E402
from serve.launch.profile import field_paths  # noqa: E402
from serve.launch.render import plan_document, render_argv  # noqa: E402

FUZZ = settings(
    max_examples=int(os.environ.get("KIT_FUZZ_EXAMPLES", "150")),
    deadline=3000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
KEYS = sorted(field_paths())
SHIPPED = config_files.shipped("profiles")
_DIR = tempfile.TemporaryDirectory(prefix="kit-fuzz-")


@functools.cache
def _engine(name: str):
    return probes.engine_facts(name)


@functools.cache
def _gpu(name: str):
    return probes.gpu_facts(name)


def _outcome(profile: str, sets: list[str], environ: dict[str, str], gpu: str | None, engine: str) -> None:
    """The launcher's path from inputs to the plan document; raises only what the launcher would."""
    loaded = load_profile(profile, cli_sets=sets, environ=environ)
    model = probes.model_facts(loaded.profile.model, profile_source=config_files.display(loaded.path))
    result = plan(loaded, None if gpu is None else _gpu(gpu), _engine(engine), model)
    render_argv(result)
    plan_document(result)


def _check(profile: str, sets: list[str], environ: dict[str, str], gpu: str | None, engine: str) -> None:
    try:
        _outcome(profile, sets, environ, gpu, engine)
    except KitError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"KitError is not one line: {message!r}"
        assert "Traceback" not in message


# ------------------------------------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["auto", "-x", "--help", "0.0.0.0", "127.0.0.1", "fp8", "mtp", "\x00", "a=b", "1e20", "~"]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8) | st.sampled_from(KEYS), inner, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def profile_data(draw: Any) -> dict[str, Any]:
    """A profile built from the schema's own keys with arbitrary values, on top of a shipped profile or not."""
    data: dict[str, Any] = {}
    if draw(st.booleans()):
        data["extends"] = draw(st.sampled_from(SHIPPED))
    else:
        data["model"] = {"id": draw(st.sampled_from(["Lorbus/Qwen3.6-27B-int4-AutoRound", "x", "-x"]))}
        data["model"]["facts"] = draw(st.sampled_from(["qwen3.6-27b-int4-autoround", "tiny-qwen3", "nope"]))
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=5)):
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            node[part] = child = child if isinstance(child, dict) else {}
            node = child
        node[leaf] = draw(values)
    return data


def _mutate(text: str, draw: Any) -> str:
    """Textual damage YAML dumping cannot produce: duplicated lines, aliases, tabs, stray bytes."""
    lines = text.splitlines(keepends=True) or [""]
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["dup", "drop", "junk", "alias"]))
        if op == "dup":
            lines.insert(i, lines[i])
        elif op == "drop":
            lines.pop(i) if len(lines) > 1 else None
        elif op == "junk":
            lines.insert(
                i,
                draw(st.sampled_from(["\t\n", "- x\n", "? [\n", "*a\n", "x: &a [*a]\n", ": :\n", "%TAG\n"])),
            )
        else:
            lines.insert(i, "a: &a [x, x, x]\nb: &b [*a, *a, *a]\n")
    return "".join(lines)


@st.composite
def profile_text(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["structured", "mutated", "raw"]))
    if kind == "raw":
        return draw(st.binary(max_size=200)) if draw(st.booleans()) else draw(st.text(max_size=200)).encode()
    text = yaml.safe_dump(draw(profile_data()), allow_unicode=True)
    return (_mutate(text, draw) if kind == "mutated" else text).encode("utf-8", "surrogatepass")


set_strings = st.one_of(
    st.text(max_size=40),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=30)),
    st.builds(
        lambda k, v: f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}",
        st.sampled_from(KEYS),
        values,
    ),
)
environs = st.fixed_dictionaries(
    {},
    optional={
        "SERVE_SET": st.lists(set_strings, max_size=3).map(";".join),
        "VLLM_API_KEY": st.sampled_from(["", " ", "k"]),
        "SERVE_PUBLISHED_BIND": st.sampled_from(["", "127.0.0.1", "0.0.0.0", "::", "-x", "bogus host"]),
    },
)
facts = st.sampled_from(
    [("rtx5090", "vllm-0.33"), ("h100", "vllm-0.24"), (None, "vllm-cpu-0.32"), ("rtx5090", "tq-fork")]
)


# ------------------------------------------------------------------------------------------- properties


@FUZZ
@given(text=profile_text(), sets=st.lists(set_strings, max_size=2), environ=environs, target=facts)
def test_profile_yaml_gives_success_or_one_line(text, sets, environ, target):
    path = Path(_DIR.name) / "fuzz.yaml"
    path.write_bytes(text)
    _check(str(path), sets, environ, *target)


@FUZZ
@given(
    profile=st.sampled_from(SHIPPED), sets=st.lists(set_strings, max_size=4), environ=environs, target=facts
)
def test_set_strings_and_environment_give_success_or_one_line(profile, sets, environ, target):
    _check(profile, sets, environ, *target)

"""Finding and reading the kit's YAML files (profiles, GPU, engine and model descriptions), and turning
pydantic errors into one line that names the file, key and value and says what to do."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from serve.errors import KitError

KINDS = {"profiles": "profile", "gpus": "GPU", "engines": "engine", "models": "model"}


def config_dir() -> Path:
    """``$SERVE_CONFIG_DIR``, else the ``config/`` folder beside the ``serve`` package (a checkout or
    the container's /app)."""
    env = os.environ.get("SERVE_CONFIG_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "config"


def display(path: Path) -> str:
    """A path as shown in messages and plans: relative to the kit's root when it lies inside it, so
    output does not depend on where the kit is checked out."""
    root = config_dir().resolve().parent
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def shipped(kind: str) -> list[str]:
    folder = config_dir() / kind
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def resolve(kind: str, name_or_path: str, *, option: str) -> Path:
    """A shipped name (``rtx5090``) or a path to a YAML file -> the file. ``option`` names the flag or
    key the value came from, for the error message."""
    looks_like_path = "/" in name_or_path or name_or_path.endswith((".yaml", ".yml"))
    if looks_like_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise KitError(
                f"{option} {name_or_path}: no such file; give a path to a YAML file or a shipped name"
            )
        return path
    path = config_dir() / kind / f"{name_or_path}.yaml"
    if path.is_file():
        return path
    names = shipped(kind)
    hint = difflib.get_close_matches(name_or_path, names, n=1)
    did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
    raise KitError(
        f"{option} {name_or_path!r}: no {KINDS[kind]} of that name; {did_you_mean}"
        f"shipped: {', '.join(names) or 'none'} (or give a path to a YAML file)"
    )


def read_yaml(path: Path) -> dict[str, Any]:
    shown = display(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise KitError(f"{shown}: cannot read ({exc.strerror}); check the path and its permissions") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise KitError(f"{shown}:{where}: not valid YAML ({problem}); fix the syntax there") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KitError(f"{shown}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def validation_message(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """The first error of ``exc`` as one actionable line (and how many more there are)."""
    errors = exc.errors()
    first = errors[0]
    key = ".".join(str(p) for p in first["loc"])
    value = first.get("input")
    kind = first["type"]
    if kind == "extra_forbidden":
        parent = first["loc"][:-1]
        known = _known_keys(model, parent)
        hint = difflib.get_close_matches(str(first["loc"][-1]), known, n=1)
        suggestion = f"did you mean {'.'.join([*map(str, parent), hint[0]])!r}? " if hint else ""
        msg = f"{source}: unknown key {key!r}; {suggestion}known keys here: {', '.join(known)}"
    elif kind == "missing":
        msg = f"{source}: key {key!r} is required; add it"
    else:
        shown = _short(value)
        msg = f"{source}: {key} = {shown}: {first['msg']}"
    more = len(errors) - 1
    return msg + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _known_keys(model: type[BaseModel], parent: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in parent:
        info = current.model_fields.get(str(part)) if hasattr(current, "model_fields") else None
        if info is None:
            return []
        from serve.launch.profile import _submodel

        current = _submodel(info.annotation)
        if current is None:
            return []
    return list(current.model_fields)


def parse(model: type[BaseModel], data: dict[str, Any], source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise KitError(validation_message(exc, model, source)) from None

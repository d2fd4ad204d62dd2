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


MAX_FILE_BYTES = 1 << 20
"""A profile or description is a few KiB; the engine descriptions, the largest, are under 40 KiB."""
MAX_NODES = 100_000
"""YAML nodes after alias expansion: a 559-byte alias bomb expands to billions and ran 84 s into a
MemoryError before this bound (issue 16)."""
MAX_DEPTH = 32
"""Nesting depth of mappings and lists; a profile needs 4."""


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, mark: Any, first: Any) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.problem_mark, self.first_mark = key, mark, first


class _KitLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last silently, so a
    second ``serving:`` block replaced the first (and its host fell back to the default)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark, seen[key])
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def _bounded(node: yaml.Node) -> str | None:
    """Why the node graph is too big or too deep once aliases are expanded, or None. Sizes are
    memoised per node, so an alias bomb costs its unique nodes, not its expansion."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise _TooBig(f"nested deeper than {MAX_DEPTH} levels")
        if id(n) in sizes:
            return sizes[id(n)]
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(child, depth + 1) for child in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in n.value)
        if total > MAX_NODES:
            raise _TooBig(f"more than {MAX_NODES:,} values once its aliases (*name) are expanded")
        sizes[id(n)] = total
        return total

    try:
        size(node, 0)
    except _TooBig as exc:
        return str(exc)
    return None


class _TooBig(Exception):
    pass


def load_yaml_text(text: str, source: str) -> Any:
    """YAML text -> data through the kit's loader (safe, duplicate keys refused, bounded expansion
    and depth). ``source`` starts the error message (a file, ``--set KEY=...``)."""
    loader: _KitLoader | None = None
    try:
        loader = _KitLoader(text)  # its reader refuses control characters already
        node = loader.get_single_node()
        if node is None:
            return None
        problem = _bounded(node)
        if problem:
            raise KitError(f"{source}: refused: {problem}; write the values out plainly")
        return loader.construct_document(node)
    except _DuplicateKey as exc:
        first = f" (first at line {exc.first_mark.line + 1})" if exc.first_mark else ""
        raise KitError(
            f"{source}: line {exc.problem_mark.line + 1}: duplicate key {exc.key!r}{first}; YAML would keep "
            "only the last one silently: merge the two into one"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise KitError(f"{source}:{where} not valid YAML ({problem}); fix the syntax there") from None
    except RecursionError:
        raise KitError(f"{source}: refused: nested too deeply to parse; a profile needs 4 levels") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: Path) -> dict[str, Any]:
    shown = display(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KitError(f"{shown}: cannot read ({exc.strerror}); check the path and its permissions") from None
    if len(raw) > MAX_FILE_BYTES:
        raise KitError(f"{shown}: larger than {MAX_FILE_BYTES >> 20} MiB; this is not a kit YAML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise KitError(
            f"{shown}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8; save the file as UTF-8"
        ) from None
    data = load_yaml_text(text, shown)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KitError(f"{shown}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def validation_message(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """The first error of ``exc`` as one actionable line (and how many more there are)."""
    errors = exc.errors()
    for error in errors:
        error["loc"] = tuple(p for p in error["loc"] if not _is_union_tag(p))
    first = errors[0]
    errors = [first] + [e for e in errors[1:] if e["loc"] != first["loc"]]
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


_UNION_TAGS = {"int", "str", "float", "bool", "none", "dict", "list", "constrained-int", "constrained-str"}


def _is_union_tag(part: Any) -> bool:
    """pydantic names the member of a union in the error location (``constrained-int``,
    ``literal['auto']``); the user's key is the path without them."""
    return isinstance(part, str) and (part in _UNION_TAGS or part.startswith(("literal[", "function-")))


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


def parse(model: type[BaseModel], data: dict[str, Any], source: str, *, strict: bool = False) -> Any:
    """``strict``: no coercion (``true`` is not 1, ``"8000"`` not 8000, ``2.0`` not 2), for what users
    write; descriptions the kit generates keep pydantic's lax mode."""
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise KitError(validation_message(exc, model, source)) from None

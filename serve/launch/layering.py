"""Loading a profile: ``extends`` chains, then overrides from the environment (``SERVE_SET``) and the
command line (``--set``), in that order of precedence (the command line wins), then validation."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from serve.errors import ProfileError
from serve.launch import config_files
from serve.launch.profile import Profile, field_paths

ENV_SET = "SERVE_SET"


@dataclass(frozen=True)
class LoadedProfile:
    name: str
    path: Path
    profile: Profile
    chain: list[str]
    """Files merged, base first."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted key -> value, with where it came from in ``override_sources``."""
    override_sources: dict[str, str] = field(default_factory=dict)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_chain(name_or_path: str, option: str, seen: list[Path]) -> tuple[dict[str, Any], list[Path]]:
    path = config_files.resolve("profiles", name_or_path, option=option).resolve()
    if path in seen:
        cycle = " -> ".join(config_files.display(p) for p in [*seen, path])
        raise ProfileError(
            f"{config_files.display(path)}: extends forms a cycle ({cycle}); remove one of the extends keys"
        )
    data = config_files.read_yaml(path)
    parent = data.get("extends")
    if parent is None:
        return data, [*seen, path]
    if not isinstance(parent, str):
        raise ProfileError(
            f"{config_files.display(path)}: extends = {parent!r}: must be a profile name or a path"
        )
    if "/" in parent and not Path(parent).is_absolute():
        parent = str(path.parent / parent)
    base, chain = _load_chain(parent, f"{config_files.display(path)}: extends", [*seen, path])
    merged = deep_merge(base, data)
    merged["extends"] = parent
    return merged, chain


def parse_override(text: str, source: str) -> tuple[str, Any]:
    """``serving.max_num_seqs=2`` -> ("serving.max_num_seqs", 2). Values are YAML scalars or flow
    collections (``null``, ``true``, ``[a, b]``, ``{method: mtp}``)."""
    if "=" not in text:
        raise ProfileError(f"{source} {text!r}: expected KEY=VALUE, e.g. serving.max_num_seqs=2")
    key, raw = text.split("=", 1)
    key = key.strip()
    known = field_paths()
    if key not in known:
        import difflib

        hint = difflib.get_close_matches(key, list(known), n=1)
        suggestion = f"did you mean {hint[0]!r}? " if hint else ""
        raise ProfileError(
            f"{source} {text!r}: unknown key {key!r}; {suggestion}see docs/profile-reference.md for the keys"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ProfileError(f"{source} {text!r}: the value is not valid YAML; quote it") from None
    return key, value


def collect_overrides(cli_sets: list[str], environ: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Environment first, then the command line on top. The same key twice in one source with
    different values is a conflict, not a silent last-one-wins."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    env_items = [s for s in environ.get(ENV_SET, "").split(";") if s.strip()]
    for label, items in ((f"{ENV_SET}=", env_items), ("--set", cli_sets)):
        seen_here: dict[str, Any] = {}
        for item in items:
            key, value = parse_override(item, label)
            if key in seen_here and seen_here[key] != value:
                raise ProfileError(
                    f"{label} {key}: set twice with different values ({seen_here[key]!r} and {value!r}); keep one"
                )
            for other in seen_here:
                if other != key and (other.startswith(key + ".") or key.startswith(other + ".")):
                    raise ProfileError(
                        f"{label} {other} and {key}: conflicting overrides (one contains the other); keep one"
                    )
            seen_here[key] = value
            values[key] = value
            sources[key] = label.rstrip("=")
    return values, sources


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def load_profile(
    name_or_path: str,
    cli_sets: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> LoadedProfile:
    environ = dict(os.environ) if environ is None else environ
    data, chain = _load_chain(name_or_path, "--profile", [])
    overrides, sources = collect_overrides(cli_sets or [], environ)
    data = apply_overrides(data, overrides)
    path = chain[0]
    shown = config_files.display(path)
    label = shown if not overrides else f"{shown} (with overrides {', '.join(overrides)})"
    profile = config_files.parse(Profile, data, label)
    name = path.stem if path.parent == (config_files.config_dir() / "profiles").resolve() else shown
    return LoadedProfile(
        name=name,
        path=path,
        profile=profile,
        chain=[str(p) for p in reversed(chain)],
        overrides=overrides,
        override_sources=sources,
    )

"""Loading a profile: ``extends`` chains, then overrides from the environment (``SERVE_SET``) and the
command line (``--set``), in that order of precedence (the command line wins), then validation."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve.errors import KitError, ProfileError
from serve.launch import config_files
from serve.launch.profile import Profile, field_paths

ENV_SET = "SERVE_SET"
ENV_API_KEY = "VLLM_API_KEY"
"""vLLM's own: its API server requires ``Authorization: Bearer <key>`` when this is set."""
ENV_PUBLISHED_BIND = "SERVE_PUBLISHED_BIND"
"""Set by docker-compose.yml to the host address the API port is published on (``VLLM_BIND``): in a
container vLLM binds 0.0.0.0, and this, not the listen address, says who can reach it."""
ENV_SIDECAR_PUBLISHED_BIND = "SERVE_SIDECAR_PUBLISHED_BIND"
"""Set by docker-compose.yml to the host address the sidecar's port is published on (``HEALTHCHECK_BIND``)."""
MAX_EXTENDS = 16
"""Profiles in one ``extends`` chain; the shipped ones use 2."""
NOT_INHERITED = ("serving.allow_unauthenticated",)
"""Keys an ``extends`` parent does not pass on: each profile (or override) says them for itself."""


@dataclass(frozen=True)
class LaunchInputs:
    """Where the profile's values came from, and what the environment says about access: what the
    security rules read besides the profile (serve.launch.rules)."""

    user_keys: frozenset[str] = frozenset()
    """Dotted keys (every level) set by the user: ``--set``/``SERVE_SET``, or a profile file outside the
    kit's config/profiles (the named file or one it extends). Values that only a shipped profile sets are
    the kit's, not the user's."""
    api_key_set: bool = False
    """``VLLM_API_KEY`` is set (non-empty) in the launcher's environment, which vLLM inherits."""
    published_bind: str | None = None
    """``SERVE_PUBLISHED_BIND``: the address the port is published on (compose); None outside it."""
    sidecar_published_bind: str | None = None
    """``SERVE_SIDECAR_PUBLISHED_BIND``: the address the sidecar's port is published on (compose); None
    outside it (on bare metal the sidecar checks its own listen address: healthcheck.access)."""


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
    inputs: LaunchInputs = field(default_factory=LaunchInputs)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _dotted(data: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, dict):
            out |= _dotted(value, f"{path}.")
    return out


def _drop_not_inherited(data: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for dotted in NOT_INHERITED:
        *parents, leaf = dotted.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def _is_shipped(path: Path) -> bool:
    return path.parent == (config_files.config_dir() / "profiles").resolve()


def _load_chain(
    name_or_path: str, option: str, seen: list[Path], user_keys: set[str]
) -> tuple[dict[str, Any], list[Path]]:
    path = config_files.resolve("profiles", name_or_path, option=option).resolve()
    if path in seen:
        cycle = " -> ".join(config_files.display(p) for p in [*seen, path])
        raise ProfileError(
            f"{config_files.display(path)}: extends forms a cycle ({cycle}); remove one of the extends keys"
        )
    if len(seen) >= MAX_EXTENDS:
        raise ProfileError(
            f"{config_files.display(seen[0])}: extends chain longer than {MAX_EXTENDS} profiles "
            f"(reached {config_files.display(path)}); extend a shipped profile directly"
        )
    data = config_files.read_yaml(path)
    if not _is_shipped(path):
        user_keys |= _dotted(data)
    parent = data.get("extends")
    if parent is None:
        return data, [*seen, path]
    if not isinstance(parent, str):
        raise ProfileError(
            f"{config_files.display(path)}: extends = {parent!r}: must be a profile name or a path"
        )
    if "/" in parent and not Path(parent).is_absolute():
        parent = str(path.parent / parent)
    base, chain = _load_chain(parent, f"{config_files.display(path)}: extends", [*seen, path], user_keys)
    merged = deep_merge(_drop_not_inherited(base), data)
    merged["extends"] = parent
    return merged, chain


def _refuse_nul(data: Any, source: str, key: str = "") -> None:
    """A NUL byte cannot reach vLLM (argv and environment are C strings): exec would fail after the
    plan file was written."""
    if isinstance(data, str):
        if "\0" in data:
            raise ProfileError(f"{source}: {key or 'a value'} = {data!r}: holds a NUL byte (\\0); remove it")
    elif isinstance(data, dict):
        for k, v in data.items():
            _refuse_nul(k, source, key or "a key")
            _refuse_nul(v, source, f"{key}.{k}" if key else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _refuse_nul(v, source, f"{key}[{i}]")


SHORT_FLAGS = {"-tp": "--tensor-parallel-size", "-sc": "--speculative-config", "-cc": "--compilation-config"}
"""vLLM's one-dash aliases of flags the kit renders (vllm/engine/arg_utils.py, 0.24-0.33)."""


def _flag_name(item: str) -> str:
    """``--max_num_seqs=4`` -> ``--max-num-seqs``: vLLM's parser turns underscores into dashes up to the
    first dot and takes ``=value``."""
    name = item.split("=", 1)[0]
    head, dot, rest = name.partition(".")
    return SHORT_FLAGS.get(head, head.replace("_", "-")) + dot + rest


def planned_flag_conflicts(extra_args: list[str]) -> list[tuple[str, str]]:
    """(extra_args item, the kit's flag) for every item that sets a flag the kit renders: vLLM's parser
    lets the last one win, so plan.json and the sidecar would describe another server. Covers vLLM's
    spellings: ``--flag=value``, underscores, ``--no-flag``, dotted ``--x.y``, one-dash aliases and
    abbreviations (FlexibleArgumentParser keeps argparse's allow_abbrev); ``--config FILE`` is refused
    too, since the kit cannot see what it sets."""
    from serve.launch.knobs import KNOBS

    planned = ["--model", *(knob.flag for knob in KNOBS)]
    out: list[tuple[str, str]] = []
    for i, item in enumerate(extra_args):
        if not item.startswith("-") or item == "-":
            continue
        name = _flag_name(item)
        if name == "--config":
            out.append((item, "--config (a file of flags the plan cannot see)"))
            continue
        bare = "--" + name[5:] if name.startswith("--no-") else name
        head = bare.partition(".")[0]
        value = (
            item.split("=", 1)[1] if "=" in item else (extra_args[i + 1] if i + 1 < len(extra_args) else "")
        )
        for flag in planned:
            flag_head = flag.partition(".")[0]
            abbreviated = (
                "." not in bare and len(bare) > 3 and flag_head.startswith(bare) and bare != flag_head
            )
            if bare == flag or abbreviated:
                out.append((item, flag))
                break
            if head == flag_head != flag and "." not in bare and "cudagraph" in value:
                out.append((item, flag))
                break
    return out


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
    if not raw.strip():
        return key, ""
    try:
        value = config_files.load_yaml_text(raw, f"{source} {key}")
    except KitError as exc:
        raise ProfileError(f"{exc} (or quote the value)") from None
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
    user_keys: set[str] = set()
    data, chain = _load_chain(name_or_path, "--profile", [], user_keys)
    overrides, sources = collect_overrides(cli_sets or [], environ)
    for key in overrides:
        parts = key.split(".")
        user_keys |= {".".join(parts[: i + 1]) for i in range(len(parts))}
        if isinstance(overrides[key], dict):
            user_keys |= _dotted(overrides[key], f"{key}.")
    data = apply_overrides(data, overrides)
    path = chain[0]
    shown = config_files.display(path)
    label = shown if not overrides else f"{shown} (with overrides {', '.join(overrides)})"
    _refuse_nul(data, label)
    profile = config_files.parse(Profile, data, label, strict=True)
    conflicts = planned_flag_conflicts(profile.serving.extra_args)
    if conflicts:
        item, flag = conflicts[0]
        raise ProfileError(
            f"{label}: serving.extra_args holds {item!r}, but the kit renders {flag} itself from the profile; "
            "set the profile key instead (python -m serve render --profile ... shows which), so that "
            "plan.json and the sidecar describe the server that runs"
        )
    published = environ.get(ENV_PUBLISHED_BIND, "").strip() or None
    sidecar_published = environ.get(ENV_SIDECAR_PUBLISHED_BIND, "").strip() or None
    name = path.stem if _is_shipped(path) else shown
    return LoadedProfile(
        name=name,
        path=path,
        profile=profile,
        chain=[str(p) for p in reversed(chain)],
        overrides=overrides,
        override_sources=sources,
        inputs=LaunchInputs(
            user_keys=frozenset(user_keys),
            api_key_set=bool(environ.get(ENV_API_KEY, "").strip()),
            published_bind=published,
            sidecar_published_bind=sidecar_published,
        ),
    )

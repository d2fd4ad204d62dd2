"""A Hugging Face model directory's small files, read the one way every checkpoint reader shares:
``config.json`` (and other JSON objects there), and the shard names ``model.safetensors.index.json`` maps
tensors to, each kept inside the directory.

A shard name is a relative path inside the model directory: no absolute path, no ``..``. Where the file
is a symlink it must resolve inside the directory too, or, for a Hugging Face cache snapshot
(``models--org--name/snapshots/REV/``, whose files link to ``../../blobs/``), inside that repository's
cache folder.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from serve.errors import KitError

CONFIG = "config.json"
INDEX_NAME = "model.safetensors.index.json"
SINGLE = "model.safetensors"
MAX_JSON_BYTES = 64 << 20  # config.json and the index are kilobytes; a 27B index is ~100 kB


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``, or a one-line KitError naming the file: missing, unreadable, too
    large, not UTF-8, not JSON, or JSON that is not an object (a list, a number)."""
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise KitError(f"{path}: {what} is over {MAX_JSON_BYTES >> 20} MB; not a model's {what}")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KitError(f"{path}: {what} is missing; is this a Hugging Face model directory?") from None
    except OSError as exc:
        raise KitError(
            f"{path}: cannot read {what} ({exc.strerror}); check the path and permissions"
        ) from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise KitError(
            f"{path}: {what} is not UTF-8 text (byte {exc.start}); restore it (re-download the model)"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise KitError(
            f"{path}: {what} is not valid JSON ({exc}); restore it (re-download the model)"
        ) from None
    if not isinstance(data, dict):
        raise KitError(
            f"{path}: {what} is a JSON {type(data).__name__}, not an object; restore it (re-download the model)"
        )
    return data


def read_config(directory: Path) -> dict[str, Any]:
    return read_json_object(directory / CONFIG, "the model's config.json")


def containing_root(directory: Path) -> Path:
    """Where a shard's real file may live: the directory, or its Hugging Face cache repository folder."""
    real = directory.resolve()
    if real.parent.name == "snapshots" and real.parent.parent.name.startswith("models--"):
        return real.parent.parent
    return real


def shard_path(directory: Path, name: object, *, source: Path) -> Path:
    """``directory / name`` for a shard name read from ``source`` (the index), refused (one line naming
    ``source`` and the name) when it would leave the model directory."""
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        raise KitError(f"{source}: shard name {name!r} is not a file name; re-download the index")
    pure = PurePosixPath(name)
    if pure.is_absolute() or "\\" in name or ".." in pure.parts or Path(name).is_absolute():
        raise KitError(
            f"{source}: shard {name!r} is outside the model directory {directory}; a shard is a file "
            "name inside it. Re-download the index (or fix that entry)"
        )
    path = directory / name
    real = path.resolve()
    if not real.is_relative_to(containing_root(directory)):
        raise KitError(
            f"{source}: shard {name!r} links to {real}, outside the model directory {directory}; "
            "copy the file into the directory instead of linking it"
        )
    return path


def read_index(directory: Path) -> dict[str, Any]:
    """``model.safetensors.index.json`` as a JSON object whose ``weight_map`` maps tensor names to shard
    names (strings, at least one); the shard names are checked by :func:`shard_path` where used."""
    path = directory / INDEX_NAME
    index = read_json_object(path, "the safetensors index")
    weight_map = index.get("weight_map")
    if (
        not isinstance(weight_map, dict)
        or not weight_map
        or not all(isinstance(v, str) for v in weight_map.values())
    ):
        raise KitError(
            f"{path}: key weight_map is missing, empty or not an object of tensor name -> shard file; "
            "re-download the index"
        )
    return index


def read_marker(path: Path) -> dict[str, Any] | None:
    """A model writer's own marker file (what it wrote, with which settings), or None when it is missing
    or not a JSON object: the directory is then not one the writer made."""
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None

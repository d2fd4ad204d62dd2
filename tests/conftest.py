"""Shared fixtures: the repository root on sys.path, tiny models cached per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Factory: tiny_models(arch="qwen3", **options) -> model dir, made once per session per options."""
    from serve.tiny_model import make_tiny_model

    base = tmp_path_factory.mktemp("tiny-models")
    made: dict[tuple, Path] = {}

    def get(arch: str = "qwen3", **options) -> Path:
        key = (arch, tuple(sorted(options.items())))
        if key not in made:
            name = arch + "".join(f"-{k}" for k, v in sorted(options.items()) if v)
            made[key] = make_tiny_model(base / name, arch, **options)
        return made[key]

    return get

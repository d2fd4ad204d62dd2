"""The generated docs are what the generator produces now: schema and rules cannot drift from them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_profile_reference_is_current():
    proc = subprocess.run(
        [sys.executable, "-m", "serve", "docs", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_every_field_has_a_docstring():
    from serve.launch.profile import Profile, _submodel

    def walk(model, prefix=""):
        for name, info in model.model_fields.items():
            assert info.description, f"{prefix}{name} has no docstring"
            inner = _submodel(info.annotation)
            if inner is not None:
                walk(inner, f"{prefix}{name}.")

    walk(Profile)

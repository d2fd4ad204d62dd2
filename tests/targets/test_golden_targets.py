"""Golden renders of the scale-out targets: one file per profile x target in tests/golden/targets/.
Regenerate with UPDATE_GOLDEN=1 pytest tests/targets/test_golden_targets.py, then review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.targets.support import CASES, TARGETS, rendered

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "targets"
SUFFIX = {
    "ray-serve": "ray-serve.yaml",
    "production-stack": "production-stack.values.yaml",
    "kserve": "kserve.yaml",
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("profile", sorted(CASES))
def test_golden_target(profile, target):
    path = GOLDEN / f"{profile}.{SUFFIX[target]}"
    gpu, engine = CASES[profile]
    _, _, text = rendered(profile, target)
    text = f"# --gpu {gpu} --engine {engine}\n{text}"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no golden file {path}; UPDATE_GOLDEN=1 to write it"
    assert path.read_text() == text, f"{target} render of {profile} changed; review and UPDATE_GOLDEN=1"

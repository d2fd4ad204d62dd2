"""``tiny-model`` and ``synth-model`` on a Python without their optional packages: one line naming the
package and the extra, exit 2, no directory left behind (bdd4bac: a traceback and, for tiny-model, an
empty directory). The package is hidden by ``sys.modules[name] = None`` in a real subprocess of the CLI
(about 1 s each); the extra in pyproject.toml must name what the check asks for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from serve.checkpoint import extras

REPO = Path(__file__).resolve().parents[2]


def _cli_without(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    code = (
        f"import sys; sys.modules[{module!r}] = None; "
        "from serve.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("hidden", "argv"),
    [
        ("torch", ["tiny-model"]),
        ("transformers", ["tiny-model", "--arch", "qwen3_5"]),
        ("tokenizers", ["synth-model", "--scale", "mini"]),
        ("torch", ["synth-model", "--scale", "mini", "--device", "cuda"]),
    ],
)
def test_missing_package_is_one_line_and_no_directory(tmp_path: Path, hidden: str, argv: list[str]) -> None:
    out = tmp_path / "new" / "model"
    done = _cli_without(hidden, argv[0], str(out), *argv[1:])
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"needs {hidden}" in done.stderr and f"'{extras.EXTRA}' extra" in done.stderr
    assert not out.exists() and not out.parent.exists()


def test_the_extra_declares_what_the_writers_need() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in declared[extras.EXTRA]}
    assert names == set(extras.DISTRIBUTIONS.values())

#!/usr/bin/env python3
"""Install the kit into the image's Python with every version fixed (Dockerfile step).

``install-pinned.py PINS TARGET``: the base image's installed packages are frozen as constraints (installing
the kit must never move vLLM's own pins: torch, transformers, pydantic...), PINS adds exact versions for
what the base lacks, ``pip install -c`` installs TARGET (e.g. ``.[gpu,download]``), and the build fails
when any package it added is not pinned with ``==`` in PINS at the version it got. Standard library only.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = "qwen-vllm-kit"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _freeze() -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all"], check=True, capture_output=True, text=True
    ).stdout
    found = {}
    for line in out.splitlines():
        if " @ " in line:
            name = line.split(" @ ", 1)[0]
            found[_norm(name)] = "@"
        elif "==" in line:
            name, version = line.split("==", 1)
            found[_norm(name)] = version.strip()
    return found


def _pins(path: Path) -> dict[str, tuple[str, str]]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version.strip():
            sys.exit(f"{path}: {raw!r} is not NAME==VERSION")
        pins[_norm(name)] = (name.strip(), version.strip())
    return pins


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.exit("usage: install-pinned.py PINS TARGET")
    pins = _pins(Path(argv[0]))
    base = _freeze()
    lines = [f"{n}=={v}" for n, v in base.items() if v != "@"]
    lines += [f"{name}=={version}" for key, (name, version) in pins.items() if key not in base]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(lines) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-cache-dir", "-c", fh.name, argv[1]], check=True
    )
    Path(fh.name).unlink()
    after = _freeze()
    added = {k: v for k, v in after.items() if k not in base and k != _norm(PROJECT)}
    moved = {k: (base[k], v) for k, v in after.items() if k in base and base[k] != v}
    unpinned = [f"{k}=={v}" for k, v in sorted(added.items()) if pins.get(k, ("", ""))[1] != v]
    if moved:
        print(f"install-pinned: the install moved base packages: {moved}", file=sys.stderr)
        return 1
    if unpinned:
        print(
            f"install-pinned: added without an exact pin in {argv[0]}: {', '.join(unpinned)}; add them there",
            file=sys.stderr,
        )
        return 1
    print(f"install-pinned: added {', '.join(f'{k}=={v}' for k, v in sorted(added.items())) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`python -m serve parity` as a user runs it: a subprocess of the CLI, its exit code, stdout table and
--json result. The real-model baseline is the session's ``cpu_real_server`` (tests/conftest.py), shared
with the readiness and smoke tests; each test launches at most one more server at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# Few and short: the real model decodes ~13 tok/s on 2 CPU cores (fp32).
FACT_PROMPTS = (
    "What is the capital of France?",
    "What is 2 + 3?",
    "Name three primary colors.",
    "What is the opposite of hot?",
)
# SmolLM2 copies these back word for word, so ngram speculation (5-token lookup) finds matches in the
# prompt and proposes drafts: some accepted, some rejected (measured 9 of 15 accepted).
COPY_PROMPTS = (
    "Repeat this sentence exactly: The quick brown fox jumps over the lazy dog.",
    "Copy this text: one two three four five six seven eight nine ten",
    "Repeat exactly: Paris is the capital of France. Paris is the capital of France.",
)


@dataclass(frozen=True)
class ParityRun:
    rc: int
    out: str
    err: str
    result: dict[str, Any] | None

    @property
    def log(self) -> str:
        return f"exit {self.rc}\n--- stdout\n{self.out}\n--- stderr\n{self.err[-4000:]}"


def prompts_file(directory: Path, prompts: tuple[str, ...] | list[str], name: str = "prompts.txt") -> Path:
    path = directory / name
    path.write_text("\n".join(prompts) + "\n")
    return path


def run_parity(directory: Path, *args: str, timeout: float = 600) -> ParityRun:
    """Run the CLI with --json and --out under ``directory``; the result is None when no JSON was written."""
    out_json = directory / "parity.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVE_")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "serve",
            "parity",
            *args,
            "--json",
            str(out_json),
            "--out",
            str(directory / "out"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result = json.loads(out_json.read_text()) if out_json.exists() else None
    return ParityRun(proc.returncode, proc.stdout, proc.stderr, result)

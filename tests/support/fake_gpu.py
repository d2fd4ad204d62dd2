"""Detection of a GPU that is not there, through the FAKE NVML in ``fake_nvml/pynvml.py`` (a test double
named as such): the launcher's own probe (``serve.launch.probes.probe_gpu``) runs unchanged and sees the GPU of
a description file, or no GPU at all. Nothing in ``serve/`` knows about it.

In-process: ``with detected("h200"): ...`` (``None``: NVML finds no driver, on any machine). For a
child process: ``env=subprocess_env("h200")``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

FAKE_NVML_DIR = Path(__file__).resolve().parent / "fake_nvml"
REPO = FAKE_NVML_DIR.parents[2]


def _fake_pynvml() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pynvml", FAKE_NVML_DIR / "pynvml.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def detected(gpu: str | None) -> Iterator[ModuleType]:
    """NVML reports the GPU of description ``gpu`` (a shipped name or a YAML path), or none."""
    saved_module = sys.modules.get("pynvml")
    saved_env = os.environ.get("FAKE_NVML_GPU")
    sys.modules["pynvml"] = module = _fake_pynvml()
    if gpu is None:
        os.environ.pop("FAKE_NVML_GPU", None)
    else:
        os.environ["FAKE_NVML_GPU"] = gpu
    try:
        yield module
    finally:
        if saved_module is None:
            sys.modules.pop("pynvml", None)
        else:
            sys.modules["pynvml"] = saved_module
        if saved_env is None:
            os.environ.pop("FAKE_NVML_GPU", None)
        else:
            os.environ["FAKE_NVML_GPU"] = saved_env


def subprocess_env(gpu: str | None) -> dict[str, str]:
    """Environment for ``python -m serve ...`` in which NVML is the fake one."""
    env = {k: v for k, v in os.environ.items() if k not in ("FAKE_NVML_GPU", "SERVE_GPU")}
    env["PYTHONPATH"] = os.pathsep.join([str(FAKE_NVML_DIR), str(REPO), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    if gpu is not None:
        env["FAKE_NVML_GPU"] = gpu
    return env

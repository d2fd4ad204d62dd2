"""A FAKE NVML: a test double shaped like ``pynvml`` (nvidia-ml-py) that reports the GPU of a
description file as if a driver had found it. It exists so that the launcher's default path,
detection through ``serve.launch.probes.probe_gpu``, runs unchanged on a machine without a GPU.

It is never on the path by itself: a test puts this folder first on ``PYTHONPATH`` (a subprocess) or
installs the module as ``sys.modules["pynvml"]`` (in-process), and names the GPU with
``FAKE_NVML_GPU`` = a shipped description name (``h200``) or a path to a GPU YAML file. Without it,
``nvmlInit`` fails as NVML does on a machine without a driver. The driver version it reports is the
string ``fake-nvml``, so a plan or doctor output made through it says where its facts came from.

Only the calls the kit makes are here (the probe and doctor's free-memory read).
"""

from __future__ import annotations

import os
from typing import Any

from serve.launch import config_files

FAKE_DRIVER_VERSION = "fake-nvml"
_state: dict[str, Any] = {}


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):
    pass


class _Memory:
    def __init__(self, total: int, free: int) -> None:
        self.total, self.free, self.used = total, free, total - free


def _description() -> dict[str, Any]:
    name = os.environ.get("FAKE_NVML_GPU")
    if not name:
        raise NVMLError_LibraryNotFound("fake NVML: FAKE_NVML_GPU is not set (no GPU)")
    return config_files.read_yaml(config_files.resolve("gpus", name, option="FAKE_NVML_GPU"))


def nvmlInit() -> None:
    _state["gpu"] = _description()


def nvmlShutdown() -> None:
    _state.pop("gpu", None)


def _gpu() -> dict[str, Any]:
    if "gpu" not in _state:
        raise NVMLError("fake NVML: not initialized")
    return _state["gpu"]


def nvmlDeviceGetCount() -> int:
    return int(_gpu().get("count", 1))


def nvmlDeviceGetHandleByIndex(index: int) -> int:
    if not 0 <= index < nvmlDeviceGetCount():
        raise NVMLError(f"fake NVML: no device {index}")
    return index


def nvmlDeviceGetName(handle: int) -> str:
    gpu = _gpu()
    return (gpu.get("nvml_names") or [gpu["name"]])[0]


def nvmlDeviceGetCudaComputeCapability(handle: int) -> tuple[int, int]:
    major, minor = str(_gpu()["compute_capability"]).split(".")
    return int(major), int(minor)


def nvmlDeviceGetMemoryInfo(handle: int) -> _Memory:
    total = int(float(_gpu()["memory_gib"]) * 2**30)
    return _Memory(total=total, free=total)


def nvmlSystemGetDriverVersion() -> str:
    _gpu()
    return FAKE_DRIVER_VERSION


def nvmlSystemGetCudaDriverVersion() -> int:
    _gpu()
    return 13000

"""This machine, read at the edge: free GPU memory (NVML), the Hugging Face cache's place, a model's config.json."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from serve.checkpoint import model_dir as model_dir_reader
from serve.errors import KitError


def free_vram() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).free)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML, no GPU: free memory is simply unknown
        return None


def hf_cache_dir(environ: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if environ is None else environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]) / "hub"
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface" / "hub"


def existing_parent(p: Path) -> Path:
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def read_model_config(model_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """config.json as a JSON object, or the one-line reason it is not one (missing, unreadable, not JSON,
    a list or a number): the checkpoint package's reader decides, so doctor and the launcher agree."""
    if not model_dir.is_dir():
        return None, f"{model_dir}: not a directory (or not readable); pass the model directory"
    if not (model_dir / "config.json").exists():
        return None, f"{model_dir / 'config.json'}: missing; a Hugging Face model directory has a config.json"
    try:
        return model_dir_reader.read_config(model_dir), None
    except KitError as exc:
        return None, str(exc)

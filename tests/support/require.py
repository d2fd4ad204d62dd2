"""Skips that turn into failures under CI: a test that needs vLLM, Docker or Prometheus must not pass
by skipping on the machine that is meant to have them (set KIT_REQUIRE=vllm,docker,prometheus)."""

from __future__ import annotations

import os

import pytest


def required(what: str) -> bool:
    return what in {w.strip() for w in os.environ.get("KIT_REQUIRE", "").split(",")}


def skip_or_fail(what: str, reason: str) -> None:
    if required(what):
        pytest.fail(f"{reason} (KIT_REQUIRE includes {what})")
    pytest.skip(reason)


def need_vllm() -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        skip_or_fail("vllm", "vLLM is not importable in this Python")

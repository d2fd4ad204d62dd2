"""Options for running the smoke suite from pytest against a live endpoint.

``pytest tests/smoke --base-url http://127.0.0.1:8000`` (or ``SMOKE_BASE_URL=...`` from anywhere:
pytest only reads this file's options when tests/smoke is on the command line)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("smoke", "OpenAI-client smoke suite against a live endpoint")
    group.addoption("--base-url", default=None, help="endpoint to smoke-test (env SMOKE_BASE_URL)")
    group.addoption("--smoke-api-key", default=None, help="bearer token (env SMOKE_API_KEY)")
    group.addoption("--smoke-plan-file", default=None, help="the launcher's plan.json (env SMOKE_PLAN_FILE)")
    group.addoption(
        "--smoke-quality", action="store_true", help="also run the quality checks (env SMOKE_QUALITY=1)"
    )

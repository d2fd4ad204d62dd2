"""The smoke suite against any live endpoint, one pytest test per check:

    pytest tests/smoke/test_live_endpoint.py --base-url http://127.0.0.1:8000
    pytest tests/smoke/test_live_endpoint.py --smoke-plan-file run/plan.json
    SMOKE_BASE_URL=http://gpu-box:8888 SMOKE_QUALITY=1 pytest tests/smoke/test_live_endpoint.py

Skipped when no endpoint is given. ``python -m serve smoke`` runs the same checks without pytest."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from serve.smoke.checks import CHECKS, SmokeContext, SmokeOptions, build_context
from serve.smoke.cli import expectations_from_plan, read_plan


def _setting(config: pytest.Config, option: str, env: str) -> str | None:
    return config.getoption(option, default=None) or os.environ.get(env) or None


@pytest.fixture(scope="module")
def live(request: pytest.FixtureRequest) -> Iterator[SmokeContext]:
    config = request.config
    plan_file = _setting(config, "--smoke-plan-file", "SMOKE_PLAN_FILE")
    plan = read_plan(plan_file) if plan_file else {}
    url = _setting(config, "--base-url", "SMOKE_BASE_URL") or plan.get("base_url")
    if not url:
        pytest.skip("no live endpoint: pass --base-url or set SMOKE_BASE_URL")
    options = SmokeOptions(**expectations_from_plan(plan))
    api_key = _setting(config, "--smoke-api-key", "SMOKE_API_KEY") or "EMPTY"
    ctx = build_context(url, api_key=api_key, model=plan.get("served_model_name"), options=options)
    yield ctx
    ctx.close()


def _quality_on(config: pytest.Config) -> bool:
    return bool(config.getoption("--smoke-quality", default=False) or os.environ.get("SMOKE_QUALITY") == "1")


@pytest.mark.parametrize("name", list(CHECKS))
def test_check(name: str, live: SmokeContext, request: pytest.FixtureRequest) -> None:
    spec = CHECKS[name]
    if spec.quality and not _quality_on(request.config):
        pytest.skip("quality check: pass --smoke-quality or set SMOKE_QUALITY=1 (real models only)")
    result = spec.fn(live)
    if result.status == "skip":
        pytest.skip(result.detail)
    assert result.status == "pass", result.detail

"""The OpenAI-client smoke suite: plumbing checks that pass on any correctly wired vLLM (random
weights included) and quality checks for real models. Library in :mod:`serve.smoke.checks`,
command in :mod:`serve.smoke.cli` (`python -m serve smoke`)."""

from serve.smoke.checks import (
    CHECKS,
    CheckResult,
    SmokeContext,
    SmokeOptions,
    SuiteReport,
    build_context,
    run_suite,
    select_checks,
)

__all__ = [
    "CHECKS",
    "CheckResult",
    "SmokeContext",
    "SmokeOptions",
    "SuiteReport",
    "build_context",
    "run_suite",
    "select_checks",
]

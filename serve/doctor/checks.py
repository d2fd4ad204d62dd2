"""All checks in report order, and the exit code of their worst finding (0 ok/info, 1 warn, 2 error)."""

from __future__ import annotations

from serve.doctor.engine_checks import check_engine
from serve.doctor.fit_checks import check_disk, check_fit, check_plan
from serve.doctor.gpu_checks import check_gpu, check_vram
from serve.doctor.inputs import Check, DoctorInputs
from serve.doctor.model_checks import check_model

_RANK = {"ok": 0, "info": 0, "warn": 1, "error": 2}
CHECKS = (check_gpu, check_engine, check_model, check_plan, check_disk, check_vram, check_fit)


def run_checks(inp: DoctorInputs) -> list[Check]:
    return [c for fn in CHECKS for c in fn(inp)]


def exit_code(checks: list[Check]) -> int:
    return max((_RANK[c.severity] for c in checks), default=0)

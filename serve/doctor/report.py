"""Doctor's findings for people (a table) and for programs (JSON)."""

from __future__ import annotations

import json
from typing import Any

from serve.doctor.checks import exit_code
from serve.doctor.inputs import Check


def render_table(checks: list[Check]) -> str:
    width = max((len(c.name) for c in checks), default=5)
    lines = [f"{'check':<{width}}  {'status':<6}  message", f"{'-' * width}  ------  -------"]
    for c in checks:
        lines.append(f"{c.name:<{width}}  {c.severity.upper():<6}  {c.message}")
    code = exit_code(checks)
    lines.append("")
    lines.append(["all checks passed", "warnings (exit 1)", "errors (exit 2)"][code])
    return "\n".join(lines)


def json_report(facts: dict[str, Any], checks: list[Check]) -> str:
    document = {"exit_code": exit_code(checks), "facts": facts, "checks": [c.to_dict() for c in checks]}
    return json.dumps(document, indent=2, default=str)

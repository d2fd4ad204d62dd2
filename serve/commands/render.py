"""``python -m serve render``: the exact ``vllm serve`` command and why, without starting anything."""

from __future__ import annotations

import argparse
import json
import sys

from serve.commands.common import add_plan_arguments, build_plan
from serve.launch.render import command_line, decision_table, plan_document, render_argv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_plan_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON (docs/plan-json.md)")


def run(args: argparse.Namespace) -> int:
    _, plan = build_plan(args)
    if args.json:
        print(json.dumps(plan_document(plan), indent=2))
        return 0
    print(command_line(render_argv(plan)))
    print(file=sys.stderr)
    for note in plan.notes:
        print(note, file=sys.stderr)
    print(decision_table(plan), file=sys.stderr)
    for warning in plan.warnings:
        print(f"\n{warning}", file=sys.stderr)
    return 0

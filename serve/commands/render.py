"""``python -m serve render``: the exact ``vllm serve`` command and why, without starting anything."""

from __future__ import annotations

import argparse
import sys

from serve.commands.common import add_plan_arguments, build_plan
from serve.errors import KitError
from serve.launch.render import command_line, decision_table, plan_document, render_argv
from serve.targets import TARGETS
from serve.targets import render as render_target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_plan_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON (docs/plan-json.md)")
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="vllm",
        help="what to render the plan for: vllm (the vllm serve command), ray-serve (a Ray Serve LLM app "
        "config), production-stack (Helm values), kserve (an LLMInferenceService); docs/scale-out.md",
    )


def run(args: argparse.Namespace) -> int:
    if args.json and args.target != "vllm":
        raise KitError(f"render: --json prints the plan (target vllm); drop it with --target {args.target}")
    loaded, plan = build_plan(args)
    if args.target != "vllm":
        rendered = render_target(args.target, loaded, plan)
        print(rendered.text(), end="")
        for note in rendered.notes:
            print(note, file=sys.stderr)
        return 0
    if args.json:
        print(plan_document(plan).to_json(), end="")
        return 0
    print(command_line(render_argv(plan)))
    print(file=sys.stderr)
    for note in plan.notes:
        print(note, file=sys.stderr)
    print(decision_table(plan), file=sys.stderr)
    for warning in plan.warnings:
        print(f"\n{warning}", file=sys.stderr)
    return 0

"""``python -m serve launch``: plan, validate the argv with the installed vLLM's own parser, write the
plan file, then exec vLLM so that it receives signals directly (PID 1 in a container)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from serve import atomic
from serve.commands.common import add_plan_arguments, build_plan
from serve.errors import KitError
from serve.launch.render import command_line, decision_table, plan_document, render_argv
from serve.launch.validate import validate_argv

DEFAULT_PLAN_FILE = "run/plan.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_plan_arguments(parser)
    parser.add_argument(
        "--plan-file",
        default=os.environ.get("SERVE_PLAN_FILE", DEFAULT_PLAN_FILE),
        help=f"where to write the plan (JSON) for the sidecar and bench [env SERVE_PLAN_FILE; default {DEFAULT_PLAN_FILE}]",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="plan, validate and write the plan file, but do not start vLLM",
    )


def run(args: argparse.Namespace) -> int:
    _, plan = build_plan(args)
    argv = render_argv(plan)
    print(command_line(argv), file=sys.stderr)
    for note in plan.notes:
        print(note, file=sys.stderr)
    print(decision_table(plan), file=sys.stderr)
    for warning in plan.warnings:
        print(warning, file=sys.stderr)
    validate_argv(argv, env={name: str(d.value) for name, d in plan.env.items()})
    document = plan_document(plan)
    document["settings"]["api_key_required"] = bool(os.environ.get("VLLM_API_KEY"))
    plan_file = Path(args.plan_file)
    try:
        atomic.write_text(plan_file, json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        raise KitError(
            f"--plan-file {plan_file}: cannot write ({exc.strerror}); choose a writable path"
        ) from None
    print(f"plan written to {plan_file}", file=sys.stderr)
    if args.dry_run:
        return 0
    env = dict(os.environ)
    env.update({name: str(d.value) for name, d in plan.env.items()})
    exec_argv = document["exec_argv"]
    sys.stderr.flush()
    sys.stdout.flush()
    os.execvpe(exec_argv[0], exec_argv, env)
    return 0  # not reached

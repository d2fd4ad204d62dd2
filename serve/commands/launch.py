"""``python -m serve launch``: plan, validate the argv with the installed vLLM's own parser, write the
plan file, then start vLLM: exec'd (it receives signals directly), or, with the watchdog on (inside a
container by default: SERVE_WATCHDOG, healthcheck/watchdog.py), as a child that is killed after repeated
failed readiness probes, the launcher then exiting non-zero so that Docker restarts the container."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from serve import atomic
from serve.commands.common import add_plan_arguments, build_plan
from serve.errors import KitError
from serve.launch.render import command_line, decision_table, plan_document, render_argv
from serve.launch.validate import validate_argv

if TYPE_CHECKING:
    from healthcheck.watchdog import WatchdogSettings

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


def check_plan_file(path: Path) -> None:
    """Only a regular file (replaced atomically) or a new path: a directory, a device node, a FIFO or a
    link would be replaced by a regular file, which as root could be /dev/null (issue 16)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise KitError(
            f"--plan-file {path}: cannot inspect it ({exc.strerror}); choose another path"
        ) from None
    if not stat.S_ISREG(mode):
        kind = (
            "a directory" if stat.S_ISDIR(mode) else "a link" if stat.S_ISLNK(mode) else "not a regular file"
        )
        raise KitError(
            f"--plan-file {path}: is {kind}; give a regular file or a new path (e.g. run/plan.json)"
        )


def run(args: argparse.Namespace) -> int:
    check_plan_file(Path(args.plan_file))
    _, plan = build_plan(args)
    watchdog = _watchdog_settings()
    argv = render_argv(plan)
    print(command_line(argv), file=sys.stderr)
    for note in plan.notes:
        print(note, file=sys.stderr)
    print(decision_table(plan), file=sys.stderr)
    for warning in plan.warnings:
        print(warning, file=sys.stderr)
    validate_argv(argv, env={name: str(d.value) for name, d in plan.env.items()})
    document = plan_document(plan, api_key_required=bool(os.environ.get("VLLM_API_KEY")))
    plan_file = Path(args.plan_file)
    try:
        atomic.write_text(plan_file, document.to_json())
    except OSError as exc:
        raise KitError(
            f"--plan-file {plan_file}: cannot write ({exc.strerror}); choose a writable path"
        ) from None
    print(f"plan written to {plan_file}", file=sys.stderr)
    if args.dry_run:
        return 0
    env = dict(os.environ)
    env.update({name: str(d.value) for name, d in plan.env.items()})
    exec_argv = document.exec_argv or []
    sys.stderr.flush()
    sys.stdout.flush()
    if watchdog.enabled():
        from healthcheck.watchdog import supervise

        return supervise(exec_argv, env, plan_file, watchdog)
    os.execvpe(exec_argv[0], exec_argv, env)
    return 0  # not reached


def _watchdog_settings() -> WatchdogSettings:
    """SERVE_WATCHDOG* read before anything is written, so a bad value stops the launch cleanly."""
    from healthcheck.watchdog import load_settings

    try:
        return load_settings()
    except ValueError as exc:
        raise KitError(f"{exc}; see docs/docker.md (watchdog)") from None

"""Options shared by render and launch, and the one path from arguments to a Plan."""

from __future__ import annotations

import argparse
import os

from serve.errors import KitError
from serve.launch.layering import LoadedProfile
from serve.launch.plan import Plan
from serve.launch.planning import plan_for


def add_profile_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default=os.environ.get("SERVE_PROFILE"),
        help="profile name (config/profiles/NAME.yaml) or a path to a YAML file [env SERVE_PROFILE]",
    )


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a profile key, e.g. --set serving.max_num_seqs=2 (repeatable; env SERVE_SET takes "
        "'k=v;k2=v2' and loses to --set)",
    )


def require_profile(args: argparse.Namespace) -> str:
    if not args.profile:
        raise KitError(
            "no profile given: pass --profile NAME (python -m serve profiles lists them) or set SERVE_PROFILE"
        )
    return str(args.profile)


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    add_profile_argument(parser)
    parser.add_argument(
        "--gpu",
        default=os.environ.get("SERVE_GPU"),
        help="auto (NVML), none (no GPU), a GPU description name (config/gpus/NAME.yaml) or a path; "
        "default: the GPU NVML detects, else the profile's hardware.gpu, labelled as assumed [env SERVE_GPU]",
    )
    parser.add_argument(
        "--engine",
        default=os.environ.get("SERVE_ENGINE", "auto"),
        help="auto (probe the installed vLLM), an engine description name (config/engines/NAME.yaml) or a "
        "path [env SERVE_ENGINE; default auto]",
    )
    add_set_argument(parser)


def build_plan(args: argparse.Namespace) -> tuple[LoadedProfile, Plan]:
    planned = plan_for(require_profile(args), sets=args.sets, gpu=args.gpu, engine=args.engine)
    return planned.loaded, planned.plan

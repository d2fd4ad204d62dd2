"""Options shared by render and launch, and the one path from arguments to a Plan."""

from __future__ import annotations

import argparse
import os

from serve.launch.layering import LoadedProfile
from serve.launch.plan import Plan
from serve.launch.planning import plan_for


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default=os.environ.get("SERVE_PROFILE"),
        help="profile name (config/profiles/NAME.yaml) or a path to a YAML file [env SERVE_PROFILE]",
    )
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
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a profile key, e.g. --set serving.max_num_seqs=2 (repeatable; env SERVE_SET takes "
        "'k=v;k2=v2' and loses to --set)",
    )


def build_plan(args: argparse.Namespace) -> tuple[LoadedProfile, Plan]:
    from serve.errors import KitError

    if not args.profile:
        raise KitError(
            "no profile given: pass --profile NAME (python -m serve profiles lists them) or set SERVE_PROFILE"
        )
    planned = plan_for(args.profile, sets=args.sets, gpu=args.gpu, engine=args.engine)
    return planned.loaded, planned.plan

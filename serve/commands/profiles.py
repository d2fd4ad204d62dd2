"""``python -m serve profiles``: what ships (profiles with their descriptions, GPUs, engines, models);
with ``--gpu``, which shipped profiles fit that GPU and engine, best first, and why (what
``--profile auto`` would pick is the first; serve.launch.profile_choice)."""

from __future__ import annotations

import argparse
import os

from serve.errors import KitError
from serve.launch import config_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gpu",
        help="list the shipped profiles that fit this GPU, best first: auto (NVML; no GPU where it finds "
        "none), none, or a GPU description name (config/gpus/NAME.yaml) or path",
    )
    parser.add_argument(
        "--engine",
        default=os.environ.get("SERVE_ENGINE", "auto"),
        help="with --gpu: the engine to fit (auto: the installed vLLM; or a description name or path) "
        "[env SERVE_ENGINE; default auto]",
    )


def run(args: argparse.Namespace) -> int:
    if args.gpu is not None:
        return _fitting(args.gpu, args.engine)
    for kind in ("profiles", "gpus", "engines", "models"):
        print(f"{kind}:")
        for name in config_files.shipped(kind):
            description = ""
            if kind == "profiles":
                data = config_files.read_yaml(config_files.config_dir() / kind / f"{name}.yaml")
                description = str(data.get("description", ""))
            print(f"  {name:32s} {description}")
    return 0


def _fitting(gpu: str, engine: str) -> int:
    from serve.launch.planning import choose_profile  # it plans every shipped profile

    try:
        # "auto" here means: what `--profile auto` would see, no GPU included where NVML finds none.
        choice = choose_profile(gpu=None if gpu == "auto" else gpu, engine=engine, environ={})
    except KitError as exc:
        if not str(exc).startswith("--profile auto: no shipped profile"):
            raise
        print(str(exc).removeprefix("--profile auto: "))
        return 2
    print(f"profiles for {choice.gpu} with {choice.engine}, best first (--profile auto picks the first):")
    for c in choice.candidates:
        if c.fits:
            print(f"  {c.name:32s} {c.reason}")
    refused = [c for c in choice.candidates if not c.fits]
    if refused:
        print("do not fit:")
        for c in refused:
            print(f"  {c.name:32s} {c.reason}")
    return 0

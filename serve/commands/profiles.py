"""``python -m serve profiles``: what ships (profiles with their descriptions, GPUs, engines, models)."""

from __future__ import annotations

import argparse

from serve.launch import config_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    for kind in ("profiles", "gpus", "engines", "models"):
        print(f"{kind}:")
        for name in config_files.shipped(kind):
            description = ""
            if kind == "profiles":
                data = config_files.read_yaml(config_files.config_dir() / kind / f"{name}.yaml")
                description = str(data.get("description", ""))
            print(f"  {name:32s} {description}")
    return 0

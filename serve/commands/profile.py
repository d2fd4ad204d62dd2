"""``python -m serve profile --profile P [--set KEY=VALUE ...]``: the profile as the planner sees it, with
its ``extends`` chain merged and the overrides (``SERVE_SET``, then ``--set``) applied, printed as YAML.

Only the keys the files and overrides set are printed (defaults are not), because a key's being set is
itself an input of the plan: an explicit value wins over a rule. Loading the printed YAML as a profile
therefore gives the same plan (tests/unit/test_profile_command.py checks every shipped profile); the
overrides become plain profile values there. One input is not a value: which keys a user wrote rather
than a shipped profile. Saved as your own file, every key becomes yours, so the rules that treat a value
only a shipped profile sets differently (issue 16: ``no-remote-code-native-arch`` drops a shipped
``trust_remote_code: true``) keep it as your explicit choice, loudly; the printed header says so."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from serve.commands.common import add_profile_argument, add_set_argument, require_profile
from serve.launch import config_files
from serve.launch.layering import LoadedProfile, load_profile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_profile_argument(parser)
    add_set_argument(parser)


def merged_profile(loaded: LoadedProfile) -> dict[str, Any]:
    """The keys that were set, validated and in the schema's order; ``extends`` is already merged in."""
    data = loaded.profile.model_dump(mode="json", exclude_unset=True)
    data.pop("extends", None)
    return data


def profile_yaml(loaded: LoadedProfile) -> str:
    chain = " <- ".join(config_files.display(Path(p)) for p in loaded.chain)
    sets = "".join(f"\n#   {key}  ({loaded.override_sources.get(key, '--set')})" for key in loaded.overrides)
    header = (
        f"# {loaded.name}: merged from {chain}"
        + (f"\n# with overrides:{sets}" if sets else "")
        + "\n# Saved as your own profile, every key below becomes yours: rules that treat a shipped profile's"
        + "\n# value differently (no-remote-code-native-arch) then keep it as your explicit choice.\n"
    )
    return header + yaml.safe_dump(merged_profile(loaded), sort_keys=False, allow_unicode=True, width=110)


def run(args: argparse.Namespace) -> int:
    print(profile_yaml(load_profile(require_profile(args), args.sets)), end="")
    return 0

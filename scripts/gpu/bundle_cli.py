#!/usr/bin/env python3
"""The GPU machine's side of the offline bundle (standard library only; see bundlelib.py).

    python3 scripts/gpu/bundle_cli.py stage CALL_DIR [--stage DIR]   check one carried callNN folder, stage it
    python3 scripts/gpu/bundle_cli.py status [--stage DIR]           which calls are still to carry
    python3 scripts/gpu/bundle_cli.py unpack [--stage DIR] [--site DIR]   join, check, unpack (once)
    python3 scripts/gpu/bundle_cli.py merge [--site DIR]             link the machine's part of shared folders in
    python3 scripts/gpu/bundle_cli.py env [--site DIR]               shell lines that put the bundle in use
    python3 scripts/gpu/bundle_cli.py installed [--stage DIR] [--site DIR]   exit 0 if the staged bundle is unpacked

Exit status: 0 done, 2 bad input (a message names the file and what to do), 3 parts still missing.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bundlelib

DEFAULT_STAGE = Path("/tmp/kit-bundle")
DEFAULT_SITE = Path("/tmp/site")
INFO = "KIT-BUNDLE.json"


def marker(site: Path, manifest: bundlelib.Manifest) -> Path:
    return site / f".installed-{manifest.bundle}"


def cmd_stage(call_dir: Path, stage_dir: Path) -> int:
    manifest, lines = bundlelib.stage(call_dir, stage_dir)
    for line in lines:
        print(f"stage: {line}")
    calls = bundlelib.missing_calls(manifest, stage_dir)
    n = len(manifest.parts)
    this = call_dir.name
    if calls:
        print(
            f"stage: {manifest.bundle}: {n - len(calls)} of {n} parts staged; still to carry: {' '.join(calls)}"
        )
        earlier = [c for c in calls if c < this]
        if earlier:
            print(
                f"stage: WARNING earlier calls are missing ({' '.join(earlier)}): the machine was fresh or "
                "a call was skipped; carry them too (order does not matter)"
            )
        return 3
    print(f"stage: {manifest.bundle}: all {n} parts staged")
    return 0


def cmd_status(stage_dir: Path) -> int:
    m = stage_dir / bundlelib.MANIFEST
    if not m.is_file():
        print(f"status: nothing staged in {stage_dir} (fresh machine): carry call01 first")
        return 3
    manifest = bundlelib.Manifest.load(m)
    calls = bundlelib.missing_calls(manifest, stage_dir)
    print(f"status: {manifest.bundle}: still to carry: {' '.join(calls) or 'none'}")
    return 3 if calls else 0


def cmd_unpack(stage_dir: Path, site: Path) -> int:
    m = stage_dir / bundlelib.MANIFEST
    if not m.is_file():
        raise bundlelib.BundleError(f"{m}: missing; stage the bundle's parts first (scripts/gpu/stage.sh)")
    manifest = bundlelib.Manifest.load(m)
    done = marker(site, manifest)
    if done.is_file():
        print(f"unpack: {manifest.bundle} already in {site}")
        return 0
    missing = bundlelib.missing_calls(manifest, stage_dir)
    if missing:
        print(f"unpack: still to carry: {' '.join(missing)}")
        return 3
    if site.exists() and any(site.glob(".installed-*")):
        raise bundlelib.BundleError(
            f"{site}: holds another bundle ({next(site.glob('.installed-*')).name}); remove it or pass --site"
        )
    t = time.time()
    how = bundlelib.unpack(manifest, stage_dir, site)
    done.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    print(f"unpack: {manifest.bundle} into {site} in {time.time() - t:.0f} s ({how}); sha256 of all parts ok")
    return 0


def cmd_installed(stage_dir: Path, site: Path) -> int:
    m = stage_dir / bundlelib.MANIFEST
    if m.is_file() and marker(site, bundlelib.Manifest.load(m)).is_file():
        print(
            f"installed: {bundlelib.Manifest.load(m).bundle} is unpacked in {site}; source {site}/kit-env.sh"
        )
        return 0
    return 3


def read_info(site: Path) -> dict:
    """The unpacked bundle's KIT-BUNDLE.json (what make-bundle.py recorded)."""
    return json.loads((site / INFO).read_text())


def machine_roots(site: Path) -> list[Path]:
    """The machine's own package folders (this interpreter's sys.path without the bundle's site)."""
    roots = []
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.is_dir() and path != site.resolve() and path not in roots:
            roots.append(path)
    return roots


def merge_machine_dirs(site: Path, roots: list[Path]) -> list[str]:
    """For each of the bundle's ``merge_machine_dirs`` (KIT-BUNDLE.json), link into the site's folder every
    entry of the first machine root's same folder that the site lacks: what one ``pip install`` would have
    put in one tree (nvidia/cu13: the bundle's cccl/crt headers beside the machine's NVRTC and cudart).
    Idempotent; an entry the bundle has is never replaced. Returns one line per folder."""
    info = read_info(site)
    lines = []
    for rel in info.get("merge_machine_dirs", []):
        theirs = next((root / rel for root in roots if (root / rel).is_dir()), None)
        if theirs is None:
            lines.append(f"merge: {rel}: the machine has none; the bundle's alone")
            continue
        ours = site / rel
        ours.mkdir(parents=True, exist_ok=True)
        linked = 0
        for entry in sorted(theirs.iterdir()):
            target = ours / entry.name
            if not target.exists() and not target.is_symlink():
                target.symlink_to(entry)
                linked += 1
        lines.append(f"merge: {rel}: linked {linked} entries of {theirs}")
    return lines


def env_lines(site: Path) -> list[str]:
    info = read_info(site)
    lines = [f"# written by scripts/gpu/bundle_cli.py env for vllm {info['vllm']}"]
    lines.append(f'export PYTHONPATH={shlex.quote(str(site))}"${{PYTHONPATH:+:$PYTHONPATH}}"')
    libs = [str(site / d) for d in info.get("prepend_ld_library_path", [])]
    if libs:
        joined = shlex.quote(":".join(libs))
        lines.append(f'export LD_LIBRARY_PATH={joined}"${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"')
    for key, value in sorted(info.get("env", {}).items()):
        lines.append(f"export {key}={shlex.quote(str(value))}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("stage")
    p.add_argument("call_dir", type=Path)
    p.add_argument("--stage", type=Path, default=DEFAULT_STAGE)
    p = sub.add_parser("status")
    p.add_argument("--stage", type=Path, default=DEFAULT_STAGE)
    p = sub.add_parser("unpack")
    p.add_argument("--stage", type=Path, default=DEFAULT_STAGE)
    p.add_argument("--site", type=Path, default=DEFAULT_SITE)
    p = sub.add_parser("merge")
    p.add_argument("--site", type=Path, default=DEFAULT_SITE)
    p = sub.add_parser("env")
    p.add_argument("--site", type=Path, default=DEFAULT_SITE)
    p = sub.add_parser("installed")
    p.add_argument("--stage", type=Path, default=DEFAULT_STAGE)
    p.add_argument("--site", type=Path, default=DEFAULT_SITE)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "stage":
            return cmd_stage(args.call_dir, args.stage)
        if args.cmd == "status":
            return cmd_status(args.stage)
        if args.cmd == "unpack":
            return cmd_unpack(args.stage, args.site)
        if args.cmd == "installed":
            return cmd_installed(args.stage, args.site)
        if args.cmd == "merge":
            print("\n".join(merge_machine_dirs(args.site, machine_roots(args.site))))
            return 0
        print("\n".join(env_lines(args.site)))
        return 0
    except bundlelib.BundleError as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"bundle: {exc.filename}: not found; {exc.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Which CUDA libraries must travel with a newer torch: compare the dynamic symbols its shared libraries
import with what the GPU machine's versions of those libraries export.

    python3 scripts/gpu/cuda-libs-check.py --consumer torch-2.14.0-cp312-...whl \\
        --lib nvidia_nccl_cu13-2.28.9-...whl nvidia_nccl_cu13-2.30.7-...whl \\
        --lib nvidia_cudnn_cu13-9.19.0.56-...whl nvidia_cudnn_cu13-9.24.0.43-...whl

For each `--lib MACHINE_WHEEL WANTED_WHEEL` pair: how many of the library's symbols the consumers import, and
which of those the machine's version does not export. A symbol missing there fails when first called (torch's
libraries are linked lazily, without BIND_NOW), so such a library has to be carried; one with none missing can
stay the machine's (version checks in Python, like torch's cuDNN check, are a separate matter). Needs `nm`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def extract_sos(whl: Path, dest: Path) -> list[Path]:
    out = []
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            base = name.rsplit("/", 1)[-1]
            if ".so" in base and not name.endswith("/"):
                z.extract(name, dest)
                out.append(dest / name)
    return out


def nm(path: Path, defined: bool) -> set[str]:
    flag = "--defined-only" if defined else "--undefined-only"
    res = subprocess.run(["nm", "-D", flag, str(path)], capture_output=True, text=True)
    return {line.split()[-1].split("@")[0] for line in res.stdout.splitlines() if line.strip()}


def needed(path: Path) -> list[str]:
    res = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True)
    return [line.split("[", 1)[1].rstrip("]") for line in res.stdout.splitlines() if "(NEEDED)" in line]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--consumer", type=Path, action="append", required=True, help="wheel whose .so files import"
    )
    ap.add_argument("--lib", type=Path, nargs=2, action="append", default=[], metavar=("MACHINE", "WANTED"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        imports: set[str] = set()
        sonames: set[str] = set()
        for i, whl in enumerate(args.consumer):
            for so in extract_sos(whl, root / f"c{i}"):
                imports |= nm(so, defined=False)
                sonames.update(needed(so))
        print(f"consumers: {', '.join(w.name for w in args.consumer)}")
        print(
            f"  NEEDED sonames: {' '.join(sorted(s for s in sonames if not s.startswith(('libc.', 'libm.'))))}"
        )
        for j, (have_whl, want_whl) in enumerate(args.lib):
            have: set[str] = set()
            want: set[str] = set()
            for so in extract_sos(have_whl, root / f"h{j}"):
                have |= nm(so, defined=True)
            for so in extract_sos(want_whl, root / f"w{j}"):
                want |= nm(so, defined=True)
            used = imports & (have | want)
            missing = sorted(used - have)
            status = "CARRY" if missing else "machine's is enough"
            print(
                f"{have_whl.name} -> {want_whl.name}: consumers import {len(used)} of its symbols; "
                f"{len(missing)} missing in the machine's: {status}"
            )
            if missing:
                print("  missing: " + " ".join(missing))
    return 0


if __name__ == "__main__":
    sys.exit(main())

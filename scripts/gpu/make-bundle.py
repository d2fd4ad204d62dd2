#!/usr/bin/env python3
"""Build the offline bundle that makes a newer vLLM run on the lent GPU machine, in parts of <= 52 MiB.

    python3 scripts/gpu/make-bundle.py --vllm 0.33.0            # -> bundle/vllm-0.33.0/call01 .. callNN

What goes in is read from scripts/gpu/vllm-VERSION.toml (wheels with the reason for each, paths to leave out);
what the machine already has from scripts/gpu/h200-machine.toml. Checked before anything is built: every wheel
that vLLM (or torch) names in Requires-Dist satisfies that requirement, and no wheel is carried at a version
the machine already has.

Steps: pip download --no-deps (cp312, manylinux x86_64) into a cache; pip install --no-deps --target a
scratch site; drop the listed paths; prune CUDA fat binaries to the GPU's compute capability (elfslim.py); tar
the tree into one zstd stream; cut it into parts, one per device call (call01 also carries libzstd in case the
machine has no zstd decoder). The manifest in each callNN folder names every part with size and sha256.
On the GPU machine: scripts/gpu/stage.sh (one call per part; the last one installs) -- see docs/gpu-bundle.md.
Needs: python3 >= 3.11 with `packaging`, pip, zstd, and the network to the package registry.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from email.parser import Parser
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
import bundlelib  # noqa: E402
import elfslim  # noqa: E402

MARKER_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "platform_machine": "x86_64",
    "platform_system": "Linux",
    "sys_platform": "linux",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}


def platform_args() -> list[str]:
    args = ["--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64"]
    for n in range(5, 40):
        args += ["--platform", f"manylinux_2_{n}_x86_64"]
    return args


def pip_common(python_version: str) -> list[str]:
    return ["--no-deps", "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]


def die(msg: str) -> None:
    print(f"make-bundle: {msg}", file=sys.stderr)
    raise SystemExit(2)


def load_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        die(f"{path}: no such file; write one (see scripts/gpu/vllm-0.33.0.toml)")
    except tomllib.TOMLDecodeError as exc:
        die(f"{path}: not valid TOML ({exc})")
    raise AssertionError


def wheel_metadata(whl: Path) -> tuple[str, str, list[Requirement]]:
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        msg = Parser().parsestr(z.read(name).decode())
    reqs = []
    for line in msg.get_all("Requires-Dist") or []:
        r = Requirement(line)
        if r.marker is None or r.marker.evaluate(MARKER_ENV):
            reqs.append(r)
    return canonicalize_name(msg["Name"]), msg["Version"], reqs


def find_wheel(cache: Path, name: str, version: str) -> Path | None:
    want = canonicalize_name(name)
    for whl in sorted(cache.glob("*.whl")):
        dist, ver = whl.name.split("-")[:2]
        if canonicalize_name(dist) == want and Version(ver) == Version(version):
            return whl
    return None


def download(cache: Path, wheels: dict[str, dict], python_version: str) -> dict[str, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, entry in wheels.items():
        whl = find_wheel(cache, name, entry["version"])
        if whl is None:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                *pip_common(python_version),
                *platform_args(),
            ]
            cmd += ["-d", str(cache), f"{name}=={entry['version']}"]
            print(f"  download {name}=={entry['version']}", flush=True)
            if subprocess.run(cmd).returncode != 0:
                die(
                    f"pip could not download {name}=={entry['version']} for cp{python_version.replace('.', '')}"
                )
            whl = find_wheel(cache, name, entry["version"])
            if whl is None:
                die(f"pip saved no wheel for {name}=={entry['version']} in {cache}")
        out[name] = whl
    return out


def check_pins(
    spec_path: Path,
    wheels: dict[str, dict],
    paths: dict[str, Path],
    machine: dict,
    left_out: dict | None = None,
) -> list[str]:
    """Each carried wheel must satisfy what vLLM and every other carried wheel require of it, and must not
    duplicate what the machine has. Returns notes: requirements of carried wheels that are neither carried
    nor on the machine (those named in the spec's `left_out` with their reason), and machine packages at a
    known version outside a carried wheel's requirement."""
    carried = {canonicalize_name(n): e["version"] for n, e in wheels.items()}
    machine_versions = {canonicalize_name(k): v for k, v in machine.get("versions", {}).items()}
    machine_names = {canonicalize_name(n) for n in machine.get("packages", [])} | set(machine_versions)
    reasons = {canonicalize_name(k): v for k, v in (left_out or {}).items()}
    problems, notes = [], []
    for name, entry in wheels.items():
        cname = canonicalize_name(name)
        if machine_versions.get(cname) == entry["version"]:
            problems.append(f"{name}=={entry['version']}: the machine already has this version; drop it")
    for whl in paths.values():
        dist, _version, reqs = wheel_metadata(whl)
        for r in reqs:
            rn = canonicalize_name(r.name)
            if rn in carried:
                if not r.specifier.contains(carried[rn], prereleases=True):
                    problems.append(f"{rn}=={carried[rn]}: {dist} requires {r}")
            elif rn in machine_names:
                have = machine_versions.get(rn)
                if have and not r.specifier.contains(have, prereleases=True):
                    notes.append(f"machine has {rn} {have}, {dist} asks {r}")
            elif rn in reasons:
                if dist == "vllm":
                    notes.append(f"left out: {r} ({reasons[rn]})")
            else:
                notes.append(
                    f"not carried, not on the machine: {r} ({dist}; carry it or add it to `left_out` in {spec_path.name})"
                )
    if problems:
        die(f"{spec_path}: " + "; ".join(problems))
    return notes


def install(site: Path, paths: dict[str, Path], python_version: str) -> None:
    if site.exists():
        shutil.rmtree(site)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--isolated", "--no-index", "--no-compile"]
    cmd += [*pip_common(python_version), *platform_args(), "--target", str(site), *map(str, paths.values())]
    print(f"  pip install --target {site} ({len(paths)} wheels)", flush=True)
    if subprocess.run(cmd).returncode != 0:
        die("pip install --target failed (see above)")
    shutil.rmtree(site / "bin", ignore_errors=True)


def drop_paths(site: Path, patterns: list[str]) -> list[dict]:
    dropped = []
    for pattern in patterns:
        hits = sorted(site.glob(pattern))
        if not hits:
            die(f"drop pattern {pattern!r} matches nothing in the installed tree; fix the spec")
        for hit in hits:
            size = (
                sum(f.stat().st_size for f in hit.rglob("*") if f.is_file())
                if hit.is_dir()
                else hit.stat().st_size
            )
            shutil.rmtree(hit) if hit.is_dir() else hit.unlink()
            dropped.append({"path": str(hit.relative_to(site)), "bytes": size})
    return dropped


def prune_tree(site: Path, sm: int) -> list[dict]:
    pruned = []
    for f in sorted(site.rglob("*.so*")):
        if not f.is_file():
            continue
        with open(f, "rb") as fh:
            if fh.read(4) != b"\x7fELF":
                continue
        r = elfslim.prune_file(f, f, sm)
        if r.bytes_zeroed or r.debug_zeroed:
            pruned.append(
                {
                    "path": str(f.relative_to(site)),
                    "entries_before": r.entries_before,
                    "entries_after": r.entries_after,
                    "device_code_zeroed": r.bytes_zeroed,
                    "debug_zeroed": r.debug_zeroed,
                }
            )
    return pruned


def tree_size(site: Path, top: str) -> int:
    p = site / top
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def write_stream(site: Path, out: Path, level: int, threads: int) -> tuple[int, str, int]:
    """tar the tree (sorted, owner 0) through `zstd`; returns (stream size, sha256, tar size)."""
    cmd = ["zstd", "-q", f"-{level}", f"-T{threads}", "--long=27", "-o", str(out), "-f", "-"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert proc.stdin is not None

    class Counter:
        n = 0

        def write(self, b: bytes) -> int:
            self.n += len(b)
            assert proc.stdin is not None
            proc.stdin.write(b)
            return len(b)

    counter = Counter()
    with tarfile.open(fileobj=counter, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path in sorted(site.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(site)))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isfile():
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
            elif info.isdir():
                tar.addfile(info)
            else:
                die(f"{path}: neither file nor folder; the bundle carries plain files only")
    proc.stdin.close()
    if proc.wait() != 0:
        die("zstd failed")
    return out.stat().st_size, bundlelib.sha256_file(out), counter.n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vllm", required=True, help="vLLM version; reads scripts/gpu/vllm-VERSION.toml")
    ap.add_argument("--out", type=Path, help="default: bundle/vllm-VERSION in the repository")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "kit-gpu-bundle" / "wheels")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a folder under /tmp)")
    ap.add_argument("--machine", type=Path, default=HERE / "h200-machine.toml")
    ap.add_argument(
        "--part-mib",
        type=float,
        default=52.0,
        help="size of one call's folder, MiB (default 52: a call carries 64 MiB with the repository's own files, "
        "8.4 MB on disk on 2026-12-02 and growing; a 58 MiB folder was refused that day)",
    )
    ap.add_argument(
        "--level", type=int, default=12, help="zstd level (default 12: 6 parts for 0.33.0, -6 gives 7)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-prune", action="store_true", help="keep device code for every GPU architecture")
    ap.add_argument("--check-only", action="store_true", help="download and check pins, build nothing")
    ap.add_argument(
        "--with",
        dest="optional",
        action="append",
        default=[],
        metavar="NAME",
        help="also carry the spec's [optional.NAME] paths (0.33.0: fa2, for TurboQuant); goes to bundle/vllm-VERSION-NAME",
    )
    args = ap.parse_args()

    spec_path = HERE / f"vllm-{args.vllm}.toml"
    spec = load_toml(spec_path)
    machine = load_toml(args.machine)
    if spec.get("vllm") != args.vllm:
        die(f"{spec_path}: key vllm is {spec.get('vllm')!r}, expected {args.vllm!r}")
    python_version = spec.get("python", "3.12")
    sm = int(spec.get("sm", 90))
    wheels: dict[str, dict] = spec.get("wheels", {})
    for name, entry in wheels.items():
        if not isinstance(entry, dict) or "version" not in entry or "why" not in entry:
            die(f"{spec_path}: wheels.{name} needs version and why")
    if shutil.which("zstd") is None:
        die("zstd is not installed here (Debian: apt-get install zstd)")
    optional: dict[str, dict] = spec.get("optional", {})
    for name in args.optional:
        if name not in optional:
            die(f"{spec_path}: no [optional.{name}]; there are: {', '.join(optional) or 'none'}")
    suffix = "".join(f"-{n}" for n in sorted(set(args.optional)))
    out = args.out or REPO / "bundle" / f"vllm-{args.vllm}{suffix}"
    work = args.work or Path("/tmp") / f"kit-bundle-build-{args.vllm}"
    t0 = time.time()

    print(f"[1/6] wheels ({len(wheels)}) into {args.cache}", flush=True)
    paths = download(args.cache, wheels, python_version)
    notes = check_pins(spec_path, wheels, paths, machine, spec.get("left_out", {}))
    for n in notes:
        print(f"  note: {n}")
    if args.check_only:
        print("check only: pins ok")
        return

    site = work / "site"
    print("[2/6] install into a scratch site", flush=True)
    install(site, paths, python_version)
    unpacked_by_wheel = {}
    for name, whl in paths.items():
        with zipfile.ZipFile(whl) as z:
            unpacked_by_wheel[name] = sum(i.file_size for i in z.infolist())

    print("[3/6] drop unused paths", flush=True)
    left_optional = [p for n, o in optional.items() if n not in args.optional for p in o["paths"]]
    dropped = drop_paths(site, [*spec.get("drop", []), *left_optional])
    pruned: list[dict] = []
    if not args.no_prune:
        print(f"[4/6] prune CUDA fat binaries to sm_{sm}", flush=True)
        pruned = prune_tree(site, sm)
    installed_bytes = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())

    contents = [
        {
            "name": n,
            "version": e["version"],
            "why": e["why"],
            "wheel": paths[n].name,
            "wheel_bytes": paths[n].stat().st_size,
            "wheel_sha256": bundlelib.sha256_file(paths[n]),
            "unpacked_bytes": unpacked_by_wheel[n],
        }
        for n, e in wheels.items()
    ]
    info = {
        "vllm": args.vllm,
        "python": python_version,
        "sm": None if args.no_prune else sm,
        "built": time.strftime("%Y-%m-%d %H:%M:%S"),
        "contents": contents,
        "dropped": dropped,
        "pruned": pruned,
        "installed_bytes": installed_bytes,
        "env": spec.get("env", {}),
        "prepend_ld_library_path": spec.get("prepend_ld_library_path", []),
        "merge_machine_dirs": spec.get("merge_machine_dirs", []),
        "left_out": spec.get("left_out", {}),
        "optional_carried": {n: optional[n]["why"] for n in sorted(set(args.optional))},
        "optional_left_out": {n: o["why"] for n, o in optional.items() if n not in args.optional},
    }
    (site / "KIT-BUNDLE.json").write_text(json.dumps(info, indent=1) + "\n")

    print(f"[5/6] tar | zstd -{args.level} ({installed_bytes / 1e6:.0f} MB installed)", flush=True)
    stream = work / "bundle.tar.zst"
    stream_size, stream_sha, tar_size = write_stream(site, stream, args.level, args.threads)
    info["tar_bytes"] = tar_size
    info["stream_bytes"] = stream_size

    print("[6/6] split into call folders", flush=True)
    libzstd = bundlelib.find_libzstd()
    if libzstd is None:
        die("no libzstd.so here to carry as the decoder")
    libzstd_real = Path(
        os.path.realpath(libzstd if "/" in libzstd else f"/usr/lib/x86_64-linux-gnu/{libzstd}")
    )
    # As few parts as --part-mib allows, all about the same size: the smaller each call's folder, the
    # more room the repository's own files keep within the device's 64 MiB a call.
    most = int(args.part_mib * bundlelib.MIB) - 64 * 1024  # room for the manifest
    carried = stream.stat().st_size + libzstd_real.stat().st_size
    count = -(-carried // most)
    part_size = -(-carried // count)
    first = part_size - libzstd_real.stat().st_size
    if out.exists():
        shutil.rmtree(out)
    flat = work / "parts"
    shutil.rmtree(flat, ignore_errors=True)
    with open(stream, "rb") as fh:
        parts = bundlelib.split_stream(fh, flat, part_size, first)
    bundle_id = f"vllm-{args.vllm}{suffix}-{'all' if args.no_prune else f'sm{sm}'}-{stream_sha[:12]}"
    manifest = bundlelib.Manifest(
        bundle=bundle_id,
        stream_sha256=stream_sha,
        stream_size=stream_size,
        parts=parts,
        extras={"libzstd.so.1": bundlelib.sha256_file(libzstd_real)},
        info=info,
    )
    for i, p in enumerate(parts, start=1):
        d = out / bundlelib.call_dir_name(i)
        d.mkdir(parents=True)
        os.replace(flat / p.name, d / p.name)
        (d / bundlelib.MANIFEST).write_text(manifest.to_json())
        if i == 1:
            shutil.copyfile(libzstd_real, d / "libzstd.so.1")
    (out / bundlelib.MANIFEST).write_text(manifest.to_json())
    stream.unlink()

    biggest = max(sum(f.stat().st_size for f in d.iterdir()) for d in out.glob("call*"))
    if biggest > args.part_mib * bundlelib.MIB:
        die(f"a call folder holds {biggest} bytes, more than --part-mib {args.part_mib}")
    rel = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    summary = render_summary(manifest, rel, tar_size, installed_bytes)
    (out / "CALLS.md").write_text(summary)
    print(summary)
    print(f"({time.time() - t0:.0f} s; this summary is also in {rel}/CALLS.md)")


def render_summary(manifest: bundlelib.Manifest, rel: Path, tar_size: int, installed_bytes: int) -> str:
    """The bundle in Markdown: what it carries and the device calls that stage it."""
    info = manifest.info
    mib = bundlelib.MIB
    n = len(manifest.parts)
    lines = [
        f"# Bundle {manifest.bundle}",
        "",
        f"Built {info['built']}: {n} parts, zstd stream {manifest.stream_size / mib:.1f} MiB "
        f"(tar {tar_size / mib:.0f} MiB; wheels {sum(c['wheel_bytes'] for c in info['contents']) / mib:.0f} MiB, "
        f"{sum(c['unpacked_bytes'] for c in info['contents']) / mib:.0f} MiB unpacked; installed tree after drops "
        f"{installed_bytes / mib:.0f} MiB). Device code dropped for other GPUs: "
        f"{sum(p['device_code_zeroed'] for p in info['pruned']) / mib:.0f} MiB; debug info and static symbols zeroed: "
        f"{sum(p['debug_zeroed'] for p in info['pruned']) / mib:.0f} MiB; paths dropped: "
        f"{sum(d['bytes'] for d in info['dropped']) / mib:.0f} MiB.",
        "",
        "| call | carry | part | bytes | sha256 (first 16) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i, p in enumerate(manifest.parts, start=1):
        c = bundlelib.call_dir_name(i)
        extra = " + libzstd.so.1" if i == 1 else ""
        lines.append(f"| {i} | `{rel}/{c}` | {p.name}{extra} | {p.size} | {p.sha256[:16]} |")
    lines += [
        "",
        "Device calls, back to back (the machine keeps /tmp only while warm, 30 s after a call):",
        "",
    ]
    for i in range(1, n + 1):
        c = f"{rel}/{bundlelib.call_dir_name(i)}"
        tail = "   # the last one unpacks into /tmp/site and runs the smoke checks" if i == n else ""
        lines.append(f'    run(carry=["{c}"], command="bash scripts/gpu/stage.sh {c}"){tail}')
    lines += [
        "",
        "Then in every later call: `source /tmp/site/kit-env.sh` before starting vLLM.",
        "",
        "| wheel | version | wheel MiB | unpacked MiB | why |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in info["contents"]:
        lines.append(
            f"| {c['name']} | {c['version']} | {c['wheel_bytes'] / mib:.1f} | {c['unpacked_bytes'] / mib:.1f} | {c['why']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

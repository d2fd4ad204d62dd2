#!/usr/bin/env python3
"""Find the Python packages a vLLM server really imports that the GPU machine lacks, without a GPU.

    python3 scripts/gpu/find-imports.py --python /tmp/kit-machine-sim/bin/python3 --site /tmp/find-site \\
        --vllm-wheel vllm-0.33.0-...whl [--machine scripts/gpu/h200-machine.toml] [--wheels DIR]

--python: a Python 3.12 that looks like the machine (scripts/gpu/rehearse.sh says how to make one): only
packages the machine has. --site: a folder where torch, triton and vllm of the target version are already
installed (`pip install --no-deps --target`), first on PYTHONPATH like the bundle there.

Loop: import what a Qwen3.5 server imports (IMPORTS below; then register the API server's routers on a
FastAPI app, as `vllm serve` does); on ModuleNotFoundError, install the missing distribution, pinned to
vLLM's Requires-Dist where vLLM names it: into --site when the machine lacks it (that is a wheel for the
bundle), into the --python environment when the machine has it. Ends with the list of distributions
installed into --site, to copy into scripts/gpu/vllm-VERSION.toml with a reason each (versions are the
newest pip chose within the pins; make-bundle.py then checks every pin among the carried wheels).
Each round imports vLLM afresh: about a minute on two cores. Errors other than a missing module stop it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

IMPORTS = [
    "vllm.entrypoints.cli.main",
    "vllm.entrypoints.cli.serve",
    "vllm.entrypoints.openai.api_server",
    "vllm.entrypoints.cli.benchmark.main",
    "vllm.benchmarks.serve",
    "vllm.benchmarks.datasets",
    "vllm.v1.engine.core",
    "vllm.v1.engine.async_llm",
    "vllm.v1.worker.gpu_worker",
    "vllm.v1.worker.gpu_model_runner",
    "vllm.v1.attention.backends.flash_attn",
    "vllm.v1.attention.backends.triton_attn",
    "vllm.v1.attention.backends.gdn_attn",
    "vllm.v1.attention.backends.turboquant_attn",
    "vllm.v1.spec_decode.eagle",
    "vllm.v1.sample.sampler",
    "vllm.model_executor.layers.quantization.inc",
    "vllm.model_executor.layers.quantization.auto_gptq",
    "vllm.model_executor.kernels.linear",
    "vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn",
    "vllm.model_executor.models.qwen3_5",
    "vllm.model_executor.models.qwen3_5_mtp",
    "vllm.model_executor.models.qwen3_vl",
    "vllm.tool_parsers",
    "vllm.reasoning",
    "vllm.compilation.backends",
]

PROBE = r"""
import importlib, sys, traceback
mods = sys.argv[1:]
try:
    for m in mods:
        importlib.import_module(m)
    from argparse import Namespace
    from fastapi import FastAPI
    from vllm.entrypoints.launchers.api_server.routers import register_api_routers
    class Args(Namespace):
        def __getattr__(self, key):
            return None
    app = FastAPI()
    app.state.args = args = Args()
    register_api_routers(args, app, ("generate",), None)
except ModuleNotFoundError as e:
    print("MISSING", e.name)
    sys.exit(3)
except Exception as e:
    last = traceback.extract_tb(e.__traceback__)[-1]
    print("ERROR", type(e).__name__, str(e)[:300], "at", last.filename, last.lineno)
    sys.exit(4)
print("ALL OK")
"""

# import name -> distribution, where they differ
DIST_OF = {
    "zmq": "pyzmq",
    "cv2": "opencv-python-headless",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "google": "protobuf",
    "cpuinfo": "py-cpuinfo",
    "jwt": "PyJWT",
    "dotenv": "python-dotenv",
    "multipart": "python-multipart",
    "pythonjsonlogger": "python-json-logger",
    "dns": "dnspython",
    "rpds": "rpds-py",
    "attr": "attrs",
    "tvm_ffi": "apache-tvm-ffi",
    "openai_harmony": "oss-harmony",
    "grpc": "grpcio",
    "dateutil": "python-dateutil",
    "lmformatenforcer": "lm-format-enforcer",
    "pkg_resources": "setuptools",
    "sklearn": "scikit-learn",
}


def vllm_requirements(wheel: Path) -> dict[str, Requirement]:
    env = {
        "extra": "",
        "python_version": "3.12",
        "platform_machine": "x86_64",
        "platform_system": "Linux",
        "sys_platform": "linux",
    }
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(z.read(meta).decode())
    out = {}
    for line in msg.get_all("Requires-Dist") or []:
        r = Requirement(line)
        if r.marker is None or r.marker.evaluate(env):
            out[canonicalize_name(r.name)] = r
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", required=True, type=Path)
    ap.add_argument("--site", required=True, type=Path)
    ap.add_argument("--vllm-wheel", required=True, type=Path)
    ap.add_argument("--machine", type=Path, default=Path(__file__).with_name("h200-machine.toml"))
    ap.add_argument("--wheels", type=Path, default=Path("/tmp/find-imports-wheels"))
    ap.add_argument("--rounds", type=int, default=80)
    args = ap.parse_args()
    with open(args.machine, "rb") as fh:
        machine = {canonicalize_name(n) for n in tomllib.load(fh)["packages"]}
    reqs = vllm_requirements(args.vllm_wheel)
    plat = ["--platform", "manylinux2014_x86_64"] + [
        a for n in range(5, 40) for a in ("--platform", f"manylinux_2_{n}_x86_64")
    ]
    pip = [str(args.python), "-m", "pip"]
    env = {**os.environ, "PYTHONPATH": str(args.site.resolve())}
    carried: list[str] = []
    for _ in range(args.rounds):
        res = subprocess.run(
            [str(args.python), "-c", PROBE, *IMPORTS], capture_output=True, text=True, env=env
        )
        line = next(
            (ln for ln in res.stdout.splitlines() if ln.startswith(("MISSING", "ERROR", "ALL OK"))), ""
        )
        print(line or res.stderr[-2000:], flush=True)
        if not line.startswith("MISSING"):
            break
        module = line.split()[1].split(".")[0]
        dist = canonicalize_name(DIST_OF.get(module, module.replace("_", "-")))
        if dist in ("vllm", "torch", "triton"):
            print(f"find-imports: {module} is part of {dist} itself; is --site complete?")
            return 2
        spec = f"{dist}{reqs[dist].specifier if dist in reqs else ''}"
        if dist in machine:
            print(f"  -> {spec}: the machine has it; installing into the --python environment")
            cmd = [*pip, "install", "-q", spec]
        else:
            print(f"  -> {spec}: the machine lacks it; a wheel for the bundle")
            got = subprocess.run(
                [
                    *pip,
                    "download",
                    "-q",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--python-version",
                    "3.12",
                    *plat,
                    "-d",
                    str(args.wheels),
                    spec,
                ]
            )
            if got.returncode:
                return 2
            wheels = [
                w for w in args.wheels.glob("*.whl") if canonicalize_name(re.split(r"-\d", w.name)[0]) == dist
            ]
            cmd = [
                *pip,
                "install",
                "-q",
                "--no-deps",
                "--no-index",
                "--target",
                str(args.site),
                *map(str, wheels),
            ]
            carried.append(max(wheels).name)
        if subprocess.run(cmd).returncode:
            return 2
    print("find-imports: wheels for the bundle:", *carried or ["none"], sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())

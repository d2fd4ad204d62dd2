"""`python -m serve smoke`: run the OpenAI-client smoke suite against a live endpoint.

What the suite expects (max_num_seqs, reasoning and tool parsers, speculative decoding) comes from,
in order: explicit flags, the launcher's plan file (docs/plan-json.md), then the endpoint itself.
Writes a JSON report, prints a table, exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from serve.client.endpoint import api_key_from
from serve.errors import KitError
from serve.launch.plan_document import parse as parse_plan
from serve.launch.profile import compile_answer_pattern
from serve.smoke.checks import (
    CHECKS,
    CheckResult,
    FactualQuestion,
    SmokeOptions,
    SuiteReport,
    build_context,
    run_suite,
    select_checks,
)

DEFAULT_REPORT = "run/smoke-report.json"
_STATUS_MARK = {"pass": "PASS", "fail": "FAIL", "skip": "skip"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", help="server root or .../v1 (default: the plan file's base_url)")
    parser.add_argument(
        "--api-key",
        help="bearer token sent on every request (default: $VLLM_API_KEY, then $OPENAI_API_KEY, else none)",
    )
    parser.add_argument(
        "--model", help="model name to send (default: plan's served_model_name, else the first listed)"
    )
    parser.add_argument(
        "--quality", action="store_true", help="also run the quality checks (real models only)"
    )
    parser.add_argument(
        "--report", default=DEFAULT_REPORT, help=f"JSON report path (default {DEFAULT_REPORT})"
    )
    parser.add_argument(
        "--plan-file",
        default=os.environ.get("SERVE_PLAN_FILE"),
        help="the launcher's plan.json: expectations come from its settings (default: $SERVE_PLAN_FILE)",
    )
    parser.add_argument(
        "--only", help="comma-separated check names (quality checks may be named); see --list"
    )
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument(
        "--max-num-seqs", type=int, help="concurrent requests to send (default: plan, else 4)"
    )
    parser.add_argument(
        "--max-model-len", type=int, help="expected max_model_len (default: plan, /v1/models)"
    )
    parser.add_argument(
        "--reasoning",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="require (or forbid) a reasoning parser; default: plan, else detect",
    )
    parser.add_argument(
        "--tools",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="require (or forbid) a tool-call parser; default: plan, else detect",
    )
    parser.add_argument(
        "--spec-tokens", type=int, help="num_speculative_tokens (0: off); default: plan, else detect"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="per-request timeout in seconds (default 300)"
    )
    parser.add_argument("--quality-max-tokens", type=int, default=4096, help="max_tokens for quality answers")
    parser.add_argument(
        "--needle-max-tokens", type=int, default=16384, help="cap on the needle context length"
    )
    parser.add_argument(
        "--spec-acceptance-floor", type=float, default=0.3, help="lowest acceptable draft acceptance"
    )
    parser.add_argument(
        "--factual",
        action="append",
        metavar="QUESTION=>REGEX",
        help="a question and the regular expression its answer must match, replacing the factual "
        "check's defaults (repeatable), e.g. 'What is 2 + 3?=>\\b5\\b'",
    )
    parser.add_argument(
        "--sampling",
        metavar="JSON",
        help='sampling fields for the quality checks\' requests, e.g. \'{"temperature": 0.6, "top_p": 0.95}\'',
    )
    parser.add_argument(
        "--tool-choice",
        choices=("auto", "required", "named"),
        default="auto",
        help="tool_round_trip's first call: auto (the model decides), or forced",
    )


def read_plan(path: str | Path) -> dict[str, Any]:
    """The plan file as a dict of the keys it knows (docs/plan-json.md: missing ones stay missing)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise KitError(
            f"--plan-file {path}: cannot read it ({exc.strerror}); run `python -m serve launch` first"
        ) from exc
    except json.JSONDecodeError as exc:
        raise KitError(
            f"--plan-file {path}: not JSON ({exc}); it should be the launcher's plan.json"
        ) from exc
    if not isinstance(data, dict):
        raise KitError(f"--plan-file {path}: expected a JSON object, got {type(data).__name__}")
    return parse_plan(
        data, f"--plan-file {path}"
    ).to_dict()  # the one model: extra keys dropped, types checked


def expectations_from_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """The option values a plan implies; keys it does not carry are left out (unknown, detect)."""
    settings = plan.get("settings") or {}
    out: dict[str, Any] = {}
    for key in ("max_num_seqs", "max_model_len", "num_speculative_tokens"):
        if isinstance(settings.get(key), int):
            out[key] = settings[key]
    if "reasoning_parser" in settings:
        out["expect_reasoning"] = settings["reasoning_parser"] is not None
    if "tool_call_parser" in settings:
        out["expect_tools"] = settings["tool_call_parser"] is not None
    return out


def parse_factual(items: list[str]) -> tuple[FactualQuestion, ...]:
    """``QUESTION=>REGEX`` items as questions; a malformed item or pattern is a KitError."""
    out = []
    for item in items:
        question, sep, pattern = item.partition("=>")
        if not sep or not question.strip() or not pattern:
            raise KitError(f"--factual {item!r}: expected QUESTION=>REGEX, e.g. 'What is 2 + 3?=>\\b5\\b'")
        try:
            compile_answer_pattern(pattern)
        except ValueError as exc:
            raise KitError(f"--factual {item!r}: {pattern!r}: {exc}") from None
        out.append(FactualQuestion(question.strip(), pattern, pattern))
    return tuple(out)


def parse_sampling(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KitError(
            f"--sampling {text!r}: not JSON ({exc}); give an object, e.g. '{{\"temperature\": 0.6}}'"
        ) from None
    if not isinstance(value, dict):
        raise KitError(f"--sampling {text!r}: must be a JSON object of request fields")
    return value


def options_from_args(args: argparse.Namespace, plan: dict[str, Any] | None) -> SmokeOptions:
    opts = SmokeOptions(
        request_timeout_s=args.timeout,
        quality_max_tokens=args.quality_max_tokens,
        needle_max_tokens=args.needle_max_tokens,
        spec_acceptance_floor=args.spec_acceptance_floor,
        sampling=parse_sampling(args.sampling),
        tool_choice=args.tool_choice,
    )
    if args.factual:
        opts.factual_questions = parse_factual(args.factual)
    for key, value in expectations_from_plan(plan or {}).items():
        setattr(opts, key, value)
        opts.sources[key] = "plan"
    flags = {
        "max_num_seqs": args.max_num_seqs,
        "max_model_len": args.max_model_len,
        "expect_reasoning": args.reasoning,
        "expect_tools": args.tools,
        "num_speculative_tokens": args.spec_tokens,
    }
    for key, value in flags.items():
        if value is not None:
            setattr(opts, key, value)
            opts.sources[key] = "flag"
    return opts


def format_table(results: list[CheckResult], width: int | None = None) -> str:
    width = width or shutil.get_terminal_size((120, 20)).columns
    name_w = max([len(r.name) for r in results] + [5])
    lines = [f"{'check':<{name_w}}  status  time    detail"]
    for r in results:
        head = f"{r.name:<{name_w}}  {_STATUS_MARK[r.status]:<6}  {r.duration_s:6.2f}s "
        room = max(20, width - len(head) - 1)
        detail = r.detail if len(r.detail) <= room else r.detail[: room - 3] + "..."
        lines.append(head + " " + detail)
    return "\n".join(lines)


def _summary(report: SuiteReport) -> str:
    c = report.counts()
    verdict = "PASSED" if report.passed else "FAILED"
    return (
        f"{verdict}: {c['pass']} passed, {c['fail']} failed, {c['skip']} skipped in {report.duration_s:.1f} s"
    )


def write_report(report: SuiteReport, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    tmp.replace(target)
    return target


def run(args: argparse.Namespace) -> int:
    if args.list:
        for spec in CHECKS.values():
            print(f"{spec.name:<16} {'quality' if spec.quality else 'plumbing':<9} {spec.summary}")
        return 0
    plan = read_plan(args.plan_file) if args.plan_file else None
    base_url = args.base_url or (plan or {}).get("base_url")
    if not base_url:
        raise KitError("--base-url is required (or --plan-file with a base_url)")
    model = args.model or (plan or {}).get("served_model_name")
    options = options_from_args(args, plan)
    if args.model or model:
        options.sources["model"] = "flag" if args.model else "plan"
    only = args.only.split(",") if args.only else None
    select_checks(quality=args.quality, only=only)  # a bad --only is an error before any request
    ctx = build_context(base_url, api_key=api_key_from(args.api_key), model=model, options=options)
    try:
        print(f"smoke: {ctx.base_url} model={ctx.model} {_describe(options)}", flush=True)
        report = run_suite(ctx, quality=args.quality, only=only, on_result=_print_progress)
    finally:
        ctx.close()
    print()
    print(format_table(report.results))
    path = write_report(report, args.report)
    print(f"\n{_summary(report)}; report: {path}")
    return 0 if report.passed else 1


def _describe(opts: SmokeOptions) -> str:
    def show(key: str) -> str:
        value = getattr(opts, key)
        return f"{key}={'detect' if value is None else value}({opts.sources.get(key, 'default')})"

    keys = ("max_num_seqs", "max_model_len", "expect_reasoning", "expect_tools", "num_speculative_tokens")
    return " ".join(show(k) for k in keys)


def _print_progress(result: CheckResult) -> None:
    print(
        f"  {_STATUS_MARK[result.status]} {result.name} ({result.duration_s:.2f} s)",
        file=sys.stderr,
        flush=True,
    )

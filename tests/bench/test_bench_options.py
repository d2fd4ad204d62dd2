"""`serve bench` options and planning: the seed's rows, concurrency levels, plan.json lookup, the
launcher command of A/B mode, and the errors a user sees."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

import pytest

from serve.bench import cli as bench
from serve.bench.stats import RowSpec
from serve.errors import KitError


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_rows_are_the_seeds_four_prompts_then_the_sweep_above_one():
    options = bench.options_from_args(_args())
    rows = bench.plan_rows(bench._with_levels(options, (1, 2, 3)))
    assert rows[:4] == [
        RowSpec("single", "Write a haiku", 128, 1),
        RowSpec("single", "Explain quantum computing in 3 paragraphs", 256, 1),
        RowSpec("single", "Write 8 paragraphs about deep learning history", 1024, 1),
        RowSpec("single", "What is 127*83? Show reasoning", 256, 1),
    ]
    assert rows[4:] == [
        RowSpec("sweep", "Explain quantum computing in 3 paragraphs", 256, 2),
        RowSpec("sweep", "Explain quantum computing in 3 paragraphs", 256, 3),
    ]
    # 4 single rows + c=2 + c=3, each (3 repeats + 1 warm-up) per stream
    assert bench.requests_in(rows, bench._with_levels(options, (1, 2, 3))) == (4 + 2 + 3) * 4


def test_quick_caps_tokens_and_repeats():
    args = _args("--quick")
    options = bench.options_from_args(args)
    assert (options.repeats, options.warmup, options.max_tokens_cap) == (1, 1, bench.QUICK_MAX_TOKENS)
    assert args.concurrency_text == "1,2"
    assert {r.max_tokens for r in bench.plan_rows(options)} == {bench.QUICK_MAX_TOKENS}
    explicit = bench.options_from_args(_args("--quick", "--repeats", "2", "--concurrency", "1,3"))
    assert explicit.repeats == 2


@pytest.mark.parametrize(
    ("text", "max_num_seqs", "levels", "warns"),
    [
        ("auto", 3, (1, 2, 3), False),
        ("auto", 1, (1,), False),
        ("auto", 256, (1, 2, 4, 8, 16, 32, 64, 128, 256), False),
        ("auto", None, (1,), True),
        ("3,1,2,2", 3, (1, 2, 3), False),
        ("1,4", 3, (1, 4), True),
        ("1,4", None, (1, 4), False),
    ],
)
def test_concurrency_levels(text, max_num_seqs, levels, warns):
    got, warning = bench.parse_concurrency(text, max_num_seqs)
    assert got == levels and (warning is not None) == warns


@pytest.mark.parametrize("text", ["0,1", "a,b", ""])
def test_bad_concurrency_is_an_actionable_error(text):
    with pytest.raises(KitError, match="--concurrency"):
        bench.parse_concurrency(text, 3)


def test_bad_repeats_and_warmup():
    with pytest.raises(KitError, match="--repeats"):
        bench.options_from_args(_args("--repeats", "0"))
    with pytest.raises(KitError, match="--warmup"):
        bench.options_from_args(_args("--warmup", "-1"))


def test_plan_file_lookup(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bench.find_plan_file(None, {}) is None  # optional when not there
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "plan.json").write_text("{}")
    assert bench.find_plan_file(None, {}) == Path("run/plan.json")
    assert bench.find_plan_file(None, {"SERVE_PLAN_FILE": "x.json"}) == Path("x.json")
    assert bench.find_plan_file("y.json", {"SERVE_PLAN_FILE": "x.json"}) == Path("y.json")


def test_read_plan_errors_name_the_file(tmp_path: Path):
    with pytest.raises(KitError, match=r"missing\.json does not exist"):
        bench.read_plan(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(KitError, match="is not JSON"):
        bench.read_plan(bad)
    bad.write_text("[1]")
    with pytest.raises(KitError, match="expected an object"):
        bench.read_plan(bad)


def test_no_endpoint_is_an_actionable_error(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KitError, match="pass --base-url"):
        bench.run(_args(), environ={})


def test_plan_without_base_url_and_ab_with_base_url(tmp_path: Path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"settings": {}}))
    with pytest.raises(KitError, match="no endpoint"):
        bench.run(_args("--plan-file", str(plan)), environ={})
    with pytest.raises(KitError, match="drop --base-url"):
        bench.run(_args("--ab", "a", "b", "--base-url", "http://x"), environ={})


def test_launch_argv_goes_through_the_launcher():
    argv = bench.launch_argv("seed", ["port=18650", "serving.max_num_seqs=2"], Path("out/A/plan.json"))
    assert argv == [
        sys.executable,
        "-m",
        "serve",
        "launch",
        "--profile",
        "seed",
        "--set",
        "port=18650",
        "--set",
        "serving.max_num_seqs=2",
        "--plan-file",
        "out/A/plan.json",
    ]


def test_ab_sets_combine_common_and_per_side():
    args = _args("--ab", "a", "b", "--set", "x=1", "--set-b", "y=2")
    assert args.ab == ["a", "b"] and args.set == ["x=1"] and args.set_a == [] and args.set_b == ["y=2"]


def test_ab_result_pairs_rows_by_key():
    row = {
        "key": "single|c1|128|Write a haiku",
        "spec": {"kind": "single", "prompt": "Write a haiku", "max_tokens": 128, "concurrency": 1},
        "output_tok_s": 10.0,
    }
    ab = bench.ab_result("A", {"rows": [row]}, "B", {"rows": [{**row, "output_tok_s": 15.0}]})
    assert ab["a"]["name"] == "A" and ab["b"]["name"] == "B"
    assert ab["rows"][0]["metrics"]["output_tok_s"]["b_over_a"] == pytest.approx(1.5)


def test_side_overrides_replace_common_ones():
    merged = bench.merge_sets(["serving.port=18650", "serving.max_num_seqs=2"], ["serving.port=18651"])
    assert merged == ["serving.max_num_seqs=2", "serving.port=18651"]
    assert bench.merge_sets(["a=1"], []) == ["a=1"]


def test_a_launcher_that_dies_fails_fast_with_its_log(tmp_path: Path):
    argv = [sys.executable, "-c", "import sys; print('no such profile: x'); sys.exit(2)"]
    server = bench.LaunchedServer(argv, tmp_path / "plan.json", tmp_path / "server.log", ready_timeout_s=5)
    with pytest.raises(KitError, match=r"exited with 2(.|\n)*no such profile: x"), server:
        server.start(api_key=None)
    assert server.proc is not None and server.proc.returncode == 2


def test_stop_ends_the_launched_process_group(tmp_path: Path):
    # a launcher stand-in that writes its plan and then hangs like a server that never answers
    plan = tmp_path / "plan.json"
    code = (
        "import json, sys, time, subprocess; "
        f"open({str(plan)!r}, 'w').write(json.dumps({{'base_url': 'http://127.0.0.1:9', 'model': 'm'}})); "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"
    )
    server = bench.LaunchedServer([sys.executable, "-c", code], plan, tmp_path / "log", ready_timeout_s=1)
    with pytest.raises(KitError, match="did not answer a completion"), server:
        server.start(api_key=None)
    assert server.proc is not None and server.proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(server.proc.pid, 0)  # the child in the group is gone too


def test_unreachable_endpoint_is_an_actionable_error(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    args = _args("--base-url", f"http://127.0.0.1:{port}", "--model", "m", "--quick", "--no-progress")
    args.out = str(tmp_path)
    with pytest.raises(KitError, match="is the server up"):
        bench.run(args, environ={})

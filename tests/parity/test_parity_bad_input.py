"""Bad input to `serve parity`: one clear line each, exit 2, nothing written. No vLLM needed (the checks
run before anything is launched). In-process through ``serve.cli.main`` (the code path of
``python -m serve``), about a second in all; test_the_command_line_itself runs one as a subprocess."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from serve.cli import main
from tests.parity.conftest import ParityRun
from tests.parity.conftest import run_parity as run_subprocess
from tests.smoke.fake_openai_server import serve_fake
from tests.support.vllm_server import free_port


@pytest.fixture
def run_parity(capsys, monkeypatch):
    for name in [k for k in os.environ if k.startswith("SERVE_")]:
        monkeypatch.delenv(name)

    def run(directory: Path, *args: str, timeout: float = 0) -> ParityRun:
        out_json = directory / "parity.json"
        rc = main(["parity", *args, "--json", str(out_json), "--out", str(directory / "out")])
        captured = capsys.readouterr()
        result = json.loads(out_json.read_text()) if out_json.exists() else None
        return ParityRun(rc, captured.out, captured.err, result)

    return run


def _one_line_error(run) -> str:
    assert run.rc == 2, run.log
    lines = [line for line in run.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.log
    assert "Traceback" not in run.err
    assert run.result is None, "a failed run must not write --json"
    return lines[0]


def test_unreachable_endpoints(tmp_path, run_parity):
    dead = f"http://127.0.0.1:{free_port()}"
    line = _one_line_error(run_parity(tmp_path, "--base-url-a", dead, "--base-url-b", dead, timeout=60))
    assert f"cannot reach {dead}" in line and "--base-url-a" in line


def test_unreachable_side_b_fails_before_side_a_runs(tmp_path, run_parity):
    dead = f"http://127.0.0.1:{free_port()}"
    with serve_fake() as url:  # side A answers; B does not: nothing is generated on A first
        line = _one_line_error(run_parity(tmp_path, "--base-url-a", url, "--base-url-b", dead, timeout=60))
    assert f"cannot reach {dead}" in line and "--base-url-b" in line


def test_a_server_without_token_ids_is_refused_not_compared_as_text(tmp_path, run_parity):
    # The FAKE OpenAI server (tests/smoke/fake_openai_server.py) stands for a non-vLLM endpoint: it
    # answers chat completions but sends neither token_ids nor logprobs. No real vLLM behaves so.
    with serve_fake() as url:
        line = _one_line_error(run_parity(tmp_path, "--base-url-a", url, "--base-url-b", url, timeout=60))
    assert "returns no token ids" in line and "needs vLLM" in line


@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        ("\n\n", "empty.txt", "no prompts in it"),
        ('"fine"\n{broken\n', "bad.jsonl", "line 2: not JSON"),
        ('{"text": "no prompt key"}\n', "bad.jsonl", 'a string "prompt"'),
    ],
)
def test_bad_prompts_file(tmp_path, content, name, expected, run_parity):
    path = tmp_path / name
    path.write_text(content)
    line = _one_line_error(run_parity(tmp_path, "--profile", "cpu-tiny", "--prompts", str(path), timeout=60))
    assert str(path) in line and expected in line


def test_missing_prompts_file(tmp_path, run_parity):
    line = _one_line_error(
        run_parity(tmp_path, "--profile", "cpu-tiny", "--prompts", str(tmp_path / "none.txt"))
    )
    assert "no such file" in line


def test_unknown_profile(tmp_path, run_parity):
    line = _one_line_error(run_parity(tmp_path, "--profile", "no-such-profile", timeout=60))
    assert "'no-such-profile'" in line and "cpu-tiny" in line  # names what ships


def test_unknown_override_key_fails_before_any_launch(tmp_path, run_parity):
    line = _one_line_error(
        run_parity(tmp_path, "--profile", "cpu-tiny", "--set-b", "serving.nope=1", timeout=60)
    )
    assert "unknown key 'serving.nope'" in line


@pytest.mark.parametrize("value", ["1.5", "-0.1", "95"])
def test_threshold_out_of_range(tmp_path, value, run_parity):
    line = _one_line_error(run_parity(tmp_path, "--profile", "cpu-tiny", "--threshold", value, timeout=60))
    assert f"--threshold {float(value)}" in line and "between 0 and 1" in line


def test_sides_without_a_target_and_overrides_on_a_live_side(tmp_path, run_parity):
    url = f"http://127.0.0.1:{free_port()}"
    line = _one_line_error(run_parity(tmp_path, "--base-url-a", url, timeout=60))
    assert "side B has no target" in line
    line = _one_line_error(
        run_parity(
            tmp_path, "--base-url-a", url, "--profile", "cpu-tiny", "--set-a", "serving.max_num_seqs=1"
        )
    )
    assert "side A is the live endpoint" in line
    line = _one_line_error(run_parity(tmp_path, "--base-url-a", url, "--ab", "cpu-tiny", "cpu-tiny-mtp"))
    assert "--ab launches both sides" in line


def test_failed_run_leaves_an_existing_json_alone(tmp_path, run_parity):
    previous = tmp_path / "parity.json"
    previous.write_text('{"from": "an earlier run"}\n')
    dead = f"http://127.0.0.1:{free_port()}"
    run = run_parity(tmp_path, "--base-url-a", dead, "--base-url-b", dead, timeout=60)
    assert run.rc == 2
    assert previous.read_text() == '{"from": "an earlier run"}\n'


def test_the_command_line_itself(tmp_path):
    """The same refusal through `python -m serve parity` in a subprocess: exit status and stderr as a
    shell sees them (about 3 s: the imports)."""
    dead = f"http://127.0.0.1:{free_port()}"
    run = run_subprocess(tmp_path, "--base-url-a", dead, "--base-url-b", dead, timeout=60)
    assert run.rc == 2 and run.result is None, run.log
    assert run.err.strip().splitlines() == [
        f"error: cannot reach {dead} (ConnectError: [Errno 111] Connection refused); is the server up? "
        "check --base-url-a"
    ]

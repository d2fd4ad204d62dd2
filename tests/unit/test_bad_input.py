"""Bad input of any kind: exit code 2, one line on stderr that names the file/key/value and what to do,
nothing on stdout, nothing started or written."""

from __future__ import annotations

import os
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


def test_at_least_twenty_cases():
    assert len(CASES) >= 20

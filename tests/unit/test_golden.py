"""Golden renders: every shipped profile x GPU x engine, against reviewed files in tests/golden/."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from serve import config_files
from tests.support.golden import golden_text, outcome

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
PROFILES = config_files.shipped("profiles")


def test_every_profile_has_a_golden_file():
    assert PROFILES, "no shipped profiles found"
    missing = [p for p in PROFILES if not (GOLDEN / f"{p}.txt").is_file()]
    assert not missing or os.environ.get("UPDATE_GOLDEN"), f"no golden file for {missing}"


@pytest.mark.parametrize("profile", PROFILES)
def test_golden(profile):
    path = GOLDEN / f"{profile}.txt"
    text = golden_text(profile)
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.read_text() == text, f"render of {profile} changed; review and UPDATE_GOLDEN=1 if intended"


SEED_COMMAND = """vllm serve Lorbus/Qwen3.6-27B-int4-AutoRound \
  --dtype half --max-model-len 262144 --gpu-memory-utilization 0.85 --kv-cache-dtype tq-t4nc \
  --max-num-seqs 3 --reasoning-parser qwen3 --enable-auto-tool-choice --tool-call-parser qwen3_xml \
  --port 8888 --host 0.0.0.0 --trust-remote-code --compilation-config.cudagraph_mode none \
  --speculative-config '{"method": "mtp", "num_speculative_tokens": 1}'"""


def _flag_pairs(argv: list[str]) -> set[tuple[str, str | None]]:
    pairs: set[tuple[str, str | None]] = set()
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--"):
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
            pairs.add((token, value))
            i += 2 if value is not None else 1
        else:
            pairs.add(("<positional>", token))
            i += 1
    return pairs


def test_seed_profile_renders_the_seed_card_command_flag_for_flag():
    _, argv = outcome("qwen3.6-27b-rtx5090", "rtx5090", "tq-fork")
    assert argv is not None
    assert _flag_pairs(argv) == _flag_pairs(shlex.split(SEED_COMMAND))


def test_seed_profile_on_mainline_uses_the_mainline_turboquant_name():
    _, argv = outcome("qwen3.6-27b-rtx5090", "rtx5090", "vllm-0.24")
    assert argv is not None and "turboquant_4bit_nc" in argv


def test_seed_profile_on_an_old_vllm_is_refused_on_32gb_since_fp8_cannot_hold_262k():
    text, argv = outcome("qwen3.6-27b-rtx5090", "rtx5090", "no-turboquant")
    assert argv is None and "does not fit" in text and "fp8_e4m3" in text


def test_seed_profile_on_an_old_vllm_falls_back_to_fp8_and_says_so():
    text, argv = outcome("qwen3.6-27b-rtx5090", "rtx-pro-6000", "no-turboquant")
    assert argv is not None and argv[argv.index("--kv-cache-dtype") + 1] == "fp8_e4m3"
    assert "falling back to fp8" in text


def test_fp8_on_ampere_is_e5m2():
    _, argv = outcome("qwen3.6-27b-h100", "a100", "vllm-0.24")
    assert argv is not None and argv[argv.index("--kv-cache-dtype") + 1] == "fp8_e5m2"


def test_seed_profile_on_h100_with_fp8_gets_bfloat16():
    text, argv = outcome("qwen3.6-27b-rtx5090-fast", "h100", "vllm-0.24")
    assert argv is not None and argv[argv.index("--dtype") + 1] == "bfloat16"
    assert "changed dtype from 'half'" in text


def test_turboquant_with_mtp_turns_graphs_off_and_states_the_cost():
    text, argv = outcome("qwen3.6-27b-rtx5090", "h100", "vllm-0.24")
    assert argv is not None and argv[argv.index("--compilation-config.cudagraph_mode") + 1] == "none"
    assert "87 to 20 tok/s" in text


def test_explicit_cudagraph_mode_wins_with_a_loud_warning():
    text, argv = outcome("qwen3.6-27b-rtx5090-fast", "rtx5090", "vllm-0.24")
    assert (
        argv is not None
        and argv[argv.index("--compilation-config.cudagraph_mode") + 1] == "full_and_piecewise"
    )
    assert "WARNING [graphs-off-sm12x-mtp]" in text


def test_max_model_len_auto_takes_the_planners_answer():
    text, argv = outcome("qwen3.6-27b-rtx5090-fast", "rtx5090", "vllm-0.24")
    assert argv is not None
    chosen = int(argv[argv.index("--max-model-len") + 1])
    assert 8192 <= chosen < 262144
    assert "rule:memory-fit" in text


def test_h100_profile_keeps_graphs_on():
    _, argv = outcome("qwen3.6-27b-h100", "h100", "vllm-0.24")
    assert argv is not None and "--compilation-config.cudagraph_mode" not in argv
    assert "--enforce-eager" not in argv


def test_marlin_rule_on_hopper_at_low_batch_only():
    text, argv = outcome("qwen3.6-27b-rtx5090-fast", "h100", "vllm-0.24")
    assert argv is not None and "VLLM_DISABLED_KERNELS = 'MacheteLinearKernel'" in text
    text, _ = outcome("qwen3.6-27b-h100", "h100", "vllm-0.24")  # max_num_seqs 8: not measured there
    assert "VLLM_DISABLED_KERNELS" not in text
    text, _ = outcome("qwen3.6-27b-rtx5090-fast", "rtx5090", "vllm-0.24")  # no Machete on Blackwell
    assert "VLLM_DISABLED_KERNELS" not in text

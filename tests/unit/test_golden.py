"""Golden renders: every shipped profile x GPU x engine, against reviewed files in tests/golden/."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from serve.launch import config_files
from tests.support.golden import GPUS, RENDERS_AS, described_plan, golden_text, outcome

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
PROFILES = config_files.shipped("profiles")
# The newest mainline engine described: the rules below that are not keyed on the version fire there as
# on 0.24, where MTP on this hybrid model is now refused (rule spec-gdn-hybrid-needs-0.28).
MAINLINE = "vllm-0.33"
# The seed card's speculative config, typed on the command line: the explicit override that waives the
# refusal of MTP on engines before vLLM 0.28 (the fork, 0.19, 0.24).
SEED_SPEC_OVERRIDE = ["serving.speculative={method: mtp, num_speculative_tokens: 1}"]


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


@pytest.mark.parametrize("engine, twin", sorted(RENDERS_AS.items()))
def test_engines_left_out_of_the_golden_files_render_as_their_twin(engine, twin):
    """vllm-0.32 is left out of the golden files because every render equals vllm-0.33's (names aside):
    the day one differs, this fails and the engine goes back into the golden files."""

    def anonymous(text: str, name: str) -> str:
        version = config_files.read_yaml(config_files.resolve("engines", name, option="test"))["version"]
        return text.replace(f"{name} {version}", "ENGINE").replace(name, "ENGINE")

    for profile in PROFILES:
        for gpu in GPUS:
            mine, theirs = outcome(profile, gpu, engine)[0], outcome(profile, gpu, twin)[0]
            assert anonymous(mine, engine) == anonymous(theirs, twin), (
                f"{profile} --gpu {gpu}: {engine} no longer renders as {twin}; drop it from RENDERS_AS"
            )


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
    """The card's command stays reproducible on its fork (0.19.1rc1), but only with the speculative
    config typed explicitly: before vLLM 0.28 MTP output on this Gated DeltaNet model drifts from
    greedy (PR 51812), so without the override the plan is refused (next test), and with it the
    render says loudly that the refusal was waived."""
    text, argv = outcome("qwen3.6-27b-rtx5090", "rtx5090", "tq-fork", SEED_SPEC_OVERRIDE)
    assert argv is not None
    assert _flag_pairs(argv) == _flag_pairs(shlex.split(SEED_COMMAND))
    assert "WARNING [spec-gdn-hybrid-needs-0.28] REFUSAL WAIVED" in text


def test_seed_profile_on_its_fork_is_refused_without_the_override():
    text, argv = outcome("qwen3.6-27b-rtx5090", "rtx5090", "tq-fork")
    assert argv is None
    assert "vLLM PR 51812" in text and "pip install -U 'vllm>=0.28.0'" in text
    assert "--set 'serving.speculative={method: mtp, num_speculative_tokens: 1}'" in text


def test_seed_profile_on_mainline_uses_the_mainline_turboquant_name():
    _, argv = outcome("qwen3.6-27b-rtx5090", "rtx5090", MAINLINE)
    assert argv is not None and "turboquant_4bit_nc" in argv


def test_seed_profile_on_an_old_vllm_is_refused_on_32gb_since_fp8_cannot_hold_262k():
    text, argv = outcome("qwen3.6-27b-rtx5090", "rtx5090", "no-turboquant", SEED_SPEC_OVERRIDE)
    assert argv is None and "does not fit" in text and "fp8_e4m3" in text


def test_seed_profile_on_an_old_vllm_falls_back_to_fp8_and_says_so():
    text, argv = outcome("qwen3.6-27b-rtx5090", "rtx-pro-6000", "no-turboquant", SEED_SPEC_OVERRIDE)
    assert argv is not None and argv[argv.index("--kv-cache-dtype") + 1] == "fp8_e4m3"
    assert "falling back to fp8" in text


def test_fp8_on_ampere_is_e5m2():
    _, argv = outcome("qwen3.6-27b-h100", "a100", MAINLINE)
    assert argv is not None and argv[argv.index("--kv-cache-dtype") + 1] == "fp8_e5m2"


def test_seed_profile_on_h100_with_fp8_gets_bfloat16():
    text, argv = outcome("qwen3.6-27b-rtx5090-fast", "h100", MAINLINE)
    assert argv is not None and argv[argv.index("--dtype") + 1] == "bfloat16"
    assert "changed dtype from 'half'" in text


def test_turboquant_with_mtp_turns_graphs_off_and_states_the_cost():
    """Only for a speculative config the user typed: the profile's own is turned off (next test)."""
    text, argv = outcome("qwen3.6-27b-rtx5090", "h100", MAINLINE, SEED_SPEC_OVERRIDE)
    assert argv is not None and argv[argv.index("--compilation-config.cudagraph_mode") + 1] == "none"
    assert "87 to 20 tok/s" in text
    assert "[turboquant-spec-not-lossless]" in text and "[turboquant-spec-off]" not in text


@pytest.mark.parametrize("gpu", ["rtx5090", "h100", "h200"])
def test_seed_profile_on_mainline_turns_mtp_off_and_keeps_graphs(gpu):
    """TurboQuant + MTP is not lossless and costs CUDA graphs on 0.33 (docs/gpu.md, 2026-12-01 and
    2026-12-02): the seed's 4-bit KV stays, its MTP goes, and no rule that reads MTP acts or warns."""
    text, argv = outcome("qwen3.6-27b-rtx5090", gpu, MAINLINE)
    assert argv is not None and argv[argv.index("--kv-cache-dtype") + 1] == "turboquant_4bit_nc"
    assert "--speculative-config" not in argv and "--compilation-config.cudagraph_mode" not in argv
    assert "  speculative_config = None  [rule:turboquant-spec-off]" in text
    assert "--set 'serving.speculative={method: mtp, num_speculative_tokens: 1}'" in text  # how to keep it
    for rule in ("graphs-off-turboquant-spec", "turboquant-spec-not-lossless", "graphs-off-sm12x-mtp"):
        assert f"[{rule}]" not in text and f"rule:{rule}" not in text
    assert "REFUSED" not in text


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_h100_profile_runs_mtp_3_and_its_defaults_still_fit(gpu):
    _, argv = outcome("qwen3.6-27b-h100", gpu, MAINLINE)
    assert argv is not None
    spec = json.loads(argv[argv.index("--speculative-config") + 1])
    assert spec == {"method": "mtp", "num_speculative_tokens": 3}
    fit = described_plan("qwen3.6-27b-h100", gpu, MAINLINE, ()).memory
    assert fit is not None and fit["verdict"] in ("ok", "warn")
    assert fit["max_model_len"] == 262144


def test_explicit_cudagraph_mode_wins_with_a_loud_warning():
    text, argv = outcome("qwen3.6-27b-rtx5090-fast", "rtx5090", MAINLINE)
    assert (
        argv is not None
        and argv[argv.index("--compilation-config.cudagraph_mode") + 1] == "full_and_piecewise"
    )
    assert "WARNING [graphs-off-sm12x-mtp]" in text


def test_max_model_len_auto_takes_the_planners_answer():
    text, argv = outcome("qwen3.6-27b-rtx5090-fast", "rtx5090", MAINLINE)
    assert argv is not None
    chosen = int(argv[argv.index("--max-model-len") + 1])
    assert 8192 <= chosen < 262144
    assert "rule:memory-fit" in text


def test_h100_profile_keeps_graphs_on():
    _, argv = outcome("qwen3.6-27b-h100", "h100", MAINLINE)
    assert argv is not None and "--compilation-config.cudagraph_mode" not in argv
    assert "--enforce-eager" not in argv


def test_int4_kernel_rules_on_hopper():
    """On 0.33 (humming-kernels pinned) Humming up to 16 sequences; on an engine before it Marlin at low batch
    only, through --linear-backend where the engine has it (tests/unit/test_rules_versions.py covers the
    environment variable on an engine without the flag); neither off Hopper."""

    def backend(profile: str, gpu: str, engine: str) -> str | None:
        text, argv = outcome(profile, gpu, engine)
        assert argv is not None and "VLLM_DISABLED_KERNELS" not in text
        return argv[argv.index("--linear-backend") + 1] if "--linear-backend" in argv else None

    assert backend("qwen3.6-27b-rtx5090-fast", "h100", MAINLINE) == "humming"
    assert backend("qwen3.6-27b-h100", "h100", MAINLINE) == "humming"  # max_num_seqs 8
    assert backend("qwen3.6-27b-rtx5090-fast", "h100", "vllm-0.32") == "marlin"
    assert backend("qwen3.6-27b-h100", "h100", "vllm-0.32") is None  # 8 > Marlin's 4: vLLM's Machete
    assert backend("qwen3.6-27b-rtx5090-fast", "rtx5090", MAINLINE) is None  # no Machete on Blackwell

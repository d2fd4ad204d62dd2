"""The pure parts of tests/gpu/levers.py and compare.py that the H200 runs rest on: how a lever's flag joins
the kit's own command, which checkpoints a run writes, and what a server's start is read as from its vLLM log.
The log parsing is tested on real vLLM 0.33.0 logs from the H200 levers run (docs/gpu-results/2026-12-02-levers,
tails kept by levers.keep_logs). Well under a second; needs no GPU and no vLLM."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "docs/gpu-results/2026-12-02-levers/logs"
sys.path.insert(0, str(ROOT / "tests/gpu"))

import compare  # noqa: E402
import levers  # noqa: E402

KIT = ["vllm", "serve", "/m", "--max-num-seqs", "4", "--linear-backend", "marlin", "--port", "8800"]


def test_a_flag_the_kit_renders_gets_the_levers_value_in_place():
    out = levers.with_flags(KIT, ["--linear-backend", "machete"])
    assert out == [*KIT[:6], "machete", *KIT[7:]]
    assert out.count("--linear-backend") == 1


def test_new_flags_are_appended_switches_and_values_alike():
    extra = [
        "--max-num-batched-tokens",
        "2048",
        "--no-async-scheduling",
        "--compilation-config",
        '{"a": [1]}',
    ]
    assert levers.with_flags(KIT, extra) == [*KIT, *extra]
    assert levers.with_flags(KIT, []) == KIT


def test_every_lever_server_has_benches_and_parity_names_its_own_servers():
    for phase, servers in levers.LEVER_PHASES.items():
        assert all(name in levers.BENCHES for name in servers), phase
        for reference, other in levers.PARITY_PAIRS.get(phase, []):
            assert reference in servers and other in servers, (phase, reference, other)


def test_a_run_writes_only_the_checkpoints_its_phases_serve():
    assert levers.checkpoints_needed(["levers", "spec-graphs", "int4", "int4-spec"]) == {"agree"}
    assert levers.checkpoints_needed(["ceiling"]) == {"agree", "random"}
    assert levers.checkpoints_needed(["plain"]) == {"random"}


@pytest.mark.parametrize(
    ("server", "sizes", "kernels"),
    [
        ("kit16", [1, 2, 4, 8, 16, 24, 32], ["MacheteLinearKernel"]),  # max_num_seqs 16: the engine's pick
        ("agree-mtp3-capture12", [1, 2, 4, 8, 12, 16, 24, 32], ["MarlinLinearKernel"]),
        ("kit", [1, 2, 4, 8], ["MarlinLinearKernel"]),
    ],
)
def test_a_servers_start_is_read_from_its_vllm_log(tmp_path, server, sizes, kernels):
    shutil.copy(LOGS / f"{server}.log", tmp_path / f"{server}.vllm.log")
    facts = compare.startup_facts(tmp_path, server)
    assert facts["cudagraph_capture_sizes"] == sizes
    assert facts["cudagraph_mode"] == "FULL_AND_PIECEWISE"
    assert facts["graph_capture_s"] > 0 and facts["init_engine_s"] > facts["compilation_s"] > 0
    assert facts["kv_cache_tokens"] > 0
    assert compare.int4_kernels(tmp_path, server) == kernels


def test_piecewise_is_read_as_such_and_a_missing_log_gives_nothing(tmp_path):
    shutil.copy(LOGS / "agree-mtp3-piecewise.log", tmp_path / "pw.vllm.log")
    assert compare.startup_facts(tmp_path, "pw")["cudagraph_mode"] == "PIECEWISE"
    assert compare.startup_facts(tmp_path, "absent") == {}

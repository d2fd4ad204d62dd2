"""The memory planner against vLLM 0.33.0's own log lines on an H200
(docs/gpu-results/2026-12-02-ceiling/run1): the shape-exact Qwen3.6-27B INT4 AutoRound checkpoint
(``python -m serve synth-model --agreeing-mtp``), ``--kv-cache-memory-bytes 4294967296``, fp8_e4m3 KV,
max_model_len 8192, max_num_seqs 4, prefix caching left to vLLM (on for hybrid models: "Mamba cache mode
is set to 'align'"), the Triton GDN prefill (rule no-flashinfer-gdn-prefill), no MTP and MTP 1, 2, 3.
Exact, to the token: with the KV bytes given there is no overhead estimate in the way, and every term is
integer arithmetic vLLM does the same way.

vLLM (kv_cache_planning.get_kv_cache_configs, kv_cache_utils.get_max_concurrency_for_kv_cache_config):
num_blocks = 4 GiB // (group_size x page), a request takes cdiv(8192, block_size) attention blocks plus
2 + n blocks for each of the 3 GDN groups (MambaSpec.max_memory_usage_bytes in align mode), and
"GPU KV cache size" = int(num_blocks / blocks per request x 8192). No MTP: 83 blocks of 16 pages of 1568
tokens, 6 + 3 x 2 per request; MTP n: 77 blocks of 17 pages (the drafter's attention layer; the GDN groups
carry 3 padding layers), 6 + 3 x (2 + n). Before this test the plans of that run said 75,548 / 52,565 /
42,052 / 35,043 (``vllm_reported_tokens``: prefix caching taken as off, 1 + n state blocks) and 123,872 /
110,880 / 107,200 / 102,400 (``kv_capacity_tokens``, then the tokens one request could hold).

Inputs are the plans' settings as the rules left them and the model read from the checkpoint's config.json
as synth-model writes it (no weights). Cost: a few planner calls and four small log reads, well under 1 s."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from serve.checkpoint import synth_model
from serve.launch import memory, memory_fit, probes
from serve.launch.facts import model_facts_from_config

RUN = Path(__file__).resolve().parents[2] / "docs/gpu-results/2026-12-02-ceiling/run1"
TOKENS = ("<|endoftext|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")

# run -> (vLLM's "Setting attention block size to N tokens", its "GPU KV cache size: N tokens")
MEASURED = {
    "agree-nospec": (1568, 56_661),
    "agree-mtp1": (1584, 42_052),
    "agree-mtp2": (1600, 35_043),
    "agree-mtp3": (1600, 30_037),
}


def _model():
    config = synth_model.build_config(synth_model.FULL, {t: i for i, t in enumerate(TOKENS)})
    facts = model_facts_from_config(config, source="synth-model full")
    # The weights' size only gates the fit (computable); with the KV bytes given it is not used.
    return facts.model_copy(update={"weight_bytes": 19_547_547_104})


def _settings(run: str) -> dict:
    plan = json.loads((RUN / f"{run}.plan.json").read_text())
    return {d["setting"]: d["value"] for d in plan["decisions"]}


@pytest.mark.parametrize("run", sorted(MEASURED))
def test_the_h200_ceiling_log_lines_are_reproduced_to_the_token(run):
    block, tokens = MEASURED[run]
    log = (RUN / f"{run}.log").read_text(errors="replace")
    assert f"Setting attention block size to {block} tokens" in log
    assert re.search(rf"GPU KV cache size: {tokens:,} tokens", log)
    assert "Mamba cache mode is set to 'align'" in log and "Using Triton/FLA GDN prefill kernel" in log

    settings = _settings(run)
    assert settings["kv_cache_memory_bytes"] == 4 * 2**30 and settings["gdn_prefill_backend"] == "triton"
    assert settings["enable_prefix_caching"] is None  # vLLM's default: on for a hybrid model on 0.33
    result = memory_fit.fit(settings, probes.gpu_facts("h200"), probes.engine_facts("vllm-0.33"), _model())

    n = (settings.get("speculative_config") or {}).get("num_speculative_tokens", 0)
    assert result.block_size == block
    assert result.num_blocks == (83 if n == 0 else 77)
    assert result.vllm_reported_tokens == tokens
    assert result.kv_capacity_tokens == tokens
    assert result.full_length_seqs == pytest.approx(result.num_blocks / (6 + 3 * (2 + n)))


def test_the_config_json_is_the_runs_model():
    """The shape the test plans for is the one the run's plans read from the checkpoint they served."""
    plan = json.loads((RUN / "agree-mtp1.plan.json").read_text())
    ran, ours = plan["facts"]["model"], _model()
    for key in (
        "full_attention_layers",
        "linear_attention_layers",
        "num_key_value_heads",
        "head_dim",
        "mtp_layers",
        "torch_dtype",
        "linear_attention",
    ):
        assert getattr(ours, key) == ran[key], key
    assert ours.mamba_ssm_dtype == "float32"


# ------------------------------------------------------------------ FlashInfer's GDN prefill checkpoints


def test_flashinfer_gdn_prefill_adds_a_checkpoint_block_per_gdn_group():
    """The same no-MTP plan with vLLM's default GDN prefill (auto: FlashInfer on SM90). vLLM 0.33 source, not
    measured: one more state block per GDN group (3 instead of 2) and a block size that is a multiple of 64:
    64 x ceil(3,207,168 / (64 x 2048)) = 1600. 4 GiB // (16 x 1600 x 2048) = 81 blocks; a request takes
    cdiv(8192, 1600) = 6 + 3 x 3 = 15: int(81 / 15 x 8192) = 44,236 tokens."""
    settings = {**_settings("agree-nospec"), "gdn_prefill_backend": None}
    result = memory_fit.fit(settings, probes.gpu_facts("h200"), probes.engine_facts("vllm-0.33"), _model())
    assert result.block_size == 1600
    assert result.num_blocks == 4 * 2**30 // (16 * 1600 * 2048) == 81
    assert result.vllm_reported_tokens == int(81 / 15 * 8192) == 44_236


@pytest.mark.parametrize(
    "gpu, engine, change, expected",
    [
        ("h200", "vllm-0.33", {}, True),  # auto on Hopper
        ("h200", "vllm-0.33", {"gdn_prefill_backend": "flashinfer"}, True),
        ("h200", "vllm-0.33", {"gdn_prefill_backend": "triton"}, False),
        ("h200", "vllm-0.33", {"enable_prefix_caching": False}, False),  # no align mode
        ("h200", "vllm-0.32", {}, False),  # 0.32's GDN layer exports no checkpoints
        ("rtx5090", "vllm-0.33", {}, True),  # SM120, key heads of 128, CUDA 13 wheel
        ("rtx4090", "vllm-0.33", {}, False),  # SM89: Triton
    ],
)
def test_when_the_checkpoint_block_is_counted(gpu, engine, change, expected):
    model = _model()
    eng = probes.engine_facts(engine)
    settings = {"gdn_prefill_backend": None, "enable_prefix_caching": None, **change}
    prefix = memory_fit.prefix_caching_on(settings, eng, model)
    assert memory_fit.gdn_prefill_checkpoints(settings, probes.gpu_facts(gpu), eng, model, prefix) is expected


def test_the_checkpoint_alignment_is_ignored_without_align_mode():
    none = memory.CacheParams.cuda(prefix_caching=False, prefill_checkpoint_alignment=64)
    assert none.prefill_checkpoint_alignment == 0
    layout = memory.cache_layout(memory.QWEN36_27B, "fp8", cache=none)
    assert (layout.block_size, layout.linear_blocks_per_seq) == (1568, 1)

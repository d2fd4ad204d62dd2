"""The "bigram" agreeing-MTP construction (serve.checkpoint.bigram), checked with an independent numpy
forward pass over the values as written (bf16 bytes, int4 words), not over the module's own claims:
embedding -> layers whose output projections dequantize to 0 -> final norm -> lm_head gives f(x), and the
MTP path (pre-fc norms, fc, its layer, norm, the shared lm_head) gives f(f(x)) = the main model's
next-next token. Then the same values read back from a written mini synthetic checkpoint and a tiny model.
Pure numpy + safetensors, about 10 s (the tiny model's build is most of it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve.checkpoint import autoround, bigram
from serve.checkpoint import synth_model as sm
from serve.checkpoint.safetensors_file import read_header, read_tensor

EPS = 1e-6


def bf16(x: np.ndarray) -> np.ndarray:
    return autoround.bf16_bits_to_float32(autoround.float32_to_bf16_bits(x.astype(np.float32)))


def rms_norm(x: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Qwen3.5's RMSNorm (vLLM's GemmaRMSNorm): x / rms(x) * (1 + weight)."""
    gain = 1.0 + (0.0 if weight is None else weight)
    return x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + EPS) * gain


def zero_linear(in_f: int, out_f: int, rng: np.random.Generator) -> np.ndarray:
    """An int4 output projection as synth-model --agreeing-mtp writes it, dequantized: qweight words of
    ZERO_INT4_WORD, qzeros at 7 (zero point 8), random positive scales."""
    qweight = bigram.zero_int4_words(in_f // 8 * out_f).view(np.int32).reshape(in_f // 8, out_f)
    qzeros = np.full((in_f // 128, out_f // 8), sm.QZEROS_WORD, dtype=np.uint32).view(np.int32)
    scales = rng.uniform(2**-8, 2**-7, (in_f // 128, out_f)).astype(np.float16)
    return autoround.dequantize(autoround.Packed(qweight, qzeros, scales))  # [out, in]


def forward(embed: np.ndarray, lm_head: np.ndarray, tokens: np.ndarray, layers: int, seed: int = 1):
    """Main model: residual = embed; each layer adds out_proj(random activation); norm; lm_head."""
    rng = np.random.default_rng(seed)
    hidden = embed.shape[1]
    residual = embed[tokens].astype(np.float32)
    for _ in range(layers):
        inner = 256
        activation = rng.normal(0, 3, (len(tokens), inner)).astype(np.float32)  # whatever attention/MLP made
        residual = residual + activation @ zero_linear(inner, hidden, rng).T
    h = rms_norm(residual)
    return h, h @ lm_head.T


def mtp_logits(embed, lm_head, fc, next_tokens, main_hidden, rng) -> np.ndarray:
    """vLLM's Qwen3_5MultiTokenPredictor.forward: fc(cat[norm_e(embed(x_{t+1})), norm_h(h_t)]), one
    decoder layer (residual + zero o_proj + zero down_proj), norm, the shared lm_head."""
    hidden = embed.shape[1]
    x = np.concatenate([rms_norm(embed[next_tokens]), rms_norm(main_hidden)], axis=-1) @ fc.T
    residual = x + rng.normal(0, 3, (len(x), 256)) @ zero_linear(256, hidden, rng).T
    residual = residual + rng.normal(0, 3, (len(x), 512)) @ zero_linear(512, hidden, rng).T
    return rms_norm(residual) @ lm_head.T


@pytest.fixture(scope="module")
def model() -> bigram.Bigram:
    # the mini synth's sizes: vocab 1024 rows, tokenizer ids 0..524, 13 of them special/markup
    return bigram.build(1024, 256, sm.ordinary_ids(), seed=0)


def test_embedding_through_zeroed_layers_and_lm_head_gives_f(model: bigram.Bigram) -> None:
    embed = bf16(model.embedding_rows(0, model.vocab))
    lm_head = bf16(model.lm_head_rows(0, model.vocab))
    tokens = np.arange(model.vocab)
    _, logits = forward(embed, lm_head, tokens, layers=4)
    assert (logits.argmax(-1) == model.successor).all()
    top2 = np.sort(logits, axis=-1)[:, -2:]
    margin = float((top2[:, 1] - top2[:, 0]).min())
    assert margin >= bigram.MIN_MARGIN and margin == pytest.approx(model.margin, abs=0.05)
    assert float(top2[:, 1].min()) == pytest.approx(bigram.TARGET_LOGIT, rel=0.01)


def test_mtp_path_gives_the_next_next_token(model: bigram.Bigram) -> None:
    rng = np.random.default_rng(2)
    embed = bf16(model.embedding_rows(0, model.vocab))
    lm_head = bf16(model.lm_head_rows(0, model.vocab))
    fc = bf16(model.fc())
    tokens = np.arange(model.vocab)
    hidden, logits = forward(embed, lm_head, tokens, layers=4)
    nxt = logits.argmax(-1)  # x_{t+1}, which the drafter embeds
    drafted = mtp_logits(embed, lm_head, fc, nxt, hidden, rng).argmax(-1)
    assert (drafted == model.successor[model.successor]).all()  # f(f(x))
    # a second draft step (hidden = the first step's output, embedding of the first draft) agrees too
    h2 = rms_norm(embed[nxt])
    drafted2 = mtp_logits(embed, lm_head, fc, drafted, h2, rng).argmax(-1)
    assert (drafted2 == model.successor[model.successor[model.successor]]).all()


def test_the_answer_is_a_long_cycle_not_a_repeated_token(model: bigram.Bigram) -> None:
    ordinary = set(model.ordinary.tolist())
    special = set(range(525)) - ordinary
    for start in (0, 97, 300, 524, 1023):  # ordinary, special and past-the-tokenizer ids
        answer = bigram.walk(model.successor, start, 3000)
        assert set(answer) <= ordinary  # never an end-of-sequence, markup or undecodable id
        assert len(set(answer[:512])) == 512  # the first 512 steps never repeat: one cycle of all of them
        assert not set(answer) & special
    # every ordinary id has exactly one ordinary predecessor: a permutation on them
    succ = model.successor[model.ordinary]
    assert sorted(succ.tolist()) == sorted(ordinary)


def test_construction_is_deterministic_and_seeded() -> None:
    ids = range(3, 200)
    a, b, c = bigram.build(300, 128, ids, 0), bigram.build(300, 128, ids, 0), bigram.build(300, 128, ids, 1)
    assert (a.successor == b.successor).all() and (a.codes == b.codes).all()
    assert (a.successor != c.successor).any()


def test_too_few_dimensions_for_a_margin_is_refused() -> None:
    with pytest.raises(ValueError, match="margin"):
        bigram.build(600, 8, range(512))


def test_zero_int4_dequantizes_to_zero_whatever_the_scales() -> None:
    w = zero_linear(256, 64, np.random.default_rng(0))
    assert w.shape == (64, 256) and (w == 0).all()


# ---------------------------------------------------------------- the values as written


RAW = {"BF16": np.uint16, "F16": np.float16, "I32": np.int32, "F32": np.float32}


def read_tensors(model_dir: Path) -> dict[str, Any]:
    """name -> raw numpy array (bf16 as uint16 bit patterns), through the kit's own header reader."""
    out: dict[str, Any] = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        header = read_header(shard)
        for info in header.in_file_order():
            raw = read_tensor(header, info.name)
            out[info.name] = np.frombuffer(raw, dtype=RAW[info.dtype]).reshape(info.shape)
    return out


def as_float(t: np.ndarray) -> np.ndarray:
    return autoround.bf16_bits_to_float32(t.view(np.uint16))


def check_written(tensors: dict[str, Any], successor: np.ndarray, layers: int) -> None:
    for name, t in tensors.items():
        module, _, suffix = name.rpartition(".")
        if bigram.is_zeroed(module):
            if suffix == "qweight":
                assert (t.view(np.uint32) == bigram.ZERO_INT4_WORD).all(), name
            elif suffix == "weight":
                assert (as_float(t) == 0).all(), name
    embed_name = next(n for n in tensors if n.endswith("embed_tokens.weight"))
    embed, lm_head = as_float(tensors[embed_name]), as_float(tensors["lm_head.weight"])
    fc = as_float(tensors["mtp.fc.weight"])
    tokens = np.arange(embed.shape[0])
    hidden, logits = forward(embed, lm_head, tokens, layers)
    assert (logits.argmax(-1) == successor).all()
    nxt = logits.argmax(-1)
    drafted = mtp_logits(embed, lm_head, fc, nxt, hidden, np.random.default_rng(3)).argmax(-1)
    assert (drafted == successor[successor]).all()


def test_synth_mini_agreeing_writes_the_construction_at_the_default_sizes(tmp_path: Path) -> None:
    agree = sm.write_synth_model(tmp_path / "agree", scale="mini", agreeing_mtp=True, log=lambda _: None)
    plain = sm.write_synth_model(tmp_path / "plain", scale="mini", log=lambda _: None)
    sizes = {p.name: p.stat().st_size for p in agree.iterdir() if p.name != sm.MARKER}
    assert sizes == {p.name: p.stat().st_size for p in plain.iterdir() if p.name != sm.MARKER}
    assert (agree / sm.INDEX_NAME).read_bytes() == (plain / sm.INDEX_NAME).read_bytes()
    assert json.loads((agree / sm.MARKER).read_text())["spec"]["agreeing_mtp"] is True
    assert "agreeing_mtp" not in json.loads((plain / sm.MARKER).read_text())["spec"]  # old markers match
    plan = sm.make_plan(sm.SynthSpec(scale="mini", agreeing_mtp=True))
    assert plan.bigram is not None
    check_written(read_tensors(agree), plan.bigram.successor, layers=sm.MINI.layers)
    lines: list[str] = []
    sm.write_synth_model(agree, scale="mini", agreeing_mtp=True, log=lines.append)
    assert "nothing to write" in lines[-1]


def test_full_agreeing_layout_is_the_default_layout_byte_for_byte() -> None:
    plain = sm.make_plan(sm.SynthSpec(scale="full"))
    agree = sm.make_plan(sm.SynthSpec(scale="full", agreeing_mtp=True))
    assert [(s.name, s.shape, s.dtype) for s in agree.specs] == [
        (s.name, s.shape, s.dtype) for s in plain.specs
    ]
    assert [s.filename for s in agree.shards] == [s.filename for s in plain.shards]
    assert sm.totals(agree.specs) == sm.totals(plain.specs)
    fills = {s.fill for s in agree.specs}
    assert {"zero_int4", "bigram_embed", "bigram_lm_head", "bigram_fc"} <= fills
    # 64 layers x (o_proj or out_proj + down_proj) are zero int4; the bf16 MTP layer's two are zeros
    assert sum(s.fill == "zero_int4" for s in agree.specs) == 128
    assert agree.bigram is not None and agree.bigram.margin >= bigram.MIN_MARGIN


def test_agreeing_excludes_a_quantized_mtp_fc() -> None:
    from serve.errors import KitError

    with pytest.raises(KitError, match="exclude each other"):
        sm.make_plan(sm.SynthSpec(scale="mini", agreeing_mtp=True, quantized_mtp_fc=True))


def test_tiny_bigram_model_holds_the_same_construction(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from serve.checkpoint.tiny_model import make_tiny_model

    out = make_tiny_model(tmp_path / "tiny", "qwen3_5", bigram_mtp=True)
    tensors = read_tensors(out)
    vocab = tensors["lm_head.weight"].shape[0]
    model = bigram.build(vocab, tensors["lm_head.weight"].shape[1], sm.ordinary_ids(), seed=0)
    check_written(tensors, model.successor, layers=2)


def test_bf16_gathers_are_the_float_rows_rounded(model: bigram.Bigram) -> None:
    for start, stop in ((0, 7), (500, 1024)):
        for bits, rows in (
            (model.embedding_bf16(start, stop), model.embedding_rows(start, stop)),
            (model.lm_head_bf16(start, stop), model.lm_head_rows(start, stop)),
        ):
            assert (bits == autoround.float32_to_bf16_bits(rows)).all()

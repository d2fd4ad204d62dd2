"""Reading safetensors headers only: sizes per dtype and role, index vs shard consistency,
truncated files. Every case checks that nothing in the directory changed."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from serve.checkpoint.safetensors_file import SafetensorsError, read_header, tensor_role
from serve.checkpoint.safetensors_index import scan_model_dir


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def write_model(d: Path, *, quantized_fc: bool = False) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    a = {
        "model.embed_tokens.weight": np.zeros((16, 8), np.float16),
        "model.layers.0.mlp.down_proj.qweight": np.zeros((4, 8), np.int32),
        "lm_head.weight": np.zeros((16, 8), np.float16),
    }
    b = {"model.visual.blocks.0.attn.qkv.weight": np.zeros((8, 8), np.float32)}
    if quantized_fc:
        b["mtp.fc.qweight"] = np.zeros((2, 8), np.int32)
        b["mtp.fc.scales"] = np.zeros((1, 8), np.float16)
    else:
        b["mtp.fc.weight"] = np.zeros((8, 16), np.float16)
    save_file(a, str(d / "model-00001-of-00002.safetensors"))
    save_file(b, str(d / "model-00002-of-00002.safetensors"))
    wm = {k: "model-00001-of-00002.safetensors" for k in a} | {
        k: "model-00002-of-00002.safetensors" for k in b
    }
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    return d


def test_header_sizes_and_roles(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m")
    files = scan_model_dir(d)
    assert files.ok, files.problems
    assert files.bytes_by_dtype == {"F16": 16 * 8 * 2 * 2 + 8 * 16 * 2, "I32": 4 * 8 * 4, "F32": 8 * 8 * 4}
    assert files.bytes_by_role["embedding"] == 16 * 8 * 2
    assert files.bytes_by_role["vision"] == 8 * 8 * 4
    assert files.weight_bytes.decode_read == files.total_bytes - 256 - 256 - 256
    assert files.mtp_fc == "bf16"


def test_quantized_mtp_fc_detected(tmp_path: Path) -> None:
    files = scan_model_dir(write_model(tmp_path / "m", quantized_fc=True))
    assert files.mtp_fc == "quantized"


def test_missing_shard(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m")
    (d / "model-00002-of-00002.safetensors").unlink()
    before = snapshot(d)
    files = scan_model_dir(d)
    assert [p.code for p in files.problems if p.severity == "error"] == ["missing-shard"]
    assert "model-00002-of-00002.safetensors" in files.problems[0].message
    assert snapshot(d) == before


def test_truncated_data(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m")
    shard = d / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    before = snapshot(d)
    files = scan_model_dir(d)
    msgs = [p.message for p in files.problems if p.code == "bad-shard"]
    assert len(msgs) == 1 and "truncated" in msgs[0] and shard.name in msgs[0]
    assert snapshot(d) == before


def test_truncated_header(tmp_path: Path) -> None:
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(SafetensorsError, match="header length 1000 exceeds the file size"):
        read_header(p)
    p.write_bytes(b"\x01\x02")
    with pytest.raises(SafetensorsError, match="shorter than the 8-byte"):
        read_header(p)


def test_header_not_json(tmp_path: Path) -> None:
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", 4) + b"nope")
    with pytest.raises(SafetensorsError, match="not valid JSON"):
        read_header(p)


def test_index_lists_tensor_missing_from_shard(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m")
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    idx["weight_map"]["model.layers.9.mlp.up_proj.qweight"] = "model-00001-of-00002.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(idx))
    files = scan_model_dir(d)
    (problem,) = [p for p in files.problems if p.severity == "error"]
    assert problem.code == "tensor-not-in-shard" and "model.layers.9.mlp.up_proj.qweight" in problem.message


def test_shard_tensor_not_in_index_warns(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m")
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    del idx["weight_map"]["lm_head.weight"]
    (d / "model.safetensors.index.json").write_text(json.dumps(idx))
    files = scan_model_dir(d)
    assert [(p.severity, p.code) for p in files.problems] == [("warn", "tensor-not-in-index")]


def test_invalid_index(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m")
    (d / "model.safetensors.index.json").write_text('{"metadata": {}}')
    files = scan_model_dir(d)
    assert any(p.code == "index-invalid" and "weight_map" in p.message for p in files.problems)


def test_no_weights_and_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert [p.code for p in scan_model_dir(tmp_path / "empty").problems] == ["no-safetensors"]
    assert [p.code for p in scan_model_dir(tmp_path / "nope").problems] == ["not-a-directory"]


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("model.language_model.embed_tokens.weight", "embedding"),
        ("lm_head.weight", "lm_head"),
        ("model.visual.merger.linear_fc1.weight", "vision"),
        ("mtp.layers.0.self_attn.q_proj.weight", "mtp"),
        ("model.language_model.layers.3.linear_attn.in_proj_a.weight", "other"),
        # where the launcher's old _weight_part disagreed with this reader's tensor_role
        ("model.vision_tower.blocks.0.attn.qkv.weight", "vision"),
        ("vision_model.encoder.layers.0.fc1.weight", "vision"),
        ("transformer.wte.weight", "embedding"),
    ],
)
def test_roles(name: str, role: str) -> None:
    assert tensor_role(name) == role

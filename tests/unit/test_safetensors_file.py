"""The one safetensors reader/writer (serve.checkpoint.safetensors_file) and the model-directory reads
(serve.checkpoint.model_dir): every malformed header is refused with one line naming the file and the
tensor, and refused by the official safetensors reader too (the one vLLM loads with), so this reader is
neither looser nor stricter than vLLM; the mtp.fc state as one definition, where the old readers
disagreed; config.json that is not a JSON object; shard names that leave the model directory.
Pure file work on a few KB in tmp_path: well under a second in all."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors
from safetensors.numpy import save_file

from serve.checkpoint import model_dir
from serve.checkpoint.safetensors_file import (
    DTYPE_SIZES,
    SafetensorsError,
    header_bytes,
    mtp_fc_state,
    read_header,
    read_tensor,
)
from serve.checkpoint.safetensors_index import scan_model_dir
from serve.errors import KitError
from serve.launch import probes


def raw_file(path: Path, header: dict[str, Any], data: bytes) -> Path:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def official_refuses(path: Path) -> bool:
    try:  # opening parses and checks the header (get_tensor would fail on F4 for numpy's lack of it)
        with safetensors.safe_open(str(path), "np") as f:
            f.keys()
    except Exception:
        return True
    return False


F32x2 = {"dtype": "F32", "shape": [2]}
BAD_HEADERS: dict[str, tuple[dict[str, Any], int, str]] = {
    # case: (header, data bytes, what the message says)
    "negative begin": ({"a": {**F32x2, "data_offsets": [-8, 0]}}, 8, "bad data_offsets [-8, 0]"),
    "end before begin": ({"a": {**F32x2, "data_offsets": [8, 0]}}, 8, "bad data_offsets [8, 0]"),
    "overlap": (
        {"a": {**F32x2, "data_offsets": [0, 8]}, "b": {**F32x2, "data_offsets": [4, 12]}},
        12,
        "overlaps tensor 'a'",
    ),
    "same bytes twice": (
        {"a": {**F32x2, "data_offsets": [0, 8]}, "b": {**F32x2, "data_offsets": [0, 8]}},
        8,
        "overlaps",
    ),
    "gap": ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8, "belong to no tensor"),
    "bytes after the last tensor": ({"a": {**F32x2, "data_offsets": [0, 8]}}, 12, "after the last tensor"),
    "past the end": ({"a": {**F32x2, "data_offsets": [0, 8]}}, 4, "truncated"),
    "size vs shape": ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, 8, "needs 12"),
    "unknown dtype": ({"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, 16, "'F128'"),
    "shape not a list": ({"a": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}}, 8, "shape 2"),
    "negative dim": ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 0]}}, 0, "shape [-2]"),
    "offsets not ints": ({"a": {**F32x2, "data_offsets": ["0", "8"]}}, 8, "data_offsets"),
    "entry not an object": ({"a": [1, 2]}, 0, "not an object"),
    "metadata not strings": (
        {"__metadata__": {"format": 1}, "a": {**F32x2, "data_offsets": [0, 8]}},
        8,
        "__metadata__",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_bad_header_is_one_line_naming_the_file_and_the_official_reader_agrees(tmp_path, case) -> None:
    header, n, needle = BAD_HEADERS[case]
    path = raw_file(tmp_path / "x.safetensors", header, b"\0" * n)
    with pytest.raises(SafetensorsError) as err:
        read_header(path)
    message = str(err.value)
    assert needle in message and str(path) in message and "\n" not in message
    assert official_refuses(path), f"{case}: the safetensors library reads what we refuse"


@pytest.mark.parametrize(
    ("case", "header", "n"),
    [
        ("no tensors", {}, 0),
        ("empty tensor", {"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}, 0),
        ("F4 packs two to a byte", {"a": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, 2),
        (
            "offsets out of name order",
            {"b": {**F32x2, "data_offsets": [8, 16]}, "a": {**F32x2, "data_offsets": [0, 8]}},
            16,
        ),
    ],
)
def test_valid_edge_cases_are_read_as_the_official_reader_reads_them(tmp_path, case, header, n) -> None:
    path = raw_file(tmp_path / "x.safetensors", header, b"\0" * n)
    got = read_header(path)
    assert not official_refuses(path), case
    assert set(got.tensors) == set(header) and got.data_bytes == n


def test_header_length_2_to_the_62_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(SafetensorsError, match=r"header length 4611686018427387904 is over .* 100 MB"):
        read_header(path)


def test_written_header_is_read_back_by_the_official_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "b": rng.normal(size=(3, 5)).astype(np.float32),
        "a": rng.integers(-5, 5, size=(4,), dtype=np.int32),
        "c": rng.normal(size=(2, 2)).astype(np.float16),
    }
    entries = [
        (k, {"float32": "F32", "int32": "I32", "float16": "F16"}[str(v.dtype)], v.shape)
        for k, v in tensors.items()
    ]
    head = header_bytes(entries, {"format": "pt"})
    assert len(head) % 8 == 0
    path = tmp_path / "w.safetensors"
    path.write_bytes(head + b"".join(v.tobytes() for v in tensors.values()))
    with safetensors.safe_open(str(path), "np") as f:
        assert f.metadata() == {"format": "pt"}
        for k, v in tensors.items():
            np.testing.assert_array_equal(f.get_tensor(k), v)
    ours = read_header(path)
    assert [t.name for t in ours.in_file_order()] == ["b", "a", "c"]
    assert read_tensor(ours, "a") == tensors["a"].tobytes()
    with pytest.raises(ValueError, match="twice"):
        header_bytes([("a", "F32", (1,)), ("a", "F32", (1,))], None)


def test_dtype_sizes_cover_every_dtype_the_library_writes(tmp_path: Path) -> None:
    """Every numpy dtype safetensors saves gets a size here, and the size is the one it writes."""
    arrays = {
        d: np.zeros(3, dtype=d)
        for d in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
    }
    save_file(arrays, str(tmp_path / "all.safetensors"))
    for t in read_header(tmp_path / "all.safetensors").tensors.values():
        assert DTYPE_SIZES[t.dtype] * 3 == t.nbytes


# ---------------------------------------------------------------- the mtp.fc state, one definition

PACKED = ["mtp.fc.qweight", "mtp.fc.qzeros", "mtp.fc.scales"]


@pytest.mark.parametrize(
    ("names", "state"),
    [
        (["mtp.fc.weight", "mtp.norm.weight"], "bf16"),
        ([*PACKED, "mtp.norm.weight"], "quantized"),
        # Old readers disagreed here: safetensors_index said quantized, probes said "no fc" (None).
        (["mtp.fc.qzeros", "mtp.norm.weight"], "quantized"),
        # ... and here: probes said quantized (endswith), safetensors_index said no MTP head. vLLM's
        # drafter reads only names starting with "mtp.": it finds no fc at all.
        (["model.mtp.fc.qweight", "model.mtp.norm.weight"], "missing"),
        (["mtp.fc.qweight_old", "mtp.norm.weight"], "missing"),
        (["mtp.layers.0.mlp.up_proj.weight"], "missing"),
        (["model.layers.0.mlp.up_proj.weight"], "none"),
    ],
)
def test_mtp_fc_state(names: list[str], state: str) -> None:
    assert mtp_fc_state(names) == state


def _write_dir(d: Path, names: list[str], config: dict[str, Any] | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    tensors = {n: np.zeros((2, 8), np.int32) for n in names}
    tensors["model.embed_tokens.weight"] = np.zeros((16, 8), np.float16)
    save_file(tensors, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(config or TINY_CONFIG))
    return d


TINY_CONFIG = {
    "architectures": ["Qwen3_5ForCausalLM"],
    "model_type": "qwen3_5_text",
    "num_hidden_layers": 2,
    "layer_types": ["linear_attention", "full_attention"],
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "hidden_size": 128,
    "vocab_size": 512,
    "max_position_embeddings": 4096,
    "mtp_num_hidden_layers": 1,
}


@pytest.mark.parametrize(
    ("names", "state", "quantized"),
    [
        (["mtp.fc.qzeros", "mtp.norm.weight"], "quantized", True),  # bdd4bac probes: None
        (["model.mtp.fc.qweight", "model.mtp.norm.weight"], "missing", None),  # bdd4bac probes: True
        ([*PACKED], "quantized", True),
        (["mtp.fc.weight"], "bf16", False),
    ],
)
def test_launcher_and_doctor_read_the_same_mtp_fc_state(tmp_path, names, state, quantized) -> None:
    d = _write_dir(tmp_path / "m", names)
    assert scan_model_dir(d).mtp_fc == state
    assert probes.read_model_dir(d).mtp_fc_quantized is quantized


def test_launcher_refuses_a_shard_with_a_2_to_the_62_header(tmp_path: Path) -> None:
    d = _write_dir(tmp_path / "m", ["mtp.fc.weight"])
    (d / "model.safetensors").write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(KitError) as err:
        probes.read_model_dir(d)
    assert "4611686018427387904" in str(err.value) and "model.safetensors" in str(err.value)


# ---------------------------------------------------------------- config.json and shard paths

BAD_CONFIGS = {
    "a list": (b"[1, 2]", "JSON list, not an object"),
    "a number": (b"42", "JSON int, not an object"),
    "a string": (b'"x"', "JSON str, not an object"),
    "invalid UTF-8": (b'{"a": "\xff\xfe"}', "not UTF-8"),
    "invalid JSON": (b"{not json", "not valid JSON"),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, "config.json"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_config_json_that_is_not_an_object_is_one_line(tmp_path: Path, case: str) -> None:
    raw, needle = BAD_CONFIGS[case]
    d = _write_dir(tmp_path / "m", ["mtp.fc.weight"])
    (d / "config.json").write_bytes(raw)
    for read in (model_dir.read_config, probes.read_model_dir):
        with pytest.raises(KitError) as err:
            read(d)
        message = str(err.value)
        assert needle in message and str(d / "config.json") in message and "\n" not in message


def _indexed_dir(d: Path, shard: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(TINY_CONFIG))
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": shard}}
    (d / model_dir.INDEX_NAME).write_text(json.dumps(index))
    return d


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "a/../../outside.safetensors"])
def test_index_shard_outside_the_directory_is_not_read(tmp_path: Path, shard: str) -> None:
    save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "outside.safetensors"))
    d = _indexed_dir(tmp_path / "m", shard)
    with pytest.raises(KitError, match="outside the model directory"):
        model_dir.shard_path(d, shard, source=d / model_dir.INDEX_NAME)
    files = scan_model_dir(d)
    assert [p.code for p in files.problems if p.severity == "error"] == ["shard-outside-dir"]
    assert files.tensor_names == set()


def test_symlink_leaving_the_directory_is_refused(tmp_path: Path) -> None:
    save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "outside.safetensors"))
    d = _indexed_dir(tmp_path / "m", "model.safetensors")
    (d / "model.safetensors").symlink_to(tmp_path / "outside.safetensors")
    files = scan_model_dir(d)
    assert "shard-outside-dir" in [p.code for p in files.problems]
    with pytest.raises(KitError, match=r"links to .*outside the model directory"):
        probes.read_model_dir(d)


def test_hugging_face_cache_snapshot_links_are_followed(tmp_path: Path) -> None:
    """serve/download.py serves snapshot_download's folder, whose files link to ../../blobs/."""
    repo = tmp_path / "hub" / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    save_file({"model.embed_tokens.weight": np.zeros((4, 2), np.float16)}, str(repo / "blobs" / "abc"))
    (repo / "blobs" / "cfg").write_text(json.dumps(TINY_CONFIG))
    snap = repo / "snapshots" / "0123"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to("../../blobs/abc")
    (snap / "config.json").symlink_to("../../blobs/cfg")
    assert scan_model_dir(snap).problems == []
    assert probes.read_model_dir(snap).weight_bytes == 16

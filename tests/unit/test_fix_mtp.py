"""fix-mtp on small AutoRound-format checkpoints written here (numpy + safetensors, no torch needed):
the math against a float64 reference, what is written, idempotence, interrupted runs, and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from serve.checkpoint import autoround, fix_mtp
from serve.checkpoint.safetensors_file import read_header, read_tensor
from serve.errors import KitError

REPO = Path(__file__).resolve().parents[2]
HIDDEN = 128
SHARD = "model_extra_tensors.safetensors"
MAIN = "model-00001-of-00001.safetensors"


def _write_checkpoint(root: Path, *, sym: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """A checkpoint shaped like Qwen3.6 INT4 AutoRound's MTP part; returns the real integer data."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    in_f, out_f, groups = 2 * HIDDEN, HIDDEN, 2 * HIDDEN // 128
    q = rng.integers(0, 16, size=(out_f, in_f), dtype=np.uint8)
    zero = np.full((groups, out_f), 8) if sym else rng.integers(1, 16, size=(groups, out_f))
    scale = rng.uniform(0.001, 0.03, size=(groups, out_f)).astype(np.float16)
    packed = autoround.pack(q, zero, scale)
    extra = {
        "mtp.fc.qweight": packed.qweight,
        "mtp.fc.qzeros": packed.qzeros,
        "mtp.fc.scales": packed.scales,
        "mtp.norm.weight": rng.normal(size=HIDDEN).astype(np.float32),
        "mtp.layers.0.mlp.down_proj.qweight": rng.integers(-(2**31), 2**31, (32, HIDDEN), dtype=np.int32),
        "mtp.layers.0.mlp.down_proj.qzeros": rng.integers(-(2**31), 2**31, (2, 16), dtype=np.int32),
        "mtp.layers.0.mlp.down_proj.scales": rng.uniform(size=(2, HIDDEN)).astype(np.float16),
    }
    main = {"lm_head.weight": rng.normal(size=(64, HIDDEN)).astype(np.float32)}
    save_file(extra, str(root / SHARD), metadata={"format": "pt"})
    save_file(main, str(root / MAIN), metadata={"format": "pt"})
    weight_map = {k: SHARD for k in extra} | {k: MAIN for k in main}
    total = sum(v.nbytes for v in (extra | main).values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (root / fix_mtp.INDEX).write_text(json.dumps(index, indent=2))
    quant = {
        "quant_method": "auto-round",
        "packing_format": "auto_round:auto_gptq",
        "bits": 4,
        "group_size": 128,
        "sym": sym,
        "block_name_to_quantize": ["model.language_model.layers", "mtp.layers"],
        "extra_config": {},
    }
    config = {"architectures": ["Qwen3_5ForCausalLM"], "hidden_size": HIDDEN, "quantization_config": quant}
    (root / "config.json").write_text(json.dumps(config))
    return {"q": q, "zero": zero, "scale": scale}


def _tree(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones too) -> sha256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _reference_bf16(q: np.ndarray, zero: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float64 dequantization with the REAL zero point, then bf16 rounding (bit patterns)."""
    w = (q.astype(np.float64) - np.repeat(zero, 128, axis=0).T) * np.repeat(
        scale.astype(np.float64), 128, 0
    ).T
    assert np.array_equal(w.astype(np.float32).astype(np.float64), w)  # exact in float32: no double rounding
    return autoround.float32_to_bf16_bits(w.astype(np.float32))


def _stored_fc(root: Path) -> np.ndarray:
    shard = read_header(root / SHARD)
    info = shard.tensors["mtp.fc.weight"]
    assert info.dtype == "BF16" and info.shape == (HIDDEN, 2 * HIDDEN)
    return np.frombuffer(read_tensor(shard, "mtp.fc.weight"), dtype="<u2").reshape(info.shape)


@pytest.mark.parametrize("sym", [True, False])
def test_fix_equals_float64_reference_with_zero_plus_one(tmp_path: Path, sym: bool) -> None:
    data = _write_checkpoint(tmp_path, sym=sym)
    outcome = fix_mtp.fix_mtp(tmp_path)
    assert outcome.changed
    np.testing.assert_array_equal(
        _stored_fc(tmp_path), _reference_bf16(data["q"], data["zero"], data["scale"])
    )


def test_output_says_how_the_card_script_differs(tmp_path: Path) -> None:
    data = _write_checkpoint(tmp_path, sym=True)
    text = "\n".join(fix_mtp.fix_mtp(tmp_path).lines)
    assert "(q - (zero + 1)) * scale" in text and "differs from the model card" in text
    mean_step = float(np.abs(data["scale"].astype(np.float64)).mean())
    reported = float(text.split("mean ")[1].split(" ")[0])
    assert reported == pytest.approx(mean_step, rel=1e-3)  # off by exactly one step on average


def test_everything_else_is_copied_byte_for_byte_and_index_updated(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path, sym=True)
    with safe_open(tmp_path / SHARD, "np") as f:
        before = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("mtp.fc.")}  # noqa: SIM118
        meta = f.metadata()
    main_before = (tmp_path / MAIN).read_bytes()
    fix_mtp.fix_mtp(tmp_path)
    with safe_open(tmp_path / SHARD, "np") as f:  # the official reader accepts the streamed file
        assert set(f.keys()) == set(before) | {"mtp.fc.weight"}
        for k, v in before.items():
            np.testing.assert_array_equal(f.get_tensor(k), v)
        assert f.metadata() == meta
    assert (tmp_path / MAIN).read_bytes() == main_before
    index = json.loads((tmp_path / fix_mtp.INDEX).read_text())
    assert index["weight_map"]["mtp.fc.weight"] == SHARD
    assert not any(k.startswith("mtp.fc.q") or k == "mtp.fc.scales" for k in index["weight_map"])
    data_sizes = sum(fix_mtp._shard_data_size(tmp_path / f) for f in (SHARD, MAIN))
    assert index["metadata"]["total_size"] == data_sizes
    backup = tmp_path / fix_mtp.BACKUP_DIR
    assert sorted(p.name for p in backup.iterdir()) == sorted([SHARD, fix_mtp.INDEX])
    assert not list(tmp_path.glob(f".*{fix_mtp.TMP_TAG}"))


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path, sym=True)
    fix_mtp.fix_mtp(tmp_path)
    after_first = _tree(tmp_path)
    outcome = fix_mtp.fix_mtp(tmp_path)
    assert not outcome.changed and outcome.lines[0].startswith("nothing to do")
    assert _tree(tmp_path) == after_first


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path, sym=True)
    before = _tree(tmp_path)
    outcome = fix_mtp.fix_mtp(tmp_path, dry_run=True)
    assert not outcome.changed and "dry run" in outcome.lines[-1]
    assert _tree(tmp_path) == before


def test_failing_rename_leaves_originals_byte_identical(tmp_path: Path, monkeypatch) -> None:
    _write_checkpoint(tmp_path, sym=True)
    before = _tree(tmp_path)

    def refuse(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fix_mtp.os, "replace", refuse)
    with pytest.raises(KitError, match="unchanged"):
        fix_mtp.fix_mtp(tmp_path)
    after = {k: v for k, v in _tree(tmp_path).items() if not k.startswith(fix_mtp.BACKUP_DIR)}
    assert after == before


def _run_cli(root: Path, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(fix_mtp.FAULT_ENV, None)
    if fault:
        env[fix_mtp.FAULT_ENV] = fault
    code = "import sys; from serve.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "fix-mtp", str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_kill_mid_write_leaves_originals_and_next_run_succeeds(tmp_path: Path) -> None:
    data = _write_checkpoint(tmp_path, sym=False)
    before = _tree(tmp_path)
    killed = _run_cli(tmp_path, fault="after-temp-write")
    assert killed.returncode == -9, killed.stderr
    assert list(tmp_path.glob(f".*{fix_mtp.TMP_TAG}")), "the kill should have left a temp file behind"
    originals = {k: v for k, v in _tree(tmp_path).items() if not k.startswith(".")}
    assert originals == before
    done = _run_cli(tmp_path)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob(f".*{fix_mtp.TMP_TAG}"))
    np.testing.assert_array_equal(
        _stored_fc(tmp_path), _reference_bf16(data["q"], data["zero"], data["scale"])
    )


def test_kill_between_renames_is_completed_by_the_next_run(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path, sym=True)
    clean = tmp_path / "clean"
    _write_checkpoint(clean, sym=True)
    fix_mtp.fix_mtp(clean)
    model = tmp_path
    assert _run_cli(model, fault="after-shard-replace").returncode == -9
    stale = json.loads((model / fix_mtp.INDEX).read_text())
    assert "mtp.fc.qweight" in stale["weight_map"]
    done = _run_cli(model)
    assert done.returncode == 0 and "interrupted run" in done.stdout, done.stdout + done.stderr
    for name in (SHARD, fix_mtp.INDEX):
        assert (model / name).read_bytes() == (clean / name).read_bytes()
    # the backup holds the ORIGINAL shard, not the rewritten one the second run found in place
    assert "mtp.fc.qweight" in read_header(model / fix_mtp.BACKUP_DIR / SHARD).tensors


def test_cli_exit_codes_and_messages(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path, sym=True)
    first = _run_cli(tmp_path)
    assert first.returncode == 0 and "differs from the model card" in first.stdout
    second = _run_cli(tmp_path)
    assert second.returncode == 0 and second.stdout.startswith("nothing to do")
    missing = _run_cli(tmp_path / "nope")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "nope" in missing.stderr


# ---------------------------------------------------------------- bad input: clear message, nothing modified


def _corrupt_truncate(root: Path) -> None:
    data = (root / SHARD).read_bytes()
    (root / SHARD).write_bytes(data[: len(data) - 100])


def _corrupt_wrong_index(root: Path) -> None:
    index = json.loads((root / fix_mtp.INDEX).read_text())
    index["weight_map"]["lm_head.weight"] = SHARD
    (root / fix_mtp.INDEX).write_text(json.dumps(index))


def _corrupt_no_quant(root: Path) -> None:
    config = json.loads((root / "config.json").read_text())
    del config["quantization_config"]
    (root / "config.json").write_text(json.dumps(config))


def _corrupt_awq_method(root: Path) -> None:
    config = json.loads((root / "config.json").read_text())
    config["quantization_config"]["quant_method"] = "awq"
    (root / "config.json").write_text(json.dumps(config))


def _corrupt_header(root: Path) -> None:
    data = bytearray((root / SHARD).read_bytes())
    data[8:12] = b"xxxx"
    (root / SHARD).write_bytes(bytes(data))


def _corrupt_bad_config_json(root: Path) -> None:
    (root / "config.json").write_text("{not json")


def _corrupt_wrong_hidden(root: Path) -> None:
    config = json.loads((root / "config.json").read_text())
    config["hidden_size"] = 256
    (root / "config.json").write_text(json.dumps(config))


BAD_INPUTS = {
    "no config.json": (lambda r: (r / "config.json").unlink(), "config.json"),
    "config.json not JSON": (_corrupt_bad_config_json, "config.json"),
    "missing shard": (lambda r: (r / MAIN).unlink(), MAIN),
    "missing mtp shard": (lambda r: (r / SHARD).unlink(), SHARD),
    "truncated shard": (_corrupt_truncate, "truncated"),
    "garbled header": (_corrupt_header, SHARD),
    "wrong index": (_corrupt_wrong_index, "lm_head.weight"),
    "not AutoRound (bf16)": (_corrupt_no_quant, "quantization_config"),
    "not AutoRound (awq)": (_corrupt_awq_method, "'awq'"),
    "shape vs hidden_size": (_corrupt_wrong_hidden, "hidden_size 256"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_with_a_clear_message(tmp_path: Path, case: str) -> None:
    _write_checkpoint(tmp_path, sym=True)
    corrupt, needle = BAD_INPUTS[case]
    corrupt(tmp_path)
    before = _tree(tmp_path)
    with pytest.raises(KitError) as err:
        fix_mtp.fix_mtp(tmp_path)
    message = str(err.value)
    assert needle in message and "\n" not in message
    assert _tree(tmp_path) == before


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KitError, match="no such model directory"):
        fix_mtp.fix_mtp(tmp_path / "missing")


def test_model_without_mtp_head(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path, sym=True)
    index = json.loads((tmp_path / fix_mtp.INDEX).read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if not k.startswith("mtp.")}
    index["weight_map"]["mtp.norm.weight"] = SHARD
    (tmp_path / fix_mtp.INDEX).write_text(json.dumps(index))
    with pytest.raises(KitError, match="no MTP head"):
        fix_mtp.fix_mtp(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_real(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path, sym=True)
    before = _tree(tmp_path)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(KitError, match="read-only"):
            fix_mtp.fix_mtp(tmp_path)
    finally:
        tmp_path.chmod(0o755)
    assert _tree(tmp_path) == before


def test_read_only_directory_as_seen_by_access(tmp_path: Path, monkeypatch) -> None:
    """As root (CI containers) chmod does not stop writes; a read-only mount shows up through os.access."""
    _write_checkpoint(tmp_path, sym=True)
    before = _tree(tmp_path)
    monkeypatch.setattr(fix_mtp.os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(KitError, match="read-only") as err:
        fix_mtp.fix_mtp(tmp_path)
    assert str(tmp_path) in str(err.value)
    assert _tree(tmp_path) == before


def test_fc_that_vllm_builds_quantized_is_left_alone(tmp_path: Path) -> None:
    """No block_name_to_quantize: vLLM quantizes mtp.fc too and loads qweight; a repair would break it."""
    _write_checkpoint(tmp_path, sym=True)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["quantization_config"]["block_name_to_quantize"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    before = _tree(tmp_path)
    outcome = fix_mtp.fix_mtp(tmp_path)
    assert not outcome.changed and "loads as it is" in outcome.lines[0]
    assert _tree(tmp_path) == before


def test_single_file_checkpoint(tmp_path: Path) -> None:
    """No index: model.safetensors alone is rewritten."""
    data = _write_checkpoint(tmp_path, sym=True)
    with safe_open(tmp_path / SHARD, "np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    for name in (SHARD, MAIN, fix_mtp.INDEX):
        (tmp_path / name).unlink()
    save_file(tensors, str(tmp_path / fix_mtp.SINGLE))
    assert fix_mtp.fix_mtp(tmp_path).changed
    shard = read_header(tmp_path / fix_mtp.SINGLE)
    got = np.frombuffer(read_tensor(shard, "mtp.fc.weight"), dtype="<u2").reshape(HIDDEN, 2 * HIDDEN)
    np.testing.assert_array_equal(got, _reference_bf16(data["q"], data["zero"], data["scale"]))
    assert not (tmp_path / fix_mtp.INDEX).exists()


# ---------------------------------------------------------------- offsets and shard paths (issue 16)


def _rewrite_offsets(root: Path, change) -> None:
    """Rewrite the MTP shard's header with ``change(header)`` applied, the data bytes as they were."""
    path = root / SHARD
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    change(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])


def _negative_qweight(header: dict) -> None:
    # Same size as before, starting 64 bytes before the data section: in the header. bdd4bac read those
    # bytes as weights.
    start, end = header["mtp.fc.qweight"]["data_offsets"]
    header["mtp.fc.qweight"]["data_offsets"] = [-64, end - start - 64]


def _scales_inside_qweight(header: dict) -> None:
    # scales pointing into qweight's bytes (an overlap), leaving its own bytes unused.
    start, _ = header["mtp.fc.qweight"]["data_offsets"]
    s0, s1 = header["mtp.fc.scales"]["data_offsets"]
    header["mtp.fc.scales"]["data_offsets"] = [start, start + s1 - s0]


@pytest.mark.parametrize(
    ("change", "needle"),
    [(_negative_qweight, "bad data_offsets [-64"), (_scales_inside_qweight, "overlaps")],
)
def test_shard_with_negative_or_overlapping_offsets_is_refused_and_nothing_written(
    tmp_path: Path, change, needle: str
) -> None:
    """bdd4bac dequantized whatever bytes these offsets pointed at, wrote that as mtp.fc.weight and said
    'verified by reading back' (exit 0)."""
    _write_checkpoint(tmp_path, sym=True)
    _rewrite_offsets(tmp_path, change)
    before = _tree(tmp_path)
    done = _run_cli(tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert needle in done.stderr and SHARD in done.stderr and done.stderr.count("\n") == 1
    assert "wrote" not in done.stdout
    assert _tree(tmp_path) == before


def _point_index_at(root: Path, shard: str) -> None:
    index = json.loads((root / fix_mtp.INDEX).read_text())
    index["weight_map"] = {k: (shard if v == SHARD else v) for k, v in index["weight_map"].items()}
    (root / fix_mtp.INDEX).write_text(json.dumps(index))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_shard_outside_the_model_directory_is_refused(tmp_path: Path, how: str) -> None:
    """bdd4bac followed the index out of the model directory and rewrote the file it found there."""
    model = tmp_path / "model"
    _write_checkpoint(model, sym=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.replace(model / SHARD, outside / SHARD)
    if how == "dotdot":
        _point_index_at(model, f"../elsewhere/{SHARD}")
    elif how == "absolute":
        _point_index_at(model, str(outside / SHARD))
    else:
        (model / SHARD).symlink_to(outside / SHARD)
    before, outside_before = _tree(model), _tree(outside)
    done = _run_cli(model)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "outside the model directory" in done.stderr and done.stderr.count("\n") == 1
    assert _tree(model) == before and _tree(outside) == outside_before


def test_config_json_that_is_a_list_is_refused(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path, sym=True)
    (tmp_path / "config.json").write_text("[1, 2]")
    before = _tree(tmp_path)
    done = _run_cli(tmp_path)
    assert done.returncode == 2 and "config.json" in done.stderr and done.stderr.count("\n") == 1
    assert _tree(tmp_path) == before


def test_packed_tensor_of_the_wrong_dtype_is_refused(tmp_path: Path) -> None:
    """dtype checked against the header before a byte is read (scales relabelled I16 here)."""
    _write_checkpoint(tmp_path, sym=True)

    def scales_as_int(header: dict) -> None:
        header["mtp.fc.scales"]["dtype"] = "I16"  # same 2 bytes per element: offsets stay valid

    _rewrite_offsets(tmp_path, scales_as_int)
    before = _tree(tmp_path)
    with pytest.raises(
        KitError, match=r"mtp.fc.scales is I16 \[2, 128\], GPTQ packing stores it 2-D F16 or F32"
    ):
        fix_mtp.fix_mtp(tmp_path)
    assert _tree(tmp_path) == before

"""``python -m serve fix-mtp MODEL_DIR``: store a quantized ``mtp.fc`` as bf16 so vLLM's MTP drafter loads it.

AutoRound packs mtp.fc (the MTP head's fusion layer) to INT4 like any other linear layer, but vLLM's
Qwen3_5MTP builds ``mtp.fc`` unquantized (``mtp.fc`` is not inside ``block_name_to_quantize``) and
silently skips ``mtp.fc.qweight``: the drafter then runs with an uninitialised fc and MTP accepts 0%
(vLLM 0.32, seen on its CPU build, refuses instead: "There is no module or parameter named 'fc.qweight'
in Qwen3_5MultiTokenPredictor").

The math differs from the model card's ``dequant_mtp_fc.py``: ``auto_round:auto_gptq`` stores every zero
point minus 1 (classic GPTQ; auto-round's ``qlinear_torch_zp.py`` adds the 1 back), so the weight is
``(q - (stored_zero + 1)) * scale``. The card computes ``(q - stored_zero) * scale``: one quantization step
(``+scale``) off on every weight.

How it writes: only the shard holding mtp.fc is rewritten, tensor by tensor from the original file
(nothing else is loaded); the new shard and index are written to temporary files in the model directory,
fsynced, read back and compared, and only then renamed over the originals. The originals stay in
``.fix-mtp-backup/`` (hard links: no extra space). A run killed before the renames leaves the model as it
was; one killed between the two renames (shard done, index not) is completed by the next run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serve import atomic
from serve.checkpoint import autoround
from serve.checkpoint.model_dir import INDEX_NAME as INDEX
from serve.checkpoint.model_dir import SINGLE, read_config, read_index, read_json_object, shard_path
from serve.checkpoint.safetensors_file import (
    MTP_FC,
    PACKED_SUFFIXES,
    Header,
    copy_tensor,
    header_bytes,
    mtp_fc_state,
    read_header,
    read_tensor,
)
from serve.errors import KitError

BACKUP_DIR = ".fix-mtp-backup"
TMP_TAG = ".fix-mtp.tmp"
P = MTP_FC  # the prefix vLLM's MTP loader reads ("mtp.fc."); see safetensors_file
# What GPTQ packing stores, checked against the header before any byte is read.
PACKED_DTYPES = {"qweight": ("I32",), "qzeros": ("I32",), "scales": ("F16", "F32")}
NUMPY_DTYPES = {"I32": np.int32, "F16": np.float16, "F32": np.float32}

# Test hook: a fault injected at a named step ("after-temp-write", "after-shard-replace"), so tests can
# kill a real run mid-write and check what it leaves behind.
FAULT_ENV = "SERVE_FIX_MTP_FAULT"


def _array(shard: Header, name: str) -> np.ndarray:
    t = shard.tensors[name]
    return np.frombuffer(read_tensor(shard, name), dtype=NUMPY_DTYPES[t.dtype]).reshape(t.shape)


# ---------------------------------------------------------------- the model directory


@dataclass
class Model:
    root: Path
    config: dict[str, Any]
    quant: dict[str, Any]
    index: dict[str, Any] | None  # None: a single model.safetensors
    shard_name: str
    shard: Header


@dataclass
class Outcome:
    changed: bool
    lines: list[str] = field(default_factory=list)


def load_model(root: Path) -> Model:
    if not root.is_dir():
        raise KitError(f"{root}: no such model directory; give the folder holding config.json")
    config = read_config(root)
    quant = _quant_config(root, config)
    if (root / INDEX).exists():
        index = read_index(root)
        names: dict[str, str] = index["weight_map"]
        for shard_file in sorted(set(names.values())):
            if not shard_path(root, shard_file, source=root / INDEX).is_file():
                raise KitError(f"{root / INDEX}: lists shard {shard_file}, which is missing; re-download it")
    elif (root / SINGLE).exists():
        index = None
        names = dict.fromkeys(read_header(shard_path(root, SINGLE, source=root)).tensors, SINGLE)
    else:
        raise KitError(f"{root}: neither {INDEX} nor {SINGLE}; not a safetensors checkpoint")
    if mtp_fc_state(names) not in ("quantized", "bf16"):
        raise KitError(
            f"{root}: no {P}weight or {P}qweight in the checkpoint (the names vLLM's MTP drafter loads); "
            "this model has no MTP head fix-mtp can repair"
        )
    shard_name = _shard_of(root, names)
    shard = read_header(root / shard_name)
    if index is not None:
        _check_index_against_shard(root, names, shard_name, shard)
    return Model(root, config, quant, index, shard_name, shard)


def _quant_config(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    quant = config.get("quantization_config")
    if quant is None and (root / "quantization_config.json").exists():
        quant = read_json_object(root / "quantization_config.json", "quantization_config.json")
    if not isinstance(quant, dict):
        raise KitError(
            f"{root / 'config.json'}: no quantization_config; fix-mtp repairs AutoRound INT4 "
            "checkpoints only (a bf16 model has nothing to dequantize)"
        )
    method = quant.get("quant_method")
    if method not in ("auto-round", "intel/auto-round", "gptq"):
        raise KitError(
            f"{root / 'config.json'}: quantization_config.quant_method is {method!r}, not "
            "'auto-round'; fix-mtp only knows AutoRound/GPTQ packing"
        )
    fmt = quant.get("packing_format", "auto_round:auto_gptq" if method != "gptq" else "gptq")
    try:
        autoround.zero_offset(fmt)
    except ValueError as exc:
        raise KitError(
            f"{root / 'config.json'}: quantization_config.packing_format {fmt!r} is not a "
            "4-bit GPTQ-style packing fix-mtp knows"
        ) from exc
    if quant.get("bits", 4) != 4:
        raise KitError(
            f"{root / 'config.json'}: quantization_config.bits is {quant.get('bits')}; "
            "fix-mtp unpacks 4-bit weights only"
        )
    return {**quant, "packing_format": fmt}


def _shard_of(root: Path, names: dict[str, str]) -> str:
    shards = {names[P + s] for s in (*PACKED_SUFFIXES, "weight") if P + s in names}
    if len(shards) != 1:
        raise KitError(f"{root / INDEX}: {P}* is spread over {sorted(shards)}; expected one shard")
    return shards.pop()


def _check_index_against_shard(root: Path, names: dict[str, str], shard_name: str, shard: Header) -> None:
    # An interrupted run (shard rewritten, index not yet) leaves exactly these names stale: allowed.
    stale_ok = {P + s for s in PACKED_SUFFIXES} if P + "weight" in shard.tensors else set()
    for name, file in names.items():
        if file == shard_name and name not in shard.tensors and name not in stale_ok:
            raise KitError(
                f"{root / INDEX}: weight_map says {name} is in {shard_name}, its header has "
                "no such tensor; the index does not match the shards, re-download them"
            )


# ---------------------------------------------------------------- what to do


def plan_fix(model: Model) -> tuple[str, list[str]]:
    """("fix" | "index-only" | "nothing", reasons) from the shard header, which is the truth."""
    p, tensors = P, model.shard.tensors
    quantized = [p + s for s in PACKED_SUFFIXES if p + s in tensors]
    has_weight = p + "weight" in tensors
    if quantized and has_weight:
        raise KitError(
            f"{model.shard.path}: holds both {p}weight and {', '.join(quantized)}; restore "
            f"the original from {BACKUP_DIR}/ or re-download the shard"
        )
    if quantized and len(quantized) != len(PACKED_SUFFIXES):
        missing = sorted(set(p + s for s in PACKED_SUFFIXES) - set(quantized))
        raise KitError(
            f"{model.shard.path}: {', '.join(missing)} missing beside {quantized[0]}; "
            "the shard is incomplete, re-download it"
        )
    if quantized:
        if not vllm_builds_fc_unquantized(model.quant, p.rstrip(".")):
            blocks = model.quant.get("block_name_to_quantize")
            return "nothing", [
                f"nothing to do: quantization_config makes vLLM build {p.rstrip('.')} "
                f"quantized too (block_name_to_quantize {blocks!r}), "
                f"so {p}qweight loads as it is"
            ]
        return "fix", []
    if model.index is not None:
        weight_map = model.index["weight_map"]
        if any(p + s in weight_map for s in PACKED_SUFFIXES) or p + "weight" not in weight_map:
            return "index-only", [
                f"{model.shard_name} already holds {p}weight but {INDEX} still lists the "
                "quantized tensors (an interrupted run): updating the index"
            ]
    return "nothing", [f"nothing to do: {p}weight is already stored unquantized in {model.shard_name}"]


def vllm_builds_fc_unquantized(quant: dict[str, Any], module: str) -> bool:
    """Mirror of vLLM's INC rule (inc/config_parser.py): a layer named in extra_config with bits >= 16 is
    unquantized; otherwise a layer outside every block_name_to_quantize prefix is; with no block list,
    every linear layer but the LM head is quantized."""
    extra = (quant.get("extra_config") or {}).get(module)
    if isinstance(extra, dict) and extra.get("bits", 16) >= 16:
        return True
    blocks = quant.get("block_name_to_quantize") or quant.get("to_quant_block_names")
    if not blocks:
        return False
    if isinstance(blocks, str):
        blocks = blocks.split(",")
    return not any(module.startswith(b) for b in blocks)


@dataclass
class Dequantized:
    weight_bits: np.ndarray  # bf16 bit patterns [out, in]
    in_features: int
    out_features: int
    group_size: int
    card_max_abs_diff: float
    card_mean_abs_diff: float
    weight_rms: float


def _check_packed_dtypes(shard: Header) -> None:
    for suffix, allowed in PACKED_DTYPES.items():
        t = shard.tensors[P + suffix]
        if t.dtype not in allowed or len(t.shape) != 2:
            raise KitError(
                f"{shard.path}: {t.name} is {t.dtype} {list(t.shape)}, GPTQ packing stores it 2-D "
                f"{' or '.join(allowed)}; this is not an AutoRound-packed layer"
            )


def dequantize_fc(model: Model) -> Dequantized:
    p, shard = P, model.shard
    _check_packed_dtypes(shard)
    qweight = _array(shard, p + "qweight")
    qzeros = _array(shard, p + "qzeros")
    scales = _array(shard, p + "scales")
    try:
        group = autoround.infer_group_size(qweight.shape, scales.shape)
    except ValueError as exc:
        raise KitError(f"{shard.path}: {p}: {exc}; the tensors do not fit together") from exc
    declared = _declared_group_size(model)
    if declared not in (None, -1, group):
        raise KitError(
            f"{model.root / 'config.json'}: quantization_config group_size {declared} does not "
            f"match {p}scales {list(scales.shape)} (group {group}); check the config"
        )
    _check_expected_shape(model, qweight.shape[0] * autoround.PACK_FACTOR, qweight.shape[1])
    packed = autoround.Packed(qweight=qweight, qzeros=qzeros, scales=scales.astype(np.float16))
    fmt = model.quant["packing_format"]
    try:
        ours = autoround.dequantize(packed, group, fmt)
    except ValueError as exc:
        raise KitError(f"{shard.path}: {p}: {exc}") from exc
    # The card's script uses the stored zero as is: its weight minus ours is offset * scale, exactly
    # (tests/unit/test_autoround.py checks the identity), so no second dequantization is needed.
    step = np.abs(packed.scales.astype(np.float64)) * autoround.zero_offset(fmt)
    return Dequantized(
        weight_bits=autoround.float32_to_bf16_bits(ours),
        in_features=ours.shape[1],
        out_features=ours.shape[0],
        group_size=group,
        card_max_abs_diff=float(step.max()),
        card_mean_abs_diff=float(step.mean()),  # every group holds the same number of weights
        weight_rms=float(np.sqrt(np.mean(np.square(ours, dtype=np.float64)))),
    )


def _declared_group_size(model: Model) -> int | None:
    extra = (model.quant.get("extra_config") or {}).get(P.rstrip("."), {})
    return extra.get("group_size", model.quant.get("group_size"))


def _check_expected_shape(model: Model, in_f: int, out_f: int) -> None:
    text = model.config.get("text_config", model.config)
    hidden = text.get("hidden_size")
    if isinstance(hidden, int) and (in_f, out_f) != (2 * hidden, hidden):
        raise KitError(
            f"{model.shard.path}: {P}qweight unpacks to [{out_f}, {in_f}] but "
            f"hidden_size {hidden} needs [{hidden}, {2 * hidden}]; config and weights disagree"
        )


# ---------------------------------------------------------------- writing


def _new_entries(model: Model, out_f: int, in_f: int) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, dtype, shape) of the new shard in file order: the fc's packed trio replaced by one bf16
    weight where qweight was."""
    out: list[tuple[str, str, tuple[int, ...]]] = []
    for t in model.shard.in_file_order():
        if t.name in (P + "qzeros", P + "scales"):
            continue
        if t.name == P + "qweight":
            out.append((P + "weight", "BF16", (out_f, in_f)))
        else:
            out.append((t.name, t.dtype, t.shape))
    return out


def _write_shard(model: Model, deq: Dequantized, tmp: Path) -> dict[str, str]:
    """Stream the new shard into tmp; return sha256 per tensor of what was written."""
    weight = deq.weight_bits.astype("<u2").tobytes()
    entries = _new_entries(model, deq.out_features, deq.in_features)
    digests: dict[str, str] = {}
    with tmp.open("wb") as out:
        out.write(header_bytes(entries, model.shard.metadata))
        for name, _, _ in entries:
            digest = hashlib.sha256()
            if name == P + "weight":
                out.write(weight)
                digest.update(weight)
            else:
                copy_tensor(model.shard, name, out, digest)
            digests[name] = digest.hexdigest()
        out.flush()
        os.fsync(out.fileno())
    return digests


def _verify_shard(tmp: Path, digests: dict[str, str]) -> None:
    """Read the written file back: same tensor set, each tensor's bytes as intended."""
    written = read_header(tmp)
    if set(written.tensors) != set(digests):
        raise KitError(
            f"{tmp}: read back {len(written.tensors)} tensors, wrote {len(digests)}; nothing changed"
        )
    for name, expected in digests.items():
        digest = hashlib.sha256()
        copy_tensor(written, name, None, digest)
        if digest.hexdigest() != expected:
            raise KitError(f"{tmp}: tensor {name} reads back differently; disk problem? nothing changed")


def _new_index(model: Model, deq: Dequantized) -> dict[str, Any] | None:
    if model.index is None:
        return None
    index = json.loads(json.dumps(model.index))
    p = P
    removed = 0
    for s in PACKED_SUFFIXES:
        if index["weight_map"].pop(p + s, None) is not None and p + s in model.shard.tensors:
            removed += model.shard.tensors[p + s].nbytes
    index["weight_map"][p + "weight"] = model.shard_name
    index["weight_map"] = dict(sorted(index["weight_map"].items()))
    meta = index.setdefault("metadata", {})
    if isinstance(meta.get("total_size"), int):
        meta["total_size"] += deq.out_features * deq.in_features * 2 - removed
    return index


def _fsync_write(path: Path, text: str) -> None:
    with path.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _backup(model: Model, names: list[str]) -> Path:
    """Keep the originals: hard links (no copy) in .fix-mtp-backup/; an existing backup is never replaced,
    since after an interrupted run the file in place may already be the rewritten one."""
    backup = model.root / BACKUP_DIR
    backup.mkdir(exist_ok=True)
    for name in names:
        target = backup / name
        if target.exists():
            continue
        try:
            os.link(model.root / name, target)
        except OSError:
            shutil.copy2(model.root / name, target)
    return backup


def _fault(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), 9)


def _remove_stale_temps(root: Path) -> None:
    for tmp in root.glob(f".*{TMP_TAG}"):
        tmp.unlink(missing_ok=True)


def _check_writable(root: Path) -> None:
    if not os.access(root, os.W_OK):
        raise KitError(
            f"{root}: directory is read-only; fix-mtp rewrites the shard holding mtp.fc. "
            "Copy the model to a writable folder (or mount it read-write) and run it there"
        )


def fix_mtp(root: str | Path, *, dry_run: bool = False) -> Outcome:
    """Dequantize a quantized mtp.fc in place (see the module docstring). Raises KitError on bad input."""
    model = load_model(Path(root))
    action, reasons = plan_fix(model)
    if action == "nothing":
        return Outcome(False, reasons)
    _check_writable(model.root)
    if action == "index-only":
        return _finish_index(model, reasons, dry_run)
    deq = dequantize_fc(model)
    lines = _describe(model, deq)
    if dry_run:
        return Outcome(False, [*lines, "dry run: nothing written"])
    _remove_stale_temps(model.root)
    changed = [model.shard_name] + ([INDEX] if model.index is not None else [])
    tmp_shard = model.root / f".{model.shard_name}{TMP_TAG}"
    tmp_index = model.root / f".{INDEX}{TMP_TAG}"
    shard_replaced = False
    try:
        digests = _write_shard(model, deq, tmp_shard)
        new_index = _new_index(model, deq)
        if new_index is not None:
            _fsync_write(tmp_index, json.dumps(new_index, indent=2) + "\n")
        _fault("after-temp-write")
        _verify_shard(tmp_shard, digests)
        _verify_weight(tmp_shard, deq)
        backup = _backup(model, changed)
        os.replace(tmp_shard, model.root / model.shard_name)
        shard_replaced = True
        _fault("after-shard-replace")
        if new_index is not None:
            os.replace(tmp_index, model.root / INDEX)
        _fsync_dir(model.root)
    except OSError as exc:
        _remove_stale_temps(model.root)
        if shard_replaced:
            raise KitError(
                f"{model.root / INDEX}: updating the index failed ({exc}) after {model.shard_name} "
                "was rewritten; run fix-mtp again to finish"
            ) from exc
        raise KitError(f"{model.root}: writing failed ({exc}); the model files are unchanged") from exc
    except BaseException:
        _remove_stale_temps(model.root)
        raise
    lines.append(
        f"wrote {model.shard_name}"
        + (f" and {INDEX}" if new_index else "")
        + f" (verified by reading back); originals kept in {backup}/"
    )
    return Outcome(True, lines)


def _verify_weight(tmp: Path, deq: Dequantized) -> None:
    got = np.frombuffer(read_tensor(read_header(tmp), P + "weight"), dtype="<u2")
    if not np.array_equal(got.reshape(deq.out_features, deq.in_features), deq.weight_bits):
        raise KitError(f"{tmp}: {P}weight reads back differently; nothing changed")


def _finish_index(model: Model, reasons: list[str], dry_run: bool) -> Outcome:
    assert model.index is not None
    index = json.loads(json.dumps(model.index))
    for s in PACKED_SUFFIXES:
        index["weight_map"].pop(P + s, None)
    index["weight_map"][P + "weight"] = model.shard_name
    index["weight_map"] = dict(sorted(index["weight_map"].items()))
    meta = index.setdefault("metadata", {})
    meta["total_size"] = sum(_shard_data_size(model.root / f) for f in set(index["weight_map"].values()))
    if dry_run:
        return Outcome(False, [*reasons, "dry run: nothing written"])
    _backup(model, [INDEX])
    atomic.write_text(model.root / INDEX, json.dumps(index, indent=2) + "\n")
    return Outcome(True, [*reasons, f"wrote {INDEX}"])


def _shard_data_size(path: Path) -> int:
    return read_header(path).data_bytes


def _describe(model: Model, deq: Dequantized) -> list[str]:
    p, fmt = P, model.quant["packing_format"]
    offset = autoround.zero_offset(fmt)
    rel = deq.card_mean_abs_diff / deq.weight_rms if deq.weight_rms else float("nan")
    lines = [
        f"{p.rstrip('.')}: stored quantized in {model.shard_name} (qweight/qzeros/scales, "
        f"group {deq.group_size}, {fmt}); vLLM's MTP drafter wants {p}weight: older vLLM skips the "
        "quantized tensors (MTP accepts 0% of drafts), vLLM 0.32 refuses to start ('no module or "
        "parameter named fc.qweight')",
        f"dequantizing to bf16 [{deq.out_features}, {deq.in_features}] as (q - (zero + {offset})) * scale, "
        f"the {fmt} convention",
    ]
    if offset:
        lines.append(
            "NOTE: this differs from the model card's dequant_mtp_fc.py, which computes (q - zero) * scale "
            "with the stored zero (zero point minus 1): its weights are one quantization step off, "
            f"max |difference| {deq.card_max_abs_diff:.4g}, mean {deq.card_mean_abs_diff:.4g} "
            f"({rel:.1%} of the weights' RMS {deq.weight_rms:.4g})"
        )
    return lines


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="model folder (config.json + safetensors)")
    parser.add_argument("--dry-run", action="store_true", help="check and report, write nothing")


def run(args: argparse.Namespace) -> int:
    outcome = fix_mtp(args.model_dir, dry_run=args.dry_run)
    for line in outcome.lines:
        print(line)
    return 0

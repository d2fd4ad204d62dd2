"""One safetensors file: its header read (bounded and checked) and written, its tensors' bytes read, the
dtype sizes, what each tensor is for (its role) and how the MTP head's ``mtp.fc`` is stored.

The format is an 8-byte little-endian header length, that many bytes of UTF-8 JSON, then the tensor data.
What the safetensors library (the reader vLLM loads with; 0.8 seen) refuses, this refuses too, before
any byte is used: a header over 100 MB or past the end of the file; a header that is not a JSON object;
an entry whose dtype is unknown, whose shape is not a list of non-negative integers or whose
``data_offsets`` span is not prod(shape) * dtype size; offsets that, sorted, do not tile the data section
from byte 0 to the end of the file (a negative offset, an overlap, a gap, a short or an overlong file).
Every refusal is a :class:`SafetensorsError`: one line naming the file, the tensor and what to do.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from serve.errors import KitError

# The safetensors library's own cap (MAX_HEADER_SIZE, 100_000_000 bytes; here 100 MiB, a little looser).
MAX_HEADER_BYTES = 100 * 1024 * 1024
CHUNK = 16 << 20

# Bytes per element of every dtype the format defines (F4/F6 pack several elements to a byte).
DTYPE_SIZES: dict[str, float] = {
    "F64": 8, "I64": 8, "U64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
    "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75,
}  # fmt: skip


class SafetensorsError(KitError):
    """One safetensors file cannot be read as such."""


def tensor_nbytes(dtype: str, shape: Sequence[int]) -> int:
    """Bytes of a tensor of this dtype and shape; ValueError for an unknown dtype or a partial byte."""
    bits = math.prod(shape) * round(DTYPE_SIZES[dtype] * 8)
    if bits % 8:
        raise ValueError(f"{math.prod(shape)} elements of {dtype} do not fill whole bytes")
    return bits // 8


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class Header:
    path: str
    header_len: int
    file_size: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] | None  # None: the file has no __metadata__ entry

    @property
    def data_start(self) -> int:
        return 8 + self.header_len

    @property
    def data_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def in_file_order(self) -> list[TensorInfo]:
        return sorted(self.tensors.values(), key=lambda t: (t.begin, t.end))


# ---------------------------------------------------------------- reading


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _entry(path: str, name: str, info: Any) -> TensorInfo:
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict):
        raise SafetensorsError(f"{where}: header entry {info!r} is not an object; download the file again")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise SafetensorsError(
            f"{where}: dtype {dtype!r} is not a safetensors dtype ({', '.join(DTYPE_SIZES)}); "
            "the file is corrupt, download it again"
        )
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise SafetensorsError(
            f"{where}: shape {shape!r} is not a list of non-negative integers; download the file again"
        )
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(x) for x in offsets):
        raise SafetensorsError(
            f"{where}: data_offsets {offsets!r} is not [begin, end]; download the file again"
        )
    begin, end = offsets
    if not 0 <= begin <= end:
        raise SafetensorsError(
            f"{where}: bad data_offsets {offsets} (negative, or ending before it begins); the file is "
            "corrupt, download it again"
        )
    try:
        expected = tensor_nbytes(dtype, shape)
    except ValueError as exc:
        raise SafetensorsError(f"{where}: {exc}; the file is corrupt, download it again") from None
    if end - begin != expected:
        raise SafetensorsError(
            f"{where}: spans {end - begin} bytes, its shape {shape} {dtype} needs {expected}; the file is "
            "corrupt, download it again"
        )
    return TensorInfo(name, dtype, tuple(shape), begin, end)


def _check_tiling(path: str, tensors: Iterable[TensorInfo], data_len: int) -> None:
    """Sorted by offset, the tensors must cover the data section exactly, as the safetensors reader
    requires: a gap, an overlap or bytes past the last tensor make it refuse the file."""
    at, previous = 0, None
    for t in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if t.begin < at:
            raise SafetensorsError(
                f"{path}: tensor {t.name!r} (data_offsets [{t.begin}, {t.end}]) overlaps tensor "
                f"{previous!r}, which ends at byte {at}; the file is corrupt, download it again"
            )
        if t.begin > at:
            raise SafetensorsError(
                f"{path}: data bytes {at}..{t.begin} before tensor {t.name!r} belong to no tensor; "
                "safetensors readers refuse such a file, download it again"
            )
        if t.end > data_len:
            raise SafetensorsError(
                f"{path}: tensor {t.name!r} ends at byte {t.end} of the data section but the file "
                f"holds only {data_len} data bytes; the file is truncated. Download it again"
            )
        at, previous = t.end, t.name
    if at != data_len:
        raise SafetensorsError(
            f"{path}: {data_len - at} bytes after the last tensor belong to no tensor; safetensors "
            "readers refuse such a file, download it again"
        )


def _check_length(raw_len: bytes, *, path: str, file_size: int) -> int:
    if len(raw_len) < 8:
        raise SafetensorsError(
            f"{path}: {file_size} bytes, shorter than the 8-byte header length; the file is "
            "truncated or not safetensors. Download it again"
        )
    (header_len,) = struct.unpack("<Q", raw_len)
    if header_len > MAX_HEADER_BYTES:
        raise SafetensorsError(
            f"{path}: header length {header_len} is over the format's {MAX_HEADER_BYTES >> 20} MB limit; "
            "not a safetensors file (or a corrupt one). Download it again"
        )
    if 8 + header_len > file_size:
        raise SafetensorsError(
            f"{path}: header length {header_len} exceeds the file size {file_size}; the file is "
            "truncated (an interrupted download?). Download it again"
        )
    return int(header_len)


def parse_header(raw_len: bytes, raw_json: bytes, *, path: str, file_size: int) -> Header:
    """Pure part of :func:`read_header`: the length prefix, the JSON and every entry, checked against
    ``file_size`` (see the module docstring)."""
    header_len = _check_length(raw_len, path=path, file_size=file_size)
    try:
        obj = json.loads(raw_json.decode("utf-8"))
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of thousands of digits
        raise SafetensorsError(f"{path}: header is not valid JSON ({exc}); download the file again") from None
    except RecursionError:
        raise SafetensorsError(f"{path}: header nests too deeply; not a safetensors file") from None
    if not isinstance(obj, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object; download the file again")
    metadata = obj.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise SafetensorsError(
            f"{path}: __metadata__ {metadata!r} is not an object of strings; download the file again"
        )
    tensors = {name: _entry(path, name, info) for name, info in obj.items()}
    _check_tiling(path, tensors.values(), file_size - 8 - header_len)
    return Header(path, header_len, file_size, tensors, metadata)


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read and check only the header of one safetensors file (no tensor data)."""
    p = Path(path)
    try:
        if not p.is_file():
            what = "missing" if not p.exists() else "not a regular file"
            raise SafetensorsError(f"{p}: {what}; give a safetensors file (re-download the model?)")
        size = p.stat().st_size
        with p.open("rb") as f:
            raw_len = f.read(8)
            header_len = _check_length(raw_len, path=str(p), file_size=size)
            raw_json = f.read(header_len)
    except OSError as exc:
        raise SafetensorsError(f"{p}: cannot read ({exc.strerror}); check the path and permissions") from None
    return parse_header(raw_len, raw_json, path=str(p), file_size=size)


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


def copy_tensor(header: Header, name: str, out: BinaryIO | None, digest: _Digest | None = None) -> None:
    """Stream one tensor's bytes (in chunks) into ``out`` and/or ``digest``."""
    t = header.tensors[name]
    with open(header.path, "rb") as f:
        f.seek(header.data_start + t.begin)
        left = t.nbytes
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                raise SafetensorsError(
                    f"{header.path}: tensor {name} is cut short; the file is truncated, re-download it"
                )
            if out is not None:
                out.write(chunk)
            if digest is not None:
                digest.update(chunk)
            left -= len(chunk)


def read_tensor(header: Header, name: str) -> bytes:
    """One tensor's bytes (for small tensors; :func:`copy_tensor` streams large ones)."""
    buf = io.BytesIO()
    copy_tensor(header, name, buf)
    return buf.getvalue()


# ---------------------------------------------------------------- writing


def header_bytes(
    tensors: Iterable[tuple[str, str, Sequence[int]]], metadata: Mapping[str, str] | None
) -> bytes:
    """8-byte length + JSON header for ``(name, dtype, shape)`` in file order, the data offsets following
    that order with no gap, padded with spaces to 8 bytes as the safetensors writer does."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dtype, shape in tensors:
        if name in header:
            raise ValueError(f"tensor {name!r} twice in one safetensors header")
        size = tensor_nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


# ---------------------------------------------------------------- what tensors are for

Role = Literal["embedding", "lm_head", "vision", "mtp", "other"]


def tensor_role(name: str) -> Role:
    """The part of the checkpoint a tensor belongs to: the planner counts what decode reads per token
    (everything but embedding, vision and MTP) and doctor shows the split."""
    if name.startswith("mtp.") or ".mtp." in name:
        return "mtp"
    if "visual." in name or "vision_tower" in name or name.startswith(("vision", "model.vision")):
        return "vision"
    if name.startswith("lm_head.") or name.endswith(".lm_head.weight"):
        return "lm_head"
    if name.endswith(("embed_tokens.weight", "wte.weight")):
        return "embedding"
    return "other"


def summarize(headers: Iterable[Header]) -> tuple[dict[str, int], dict[str, int], set[str]]:
    """Bytes per dtype and per role over ``headers``, and all tensor names."""
    by_dtype: dict[str, int] = {}
    by_role: dict[str, int] = {}
    names: set[str] = set()
    for h in headers:
        for t in h.tensors.values():
            by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + t.nbytes
            role = tensor_role(t.name)
            by_role[role] = by_role.get(role, 0) + t.nbytes
            names.add(t.name)
    return by_dtype, by_role, names


# How the MTP head's fusion layer is stored. vLLM's Qwen3_5MTP / Qwen3NextMTP loaders take only names
# starting with "mtp." (is_unused_checkpoint_weight) and build ``fc`` as a plain ColumnParallelLinear
# unless the quantization config says otherwise: "mtp.fc.weight" is what they load; a GPTQ-packed
# "mtp.fc.qweight"/"qzeros"/"scales" is skipped (0% MTP acceptance, vLLM <= 0.28) or refused (0.32);
# a prefixed name such as "model.mtp.fc.qweight" is never read as the drafter's fc at all.
MtpFcState = Literal["bf16", "quantized", "missing", "none"]
MTP_FC = "mtp.fc."
PACKED_SUFFIXES = ("qweight", "qzeros", "scales")


def mtp_fc_state(names: Iterable[str]) -> MtpFcState:
    """``quantized``: any packed ``mtp.fc.{qweight,qzeros,scales}`` (run fix-mtp); ``bf16``: a plain
    ``mtp.fc.weight`` (unquantized; bf16 in every known checkpoint); ``missing``: MTP tensors but no fc the
    drafter loads; ``none``: no MTP tensors."""
    names = set(names)
    if any(MTP_FC + s in names for s in PACKED_SUFFIXES):
        return "quantized"
    if MTP_FC + "weight" in names:
        return "bf16"
    if any(tensor_role(n) == "mtp" for n in names):
        return "missing"
    return "none"

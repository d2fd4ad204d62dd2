"""AutoRound / GPTQ 4-bit weight packing, as pure numpy functions.

Layout (``auto_round:auto_gptq``, the packing of the Qwen3.6-27B INT4 AutoRound checkpoint), for a
linear layer with weight ``W[out, in]`` and groups of ``group_size`` input features:

- ``qweight``: int32 ``[in / 8, out]``; input row ``i`` sits in word ``i // 8`` at bits ``4 * (i % 8)``.
- ``qzeros``: int32 ``[in / group_size, out / 8]``; column ``o`` sits in word ``o // 8`` at bits
  ``4 * (o % 8)``. What is stored is the zero point MINUS ONE (classic GPTQ), clamped to 0..15.
- ``scales``: float16 ``[in / group_size, out]``.

Dequantization is ``(q - (stored_zero + 1)) * scale`` for this packing (auto-round's
``auto_round_extension/torch/qlinear_torch_zp.py`` adds the 1 back in its forward pass). A packing that
stores the zero point itself (``auto_round:auto_awq``-style, gptqmodel's v2) uses ``(q - stored_zero)``.
The Qwen3.6 model card's mtp.fc script uses the stored zero as-is on ``auto_round:auto_gptq`` data, which
is one quantization step off on every weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BITS = 4
PACK_FACTOR = 32 // BITS  # eight 4-bit values per int32 word
MAXQ = 2**BITS - 1

# Packing formats whose stored zero point is the real one minus 1 (and those that store it as is).
ZERO_MINUS_ONE_FORMATS = frozenset({"auto_round:auto_gptq", "auto_gptq", "gptq", "auto_round:gptq"})
ZERO_AS_IS_FORMATS = frozenset({"auto_round:auto_awq", "gptq_v2", "auto_round:gptqmodel"})


@dataclass(frozen=True)
class Packed:
    """The three tensors a GPTQ-packed linear layer stores."""

    qweight: np.ndarray  # int32 [in / 8, out]
    qzeros: np.ndarray  # int32 [in / group, out / 8]
    scales: np.ndarray  # float16 [in / group, out]


def zero_offset(packing_format: str) -> int:
    """What to add to a stored zero point to get the real one, for a packing format."""
    if packing_format in ZERO_MINUS_ONE_FORMATS:
        return 1
    if packing_format in ZERO_AS_IS_FORMATS:
        return 0
    raise ValueError(f"unknown packing_format {packing_format!r}")


def quantize_rtn(
    weight: np.ndarray, group_size: int = 128, sym: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round-to-nearest quantization the way auto-round initialises it (iters=0).

    weight: float [out, in]. Returns q uint8 [out, in] in 0..15, zero int [in/g, out], scale f16 [in/g, out].
    Symmetric follows auto-round's ``quant_tensor_sym``: integer range -8..7 around a zero point of 8, and a
    scale of ``max_v / 8`` whose sign follows the larger of |min| and |max| (so scales can be negative).
    Asymmetric: scale ``(max - min) / 15``, zero ``round(-min / scale)``.
    """
    out_f, in_f = weight.shape
    _check_shape(in_f, out_f, group_size)
    w = weight.astype(np.float32).reshape(out_f, in_f // group_size, group_size)
    wmin = np.minimum(w.min(-1), 0.0)
    wmax = np.maximum(w.max(-1), 0.0)
    if sym:
        half = 2 ** (BITS - 1)
        wmin_abs, wmax_abs = -wmin, wmax
        max_v = np.where(wmax_abs < wmin_abs, 1.0, -1.0) * np.maximum(wmax_abs, wmin_abs)
        scale = (max_v / half).astype(np.float16)
        scale = np.where(scale < 0, np.minimum(scale, -1e-5), np.maximum(scale, 1e-5)).astype(np.float16)
        zero = np.full(scale.shape, half, dtype=np.int32)
    else:
        scale = ((wmax - wmin) / MAXQ).astype(np.float16)
        scale = np.maximum(scale, np.float16(1e-5)).astype(np.float16)
        zero = np.clip(np.round(-wmin / scale.astype(np.float32)), 0, MAXQ).astype(np.int32)
    q = np.round(w / scale.astype(np.float32)[..., None]) + zero[..., None]
    q = np.clip(q, 0, MAXQ).astype(np.uint8).reshape(out_f, in_f)
    return q, zero.T.copy(), scale.T.copy()


def pack(q: np.ndarray, zero: np.ndarray, scale: np.ndarray, group_size: int = 128) -> Packed:
    """Pack integer weights q [out, in] (0..15), zero points [in/g, out] and scales [in/g, out].

    Stores ``zero - 1`` clamped to 0..15, as auto-round's ``auto_round:auto_gptq`` packer does: a zero
    point of 0 cannot be represented and decodes as 1 (auto-round accepts that degradation too).
    """
    out_f, in_f = q.shape
    _check_shape(in_f, out_f, group_size)
    if zero.shape != (in_f // group_size, out_f) or scale.shape != zero.shape:
        raise ValueError(f"zero {zero.shape} / scale {scale.shape} do not match q {q.shape}")
    qweight = _pack_rows(q.T.astype(np.uint32))  # [in/8, out]
    stored = np.clip(zero.astype(np.int64) - 1, 0, MAXQ).astype(np.uint32)
    qzeros = _pack_rows(stored.T).T.copy()  # pack along out: [in/g, out/8]
    return Packed(qweight=qweight, qzeros=qzeros, scales=np.ascontiguousarray(scale, dtype=np.float16))


def unpack_qweight(qweight: np.ndarray) -> np.ndarray:
    """int32 [in/8, out] -> uint8 [in, out]."""
    return _unpack_rows(qweight)


def unpack_qzeros(qzeros: np.ndarray) -> np.ndarray:
    """int32 [groups, out/8] -> stored zero points uint8 [groups, out] (no +1 applied)."""
    return _unpack_rows(qzeros.T).T.copy()


def dequantize(
    packed: Packed,
    group_size: int = 128,
    packing_format: str = "auto_round:auto_gptq",
    *,
    offset: int | None = None,
) -> np.ndarray:
    """Dequantize to float32 [out, in] (torch Linear layout): ``(q - (stored_zero + offset)) * scale``,
    offset from the packing format unless given (``offset=0`` reproduces the model card's script)."""
    q = unpack_qweight(packed.qweight).astype(np.float32)  # [in, out]
    in_f, out_f = q.shape
    _check_shape(in_f, out_f, group_size)
    groups = in_f // group_size
    add = zero_offset(packing_format) if offset is None else offset
    zeros = unpack_qzeros(packed.qzeros).astype(np.float32) + add
    if zeros.shape != (groups, out_f) or packed.scales.shape != (groups, out_f):
        raise ValueError(
            f"qzeros {packed.qzeros.shape} / scales {packed.scales.shape} do not match "
            f"qweight {packed.qweight.shape} with group_size {group_size}"
        )
    scales = packed.scales.astype(np.float32)
    w = (q.reshape(groups, group_size, out_f) - zeros[:, None, :]) * scales[:, None, :]
    return w.reshape(in_f, out_f).T.copy()


def infer_group_size(qweight_shape: tuple[int, ...], scales_shape: tuple[int, ...]) -> int:
    """Group size from the stored shapes: in_features / number of groups."""
    in_f = qweight_shape[0] * PACK_FACTOR
    groups = scales_shape[0]
    if groups == 0 or in_f % groups:
        raise ValueError(f"qweight {qweight_shape} and scales {scales_shape} give no whole group size")
    return in_f // groups


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even like torch's ``.to(bfloat16)``."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _check_shape(in_f: int, out_f: int, group_size: int) -> None:
    if group_size <= 0 or in_f % group_size or group_size % PACK_FACTOR:
        raise ValueError(f"in_features {in_f} is not a multiple of group_size {group_size}")
    if out_f % PACK_FACTOR:
        raise ValueError(f"out_features {out_f} is not a multiple of {PACK_FACTOR}")


def _pack_rows(values: np.ndarray) -> np.ndarray:
    """uint [rows, cols] -> int32 [rows / 8, cols]: eight consecutive rows per word, low bits first."""
    rows, cols = values.shape
    v = np.ascontiguousarray(values, dtype=np.uint32).reshape(rows // PACK_FACTOR, PACK_FACTOR, cols)
    shifts = (np.arange(PACK_FACTOR, dtype=np.uint32) * BITS)[None, :, None]
    words = np.bitwise_or.reduce((v & MAXQ) << shifts, axis=1)
    return np.ascontiguousarray(words, dtype=np.uint32).view(np.int32)


def _unpack_rows(words: np.ndarray) -> np.ndarray:
    """int32 [rows / 8, cols] -> uint8 [rows, cols]."""
    w = np.ascontiguousarray(words).view(np.uint32)
    shifts = (np.arange(PACK_FACTOR, dtype=np.uint32) * BITS)[None, :, None]
    v = (w[:, None, :] >> shifts) & MAXQ
    return v.reshape(-1, w.shape[1]).astype(np.uint8)

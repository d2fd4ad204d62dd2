"""GPTQ 4-bit packing (``auto_round:auto_gptq``): exact round trips, the zero-minus-one convention, and
agreement with the real ``auto-round`` package where it is importable.

The auto-round comparisons need ``auto_round`` importable; it drags in datasets/pandas/accelerate, so it
is kept out of the vLLM venv: install it beside it with
``pip install --no-deps --target DIR auto-round accelerate datasets pyarrow pandas python-dateutil pytz
tzdata xxhash multiprocess py-cpuinfo threadpoolctl`` and set ``AUTO_ROUND_PATH=DIR``.
"""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest

from serve.checkpoint import autoround

RNG = np.random.default_rng(1234)


def _auto_round():
    path = os.environ.get("AUTO_ROUND_PATH")
    if path and path not in sys.path:
        sys.path.append(path)  # appended: the venv's own torch/transformers stay first
    try:
        return importlib.import_module("auto_round_extension.torch.qlinear_torch_zp")
    except ImportError as exc:
        from tests.support.require import skip_or_fail

        skip_or_fail(
            "auto-round", f"auto-round not importable ({exc}); set AUTO_ROUND_PATH, see the module docstring"
        )


def _random_layer(out_f: int = 64, in_f: int = 256, sym: bool = True):
    groups = in_f // 128
    q = RNG.integers(0, 16, size=(out_f, in_f), dtype=np.uint8)
    # Real zero points; 0 is left out because the zero-minus-one packing cannot store it.
    zero = np.full((groups, out_f), 8) if sym else RNG.integers(1, 16, size=(groups, out_f))
    scale = (RNG.uniform(0.001, 0.05, size=(groups, out_f)) * RNG.choice([-1, 1], (groups, out_f))).astype(
        np.float16
    )
    return q, zero.astype(np.int32), scale


def _reference(q: np.ndarray, zero: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float64 (q - zero) * scale with the REAL zero point, groups of 128 along the input dim."""
    z = np.repeat(zero.astype(np.float64), 128, axis=0).T
    s = np.repeat(scale.astype(np.float64), 128, axis=0).T
    return (q.astype(np.float64) - z) * s


@pytest.mark.parametrize("sym", [True, False])
def test_pack_then_dequantize_equals_float64_reference(sym: bool) -> None:
    q, zero, scale = _random_layer(sym=sym)
    packed = autoround.pack(q, zero, scale)
    assert packed.qweight.shape == (256 // 8, 64) and packed.qweight.dtype == np.int32
    assert packed.qzeros.shape == (2, 64 // 8) and packed.scales.shape == (2, 64)
    np.testing.assert_array_equal(autoround.dequantize(packed), _reference(q, zero, scale))


def test_unpack_inverts_pack_bit_exactly_including_the_sign_nibble() -> None:
    q = np.full((8, 128), 15, dtype=np.uint8)  # 15 in the top nibble sets the int32 sign bit
    q[:, ::3] = 0
    zero = np.full((1, 8), 16)  # stored as 15, the top of the nibble range
    packed = autoround.pack(q, zero, np.ones((1, 8), np.float16))
    assert (packed.qweight < 0).any()
    np.testing.assert_array_equal(autoround.unpack_qweight(packed.qweight), q.T)
    np.testing.assert_array_equal(autoround.unpack_qzeros(packed.qzeros), np.full((1, 8), 15))


def test_stored_zero_is_zero_point_minus_one_and_zero_cannot_be_stored() -> None:
    q, zero, scale = _random_layer(sym=True)
    assert (autoround.unpack_qzeros(autoround.pack(q, zero, scale).qzeros) == 7).all()
    zero0 = np.zeros_like(zero)
    stored = autoround.unpack_qzeros(autoround.pack(q, zero0, scale).qzeros)
    assert (stored == 0).all()  # clamped like auto-round: decodes as zero point 1


def test_model_card_convention_is_one_step_off() -> None:
    q, zero, scale = _random_layer(sym=True)
    packed = autoround.pack(q, zero, scale)
    ours = autoround.dequantize(packed)
    card = autoround.dequantize(packed, offset=0)
    per_weight_scale = np.repeat(scale.astype(np.float32), 128, axis=0).T
    np.testing.assert_allclose(card - ours, per_weight_scale, rtol=1e-6)


def test_zero_offset_by_packing_format() -> None:
    assert autoround.zero_offset("auto_round:auto_gptq") == 1
    assert autoround.zero_offset("auto_round:auto_awq") == 0
    with pytest.raises(ValueError, match="unknown packing_format"):
        autoround.zero_offset("nf4")


@pytest.mark.parametrize("sym", [True, False])
def test_quantize_rtn_reconstructs_within_a_step(sym: bool) -> None:
    w = RNG.normal(0, 0.02, size=(64, 256)).astype(np.float32)
    q, zero, scale = autoround.quantize_rtn(w, sym=sym)
    back = autoround.dequantize(autoround.pack(q, zero, scale))
    step = np.abs(np.repeat(scale.astype(np.float32), 128, axis=0).T)
    # asym: round to nearest everywhere; sym: the -8..7 range clips the largest value by up to a step
    assert (np.abs(back - w) <= step * (1.0 if sym else 0.5) + 1e-6).all()
    assert np.abs(back - w).mean() < step.mean() * 0.3


@pytest.mark.parametrize(
    ("in_f", "out_f", "group"), [(100, 64, 128), (256, 60, 128), (256, 64, 0), (256, 64, 100)]
)
def test_bad_shapes_are_refused(in_f: int, out_f: int, group: int) -> None:
    with pytest.raises(ValueError, match="multiple of"):
        autoround.quantize_rtn(np.zeros((out_f, in_f), np.float32), group_size=group)


def test_infer_group_size() -> None:
    assert autoround.infer_group_size((1280, 5120), (80, 5120)) == 128
    with pytest.raises(ValueError):
        autoround.infer_group_size((10, 64), (3, 64))


def test_bf16_rounding_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    x = np.concatenate([RNG.normal(0, 1, 4096), [0.0, -0.0, 1e-40, 3.4e38, np.inf, -np.inf]]).astype(
        np.float32
    )
    ours = autoround.float32_to_bf16_bits(x)
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(
        autoround.bf16_bits_to_float32(ours), torch.from_numpy(x).bfloat16().float()
    )


# ---------------------------------------------------------------- against the auto-round package


def _auto_round_layer(mod, w: np.ndarray, zero: np.ndarray, scale: np.ndarray):
    """Pack w with auto-round's own QuantLinear (the auto_round:auto_gptq exporter's class)."""
    import torch

    out_f, in_f = w.shape
    linear = torch.nn.Linear(in_f, out_f, bias=False)
    linear.weight.data = torch.from_numpy(w)
    layer = mod.QuantLinear(4, 128, in_f, out_f, bias=False)
    # auto-round passes scales/zeros as [out, groups]
    layer.pack(linear, torch.from_numpy(scale.T.astype(np.float32)), torch.from_numpy(zero.T.copy()))
    return layer


@pytest.mark.parametrize("sym", [True, False])
def test_packer_is_bit_identical_to_auto_round(sym: bool) -> None:
    mod = _auto_round()
    q, zero, scale = _random_layer(sym=sym)
    w = _reference(q, zero, scale).astype(np.float32)  # on-grid weights: rounding is unambiguous
    layer = _auto_round_layer(mod, w, zero, scale)
    ours = autoround.pack(q, zero, scale)
    np.testing.assert_array_equal(ours.qweight, layer.qweight.numpy())
    np.testing.assert_array_equal(ours.qzeros, layer.qzeros.numpy())
    np.testing.assert_array_equal(ours.scales, layer.scales.numpy())


@pytest.mark.parametrize("sym", [True, False])
def test_dequantize_matches_auto_round_forward(sym: bool) -> None:
    """auto-round's forward adds 1 to the stored zero; feeding the identity matrix returns W^T."""
    import torch

    mod = _auto_round()
    q, zero, scale = _random_layer(sym=sym)
    layer = _auto_round_layer(mod, _reference(q, zero, scale).astype(np.float32), zero, scale)
    eye = torch.eye(q.shape[1], dtype=torch.float32)
    layer.scales = layer.scales.float()
    theirs = layer(eye).T.numpy()  # [out, in]
    packed = autoround.Packed(
        layer.qweight.numpy(), layer.qzeros.numpy(), layer.scales.numpy().astype(np.float16)
    )
    np.testing.assert_allclose(autoround.dequantize(packed), theirs, rtol=0, atol=1e-6)
    card = autoround.dequantize(packed, offset=0)
    assert not np.allclose(card, theirs, atol=1e-4)  # the card's script disagrees with auto-round


def test_quantize_rtn_sym_matches_auto_round() -> None:
    _auto_round()
    import torch
    from auto_round.data_type.int import quant_tensor_sym

    w = RNG.normal(0, 0.02, size=(64, 256)).astype(np.float32)
    qdq, scale_t, _ = quant_tensor_sym(torch.from_numpy(w), bits=4, group_size=128)
    q, zero, scale = autoround.quantize_rtn(w, sym=True)
    np.testing.assert_array_equal(scale.T.reshape(-1), scale_t.reshape(-1).numpy())
    ours = autoround.dequantize(autoround.pack(q, zero, scale))
    np.testing.assert_allclose(ours, qdq.numpy(), rtol=0, atol=1e-7)

"""Requantization parameters: exact multipliers, folded bias, clamp bounds, float32 orders."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from driver import quant
from driver.quant import Activation, QuantizationError, QuantType

float32s = st.floats(min_value=2.0 ** -40, max_value=2.0 ** 29, width=32, allow_subnormal=False)


@given(float32s)
def test_decomposed_multiplier_is_exact(scale):
    multiplier, shift = quant.decompose_multiplier(scale)
    assert 1 <= shift <= 63 and 0 <= multiplier < 2 ** 31
    assert Fraction(multiplier, 2 ** shift) == Fraction(float(np.float32(scale)))


def test_tiny_multiplier_rounds_everything_to_zero():
    assert quant.decompose_multiplier(np.float32(2.0 ** -60)) == (8, 63)    # exact
    full_mantissa = np.float32(2.0 ** -60) * np.float32(1 + 2.0 ** -23)
    assert quant.decompose_multiplier(full_mantissa) == (0, 63)


@pytest.mark.parametrize("scale", [0.0, -0.5, float("inf"), float("nan")])
def test_decompose_multiplier_sign_wrong(scale):
    with pytest.raises(QuantizationError, match="fc1: column 3 has effective scale .*positive"):
        quant.decompose_multiplier(scale, layer="fc1", column=3)


def test_decompose_multiplier_large_wrong():
    with pytest.raises(QuantizationError, match="below 2\\*\\*30"):
        quant.decompose_multiplier(2.0 ** 31, layer="fc1")


@given(st.integers(0, 2 ** 32 - 1))
def test_folded_bias_equals_zero_point_arithmetic(seed):
    rng = np.random.default_rng(seed)
    n, k = rng.integers(1, 6), rng.integers(1, 9)
    w = rng.integers(0, 256, size=(n, k))
    zw, zx = rng.integers(0, 256, size=n), int(rng.integers(0, 256))
    bias = rng.integers(-1000, 1000, size=n)
    x = rng.integers(0, 256, size=(3, k))
    folded = quant.fold_bias(bias, w, zw, zx)
    framework = (x - zx) @ (w - zw[:, None]).T + bias
    assert np.array_equal(x @ (w - zw[:, None]).T + folded, framework)


def test_fold_bias_overflow_wrong():
    w = np.full((1, 4), 255)
    with pytest.raises(QuantizationError, match="fc2: folded bias of column 0 .* int32"):
        quant.fold_bias([-(2 ** 31) + 10], w, [0], 255, layer="fc2")


def test_accumulator_overflow_wrong():
    w = np.full((2, 40000), 127)
    with pytest.raises(QuantizationError, match="fc3: column 0 can overflow"):
        quant.check_accumulator_range(w, [-128, 0], [0, 0], QuantType.UINT8, layer="fc3")


@pytest.mark.parametrize("qtype, zero, activation, expected", [
    (QuantType.UINT8, 100, Activation.NONE, (0, 255)),
    (QuantType.INT8, -5, Activation.NONE, (-128, 127)),
    (QuantType.UINT8, 100, Activation.RELU, (100, 255)),
    (QuantType.INT8, -5, Activation.RELU, (-5, 127)),
    (QuantType.UINT8, 10, Activation.RELU6, (10, 10 + 60)),      # 6 / 0.1 = 60 steps
    (QuantType.INT8, 100, Activation.RELU6, (100, 127)),         # saturates at the type
])
def test_clamp_bounds(qtype, zero, activation, expected):
    assert quant.clamp_bounds(qtype, zero, 0.1, activation) == expected


def test_clip_bounds_are_quantized_like_the_values():
    assert quant.clamp_bounds(QuantType.UINT8, 50, 0.5, clip=(-3.0, 4.0)) == (44, 58)


def test_torch_and_onnxruntime_orders_differ_somewhere():
    rng = np.random.default_rng(0)
    sx, sy = np.float32(0.0213), np.float32(0.137)
    sw = rng.uniform(1e-3, 1e-2, size=20000).astype(np.float32)
    torch_order = quant.effective_scale(sx, sw, sy, order="torch")
    ort_order = quant.effective_scale(sx, sw, sy, order="onnxruntime")
    assert torch_order.dtype == ort_order.dtype == np.float32
    assert np.all(np.abs(torch_order / ort_order - 1) < 1e-6)
    assert np.any(torch_order != ort_order)


def test_effective_scale_order_wrong():
    with pytest.raises(ValueError, match="order must be one of"):
        quant.effective_scale(0.1, [0.1], 0.1, order="tflite")


def test_float32_and_exact_requantization_differ_only_near_ties():
    rng = np.random.default_rng(1)
    acc = rng.integers(-40000, 40000, size=200_000)
    scale = np.float32(0.0037)
    multiplier, shift = quant.decompose_multiplier(scale)
    exact = quant.requantize_exact(acc, 0, multiplier, shift, 0, 0, -(1 << 20), 1 << 20)
    float32 = quant.requantize_float32(acc, 0, scale, 0, -(1 << 20), 1 << 20)
    differ = exact != float32
    assert differ.mean() < 1e-4 and np.all(np.abs(exact - float32) <= 1)
    distance = np.abs(acc * float(scale) - np.floor(acc * float(scale)) - 0.5)
    assert np.all(distance[differ] < 1e-4)           # every difference sits at a near-tie


def test_quant_type_wrong():
    with pytest.raises(TypeError, match="weight dtype must be uint8 or int8, not 'int16'"):
        QuantType.of("int16", "weight dtype")

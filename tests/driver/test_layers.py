"""QuantLinear, ColumnTable and Network: construction, checks and reference arithmetic."""

import numpy as np
import pytest
from npu_builders import chain_of, random_input, random_layer

import driver
from driver.layers import QuantParams, check_chain


def make(**overrides):
    args = dict(weight=np.array([[1, -2, 3], [4, 5, -6]], dtype=np.int8), weight_scale=0.01,
                bias=np.array([10, -10], dtype=np.int32), input_scale=0.05, input_zero_point=128,
                output_scale=0.02, output_zero_point=100, name="fc")
    args.update(overrides)
    return driver.QuantLinear(**args)


def test_reference_matches_real_arithmetic():
    layer = make()
    x = np.array([[128, 140, 100], [0, 255, 7]], dtype=np.uint8)
    real_x = 0.05 * (x.astype(float) - 128)
    real_w = 0.01 * layer.weight.astype(float)
    real_y = real_x @ real_w.T + 0.05 * 0.01 * layer.bias
    expected = np.clip(np.rint(real_y / 0.02) + 100, 0, 255)
    np.testing.assert_array_equal(layer.reference(x), expected)
    np.testing.assert_array_equal(layer.reference(x, arithmetic="float32"), expected)


def test_per_channel_scales_and_uint8_zero_points():
    rng = np.random.default_rng(0)
    layer = random_layer(rng, 9, 4, weight_dtype="uint8")
    x = random_input(rng, 6, layer)
    real = ((x.astype(float) - layer.input.zero_point) * layer.input.scale) @ (
        (layer.weight.astype(float) - layer.weight_zero_point[:, None])
        * layer.weight_scale[:, None].astype(float)).T
    real += layer.bias * layer.input.scale * layer.weight_scale.astype(float)
    expected = np.clip(np.rint(real / layer.output.scale) + layer.output.zero_point, 0, 255)
    assert np.abs(layer.reference(x).astype(int) - expected).max() <= 1


def test_relu_and_relu6_bounds():
    assert (make(activation="relu").low, make(activation="relu").high) == (100, 255)
    relu6 = make(activation="relu6")
    assert (relu6.low, relu6.high) == (100, 255)            # 6 / 0.02 = 300 steps: saturates
    relu6 = make(activation="relu6", output_scale=0.1, output_zero_point=3)
    assert (relu6.low, relu6.high) == (3, 63)


def test_records_hold_folded_bias():
    layer = make()
    assert [r.bias for r in layer.records] == [10 - 128 * 2, -10 - 128 * 3]
    assert all(r.weight_zero == 0 and r.output_zero == 100 for r in layer.records)


def test_column_table_looks_up_per_column():
    params = QuantParams(scale=0.1, zero_point=0, dtype="uint8")
    table = np.stack([np.arange(256, dtype=np.uint8), np.arange(256)[::-1].astype(np.uint8)])
    t = driver.ColumnTable(table=table, input=params, output=params, name="add")
    x = np.array([[0, 0], [5, 5], [255, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(t.apply(x), [[0, 255], [5, 250], [255, 0]])


def test_network_quantize_and_dequantize():
    layers = chain_of(np.random.default_rng(1), [4, 3, 2])
    net = driver.Network(layers=layers)
    x = np.array([[0.0, 0.5, -1.0, 100.0]], dtype=np.float32)
    q = net.quantize(x)
    assert q.dtype == np.uint8 and q[0, 3] == 255
    assert np.allclose(net.input.dequantize(q)[0, :3], x[0, :3], atol=net.input.scale / 2)
    assert net.macs(2) == 2 * (4 * 3 + 3 * 2)


def test_weight_type_wrong():
    with pytest.raises(TypeError, match="fc: weight dtype must be uint8 or int8"):
        make(weight=np.zeros((2, 3), dtype=np.int16))


def test_weight_not_array_wrong():
    with pytest.raises(TypeError, match="fc: weight must be a NumPy array, not list"):
        make(weight=[[1, 2, 3]])


def test_weight_shape_wrong():
    with pytest.raises(ValueError, match=r"fc: weight must have shape \[out_features, in_"):
        make(weight=np.zeros(3, dtype=np.int8))


def test_weight_scale_count_wrong():
    with pytest.raises(ValueError, match="fc: weight_scale must be a scalar or have 2 values"):
        make(weight_scale=[0.1, 0.2, 0.3])


def test_weight_zero_point_wrong():
    with pytest.raises(ValueError, match="fc: weight zero points must be in -128..127"):
        make(weight_zero_point=200)


def test_float_bias_wrong():
    with pytest.raises(TypeError, match="fc: bias must be quantized to int32, not float"):
        make(bias=np.array([0.5, 0.25]))


def test_input_zero_point_wrong():
    with pytest.raises(ValueError, match="fc: input zero point must be in 0..255 for uint8"):
        make(input_zero_point=-1)


def test_output_scale_wrong():
    with pytest.raises(ValueError, match="fc: output scale must be positive and finite"):
        make(output_scale=0.0)


def test_effective_scale_wrong():
    with pytest.raises(driver.QuantizationError, match="fc: column 0 .*below 2\\*\\*30"):
        make(weight_scale=1e6, input_scale=1e6, output_scale=1e-3)


def test_empty_clip_wrong():
    with pytest.raises(driver.QuantizationError, match="fc: the clip range is empty"):
        make(clip=(3.0, 2.0))


def test_activation_wrong():
    with pytest.raises(ValueError, match="fc: activation must be one of 'none', 'relu', "
                                         "'relu6', not 'sigmoid'"):
        make(activation="sigmoid")


def test_chain_quantization_wrong():
    a = make(name="a")
    b = make(name="b", weight=np.zeros((1, 2), dtype=np.int8), bias=None)
    with pytest.raises(ValueError, match="a outputs .* but b expects"):
        check_chain([a, b])


def test_chain_features_wrong():
    with pytest.raises(ValueError, match="a has 2 outputs but b takes 3 inputs"):
        check_chain([make(name="a"), make(name="b")])


def test_reference_input_type_wrong():
    with pytest.raises(TypeError, match="fc: input must be uint8, not int8"):
        make().reference(np.zeros((1, 3), dtype=np.int8))

"""ONNX models as users have them: graph plumbing, integer I/O, MatMulInteger, convolution.

References: the onnx package's own node tests (inputs and expected outputs) and
onnxruntime, always with exact equality (QDQ float paths: a bounded one-step rate).
"""

import warnings

import numpy as np
import pytest
from npu_builders import (
    CONFIGS,
    ONNXRUNTIME_EXACT_INT8,
    compare_with_framework,
    onnx_node_cases,
    onnxruntime_weight_range,
    ort_run,
    qoperator_model,
    random_input,
    random_layer,
)

import driver
from driver.onnx_import import OnnxImportError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static  # noqa: E402

ELEM = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}


def run_golden(net, x, config=None):
    with driver.open("golden", config=config) as npu:
        return npu.run(net, x)


def suite_cases(op):
    cases = [c for c in onnx_node_cases(op) if c[2].ndim in (2, 4)]
    return pytest.mark.parametrize("case", cases, ids=[c[0] for c in cases])


@pytest.mark.parametrize("op", ["QLinearMatMul", "MatMulInteger", "QLinearConv", "ConvInteger"])
def test_onnx_node_suite(op):
    """The onnx package's own test models of each op, their constant operands folded: the
    chip gives the suite's expected integers, as onnxruntime does, in their dtype."""
    cases = [c for c in onnx_node_cases(op) if c[2].ndim in (2, 4)]
    assert cases
    for name, model, x, expected in cases:
        net = driver.load_onnx(model)
        assert not net.float_input and not net.float_output
        y = run_golden(net, x, CONFIGS["2x3"])
        assert y.dtype == expected.dtype, name
        np.testing.assert_array_equal(y.reshape(expected.shape), expected, err_msg=name)
        if op != "ConvInteger":     # onnxruntime's ConvInteger refuses per-channel zero points
            np.testing.assert_array_equal(ort_run(model, x), expected, err_msg=name)


def test_three_dimensional_matmul_wrong():
    name, model, x, _ = next(c for c in onnx_node_cases("QLinearMatMul") if c[2].ndim == 3)
    with pytest.raises(OnnxImportError, match=r"\(QLinearMatMul\): takes a \[batch, features\]"):
        driver.load_onnx(model)


# -- plumbing --------------------------------------------------------------------------------

def with_nodes(model, before=(), after=(), inits=()):
    """``model`` with layout nodes on its input (``before``) and output (``after``); each
    entry is ``(op, extra_inputs, attributes)``; returns a new model."""
    graph = model.graph
    x, y = graph.input[0].name, graph.output[0].name
    nodes, last = [], x
    for index, (op, extra, attrs) in enumerate(reversed(before)):
        nodes.append(helper.make_node(op, [f"in{index}", *extra], [last], name=f"pre{index}",
                                      **attrs))
        last = f"in{index}"
    nodes = nodes[::-1]
    body = [helper.make_node(n.op_type, list(n.input), list(n.output), name=n.name,
                             domain=n.domain) for n in graph.node]
    for n, original in zip(body, graph.node, strict=True):
        n.attribute.extend(original.attribute)
    out = y
    tail = []
    for index, (op, extra, attrs) in enumerate(after):
        tail.append(helper.make_node(op, [out, *extra], [f"out{index}"], name=f"post{index}",
                                     **attrs))
        out = f"out{index}"
    first_input = helper.make_tensor_value_info(last, graph.input[0].type.tensor_type.elem_type,
                                                None)
    first_input.type.CopyFrom(graph.input[0].type)
    new_out = helper.make_tensor_value_info(out, graph.output[0].type.tensor_type.elem_type, None)
    rebuilt = helper.make_graph(nodes + body + tail, graph.name, [first_input], [new_out],
                                list(graph.initializer) + list(inits))
    result = helper.make_model(rebuilt, opset_imports=list(model.opset_import))
    return result


def ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


PLUMBING = {
    "identity": [("Identity", [], {})],
    "flatten": [("Flatten", [], {"axis": 1})],
    "reshape": [("Reshape", ["shape_a"], {}), ("Reshape", ["shape_b"], {})],
    "squeeze": [("Unsqueeze", ["axes"], {}), ("Squeeze", ["axes"], {})],
    "transpose_unit_axis": [("Unsqueeze", ["axes"], {}), ("Transpose", [], {"perm": [0, 2, 1]}),
                            ("Flatten", [], {})],
}


@pytest.mark.parametrize("where", ["after", "before"])
@pytest.mark.parametrize("kind", PLUMBING)
def test_plumbing_is_free(kind, where):
    """Layout-only nodes on the input or output run exactly as the model without them."""
    rng = np.random.default_rng(len(kind))
    layer = random_layer(rng, 6, 5, weight_range=ONNXRUNTIME_EXACT_INT8)
    inits = [ints("shape_a", [0, 1, -1]), ints("shape_b", [-1, 6 if where == "before" else 5]),
             ints("axes", [1])]
    plain = qoperator_model(layer, "QLinearMatMul")
    model = with_nodes(plain, **{where: PLUMBING[kind]}, inits=inits)
    net = driver.load_onnx(model)
    x = random_input(rng, 9, layer)
    y = run_golden(net, x)
    np.testing.assert_array_equal(y, ort_run(model, x))
    np.testing.assert_array_equal(y, ort_run(plain, x))


@pytest.mark.parametrize("op", ["Identity", "Dropout"])
def test_float_plumbing_after_dequantize(op):
    """The exporter's Identity (or an inference Dropout) after the float output of a QDQ
    model."""
    rng = np.random.default_rng(11)
    layer = random_layer(rng, 7, 4, weight_range=ONNXRUNTIME_EXACT_INT8)
    from test_onnx_import import qdq_model
    model = with_nodes(qdq_model(layer, []), after=[(op, [], {})])
    net = driver.load_onnx(model)
    assert net.float_input and net.float_output
    x = rng.normal(size=(50, 7)).astype(np.float32)
    np.testing.assert_array_equal(net.dequantize(run_golden(net, net.quantize(x))),
                                  ort_run(model, x))


def test_constant_transpose_folded():
    """Weights stored [out, in] behind a Transpose node are folded at load time."""
    rng = np.random.default_rng(12)
    layer = random_layer(rng, 6, 5, weight_range=ONNXRUNTIME_EXACT_INT8)
    model = qoperator_model(layer, "QLinearMatMul")
    for init in model.graph.initializer:
        if init.name == "w":
            init.CopyFrom(numpy_helper.from_array(layer.weight, "w_t"))
    model.graph.node.insert(0, helper.make_node("Transpose", ["w_t"], ["w"], perm=[1, 0]))
    net = driver.load_onnx(model)
    x = random_input(rng, 20, layer)
    np.testing.assert_array_equal(run_golden(net, x), ort_run(model, x))


@pytest.mark.parametrize("nodes, message", [
    ([("Transpose", [], {"perm": [1, 0]})], r"'post0' \(Transpose\).*reorders"),
    ([("Reshape", ["shape_c"], {})], r"'post0' \(Reshape\).*keep the batch"),
    ([("Flatten", [], {"axis": 0})], r"'post0' \(Flatten\).*axis=1"),
    ([("Squeeze", ["axes"], {})], r"'post0' \(Squeeze\).*not 1"),
    ([("Sigmoid", [], {})], r"'post0' \(Sigmoid\) is not supported"),
])
def test_value_changing_node_wrong(nodes, message):
    layer = random_layer(np.random.default_rng(13), 6, 5)
    model = with_nodes(qoperator_model(layer, "QLinearMatMul"), after=nodes,
                       inits=[ints("shape_c", [1, -1]), ints("axes", [1])])
    with pytest.raises(OnnxImportError, match=message):
        driver.load_onnx(model)


# -- MatMulInteger, convolution -------------------------------------------------------------

def integer_matmul_model(a_dtype, weight, a_zero, b_zero):
    n = weight.shape[1]
    inits = [numpy_helper.from_array(weight, "b"),
             numpy_helper.from_array(np.array(a_zero, dtype=a_dtype), "za"),
             numpy_helper.from_array(np.asarray(b_zero, dtype=weight.dtype), "zb")]
    node = helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])
    graph = helper.make_graph([node], "mmi", [helper.make_tensor_value_info(
        "a", ELEM[np.dtype(a_dtype)], ["batch", weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["batch", n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("a_dtype", [np.uint8, np.int8])
def test_onnxruntime_exact_at_the_weight_bound(a_dtype):
    """The weight range the tests give onnxruntime keeps its kernels exact at the extremes:
    the largest activations times weights at either end of ``ONNXRUNTIME_EXACT_INT8``, which
    pair up to 255 * 64 * 2 after onnxruntime's shift of int8 activations to uint8; the
    chip agrees on those and on the full int8 range."""
    info = np.iinfo(a_dtype)
    low, high = ONNXRUNTIME_EXACT_INT8
    weight = np.array([[low, high, low, high], [low, high, high, low]] * 8, dtype=np.int8)
    x = np.array([[info.max] * 16, [info.min] * 16, [info.max, info.min] * 8], dtype=a_dtype)
    model = integer_matmul_model(a_dtype, weight, 0, 0)
    exact = x.astype(np.int64) @ weight.astype(np.int64)
    np.testing.assert_array_equal(ort_run(model, x), exact)
    np.testing.assert_array_equal(run_golden(driver.load_onnx(model), x), exact)
    full = np.array([[-128, 127]] * 16, dtype=np.int8)
    np.testing.assert_array_equal(
        run_golden(driver.load_onnx(integer_matmul_model(a_dtype, full, 0, 0)), x),
        x.astype(np.int64) @ full.astype(np.int64))


@pytest.mark.parametrize("a_dtype, b_dtype", [(np.uint8, np.uint8), (np.uint8, np.int8),
                                              (np.int8, np.int8)])
@pytest.mark.parametrize("per_column", [False, True])
def test_matmul_integer_matches_onnxruntime(a_dtype, b_dtype, per_column):
    rng = np.random.default_rng(per_column + 2 * np.dtype(a_dtype).itemsize)
    k, n = 37, 11
    info_a, info_b = np.iinfo(a_dtype), np.iinfo(b_dtype)
    low, high = onnxruntime_weight_range(b_dtype)
    weight = rng.integers(low, high + 1, size=(k, n)).astype(b_dtype)
    b_zero = rng.integers(info_b.min, info_b.max + 1, size=n if per_column else ())
    a_zero = int(rng.integers(info_a.min, info_a.max + 1))
    model = integer_matmul_model(a_dtype, weight, a_zero, b_zero)
    net = driver.load_onnx(model)
    x = rng.integers(info_a.min, info_a.max + 1, size=(29, k)).astype(a_dtype)
    y = run_golden(net, x, CONFIGS["4x4"])
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, ort_run(model, x))
    np.testing.assert_array_equal(y, net.reference(x))


def qlinear_conv_model(rng, *, in_shape, out_channels, kernel, act, weight, per_channel,
                       **attributes):
    c = in_shape[0]
    groups = attributes.get("group", 1)
    it, wt = np.iinfo(act), np.iinfo(weight)
    low, high = onnxruntime_weight_range(weight)
    w = rng.integers(low, high + 1, size=(out_channels, c // groups, *kernel)).astype(weight)
    count = out_channels if per_channel else 1
    w_scale = rng.uniform(0.002, 0.02, size=count).astype(np.float32)
    w_zero = (np.zeros(count) if wt.min < 0 else rng.integers(0, 256, size=count)).astype(weight)
    x_scale = np.float32(rng.uniform(0.01, 0.05))
    typical = np.sqrt(c * kernel[0] * kernel[1]) * 80 * 60 * x_scale * 0.01
    inits = [numpy_helper.from_array(np.array(x_scale), "sx"),
             numpy_helper.from_array(np.array(rng.integers(it.min, it.max + 1), dtype=act), "zx"),
             numpy_helper.from_array(w, "w"), numpy_helper.from_array(w_scale, "sw"),
             numpy_helper.from_array(w_zero, "zw"),
             numpy_helper.from_array(np.array(typical / 40, dtype=np.float32), "sy"),
             numpy_helper.from_array(np.array(rng.integers(it.min // 2, it.max // 2), dtype=act),
                                     "zy"),
             numpy_helper.from_array(rng.integers(-3000, 3000, size=out_channels).astype(
                 np.int32), "b")]
    node = helper.make_node("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"],
                            ["y"], name="conv", **attributes)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info(
        "x", ELEM[np.dtype(act)], ["batch", *in_shape])],
        [helper.make_tensor_value_info("y", ELEM[np.dtype(act)], None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


CONVS = {
    "3x3": dict(in_shape=(3, 8, 8), out_channels=5, kernel=(3, 3)),
    "pads_stride": dict(in_shape=(2, 9, 7), out_channels=4, kernel=(3, 2), pads=[1, 0, 2, 1],
                        strides=[2, 1]),
    "dilation": dict(in_shape=(2, 9, 9), out_channels=3, kernel=(3, 3), dilations=[2, 2]),
    "groups": dict(in_shape=(4, 6, 6), out_channels=6, kernel=(3, 3), group=2,
                   pads=[1, 1, 1, 1]),
    "depthwise": dict(in_shape=(3, 5, 5), out_channels=3, kernel=(3, 3), group=3),
    "same_upper": dict(in_shape=(2, 7, 6), out_channels=3, kernel=(3, 3), strides=[2, 2],
                       auto_pad="SAME_UPPER"),
    "1x1": dict(in_shape=(16, 3, 3), out_channels=20, kernel=(1, 1)),
}


@pytest.mark.parametrize("types", [(np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8)],
                         ids=["u8u8", "u8s8", "s8s8"])
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("conv", CONVS)
def test_qlinear_conv_matches_onnxruntime(conv, per_channel, types):
    rng = np.random.default_rng(len(conv) * 7 + per_channel)
    model = qlinear_conv_model(rng, act=types[0], weight=types[1], per_channel=per_channel,
                               **CONVS[conv])
    net = driver.load_onnx(model)
    (layer,) = net.layers
    x = rng.integers(np.iinfo(types[0]).min, np.iinfo(types[0]).max + 1,
                     size=(3, *CONVS[conv]["in_shape"])).astype(types[0])
    framework = ort_run(model, x)
    chip = run_golden(net, x, CONFIGS["4x4"])
    assert layer.output_shape == framework.shape[1:]
    flat = x.reshape(3, -1)
    compare_with_framework(chip, framework.reshape(3, -1), net.reference(flat),
                           net.reference(flat, arithmetic="float32"))


def test_conv_wrong():
    rng = np.random.default_rng(3)
    model = qlinear_conv_model(rng, act=np.uint8, weight=np.uint8, per_channel=False,
                               in_shape=(2, 5, 5), out_channels=2, kernel=(3, 3),
                               auto_pad="SAME_LOWER")
    assert driver.load_onnx(model).layers[0].geometry.padding == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="does not fit"):
        driver.QuantConv2d(weight=np.zeros((2, 2, 7, 7), np.int8), input_shape=(2, 5, 5),
                           weight_scale=0.1, input_scale=0.1, input_zero_point=0,
                           output_scale=0.1, output_zero_point=0)
    with pytest.raises(ValueError, match="do not split into 3 groups"):
        driver.QuantConv2d(weight=np.zeros((3, 1, 3, 3), np.int8), input_shape=(2, 5, 5),
                           groups=3, weight_scale=0.1, input_scale=0.1, input_zero_point=0,
                           output_scale=0.1, output_zero_point=0)


# -- a float CNN quantized by onnxruntime ----------------------------------------------------

class Images(CalibrationDataReader):
    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.batches = iter([{"x": rng.uniform(0, 1, size=(16, 1, 8, 8)).astype(np.float32)}
                             for _ in range(4)])

    def get_next(self):
        return next(self.batches, None)


@pytest.fixture(scope="module")
def float_cnn(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(8 * 2 * 2, 10)).eval()
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 1, 8, 8),), str(path), input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                          dynamo=False)
    return path


@pytest.mark.parametrize("fmt", [QuantFormat.QOperator, QuantFormat.QDQ], ids=["qop", "qdq"])
@pytest.mark.parametrize("types", [(QuantType.QUInt8, QuantType.QUInt8),
                                   (QuantType.QUInt8, QuantType.QInt8),
                                   (QuantType.QInt8, QuantType.QInt8)],
                         ids=["u8u8", "u8s8", "s8s8"])
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_quantized_cnn(float_cnn, tmp_path, fmt, types, per_channel):
    out = tmp_path / "cnn_q.onnx"
    quantize_static(str(float_cnn), str(out), Images(), quant_format=fmt,
                    activation_type=types[0], weight_type=types[1], per_channel=per_channel,
                    reduce_range=True)
    net = driver.load_onnx(out)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["QuantConv2d", "MaxPool2d", "QuantConv2d", "QuantLinear"], kinds
    x = np.random.default_rng(5).uniform(0, 1, size=(300, 1, 8, 8)).astype(np.float32)
    x_q = net.quantize(x).reshape(300, -1)
    chip = run_golden(net, x_q, CONFIGS["4x4"])
    model = onnx.load(str(out))
    fused = net.output.quantize(ort_run(model, x))
    compare_with_framework(chip, fused, net.reference(x_q),
                           net.reference(x_q, arithmetic="float32"))
    if fmt == QuantFormat.QDQ:
        float_path = net.output.quantize(ort_run(model, x, optimize=False)).astype(np.int64)
        steps = np.abs(chip.astype(np.int64) - float_path)
        assert steps.max() <= 1 and np.count_nonzero(steps) / steps.size < 0.01

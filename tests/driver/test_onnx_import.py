"""ONNX: QGemm, QLinearMatMul, QLinearAdd and QDQ models against onnxruntime."""

import warnings

import numpy as np
import pytest
from npu_builders import (
    CONFIGS,
    ONNXRUNTIME_EXACT_INT8,
    compare_with_framework,
    onnxruntime_weight_range,
    ort_run,
    qoperator_model,
    random_input,
    random_layer,
)

import driver
from driver.onnx_import import OnnxImportError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static  # noqa: E402

TYPES = {"u8u8": ("uint8", "uint8"), "s8s8": ("int8", "int8")}
SHAPES = [(1, 1, 1), (2, 1000, 1), (1, 1, 1000), (11, 29, 13), (40, 64, 24)]


def run_golden(net_or_layers, x, config=None):
    with driver.open("golden", config=config) as npu:
        return npu.run(net_or_layers, x)


@pytest.mark.parametrize("op", ["QGemm", "QLinearMatMul"])
@pytest.mark.parametrize("types", TYPES.values(), ids=TYPES.keys())
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{k}x{n}" for m, k, n in SHAPES])
def test_qoperator_layer_matches_onnxruntime(op, types, per_channel, shape):
    batch, k, n = shape
    act, weight = types
    rng = np.random.default_rng(k * 31 + n + len(op) + per_channel)
    layer = random_layer(rng, k, n, input_dtype=act, weight_dtype=weight, per_channel=per_channel,
                         weight_range=onnxruntime_weight_range(weight))
    model = qoperator_model(layer, op, trans_b=bool(k % 2))
    net = driver.load_onnx(model)
    x = random_input(rng, batch, layer)
    chip = run_golden(net, x, CONFIGS["4x4"])
    compare_with_framework(chip, ort_run(model, x), net.reference(x),
                           net.reference(x, arithmetic="float32"))


# -- models quantized by onnxruntime from a float model exported by PyTorch ------------------

class Reader(CalibrationDataReader):
    def __init__(self, features, seed=0):
        rng = np.random.default_rng(seed)
        self.batches = iter([{"x": rng.normal(size=(16, features)).astype(np.float32)}
                             for _ in range(6)])

    def get_next(self):
        return next(self.batches, None)


@pytest.fixture(scope="module")
def float_mlp(tmp_path_factory):
    """A float 3-layer MLP exported by PyTorch as Gemm nodes, and its input size."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(23, 17), torch.nn.ReLU(), torch.nn.Linear(17, 11),
                                torch.nn.ReLU6(), torch.nn.Linear(11, 7)).eval()
    path = tmp_path_factory.mktemp("onnx") / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 23),), str(path), input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                          dynamo=False)
    return path, 23


def quantized(path, tmp_path, fmt, act, weight, per_channel):
    out = tmp_path / f"{fmt.name}_{act.name}_{weight.name}.onnx"
    quantize_static(str(path), str(out), Reader(23), quant_format=fmt, activation_type=act,
                    weight_type=weight, per_channel=per_channel, reduce_range=True)
    return out


ORT_TYPES = {"u8u8": (QuantType.QUInt8, QuantType.QUInt8),
             "s8s8": (QuantType.QInt8, QuantType.QInt8)}


@pytest.mark.parametrize("types", ORT_TYPES.values(), ids=ORT_TYPES.keys())
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_quantized_mlp_qoperator(float_mlp, tmp_path, types, per_channel):
    path = quantized(float_mlp[0], tmp_path, QuantFormat.QOperator, *types, per_channel)
    net = driver.load_onnx(path)
    assert len(net) == 3
    x = np.random.default_rng(1).normal(size=(500, 23)).astype(np.float32)
    x_q = net.quantize(x)
    chip = run_golden(net, x_q, CONFIGS["2x3"])
    framework = ort_run(onnx.load(str(path)), x)
    float32 = net.reference(x_q, arithmetic="float32")
    np.testing.assert_array_equal(net.dequantize(float32), framework)
    compare_with_framework(chip, net.output.quantize(framework), net.reference(x_q), float32)


@pytest.mark.parametrize("types", ORT_TYPES.values(), ids=ORT_TYPES.keys())
def test_quantized_mlp_qdq(float_mlp, tmp_path, types):
    """QDQ: identical to onnxruntime's fused integer path; bounded one-step differences
    from its unfused float path."""
    path = quantized(float_mlp[0], tmp_path, QuantFormat.QDQ, *types, True)
    net = driver.load_onnx(path)
    model = onnx.load(str(path))
    x = np.random.default_rng(2).normal(size=(3000, 23)).astype(np.float32)
    x_q = net.quantize(x)
    chip = run_golden(net, x_q)
    fused = ort_run(model, x)
    compare_with_framework(chip, net.output.quantize(fused), net.reference(x_q),
                           net.reference(x_q, arithmetic="float32"))
    float_path = net.output.quantize(ort_run(model, x, optimize=False)).astype(np.int64)
    steps = np.abs(chip.astype(np.int64) - float_path)
    rate = np.count_nonzero(steps) / steps.size
    print(f"\nQDQ {types[0].name}: {np.count_nonzero(steps)} of {steps.size} outputs differ from "
          f"the float path ({rate:.2e}), at most {steps.max()} step(s)")
    assert steps.max() <= 1 and rate < 0.01


# -- hand-built graphs --------------------------------------------------------------------

def scalar(name, value, dtype):
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def qdq_model(layer, activation_nodes, *, matmul=False, bias_add=None):
    """DQ -> Gemm/MatMul (-> Add) (-> activation nodes) -> Q -> DQ around a float input."""
    k, n = layer.in_features, layer.out_features
    inits = [scalar("sx", layer.input.scale, np.float32),
             scalar("zx", layer.input.zero_point, np.uint8),
             numpy_helper.from_array(np.ascontiguousarray(layer.weight.T), "w"),
             numpy_helper.from_array(layer.weight_scale, "sw"),
             numpy_helper.from_array(layer.weight_zero_point.astype(np.int8), "zw"),
             numpy_helper.from_array(layer.bias.astype(np.int32), "b"),
             numpy_helper.from_array(np.float32(layer.input.scale) * layer.weight_scale, "sb"),
             numpy_helper.from_array(np.zeros(n, dtype=np.int32), "zb"),
             scalar("sy", layer.output.scale, np.float32),
             scalar("zy", layer.output.zero_point, np.uint8),
             scalar("lo", 0.0, np.float32), scalar("hi", 1.5, np.float32)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wf"], axis=1),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bf"], axis=0)]
    if matmul:
        nodes += [helper.make_node("MatMul", ["xf", "wf"], ["mm"]),
                  helper.make_node("Add", ["mm", "bf"], ["h"])]
    else:
        nodes.append(helper.make_node("Gemm", ["xf", "wf", "bf"], ["h"]))
    last = "h"
    for index, op in enumerate(activation_nodes):
        inputs = [last] + (["lo", "hi"] if op == "Clip" else [])
        nodes.append(helper.make_node(op, inputs, [f"a{index}"]))
        last = f"a{index}"
    nodes += [helper.make_node("QuantizeLinear", [last, "sy", "zy"], ["yq"]),
              helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    graph = helper.make_graph(nodes, "qdq",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", n])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("activation, matmul", [([], False), (["Relu"], False), (["Clip"], True),
                                                (["Relu"], True)])
def test_qdq_fused_activation(activation, matmul):
    rng = np.random.default_rng(len(activation) + 2 * matmul)
    layer = random_layer(rng, 19, 14, weight_range=ONNXRUNTIME_EXACT_INT8)
    model = qdq_model(layer, activation, matmul=matmul)
    net = driver.load_onnx(model)
    (fused,) = net.layers
    if activation == ["Relu"]:
        assert fused.low == fused.output.zero_point
    if activation == ["Clip"]:
        assert fused.high == fused.output.zero_point + round(1.5 / fused.output.scale)
    x = rng.normal(size=(400, 19)).astype(np.float32) * 3
    x_q = net.quantize(x)
    chip = run_golden(net, x_q)
    framework = net.output.quantize(ort_run(model, x))
    compare_with_framework(chip, framework, net.reference(x_q),
                           net.reference(x_q, arithmetic="float32"))
    float_path = net.output.quantize(ort_run(model, x, optimize=False)).astype(np.int64)
    assert np.abs(chip.astype(np.int64) - float_path).max() <= 1


def test_matmul_add_becomes_a_host_table(tmp_path):
    """MatMul + Add quantized by onnxruntime: QLinearMatMul then QLinearAdd of an 8-bit bias."""
    rng = np.random.default_rng(3)
    w1, b1 = rng.normal(size=(16, 12)).astype(np.float32), rng.normal(size=12).astype(np.float32)
    w2 = rng.normal(size=(12, 5)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["hr"]),
             helper.make_node("MatMul", ["hr", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 5])],
                              [numpy_helper.from_array(a, name) for a, name in
                               ((w1, "w1"), (b1, "b1"), (w2, "w2"))])
    path = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    for fmt in (QuantFormat.QOperator, QuantFormat.QDQ):
        out = tmp_path / f"mm_{fmt.name}.onnx"
        quantize_static(str(path), str(out), Reader(16), quant_format=fmt,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                        reduce_range=True)
        net = driver.load_onnx(out)
        assert [type(layer).__name__ for layer in net.layers] == ["QuantLinear", "ColumnTable",
                                                                  "QuantLinear"]
        x = rng.normal(size=(700, 16)).astype(np.float32)
        x_q = net.quantize(x)
        chip = run_golden(net, x_q, CONFIGS["4x4"])
        framework = net.output.quantize(ort_run(onnx.load(str(out)), x))
        compare_with_framework(chip, framework, net.reference(x_q),
                               net.reference(x_q, arithmetic="float32"))


def test_quantized_input_and_output_model():
    layer = random_layer(np.random.default_rng(4), 6, 5)
    net = driver.load_onnx(qoperator_model(layer).SerializeToString())
    assert net.input == layer.input and net.output == layer.output


def qgemm_with(seed, *, inputs=None, **attributes):
    """A one-QGemm model whose node is rebuilt with other inputs or attributes."""
    model = qoperator_model(random_layer(np.random.default_rng(seed), 4, 3))
    node = model.graph.node[0]
    rebuilt = helper.make_node("QGemm", list(node.input) if inputs is None else inputs, ["y"],
                               domain="com.microsoft", **attributes)
    del model.graph.node[0]
    model.graph.node.insert(0, rebuilt)
    return model


def test_unsupported_node_wrong():
    layer = random_layer(np.random.default_rng(5), 6, 5)
    model = qdq_model(layer, ["Sigmoid"])
    with pytest.raises(OnnxImportError, match=r"node 'a0' \(Sigmoid\).* not supported"):
        driver.load_onnx(model)


def test_qgemm_float_output_wrong():
    inputs = list(qoperator_model(random_layer(np.random.default_rng(6), 4, 3)).graph.node[0].input)
    model = qgemm_with(6, inputs=inputs[:7], name="gemm1", transB=1)
    with pytest.raises(OnnxImportError, match=r"node 'gemm1' \(QGemm\): .*float output"):
        driver.load_onnx(model)


def test_trans_a_wrong():
    model = qgemm_with(7, name="gemm2", transA=1, transB=1)
    with pytest.raises(OnnxImportError, match=r"node 'gemm2' \(QGemm\): transA=1"):
        driver.load_onnx(model)


def test_extra_graph_input_wrong():
    model = qgemm_with(8, transB=1)
    model.graph.input.append(helper.make_tensor_value_info("w2", TensorProto.INT8, [3, 4]))
    with pytest.raises(OnnxImportError, match="one input and one output, not 2 and 1"):
        driver.load_onnx(model)


def test_branching_graph_wrong():
    layer = random_layer(np.random.default_rng(9), 4, 3)
    model = qdq_model(layer, [])
    model.graph.node.append(helper.make_node("Relu", ["xf"], ["unused"], name="side"))
    with pytest.raises(OnnxImportError, match="tensor 'xf' .* feeds 2 nodes"):
        driver.load_onnx(model)


def test_float_bias_scale_wrong():
    layer = random_layer(np.random.default_rng(10), 4, 3)
    model = qdq_model(layer, [])
    for init in model.graph.initializer:
        if init.name == "sb":
            init.CopyFrom(numpy_helper.from_array(np.full(3, 0.5, dtype=np.float32), "sb"))
    with pytest.raises(OnnxImportError, match="bias must be quantized with scale"):
        driver.load_onnx(model)

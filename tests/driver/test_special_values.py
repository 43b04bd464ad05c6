"""NaN, infinities and huge values quantize exactly as each framework quantizes them.

onnxruntime's QuantizeLinear and PyTorch disagree on NaN (onnxruntime: the type's
minimum; ``torch.quantize_per_tensor``: its maximum; PT2E's decomposed op: whatever its
float-to-integer cast gives), so each network quantizes as the framework it came from:
:meth:`driver.QuantParams.quantize` (ONNX models) as onnxruntime, a PyTorch network with
PyTorch itself.  Infinities and values beyond the type saturate in all of them.
"""

import warnings

import numpy as np
import pytest

import driver

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SPECIAL = np.array([np.nan, -np.nan, np.inf, -np.inf, 1e30, -1e30, 3e9, -3e9, 2.1e9, 1e-30,
                    -0.0, 0.0, 12.7, -12.8, 12.75, -12.85, 25.5, 0.05, 0.15], dtype=np.float32)
#: (dtype, zero point): both types, zero points at the middle and both ends.
TYPES = [("uint8", 128), ("uint8", 0), ("uint8", 255), ("int8", 0), ("int8", -128),
         ("int8", 127), ("int8", -5)]


def special_inputs():
    """The special values alone, mixed into random values, and in lengths around the
    vector widths of the kernels (a scalar tail and a vectorized body)."""
    rng = np.random.default_rng(0)
    yield SPECIAL
    for length in (1, 7, 8, 16, 33, 257):
        x = rng.normal(0, 20, size=length).astype(np.float32)
        x[rng.integers(0, length, size=max(1, length // 3))] = rng.choice(SPECIAL, max(
            1, length // 3))
        yield x


def ort_quantize(x, scale, zero, dtype):
    from onnx import TensorProto, helper, numpy_helper
    elem = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}[dtype]
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])], "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
        [helper.make_tensor_value_info("y", elem, [len(x)])],
        [numpy_helper.from_array(np.array(scale, np.float32), "s"),
         numpy_helper.from_array(np.array(zero, dtype), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("dtype, zero", TYPES)
@pytest.mark.parametrize("scale", [0.1, 0.0157, 3.0])
def test_quantize_matches_onnxruntime(dtype, zero, scale):
    params = driver.QuantParams(scale=scale, zero_point=zero, dtype=dtype)
    for x in special_inputs():
        np.testing.assert_array_equal(params.quantize(x), ort_quantize(x, scale, zero, dtype),
                                      err_msg=str(x))


def test_nan_quantizes_to_the_minimum():
    """The issue's case: uint8 zero point 128 gave 128 for NaN, onnxruntime gives 0."""
    assert driver.QuantParams(scale=0.1, zero_point=128).quantize([np.nan]).tolist() == [0]
    int8 = driver.QuantParams(scale=0.1, zero_point=0, dtype="int8")
    assert int8.quantize([np.nan]).tolist() == [-128]


@pytest.mark.parametrize("dtype, zero", TYPES)
def test_dequantize_matches_onnxruntime(dtype, zero):
    from onnx import TensorProto, helper, numpy_helper
    t = driver.QuantType.of(dtype)
    q = np.arange(t.min, t.max + 1).astype(t.dtype)
    elem = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}[dtype]
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "dq",
        [helper.make_tensor_value_info("q", elem, [len(q)])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(q)])],
        [numpy_helper.from_array(np.array(0.0157, np.float32), "s"),
         numpy_helper.from_array(np.array(zero, dtype), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    params = driver.QuantParams(scale=0.0157, zero_point=zero, dtype=dtype)
    np.testing.assert_array_equal(params.dequantize(q), session.run(None, {"q": q})[0])


def torch_network():
    """A converted eager PyTorch model: QuantStub -> Linear -> DeQuantStub."""
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.fc = torch.nn.Linear(4, 3)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.fc(self.quant(x)))

    model = Net().eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig("qnnpack")
    prepared = torch.ao.quantization.prepare(model)
    prepared(torch.randn(16, 4) * 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return driver.from_torch(torch.ao.quantization.convert(prepared))


def test_torch_network_quantizes_as_torch():
    torch = pytest.importorskip("torch")
    network = torch_network()
    for x in special_inputs():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = torch.quantize_per_tensor(torch.from_numpy(x), network.input.scale,
                                                 network.input.zero_point,
                                                 torch.quint8).int_repr().numpy()
        np.testing.assert_array_equal(network.quantize(x), expected)
    # PyTorch's NaN is the maximum, onnxruntime's the minimum: each network keeps its own.
    assert network.quantize(np.array([np.nan], np.float32)).tolist() == [255]
    assert network.input.quantize([np.nan]).tolist() == [0]


@pytest.mark.filterwarnings("ignore")
def test_pt2e_network_quantizes_as_its_graph():
    torch = pytest.importorskip("torch")
    pt2e = pytest.importorskip("torchao.quantization.pt2e.quantize_pt2e")
    xnnpack = pytest.importorskip("torchao.testing.pt2e._xnnpack_quantizer")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    example = torch.randn(8, 4) * 10
    quantizer = xnnpack.XNNPACKQuantizer().set_global(
        xnnpack.get_symmetric_quantization_config(is_per_channel=False))
    exported = torch.export.export(model, (example,)).module()
    prepared = pt2e.prepare_pt2e(exported, quantizer)
    prepared(example)
    network = driver.from_torch(pt2e.convert_pt2e(prepared))
    params = network.input
    dtype = torch.int8 if params.qtype.signed else torch.uint8
    for x in special_inputs():
        expected = torch.ops.quantized_decomposed.quantize_per_tensor(
            torch.from_numpy(x), params.scale, params.zero_point, params.qtype.min,
            params.qtype.max, dtype).numpy()
        np.testing.assert_array_equal(network.quantize(x), expected)

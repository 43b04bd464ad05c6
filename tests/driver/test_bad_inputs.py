"""Bad input at every public entry point of the driver, tried as a new user would.

Each probe is one wrong call: it must raise the driver's own error (or ``TypeError`` /
``ValueError`` / ``OSError`` for a file) whose message names the argument, what was
expected and what was given; a command line must print one line and exit non-zero,
never a traceback; a value a framework defines (NaN) must come out as the framework's.
The list is the record of what was tried: ``pytest tests/driver/test_bad_inputs.py``
counts how many of them a change gets wrong.
"""

import functools
import os
import re
import warnings

import numpy as np
import pytest
from npu_builders import qoperator_model, random_layer, torch_linear

import driver
from driver.cli import main
from driver.onnx_import import OnnxImportError
from hw.config import NpuConfig

pytestmark = pytest.mark.filterwarnings("ignore")
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

#: Every error a probe may end in: the driver's own, or Python's for types, values and files.
CLEAR = (TypeError, ValueError, OSError, driver.NpuError, driver.BackendUnavailable)


class Context:
    """What the probes call the entry points with, built once per session."""

    def __init__(self, root):
        self.root = root
        rng = np.random.default_rng(0)
        self.layer = random_layer(rng, 10, 7, name="fc")
        self.x = rng.integers(0, 256, size=(3, 10)).astype(np.uint8)
        self.layer_args = dict(
            weight=self.layer.weight, weight_scale=0.01, weight_zero_point=0,
            input_scale=0.1, input_zero_point=128, output_scale=0.2, output_zero_point=128,
            name="fc")
        self.conv_args = dict(
            weight=np.ones((2, 1, 3, 3), dtype=np.int8), input_shape=(1, 6, 6),
            weight_scale=0.01, input_scale=0.1, input_zero_point=128, output_scale=0.2,
            output_zero_point=128, name="conv")
        self.model = float_onnx_model(self.layer)
        self.paths = {}
        data = self.model.SerializeToString()
        self._write("model.onnx", data)
        self._write("truncated.onnx", data[:len(data) // 2])
        self._write("random.onnx", np.random.default_rng(1).bytes(500))
        self._write("empty.onnx", b"")
        self._write("notes.txt", b"QGemm is a quantized Gemm\n")
        self._write("float.onnx", float_gemm_model().SerializeToString())
        np.save(os.path.join(root, "x.npy"), rng.normal(size=(3, 10)).astype(np.float32))
        self.paths["x.npy"] = os.path.join(root, "x.npy")
        np.save(os.path.join(root, "model.npy"), np.zeros(4, dtype=np.float32))
        self.paths["model.npy"] = os.path.join(root, "model.npy")
        with open(self.paths["x.npy"], "rb") as f:
            self._write("truncated.npy", f.read()[:100])
        np.savez(os.path.join(root, "x.npz"), x=np.zeros((3, 10), dtype=np.float32))
        self.paths["x.npz"] = os.path.join(root, "x.npz")
        np.save(os.path.join(root, "objects.npy"), np.array([{"a": 1}], dtype=object),
                allow_pickle=True)
        self.paths["objects.npy"] = os.path.join(root, "objects.npy")
        np.save(os.path.join(root, "int64.npy"), np.zeros((3, 10), dtype=np.int64))
        self.paths["int64.npy"] = os.path.join(root, "int64.npy")
        np.save(os.path.join(root, "empty.npy"), np.zeros((0, 10), dtype=np.float32))
        self.paths["empty.npy"] = os.path.join(root, "empty.npy")
        os.mkdir(os.path.join(root, "folder"))
        self.paths["folder"] = os.path.join(root, "folder")
        self.paths["missing"] = os.path.join(root, "missing.onnx")
        self.paths["y.npy"] = os.path.join(root, "y.npy")

    def _write(self, name, data):
        self.paths[name] = os.path.join(self.root, name)
        with open(self.paths[name], "wb") as f:
            f.write(data)

    def path(self, name):
        return self.paths[name]

    @functools.cached_property
    def module(self):
        return torch_linear(np.random.default_rng(2), 4, 3)


def float_onnx_model(layer):
    """QuantizeLinear -> QGemm -> DequantizeLinear of ``layer``, float in and out."""
    from onnx import TensorProto, helper
    inner = qoperator_model(layer)
    gemm = inner.graph.node[0]
    gemm.input[0], gemm.output[0] = "xq", "yq"
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]), gemm,
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    return helper.make_model(
        helper.make_graph(nodes, "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 7])],
                          list(inner.graph.initializer)),
        opset_imports=list(inner.opset_import))


def float_gemm_model():
    """A float Gemm: a model nobody quantized."""
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "w")
    return helper.make_model(
        helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"])], "float",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])],
                          [w]),
        opset_imports=[helper.make_opsetid("", 17)])


def onnx_with(nodes_after_gemm):
    """The float model with extra nodes between the QGemm and the DequantizeLinear."""
    layer = random_layer(np.random.default_rng(0), 10, 7, name="fc")
    model = float_onnx_model(layer)
    graph = model.graph
    nodes = list(graph.node)
    nodes[1].output[0] = "g"
    tail = [n for n in nodes_after_gemm]
    del graph.node[:]
    graph.node.extend(nodes[:2] + tail + nodes[2:])
    return model


def eager_model(*modules, quantized=True, stub=True, example=(8, 4)):
    """``QuantStub -> modules -> DeQuantStub``, converted with qnnpack if ``quantized``."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.body = torch.nn.Sequential(*modules)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.body(self.quant(x) if stub else x))

    model = Net().eval()
    if not quantized:
        return model
    model.qconfig = torch.ao.quantization.get_default_qconfig("qnnpack")
    prepared = torch.ao.quantization.prepare(model)
    prepared(torch.randn(*example))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.convert(prepared)


def prepared_model():
    """An eager model prepared (observers in) but never converted."""
    model = eager_model(torch.nn.Linear(4, 3), quantized=False)
    model.qconfig = torch.ao.quantization.get_default_qconfig("qnnpack")
    prepared = torch.ao.quantization.prepare(model)
    prepared(torch.randn(8, 4))
    return prepared


class Branchy(torch.nn.Module):
    """A model torch.fx cannot trace: control flow on a tensor's value."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else x


def exported_float_model():
    """A PT2E-exported model that was never quantized."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(torch.nn.Sequential(torch.nn.Linear(4, 3)).eval(),
                                   (torch.randn(2, 4),)).module()


def pt2e_model(model, example, *, convert=True):
    """``model`` through torchao's PT2E flow (XNNPACK quantizer), prepared and calibrated,
    then converted unless ``convert`` is false."""
    pt2e = pytest.importorskip("torchao.quantization.pt2e.quantize_pt2e")
    xnnpack = pytest.importorskip("torchao.testing.pt2e._xnnpack_quantizer")
    quantizer = xnnpack.XNNPACKQuantizer().set_global(
        xnnpack.get_symmetric_quantization_config(is_per_channel=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = pt2e.prepare_pt2e(torch.export.export(model.eval(), (example,)).module(),
                                     quantizer)
        prepared(example)
        return pt2e.convert_pt2e(prepared) if convert else prepared


class Sigmoid(torch.nn.Module):
    """Two Linear layers with a sigmoid between them (not a chip operation)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(4, 4), torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc2(torch.sigmoid(self.fc1(x)))


def constant_scale_model(layer):
    """The float model with its input scale a ``Constant`` node's ``value_float``, as
    exporters write scalars."""
    model = float_onnx_model(layer)
    graph = model.graph
    scale = next(t for t in graph.initializer if t.name == "sx")
    value = float(onnx.numpy_helper.to_array(scale))
    graph.initializer.remove(scale)
    graph.node.insert(0, onnx.helper.make_node("Constant", [], ["sx"], value_float=value))
    return model


def golden(ctx, **options):
    return driver.open("golden", **options)


def run_on_golden(ctx, layers, x, **options):
    with driver.open("golden") as npu:
        return npu.run(layers, x, **options)


def with_layer(ctx, **changes):
    return driver.QuantLinear(**{**ctx.layer_args, **changes})


def with_conv(ctx, **changes):
    return driver.QuantConv2d(**{**ctx.conv_args, **changes})


def params(**changes):
    return driver.QuantParams(**{"scale": 0.1, "zero_point": 128, **changes})


def int8():
    return params(zero_point=0, dtype="int8")


def same(actual, expected):
    """A probe whose call must return ``expected`` (a silently wrong answer otherwise)."""
    return ("value", actual, expected)


Q = driver.QuantizationError
nan, inf = float("nan"), float("inf")

#: (id, call, error, message regex).  ``call`` takes the Context; a probe whose ``error``
#: is None returns ``same(actual, expected)``: an answer that must be the framework's.
PROBES = [
    # -- QuantParams: quantize / dequantize ------------------------------------------------
    ("params-scale-text", lambda c: params(scale="a"),
     TypeError, r"scale must be a number, not 'a'"),
    ("params-scale-zero", lambda c: params(scale=0),
     ValueError, r"scale must be positive and finite, not 0"),
    ("params-scale-nan", lambda c: params(scale=nan),
     ValueError, r"scale must be positive and finite, not nan"),
    ("params-scale-inf", lambda c: params(scale=inf),
     ValueError, r"scale must be positive and finite, not inf"),
    ("params-zero-float", lambda c: params(zero_point=1.5),
     TypeError, r"zero point must be an integer, not 1.5"),
    ("params-zero-range", lambda c: params(zero_point=300),
     ValueError, r"zero point must be in 0..255 for uint8, not 300"),
    ("params-zero-int8-range", lambda c: params(zero_point=-129, dtype="int8"),
     ValueError, r"zero point must be in -128..127 for int8, not -129"),
    ("params-dtype", lambda c: params(dtype="int16"),
     TypeError, r"dtype must be uint8 or int8, not 'int16'"),
    ("params-dtype-float", lambda c: params(dtype=np.float32),
     TypeError, r"dtype must be uint8 or int8, not <class 'numpy.float32'>"),
    ("quantize-text", lambda c: params().quantize("abc"),
     TypeError, r"x must be real numbers.*not .*str"),
    ("quantize-none", lambda c: params().quantize(None),
     TypeError, r"x must be real numbers.*not None"),
    ("quantize-complex", lambda c: params().quantize(np.array([1j])),
     TypeError, r"x must be real numbers.*not complex128"),
    ("quantize-ragged", lambda c: params().quantize([[1.0], [1.0, 2.0]]),
     ValueError, r"x must be .*not a ragged"),
    ("quantize-nan-uint8", lambda c: same(params().quantize([nan]).tolist(), [0]), None, None),
    ("quantize-nan-int8",
     lambda c: same(int8().quantize(np.array([nan, -nan])).tolist(), [-128, -128]),
     None, None),
    ("quantize-nan-among-values",
     lambda c: same(params().quantize([1.0, nan, -inf, inf, 1e30]).tolist(), [138, 0, 0, 255, 255]),
     None, None),
    ("dequantize-float", lambda c: params().dequantize([0.5]),
     TypeError, r"q must be integers.*not float64"),
    ("dequantize-text", lambda c: params().dequantize("x"),
     TypeError, r"q must be integers, not str 'x'"),
    ("dequantize-range", lambda c: params().dequantize(np.array([300])),
     ValueError, r"q must be in 0..255 for uint8, not 300"),
    ("dequantize-int8-range",
     lambda c: params(zero_point=0, dtype="int8").dequantize(np.array([200], np.uint8)),
     ValueError, r"q must be in -128..127 for int8, not 200"),
    # -- QuantLinear -----------------------------------------------------------------------
    ("linear-weight-list", lambda c: with_layer(c, weight=[[1, 2]]),
     TypeError, r"fc: weight must be a NumPy array, not list"),
    ("linear-weight-float", lambda c: with_layer(c, weight=np.ones((7, 10), np.float32)),
     TypeError, r"fc: weight dtype must be uint8 or int8, not dtype\('float32'\)"),
    ("linear-weight-1d", lambda c: with_layer(c, weight=np.ones(10, np.int8)),
     ValueError, r"fc: weight must have shape \[out_features, in_features\], not \(10,\)"),
    ("linear-weight-empty", lambda c: with_layer(c, weight=np.ones((0, 10), np.int8)),
     ValueError, r"fc: weight must have shape .*not \(0, 10\)"),
    ("linear-weight-scale-text", lambda c: with_layer(c, weight_scale="a"),
     TypeError, r"fc: weight_scale must be numbers .*not 'a'"),
    ("linear-weight-scale-negative", lambda c: with_layer(c, weight_scale=-1.0),
     ValueError, r"fc: weight_scale must be positive and finite, not -1.0"),
    ("linear-weight-scale-nan", lambda c: with_layer(c, weight_scale=[nan] * 7),
     ValueError, r"fc: weight_scale must be positive and finite, not nan \(output 0\)"),
    ("linear-weight-scale-count", lambda c: with_layer(c, weight_scale=[0.1] * 3),
     ValueError, r"fc: weight_scale must be a scalar or have 7 values .*not shape \(3,\)"),
    ("linear-weight-zero-float", lambda c: with_layer(c, weight_zero_point=0.5),
     TypeError, r"fc: weight zero points must be integers, not float64"),
    ("linear-weight-zero-range", lambda c: with_layer(c, weight_zero_point=200),
     ValueError, r"fc: weight zero points must be in -128..127 for int8 weights, not 200"),
    ("linear-bias-float", lambda c: with_layer(c, bias=np.ones(7, np.float32)),
     TypeError, r"fc: bias must be quantized to int32, not float32"),
    ("linear-bias-text", lambda c: with_layer(c, bias="a"),
     TypeError, r"fc: bias must be quantized to int32, not <U1"),
    ("linear-bias-shape", lambda c: with_layer(c, bias=np.ones(3, np.int32)),
     ValueError, r"fc: bias must have shape \(7,\), not \(3,\)"),
    ("linear-bias-range", lambda c: with_layer(c, bias=np.full(7, 1 << 40)),
     ValueError, r"fc: bias values must fit int32, not 1099511627776"),
    ("linear-input-scale-none", lambda c: with_layer(c, input_scale=None),
     TypeError, r"fc: input scale must be a number, not None"),
    ("linear-input-scale-negative", lambda c: with_layer(c, input_scale=-0.1),
     ValueError, r"fc: input scale must be positive and finite, not -0.1"),
    ("linear-input-zero-text", lambda c: with_layer(c, input_zero_point="3"),
     TypeError, r"fc: input zero point must be an integer, not '3'"),
    ("linear-input-dtype", lambda c: with_layer(c, input_dtype="float32"),
     TypeError, r"fc: input dtype must be uint8 or int8, not 'float32'"),
    ("linear-output-dtype", lambda c: with_layer(c, output_dtype="int32"),
     TypeError, r"fc: output dtype must be uint8 or int8, not 'int32'"),
    ("linear-activation", lambda c: with_layer(c, activation="gelu"),
     ValueError, r"fc: activation must be one of 'none', 'relu', 'relu6', not 'gelu'"),
    ("linear-clip-text", lambda c: with_layer(c, clip="abc"),
     TypeError, r"fc: clip must be a \(min, max\) pair of numbers or None, not 'abc'"),
    ("linear-clip-nan", lambda c: with_layer(c, clip=(nan, 1.0)),
     ValueError, r"fc: clip must not be NaN, not \(nan, 1.0\)"),
    ("linear-clip-empty", lambda c: with_layer(c, clip=(1.0, 0.0)),
     Q, r"fc: the clip range is empty after quantization"),
    ("linear-scale-order", lambda c: with_layer(c, scale_order="tf"),
     ValueError, r"fc: scale_order must be one of onnxruntime, torch, not 'tf'"),
    ("linear-alpha-text", lambda c: with_layer(c, alpha="x"),
     TypeError, r"fc: alpha must be a number, not 'x'"),
    ("linear-alpha-nan", lambda c: with_layer(c, alpha=nan),
     ValueError, r"fc: alpha must be finite, not nan"),
    ("linear-rounding", lambda c: with_layer(c, rounding="up"),
     ValueError, r"fc: rounding must be one of .*FLOAT32.*, not 'up'"),
    ("linear-positional", lambda c: driver.QuantLinear(c.layer.weight),
     TypeError, r"positional argument"),
    ("linear-unknown-argument", lambda c: with_layer(c, weights=c.layer.weight),
     TypeError, r"unexpected keyword argument 'weights'"),
    # -- QuantConv2d, IntegerMatMul, MaxPool2d, ColumnTable, Network -----------------------
    ("conv-weight-2d", lambda c: with_conv(c, weight=np.ones((2, 9), np.int8)),
     TypeError, r"conv: weight must be a 4-D NumPy array .*not \(2, 9\)"),
    ("conv-weight-list", lambda c: with_conv(c, weight=[[[[1]]]]),
     TypeError, r"conv: weight must be a 4-D NumPy array .*not list"),
    ("conv-input-shape-2", lambda c: with_conv(c, input_shape=(6, 6)),
     ValueError, r"conv: input_shape must be 3 ints of at least 1, not \(6, 6\)"),
    ("conv-input-shape-text", lambda c: with_conv(c, input_shape="abc"),
     TypeError, r"conv: input_shape must be an int or 3 ints, not 'abc'"),
    ("conv-input-shape-float", lambda c: with_conv(c, input_shape=(1, 6.5, 6)),
     TypeError, r"conv: input_shape must be an int or 3 ints, not \(1, 6.5, 6\)"),
    ("conv-channels", lambda c: with_conv(c, input_shape=(3, 6, 6)),
     ValueError, r"conv: weight must have shape \[2, 3, 3, 3\], not \[2, 1, 3, 3\]"),
    ("conv-stride-zero", lambda c: with_conv(c, stride=0),
     ValueError, r"conv: stride must be 2 ints of at least 1, not 0"),
    ("conv-padding-negative", lambda c: with_conv(c, padding=-1),
     ValueError, r"conv: padding must be 2 ints of at least 0, not -1"),
    ("conv-padding-text", lambda c: with_conv(c, padding="same"),
     TypeError, r"conv: padding must be an int, 2 ints or 4 ints, not 'same'"),
    ("conv-groups-zero", lambda c: with_conv(c, groups=0),
     ValueError, r"conv: groups must be a positive integer, not 0"),
    ("conv-groups-float", lambda c: with_conv(c, groups=1.5),
     TypeError, r"conv: groups must be a positive integer, not 1.5"),
    ("conv-kernel-too-big", lambda c: with_conv(c, input_shape=(1, 2, 2)),
     ValueError, r"conv: the 3x3 window does not fit the padded 2x2 input"),
    ("conv-dilation-one", lambda c: with_conv(c, dilation=(1,)),
     ValueError, r"conv: dilation must be 2 ints of at least 1, not \(1,\)"),
    ("conv-reference-features", lambda c: with_conv(c).reference(np.zeros((2, 35), np.uint8)),
     ValueError, r"conv: input has 35 features, the layer takes 36"),
    ("matmul-weight-float", lambda c: driver.IntegerMatMul(weight=np.ones((3, 4))),
     TypeError, r"matmul_integer: weight dtype must be uint8 or int8, not dtype\('float64'\)"),
    ("matmul-weight-scalar", lambda c: driver.IntegerMatMul(weight=np.array(3, np.int8)),
     ValueError, r"matmul_integer: weight must have shape \[out_features, in_features\], not \(\)"),
    ("matmul-geometry",
     lambda c: driver.IntegerMatMul(weight=np.ones((3, 4), np.int8), geometry="conv"),
     TypeError, r"geometry must be a ConvGeometry, not 'conv'"),
    ("matmul-reference-features",
     lambda c: driver.IntegerMatMul(weight=np.ones((3, 4), np.int8)).reference(
         np.zeros((2, 5), np.uint8)),
     ValueError, r"matmul_integer: input has 5 features, the layer takes 4"),
    ("maxpool-params", lambda c: driver.MaxPool2d(params=None, input_shape=(1, 4, 4), kernel=2),
     TypeError, r"maxpool: params must be QuantParams, not None"),
    ("maxpool-kernel-zero",
     lambda c: driver.MaxPool2d(params=params(), input_shape=(1, 4, 4), kernel=0),
     ValueError, r"maxpool: kernel must be 2 ints of at least 1, not 0"),
    ("maxpool-kernel-text",
     lambda c: driver.MaxPool2d(params=params(), input_shape=(1, 4, 4), kernel="2"),
     TypeError, r"maxpool: kernel must be an int or 2 ints, not '2'"),
    ("table-shape",
     lambda c: driver.ColumnTable(table=np.zeros((3, 10), np.uint8), input=params(),
                                  output=params()),
     ValueError, r"table: table must have shape \[features, 256\], not \(3, 10\)"),
    ("network-layers-none", lambda c: driver.Network(layers=None),
     TypeError, r"layers must be a layer or a list of layers, not None"),
    ("network-layers-text", lambda c: driver.Network(layers="fc"),
     TypeError, r"layers must be a layer or a list of layers, not 'fc'"),
    ("network-layers-empty", lambda c: driver.Network(layers=[]),
     ValueError, r"a chain needs at least one layer"),
    ("network-layers-item", lambda c: driver.Network(layers=[c.layer, "fc2"]),
     TypeError, r"a chain holds .* layers, not 'fc2'"),
    ("network-input-shape", lambda c: driver.Network(layers=[c.layer], input_shape=(3, 3)),
     ValueError, r"input shape \[3, 3\] does not hold the 10 features"),
    ("reference-list", lambda c: c.layer.reference([[1] * 10]),
     TypeError, r"fc: input must be a NumPy array, not list"),
    ("reference-float", lambda c: c.layer.reference(np.zeros((2, 10))),
     TypeError, r"fc: input must be uint8, not float64"),
    ("reference-features", lambda c: c.layer.reference(np.zeros((2, 9), np.uint8)),
     ValueError, r"fc: input has 9 features, the layer takes 10"),
    ("reference-3d", lambda c: c.layer.reference(np.zeros((2, 2, 5), np.uint8)),
     ValueError, r"fc: input must be \[batch, 10\], not \[2, 2, 5\]"),
    ("reference-arithmetic", lambda c: c.layer.reference(c.x, arithmetic="fast"),
     ValueError, r"arithmetic must be 'chip', 'exact' or 'float32', not 'fast'"),
    # -- Device.run and open ---------------------------------------------------------------
    ("run-layers-none", lambda c: run_on_golden(c, None, c.x),
     TypeError, r"layers must be a layer or a list of layers, not None"),
    ("run-layers-text", lambda c: run_on_golden(c, "fc", c.x),
     TypeError, r"layers must be a layer or a list of layers, not 'fc'"),
    ("run-x-list", lambda c: run_on_golden(c, c.layer, c.x.tolist()),
     TypeError, r"x must be a NumPy array, not list"),
    ("run-x-float", lambda c: run_on_golden(c, c.layer, c.x.astype(np.float32)),
     TypeError, r"fc takes uint8 input, not float32"),
    ("run-x-features", lambda c: run_on_golden(c, c.layer, c.x[:, :9]),
     ValueError, r"fc takes input \[batch, 10\], not \[3, 9\]"),
    ("run-x-empty", lambda c: run_on_golden(c, c.layer, c.x[:0]),
     ValueError, r"fc takes input \[batch, 10\], not \[0, 10\]"),
    ("run-x-scalar", lambda c: run_on_golden(c, c.layer, np.uint8(3)),
     TypeError, r"x must be a NumPy array, not uint8"),
    ("run-rows-zero", lambda c: run_on_golden(c, c.layer, c.x, rows_per_call=0),
     ValueError, r"rows_per_call must be a positive integer, not 0"),
    ("run-rows-float", lambda c: run_on_golden(c, c.layer, c.x, rows_per_call=1.5),
     TypeError, r"rows_per_call must be a positive integer, not 1.5"),
    ("run-rows-text", lambda c: run_on_golden(c, c.layer, c.x, rows_per_call="a"),
     TypeError, r"rows_per_call must be a positive integer, not 'a'"),
    ("run-rows-bool", lambda c: run_on_golden(c, c.layer, c.x, rows_per_call=True),
     TypeError, r"rows_per_call must be a positive integer, not True"),
    ("run-progress", lambda c: run_on_golden(c, c.layer, c.x, progress=5),
     TypeError, r"progress must be callable, not 5"),
    ("open-name", lambda c: driver.open("tpu"),
     ValueError, r"unknown backend 'tpu'; choose one of golden"),
    ("open-name-none", lambda c: driver.open(None), ValueError, r"unknown backend None"),
    ("open-config-text", lambda c: driver.open("golden", config="rows=4"),
     TypeError, r"config must be an NpuConfig, not 'rows=4'"),
    ("open-golden-trace", lambda c: golden(c, trace=os.path.join(c.root, "run.fst")),
     ValueError,
     r"backend 'golden' cannot write a waveform \(trace=.*run.fst'\); open verilator"),
    ("open-golden-stall", lambda c: golden(c, stall_probability=0.3),
     ValueError, r"backend 'golden' has no stream to stall \(stall_probability=0.3\)"),
    ("open-golden-option", lambda c: golden(c, bogus=1),
     TypeError, r"backend 'golden' takes no option 'bogus'"),
    ("open-stall-range", lambda c: driver.open("amaranth", stall_probability=2),
     ValueError, r"stall_probability must be a number in \[0, 1\), not 2"),
    ("open-stall-text", lambda c: driver.open("amaranth", stall_probability="x"),
     TypeError, r"stall_probability must be a number in \[0, 1\), not 'x'"),
    ("open-trace-type", lambda c: driver.open("amaranth", trace=5),
     TypeError, r"trace must be a path \(str or os.PathLike\) or None, not 5"),
    ("open-amaranth-option", lambda c: driver.open("amaranth", bogus=1),
     TypeError, r"unexpected keyword argument 'bogus'"),
    # -- NpuConfig -------------------------------------------------------------------------
    ("config-zero", lambda c: NpuConfig(rows=0),
     TypeError, r"rows must be a positive integer, not 0"),
    ("config-float", lambda c: NpuConfig(cols=4.0),
     TypeError, r"cols must be a positive integer, not 4.0"),
    ("config-text", lambda c: NpuConfig(act_depth="8"),
     TypeError, r"act_depth must be a positive integer, not '8'"),
    ("config-large", lambda c: NpuConfig(rows=1000),
     ValueError, r"rows must be at most 256, not 1000"),
    ("config-unknown", lambda c: NpuConfig(depth=3),
     TypeError, r"unexpected keyword argument 'depth'"),
    ("config-numpy-int", lambda c: same(NpuConfig(rows=np.int64(4)).rows, 4), None, None),
    # -- PyTorch ---------------------------------------------------------------------------
    ("torch-none", lambda c: driver.from_torch(None),
     TypeError, r"model must be a torch.nn.Module, not None"),
    ("torch-path", lambda c: driver.from_torch("model.pt"),
     TypeError, r"model must be a torch.nn.Module, not 'model.pt'"),
    ("torch-float-model", lambda c: driver.from_torch(torch.nn.Sequential(torch.nn.Linear(4, 3))),
     TypeError, r"0: a float Linear; the model is not quantized"),
    ("torch-float-stub-model",
     lambda c: driver.from_torch(eager_model(torch.nn.Linear(4, 3), quantized=False)),
     TypeError, r"body.0: a float Linear; the model is not quantized"),
    ("torch-prepared-model", lambda c: driver.from_torch(prepared_model()),
     TypeError, r"prepared but not converted"),
    ("torch-dynamic-model",
     lambda c: driver.from_torch(torch.ao.quantization.quantize_dynamic(
         torch.nn.Sequential(torch.nn.Linear(4, 3)), dtype=torch.qint8)),
     TypeError, r"0: a dynamic quantized Linear has float inputs and outputs"),
    ("torch-untraceable", lambda c: driver.from_torch(Branchy()),
     TypeError, r"Branchy cannot be traced by torch.fx"),
    ("torch-input-shape-text",
     lambda c: driver.from_torch(eager_model(torch.nn.Linear(4, 3)), input_shape="abc"),
     TypeError, r"input_shape must be a tuple of positive ints, not 'abc'"),
    ("torch-input-shape-zero",
     lambda c: driver.from_torch(eager_model(torch.nn.Linear(4, 3)), input_shape=(0,)),
     ValueError, r"input_shape must be a tuple of positive ints, not \(0,\)"),
    ("torch-input-shape-linear",
     lambda c: driver.from_torch(eager_model(torch.nn.Linear(4, 3)), input_shape=(5,)),
     TypeError, r"a Linear takes \[batch, 4\], not \[batch, 5\]"),
    ("torch-conv-without-shape",
     lambda c: driver.from_torch(eager_model(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(),
                                             example=(8, 1, 6, 6))),
     TypeError, r"pass input_shape to from_torch"),
    ("torch-sigmoid",
     lambda c: driver.from_torch(eager_model(torch.nn.Linear(4, 4), torch.nn.Sigmoid())),
     TypeError, r"unsupported call_module 'Sigmoid'"),
    ("torch-no-stub", lambda c: driver.from_torch(eager_model(torch.nn.Linear(4, 3), stub=False)),
     TypeError, r"needs a QuantStub before it"),
    ("torch-pt2e-float", lambda c: driver.from_torch(exported_float_model()),
     TypeError, r"the model is not quantized"),
    ("linear-torch-none",
     lambda c: driver.linear_from_torch(None, input_scale=0.1, input_zero_point=0),
     TypeError, r"expected torch.ao.nn.quantized.Linear .*not NoneType"),
    ("linear-torch-float",
     lambda c: driver.linear_from_torch(torch.nn.Linear(3, 3), input_scale=0.1, input_zero_point=0),
     TypeError, r"expected torch.ao.nn.quantized.Linear"),
    ("linear-torch-dynamic",
     lambda c: driver.linear_from_torch(torch.ao.nn.quantized.dynamic.Linear(4, 3),
                                        input_scale=0.1, input_zero_point=0),
     TypeError, r"dynamic quantized Linear"),
    ("linear-torch-scale-text",
     lambda c: driver.linear_from_torch(c.module, input_scale="a", input_zero_point=0),
     TypeError, r"Linear: input_scale must be a number, not 'a'"),
    ("linear-torch-scale-negative",
     lambda c: driver.linear_from_torch(c.module, input_scale=-0.1, input_zero_point=0),
     ValueError, r"Linear: input_scale must be positive and finite, not -0.1"),
    ("linear-torch-zero-float",
     lambda c: driver.linear_from_torch(c.module, input_scale=0.1, input_zero_point=1.5),
     TypeError, r"Linear: input_zero_point must be an integer, not 1.5"),
    ("linear-torch-zero-range",
     lambda c: driver.linear_from_torch(c.module, input_scale=0.1, input_zero_point=300),
     ValueError, r"zero point must be in 0..255 for uint8, not 300"),
    ("linear-torch-int8",
     lambda c: driver.linear_from_torch(c.module, input_scale=0.1, input_zero_point=0,
                                        input_dtype="int8"),
     Q, r"XNNPACK"),
    ("torch-pt2e-prepared",
     lambda c: driver.from_torch(pt2e_model(torch.nn.Sequential(torch.nn.Linear(4, 3)),
                                            torch.randn(8, 4), convert=False)),
     TypeError, r"the model is prepared but not converted .*convert_pt2e"),
    ("torch-pt2e-sigmoid", lambda c: driver.from_torch(pt2e_model(Sigmoid(), torch.randn(8, 4))),
     TypeError, r"sigmoid: unsupported call_function 'aten.sigmoid' in a PT2E graph"),
    ("torch-pt2e-conv-without-shape",
     lambda c: driver.from_torch(pt2e_model(torch.nn.Sequential(
         torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(32, 3)),
         torch.randn(8, 1, 6, 6))),
     TypeError, r"conv2d: a conv2d needs the input's \(channels, height, width\): pass "
                r"input_shape to from_torch"),
    # -- ONNX ------------------------------------------------------------------------------
    ("onnx-int", lambda c: driver.load_onnx(42),
     TypeError, r"model must be a path, bytes or an onnx.ModelProto, not 42"),
    ("onnx-none", lambda c: driver.load_onnx(None),
     TypeError, r"model must be a path, bytes or an onnx.ModelProto, not None"),
    ("onnx-module", lambda c: driver.load_onnx(torch.nn.Linear(2, 2)),
     TypeError, r"model must be a path, bytes or an onnx.ModelProto, not Linear"),
    ("onnx-missing", lambda c: driver.load_onnx(c.path("missing")),
     FileNotFoundError, r"missing.onnx"),
    ("onnx-directory", lambda c: driver.load_onnx(c.path("folder")), IsADirectoryError, r"folder"),
    ("onnx-truncated", lambda c: driver.load_onnx(c.path("truncated.onnx")),
     OnnxImportError, r"truncated.onnx is not an ONNX model"),
    ("onnx-random", lambda c: driver.load_onnx(c.path("random.onnx")),
     OnnxImportError, r"random.onnx is not an ONNX model"),
    ("onnx-npy", lambda c: driver.load_onnx(c.path("model.npy")),
     OnnxImportError, r"model.npy is not an ONNX model"),
    ("onnx-empty", lambda c: driver.load_onnx(c.path("empty.onnx")),
     OnnxImportError, r"empty.onnx is not an ONNX model \(it holds no graph\)"),
    ("onnx-text", lambda c: driver.load_onnx(c.path("notes.txt")),
     OnnxImportError, r"notes.txt is not an ONNX model"),
    ("onnx-bytes", lambda c: driver.load_onnx(b"\x08\x07garbage\xff\xff"),
     OnnxImportError, r"the bytes are not an ONNX model"),
    ("onnx-bytearray",
     lambda c: same(len(driver.load_onnx(bytearray(c.model.SerializeToString()))), 1),
     None, None),
    ("onnx-constant-value-float",
     lambda c: same(driver.load_onnx(constant_scale_model(c.layer)).input, c.layer.input),
     None, None),
    ("onnx-constant-string",
     lambda c: driver.load_onnx(onnx_with([onnx.helper.make_node(
         "Constant", [], ["k"], value_string="text"), onnx.helper.make_node(
         "Identity", ["g"], ["yq"])])),
     OnnxImportError, r"\(Constant\): a Constant must hold a tensor or numbers, not "
                      r"value_string"),
    ("onnx-float-model", lambda c: driver.load_onnx(c.path("float.onnx")),
     OnnxImportError, r"the model is not quantized"),
    ("onnx-unsupported-op",
     lambda c: driver.load_onnx(onnx_with([onnx.helper.make_node("Sigmoid", ["g"], ["yq"])])),
     OnnxImportError, r"node 'yq' \(Sigmoid\) is not supported"),
    ("onnx-name", lambda c: driver.load_onnx(c.model, name=5),
     TypeError, r"name must be a str or None, not 5"),
]

#: (id, npu arguments, message regex); ``{name}`` is the path of a Context file.
CLI_PROBES = [
    ("cli-model-missing", ["run", "{missing}", "--input", "{x.npy}", "--output", "{y.npy}"],
     r"missing.onnx"),
    ("cli-model-truncated",
     ["run", "{truncated.onnx}", "--input", "{x.npy}", "--output", "{y.npy}"],
     r"truncated.onnx is not an ONNX model"),
    ("cli-model-random", ["run", "{random.onnx}", "--input", "{x.npy}", "--output", "{y.npy}"],
     r"random.onnx is not an ONNX model"),
    ("cli-model-npy", ["run", "{model.npy}", "--input", "{x.npy}", "--output", "{y.npy}"],
     r"model.npy is not an ONNX model"),
    ("cli-model-directory", ["run", "{folder}", "--input", "{x.npy}", "--output", "{y.npy}"],
     r"folder"),
    ("cli-model-float", ["run", "{float.onnx}", "--input", "{x.npy}", "--output", "{y.npy}"],
     r"not quantized"),
    ("cli-disasm-truncated", ["disasm", "{truncated.onnx}"],
     r"truncated.onnx is not an ONNX model"),
    ("cli-disasm-missing", ["disasm", "{missing}"], r"missing.onnx"),
    ("cli-disasm-batch-zero", ["disasm", "{model.onnx}", "--batch", "0"],
     r"argument --batch: must be a positive integer, not 0"),
    ("cli-input-missing", ["run", "{model.onnx}", "--input", "{missing}", "--output", "{y.npy}"],
     r"missing.onnx"),
    ("cli-input-onnx", ["run", "{model.onnx}", "--input", "{model.onnx}", "--output", "{y.npy}"],
     r"--input .*model.onnx is not a .npy array"),
    ("cli-input-text", ["run", "{model.onnx}", "--input", "{notes.txt}", "--output", "{y.npy}"],
     r"--input .*notes.txt is not a .npy array"),
    ("cli-input-truncated",
     ["run", "{model.onnx}", "--input", "{truncated.npy}", "--output", "{y.npy}"],
     r"--input .*truncated.npy is not a .npy array"),
    ("cli-input-npz", ["run", "{model.onnx}", "--input", "{x.npz}", "--output", "{y.npy}"],
     r"--input .*x.npz is a .npz archive"),
    ("cli-input-directory", ["run", "{model.onnx}", "--input", "{folder}", "--output", "{y.npy}"],
     r"folder"),
    ("cli-input-objects",
     ["run", "{model.onnx}", "--input", "{objects.npy}", "--output", "{y.npy}"],
     r"--input .*objects.npy holds Python objects"),
    ("cli-input-dtype", ["run", "{model.onnx}", "--input", "{int64.npy}", "--output", "{y.npy}"],
     r"takes float32 input \[batch, 10\], not int64"),
    ("cli-input-empty", ["run", "{model.onnx}", "--input", "{empty.npy}", "--output", "{y.npy}"],
     r"must be \[batch, 10\], not shape \[0, 10\]"),
    ("cli-output-directory", ["run", "{model.onnx}", "--input", "{x.npy}", "--output", "{folder}"],
     r"--output .*folder is a directory"),
    ("cli-output-no-parent",
     ["run", "{model.onnx}", "--input", "{x.npy}", "--output", "{folder}/no/y.npy"],
     r"--output .*: no such directory .*folder/no"),
    ("cli-backend",
     ["run", "{model.onnx}", "--input", "{x.npy}", "--output", "{y.npy}", "--backend", "tpu"],
     r"unknown backend 'tpu'"),
    ("cli-trace-golden",
     ["run", "{model.onnx}", "--input", "{x.npy}", "--output", "{y.npy}", "--trace",
      "{folder}/run.fst"],
     r"backend 'golden' cannot write a waveform"),
    ("cli-trace-empty",
     ["run", "{model.onnx}", "--input", "{x.npy}", "--output", "{y.npy}", "--trace", ""],
     r"trace must be a file name, not ''"),
    ("cli-rows-zero",
     ["run", "{model.onnx}", "--input", "{x.npy}", "--output", "{y.npy}", "--rows-per-call", "0"],
     r"argument --rows-per-call: must be a positive integer, not 0"),
    ("cli-rows-negative",
     ["run", "{model.onnx}", "--input", "{x.npy}", "--output", "{y.npy}", "--rows-per-call", "-2"],
     r"argument --rows-per-call: must be a positive integer, not -2"),
    ("cli-rows-text",
     ["run", "{model.onnx}", "--input", "{x.npy}", "--output", "{y.npy}", "--rows-per-call", "abc"],
     r"argument --rows-per-call: must be a positive integer, not 'abc'"),
    ("cli-config",
     ["run", "{model.onnx}", "--input", "{x.npy}", "--output", "{y.npy}", "--config", "rows=0"],
     r"rows must be a positive integer, not 0"),
    ("cli-info-config", ["info", "--config", "depth=3"],
     r"configuration item 'depth=3' must be name=value"),
    ("cli-no-command", [], r"the following arguments are required: command"),
    ("cli-unknown-command", ["compile"], r"invalid choice: 'compile'"),
    ("cli-missing-input", ["run", "{model.onnx}", "--output", "{y.npy}"],
     r"the following arguments are required: --input"),
]


#: What the probes that failed did before the checks were added (commit eea5b03): 101 of
#: the 182, 86 of them bad in the issue's sense (a generic error from numpy, protobuf or
#: torch.fx, a traceback, an input silently taken or ignored, a misleading message, a
#: usage screen instead of one line); the other 15 were clear but did not say what was
#: given.  After: none.
BEFORE = {
    "generic error, not naming the argument (5 of them tracebacks from npu)": """
        quantize-text quantize-ragged dequantize-text linear-weight-scale-text
        linear-clip-text linear-alpha-text conv-input-shape-text conv-padding-text
        conv-reference-features matmul-weight-scalar matmul-reference-features
        network-layers-none run-layers-none run-rows-text run-progress torch-none
        torch-path torch-prepared-model torch-untraceable torch-input-shape-text
        linear-torch-scale-text onnx-int onnx-none onnx-module onnx-truncated onnx-random
        onnx-npy onnx-text onnx-bytes onnx-bytearray onnx-constant-value-float
        onnx-constant-string open-stall-text cli-model-truncated
        cli-model-random cli-model-npy cli-disasm-truncated cli-input-npz""",
    "silently taken, ignored or wrong": """
        quantize-none quantize-complex quantize-nan-uint8 quantize-nan-int8
        quantize-nan-among-values dequantize-float dequantize-range dequantize-int8-range
        linear-clip-nan conv-input-shape-float run-rows-float run-rows-bool
        open-golden-trace open-golden-stall open-golden-option open-stall-range
        open-trace-type linear-torch-zero-float onnx-name cli-output-directory
        cli-trace-golden cli-trace-empty cli-rows-zero""",
    "misleading or not naming what was wrong": """
        linear-activation linear-rounding linear-alpha-nan network-layers-text
        run-layers-text reference-3d config-numpy-int torch-float-model
        torch-float-stub-model torch-dynamic-model torch-pt2e-float torch-input-shape-zero
        onnx-empty cli-input-onnx cli-input-text cli-input-truncated cli-input-objects
        maxpool-kernel-text torch-pt2e-prepared""",
    "a usage screen, not one line": """
        cli-rows-text cli-config cli-missing-input cli-info-config cli-no-command
        cli-unknown-command""",
    "clear, but not saying what was given (or another error type)": """
        linear-weight-scale-negative linear-weight-scale-nan linear-weight-zero-range
        linear-bias-range maxpool-kernel-zero conv-stride-zero conv-padding-negative
        conv-groups-float run-rows-zero linear-torch-scale-negative onnx-float-model
        cli-model-float cli-disasm-batch-zero cli-output-no-parent cli-rows-negative""",
}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Context(str(tmp_path_factory.mktemp("probes")))


@pytest.mark.parametrize("call, error, match", [p[1:] for p in PROBES],
                         ids=[p[0] for p in PROBES])
def test_entry_point_wrong(ctx, call, error, match):
    if error is None:
        kind, actual, expected = call(ctx)
        assert actual == expected
        return
    with pytest.raises(error, match=match) as info:
        result = call(ctx)
        if hasattr(result, "close"):
            result.close()
    assert isinstance(info.value, CLEAR)


@pytest.mark.parametrize("argv, match", [p[1:] for p in CLI_PROBES],
                         ids=[p[0] for p in CLI_PROBES])
def test_command_line_wrong(ctx, capsys, argv, match):
    """One line on stderr naming what is wrong, a non-zero exit status, no traceback."""
    argv = [re.sub(r"\{([^}]+)\}", lambda m: ctx.path(m.group(1)), arg) for arg in argv]
    try:
        status = main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    err = capsys.readouterr().err
    assert status not in (0, None)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(match, err), err


def test_probe_record():
    """The record of what was tried and what failed before (the README's "Bad input"
    section quotes these figures)."""
    ids = [p[0] for p in PROBES + CLI_PROBES]
    assert len(ids) == len(set(ids)) == 182
    before = [name for names in BEFORE.values() for name in names.split()]
    assert len(before) == len(set(before)) == 101 and set(before) <= set(ids)
    assert sum(len(BEFORE[k].split()) for k in list(BEFORE)[:4]) == 86

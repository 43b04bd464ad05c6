"""Random quantized layers and framework references for the driver tests."""

import functools
import warnings

import numpy as np

import driver
from hw.config import NpuConfig

#: Configurations the driver is tested on: default, small square, non-square, and buffers
#: so shallow that M, K and the weight buffer are all tiled.
CONFIGS = {
    "8x8": NpuConfig(),
    "4x4": NpuConfig(rows=4, cols=4),
    "2x3": NpuConfig(rows=2, cols=3, data_bytes=4),
    "shallow": NpuConfig(rows=4, cols=4, act_depth=6, acc_depth=5, weight_tiles=2, data_bytes=2),
}

#: (batch, in_features, out_features): the issue's edge shapes and primes no array divides.
SHAPES = [(1, 1, 1), (3, 1, 1000), (2, 1000, 1), (1, 17, 13), (29, 37, 11), (7, 64, 64)]

#: The int8 weights onnxruntime multiplies exactly on every x86 CPU. Without VNNI (AVX2, and
#: AVX-512 without VNNI) its uint8 x int8 kernels (int8 activations are shifted to uint8
#: first) use VPMADDUBSW, which saturates each pair of products at int16: 255 * -128 * 2
#: overflows, 255 * 64 * 2 does not. onnxruntime's quantization guide gives the remedy,
#: ``quantize_static(..., reduce_range=True)``, which quantizes weights into this range; the
#: tests that compare with onnxruntime use it. The chip itself takes the full int8 range.
ONNXRUNTIME_EXACT_INT8 = (-64, 64)


def onnxruntime_weight_range(weight_dtype):
    """``(low, high)``, inclusive, of the weights of ``weight_dtype`` that onnxruntime
    multiplies exactly on every x86 CPU (its uint8 x uint8 kernels are exact)."""
    t = driver.QuantType.of(weight_dtype)
    return ONNXRUNTIME_EXACT_INT8 if t.signed else (t.min, t.max)


def random_layer(rng, in_features, out_features, *, input_dtype="uint8", weight_dtype="int8",
                 output_dtype=None, per_channel=True, activation="none", weight_zero=None,
                 weight_range=None, name="layer"):
    """A random :class:`driver.QuantLinear` with realistic scales.

    ``weight_range`` is ``(low, high)``, inclusive, of the weights; the whole type by default
    (:func:`onnxruntime_weight_range` for a layer that onnxruntime runs too).
    """
    output_dtype = output_dtype or input_dtype
    wt = driver.QuantType.of(weight_dtype)
    it, ot = driver.QuantType.of(input_dtype), driver.QuantType.of(output_dtype)
    n = out_features
    low, high = weight_range or (wt.min, wt.max)
    weight = rng.integers(low, high + 1, size=(n, in_features)).astype(wt.dtype)
    if weight_zero is None:
        weight_zero = rng.integers(wt.min, wt.max + 1, size=n) if not wt.signed else 0
    scales = rng.uniform(0.002, 0.02, size=n) if per_channel else rng.uniform(0.002, 0.02)
    input_scale = float(np.float32(rng.uniform(0.01, 0.05)))
    typical = np.sqrt(in_features) * 80 * 60 * input_scale * 0.01
    return driver.QuantLinear(
        weight=weight, weight_scale=scales, weight_zero_point=weight_zero,
        bias=rng.integers(-3000, 3000, size=n).astype(np.int32),
        input_scale=input_scale, input_zero_point=int(rng.integers(it.min, it.max + 1)),
        input_dtype=input_dtype, output_scale=float(np.float32(typical / 40)),
        output_zero_point=int(rng.integers(ot.min // 2, ot.max // 2 + 1)) if ot.signed
        else int(rng.integers(60, 200)),
        output_dtype=output_dtype, activation=activation, name=name)


def random_input(rng, batch, layer):
    t = layer.input.qtype
    return rng.integers(t.min, t.max + 1, size=(batch, layer.in_features)).astype(t.dtype)


def chain_of(rng, sizes, **kwargs):
    """Layers ``sizes[0] -> sizes[1] -> ...`` whose quantization matches from one to the next."""
    layers = []
    for index, (k, n) in enumerate(zip(sizes, sizes[1:], strict=False)):
        layer = random_layer(rng, k, n, name=f"fc{index}", **kwargs)
        if layers:
            prev = layers[-1].output
            layer = driver.QuantLinear(
                weight=layer.weight, weight_scale=layer.weight_scale,
                weight_zero_point=layer.weight_zero_point, bias=layer.bias,
                input_scale=prev.scale, input_zero_point=prev.zero_point,
                input_dtype=prev.qtype, output_scale=layer.output.scale,
                output_zero_point=layer.output.zero_point, output_dtype=layer.output.qtype,
                activation=layer.activation, name=layer.name)
        layers.append(layer)
    return layers


def compare_with_framework(chip, framework, reference, float32):
    """Check the chip against a framework, bit for bit.

    Three equalities, so that a failure says which side is wrong: the chip equals the
    NumPy model of its own arithmetic (``reference``), the framework equals the float32
    emulation of its kernels (``float32``), and the chip equals the framework.
    """
    np.testing.assert_array_equal(chip, reference,
                                  err_msg="the chip differs from its NumPy reference")
    np.testing.assert_array_equal(framework, float32,
                                  err_msg="the framework differs from its float32 emulation")
    np.testing.assert_array_equal(chip, framework, err_msg="the chip differs from the framework")


# -- PyTorch ---------------------------------------------------------------------------------

def torch_linear(rng, in_features, out_features, *, per_channel=True, relu=False, bias=True):
    """A converted ``torch.ao.nn.quantized.Linear`` (or LinearReLU) with random weights."""
    import torch
    from torch.ao.nn.intrinsic.quantized import LinearReLU
    from torch.ao.nn.quantized import Linear
    n = out_features
    w = rng.integers(-128, 128, size=(n, in_features)).astype(np.int8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if per_channel:
            qw = torch._make_per_channel_quantized_tensor(
                torch.from_numpy(w), torch.from_numpy(rng.uniform(0.002, 0.02, size=n)),
                torch.zeros(n, dtype=torch.long), 0)
        else:
            qw = torch._make_per_tensor_quantized_tensor(torch.from_numpy(w),
                                                         float(rng.uniform(0.002, 0.02)), 0)
    module = (LinearReLU if relu else Linear)(in_features, n)
    b = torch.from_numpy(rng.normal(0, 0.5, size=n).astype(np.float32)) if bias else None
    module.set_weight_bias(qw, b)
    module.scale = float(np.sqrt(in_features) * 0.05)
    module.zero_point = int(rng.integers(60, 200))
    return module


def torch_run(module, x_q, scale, zero_point):
    """Run a quantized torch module on uint8 input; uint8 output."""
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xt = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x_q), scale, zero_point)
        return module(xt).int_repr().numpy()


# -- onnxruntime -----------------------------------------------------------------------------

def ort_session(model, *, optimize=True):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def ort_run(model, x, *, optimize=True):
    session = ort_session(model, optimize=optimize)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def qoperator_model(layer, op="QGemm", *, trans_b=True):
    """A one-node QGemm (com.microsoft) or QLinearMatMul model of ``layer``."""
    from onnx import TensorProto, helper
    from onnx import numpy_helper as nh
    elem = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}
    it, ot = layer.input.qtype.dtype, layer.output.qtype.dtype
    wdt = layer.weight.dtype
    scalar = lambda name, v, dt: nh.from_array(np.array(v, dtype=dt), name)  # noqa: E731
    trans_b = trans_b and op == "QGemm"      # QLinearMatMul takes b as [in, out]
    weight = layer.weight if trans_b else np.ascontiguousarray(layer.weight.T)
    inits = [scalar("sx", layer.input.scale, np.float32),
             scalar("zx", layer.input.zero_point, it),
             nh.from_array(weight, "w"), nh.from_array(layer.weight_scale.astype(np.float32), "sw"),
             nh.from_array(layer.weight_zero_point.astype(wdt), "zw"),
             scalar("sy", layer.output.scale, np.float32),
             scalar("zy", layer.output.zero_point, ot)]
    if op == "QGemm":
        inits.append(nh.from_array(layer.bias.astype(np.int32), "b"))
        node = helper.make_node("QGemm", ["x", "sx", "zx", "w", "sw", "zw", "b", "sy", "zy"],
                                ["y"], domain="com.microsoft", transB=int(trans_b))
    else:
        node = helper.make_node("QLinearMatMul", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy"],
                                ["y"])
    graph = helper.make_graph(
        [node], "layer",
        [helper.make_tensor_value_info("x", elem[it], ["batch", layer.in_features])],
        [helper.make_tensor_value_info("y", elem[ot], ["batch", layer.out_features])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                   helper.make_opsetid("com.microsoft", 1)])


def onnx_node_cases(op_type):
    """The onnx package's own node tests of ``op_type`` as one-input models.

    Returns ``(name, model, x, expected)`` per case, the operands after the first folded
    into initializers, as a user's exported model holds them.
    """
    from onnx import helper, numpy_helper
    cases = []
    for case in _onnx_node_testcases():
        if case.model.graph.node[0].op_type != op_type:
            continue
        (inputs, outputs), = case.data_sets
        model = case.model
        graph = model.graph
        constants = [numpy_helper.from_array(np.asarray(value), vi.name)
                     for vi, value in zip(graph.input[1:], inputs[1:], strict=True)]
        folded = helper.make_graph(list(graph.node), graph.name, [graph.input[0]],
                                   list(graph.output), constants)
        rebuilt = helper.make_model(folded, opset_imports=list(model.opset_import))
        rebuilt.ir_version = model.ir_version
        cases.append((case.name, rebuilt, np.asarray(inputs[0]), np.asarray(outputs[0])))
    return cases


@functools.cache
def _onnx_node_testcases():
    """Every node test case of the onnx package (its generators run once, on import)."""
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return tuple(collect_testcases())

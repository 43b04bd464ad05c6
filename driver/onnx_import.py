"""Networks from quantized ONNX models.

Supported: a chain from the model's input to its output made of

* ``QuantizeLinear`` at the input and ``DequantizeLinear`` at the output (optional: a
  model may take and return uint8/int8 tensors);
* ``QGemm`` (com.microsoft) and ``QLinearMatMul`` with constant weights;
* ``QLinearAdd`` (com.microsoft) of a constant after a layer (the bias of a quantized
  ``MatMul`` + ``Add``), applied by the driver as a per-column table because it rounds a
  second time, which the chip's single requantization cannot do;
* QDQ form: ``DequantizeLinear`` -> ``Gemm``/``MatMul`` (weights and int32 bias from
  ``DequantizeLinear`` of constants, optional ``Add`` of the bias) -> optional ``Relu`` /
  ``Clip`` -> ``QuantizeLinear``; and ``DequantizeLinear`` -> ``Add`` (constant) ->
  ``QuantizeLinear``.

The effective scale uses onnxruntime's float32 order, ``(alpha * s_a * s_b) / s_y``.
Any other node raises :class:`OnnxImportError` naming it and its op type.
"""

import os

import numpy as np

from .layers import (
    ColumnTable,
    ConvGeometry,
    IntegerMatMul,
    MaxPool2d,
    Network,
    QuantConv2d,
    QuantLinear,
    QuantParams,
)
from .quant import QuantType

__all__ = ["load_onnx", "OnnxImportError"]

_MS_DOMAIN = "com.microsoft"
#: Ops on constants the importer reads as they are rather than folding them.
_KEPT_ON_CONSTANTS = ("QuantizeLinear", "DequantizeLinear", "Constant")


class OnnxImportError(ValueError):
    """The ONNX model has a node or a form the driver cannot run exactly."""


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - onnx is a declared extra
        raise ImportError("the onnx package is needed to load ONNX models: "
                          "pip install 'systolic-npu[frameworks]'") from exc
    return onnx, numpy_helper


def _describe(node):
    return f"node {node.name or node.output[0]!r} ({node.op_type})"


def _constant_value(numpy_helper, node):
    """The value of a ``Constant`` node, from whichever ``value*`` attribute it has."""
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_floats"):
            return np.asarray(a.f if a.name == "value_float" else list(a.floats), np.float32)
        if a.name in ("value_int", "value_ints"):
            return np.asarray(a.i if a.name == "value_int" else list(a.ints), np.int64)
    names = ", ".join(a.name for a in node.attribute) or "no attribute"
    raise OnnxImportError(f"{_describe(node)}: a Constant must hold a tensor or numbers, "
                          f"not {names}")


class _Graph:
    """Constants, producers and consumers of an ONNX graph, and the nodes consumed so far."""

    def __init__(self, model):
        onnx, numpy_helper = _onnx()
        self.onnx, self._numpy_helper = onnx, numpy_helper
        graph = model.graph
        self.nodes = list(graph.node)
        self.consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = _constant_value(numpy_helper, node)
        self.used = set()
        self._fold_constants(model)
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.outputs = [o.name for o in graph.output]
        inputs = [i for i in graph.input if i.name not in self.consts]
        if len(inputs) != 1 or len(self.outputs) != 1:
            raise OnnxImportError(f"the model must have one input and one output, not "
                                  f"{len(inputs)} and {len(self.outputs)}")
        self.input = inputs[0]

    def _fold_constants(self, model):
        """Evaluate, once at load time, every node that only reads constants (a Transpose or
        Reshape of a weight, a Cast of a bound...), except the Q/DQ the layers read."""
        from onnx.reference import ReferenceEvaluator
        helper = self.onnx.helper
        opsets = list(model.opset_import)
        for node in self.nodes:
            inputs = [name for name in node.input if name]
            if (node.op_type in _KEPT_ON_CONSTANTS or node.domain not in ("", "ai.onnx")
                    or not inputs or any(name not in self.consts for name in inputs)
                    or any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute)):
                continue
            graph = helper.make_graph(
                [node], "fold", [],
                [helper.make_empty_tensor_value_info(name) for name in node.output if name],
                [self._numpy_helper.from_array(self.consts[name], name) for name in inputs])
            try:
                values = ReferenceEvaluator(helper.make_model(graph, opset_imports=opsets)).run(
                    None, {})
            except Exception as exc:  # noqa: BLE001 - any failure: the node is not foldable
                raise OnnxImportError(f"{_describe(node)} on constants could not be evaluated "
                                      f"at load time: {exc}") from None
            for name, value in zip([n for n in node.output if n], values, strict=True):
                self.consts[name] = np.asarray(value)
            self.used.add(id(node))
        self.nodes = [node for node in self.nodes if id(node) not in self.used]

    def attr(self, node, name, default):
        for a in node.attribute:
            if a.name == name:
                return self.onnx.helper.get_attribute_value(a)
        return default

    def const(self, name, node, what):
        if name not in self.consts:
            raise OnnxImportError(f"{_describe(node)}: {what} must be a constant")
        return self.consts[name]

    def consumer(self, tensor, producer_desc):
        users = self.consumers.get(tensor, [])
        if len(users) != 1:
            raise OnnxImportError(f"tensor {tensor!r} of {producer_desc} feeds {len(users)} "
                                  "nodes; the driver runs chains with one consumer per tensor")
        return users[0]

    def qparams(self, node, scale_name, zero_name, what):
        scale = self.const(scale_name, node, f"{what} scale")
        if zero_name:
            zero = self.const(zero_name, node, f"{what} zero point")
        else:
            zero = np.zeros((), dtype=np.uint8)
        if scale.size != 1 or zero.size != 1:
            raise OnnxImportError(f"{_describe(node)}: {what} must be quantized per tensor")
        try:
            return QuantParams(scale=float(scale.reshape(())), zero_point=int(zero.reshape(())),
                               dtype=zero.dtype, what=f"{_describe(node)}: {what}")
        except TypeError as exc:
            raise OnnxImportError(str(exc)) from None

    def dequantized_constant(self, tensor, node, what):
        """``(q, scale, zero, axis)`` of a constant behind a DequantizeLinear."""
        dq = self.producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            raise OnnxImportError(f"{_describe(node)}: {what} must come from a "
                                  "DequantizeLinear of a constant")
        q = self.const(dq.input[0], dq, f"{what} (quantized)")
        scale = self.const(dq.input[1], dq, f"{what} scale")
        zero = (self.const(dq.input[2], dq, f"{what} zero point") if len(dq.input) > 2
                and dq.input[2] else np.zeros(scale.shape, dtype=q.dtype))
        self.used.add(id(dq))
        return q, scale, zero, self.attr(dq, "axis", 1)


def _weight_params(node, scale, zero, n):
    """Per-column scale and zero point of a weight, checked to be per tensor or per column."""
    scale, zero = np.asarray(scale).reshape(-1), np.asarray(zero).reshape(-1)
    if scale.size not in (1, n) or zero.size not in (1, n):
        raise OnnxImportError(f"{_describe(node)}: weights must be quantized per tensor or "
                              f"per output column ({n}), not with {scale.size} scales")
    return scale.astype(np.float32), zero.astype(np.int64)


def _weight_matrix(node, b, trans_b):
    if b.dtype not in (np.int8, np.uint8) or b.ndim != 2:
        raise OnnxImportError(f"{_describe(node)}: weights must be a 2-D int8 or uint8 "
                              f"constant, not {b.dtype} {list(b.shape)}")
    return np.ascontiguousarray(b if trans_b else b.T)       # [out, in]


def _bias(node, c, n):
    c = np.asarray(c)
    if c.dtype != np.int32:
        raise OnnxImportError(f"{_describe(node)}: the bias must be int32, not {c.dtype}")
    if c.size == 1:
        return np.full(n, int(c.reshape(())), dtype=np.int64)
    if c.reshape(-1).shape != (n,) or (c.ndim == 2 and c.shape[0] != 1):
        raise OnnxImportError(f"{_describe(node)}: the bias must have {n} values, one per "
                              f"output, not shape {list(c.shape)}")
    return c.reshape(-1).astype(np.int64)


def _layer(g, node, *, current, weight, w_scale, w_zero, bias, output, alpha=1.0,
           activation="none", clip=None, geometry=None):
    """A QuantLinear, or with ``geometry`` (a dict of conv arguments) a QuantConv2d."""
    kind, extra = (QuantLinear, {}) if geometry is None else (QuantConv2d, geometry)
    try:
        return kind(weight=weight, weight_scale=w_scale, weight_zero_point=w_zero,
                    bias=bias, input_scale=current.scale,
                    input_zero_point=current.zero_point, input_dtype=current.qtype,
                    output_scale=output.scale, output_zero_point=output.zero_point,
                    output_dtype=output.qtype, activation=activation, clip=clip,
                    scale_order="onnxruntime", alpha=alpha,
                    name=node.name or node.output[0], **extra)
    except (TypeError, ValueError) as exc:
        raise OnnxImportError(f"{_describe(node)}: {exc}") from None


def _check_input_params(node, expected, actual):
    if expected != actual:
        raise OnnxImportError(f"{_describe(node)}: its input quantization {actual} differs "
                              f"from the tensor's {expected}")


def _qgemm(g, node, current):
    inputs = list(node.input) + [""] * (9 - len(node.input))
    _check_input_params(node, current, g.qparams(node, inputs[1], inputs[2], "input A"))
    if g.attr(node, "transA", 0):
        raise OnnxImportError(f"{_describe(node)}: transA=1 is not supported")
    if not inputs[7]:
        raise OnnxImportError(f"{_describe(node)}: a QGemm without y_scale has a float output, "
                              "which the chip cannot produce")
    weight = _weight_matrix(node, g.const(inputs[3], node, "B"), g.attr(node, "transB", 0))
    n = weight.shape[0]
    w_scale, w_zero = _weight_params(node, g.const(inputs[4], node, "B scale"),
                                     g.const(inputs[5], node, "B zero point"), n)
    bias = None
    if inputs[6]:
        if g.attr(node, "beta", 1.0) != 1.0:
            raise OnnxImportError(f"{_describe(node)}: beta other than 1 is not supported")
        bias = _bias(node, g.const(inputs[6], node, "C"), n)
    output = g.qparams(node, inputs[7], inputs[8], "output")
    return _layer(g, node, current=current, weight=weight, w_scale=w_scale, w_zero=w_zero,
                  bias=bias, output=output, alpha=float(g.attr(node, "alpha", 1.0)))


def _qlinear_matmul(g, node, current):
    _check_input_params(node, current, g.qparams(node, node.input[1], node.input[2], "input a"))
    weight = _weight_matrix(node, g.const(node.input[3], node, "b"), False)
    w_scale, w_zero = _weight_params(node, g.const(node.input[4], node, "b scale"),
                                     g.const(node.input[5], node, "b zero point"),
                                     weight.shape[0])
    output = g.qparams(node, node.input[6], node.input[7], "output")
    return _layer(g, node, current=current, weight=weight, w_scale=w_scale, w_zero=w_zero,
                  bias=None, output=output)


def _add_table(node, current, other, other_params, output, features):
    """The per-column table of ``QLinearAdd(x, constant)``, evaluated by onnxruntime itself.

    The chip requantizes once per layer; onnxruntime rounds the matmul result and then
    the sum again, so the driver applies the second rounding exactly, as a table of
    onnxruntime's own kernel over every input value.
    """
    try:
        import onnxruntime
    except ImportError:
        raise OnnxImportError(f"{_describe(node)}: tabulating a quantized Add needs "
                              "onnxruntime (pip install onnxruntime)") from None
    onnx, numpy_helper = _onnx()
    helper = onnx.helper
    other = np.asarray(other)
    if other.size == 1:
        other = np.full(features, other.reshape(()), dtype=other.dtype)
    if other.reshape(-1).shape != (features,):
        raise OnnxImportError(f"{_describe(node)}: the added constant must have one value per "
                              f"column ({features}), not shape {list(other.shape)}")
    qtype = current.qtype
    grid = np.repeat(np.arange(qtype.min, qtype.max + 1)[:, None], features, axis=1)
    dtypes = {QuantType.UINT8: onnx.TensorProto.UINT8, QuantType.INT8: onnx.TensorProto.INT8}

    def scalar(name, value, dtype):
        return numpy_helper.from_array(np.array(value, dtype=dtype), name)

    inits = [scalar("sa", current.scale, np.float32), scalar("za", current.zero_point, qtype.dtype),
             numpy_helper.from_array(other.reshape(-1), "b"),
             scalar("sb", other_params.scale, np.float32),
             scalar("zb", other_params.zero_point, other_params.qtype.dtype),
             scalar("sc", output.scale, np.float32),
             scalar("zc", output.zero_point, output.qtype.dtype)]
    add = helper.make_node("QLinearAdd", ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["c"],
                           domain=_MS_DOMAIN)
    graph = helper.make_graph(
        [add], "table", [helper.make_tensor_value_info("a", dtypes[qtype], [256, features])],
        [helper.make_tensor_value_info("c", dtypes[output.qtype], [256, features])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid(_MS_DOMAIN, 1)])
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    table = session.run(None, {"a": grid.astype(qtype.dtype)})[0]
    return ColumnTable(table=np.ascontiguousarray(table.T), input=current, output=output,
                       name=node.name or node.output[0])


def _qlinear_add(g, node, current, features):
    inputs = list(node.input)
    if inputs[0] in g.consts:      # the constant may come first: addition commutes
        inputs = inputs[3:6] + inputs[0:3] + inputs[6:]
    _check_input_params(node, current, g.qparams(node, inputs[1], inputs[2], "input A"))
    other = g.const(inputs[3], node, "the added operand")
    other_params = g.qparams(node, inputs[4], inputs[5], "input B")
    output = g.qparams(node, inputs[6], inputs[7] if len(inputs) > 7 else "", "output")
    return _add_table(node, current, other, other_params, output, features)


def _clip_range(g, node):
    if node.op_type == "Relu":
        return 0.0, None
    if len(node.input) > 1:     # opset 11+: min and max are inputs
        bounds = [float(g.const(name, node, "a clip bound").reshape(())) if name else None
                  for name in (list(node.input[1:3]) + [""])[:2]]
        return bounds[0], bounds[1]
    return g.attr(node, "min", None), g.attr(node, "max", None)


def _qdq_linear(g, node, current, shape):
    """DQ -> Gemm/MatMul/Conv [-> Add bias] [-> Relu/Clip] -> Q, starting at the
    Gemm/MatMul/Conv."""
    chain = [node]
    conv = node.op_type == "Conv"
    if not conv:
        _check_features(node, shape)
    if node.op_type == "Gemm":
        if g.attr(node, "transA", 0):
            raise OnnxImportError(f"{_describe(node)}: transA=1 is not supported")
        if g.attr(node, "alpha", 1.0) != 1.0 or g.attr(node, "beta", 1.0) != 1.0:
            raise OnnxImportError(f"{_describe(node)}: alpha and beta other than 1 are not "
                                  "supported")
        trans_b = g.attr(node, "transB", 0)
    else:
        trans_b = 0
    q, scale, zero, axis = g.dequantized_constant(node.input[1], node, "the weight")
    if conv:
        weight = _conv_weight(node, q)
        if np.asarray(scale).size > 1 and axis != 0:
            raise OnnxImportError(f"{_describe(node)}: per-channel weights must be quantized "
                                  "along the output-channel axis 0")
    else:
        weight = _weight_matrix(node, q, trans_b)
        if np.asarray(scale).size > 1 and axis % 2 != (0 if trans_b else 1):
            raise OnnxImportError(f"{_describe(node)}: per-channel weights must be quantized "
                                  "along the output axis")
    n = weight.shape[0]
    w_scale, w_zero = _weight_params(node, scale, zero, n)
    bias_tensor = node.input[2] if node.op_type in ("Gemm", "Conv") and len(node.input) > 2 \
        else ""
    tensor = node.output[0]
    following = g.consumer(tensor, _describe(node))
    if not bias_tensor and following.op_type == "Add":
        bias_tensor = next((t for t in following.input if t != tensor), "")
        chain.append(following)
        tensor = following.output[0]
        following = g.consumer(tensor, _describe(following))
    bias = None
    if bias_tensor:
        b, b_scale, b_zero, _ = g.dequantized_constant(bias_tensor, chain[-1], "the bias")
        bias = _bias(chain[-1], b, n)
        expected = np.float32(current.scale) * w_scale
        if np.any(np.asarray(b_zero) != 0) or not np.allclose(
                np.broadcast_to(np.asarray(b_scale, dtype=np.float32).reshape(-1), (n,)),
                expected, rtol=1e-6, atol=0):
            raise OnnxImportError(f"{_describe(chain[-1])}: the bias must be quantized with "
                                  "scale input_scale * weight_scale and zero point 0")
    clip = None
    if following.op_type in ("Relu", "Clip"):
        clip = _clip_range(g, following)
        chain.append(following)
        tensor = following.output[0]
        following = g.consumer(tensor, _describe(following))
    if following.op_type != "QuantizeLinear":
        raise OnnxImportError(f"{_describe(following)} after {_describe(chain[-1])} is not "
                              "supported; a QDQ layer must end in QuantizeLinear")
    chain.append(following)
    output = g.qparams(following, following.input[1],
                       following.input[2] if len(following.input) > 2 else "", "output")
    layer = _layer(g, node, current=current, weight=weight, w_scale=w_scale, w_zero=w_zero,
                   bias=bias, output=output, clip=clip,
                   geometry=_conv_geometry(g, node, shape, weight) if conv else None)
    return layer, chain


def _qdq_add(g, node, current, features, operand):
    """DQ -> Add(DQ constant) -> Q: onnxruntime fuses it into QLinearAdd."""
    tensor = node.output[0]
    others = [t for t in node.input if t != operand]
    if len(others) != 1:
        raise OnnxImportError(f"{_describe(node)}: an Add must add a constant to the layer output")
    other_name = others[0]
    other, scale, zero, _ = g.dequantized_constant(other_name, node, "the added operand")
    quantize = g.consumer(tensor, _describe(node))
    if quantize.op_type != "QuantizeLinear":
        raise OnnxImportError(f"{_describe(quantize)} after {_describe(node)} is not supported")
    other_params = QuantParams(scale=float(np.asarray(scale).reshape(())),
                               zero_point=int(np.asarray(zero).reshape(())), dtype=other.dtype)
    output = g.qparams(quantize, quantize.input[1],
                       quantize.input[2] if len(quantize.input) > 2 else "", "output")
    return _add_table(node, current, other, other_params, output, features), [node, quantize]




# -- convolution and pooling ---------------------------------------------------------------

def _check_features(node, shape):
    if len(shape) != 1:
        raise OnnxImportError(f"{_describe(node)}: takes a [batch, features] input, not "
                              f"[batch, {', '.join(map(str, shape))}]; flatten it first")


def _conv_weight(node, w):
    if w.dtype not in (np.int8, np.uint8) or w.ndim != 4:
        raise OnnxImportError(f"{_describe(node)}: weights must be a 4-D int8 or uint8 "
                              f"constant (2-D convolution), not {w.dtype} {list(w.shape)}")
    return w


def _window_arguments(g, node, shape, kernel):
    """Stride, pads and dilation of a Conv/MaxPool node on a [C, H, W] input, as ONNX
    defines them (explicit ``pads`` or ``auto_pad``)."""
    if len(shape) != 3:
        raise OnnxImportError(f"{_describe(node)}: only 2-D windows on [batch, channels, "
                              f"height, width] are supported, not input [batch, "
                              f"{', '.join(map(str, shape))}]")
    strides = list(g.attr(node, "strides", [1, 1]))
    dilations = list(g.attr(node, "dilations", [1, 1]))
    pads = list(g.attr(node, "pads", [0, 0, 0, 0]))
    auto_pad = g.attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * 4
        for axis in range(2):
            size, s, d, k = shape[1 + axis], strides[axis], dilations[axis], kernel[axis]
            total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
            begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            pads[axis], pads[2 + axis] = begin, total - begin
    elif auto_pad == "VALID":
        pads = [0] * 4
    elif auto_pad != "NOTSET":
        raise OnnxImportError(f"{_describe(node)}: auto_pad {auto_pad!r} is not supported")
    if len(strides) != 2 or len(dilations) != 2 or len(pads) != 4:
        raise OnnxImportError(f"{_describe(node)}: only 2-D windows are supported")
    return dict(input_shape=shape, stride=strides, padding=pads, dilation=dilations)


def _conv_geometry(g, node, shape, weight):
    kernel = list(g.attr(node, "kernel_shape", weight.shape[2:]))
    if tuple(kernel) != tuple(weight.shape[2:]):
        raise OnnxImportError(f"{_describe(node)}: kernel_shape {kernel} differs from the "
                              f"weights' {list(weight.shape[2:])}")
    return dict(_window_arguments(g, node, shape, kernel), groups=int(g.attr(node, "group", 1)))


def _qlinear_conv(g, node, current, shape):
    inputs = list(node.input) + [""] * (9 - len(node.input))
    _check_input_params(node, current, g.qparams(node, inputs[1], inputs[2], "input x"))
    weight = _conv_weight(node, g.const(inputs[3], node, "w"))
    n = weight.shape[0]
    w_scale, w_zero = _weight_params(node, g.const(inputs[4], node, "w scale"),
                                     g.const(inputs[5], node, "w zero point"), n)
    output = g.qparams(node, inputs[6], inputs[7], "output")
    bias = _bias(node, g.const(inputs[8], node, "B"), n) if inputs[8] else None
    return _layer(g, node, current=current, weight=weight, w_scale=w_scale, w_zero=w_zero,
                  bias=bias, output=output, geometry=_conv_geometry(g, node, shape, weight))


def _integer_matmul(g, node, current, shape):
    """MatMulInteger / ConvInteger: int32 accumulators, which must be the model's output."""
    inputs = list(node.input) + [""] * (4 - len(node.input))
    zero = g.const(inputs[2], node, "the input zero point") if inputs[2] else None
    if zero is not None and zero.size != 1:
        raise OnnxImportError(f"{_describe(node)}: the input must have one zero point")
    if zero is not None and np.dtype(zero.dtype) != current.qtype.dtype:
        raise OnnxImportError(f"{_describe(node)}: the input zero point is {zero.dtype}, the "
                              f"input {current.qtype.value}")
    b = g.const(inputs[1], node, "the weight")
    if node.op_type == "ConvInteger":
        weight = _conv_weight(node, b)
        geometry = ConvGeometry(kernel=weight.shape[2:], name=node.name or node.output[0],
                                **_conv_geometry(g, node, shape, weight))
    else:
        _check_features(node, shape)
        weight, geometry = _weight_matrix(node, b, False), None
    w_zero = (g.const(inputs[3], node, "the weight zero point") if inputs[3]
              else np.zeros(1, dtype=weight.dtype))
    w_zero = np.asarray(w_zero).reshape(-1)
    if w_zero.size not in (1, weight.shape[0]):
        raise OnnxImportError(f"{_describe(node)}: weights must have one zero point or one "
                              f"per output ({weight.shape[0]}), not {w_zero.size}")
    try:
        return IntegerMatMul(weight=weight, weight_zero_point=w_zero.astype(np.int64),
                             input_zero_point=current.zero_point, input_dtype=current.qtype,
                             geometry=geometry, name=node.name or node.output[0])
    except (TypeError, ValueError) as exc:
        raise OnnxImportError(f"{_describe(node)}: {exc}") from None


def _max_pool(g, node, current, shape):
    if len(node.output) > 1 and node.output[1]:
        raise OnnxImportError(f"{_describe(node)}: the Indices output is not supported")
    if g.attr(node, "ceil_mode", 0):
        raise OnnxImportError(f"{_describe(node)}: ceil_mode=1 is not supported")
    if g.attr(node, "storage_order", 0):
        raise OnnxImportError(f"{_describe(node)}: storage_order=1 is not supported")
    kernel = list(g.attr(node, "kernel_shape", []))
    if len(kernel) != 2:
        raise OnnxImportError(f"{_describe(node)}: only 2-D pooling is supported")
    try:
        return MaxPool2d(params=current, kernel=kernel, name=node.name or node.output[0],
                         **_window_arguments(g, node, shape, kernel))
    except (TypeError, ValueError) as exc:
        raise OnnxImportError(f"{_describe(node)}: {exc}") from None


# -- graph plumbing: nodes that change no value the chip computes ----------------------------

def _reshaped(g, node, shape):
    """The non-batch shape after a layout-only node on the chain's tensor, or None if
    ``node`` is not one.  Activations travel as [batch, features] in C order, so any node
    that keeps the batch dimension first and the values in order changes nothing."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return None
    if op == "Identity":
        return shape
    if op == "Dropout":
        if len(node.output) > 1 and node.output[1] and g.consumers.get(node.output[1]):
            raise OnnxImportError(f"{_describe(node)}: its mask output is not supported")
        if len(node.input) > 2 and node.input[2]:
            training = g.const(node.input[2], node, "training_mode")
            if bool(np.asarray(training).reshape(())):
                raise OnnxImportError(f"{_describe(node)}: training_mode must be false")
        return shape
    size = int(np.prod(shape))
    if op == "Flatten":
        axis = int(g.attr(node, "axis", 1))
        if axis < 0:
            axis += len(shape) + 1
        if axis != 1:
            raise OnnxImportError(f"{_describe(node)}: only axis=1 (keeping the batch "
                                  f"dimension) is supported, not {axis}")
        return (size,)
    if op == "Reshape":
        target = [int(v) for v in g.const(node.input[1], node, "the shape").reshape(-1)]
        if g.attr(node, "allowzero", 0) and 0 in target:
            raise OnnxImportError(f"{_describe(node)}: allowzero with a zero dimension is not "
                                  "supported")
        if not target or target[0] not in (0, -1):
            raise OnnxImportError(f"{_describe(node)}: the shape {target} must keep the batch "
                                  "dimension first (0, or -1 with every other dimension given)")
        rest = [shape[i] if v == 0 and i < len(shape) else v
                for i, v in enumerate(target[1:])]
        if target[0] == -1 and -1 in rest:
            raise OnnxImportError(f"{_describe(node)}: the shape {target} does not keep the "
                                  "batch dimension")
        if rest.count(-1) == 1:
            known = int(np.prod([v for v in rest if v != -1]))
            if known == 0 or size % known:
                raise OnnxImportError(f"{_describe(node)}: cannot reshape {list(shape)} to "
                                      f"{target}")
            rest[rest.index(-1)] = size // known
        if rest.count(-1) > 1 or int(np.prod(rest)) != size:
            raise OnnxImportError(f"{_describe(node)}: cannot reshape [batch, "
                                  f"{', '.join(map(str, shape))}] to {target} keeping the batch")
        return tuple(rest)
    if op in ("Squeeze", "Unsqueeze"):
        if len(node.input) > 1 and node.input[1]:
            axes = g.const(node.input[1], node, "the axes").reshape(-1).tolist()
        else:
            axes = g.attr(node, "axes", None)
        if not axes:
            raise OnnxImportError(f"{_describe(node)}: needs explicit axes")
        rank = len(shape) + 1 + (len(axes) if op == "Unsqueeze" else 0)
        axes = sorted(int(a) % rank for a in axes)
        if 0 in axes:
            raise OnnxImportError(f"{_describe(node)}: cannot {op.lower()} the batch dimension")
        dims = [None, *shape]
        if op == "Squeeze":
            if any(dims[a] != 1 for a in axes):
                raise OnnxImportError(f"{_describe(node)}: squeezes a dimension that is not 1")
            return tuple(d for i, d in enumerate(dims) if i not in axes)[1:]
        for a in axes:
            dims.insert(a, 1)
        return tuple(dims[1:])
    if op == "Transpose":
        perm = g.attr(node, "perm", None)
        dims = [None, *shape]
        perm = list(range(len(dims)))[::-1] if perm is None else list(perm)
        moved = [p for p in perm if p != 0 and dims[p] != 1]
        if perm[0] != 0 or moved != sorted(moved):
            raise OnnxImportError(f"{_describe(node)}: a Transpose that reorders values "
                                  "is not supported")
        return tuple(dims[p] for p in perm[1:])
    return None


def _skip_plumbing(g, tensor, shape):
    """Follow layout-only nodes from ``tensor``; the tensor and shape they end at."""
    while tensor not in g.outputs:
        users = g.consumers.get(tensor, [])
        if len(users) != 1:
            break
        new = _reshaped(g, users[0], shape)
        if new is None:
            break
        g.used.add(id(users[0]))
        tensor, shape = users[0].output[0], tuple(new)
    return tensor, shape


def _elem_name(onnx, elem_type):
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name if elem_type else "unknown"


def load_onnx(model, *, name=None):
    """A :class:`~driver.layers.Network` from a quantized ONNX model.

    Parameters
    ----------
    model : str, os.PathLike, bytes or onnx.ModelProto
    name : str, optional

    Raises
    ------
    TypeError
        If ``model`` is none of these.
    OSError
        If the file cannot be read (FileNotFoundError, IsADirectoryError, ...).
    OnnxImportError
        If the file or bytes are not an ONNX model, the model is not quantized, a node is
        not supported (naming the node and its op type) or a layer cannot run exactly on
        the chip.
    """
    onnx, _ = _onnx()
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {name!r}")
    model, source = _read_model(onnx, model)
    if isinstance(source, str) and source != "the ModelProto":
        name = name or os.path.basename(source)
    if not model.HasField("graph") or not model.graph.node:
        raise OnnxImportError(f"{source} is not an ONNX model (it holds no graph)"
                              if source != "the bytes" else
                              "the bytes are not an ONNX model (they hold no graph)")
    _check_quantized(model)
    g = _Graph(model)
    onnx_types = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT8: "int8"}
    input_type = g.input.type.tensor_type.elem_type
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in g.input.type.tensor_type.shape.dim]
    if len(dims) < 2 or None in dims[1:]:
        raise OnnxImportError(f"the model input {g.input.name!r} must be [batch, features] or "
                              f"[batch, channels, height, width] with known sizes after the "
                              f"batch, not {dims}")
    batch, shape = dims[0] or None, tuple(dims[1:])
    input_shape = shape
    tensor = g.input.name
    network_input = current = None
    float_input = input_type not in onnx_types
    if float_input:
        if input_type != onnx.TensorProto.FLOAT:
            raise OnnxImportError(f"the model input {g.input.name!r} is "
                                  f"{_elem_name(onnx, input_type)}; the driver takes float32 "
                                  "or uint8/int8 inputs")
        tensor, shape = _skip_plumbing(g, tensor, shape)
        node = g.consumer(tensor, "the model input")
        if node.op_type != "QuantizeLinear":
            raise OnnxImportError(f"{_describe(node)}: a float model input must be quantized "
                                  "by QuantizeLinear first")
        network_input = current = g.qparams(node, node.input[1],
                                            node.input[2] if len(node.input) > 2 else "", "input")
        g.used.add(id(node))
        tensor = node.output[0]

    layers, output, float_output = [], None, False
    while True:
        tensor, shape = _skip_plumbing(g, tensor, shape)
        if tensor in g.outputs:
            break
        if layers and layers[-1].output is None:
            node = g.consumer(tensor, _describe_layer(layers[-1]))
            raise OnnxImportError(f"{_describe(node)} after {layers[-1].name!r}: an int32 "
                                  "accumulator output must be the model's output")
        node = g.consumer(tensor, "the previous layer" if layers else "the model input")
        chain = [node]
        if current is None:
            current = _integer_input(g, node, onnx_types[input_type])
        if node.op_type == "QGemm" and node.domain == _MS_DOMAIN:
            _check_features(node, shape)
            layer = _qgemm(g, node, current)
        elif node.op_type == "QLinearMatMul":
            _check_features(node, shape)
            layer = _qlinear_matmul(g, node, current)
        elif node.op_type == "QLinearConv":
            layer = _qlinear_conv(g, node, current, shape)
        elif node.op_type in ("MatMulInteger", "ConvInteger"):
            layer = _integer_matmul(g, node, current, shape)
        elif node.op_type == "MaxPool":
            layer = _max_pool(g, node, current, shape)
        elif node.op_type == "QLinearAdd" and node.domain == _MS_DOMAIN and layers:
            _check_features(node, shape)
            layer = _qlinear_add(g, node, current, shape[0])
        elif node.op_type == "DequantizeLinear":
            params = g.qparams(node, node.input[1],
                               node.input[2] if len(node.input) > 2 else "", "input")
            _check_input_params(node, current, params)
            g.used.add(id(node))
            dq_output, shape = _skip_plumbing(g, node.output[0], shape)
            if dq_output in g.outputs:
                output, float_output, tensor = params, True, dq_output
                break
            after = g.consumer(dq_output, _describe(node))
            if after.op_type in ("Gemm", "MatMul", "Conv"):
                layer, chain = _qdq_linear(g, after, current, shape)
            elif after.op_type == "Add" and layers:
                _check_features(after, shape)
                layer, chain = _qdq_add(g, after, current, shape[0], dq_output)
            elif after.op_type == "MaxPool":
                layer, chain = _qdq_pool(g, after, current, shape)
            elif after.op_type == "QuantizeLinear":
                # DQ -> (layout) -> Q with the same parameters changes no value.
                _check_input_params(after, current, g.qparams(
                    after, after.input[1], after.input[2] if len(after.input) > 2 else "",
                    "output"))
                g.used.add(id(after))
                tensor = after.output[0]
                continue
            else:
                raise OnnxImportError(f"{_describe(after)} is not supported here")
        else:
            raise OnnxImportError(f"{_describe(node)} is not supported")
        g.used.update(id(n) for n in chain)
        layers.append(layer)
        current, shape = layer.output, tuple(layer.output_shape)
        tensor = chain[-1].output[0]
    for node in g.nodes:
        if id(node) not in g.used and node.op_type != "Constant":
            raise OnnxImportError(f"{_describe(node)} is not supported (it is not on the chain "
                                  "from the model input to its output)")
    if not any(not isinstance(layer, MaxPool2d) for layer in layers):
        raise OnnxImportError("the model has no quantized linear or convolution layer")
    return Network(layers=layers, input=network_input, output=output or layers[-1].output,
                   float_input=float_input, float_output=float_output, input_shape=input_shape,
                   output_shape=shape, batch=batch, name=name or model.graph.name or "onnx")


def _read_model(onnx, model):
    """``(ModelProto, what it was read from)`` for a path, bytes or a ModelProto."""
    from google.protobuf.message import Error as ProtobufError
    if isinstance(model, onnx.ModelProto):
        return model, "the ModelProto"
    if isinstance(model, (str, os.PathLike)):
        source = os.fspath(model)
        read = onnx.load           # OSError (FileNotFoundError, IsADirectoryError) names the path
    elif isinstance(model, (bytes, bytearray, memoryview)):
        source, model, read = "the bytes", bytes(model), onnx.load_from_string
    else:
        given = repr(model) if model is None or isinstance(model, (int, float)) \
            else type(model).__name__
        raise TypeError(f"model must be a path, bytes or an onnx.ModelProto, not {given}")
    try:
        return read(model), source
    except ProtobufError as exc:
        subject = "the bytes are" if source == "the bytes" else f"{source} is"
        raise OnnxImportError(f"{subject} not an ONNX model (protobuf: {exc})") from None


#: Op types that only a quantized model has.
_QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "QGemm", "QLinearMatMul", "QLinearConv",
                  "QLinearAdd", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear")


def _check_quantized(model):
    if not any(node.op_type in _QUANTIZED_OPS for node in model.graph.node):
        ops = sorted({node.op_type for node in model.graph.node})
        raise OnnxImportError("the model is not quantized: it has no QuantizeLinear, "
                              f"QLinear* or *Integer node (only {', '.join(ops)}); quantize "
                              "it first (onnxruntime.quantization.quantize_static)")


def _describe_layer(layer):
    return f"layer {layer.name!r}"


def _integer_input(g, node, dtype):
    """The quantization of an integer model input, from the first node that reads it."""
    if node.op_type in ("QGemm", "QLinearMatMul", "QLinearConv"):
        return g.qparams(node, node.input[1], node.input[2], "input")
    if node.op_type in ("MatMulInteger", "ConvInteger"):
        zero = (int(g.const(node.input[2], node, "the input zero point").reshape(()))
                if len(node.input) > 2 and node.input[2] else 0)
        return QuantParams(scale=1.0, zero_point=zero, dtype=dtype, what=_describe(node))
    raise OnnxImportError(f"{_describe(node)}: an integer model input must feed a quantized "
                          "layer (QGemm, QLinearMatMul, QLinearConv, MatMulInteger or "
                          "ConvInteger)")


def _qdq_pool(g, node, current, shape):
    """DQ -> MaxPool -> Q with the input's parameters: the pool on the quantized values."""
    layer = _max_pool(g, node, current, shape)
    quantize = g.consumer(node.output[0], _describe(node))
    if quantize.op_type != "QuantizeLinear":
        raise OnnxImportError(f"{_describe(quantize)} after {_describe(node)} is not supported")
    params = g.qparams(quantize, quantize.input[1],
                       quantize.input[2] if len(quantize.input) > 2 else "", "output")
    if params != current:
        raise OnnxImportError(f"{_describe(quantize)}: a MaxPool must keep its input's "
                              f"quantization {current}, not {params}")
    return layer, [node, quantize]

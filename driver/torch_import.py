"""Layers and networks from converted PyTorch quantized models.

The arithmetic follows PyTorch's ``qnnpack`` engine: the float bias is quantized by
PyTorch itself with scale ``weight_scale * input_scale``, and the effective scale is
``(weight_scale * input_scale) * (1 / output_scale)`` in float32.
"""

import operator
import os
import warnings

import numpy as np

from .layers import (
    ColumnTable,
    MaxPool2d,
    Network,
    QuantConv2d,
    QuantLinear,
    QuantParams,
    _real_array,
)
from .quant import Activation, QuantizationError, QuantType

__all__ = ["from_torch", "linear_from_torch", "conv_from_torch", "check_engine"]


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a declared extra
        raise ImportError("PyTorch is needed to import PyTorch models: "
                          "pip install 'systolic-npu[frameworks]'") from exc
    return torch


def _quantize_bias(torch, weight, bias, input_scale):
    """Quantize a float bias to int32 exactly as PyTorch's qnnpack Linear does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized-tensor creation is deprecated, not gone
        if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scales = weight.q_per_channel_scales() * input_scale
            zeros = torch.zeros(scales.shape, dtype=torch.int32)
            q = torch.quantize_per_channel(bias.detach(), scales, zeros, 0, torch.qint32)
        else:
            q = torch.quantize_per_tensor(bias.detach(), weight.q_scale() * input_scale, 0,
                                          torch.qint32)
    return q.int_repr().numpy().astype(np.int64)


def check_engine(torch, what="the model"):
    """Raise unless PyTorch's quantized engine is qnnpack, the arithmetic the chip matches.

    The ``x86`` and ``fbgemm`` engines (PyTorch's default on x86) saturate pairs of
    products to 16 bits, which exact int32 accumulation does not reproduce.
    """
    engine = torch.backends.quantized.engine
    if engine != "qnnpack":
        raise QuantizationError(
            f"{what}: PyTorch's quantized engine is {engine!r}, whose kernels saturate pairs "
            "of products to 16 bits; the chip computes qnnpack's exact arithmetic. Set "
            "torch.backends.quantized.engine = 'qnnpack' before preparing and converting the "
            "model (qconfig 'qnnpack'), then import it")


def _input_quantization(name, input_scale, input_zero_point):
    """``(scale, zero_point)`` of a module's input, checked: a positive finite number and
    an integer (the range is checked with the input type)."""
    if isinstance(input_scale, bool) or not isinstance(
            input_scale, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: input_scale must be a number, not {input_scale!r}")
    if not np.isfinite(input_scale) or input_scale <= 0:
        raise ValueError(f"{name}: input_scale must be positive and finite, not {input_scale!r}")
    if isinstance(input_zero_point, bool) or not isinstance(input_zero_point, (int, np.integer)):
        raise TypeError(f"{name}: input_zero_point must be an integer, not {input_zero_point!r}")
    return float(input_scale), int(input_zero_point)


def _input_shape(input_shape):
    """``input_shape`` as a tuple of positive ints, or None."""
    if input_shape is None:
        return None
    message = f"input_shape must be a tuple of positive ints, not {input_shape!r}"
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__") or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in input_shape):
        raise TypeError(message)
    shape = tuple(int(d) for d in input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(message)
    return shape


def _probe_rows(rng, weight, zero_point, count):
    """Input rows that drive a column's sums to their extremes: 255 where the column's
    weights are positive (or negative), 0 elsewhere, so any 16-bit saturation of pairs of
    products shows; plus random rows (fbgemm's other roundings differ on a few outputs in
    a thousand) and the input zero point everywhere."""
    centred = weight.reshape(weight.shape[0], -1).astype(np.int64)
    columns = rng.permutation(centred.shape[0])[:count]
    rows = [np.where(centred[j] > 0, 255, 0) for j in columns]
    rows += [np.where(centred[j] < 0, 255, 0) for j in columns]
    rows += list(rng.integers(0, 256, size=(256, centred.shape[1])))
    rows += [np.full(centred.shape[1], 255), np.full(centred.shape[1], zero_point)]
    return np.asarray(rows).astype(np.uint8)


def _check_module_arithmetic(torch, module, layer, x_q):
    """Raise unless PyTorch's own kernels give the layer's outputs on ``x_q``: a module
    packed for the x86/fbgemm engines keeps their arithmetic whatever the engine is now."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xt = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x_q), layer.input.scale,
                                                     layer.input.zero_point)
        if isinstance(layer, QuantConv2d):
            xt = xt.reshape(len(x_q), *layer.input_shape)
        framework = module(xt).int_repr().numpy().reshape(len(x_q), -1)
    differ = np.count_nonzero(framework != layer.reference(x_q))
    if differ:
        raise QuantizationError(
            f"{layer.name}: PyTorch's kernels differ from exact int32 arithmetic on {differ} "
            f"of {framework.size} probe outputs; the module was packed for the x86/fbgemm "
            "engine (16-bit saturation of pairs of products). Convert it with "
            "torch.backends.quantized.engine = 'qnnpack' and the 'qnnpack' qconfig")


def _weight_quantization(torch, weight, name):
    """Scales and zero points of a qint8 weight, per tensor or per output channel."""
    if weight.dtype != torch.qint8:
        raise QuantizationError(f"{name}: weights must be qint8, not {weight.dtype}")
    scheme = weight.qscheme()
    if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return np.float32(weight.q_scale()), int(weight.q_zero_point())
    if scheme in (torch.per_channel_affine, torch.per_channel_symmetric):
        if weight.q_per_channel_axis() != 0:
            raise QuantizationError(f"{name}: per-channel weights must be quantized along the "
                                    f"output axis 0, not {weight.q_per_channel_axis()}")
        return (weight.q_per_channel_scales().to(torch.float32).numpy(),
                weight.q_per_channel_zero_points().numpy().astype(np.int64))
    raise QuantizationError(f"{name}: weight quantization scheme {scheme} is not supported")


def conv_from_torch(module, *, input_shape, input_scale, input_zero_point, name=None,
                    activation=None):
    """A :class:`~driver.layers.QuantConv2d` from a converted PyTorch quantized Conv2d.

    Parameters
    ----------
    module : torch.ao.nn.quantized.Conv2d or torch.ao.nn.intrinsic.quantized.ConvReLU2d
    input_shape : (channels, height, width)
    input_scale, input_zero_point : float, int
        Quantization of the module's (quint8) input.
    name : str, optional
    activation : Activation, optional
        A fused activation (default: ReLU for ``ConvReLU2d``).

    Raises
    ------
    TypeError
        If ``module`` is not a static quantized Conv2d.
    QuantizationError
        If the chip cannot reproduce the module exactly (padding modes other than zeros).
    """
    torch = _torch()
    from torch.ao.nn.intrinsic.quantized import ConvReLU2d
    from torch.ao.nn.quantized import Conv2d

    name = name or type(module).__name__
    if not isinstance(module, Conv2d):
        raise TypeError(f"{name}: expected torch.ao.nn.quantized.Conv2d or ConvReLU2d, "
                        f"not {type(module).__name__}")
    input_scale, input_zero_point = _input_quantization(name, input_scale, input_zero_point)
    input_shape = _input_shape(input_shape)
    check_engine(torch, name)
    if module.padding_mode != "zeros":
        raise QuantizationError(f"{name}: padding_mode {module.padding_mode!r} is not "
                                "supported (only 'zeros')")
    if isinstance(module.padding, str):
        raise QuantizationError(f"{name}: padding {module.padding!r} is not supported; give "
                                "the padding as numbers")
    if activation is None:
        activation = Activation.RELU if isinstance(module, ConvReLU2d) else Activation.NONE
    weight = module.weight()
    scales, zeros = _weight_quantization(torch, weight, name)
    bias = module.bias()
    bias_q = None if bias is None else _quantize_bias(torch, weight, bias, float(input_scale))
    pad_h, pad_w = module.padding
    layer = QuantConv2d(weight=weight.int_repr().numpy(), input_shape=tuple(input_shape),
                       stride=module.stride, padding=(pad_h, pad_w, pad_h, pad_w),
                       dilation=module.dilation, groups=module.groups,
                       weight_scale=scales, weight_zero_point=zeros, bias=bias_q,
                       input_scale=input_scale, input_zero_point=int(input_zero_point),
                       input_dtype="uint8", output_scale=float(module.scale),
                        output_zero_point=int(module.zero_point), output_dtype="uint8",
                        activation=activation, scale_order="torch", name=name)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, layer.in_features))
    images = np.concatenate([images, np.full((1, layer.in_features), 255)]).astype(np.uint8)
    _check_module_arithmetic(torch, _with_activation(torch, module, activation), layer, images)
    return layer


def _with_activation(torch, module, activation):
    """The module followed by the ReLU fused into the layer (if it is not its own)."""
    if activation is not Activation.RELU or "ReLU" in type(module).__name__:
        return module
    return lambda x: torch.relu(module(x))


def linear_from_torch(module, *, input_scale, input_zero_point, input_dtype="uint8", name=None,
                      activation=None):
    """A :class:`~driver.layers.QuantLinear` from a converted PyTorch quantized Linear module.

    Parameters
    ----------
    module : torch.ao.nn.quantized.Linear or torch.ao.nn.intrinsic.quantized.LinearReLU
    input_scale, input_zero_point : float, int
        Quantization of the module's input (a quantized module does not carry it).
    input_dtype : str
        ``"uint8"`` (``torch.quint8``), the only type PyTorch's qnnpack Linear takes.
    name : str, optional
    activation : Activation, optional
        A fused activation after the module (default: ReLU for ``LinearReLU``).

    Raises
    ------
    TypeError
        If ``module`` is not a static quantized Linear, ``input_scale`` is not a number or
        ``input_zero_point`` not an integer.
    ValueError
        If ``input_scale`` is not positive and finite or ``input_zero_point`` not in 0..255.
    QuantizationError
        If the chip cannot reproduce the module exactly.
    """
    torch = _torch()
    from torch.ao.nn.intrinsic.quantized import LinearReLU
    from torch.ao.nn.quantized import Linear
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    name = name or type(module).__name__
    if isinstance(module, DynamicLinear):
        raise TypeError(f"{name}: a dynamic quantized Linear has float inputs and outputs; "
                        "convert the model with static quantization")
    if not isinstance(module, Linear):
        raise TypeError(f"{name}: expected torch.ao.nn.quantized.Linear or "
                        f"torch.ao.nn.intrinsic.quantized.LinearReLU, not {type(module).__name__}")
    input_scale, input_zero_point = _input_quantization(name, input_scale, input_zero_point)
    if QuantType.of(input_dtype, f"{name}: input dtype") is not QuantType.UINT8:
        raise QuantizationError(f"{name}: PyTorch runs int8 (qint8) activations through "
                                "XNNPACK, whose arithmetic the driver does not reproduce; "
                                "quantize activations as quint8")
    if activation is None:
        activation = Activation.RELU if isinstance(module, LinearReLU) else Activation.NONE

    check_engine(torch, name)
    weight = module.weight()
    scales, zeros = _weight_quantization(torch, weight, name)
    bias = module.bias()
    bias_q = None if bias is None else _quantize_bias(torch, weight, bias, float(input_scale))
    layer = QuantLinear(weight=weight.int_repr().numpy(), weight_scale=scales,
                        weight_zero_point=zeros, bias=bias_q, input_scale=input_scale,
                        input_zero_point=int(input_zero_point), input_dtype="uint8",
                        output_scale=float(module.scale),
                        output_zero_point=int(module.zero_point), output_dtype="uint8",
                        activation=activation, scale_order="torch", name=name)
    probe = _probe_rows(np.random.default_rng(0), layer.weight, layer.input.zero_point, 32)
    _check_module_arithmetic(torch, _with_activation(torch, module, activation), layer, probe)
    return layer


class TorchNetwork(Network):
    """A :class:`Network` whose float input is quantized by PyTorch itself
    (``quantize_per_tensor``: NaN becomes the type's maximum, where onnxruntime gives
    the minimum)."""

    def quantize(self, x):
        torch = _torch()
        x = _real_array(x, "x", "iuf").astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = torch.quantize_per_tensor(torch.as_tensor(x), self.input.scale,
                                          self.input.zero_point, torch.quint8)
        return q.int_repr().numpy()


class Pt2eNetwork(Network):
    """A :class:`Network` from a PT2E graph, whose float input is quantized by the graph's
    own ``quantized_decomposed.quantize_per_tensor`` op."""

    def quantize(self, x):
        torch = _torch()
        try:
            import torch.ao.quantization.fx._decomposed  # noqa: F401 - registers the op
        except ImportError:  # pragma: no cover - registered by torchao instead
            pass
        x = _real_array(x, "x", "iuf").astype(np.float32)
        params = self.input
        dtype = torch.int8 if params.qtype.signed else torch.uint8
        q = torch.ops.quantized_decomposed.quantize_per_tensor(
            torch.as_tensor(x), params.scale, params.zero_point, params.qtype.min,
            params.qtype.max, dtype)
        return q.numpy()



def _is_relu(torch, node, modules):
    if node.op == "call_module":
        return type(modules[node.target]) is torch.nn.ReLU
    if node.op == "call_function":
        return node.target in (torch.relu, torch.nn.functional.relu, torch.relu_)
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _is_passthrough(torch, node, modules):
    if node.op == "call_module":
        return isinstance(modules[node.target], (torch.nn.Identity, torch.nn.Dropout))
    return False


def _is_dequantize(torch, node, modules):
    from torch.ao.nn.quantized import DeQuantize
    if node.op == "call_module":
        return isinstance(modules[node.target], DeQuantize)
    if node.op == "call_function":
        return node.target is torch.dequantize
    return node.op == "call_method" and node.target == "dequantize"


def _arguments(node, attrs, names):
    """Positional and keyword arguments of an FX node by name (constants resolved)."""
    values = dict(zip(names, node.args, strict=False))
    values.update(node.kwargs)
    return {k: attrs.get(v.name, v) if hasattr(v, "name") else v for k, v in values.items()}


def _flatten_start(torch, node, modules, attrs):
    """The start dimension if ``node`` flattens, else None."""
    if node.op == "call_module" and isinstance(modules[node.target], torch.nn.Flatten):
        m = modules[node.target]
        if m.end_dim != -1:
            raise TypeError(f"{node.name}: Flatten must flatten to the last dimension")
        return m.start_dim
    if (node.op == "call_function" and node.target is torch.flatten) or (
            node.op == "call_method" and node.target == "flatten"):
        args = _arguments(node, attrs, ["input", "start_dim", "end_dim"])
        if args.get("end_dim", -1) != -1:
            raise TypeError(f"{node.name}: flatten must flatten to the last dimension")
        return args.get("start_dim", 0)
    return None


def _max_pool_arguments(torch, node, modules, attrs):
    """MaxPool2d arguments if ``node`` pools, else None."""
    if node.op == "call_module" and isinstance(modules[node.target], torch.nn.MaxPool2d):
        m = modules[node.target]
        args = dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding,
                    dilation=m.dilation, ceil_mode=m.ceil_mode, return_indices=m.return_indices)
    elif node.op == "call_function" and node.target in (torch.nn.functional.max_pool2d,
                                                        torch.max_pool2d):
        args = _arguments(node, attrs, ["input", "kernel_size", "stride", "padding", "dilation",
                                        "ceil_mode", "return_indices"])
    else:
        return None
    if args.get("ceil_mode") or args.get("return_indices"):
        raise TypeError(f"{node.name}: max pooling with ceil_mode or return_indices is not "
                        "supported")
    stride = args.get("stride")
    return dict(kernel=args["kernel_size"], stride=None if stride in (None, []) else stride,
                padding=args.get("padding", 0), dilation=args.get("dilation", 1))


def _quantize_params(torch, node, modules, attrs):
    """QuantParams if ``node`` quantizes a float tensor, else None."""
    from torch.ao.nn.quantized import Quantize
    if node.op == "call_module" and isinstance(modules[node.target], Quantize):
        m = modules[node.target]
        scale, zero, dtype = float(m.scale), int(m.zero_point), m.dtype
    elif node.op == "call_function" and node.target is torch.quantize_per_tensor:
        args = [attrs.get(a.name, a) if hasattr(a, "name") else a for a in node.args]
        scale, zero, dtype = float(args[1]), int(args[2]), args[3]
    else:
        return None
    if dtype != torch.quint8:
        raise QuantizationError(f"{node.name}: the model quantizes as {dtype}; "
                                "PyTorch's qnnpack kernels take quint8")
    return QuantParams(scale=scale, zero_point=zero, dtype="uint8", what=node.name)


def _requantize_table(torch, current, output, relu, features, name):
    """``quantize(relu?(dequantize(x)))`` for every uint8 value, computed by PyTorch itself:
    how FX converts a float ``torch.relu`` between quantized layers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch._make_per_tensor_quantized_tensor(torch.arange(256, dtype=torch.uint8),
                                                    current.scale, current.zero_point)
        real = q.dequantize()
        if relu:
            real = torch.relu(real)
        table = torch.quantize_per_tensor(real, output.scale, output.zero_point,
                                          torch.quint8).int_repr().numpy()
    return ColumnTable(table=np.repeat(table[None, :], features, axis=0), input=current,
                       output=output, name=name)


def from_torch(model, *, input_shape=None, name=None):
    """A :class:`Network` from a converted PyTorch quantized model.

    The model is a chain: a ``QuantStub`` (converted to ``Quantize``), quantized
    ``Linear``/``LinearReLU`` and ``Conv2d``/``ConvReLU2d`` modules, ReLU (fused into the
    layer before it; a float ``torch.relu`` that FX leaves between ``dequantize`` and
    ``quantize`` becomes a host table computed by PyTorch), max pooling and flattening
    (on the host), ``Identity``/``Dropout``, and a ``DeQuantStub``.  Each layer's input
    scale and zero point come from what feeds it.  Eager-mode and FX-converted models
    both work; PT2E models go through :func:`driver.pt2e_import.from_pt2e`.

    Parameters
    ----------
    model : torch.nn.Module
    input_shape : tuple of int, optional
        The input's dimensions after the batch; needed for a model with convolutions,
        ``(channels, height, width)``.
    name : str, optional

    Raises
    ------
    TypeError
        If ``model`` is not a ``torch.nn.Module``, is not quantized (float, prepared but
        not converted, dynamically quantized), cannot be traced by torch.fx, or a node is
        not one of the supported kinds, naming it; or ``input_shape`` is not ints.
    ValueError
        If ``input_shape`` has a dimension below 1.
    QuantizationError
        If a layer cannot run exactly on the chip, or the quantized engine is not qnnpack.
    """
    torch = _torch()
    from torch.ao.nn.quantized import Conv2d, Linear
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.fx import GraphModule, symbolic_trace

    if not isinstance(model, torch.nn.Module):
        hint = " (load it with torch.load first)" if isinstance(model, (str, os.PathLike)) else ""
        raise TypeError(f"model must be a torch.nn.Module, not {model!r}{hint}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {name!r}")
    input_shape = _input_shape(input_shape)
    _check_converted(torch, model)
    if isinstance(model, GraphModule):
        graph_module = model
    else:
        try:
            graph_module = symbolic_trace(model)
        except Exception as exc:  # noqa: BLE001 - whatever stops the tracer, say so
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TypeError(f"the model {type(model).__name__} cannot be traced by torch.fx "
                            f"({first}); the driver reads the model's graph, so its forward "
                            "must not branch on tensor values") from exc
    if _is_pt2e(graph_module):
        return _from_pt2e(torch, graph_module, input_shape=input_shape,
                          name=name or type(model).__name__)
    if any(_pt2e_op(node) and _pt2e_op(node).startswith("aten.")
           for node in graph_module.graph.nodes):
        raise TypeError("the model is not quantized: an exported graph without quantize and "
                        "dequantize ops; quantize it with prepare_pt2e and convert_pt2e first")
    check_engine(torch, name or type(model).__name__)
    modules = dict(graph_module.named_modules())
    attrs, specs = {}, []
    network_input = current = None   # QuantParams of the tensor flowing down the chain
    shape = input_shape
    output, floating, float_relu = None, False, False
    for node in graph_module.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            if floating and float_relu:
                # relu(dequantize(q)) == dequantize(max(q, zero point)): a fused ReLU.
                _fuse_relu(specs, node)
            continue
        if node.op == "get_attr":
            attrs[node.name] = operator.attrgetter(node.target)(graph_module)
            continue
        params = _quantize_params(torch, node, modules, attrs)
        if params is not None:
            if network_input is None:
                network_input = current = params
            elif floating:
                features = None if shape is None else int(np.prod(shape))
                if features is None:
                    raise TypeError(f"{node.name}: pass input_shape to import a requantization")
                specs.append({"table": _requantize_table(torch, current, params, float_relu,
                                                         features, node.name)})
                current, floating, float_relu, output = params, False, False, None
            else:
                raise TypeError(f"{node.name}: the model quantizes an already quantized tensor")
            continue
        if floating:
            if _is_relu(torch, node, modules):
                float_relu = True
                continue
            if _is_passthrough(torch, node, modules):
                continue
            what = type(modules[node.target]).__name__ if node.op == "call_module" else node.target
            raise TypeError(f"{node.name}: unsupported float {node.op} {what!r} after "
                            "dequantize; the driver runs quantized chains")
        if node.op == "call_module" and isinstance(modules[node.target], DynamicLinear):
            raise TypeError(f"{node.target}: a dynamic quantized Linear has float inputs and "
                            "outputs; convert the model with static quantization")
        if node.op == "call_module" and type(modules[node.target]) in (
                torch.nn.Linear, torch.nn.Conv2d):
            raise TypeError(f"{node.target}: a float {type(modules[node.target]).__name__}; the "
                            "model is not quantized: prepare and convert it with "
                            "torch.ao.quantization (qconfig 'qnnpack') first")
        if node.op == "call_module" and isinstance(modules[node.target], Linear):
            if current is None:
                raise TypeError(f"{node.name}: a quantized Linear needs a QuantStub before it")
            module = modules[node.target]
            if shape is not None and shape != (module.in_features,):
                raise TypeError(f"{node.name}: a Linear takes [batch, {module.in_features}], not "
                                f"[batch, {', '.join(map(str, shape))}]; flatten it first")
            specs.append({"module": module, "input": current, "name": node.target,
                          "activation": None})
            current = QuantParams(scale=float(module.scale), zero_point=int(module.zero_point),
                                  what=node.name)
            shape = (module.out_features,)
        elif node.op == "call_module" and isinstance(modules[node.target], Conv2d):
            if current is None:
                raise TypeError(f"{node.name}: a quantized Conv2d needs a QuantStub before it")
            if shape is None or len(shape) != 3:
                raise TypeError(f"{node.name}: a Conv2d needs the input's (channels, height, "
                                "width): pass input_shape to from_torch")
            module = modules[node.target]
            spec = {"module": module, "input": current, "name": node.target,
                    "activation": None, "shape": shape}
            specs.append(spec)
            current = QuantParams(scale=float(module.scale), zero_point=int(module.zero_point),
                                  what=node.name)
            shape = _build(spec).output_shape
        elif _is_relu(torch, node, modules):
            _fuse_relu(specs, node)
        elif _is_dequantize(torch, node, modules):
            output, floating = current, True
        elif _is_passthrough(torch, node, modules):
            continue
        elif _flatten_start(torch, node, modules, attrs) is not None:
            if _flatten_start(torch, node, modules, attrs) != 1:
                raise TypeError(f"{node.name}: flatten must keep the batch dimension "
                                "(start_dim=1)")
            if shape is not None:
                shape = (int(np.prod(shape)),)
        elif (pool := _max_pool_arguments(torch, node, modules, attrs)) is not None:
            if current is None or shape is None or len(shape) != 3:
                raise TypeError(f"{node.name}: max pooling needs a quantized [batch, channels, "
                                "height, width] input (pass input_shape)")
            layer = MaxPool2d(params=current, input_shape=shape, name=node.name, **pool)
            specs.append({"table": layer})
            shape = layer.output_shape
        else:
            what = type(modules[node.target]).__name__ if node.op == "call_module" else node.target
            raise TypeError(f"{node.name}: unsupported {node.op} {what!r}; the driver runs "
                            "chains of quantized Linear, Conv2d, ReLU, max pooling and flatten")
    if not any("module" in s for s in specs):
        raise TypeError("the model has no quantized Linear or Conv2d layer")
    layers = [_build(s) for s in specs]
    return TorchNetwork(layers=layers, input=network_input, output=output,
                        input_shape=input_shape, float_output=output is not None,
                        name=name or type(model).__name__)


def _check_converted(torch, model):
    """Raise if ``model`` still holds observers or fake quantizers (prepared, not converted).

    Known by their base classes' names: torch.ao and torchao (PT2E) each have their own."""
    for path, module in model.named_modules():
        if any(cls.__name__ in ("ObserverBase", "FakeQuantizeBase")
               for cls in type(module).__mro__):
            raise TypeError(f"the model is prepared but not converted (it holds the observer "
                            f"{path!r}); convert it first (torch.ao.quantization.convert, or "
                            "convert_fx / convert_pt2e)")


def _fuse_relu(specs, node):
    """Fuse a ReLU into the layer before it; max pooling between them commutes with it."""
    for spec in reversed(specs):
        if "module" in spec:
            spec["activation"] = Activation.RELU
            return
        if not isinstance(spec["table"], MaxPool2d):
            break
    raise TypeError(f"{node.name}: a ReLU must follow a quantized Linear or Conv2d")


def _build(spec):
    if "table" in spec:
        return spec["table"]
    if "shape" in spec:
        return conv_from_torch(spec["module"], input_shape=spec["shape"],
                               input_scale=spec["input"].scale,
                               input_zero_point=spec["input"].zero_point, name=spec["name"],
                               activation=spec["activation"])
    return linear_from_torch(spec["module"], input_scale=spec["input"].scale,
                             input_zero_point=spec["input"].zero_point, name=spec["name"],
                             activation=spec["activation"])


# -- PT2E ------------------------------------------------------------------------------------

def _is_pt2e(graph_module):
    """Whether ``graph_module`` is a PT2E-converted graph (quantized_decomposed Q/DQ ops)."""
    return any(node.op == "call_function"
               and "quantized_decomposed" in str(getattr(node.target, "namespace", ""))
               for node in graph_module.graph.nodes)


def _pt2e_op(node):
    """``namespace.name`` of an aten or quantized_decomposed call, else None."""
    if node.op != "call_function" or not hasattr(node.target, "namespace"):
        return None
    return f"{node.target.namespace}.{node.target._schema.name.split('::')[-1]}"


def _pt2e_params(torch, node, values, what):
    """QuantParams of a per-tensor quantize/dequantize node's arguments."""
    _, scale, zero, qmin, qmax, dtype = (values(a) for a in node.args[:6])
    qtype = {torch.int8: "int8", torch.uint8: "uint8"}.get(dtype)
    if qtype is None:
        raise QuantizationError(f"{node.name}: {what} is quantized as {dtype}; the chip takes "
                                "int8 or uint8")
    params = QuantParams(scale=float(scale), zero_point=int(zero), dtype=qtype, what=node.name)
    if (int(qmin), int(qmax)) != (params.qtype.min, params.qtype.max):
        raise QuantizationError(f"{node.name}: {what} is quantized to {qmin}..{qmax}; the driver "
                                f"takes the full {qtype} range")
    return params


def _from_pt2e(torch, graph_module, *, input_shape, name):
    """A :class:`Network` from a PT2E graph (``prepare_pt2e``/``convert_pt2e``, static
    per-tensor or per-channel, e.g. torchao's XNNPACK quantizer).

    The graph computes each layer in float between dequantize and quantize; the chip runs
    it as the integer kernels do (int32 bias ``round(b / (s_x * s_w))``, one requantization),
    which differs from the float reference by one step on rare ties, as a QDQ ONNX model's
    float path does.
    """
    attrs = {}

    def values(arg):
        if hasattr(arg, "name") and arg.name in attrs:
            return attrs[arg.name]
        return arg

    weights, layers = {}, []
    network_input = current = output = pending = None
    shape = None if input_shape is None else tuple(int(d) for d in input_shape)
    floating = float_relu = False
    for node in graph_module.graph.nodes:
        op = _pt2e_op(node)
        if node.op == "placeholder":
            continue
        if node.op == "get_attr":
            attrs[node.name] = operator.attrgetter(node.target)(graph_module)
            continue
        if node.op == "call_module" and node.target == "_guards_fn":
            continue
        if node.op == "output":
            if pending is not None:
                raise TypeError(f"{pending['node'].name}: a float layer output must be quantized")
            if floating and float_relu:
                _pt2e_fuse_relu(layers, node)
            continue
        source = node.args[0] if node.args else None
        if op in ("quantized_decomposed.dequantize_per_channel",
                  "quantized_decomposed.dequantize_per_tensor") and getattr(
                      source, "op", None) == "get_attr":
            weights[node.name] = node
            continue
        if op == "quantized_decomposed.quantize_per_tensor":
            params = _pt2e_params(torch, node, values, "the activation")
            if network_input is None:
                network_input = current = params
                floating = False
            elif pending is not None:
                layers.append(_pt2e_layer(torch, pending, current, params, values))
                current, pending, floating, float_relu = params, None, False, False
                shape = tuple(layers[-1].output_shape)
            elif floating and not float_relu and params == current:
                floating = False      # dequantize -> layout -> quantize: nothing changes
            else:
                raise TypeError(f"{node.name}: a requantization without a layer is not "
                                "supported")
            continue
        if op == "quantized_decomposed.dequantize_per_tensor":
            params = _pt2e_params(torch, node, values, "the activation")
            if params != current:
                raise TypeError(f"{node.name}: dequantizes with {params}, the tensor is "
                                f"{current}")
            floating, output = True, params
            continue
        if op in ("aten.conv2d", "aten.linear"):
            if not floating or pending is not None:
                raise TypeError(f"{node.name}: {op} must read a dequantized activation")
            weight = weights.get(getattr(node.args[1], "name", None))
            if weight is None:
                raise TypeError(f"{node.name}: the weight must be a dequantized constant")
            if op == "aten.conv2d":
                if shape is None or len(shape) != 3:
                    raise TypeError(f"{node.name}: a conv2d needs the input's (channels, "
                                    "height, width): pass input_shape to from_torch")
                args = list(node.args) + [None] * (7 - len(node.args))
                conv = dict(stride=values(args[3]) or 1, padding=values(args[4]) or 0,
                            dilation=values(args[5]) or 1, groups=values(args[6]) or 1)
                if isinstance(conv["padding"], str):
                    raise QuantizationError(f"{node.name}: padding {conv['padding']!r} is not "
                                            "supported")
                pad = _pair_of(conv["padding"])
                conv["padding"] = (*pad, *pad)
            else:
                if shape is not None and len(shape) != 1:
                    raise TypeError(f"{node.name}: linear takes [batch, features]; flatten first")
                conv = None
            bias = values(node.args[2]) if len(node.args) > 2 else None
            pending = dict(node=node, weight=weight, bias=bias, conv=conv, shape=shape,
                           relu=False)
            continue
        if op in ("aten.relu", "aten.relu_"):
            if pending is not None:
                pending["relu"] = True
            elif floating:
                float_relu = True
            else:
                raise TypeError(f"{node.name}: a ReLU must follow a layer")
            continue
        if op == "aten.flatten":
            start = values(node.args[1]) if len(node.args) > 1 else 0
            if start != 1 or (len(node.args) > 2 and values(node.args[2]) != -1):
                raise TypeError(f"{node.name}: flatten must keep the batch dimension")
            if shape is not None:
                shape = (int(np.prod(shape)),)
            continue
        if op in ("aten.max_pool2d", "aten.max_pool2d_with_indices"):
            args = list(node.args) + [None] * (6 - len(node.args))
            if values(args[5]):
                raise TypeError(f"{node.name}: ceil_mode is not supported")
            if shape is None or len(shape) != 3:
                raise TypeError(f"{node.name}: max pooling needs input_shape")
            pool = MaxPool2d(params=current, input_shape=shape, kernel=values(args[1]),
                             stride=values(args[2]) or None,
                             padding=_pair_of(values(args[3]) or 0) * 2,
                             dilation=values(args[4]) or 1, name=node.name)
            layers.append(pool)
            shape = pool.output_shape
            continue
        if op in ("aten.dropout", "aten.clone", "aten.alias") or (
                node.op == "call_function" and node.target is operator.getitem
                and getattr(source, "name", None) and values(node.args[1]) == 0):
            continue
        raise TypeError(f"{node.name}: unsupported {node.op} {op or node.target!r} in a PT2E "
                        "graph; the driver runs chains of quantized linear, conv2d, relu, "
                        "max_pool2d and flatten")
    if not any(not isinstance(layer, MaxPool2d) for layer in layers):
        raise TypeError("the model has no quantized linear or conv2d layer")
    return Pt2eNetwork(layers=layers, input=network_input, output=output,
                       float_output=output is not None and floating,
                       input_shape=input_shape, name=name)


def _pair_of(value):
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    value = tuple(int(v) for v in value)
    return value * 2 if len(value) == 1 else value


def _pt2e_fuse_relu(layers, node):
    """Rebuild the last layer (before any max pooling) with a fused ReLU:
    ``relu(dequantize(q)) == dequantize(max(q, zero point))``."""
    for index in range(len(layers) - 1, -1, -1):
        if not isinstance(layers[index], MaxPool2d):
            kind, args = layers[index].pt2e_arguments
            layers[index] = kind(**{**args, "activation": "relu"})
            return
    raise TypeError(f"{node.name}: a ReLU must follow a layer")


def _pt2e_layer(torch, pending, current, output, values):
    """The QuantLinear or QuantConv2d of a float layer between dequantize and quantize."""
    node, dq = pending["node"], pending["weight"]
    q = values(dq.args[0])
    per_channel = "per_channel" in _pt2e_op(dq)
    if per_channel:
        scales = values(dq.args[1]).to(torch.float64)
        zeros = values(dq.args[2]).to(torch.int64).numpy()
        if int(values(dq.args[3])) != 0:
            raise QuantizationError(f"{node.name}: per-channel weights must be quantized along "
                                    "the output axis 0")
    else:
        scales = torch.tensor([float(values(dq.args[1]))], dtype=torch.float64)
        zeros = np.array([int(values(dq.args[2]))])
    if q.dtype != torch.int8:
        raise QuantizationError(f"{node.name}: weights must be int8, not {q.dtype}")
    bias = pending["bias"]
    bias_q = None
    if bias is not None:
        # The integer kernels' bias: round(b / (s_x * s_w)) to int32, ties to even.
        bias_scales = scales * current.scale
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bias_q = torch.quantize_per_channel(
                bias.detach().to(torch.float32), bias_scales.expand(bias.shape[0]).contiguous(),
                torch.zeros(bias.shape[0], dtype=torch.int64), 0,
                torch.qint32).int_repr().numpy().astype(np.int64)
    weight = q.numpy()
    common = dict(weight=weight, weight_scale=scales.to(torch.float32).numpy(),
                  weight_zero_point=zeros, bias=bias_q, input_scale=current.scale,
                  input_zero_point=current.zero_point, input_dtype=current.qtype,
                  output_scale=output.scale, output_zero_point=output.zero_point,
                  output_dtype=output.qtype, activation="relu" if pending["relu"] else "none",
                  scale_order="onnxruntime", name=node.name)
    if pending["conv"] is None:
        kind, args = QuantLinear, common
    else:
        kind, args = QuantConv2d, dict(input_shape=pending["shape"], **pending["conv"], **common)
    layer = kind(**args)
    layer.pt2e_arguments = (kind, args)    # to rebuild it with a ReLU found later
    return layer

"""Layers and networks from converted PyTorch quantized models.

The arithmetic follows PyTorch's ``qnnpack`` engine: the float bias is quantized by
PyTorch itself with scale ``weight_scale * input_scale``, and the effective scale is
``(weight_scale * input_scale) * (1 / output_scale)`` in float32.
"""

import operator
import warnings

import numpy as np

from .layers import Network, QuantLinear, QuantParams
from .quant import Activation, QuantizationError, QuantType

__all__ = ["from_torch", "linear_from_torch"]


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
        If ``module`` is not a static quantized Linear.
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
    if QuantType.of(input_dtype, f"{name}: input dtype") is not QuantType.UINT8:
        raise QuantizationError(f"{name}: PyTorch runs int8 (qint8) activations through "
                                "XNNPACK, whose arithmetic the driver does not reproduce; "
                                "quantize activations as quint8")
    if activation is None:
        activation = Activation.RELU if isinstance(module, LinearReLU) else Activation.NONE

    weight = module.weight()
    if weight.dtype != torch.qint8:
        raise QuantizationError(f"{name}: weights must be qint8, not {weight.dtype}")
    scheme = weight.qscheme()
    if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        scales = np.float32(weight.q_scale())
        zeros = int(weight.q_zero_point())
    elif scheme in (torch.per_channel_affine, torch.per_channel_symmetric):
        if weight.q_per_channel_axis() != 0:
            raise QuantizationError(f"{name}: per-channel weights must be quantized along the "
                                    f"output axis 0, not {weight.q_per_channel_axis()}")
        scales = weight.q_per_channel_scales().to(torch.float32).numpy()
        zeros = weight.q_per_channel_zero_points().numpy().astype(np.int64)
    else:
        raise QuantizationError(f"{name}: weight quantization scheme {scheme} is not supported")

    bias = module.bias()
    bias_q = None if bias is None else _quantize_bias(torch, weight, bias, float(input_scale))
    return QuantLinear(weight=weight.int_repr().numpy(), weight_scale=scales,
                       weight_zero_point=zeros, bias=bias_q, input_scale=input_scale,
                       input_zero_point=int(input_zero_point), input_dtype="uint8",
                       output_scale=float(module.scale),
                       output_zero_point=int(module.zero_point), output_dtype="uint8",
                       activation=activation, scale_order="torch", name=name)


class TorchNetwork(Network):
    """A :class:`Network` whose float input is quantized by PyTorch itself."""

    def quantize(self, x):
        torch = _torch()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = torch.quantize_per_tensor(torch.as_tensor(np.asarray(x, dtype=np.float32)),
                                          self.input.scale, self.input.zero_point, torch.quint8)
        return q.int_repr().numpy()


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
        raise QuantizationError(f"{node.name}: the model quantizes its input as {dtype}; "
                                "PyTorch's qnnpack Linear takes quint8")
    return QuantParams(scale=scale, zero_point=zero, dtype="uint8", what=node.name)


def from_torch(model, *, name=None):
    """A :class:`Network` from a converted PyTorch quantized model.

    The model is a chain: a ``QuantStub`` (converted to ``Quantize``), quantized
    ``Linear``/``LinearReLU`` modules, optional ``ReLU`` (fused into the layer before it),
    ``Identity``/``Dropout``, and a ``DeQuantStub``.  Each layer's input scale and zero
    point come from what feeds it.  Eager-mode and FX-converted models both work.

    Raises
    ------
    TypeError
        If a node is not one of the supported kinds, naming it.
    QuantizationError
        If a layer cannot run exactly on the chip.
    """
    torch = _torch()
    from torch.ao.nn.quantized import Linear
    from torch.fx import GraphModule, symbolic_trace

    graph_module = model if isinstance(model, GraphModule) else symbolic_trace(model)
    modules = dict(graph_module.named_modules())
    attrs, specs = {}, []
    network_input = current = None   # QuantParams of the tensor flowing down the chain
    output = None
    for node in graph_module.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.op == "get_attr":
            attrs[node.name] = operator.attrgetter(node.target)(graph_module)
            continue
        params = _quantize_params(torch, node, modules, attrs)
        if params is not None:
            if network_input is not None:
                raise TypeError(f"{node.name}: the model quantizes more than once; "
                                "only one chain from QuantStub to DeQuantStub is supported")
            network_input = current = params
        elif node.op == "call_module" and isinstance(modules[node.target], Linear):
            if current is None:
                raise TypeError(f"{node.name}: a quantized Linear needs a QuantStub before it")
            specs.append({"module": modules[node.target], "input": current, "name": node.target,
                          "activation": None})
            current = QuantParams(scale=float(modules[node.target].scale),
                                  zero_point=int(modules[node.target].zero_point), what=node.name)
        elif _is_relu(torch, node, modules):
            if not specs:
                raise TypeError(f"{node.name}: a ReLU must follow a quantized Linear")
            specs[-1]["activation"] = Activation.RELU
        elif _is_dequantize(torch, node, modules):
            output = current
        elif _is_passthrough(torch, node, modules):
            continue
        else:
            what = type(modules[node.target]).__name__ if node.op == "call_module" else node.target
            raise TypeError(f"{node.name}: unsupported {node.op} {what!r}; the driver runs "
                            "chains of quantized Linear and ReLU layers")
    if not specs:
        raise TypeError("the model has no quantized Linear layer")
    layers = [linear_from_torch(s["module"], input_scale=s["input"].scale,
                                input_zero_point=s["input"].zero_point, name=s["name"],
                                activation=s["activation"]) for s in specs]
    return TorchNetwork(layers=layers, input=network_input, output=output,
                        name=name or type(model).__name__)

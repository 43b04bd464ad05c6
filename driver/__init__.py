"""The systolic-npu driver: quantized Linear and Conv2d layers from NumPy, PyTorch and ONNX
on the chip.

::

    import driver
    layer = driver.linear_from_torch(module, input_scale=0.02, input_zero_point=128)
    with driver.open("golden") as npu:       # "golden", "verilator", "icarus", "amaranth"
        y_q = npu.run(layer, x_q)            # a list of layers runs a chain
"""

from hw.config import NpuConfig
from hw.isa import Rounding

from .backends import BackendUnavailable, available_backends
from .device import Device, NpuError, RunStats, open
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
from .lowering import LoweredChain, lower
from .quant import Activation, QuantizationError, QuantType


def from_torch(model, *, input_shape=None, name=None):
    """A :class:`Network` from a converted PyTorch quantized model (see
    :func:`driver.torch_import.from_torch`); ``input_shape`` (channels, height, width) for
    a model with convolutions."""
    from .torch_import import from_torch as _from_torch
    return _from_torch(model, input_shape=input_shape, name=name)


def linear_from_torch(module, *, input_scale, input_zero_point, input_dtype="uint8", name=None):
    """A :class:`QuantLinear` from one converted PyTorch quantized Linear module (see
    :func:`driver.torch_import.linear_from_torch`)."""
    from .torch_import import linear_from_torch as _linear_from_torch
    return _linear_from_torch(module, input_scale=input_scale, input_zero_point=input_zero_point,
                              input_dtype=input_dtype, name=name)


def load_onnx(model, *, name=None):
    """A :class:`Network` from a quantized ONNX model (see :func:`driver.onnx_import.load_onnx`)."""
    from .onnx_import import load_onnx as _load_onnx
    return _load_onnx(model, name=name)


__all__ = ["QuantLinear", "QuantConv2d", "ConvGeometry", "IntegerMatMul", "MaxPool2d",
           "ColumnTable", "Network", "QuantParams", "Activation", "QuantType",
           "from_torch", "linear_from_torch", "load_onnx", "open", "Device", "RunStats",
           "LoweredChain", "lower",
           "NpuError", "QuantizationError", "BackendUnavailable", "available_backends",
           "NpuConfig", "Rounding"]

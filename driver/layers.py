"""Quantized layers the driver runs: :class:`QuantLinear` and the host-side :class:`ColumnTable`."""

import numpy as np

from hw.isa import Rounding

from .quant import (
    SCALE_ORDERS,
    Activation,
    QuantizationError,
    QuantType,
    check_accumulator_range,
    clamp_bounds,
    effective_scale,
    fold_bias,
    param_records,
    requantize_exact,
    requantize_float32,
)

__all__ = ["QuantLinear", "ColumnTable", "QuantParams", "Network", "check_chain"]


class QuantParams:
    """Scale, zero point and type of a quantized tensor: ``real = scale * (q - zero_point)``."""

    def __init__(self, *, scale, zero_point, dtype="uint8", what="tensor"):
        self.qtype = QuantType.of(dtype, f"{what} dtype")
        try:
            self.scale = float(scale)   # kept in double: PyTorch quantizes its bias with it
        except (TypeError, ValueError):
            raise TypeError(f"{what} scale must be a number, not {scale!r}") from None
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f"{what} scale must be positive and finite, not {scale!r}")
        if not isinstance(zero_point, (int, np.integer)) or isinstance(zero_point, bool):
            raise TypeError(f"{what} zero point must be an integer, not {zero_point!r}")
        if not self.qtype.min <= zero_point <= self.qtype.max:
            raise ValueError(f"{what} zero point must be in {self.qtype.min}..{self.qtype.max} "
                             f"for {self.qtype.value}, not {zero_point!r}")
        self.zero_point = int(zero_point)

    def __eq__(self, other):
        return (isinstance(other, QuantParams) and self.qtype == other.qtype
                and self.scale == other.scale and self.zero_point == other.zero_point)

    def __repr__(self):
        return f"QuantParams(scale={self.scale!r}, zero_point={self.zero_point}, " \
               f"dtype={self.qtype.value!r})"

    def quantize(self, x):
        """Float32 values to this type, as onnxruntime's QuantizeLinear: ``sat(rint(x/s) + z)``."""
        with np.errstate(all="ignore"):
            q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(self.scale))
        q = np.clip(np.nan_to_num(q, nan=0.0), -2.0 ** 20, 2.0 ** 20).astype(np.int64)
        return np.clip(q + self.zero_point, self.qtype.min, self.qtype.max).astype(self.qtype.dtype)

    def dequantize(self, q):
        """Quantized values to float32, as DequantizeLinear: ``f32(q - z) * s``."""
        centred = np.asarray(q, dtype=np.int64) - self.zero_point
        return centred.astype(np.float32) * np.float32(self.scale)


def _per_column(value, n, what, layer):
    array = np.asarray(value)
    if array.size == 1:
        array = np.full(n, array.reshape(()))
    if array.shape != (n,):
        raise ValueError(f"{layer}: {what} must be a scalar or have {n} values (one per output), "
                         f"not shape {array.shape}")
    return array


def _check_input(layer_name, params, x):
    """``x`` as a 2-D array of the layer's input type."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{layer_name}: input must be a NumPy array, not {type(x).__name__}")
    if x.dtype != params.qtype.dtype:
        raise TypeError(f"{layer_name}: input must be {params.qtype.value}, not {x.dtype}")
    return x.reshape(1, -1) if x.ndim == 1 else x


class QuantLinear:
    """A quantized ``Linear`` layer, ``y = x @ W.T + b``, as the chip runs it.

    Parameters
    ----------
    weight : numpy.ndarray, int8 or uint8, shape [out_features, in_features]
        Quantized weights in PyTorch layout.
    weight_scale : float or array [out_features]
        Per-tensor or per-output-channel weight scales.
    weight_zero_point : int or array [out_features]
        Weight zero points (any value of the weight type: the chip subtracts them).
    bias : array [out_features] of int32, optional
        Bias quantized with scale ``input_scale * weight_scale`` and zero point 0.
    input_scale, input_zero_point, input_dtype
        Quantization of the input activations (uint8 or int8).
    output_scale, output_zero_point, output_dtype
        Quantization of the output activations (uint8 or int8).
    activation : str or Activation
        Fused activation: ``"none"``, ``"relu"`` or ``"relu6"``.
    clip : (float or None, float or None), optional
        A fused clip range in real units (ONNX ``Clip``).
    scale_order : str
        How the framework computes the float32 effective scale (see
        :data:`driver.quant.SCALE_ORDERS`).
    alpha : float
        ONNX QGemm's ``alpha``.
    rounding : Rounding
        The chip's rounding of the requantized value.  ``FLOAT32`` (the default)
        reproduces the float32 arithmetic of PyTorch's qnnpack and onnxruntime bit for
        bit; the others round the exact product.
    name : str
        Name used in error messages and summaries.

    Raises
    ------
    TypeError
        If an argument has the wrong type (weights that are not int8/uint8, ...).
    ValueError
        If shapes disagree or a value is out of range.
    QuantizationError
        If the chip cannot represent the layer exactly.
    """

    def __init__(self, *, weight, weight_scale, weight_zero_point=0, bias=None,
                 input_scale, input_zero_point, input_dtype="uint8",
                 output_scale, output_zero_point, output_dtype="uint8",
                 activation="none", clip=None, scale_order="onnxruntime", alpha=1.0,
                 rounding=Rounding.FLOAT32, name="linear"):
        self.name = str(name)
        if not isinstance(weight, np.ndarray):
            raise TypeError(f"{self.name}: weight must be a NumPy array, "
                            f"not {type(weight).__name__}")
        self.weight_type = QuantType.of(weight.dtype, f"{self.name}: weight dtype")
        if weight.ndim != 2 or 0 in weight.shape:
            raise ValueError(f"{self.name}: weight must have shape [out_features, in_features], "
                             f"not {weight.shape}")
        self.weight = weight
        n = self.out_features
        self.input = QuantParams(scale=input_scale, zero_point=input_zero_point,
                                 dtype=input_dtype, what=f"{self.name}: input")
        self.output = QuantParams(scale=output_scale, zero_point=output_zero_point,
                                  dtype=output_dtype, what=f"{self.name}: output")

        scales = _per_column(weight_scale, n, "weight_scale", self.name).astype(np.float64)
        if not np.all(np.isfinite(scales) & (scales > 0)):
            raise ValueError(f"{self.name}: weight scales must be positive and finite")
        self.weight_scale = scales.astype(np.float32)
        zeros = _per_column(weight_zero_point, n, "weight_zero_point", self.name)
        if zeros.dtype.kind not in "iu":
            raise TypeError(f"{self.name}: weight zero points must be integers, not {zeros.dtype}")
        if zeros.min() < self.weight_type.min or zeros.max() > self.weight_type.max:
            raise ValueError(f"{self.name}: weight zero points must be in {self.weight_type.min}.."
                             f"{self.weight_type.max} for {self.weight_type.value} weights")
        self.weight_zero_point = zeros.astype(np.int64)

        if bias is None:
            bias = np.zeros(n, dtype=np.int32)
        bias = np.asarray(bias)
        if bias.dtype.kind not in "iu":
            raise TypeError(f"{self.name}: bias must be quantized to int32, not {bias.dtype} "
                            "(quantize it with scale input_scale * weight_scale)")
        if bias.shape != (n,):
            raise ValueError(f"{self.name}: bias must have shape ({n},), not {bias.shape}")
        if bias.min() < -(1 << 31) or bias.max() >= (1 << 31):
            raise ValueError(f"{self.name}: bias values must fit int32")
        self.bias = bias.astype(np.int64)

        self.activation = Activation(activation)
        self.clip = clip
        if scale_order not in SCALE_ORDERS:
            raise ValueError(f"{self.name}: scale_order must be one of {', '.join(SCALE_ORDERS)}, "
                             f"not {scale_order!r}")
        self.scale_order, self.alpha = scale_order, float(alpha)
        self.rounding = Rounding(rounding)

        # Everything the chip needs, computed now so a layer it cannot run fails here.
        self.scales = effective_scale(self.input.scale, self.weight_scale, self.output.scale,
                                      order=scale_order, alpha=self.alpha)
        self.folded_bias = fold_bias(self.bias, self.weight, self.weight_zero_point,
                                     self.input.zero_point, layer=self.name)
        check_accumulator_range(self.weight, self.weight_zero_point, self.folded_bias,
                                self.input.qtype, layer=self.name)
        self.low, self.high = clamp_bounds(self.output.qtype, self.output.zero_point,
                                           self.output.scale, self.activation, clip)
        if self.low > self.high:
            raise QuantizationError(f"{self.name}: the clip range is empty after quantization "
                                    f"({self.low}..{self.high})")
        self.records = param_records(folded_bias=self.folded_bias, scales=self.scales,
                                     weight_zero=self.weight_zero_point,
                                     output_zero=self.output.zero_point, low=self.low,
                                     high=self.high, rounding=self.rounding, layer=self.name)

    # -- shape -----------------------------------------------------------------------------

    @property
    def in_features(self):
        return self.weight.shape[1]

    @property
    def out_features(self):
        return self.weight.shape[0]

    def macs(self, batch):
        """Multiply-accumulates of one run over ``batch`` rows."""
        return batch * self.in_features * self.out_features

    def __repr__(self):
        act = "" if self.activation is Activation.NONE else f", {self.activation.value}"
        return (f"QuantLinear({self.name!r}, {self.in_features}->{self.out_features}, "
                f"{self.input.qtype.value}x{self.weight_type.value}->{self.output.qtype.value}{act})")

    # -- reference arithmetic --------------------------------------------------------------

    def accumulate(self, x):
        """``x @ (W - z_w).T`` in int64 (without bias), for a 2-D input of the input type."""
        x = _check_input(self.name, self.input, x)
        if x.shape[1] != self.in_features:
            raise ValueError(f"{self.name}: input has {x.shape[1]} features, the layer takes "
                             f"{self.in_features}")
        centred = self.weight.astype(np.int64) - self.weight_zero_point[:, None]
        return x.astype(np.int64) @ centred.T

    def reference(self, x, *, arithmetic="chip"):
        """The layer's output computed in NumPy.

        Parameters
        ----------
        x : numpy.ndarray [batch, in_features]
        arithmetic : str
            ``"chip"``: the chip's integer requantization with the layer's rounding
            (bit for bit what the chip returns).  ``"exact"``: the exact product rounded
            half to even, for comparison.  ``"float32"``: the float32 requantization of
            PyTorch's qnnpack and onnxruntime's integer kernels, emulated in NumPy.
        """
        acc = self.accumulate(x)
        if arithmetic in ("chip", "exact"):
            rounding = self.rounding if arithmetic == "chip" else Rounding.HALF_EVEN
            y = requantize_exact(acc, self.folded_bias, [r.multiplier for r in self.records],
                                 [r.shift for r in self.records], int(rounding),
                                 self.output.zero_point, self.low, self.high)
        elif arithmetic == "float32":
            y = requantize_float32(acc, self.folded_bias, self.scales, self.output.zero_point,
                                   self.low, self.high)
        else:
            raise ValueError("arithmetic must be 'chip', 'exact' or 'float32', "
                             f"not {arithmetic!r}")
        return y.astype(self.output.qtype.dtype)


class ColumnTable:
    """A per-column lookup table the driver applies on the host between chip passes.

    It carries an elementwise quantized operation the chip has no unit for, such as
    onnxruntime's ``QLinearAdd`` of a constant bias after ``QLinearMatMul``, which rounds a
    second time: ``y[:, j] = table[j, x[:, j] - input.min]``.

    Parameters
    ----------
    table : numpy.ndarray [features, 256] of the output type
    input, output : QuantParams
    name : str
    """

    def __init__(self, *, table, input, output, name="table"):
        self.name = str(name)
        if not isinstance(input, QuantParams) or not isinstance(output, QuantParams):
            raise TypeError(f"{self.name}: input and output must be QuantParams")
        self.input, self.output = input, output
        table = np.asarray(table)
        if table.ndim != 2 or table.shape[1] != 256:
            raise ValueError(f"{self.name}: table must have shape [features, 256], "
                             f"not {table.shape}")
        if table.dtype != output.qtype.dtype:
            raise TypeError(f"{self.name}: table must be {output.qtype.value}, not {table.dtype}")
        self.table = table

    @property
    def in_features(self):
        return self.table.shape[0]

    out_features = in_features

    def macs(self, batch):
        return 0

    def __repr__(self):
        return f"ColumnTable({self.name!r}, {self.in_features} columns)"

    def apply(self, x):
        """Look every value up in its column's table."""
        x = _check_input(self.name, self.input, x)
        if x.shape[1] != self.in_features:
            raise ValueError(f"{self.name}: input has {x.shape[1]} features, the table has "
                             f"{self.in_features}")
        index = x.astype(np.int64) - self.input.qtype.min
        return self.table[np.arange(self.in_features)[None, :], index]

    reference = apply


def check_chain(layers):
    """Raise unless each layer's output feeds the next layer's input exactly.

    Returns
    -------
    list
        The layers, as a list.
    """
    if isinstance(layers, (QuantLinear, ColumnTable)):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("a chain needs at least one layer")
    for layer in layers:
        if not isinstance(layer, (QuantLinear, ColumnTable)):
            raise TypeError(f"a chain holds QuantLinear or ColumnTable layers, not {layer!r}")
    for a, b in zip(layers, layers[1:], strict=False):
        if a.out_features != b.in_features:
            raise ValueError(f"{a.name} has {a.out_features} outputs but {b.name} takes "
                             f"{b.in_features} inputs")
        if a.output != b.input:
            raise ValueError(f"{a.name} outputs {a.output} but {b.name} expects {b.input}; "
                             "a chain keeps quantized activations unchanged between layers")
    return layers


class Network:
    """A chain of layers with the quantization of its float input and output.

    Parameters
    ----------
    layers : list of QuantLinear or ColumnTable
    input : QuantParams, optional
        How a float input is quantized (default: the first layer's input parameters).
    output : QuantParams, optional
        How the quantized output is dequantized (default: the last layer's output).
    name : str
    """

    def __init__(self, *, layers, input=None, output=None, name="network"):
        self.layers = check_chain(layers)
        self.input = self.layers[0].input if input is None else input
        self.output = self.layers[-1].output if output is None else output
        if self.input != self.layers[0].input:
            raise ValueError(f"{name}: the input is quantized as {self.input} but "
                             f"{self.layers[0].name} expects {self.layers[0].input}")
        self.name = name

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __repr__(self):
        return f"Network({self.name!r}, {self.layers!r})"

    def macs(self, batch):
        return sum(layer.macs(batch) for layer in self.layers)

    def quantize(self, x):
        """Quantize a float input as the model's own input quantizer does."""
        return self.input.quantize(x)

    def dequantize(self, y):
        """Dequantize a quantized output as the model does."""
        return self.output.dequantize(y)

    def reference(self, x, *, arithmetic="chip"):
        """Run the chain in NumPy (see :meth:`QuantLinear.reference`)."""
        for layer in self.layers:
            x = layer.reference(x, **({} if isinstance(layer, ColumnTable)
                                      else {"arithmetic": arithmetic}))
        return x

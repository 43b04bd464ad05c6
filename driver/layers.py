"""Quantized layers the driver runs.

On the chip: :class:`QuantLinear`, :class:`QuantConv2d` (im2col on the host, one matrix
multiply on the chip) and :class:`IntegerMatMul` (int32 accumulators, ONNX
``MatMulInteger``/``ConvInteger``).  On the host: :class:`ColumnTable` and
:class:`MaxPool2d`.  Between layers activations travel as ``[batch, features]`` arrays;
an image's features are its ``[channels, height, width]`` values in that (NCHW) order, so
flattening an image is free.
"""

import numpy as np

from hw.isa import ParamRecord, Rounding

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

__all__ = ["QuantLinear", "QuantConv2d", "ConvGeometry", "IntegerMatMul", "ColumnTable",
           "MaxPool2d", "QuantParams", "Network", "check_chain", "CHIP_LAYERS", "HOST_LAYERS"]


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
        """Float32 values to this type, as onnxruntime's QuantizeLinear: ``sat(rint(x/s) + z)``.

        Infinities and values beyond the type saturate; NaN becomes the type's minimum,
        as onnxruntime's kernels give it (PyTorch's ``quantize_per_tensor`` gives the
        maximum: :class:`~driver.torch_import.TorchNetwork` quantizes with PyTorch itself).

        Raises
        ------
        TypeError
            If ``x`` is not real numbers (strings, None, complex, objects).
        """
        x = _real_array(x, "x", "iuf")
        with np.errstate(all="ignore"):
            q = np.rint(x.astype(np.float32) / np.float32(self.scale))
        q = np.clip(np.where(np.isnan(q), -np.inf, q), -2.0 ** 20, 2.0 ** 20).astype(np.int64)
        return np.clip(q + self.zero_point, self.qtype.min, self.qtype.max).astype(self.qtype.dtype)

    def dequantize(self, q):
        """Quantized values to float32, as DequantizeLinear: ``f32(q - z) * s``.

        Raises
        ------
        TypeError
            If ``q`` is not integers.
        ValueError
            If a value is outside the type's range.
        """
        q = _real_array(q, "q", "iu")
        if q.size and (q.min() < self.qtype.min or q.max() > self.qtype.max):
            bad = q.min() if q.min() < self.qtype.min else q.max()
            raise ValueError(f"q must be in {self.qtype.min}..{self.qtype.max} for "
                             f"{self.qtype.value}, not {bad}")
        centred = q.astype(np.int64) - self.zero_point
        return centred.astype(np.float32) * np.float32(self.scale)


def _describe(value):
    """``value`` for an error message: an array by its dtype, a short value by its repr."""
    if isinstance(value, np.ndarray):
        return str(value.dtype)
    text = repr(value)
    return text if len(text) <= 40 else f"{type(value).__name__} {text[:30]}..."


def _real_array(value, what, kinds):
    """``value`` as a NumPy array of one of the dtype ``kinds`` ("iuf": real numbers)."""
    try:
        array = np.asarray(value)
    except ValueError:
        raise ValueError(f"{what} must be an array of numbers, not a ragged sequence") from None
    if array.dtype.kind not in kinds:
        expected = "integers" if kinds == "iu" else "real numbers (an int or float array)"
        given = "None" if value is None else (
            f"{type(value).__name__} {_describe(value)}" if not isinstance(value, np.ndarray)
            and array.dtype.kind in "OUS" else str(array.dtype))
        raise TypeError(f"{what} must be {expected}, not {given}")
    return array


def _per_column(value, n, what, layer):
    array = np.asarray(value)
    if array.size == 1:
        array = np.full(n, array.reshape(()))
    if array.shape != (n,):
        raise ValueError(f"{layer}: {what} must be a scalar or have {n} values (one per output), "
                         f"not shape {array.shape}")
    return array


def _check_weight_zeros(layer, zeros, weight_type):
    low, high = zeros.min(), zeros.max()
    if low < weight_type.min or high > weight_type.max:
        raise ValueError(f"{layer}: weight zero points must be in {weight_type.min}.."
                         f"{weight_type.max} for {weight_type.value} weights, "
                         f"not {low if low < weight_type.min else high}")


def _enum_value(enum, value, what, layer):
    """``enum(value)``, or a ValueError naming the argument and the choices."""
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(repr(m.value) if isinstance(m.value, str) else m.name for m in enum)
        raise ValueError(f"{layer}: {what} must be one of {choices}, not {value!r}") from None


def _finite_number(value, what, layer):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{layer}: {what} must be a number, not {_describe(value)}")
    if not np.isfinite(value):
        raise ValueError(f"{layer}: {what} must be finite, not {value!r}")
    return float(value)


def _check_clip(clip, layer):
    """``clip`` checked to be None or a ``(min, max)`` pair of numbers or None."""
    if clip is None:
        return None
    message = f"{layer}: clip must be a (min, max) pair of numbers or None, not {clip!r}"
    if isinstance(clip, (str, bytes)) or not hasattr(clip, "__len__") or len(clip) != 2:
        raise TypeError(message)
    for bound in clip:
        if bound is not None and (isinstance(bound, bool) or not isinstance(
                bound, (int, float, np.integer, np.floating))):
            raise TypeError(message)
        if bound is not None and np.isnan(bound):
            raise ValueError(f"{layer}: clip must not be NaN, not {tuple(clip)!r}")
    return tuple(clip)


def _check_input(layer, x):
    """``x`` as a 2-D ``[batch, in_features]`` array of the layer's input type (a vector
    is one row; images ``[batch, *input_shape]`` are flattened)."""
    name, params = layer.name, layer.input
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: input must be a NumPy array, not {type(x).__name__}")
    if x.dtype != params.qtype.dtype:
        raise TypeError(f"{name}: input must be {params.qtype.value}, not {x.dtype}")
    if x.ndim == 1:
        x = x.reshape(1, -1)
    elif x.ndim > 2 and tuple(x.shape[1:]) == tuple(layer.input_shape):
        x = x.reshape(x.shape[0], -1)
    if x.ndim != 2:
        raise ValueError(f"{name}: input must be [batch, {layer.in_features}], "
                         f"not {list(x.shape)}")
    if x.shape[1] != layer.in_features:
        raise ValueError(f"{name}: input has {x.shape[1]} features, the layer takes "
                         f"{layer.in_features}")
    return x


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

        scales = _per_column(weight_scale, n, "weight_scale", self.name)
        if scales.dtype.kind not in "iuf":
            raise TypeError(f"{self.name}: weight_scale must be numbers (one, or one per "
                            f"output), not {_describe(weight_scale)}")
        scales = scales.astype(np.float64)
        bad = np.flatnonzero(~(np.isfinite(scales) & (scales > 0)))
        if bad.size:
            raise ValueError(f"{self.name}: weight_scale must be positive and finite, not "
                             f"{float(scales[bad[0]])!r} (output {bad[0]})")
        self.weight_scale = scales.astype(np.float32)
        zeros = _per_column(weight_zero_point, n, "weight_zero_point", self.name)
        if zeros.dtype.kind not in "iu":
            raise TypeError(f"{self.name}: weight zero points must be integers, not {zeros.dtype}")
        _check_weight_zeros(self.name, zeros, self.weight_type)
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
            bad = bias.min() if bias.min() < -(1 << 31) else bias.max()
            raise ValueError(f"{self.name}: bias values must fit int32, not {bad}")
        self.bias = bias.astype(np.int64)

        self.activation = _enum_value(Activation, activation, "activation", self.name)
        self.clip = _check_clip(clip, self.name)
        if scale_order not in SCALE_ORDERS:
            raise ValueError(f"{self.name}: scale_order must be one of {', '.join(SCALE_ORDERS)}, "
                             f"not {scale_order!r}")
        self.scale_order, self.alpha = scale_order, _finite_number(alpha, "alpha", self.name)
        self.rounding = _enum_value(Rounding, rounding, "rounding", self.name)

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

    @property
    def input_shape(self):
        return (self.in_features,)

    @property
    def output_shape(self):
        return (self.out_features,)

    @property
    def output_dtype(self):
        return self.output.qtype.dtype

    def macs(self, batch):
        """Multiply-accumulates of one run over ``batch`` rows."""
        return batch * self.in_features * self.out_features

    # The chip runs a layer as one matrix multiply; a Linear layer is one already.
    @property
    def matmul(self):
        return self

    def matmul_rows(self, batch):
        """Rows of the chip's matrix multiply for ``batch`` input rows."""
        return batch

    def to_rows(self, x):
        return x

    def from_rows(self, y, batch):
        return y

    def __repr__(self):
        act = "" if self.activation is Activation.NONE else f", {self.activation.value}"
        return (f"QuantLinear({self.name!r}, {self.in_features}->{self.out_features}, "
                f"{self.input.qtype.value}x{self.weight_type.value}->{self.output.qtype.value}{act})")

    # -- reference arithmetic --------------------------------------------------------------

    def accumulate(self, x):
        """``x @ (W - z_w).T`` in int64 (without bias), for a 2-D input of the input type."""
        x = _check_input(self, x)
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


def _pair(value, what, layer, *, count=2, minimum=1):
    """A tuple of ``count`` ints from an int or a sequence, each at least ``minimum``."""
    def integer(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

    if integer(value):
        values = (int(value),) * count
    elif isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or not all(
            integer(v) for v in value):
        raise TypeError(f"{layer}: {what} must be an int or {count} ints, not {value!r}")
    else:
        values = tuple(int(v) for v in value)
    if len(values) != count or any(v < minimum for v in values):
        raise ValueError(f"{layer}: {what} must be {count} ints of at least {minimum}, "
                         f"not {value!r}")
    return values


class ConvGeometry:
    """Where a 2-D convolution or pooling window reads its input, as the frameworks define it.

    Parameters
    ----------
    input_shape : (channels, height, width)
    kernel : int or (kh, kw)
    stride, dilation : int or pair
    padding : int, (top/bottom, left/right) or (top, left, bottom, right)
        ONNX ``pads`` order: the begins, then the ends.
    groups : int
        Input and output channels split into this many independent groups.
    name : str
    """

    def __init__(self, *, input_shape, kernel, stride=1, padding=0, dilation=1, groups=1,
                 name="conv"):
        self.name = str(name)
        self.input_shape = _pair(input_shape, "input_shape", name, count=3)
        self.kernel = _pair(kernel, "kernel", name)
        self.stride = _pair(stride, "stride", name)
        self.dilation = _pair(dilation, "dilation", name)
        if isinstance(padding, (str, bytes)) or not isinstance(padding, (int, np.integer)) \
                and not hasattr(padding, "__len__"):
            raise TypeError(f"{name}: padding must be an int, 2 ints or 4 ints, not {padding!r}")
        if isinstance(padding, (int, np.integer)) or len(padding) != 4:
            top, left = _pair(padding, "padding", name, minimum=0)
            padding = (top, left, top, left)
        self.padding = _pair(padding, "padding", name, count=4, minimum=0)
        if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool):
            raise TypeError(f"{name}: groups must be a positive integer, not {groups!r}")
        if groups < 1:
            raise ValueError(f"{name}: groups must be a positive integer, not {groups!r}")
        self.groups = int(groups)
        channels, height, width = self.input_shape
        if channels % self.groups:
            raise ValueError(f"{name}: {channels} input channels do not split into "
                             f"{self.groups} groups")
        top, left, bottom, right = self.padding
        spans = [d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel, strict=True)]
        padded = (height + top + bottom, width + left + right)
        if padded[0] < spans[0] or padded[1] < spans[1]:
            raise ValueError(f"{name}: the {spans[0]}x{spans[1]} window does not fit the padded "
                             f"{padded[0]}x{padded[1]} input")
        self.output_size = tuple((p - s) // st + 1
                                 for p, s, st in zip(padded, spans, self.stride, strict=True))

    @property
    def positions(self):
        """Output positions per image: ``out_height * out_width``."""
        return self.output_size[0] * self.output_size[1]

    @property
    def window(self):
        """Values one output position reads: ``channels * kh * kw``."""
        return self.input_shape[0] * self.kernel[0] * self.kernel[1]

    def windows(self, x, pad_value):
        """``[batch, out_h, out_w, channels, kh, kw]`` views of ``x`` [batch, C*H*W]."""
        channels, height, width = self.input_shape
        images = np.asarray(x).reshape(-1, channels, height, width)
        top, left, bottom, right = self.padding
        if any(self.padding):
            images = np.pad(images, ((0, 0), (0, 0), (top, bottom), (left, right)),
                            constant_values=pad_value)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        oh, ow = self.output_size
        taps = [[images[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                        j * dw:j * dw + sw * (ow - 1) + 1:sw] for j in range(kw)]
                for i in range(kh)]
        return np.asarray(taps).transpose(2, 4, 5, 3, 0, 1)

    def patches(self, x, pad_value):
        """im2col: ``[batch * out_h * out_w, channels * kh * kw]`` rows of ``x``.

        Padding reads ``pad_value``: the input zero point, real 0, as the frameworks pad.
        """
        return np.ascontiguousarray(self.windows(x, pad_value)).reshape(-1, self.window)

    def images(self, y, batch):
        """Matrix-multiply rows ``[batch * positions, channels]`` back to ``[batch, C*H*W]``."""
        oh, ow = self.output_size
        return np.ascontiguousarray(
            np.asarray(y).reshape(batch, oh, ow, -1).transpose(0, 3, 1, 2)).reshape(batch, -1)

    def expand_weight(self, weight, fill):
        """Conv weights ``[out, in/groups, kh, kw]`` as one ``[out, in*kh*kw]`` matrix.

        Grouped weights become block diagonal; the entries outside a column's group hold
        ``fill`` (the column's weight zero point), so they add nothing.
        """
        out = weight.shape[0]
        if out % self.groups:
            raise ValueError(f"{self.name}: {out} output channels do not split into "
                             f"{self.groups} groups")
        per_group = self.input_shape[0] // self.groups
        expected = (out, per_group, *self.kernel)
        if weight.shape != expected:
            raise ValueError(f"{self.name}: weight must have shape {list(expected)}, "
                             f"not {list(weight.shape)}")
        if self.groups == 1:
            return np.ascontiguousarray(weight.reshape(out, -1))
        taps = self.kernel[0] * self.kernel[1]
        matrix = np.repeat(np.asarray(fill, dtype=weight.dtype).reshape(-1, 1), self.window,
                           axis=1)
        outputs = out // self.groups
        for g in range(self.groups):
            rows, cols = slice(g * outputs, (g + 1) * outputs), slice(
                g * per_group * taps, (g + 1) * per_group * taps)
            matrix[rows, cols] = weight[rows].reshape(outputs, -1)
        return matrix

    def __repr__(self):
        return (f"{self.kernel[0]}x{self.kernel[1]} stride {self.stride} pads {self.padding}"
                f"{'' if self.dilation == (1, 1) else f' dilation {self.dilation}'}"
                f"{'' if self.groups == 1 else f' groups {self.groups}'}")


class QuantConv2d:
    """A quantized 2-D convolution: im2col on the host, one :class:`QuantLinear` on the chip.

    Every output position is a row of the chip's matrix multiply; its window of
    ``channels * kh * kw`` input values (padding reads the input zero point) is the
    row's input features.

    Parameters
    ----------
    weight : numpy.ndarray, int8 or uint8, shape [out_channels, in_channels/groups, kh, kw]
    input_shape : (channels, height, width)
    stride, padding, dilation, groups
        As :class:`ConvGeometry` takes them.
    **quantization
        ``weight_scale``, ``weight_zero_point``, ``bias``, ``input_*``, ``output_*``,
        ``activation``, ``clip``, ``scale_order`` and ``rounding`` as
        :class:`QuantLinear` takes them.
    name : str
    """

    def __init__(self, *, weight, input_shape, stride=1, padding=0, dilation=1, groups=1,
                 weight_zero_point=0, name="conv", **quantization):
        self.name = str(name)
        if not isinstance(weight, np.ndarray) or weight.ndim != 4:
            raise TypeError(f"{self.name}: weight must be a 4-D NumPy array "
                            "[out_channels, in_channels/groups, kh, kw], "
                            f"not {getattr(weight, 'shape', type(weight).__name__)}")
        self.geometry = ConvGeometry(input_shape=input_shape, kernel=weight.shape[2:],
                                     stride=stride, padding=padding, dilation=dilation,
                                     groups=groups, name=self.name)
        self.weight = weight
        fill = _per_column(weight_zero_point, weight.shape[0], "weight_zero_point", self.name)
        self.linear = QuantLinear(weight=self.geometry.expand_weight(weight, fill),
                                  weight_zero_point=weight_zero_point, name=self.name,
                                  **quantization)
        self.input, self.output = self.linear.input, self.linear.output

    @property
    def out_channels(self):
        return self.weight.shape[0]

    @property
    def input_shape(self):
        return self.geometry.input_shape

    @property
    def output_shape(self):
        return (self.out_channels, *self.geometry.output_size)

    @property
    def in_features(self):
        return int(np.prod(self.input_shape))

    @property
    def out_features(self):
        return int(np.prod(self.output_shape))

    @property
    def output_dtype(self):
        return self.output.qtype.dtype

    def macs(self, batch):
        """Multiply-accumulates of the convolution itself (not of the groups' zero blocks)."""
        return batch * self.geometry.positions * self.out_channels * int(np.prod(
            self.weight.shape[1:]))

    @property
    def matmul(self):
        return self.linear

    def matmul_rows(self, batch):
        return batch * self.geometry.positions

    def to_rows(self, x):
        return self.geometry.patches(x, self.input.zero_point)

    def from_rows(self, y, batch):
        return self.geometry.images(y, batch)

    def __repr__(self):
        act = "" if self.linear.activation is Activation.NONE else \
            f", {self.linear.activation.value}"
        c, h, w = self.input_shape
        return (f"QuantConv2d({self.name!r}, {c}x{h}x{w}->{'x'.join(map(str, self.output_shape))}"
                f", {self.geometry!r}, {self.input.qtype.value}x{self.linear.weight_type.value}->"
                f"{self.output.qtype.value}{act})")

    def reference(self, x, *, arithmetic="chip"):
        """The convolution computed in NumPy (see :meth:`QuantLinear.reference`)."""
        x = _check_input(self, x)
        return self.from_rows(self.linear.reference(self.to_rows(x), arithmetic=arithmetic),
                              x.shape[0])


class IntegerMatMul:
    """An integer matrix multiply with int32 output: ONNX ``MatMulInteger`` or ``ConvInteger``.

    ``y = (x - z_x) @ (W - z_w).T`` in int32.  The chip sends its raw int32 accumulators
    ``x @ (W - z_w).T`` (the weight zero points load with the weights); the host adds the
    constant ``-z_x * sum_k (w_kj - z_w_j)``.

    Parameters
    ----------
    weight : numpy.ndarray, int8 or uint8, [out_features, in_features] (or conv weights
        [out_channels, in_channels/groups, kh, kw] with ``geometry``)
    weight_zero_point : int or array [out_features]
    input_zero_point : int
    input_dtype : str
    geometry : ConvGeometry, optional
        Makes the layer a convolution (im2col on the host, as :class:`QuantConv2d`).
    name : str
    """

    def __init__(self, *, weight, weight_zero_point=0, input_zero_point=0, input_dtype="uint8",
                 geometry=None, name="matmul_integer"):
        self.name = str(name)
        if not isinstance(weight, np.ndarray):
            raise TypeError(f"{self.name}: weight must be a NumPy array, "
                            f"not {type(weight).__name__}")
        self.weight_type = QuantType.of(weight.dtype, f"{self.name}: weight dtype")
        if geometry is not None and not isinstance(geometry, ConvGeometry):
            raise TypeError(f"{self.name}: geometry must be a ConvGeometry, not {geometry!r}")
        self.geometry = geometry
        if weight.ndim == 0 or weight.size == 0:
            raise ValueError(f"{self.name}: weight must have shape [out_features, in_features], "
                             f"not {weight.shape}")
        n = weight.shape[0]
        zeros = _per_column(weight_zero_point, n, "weight_zero_point", self.name)
        if zeros.dtype.kind not in "iu":
            raise TypeError(f"{self.name}: weight zero points must be integers, not {zeros.dtype}")
        _check_weight_zeros(self.name, zeros, self.weight_type)
        self.weight_zero_point = zeros.astype(np.int64)
        matrix = weight if geometry is None else geometry.expand_weight(weight, zeros)
        if matrix.ndim != 2 or 0 in matrix.shape:
            raise ValueError(f"{self.name}: weight must have shape [out_features, in_features], "
                             f"not {weight.shape}")
        self.weight, self.matrix = weight, matrix
        # The scale is not used: the output is the integer accumulator.
        self.input = QuantParams(scale=1.0, zero_point=input_zero_point, dtype=input_dtype,
                                 what=f"{self.name}: input")
        self.output = None
        centred = matrix.astype(np.int64) - self.weight_zero_point[:, None]
        self.offset = -self.input.zero_point * centred.sum(axis=1)
        worst = (max(abs(self.input.qtype.min), self.input.qtype.max)
                 + abs(self.input.zero_point)) * np.abs(centred).sum(axis=1)
        if worst.max() > (1 << 31) - 1:
            raise QuantizationError(f"{self.name}: column {int(np.argmax(worst))} can overflow "
                                    "the int32 accumulator")
        self.records = [ParamRecord(weight_zero=int(z)) for z in self.weight_zero_point]

    @property
    def output_dtype(self):
        return np.dtype(np.int32)

    @property
    def input_shape(self):
        return (self.matrix.shape[1],) if self.geometry is None else self.geometry.input_shape

    @property
    def output_shape(self):
        if self.geometry is None:
            return (self.matrix.shape[0],)
        return (self.matrix.shape[0], *self.geometry.output_size)

    @property
    def in_features(self):
        return int(np.prod(self.input_shape))

    @property
    def out_features(self):
        return int(np.prod(self.output_shape))

    def macs(self, batch):
        return self.matmul_rows(batch) * int(np.prod(self.weight.shape[1:])) * self.weight.shape[0]

    def matmul_rows(self, batch):
        return batch if self.geometry is None else batch * self.geometry.positions

    def to_rows(self, x):
        return x if self.geometry is None else self.geometry.patches(x, self.input.zero_point)

    def from_rows(self, acc, batch):
        """The chip's raw accumulators plus the input zero point's constant, as int32."""
        y = (np.asarray(acc, dtype=np.int64) + self.offset).astype(np.int32)
        return y if self.geometry is None else self.geometry.images(y, batch)

    def __repr__(self):
        kind = "conv" if self.geometry is not None else "matmul"
        return (f"IntegerMatMul({self.name!r}, {kind} {self.in_features}->{self.out_features}, "
                f"{self.input.qtype.value}x{self.weight_type.value}->int32)")

    def reference(self, x, *, arithmetic="chip"):
        """``(x - z_x) @ (W - z_w).T`` in NumPy, as int32."""
        x = _check_input(self, x)
        rows = self.to_rows(x).astype(np.int64) - self.input.zero_point
        centred = self.matrix.astype(np.int64) - self.weight_zero_point[:, None]
        y = (rows @ centred.T).astype(np.int32)
        return y if self.geometry is None else self.geometry.images(y, x.shape[0])


class MaxPool2d:
    """Max pooling on the host, on quantized values (the maximum commutes with quantization).

    Parameters
    ----------
    params : QuantParams
        The quantization of the input, unchanged at the output.
    input_shape : (channels, height, width)
    kernel, stride, padding, dilation
        As :class:`ConvGeometry` takes them; padding reads the type's minimum, which
        never wins.
    name : str
    """

    def __init__(self, *, params, input_shape, kernel, stride=None, padding=0, dilation=1,
                 name="maxpool"):
        self.name = str(name)
        if not isinstance(params, QuantParams):
            raise TypeError(f"{self.name}: params must be QuantParams, not {params!r}")
        self.input = self.output = params
        self.geometry = ConvGeometry(input_shape=input_shape, kernel=kernel,
                                     stride=kernel if stride is None else stride,
                                     padding=padding, dilation=dilation, name=self.name)

    @property
    def input_shape(self):
        return self.geometry.input_shape

    @property
    def output_shape(self):
        return (self.input_shape[0], *self.geometry.output_size)

    @property
    def in_features(self):
        return int(np.prod(self.input_shape))

    @property
    def out_features(self):
        return int(np.prod(self.output_shape))

    @property
    def output_dtype(self):
        return self.output.qtype.dtype

    def macs(self, batch):
        return 0

    def __repr__(self):
        return f"MaxPool2d({self.name!r}, {self.geometry!r})"

    def apply(self, x):
        x = _check_input(self, x)
        window = self.geometry.windows(x, self.input.qtype.min)   # [b, oh, ow, c, kh, kw]
        return np.ascontiguousarray(window.max(axis=(4, 5)).transpose(0, 3, 1, 2)).reshape(
            x.shape[0], -1)

    def reference(self, x, **_):
        return self.apply(x)


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

    @property
    def input_shape(self):
        return (self.in_features,)

    output_shape = input_shape

    @property
    def output_dtype(self):
        return self.output.qtype.dtype

    def macs(self, batch):
        return 0

    def __repr__(self):
        return f"ColumnTable({self.name!r}, {self.in_features} columns)"

    def apply(self, x):
        """Look every value up in its column's table."""
        x = _check_input(self, x)
        index = x.astype(np.int64) - self.input.qtype.min
        return self.table[np.arange(self.in_features)[None, :], index]

    def reference(self, x, **_):
        return self.apply(x)


#: Layers the chip runs (each one matrix multiply) and layers the host applies.
CHIP_LAYERS = (QuantLinear, QuantConv2d, IntegerMatMul)
HOST_LAYERS = (ColumnTable, MaxPool2d)


def check_chain(layers):
    """Raise unless each layer's output feeds the next layer's input exactly.

    Returns
    -------
    list
        The layers, as a list.
    """
    if isinstance(layers, CHIP_LAYERS + HOST_LAYERS):
        layers = [layers]
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"layers must be a layer or a list of layers, not {_describe(layers)}")
    layers = list(layers)
    if not layers:
        raise ValueError("a chain needs at least one layer")
    for layer in layers:
        if not isinstance(layer, CHIP_LAYERS + HOST_LAYERS):
            raise TypeError("a chain holds QuantLinear, QuantConv2d, IntegerMatMul, ColumnTable "
                            f"or MaxPool2d layers, not {layer!r}")
    for a, b in zip(layers, layers[1:], strict=False):
        if a.output is None:
            raise ValueError(f"{a.name} has int32 output; it can only end a chain")
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
    layers : list of layers (see :data:`CHIP_LAYERS`, :data:`HOST_LAYERS`)
    input : QuantParams, optional
        How a float input is quantized (default: the first layer's input parameters).
    output : QuantParams, optional
        How the quantized output is dequantized (default: the last layer's output).
    float_input, float_output : bool
        The model takes float input and quantizes it / dequantizes its output (else it
        takes and returns the integer tensors themselves).
    input_shape : tuple of int, optional
        The model's input dimensions after the batch (default: the first layer's).
    output_shape : tuple of int, optional
        The model's output dimensions after the batch (default: the last layer's).
    batch : int, optional
        The batch size, if the model fixes it.
    name : str
    """

    def __init__(self, *, layers, input=None, output=None, float_input=True, float_output=True,
                 input_shape=None, output_shape=None, batch=None, name="network"):
        self.layers = check_chain(layers)
        self.input = self.layers[0].input if input is None else input
        self.output = self.layers[-1].output if output is None else output
        if self.input != self.layers[0].input:
            raise ValueError(f"{name}: the input is quantized as {self.input} but "
                             f"{self.layers[0].name} expects {self.layers[0].input}")
        if self.output is None and float_output:
            raise ValueError(f"{name}: {self.layers[-1].name} has int32 output, which the "
                             "network cannot dequantize")
        self.float_input, self.float_output = bool(float_input), bool(float_output)
        self.input_shape = tuple(self.layers[0].input_shape if input_shape is None
                                 else input_shape)
        if int(np.prod(self.input_shape)) != self.layers[0].in_features:
            raise ValueError(f"{name}: input shape {list(self.input_shape)} does not hold the "
                             f"{self.layers[0].in_features} features {self.layers[0].name} takes")
        self.output_shape = tuple(self.layers[-1].output_shape if output_shape is None
                                  else output_shape)
        if int(np.prod(self.output_shape)) != self.layers[-1].out_features:
            raise ValueError(f"{name}: output shape {list(self.output_shape)} does not hold the "
                             f"{self.layers[-1].out_features} outputs of {self.layers[-1].name}")
        self.batch = None if batch is None else int(batch)
        self.name = name

    @property
    def input_dtype(self):
        """What the model takes: float32, or its integer input type."""
        return np.dtype(np.float32) if self.float_input else self.input.qtype.dtype

    @property
    def output_dtype(self):
        """What the model returns: float32, or its integer output type."""
        return np.dtype(np.float32) if self.float_output else self.layers[-1].output_dtype

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
            x = layer.reference(x, arithmetic=arithmetic)
        return x

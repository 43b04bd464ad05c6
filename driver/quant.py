"""Quantization arithmetic the driver does for the chip.

The chip computes, per output column ``j``::

    t = sat32(sum_k x_k * (w_kj - z_w_j) + B_j)
    y = clamp(round(t * M0_j / 2**shift_j) + z_y, low, high)

This module turns a framework's quantization parameters into those numbers:
the folded bias ``B_j``, the multiplier ``M0_j``/``shift_j`` taken from the
float32 effective scale that the framework itself computes (in its own order of
operations), and the clamp bounds of the output type and fused activation.

It also has two reference requantizations: :func:`requantize_exact`, what the chip
computes, and :func:`requantize_float32`, what PyTorch's ``qnnpack`` engine and
onnxruntime's integer kernels compute (``rint(float32(t) * M)`` in float32).  The
two agree except where the float32 product lands within half a float32 step of a
rounding tie (about one output in a million).
"""

import enum

import numpy as np

from hw.isa import ParamRecord, Rounding
from sim.golden import requantize as requantize_exact

__all__ = ["Activation", "QuantType", "SCALE_ORDERS", "effective_scale", "decompose_multiplier",
           "fold_bias", "check_accumulator_range", "quantize_value", "clamp_bounds",
           "param_records", "requantize_exact",
           "requantize_float32", "QuantizationError"]

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


class QuantizationError(ValueError):
    """A layer's quantization cannot be represented exactly on the chip."""


class QuantType(enum.Enum):
    """An 8-bit quantized element type: its NumPy dtype and its range."""
    UINT8 = "uint8"
    INT8 = "int8"

    @classmethod
    def of(cls, value, what="dtype"):
        """The :class:`QuantType` of ``value``: a QuantType, a dtype or its name."""
        if isinstance(value, cls):
            return value
        try:
            name = np.dtype(value).name
        except TypeError:
            name = None
        for member in cls:
            if member.value == name:
                return member
        raise TypeError(f"{what} must be uint8 or int8, not {value!r}")

    @property
    def dtype(self):
        return np.dtype(self.value)

    @property
    def signed(self):
        return self is QuantType.INT8

    @property
    def min(self):
        return -128 if self.signed else 0

    @property
    def max(self):
        return 127 if self.signed else 255


class Activation(enum.Enum):
    """A fused activation after the linear layer."""
    NONE = "none"
    RELU = "relu"
    RELU6 = "relu6"


#: How frameworks compute the float32 effective scale ``M = s_x * s_w / s_y``.
#: ``torch``: qnnpack's ``(s_w * s_x) * (1 / s_y)``; ``onnxruntime``: QLinearMatMul's and
#: QGemm's ``(alpha * s_x * s_w) / s_y``.
SCALE_ORDERS = ("onnxruntime", "torch")


def effective_scale(input_scale, weight_scale, output_scale, *, order="onnxruntime", alpha=1.0):
    """Per-column float32 effective scale, in the framework's own order of float32 operations.

    Parameters
    ----------
    input_scale, output_scale : float
        Scales of the activations in and out.
    weight_scale : array of float
        Per-column weight scales.
    order : str
        One of :data:`SCALE_ORDERS`.
    alpha : float
        QGemm's ``alpha`` (onnxruntime order only).

    Returns
    -------
    numpy.ndarray of float32
    """
    f32 = np.float32
    sx, sy = f32(input_scale), f32(output_scale)
    sw = np.asarray(weight_scale, dtype=np.float32)
    with np.errstate(all="ignore"):
        if order == "torch":
            if alpha != 1.0:
                raise ValueError(f"alpha must be 1.0 with the torch order, not {alpha!r}")
            return (sw * sx) * (f32(1) / sy)
        if order == "onnxruntime":
            return ((f32(alpha) * sx) * sw) / sy
    raise ValueError(f"order must be one of {', '.join(SCALE_ORDERS)}, not {order!r}")


def decompose_multiplier(scale, *, layer="layer", column=0):
    """Exact ``(M0, shift)`` with ``scale == M0 * 2**-shift``, ``M0 < 2**31``, ``1 <= shift <= 63``.

    A float32 scale has a 24-bit mantissa, so a 31-bit ``M0`` holds it exactly.

    Raises
    ------
    QuantizationError
        If the scale is not a positive finite number or is too large for the chip.
    """
    value = float(np.float32(scale))
    if not np.isfinite(value) or value <= 0:
        raise QuantizationError(f"{layer}: column {column} has effective scale {value!r}; "
                                "it must be positive and finite")
    mantissa, exponent = np.frexp(value)
    multiplier, shift = int(mantissa * (1 << 31)), 31 - int(exponent)
    # Drop trailing zero bits of the mantissa when the shift would exceed its field.
    while shift > 63 and multiplier % 2 == 0:
        multiplier, shift = multiplier >> 1, shift - 1
    if shift > 63:
        # Only scales below 2**-32 get here: every int32 times them rounds to 0 in both the
        # exact and the float32 arithmetic, so a zero multiplier is exact.
        return 0, 63
    if shift < 1:
        raise QuantizationError(f"{layer}: column {column} has effective scale {value!r}; "
                                "the chip needs it below 2**30")
    return multiplier, shift


def fold_bias(bias, weight, weight_zero, input_zero, *, layer="layer"):
    """``B_j = bias_j - z_x * sum_k (w_kj - z_w_j)`` as int64, checked to fit int32.

    Parameters
    ----------
    bias : array [N] of int
    weight : array [N, K] of int (PyTorch layout)
    weight_zero : array [N] of int
    input_zero : int
    """
    centred = np.asarray(weight, dtype=np.int64) - np.asarray(weight_zero, dtype=np.int64)[:, None]
    folded = np.asarray(bias, dtype=np.int64) - int(input_zero) * centred.sum(axis=1)
    bad = np.flatnonzero((folded < _INT32_MIN) | (folded > _INT32_MAX))
    if bad.size:
        raise QuantizationError(f"{layer}: folded bias of column {bad[0]} ({folded[bad[0]]}) "
                                "does not fit int32")
    return folded


def check_accumulator_range(weight, weight_zero, folded_bias, input_type, *, layer="layer"):
    """Raise :class:`QuantizationError` unless no input can overflow the int32 accumulator.

    The chip wraps its accumulator and saturates ``acc + B``; a framework wraps both, so
    the two agree only when neither overflows.
    """
    centred = np.abs(np.asarray(weight, dtype=np.int64)
                     - np.asarray(weight_zero, dtype=np.int64)[:, None])
    largest = max(abs(input_type.min), input_type.max) * centred.sum(axis=1)
    worst = largest + np.abs(np.asarray(folded_bias, dtype=np.int64))
    bad = np.flatnonzero(worst > _INT32_MAX)
    if bad.size:
        raise QuantizationError(f"{layer}: column {bad[0]} can overflow the int32 accumulator "
                                f"(bound {worst[bad[0]]})")


def quantize_value(value, scale, zero_point, qtype):
    """Quantize one float as onnxruntime's QuantizeLinear does: ``sat(rint(x / s) + z)``."""
    with np.errstate(all="ignore"):
        q = np.rint(np.float32(value) / np.float32(scale))
    if not np.isfinite(q):
        return qtype.max if q > 0 else qtype.min
    return int(np.clip(int(q) + int(zero_point), qtype.min, qtype.max))


def clamp_bounds(qtype, output_zero, output_scale, activation=Activation.NONE, clip=None):
    """``(low, high)`` clamp bounds for an output type, a fused activation and a clip range.

    ``clip`` is an optional ``(min, max)`` float pair (ONNX Clip); each bound is quantized
    as the framework quantizes it, which is exact because quantization is monotonic.
    """
    activation = Activation(activation)
    low, high = qtype.min, qtype.max
    if activation in (Activation.RELU, Activation.RELU6):
        low = max(low, int(output_zero))
    if activation is Activation.RELU6:
        high = min(high, quantize_value(6.0, output_scale, output_zero, qtype))
    if clip is not None:
        clip_min, clip_max = clip
        if clip_min is not None and clip_min > -np.inf:
            low = max(low, quantize_value(clip_min, output_scale, output_zero, qtype))
        if clip_max is not None and clip_max < np.inf:
            high = min(high, quantize_value(clip_max, output_scale, output_zero, qtype))
    return low, high


def param_records(*, folded_bias, scales, weight_zero, output_zero, low, high,
                  rounding=Rounding.FLOAT32, layer="layer"):
    """One :class:`~hw.isa.ParamRecord` per output column."""
    records = []
    for column, (b, s, zw) in enumerate(zip(folded_bias, scales, weight_zero, strict=False)):
        multiplier, shift = decompose_multiplier(s, layer=layer, column=column)
        records.append(ParamRecord(bias=int(b), multiplier=multiplier, shift=shift,
                                   rounding=rounding, weight_zero=int(zw),
                                   output_zero=int(output_zero), low=low, high=high))
    return records


def requantize_float32(acc, bias, scale, output_zero, low, high):
    """Requantize as qnnpack and onnxruntime do: ``clamp(rint(f32(sat32(acc + B)) * M) + z)``.

    ``scale`` is the float32 effective scale per column.  Rounding is half to even, as
    ``cvtps2dq`` and ``nearbyintf`` do.
    """
    t = np.clip(np.asarray(acc, dtype=np.int64) + np.asarray(bias, dtype=np.int64),
                _INT32_MIN, _INT32_MAX)
    with np.errstate(over="ignore"):
        product = t.astype(np.float32) * np.asarray(scale, dtype=np.float32)
        # Values beyond int32 saturate in the frameworks; clipping in float first keeps rint finite.
        product = np.clip(product, np.float32(-2.0 ** 31), np.float32(2.0 ** 31 - 256))
    r = np.rint(product).astype(np.int64)
    return np.minimum(np.maximum(r + np.asarray(output_zero, dtype=np.int64), low), high)

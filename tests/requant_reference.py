"""Big-integer reference of the requantization, written from its definition.

This module deliberately shares no code with :func:`sim.golden.requantize`: it works on
one Python integer at a time and computes the rounding with exact fractions, so that a
shared mistake in shifts, masks or tie detection cannot hide in both.

The definition (``docs/arithmetic.md`` and :class:`hw.isa.ParamRecord`)::

    t = saturate_int32(acc + bias)
    r = round(t * multiplier / 2**shift)        # rounding mode chosen per column
    y = min(max(r + output_zero, low), high)

In FLOAT32 rounding, ``t`` and ``t * multiplier`` are first rounded to 24 significant
bits (what a float32 holds), ties to even, and the final rounding is half to even.
"""

from fractions import Fraction
from math import floor

from hw.isa import Rounding

__all__ = ["requantize_reference", "saturate_int32", "round_fraction", "round_significant",
           "INT32_MIN", "INT32_MAX"]

INT32_MIN = -(2 ** 31)
INT32_MAX = 2 ** 31 - 1

_HALF = Fraction(1, 2)


def saturate_int32(value):
    """Clamp an integer to the int32 range.

    Parameters
    ----------
    value : int
        Any integer.

    Returns
    -------
    int
        ``value`` limited to ``-2**31 .. 2**31 - 1``.
    """
    return min(max(value, INT32_MIN), INT32_MAX)


def round_fraction(value, rounding):
    """Round an exact fraction to the nearest integer.

    Parameters
    ----------
    value : fractions.Fraction
        The exact value to round.
    rounding : Rounding or int
        What to do with exact ties: ``HALF_EVEN`` (and ``FLOAT32``) to the even
        neighbour, ``HALF_AWAY`` away from zero, ``HALF_UP`` towards +infinity.

    Returns
    -------
    int
        The rounded value.

    Raises
    ------
    ValueError
        If ``rounding`` is not a defined :class:`~hw.isa.Rounding`.
    """
    rounding = Rounding(rounding)
    below = floor(value)
    distance = value - below          # in [0, 1)
    if distance < _HALF:
        return below
    if distance > _HALF:
        return below + 1
    # An exact tie between ``below`` and ``below + 1``.
    if rounding in (Rounding.HALF_EVEN, Rounding.FLOAT32):
        return below if below % 2 == 0 else below + 1
    if rounding == Rounding.HALF_AWAY:
        return below + 1 if value > 0 else below
    return below + 1                  # HALF_UP


def round_significant(value, bits=24):
    """An integer rounded to ``bits`` significant bits, ties to even (float32: 24)."""
    drop = max(abs(value).bit_length() - bits, 0)
    return round_fraction(Fraction(value, 2 ** drop), Rounding.HALF_EVEN) * 2 ** drop


def requantize_reference(acc, *, bias, multiplier, shift, rounding, output_zero, low, high):
    """Requantize one int32 accumulator value, from the definition.

    Parameters
    ----------
    acc : int
        The int32 accumulator.
    bias : int
        The folded int32 bias ``B_j``.
    multiplier : int
        ``M0_j``, so that the effective scale is ``multiplier * 2**-shift``.
    shift : int
        ``n_j``.
    rounding : Rounding or int
        How to round ``t * multiplier / 2**shift``.
    output_zero : int
        Output zero point ``z_y``.
    low, high : int
        Clamp bounds; ``min(max(v, low), high)``, so ``high`` wins when ``low > high``.

    Returns
    -------
    int
        The requantized value (before it is truncated to a byte on the output stream).
    """
    t = saturate_int32(int(acc) + int(bias))
    product = t * int(multiplier)
    if Rounding(rounding) == Rounding.FLOAT32:
        product = round_significant(round_significant(t) * int(multiplier))
    scaled = Fraction(product, 2 ** int(shift))
    r = round_fraction(scaled, rounding)
    return min(max(r + int(output_zero), int(low)), int(high))

"""The vectorised requantization of the golden model against the big-integer reference.

``sim.golden.requantize`` works in int64 with shifts and masks; ``requant_reference``
works with Python integers and exact fractions.  The edge cases below are the places
where the int64 version could go wrong: int32 saturation, the extreme shifts, the
extreme multipliers, exact ties in every rounding mode and the clamps.
"""

from fractions import Fraction
from math import ceil, floor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from requant_reference import (
    INT32_MAX,
    INT32_MIN,
    requantize_reference,
    round_fraction,
    saturate_int32,
)

from hw.isa import PARAM_FIELDS, Rounding
from sim.golden import requantize

FIELD = {f.name: f for f in PARAM_FIELDS}
ROUNDINGS = list(Rounding)
#: The widest clamp the 9-bit bounds allow, so rounding is visible and not clamped away.
WIDE = dict(output_zero=0, low=FIELD["low"].min, high=FIELD["high"].max)
MULTIPLIERS = [0, 1, 3, 0x5A5A5A5, 1 << 30, (1 << 31) - 1]


def golden_one(acc, **params):
    """``sim.golden.requantize`` of a single value, with every parameter as one column."""
    columns = {name: np.array([value]) for name, value in params.items()}
    return int(requantize(np.array([acc]), **columns)[0])


def params_of(multiplier, shift, rounding, bias=0, **clamp):
    return dict(bias=bias, multiplier=multiplier, shift=shift, rounding=rounding,
                **(clamp or WIDE))


# -- the reference itself, against values worked out by hand ------------------------------

#: Exact ties and what each rounding mode makes of them.
TIES = {
    #  value            HALF_EVEN HALF_AWAY HALF_UP FLOAT32
    Fraction(-7, 2): (-4, -4, -3, -4),
    Fraction(-5, 2): (-2, -3, -2, -2),
    Fraction(-3, 2): (-2, -2, -1, -2),
    Fraction(-1, 2): (0, -1, 0, 0),
    Fraction(1, 2): (0, 1, 1, 0),
    Fraction(3, 2): (2, 2, 2, 2),
    Fraction(5, 2): (2, 3, 3, 2),
    Fraction(7, 2): (4, 4, 4, 4),
}


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("value", sorted(TIES))
def test_reference_rounds_ties_by_mode(value, rounding):
    assert round_fraction(value, rounding) == TIES[value][rounding]


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("value, expected", [
    (Fraction(7, 3), 2), (Fraction(8, 3), 3), (Fraction(-7, 3), -2), (Fraction(-8, 3), -3),
    (Fraction(1, 2) - Fraction(1, 2 ** 70), 0), (Fraction(-1, 2) - Fraction(1, 2 ** 70), -1),
    (Fraction(5), 5), (Fraction(-5), -5), (Fraction(0), 0),
])
def test_reference_rounds_non_ties_to_nearest(value, expected, rounding):
    assert round_fraction(value, rounding) == expected


def test_reference_rejects_undefined_rounding():
    with pytest.raises(ValueError):
        requantize_reference(1, **params_of(1, 1, 4))


def test_reference_saturates_before_scaling():
    # 2**31 - 1 scaled by 2**-25 is 63.99..., while the unsaturated 2**32 - 2 would give 128.
    assert requantize_reference(INT32_MAX, **params_of(1, 25, Rounding.HALF_EVEN,
                                                       bias=INT32_MAX)) == 64


# -- golden model: saturation ---------------------------------------------------------------

def unsaturated(acc, bias, multiplier, shift, rounding):
    """What the output would be if ``acc + bias`` were not saturated (clamped to WIDE)."""
    r = round_fraction(Fraction((acc + bias) * multiplier, 2 ** shift), rounding)
    return min(max(r, WIDE["low"]), WIDE["high"])


@pytest.mark.parametrize("acc, bias, multiplier, shift, rounding, overflows", [
    # Large overflows, visible after a coarse scale.
    (INT32_MAX, INT32_MAX, 1, 25, Rounding.HALF_EVEN, True),
    (INT32_MIN, INT32_MIN, 1, 25, Rounding.HALF_AWAY, True),
    # Overflow by one: 2**31 / 2**32 is a tie that saturation moves to 0.49999...
    (INT32_MAX, 1, 1, 32, Rounding.HALF_UP, True),
    (INT32_MAX, 1, 1, 32, Rounding.HALF_AWAY, True),
    # Underflow by one: -2**31 / 2**32 is a tie, -2**31 - 1 is not.
    (INT32_MIN, -1, 1, 32, Rounding.HALF_EVEN, True),
    (INT32_MIN, -1, 1, 32, Rounding.HALF_UP, True),
    # The int32 limits themselves do not saturate.
    (INT32_MAX, 0, 1, 32, Rounding.HALF_UP, False),
    (INT32_MIN, 0, 1, 32, Rounding.HALF_AWAY, False),
    (INT32_MAX, INT32_MIN, 1 << 30, 30, Rounding.HALF_EVEN, False),
    (INT32_MIN + 5, -5, (1 << 31) - 1, 63, Rounding.HALF_AWAY, False),
])
def test_saturation(acc, bias, multiplier, shift, rounding, overflows):
    params = params_of(multiplier, shift, rounding, bias=bias)
    expected = requantize_reference(acc, **params)
    assert golden_one(acc, **params) == expected
    # The case must actually exercise (or avoid) saturation, else it tests nothing.
    assert (expected != unsaturated(acc, bias, multiplier, shift, rounding)) == overflows


# -- golden model: every shift, extreme multipliers, values around ties ---------------------

def probe_values(multiplier, shift):
    """int32 values of ``t`` whose scaled value lies on or next to an integer or a tie."""
    values = {0, 1, -1, INT32_MIN, INT32_MAX, INT32_MIN + 1, INT32_MAX - 1}
    if multiplier == 0:
        return sorted(values)
    for n in (-200, -3, -2, -1, 0, 1, 2, 3, 200):
        for target in (Fraction(n), n + Fraction(1, 2)):
            x = target * 2 ** shift / multiplier
            values.update({floor(x) - 1, floor(x), ceil(x), ceil(x) + 1})
    return sorted(v for v in values if INT32_MIN <= v <= INT32_MAX)


@pytest.mark.parametrize("shift", range(FIELD["shift"].min + 1, FIELD["shift"].max + 1))
def test_every_shift_with_extreme_multipliers(shift):
    exact_ties = 0
    for multiplier in MULTIPLIERS:
        t = np.array(probe_values(multiplier, shift), dtype=np.int64)
        # Split t into acc + bias so the bias path is exercised too.
        bias = t // 3
        acc = t - bias
        for rounding in ROUNDINGS:
            got = requantize(acc, bias, multiplier, shift, rounding, **WIDE)
            expected = [requantize_reference(int(a), **params_of(multiplier, shift, rounding,
                                                                 bias=int(b)))
                        for a, b in zip(acc, bias, strict=True)]
            assert got.tolist() == expected, (multiplier, rounding)
        exact_ties += sum(Fraction(int(v) * multiplier, 2 ** shift).denominator == 2 for v in t)
    # Exact ties are reachable in int32 for every shift but 63 (|t * M| < 2**62 there).
    assert exact_ties > 0 or shift == 63


def tie_realisations(value):
    """``(multiplier, shift, t)`` with ``t * multiplier / 2**shift == value`` exactly."""
    for multiplier in MULTIPLIERS[1:]:
        for shift in (1, 2, 31, 32, 40, 62):
            t = value * 2 ** shift / multiplier
            if t.denominator == 1 and INT32_MIN <= t <= INT32_MAX:
                yield multiplier, shift, int(t)


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("value", sorted(TIES))
def test_exact_ties(value, rounding):
    realisations = list(tie_realisations(value))
    assert len(realisations) >= 3
    for multiplier, shift, t in realisations:
        for output_zero in (0, 10, -20):
            params = params_of(multiplier, shift, rounding, output_zero=output_zero,
                               low=WIDE["low"], high=WIDE["high"])
            expected = TIES[value][rounding] + output_zero
            assert requantize_reference(t, **params) == expected
            assert golden_one(t, **params) == expected, (multiplier, shift, t)


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("acc", [INT32_MIN, -12345, -1, 0, 1, 999, INT32_MAX])
def test_multiplier_zero_gives_the_clamped_output_zero(acc, rounding):
    for output_zero, low, high in [(0, -128, 127), (77, 0, 255), (-200, -128, 127)]:
        params = dict(bias=-7, multiplier=0, shift=17, rounding=rounding,
                      output_zero=output_zero, low=low, high=high)
        assert golden_one(acc, **params) == min(max(output_zero, low), high)


@pytest.mark.parametrize("multiplier, shift", [(2, 1), (1 << 30, 30), ((1 << 30) + (1 << 29), 30)])
@pytest.mark.parametrize("acc", [-300, -129, -128, -1, 0, 1, 127, 128, 255, 256])
def test_simple_scales(acc, multiplier, shift):
    # 2 * 2**-1 and 2**30 * 2**-30 are exactly 1; 1.5 * 2**30 * 2**-30 is 1.5.
    scale = Fraction(multiplier, 2 ** shift)
    params = params_of(multiplier, shift, Rounding.HALF_EVEN)
    expected = round_fraction(acc * scale, Rounding.HALF_EVEN)
    assert golden_one(acc, **params) == min(max(expected, -256), 255)


# -- golden model: clamps -------------------------------------------------------------------

#: (output_zero, low, high) of the usual output schemes.
CLAMPS = {
    "uint8": (128, 0, 255),
    "int8": (0, -128, 127),
    "relu_uint8": (37, 37, 255),            # lo = max(0, z_y)
    "relu_int8": (-5, -5, 127),             # lo = max(-128, z_y)
    "relu6_uint8": (10, 10, 110),           # s_y = 0.06: hi = min(255, z_y + round(6 / s_y))
    "relu6_int8": (-128, -128, -28),
    "low_above_high": (0, 50, -50),
    "full_9_bit": (0, -256, 255),
}


@pytest.mark.parametrize("scheme", sorted(CLAMPS))
def test_clamps(scheme):
    output_zero, low, high = CLAMPS[scheme]
    acc = np.arange(-700, 701, 3)
    got = requantize(acc, 5, 1 << 30, 31, Rounding.HALF_AWAY, output_zero, low, high)
    for a, y in zip(acc.tolist(), got.tolist(), strict=True):
        assert y == requantize_reference(a, bias=5, multiplier=1 << 30, shift=31,
                                         rounding=Rounding.HALF_AWAY,
                                         output_zero=output_zero, low=low, high=high)
    if low <= high:
        assert got.min() == low and got.max() == high   # the range reaches both bounds
    else:
        assert set(got.tolist()) == {high}              # min(max(v, lo), hi) = hi


# -- golden model: per-column broadcasting --------------------------------------------------

def random_columns(rng, cols):
    """Per-column parameters, with every rounding mode present."""
    return dict(
        bias=rng.integers(-(1 << 20), 1 << 20, cols),
        multiplier=rng.integers(1 << 29, 1 << 31, cols),
        shift=rng.integers(30, 45, cols),
        rounding=np.arange(cols) % len(ROUNDINGS),
        output_zero=rng.integers(-20, 20, cols),
        low=rng.integers(-256, -100, cols),
        high=rng.integers(100, 256, cols),
    )


@pytest.mark.parametrize("shape", [(7,), (5, 7), (2, 3, 7)])
def test_per_column_parameters_broadcast_along_the_last_axis(shape):
    rng = np.random.default_rng(sum(shape))
    params = random_columns(rng, shape[-1])
    acc = rng.integers(-(1 << 24), 1 << 24, shape)
    got = requantize(acc, **params)
    assert got.shape == acc.shape
    for index in np.ndindex(*shape):
        column = {name: int(values[index[-1]]) for name, values in params.items()}
        assert got[index] == requantize_reference(int(acc[index]), **column), index


def test_scalar_parameters_apply_to_every_column():
    acc = np.arange(-50, 50).reshape(10, 10) * 1001
    params = params_of(0x4000_0001, 37, Rounding.HALF_UP)
    got = requantize(acc, **params)
    assert got.tolist() == [[requantize_reference(a, **params) for a in row]
                            for row in acc.tolist()]


# -- property tests over the full field ranges ----------------------------------------------

def field_values(name):
    return st.integers(FIELD[name].min, FIELD[name].max)


valid_shifts = st.integers(1, FIELD["shift"].max)
int32s = st.integers(INT32_MIN, INT32_MAX)


@settings(max_examples=400, deadline=None)
@given(acc=int32s, bias=field_values("bias"), multiplier=field_values("multiplier"),
       shift=valid_shifts, rounding=st.sampled_from(ROUNDINGS),
       output_zero=field_values("output_zero"), low=field_values("low"),
       high=field_values("high"))
def test_matches_reference_over_full_field_ranges(acc, bias, multiplier, shift, rounding,
                                                  output_zero, low, high):
    params = dict(bias=bias, multiplier=multiplier, shift=shift, rounding=rounding,
                  output_zero=output_zero, low=low, high=high)
    assert golden_one(acc, **params) == requantize_reference(acc, **params)


@settings(max_examples=400, deadline=None)
@given(multiplier=st.integers(1, FIELD["multiplier"].max), shift=valid_shifts,
       target=st.integers(-300, 300), tie=st.booleans(), nudge=st.integers(-2, 2),
       bias=field_values("bias"), rounding=st.sampled_from(ROUNDINGS))
def test_matches_reference_next_to_rounding_boundaries(multiplier, shift, target, tie, nudge,
                                                       bias, rounding):
    # Random inputs almost always clamp; aim t at a scaled value of target (+ 1/2).
    x = (target + Fraction(tie, 2)) * 2 ** shift / multiplier
    t = saturate_int32(floor(x) + nudge)
    acc = saturate_int32(t - bias)
    params = params_of(multiplier, shift, rounding, bias=bias)
    assert golden_one(acc, **params) == requantize_reference(acc, **params)


# -- FLOAT32 rounding: the frameworks' float32 arithmetic ----------------------------------

def _float32_framework(t, multiplier, shift):
    """What qnnpack and onnxruntime compute: rint(float32(t) * float32(scale))."""
    scale = np.float32(multiplier * 2.0 ** -shift)
    assert float(scale) == multiplier * 2.0 ** -shift, "scale must be a float32 value"
    return int(np.rint(np.float32(t) * scale))


@pytest.mark.parametrize("t", [
    2 ** 24 + 1, 2 ** 24 + 3, -(2 ** 24 + 1), -(2 ** 24 + 3),   # float32 conversion ties
    2 ** 25 + 2, 2 ** 25 + 6, 2 ** 31 - 1, INT32_MIN, 2 ** 24 - 1, 12345, -1, 0,
])
@pytest.mark.parametrize("multiplier, shift", [
    ((1 << 23) << 7, 31), (((1 << 24) - 1) << 7, 40), (0xABCDEF << 7, 33), (0x800001 << 7, 52),
])
def test_float32_rounding_matches_float32_arithmetic(t, multiplier, shift):
    expected = _float32_framework(t, multiplier, shift)
    params = params_of(multiplier, shift, Rounding.FLOAT32, low=-(2 ** 62), high=2 ** 62,
                       output_zero=0)
    assert requantize_reference(t, **params) == expected
    assert golden_one(t, **params) == expected


@settings(max_examples=400, deadline=None)
@given(t=st.integers(INT32_MIN, INT32_MAX), mantissa=st.integers(1 << 23, (1 << 24) - 1),
       shift=st.integers(31, 63))
def test_float32_rounding_matches_float32_arithmetic_property(t, mantissa, shift):
    multiplier = mantissa << 7
    params = params_of(multiplier, shift, Rounding.FLOAT32, low=-(2 ** 62), high=2 ** 62,
                       output_zero=0)
    assert golden_one(t, **params) == _float32_framework(t, multiplier, shift)


def test_float32_rounding_differs_from_exact_rounding_somewhere():
    # The float32 path rounds t and the product: on values past 2**24 that shows.
    rng = np.random.default_rng(5)
    t = rng.integers(2 ** 28, 2 ** 31, 2000)
    exact = requantize(t, 0, 0xABCDEF << 7, 36, Rounding.HALF_EVEN, 0, -(2 ** 62), 2 ** 62)
    as_float = requantize(t, 0, 0xABCDEF << 7, 36, Rounding.FLOAT32, 0, -(2 ** 62), 2 ** 62)
    assert (exact != as_float).any()
    # ...but only by float32's own precision (two roundings of 2**-24 relative, and rint).
    assert (np.abs(exact - as_float) <= np.abs(exact) * 2.0 ** -22 + 1).all()

"""Per-column requantization of accumulator rows to bytes (or raw int32 bytes)."""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .config import ACC_WIDTH, check_config
from .serializer import out_vector_layout

__all__ = ["Requantizer", "requant_input_layout"]

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
#: Pipeline depth: saturating bias add; float32 rounding of the sum; the four partial
#: products of the multiply (one MULT18X18D each, registered on both sides); their
#: middle sum; the 64-bit product; its length; its float32 rounding; the integer
#: rounding's floor and round-up bit; offset and clamp.
STAGES = 9
#: Significant bits of a float32 (23 stored mantissa bits and the implicit one).
FLOAT32_SIGNIFICANT_BITS = 24
#: Width of the product ``t * multiplier`` (``|t| <= 2**31`` after float32 rounding).
PRODUCT_WIDTH = 64
#: Width the floor of ``product / 2**shift`` is saturated to: every value beyond lies
#: outside every clamp range (9-bit bounds and zero point), so the result is the same.
FLOOR_WIDTH = 13
#: Where the multiply operands split into DSP-sized pieces (ECP5 MULT18X18D: 18x18
#: signed, so 17 unsigned low bits).
_SPLIT = 17


def requant_input_layout(config):
    """An accumulator row on its way to the requantizer."""
    return data.StructLayout({
        "values": data.ArrayLayout(signed(ACC_WIDTH), config.cols),
        "raw": 1,
        "n": range(config.cols + 1),
    })


class Requantizer(wiring.Component):
    """Requantizes ``cols`` columns in parallel, one accumulator row per cycle.

    Per column ``j`` (``docs/arithmetic.md``, parameters from :data:`hw.isa.PARAM_FIELDS`):

    1. ``t = saturate_int32(acc + bias_j)``
    2. ``p = t * multiplier_j`` (64-bit product)
    3. ``r = round(p / 2**shift_j)``: floor, plus one when the remainder exceeds half,
       or equals half and the column's rounding breaks ties upwards (half-even: the
       floor is odd; half-away: ``p >= 0``; half-up: always)
    4. ``y = min(max(r + output_zero_j, low_j), high_j)``, sent as its low byte.

    In ``FLOAT32`` rounding ``t`` and ``p`` are first rounded to 24 significant bits.
    With ``raw`` the row leaves as ``4 * n`` little-endian int32 bytes instead.  The
    pipeline has :data:`STAGES` registers and stalls as one.

    The arithmetic is exact, in short stages sized for the ECP5: the multiply is four
    DSP-sized partial products with registers on both sides; a rounding to 24
    significant bits is a leading-bit search (a tree), a mask and one add, never a
    negation; and ``r`` is kept only to :data:`FLOOR_WIDTH` bits, saturated, since the
    9-bit clamp cannot tell larger values apart.

    Members
    -------
    rows : In(stream.Signature(requant_input_layout(config)))
    params : In(ArrayLayout(param_layout(), cols))
        The column parameter registers; stable while a store runs.
    vectors : Out(stream.Signature(out_vector_layout(config)))
    busy : Out(1)
        A row is in the pipeline.
    """

    def __init__(self, *, config):
        check_config(config)
        self.config = config
        super().__init__({
            "rows": In(stream.Signature(requant_input_layout(config))),
            "params": In(data.ArrayLayout(isa.param_layout(), config.cols)),
            "vectors": Out(stream.Signature(out_vector_layout(config))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cols = self.config.cols
        advance = Signal()
        valid = Signal(STAGES)
        m.d.comb += [
            advance.eq(~self.vectors.valid | self.vectors.ready),
            self.rows.ready.eq(advance),
            self.vectors.valid.eq(valid[-1]),
            self.busy.eq(valid.any()),
        ]

        # Side-band (raw mode, column count, raw values) travels with the row.
        sides = [Signal(requant_input_layout(self.config), name=f"side_{i}")
                 for i in range(STAGES)]
        with m.If(advance):
            m.d.sync += valid.eq((valid << 1) | self.rows.valid)
            m.d.sync += sides[0].eq(self.rows.payload)
            for i in range(1, STAGES):
                m.d.sync += sides[i].eq(sides[i - 1])

        out = self.vectors.payload
        final = sides[-1]
        for j in range(cols):
            byte = self._lane(m, advance, j, self.rows.payload.values[j], self.params[j])
            raw_word = final.values[j].as_unsigned()
            in_row = j < final.n
            with m.If(final.raw):
                for b in range(4):
                    m.d.comb += out.bytes[4 * j + b].eq(Mux(in_row, raw_word.word_select(b, 8), 0))
            with m.Else():
                m.d.comb += out.bytes[j].eq(Mux(in_row, byte, 0))
        m.d.comb += out.length.eq(Mux(final.raw, final.n * 4, final.n))
        return m

    def _lane(self, m, advance, j, acc, params):
        """The :data:`STAGES` pipeline registers of column ``j``; returns the output byte.

        Each stage is one register (or a few side by side); the comments number them.
        """
        as_float32 = params.rounding == isa.Rounding.FLOAT32

        def stage(shape, name):
            return Signal(shape, name=f"{name}_{j}")

        # 1. t = saturate_int32(acc + bias)
        total = stage(signed(ACC_WIDTH + 1), "total")
        t = stage(signed(ACC_WIDTH), "sat")
        m.d.comb += total.eq(acc + params.bias)
        overflow = total[-1] != total[-2]
        saturated = Mux(overflow, Mux(total[-1], _INT32_MIN, _INT32_MAX), total[:ACC_WIDTH])

        # 2. t rounded to 24 significant bits in FLOAT32 mode (|t| <= 2**31: at most 8 bits drop)
        t_operand = stage(signed(ACC_WIDTH + 1), "t_operand")
        t_float32 = _round_to_float32(m, t, _significant_length(m, t, f"t_{j}"), f"t_{j}")

        # 3. the four partial products of t * multiplier, one DSP each
        t_low, t_high = t_operand[:_SPLIT], t_operand[_SPLIT:].as_signed()
        m_low, m_high = params.multiplier[:_SPLIT], params.multiplier[_SPLIT:]
        low_low = stage(unsigned(2 * _SPLIT), "low_low")
        low_high = stage(unsigned(_SPLIT + len(m_high)), "low_high")
        high_low = stage(signed(len(t_high) + _SPLIT + 1), "high_low")
        high_high = stage(signed(len(t_high) + len(m_high) + 1), "high_high")

        # 4. the middle sum (the others wait a stage)
        middle = stage(signed(max(len(low_high), len(high_low)) + 1), "middle")
        low_low_4 = stage(unsigned(2 * _SPLIT), "low_low_4")
        high_high_4 = stage(signed(len(high_high)), "high_high_4")

        # 5. the 64-bit product
        product = stage(signed(PRODUCT_WIDTH), "product")

        # 6. its significant length
        length = stage(range(PRODUCT_WIDTH + 1), "length")
        product_6 = stage(signed(PRODUCT_WIDTH), "product_6")

        # 7. the product rounded to 24 significant bits in FLOAT32 mode
        value = stage(signed(PRODUCT_WIDTH + 1), "value")
        length_7 = stage(range(PRODUCT_WIDTH + 1), "length_7")

        # 8. floor(value / 2**shift), saturated, and whether to round it up
        floor = stage(signed(FLOOR_WIDTH), "floor")
        up = stage(1, "up")
        shift = params.shift
        floor_value = value >> shift
        half = value.bit_select((shift - 1).as_unsigned()[:len(shift)], 1)
        sticky = (value & _below(shift, len(value) + 1)[1:]).any()
        tie_up = Signal(name=f"tie_up_{j}")
        with m.Switch(params.rounding):
            with m.Case(isa.Rounding.HALF_EVEN, isa.Rounding.FLOAT32):
                m.d.comb += tie_up.eq(floor_value[0])
            with m.Case(isa.Rounding.HALF_AWAY):
                m.d.comb += tie_up.eq(~value[-1])
            with m.Default():
                m.d.comb += tie_up.eq(1)
        # Beyond FLOOR_WIDTH - 2 bits the floor lies outside every clamp range, so a
        # saturated floor gives the same result; the float32 rounding above adds at most
        # one bit to the product's length.
        too_long = length_7 > shift + (FLOOR_WIDTH - 2)
        floor_limit = Mux(value[-1], -(1 << (FLOOR_WIDTH - 1)), (1 << (FLOOR_WIDTH - 1)) - 1)

        # 9. offset and clamp
        clamped = stage(signed(9), "clamped")
        offset = stage(signed(FLOOR_WIDTH + 2), "offset")
        at_least_low = stage(signed(FLOOR_WIDTH + 2), "at_least_low")
        m.d.comb += [
            offset.eq(floor + up + params.output_zero),
            at_least_low.eq(Mux(offset < params.low, params.low, offset)),
        ]

        with m.If(advance):
            m.d.sync += [
                t.eq(saturated),
                t_operand.eq(Mux(as_float32, t_float32, t)),
                low_low.eq(t_low * m_low),
                low_high.eq(t_low * m_high),
                high_low.eq(t_high * m_low),
                high_high.eq(t_high * m_high),
                middle.eq(low_high + high_low),
                low_low_4.eq(low_low),
                high_high_4.eq(high_high),
                product.eq(low_low_4 + (middle << _SPLIT) + (high_high_4 << (2 * _SPLIT))),
                length.eq(_significant_length(m, product, f"product_{j}")),
                product_6.eq(product),
                value.eq(Mux(as_float32,
                             _round_to_float32(m, product_6, length, f"product_{j}"),
                             product_6)),
                length_7.eq(length),
                floor.eq(Mux(too_long, floor_limit, floor_value[:FLOOR_WIDTH])),
                up.eq(~too_long & half & (sticky | tie_up)),
                clamped.eq(Mux(at_least_low > params.high, params.high, at_least_low)),
            ]
        return clamped[:8]


def _significant_length(m, value, name):
    """Bits of ``value`` besides its sign: the bit length of ``value``, or of ``~value``
    below zero.

    Below zero this is the magnitude's bit length except at ``-2**k``, whose magnitude
    is one bit longer; rounding to a number of significant bits leaves ``-2**k``
    unchanged either way.  A tree of ``log2(width)`` levels finds the highest bit that
    differs from the sign.
    """
    bits = value.as_unsigned() ^ value[-1].replicate(len(value))
    size = 1 << (len(value) - 1).bit_length()

    def highest(lo, hi):
        """(any bit set in bits[lo:hi], index of the highest one as bits, LSB first)"""
        if hi - lo == 1:
            return (bits[lo] if lo < len(value) else Const(0, 1)), []
        mid = (lo + hi) // 2
        any_low, at_low = highest(lo, mid)
        any_high, at_high = highest(mid, hi)
        return any_low | any_high, [Mux(any_high, h, lo_bit)
                                    for h, lo_bit in zip(at_high, at_low, strict=True)] + [any_high]

    found, index = highest(0, size)
    length = Signal(range(len(value) + 1), name=f"{name}_length")
    m.d.comb += length.eq(Mux(found, Cat(*index) + 1, 0))
    return length


def _round_to_float32(m, value, length, name):
    """``value`` rounded to 24 significant bits, ties to even: what a float32 holds.

    ``length`` is :func:`_significant_length` of ``value``; ``drop`` bits go.  Adding
    ``2**(drop - 1) - 1`` and the lowest kept bit carries into the kept bits exactly
    when the dropped bits are above half a step, or half with the kept part odd; the
    dropped bits are then cleared (as :func:`sim.golden.round_significant` rounds).
    """
    width = len(value)
    drop = Signal(range(width - FLOAT32_SIGNIFICANT_BITS + 1), name=f"{name}_drop")
    odd = Signal(name=f"{name}_odd")
    total = Signal(signed(width + 1), name=f"{name}_total")
    result = Signal(signed(width + 1), name=f"{name}_float32")
    m.d.comb += drop.eq(Mux(length > FLOAT32_SIGNIFICANT_BITS,
                            length - FLOAT32_SIGNIFICANT_BITS, 0))
    below = _below(drop, width + 1)
    m.d.comb += [
        odd.eq(value.bit_select(drop, 1) & (drop != 0)),
        total.eq(value + below[1:] + odd),
        result.eq(total & ~below),
    ]
    return result


def _greater_than(value, constant):
    """``value > constant`` as plain logic: a comparison with a constant would otherwise
    become a carry chain of its own, one per bit of every mask below."""
    result = Const(0, 1)
    for bit in range(len(value)):   # from the least significant bit up
        if (constant >> bit) & 1:
            result = value[bit] & result
        else:
            result = value[bit] | result
    return result if constant < (1 << len(value)) else Const(0, 1)


def _below(position, width):
    """The ``width``-bit mask of the bits below ``position`` (bit ``i`` is ``position > i``)."""
    return Cat(*(_greater_than(position, i) for i in range(width)))

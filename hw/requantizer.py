"""Per-column requantization of accumulator rows to bytes (or raw int32 bytes)."""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .config import ACC_WIDTH, check_config
from .serializer import out_vector_layout

__all__ = ["Requantizer", "requant_input_layout"]

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
#: Pipeline depth: saturating bias add, float32 rounding of the sum, multiply, float32
#: rounding of the product, rounding to an integer, offset and clamp.
STAGES = 6
#: Significant bits of a float32 (23 stored mantissa bits and the implicit one).
FLOAT32_SIGNIFICANT_BITS = 24


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

    With ``raw`` the row leaves as ``4 * n`` little-endian int32 bytes instead.  The
    pipeline has :data:`STAGES` registers and stalls as one.

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
        """The pipeline stages of column ``j``; returns the output byte register."""
        as_float32 = params.rounding == isa.Rounding.FLOAT32
        t = Signal(signed(ACC_WIDTH), name=f"sat_{j}")
        t_operand = Signal(signed(ACC_WIDTH + 1), name=f"t_operand_{j}")
        product = Signal(signed(64), name=f"product_{j}")
        p_operand = Signal(signed(64), name=f"p_operand_{j}")
        rounded = Signal(signed(64), name=f"rounded_{j}")
        clamped = Signal(signed(9), name=f"clamped_{j}")

        total = Signal(signed(ACC_WIDTH + 1), name=f"total_{j}")
        m.d.comb += total.eq(acc + params.bias)

        floor, above_half, at_half = _divide_by_power_of_two(m, p_operand, params.shift,
                                                             f"p_{j}")
        tie_up = Signal(name=f"tie_up_{j}")
        with m.Switch(params.rounding):
            with m.Case(isa.Rounding.HALF_EVEN, isa.Rounding.FLOAT32):
                m.d.comb += tie_up.eq(floor[0])
            with m.Case(isa.Rounding.HALF_AWAY):
                m.d.comb += tie_up.eq(~p_operand[-1])
            with m.Default():
                m.d.comb += tie_up.eq(1)

        offset = Signal(signed(65), name=f"offset_{j}")
        at_least_low = Signal(signed(65), name=f"at_least_low_{j}")
        m.d.comb += [
            offset.eq(rounded + params.output_zero),
            at_least_low.eq(Mux(offset < params.low, params.low, offset)),
        ]

        with m.If(advance):
            m.d.sync += [
                t.eq(Mux(total > _INT32_MAX, _INT32_MAX,
                         Mux(total < _INT32_MIN, _INT32_MIN, total))),
                t_operand.eq(Mux(as_float32, _round_to_float32(m, t, f"t_{j}"), t)),
                product.eq(t_operand * params.multiplier),
                p_operand.eq(Mux(as_float32, _round_to_float32(m, product, f"p_{j}"), product)),
                rounded.eq(floor + (above_half | (at_half & tie_up))),
                clamped.eq(Mux(at_least_low > params.high, params.high, at_least_low)),
            ]
        return clamped[:8]


def _divide_by_power_of_two(m, value, shift, name):
    """``floor(value / 2**shift)``, and whether the remainder is above or exactly half a
    step (meaningful for ``shift >= 1``): what every rounding here is decided from."""
    width = len(value)
    floor = Signal(signed(width), name=f"{name}_floor")
    frac = Signal(unsigned(width), name=f"{name}_frac")
    half = Signal(unsigned(width), name=f"{name}_half")
    m.d.comb += [
        floor.eq(value >> shift),
        frac.eq(value.as_unsigned() & ((Const(1, unsigned(width)) << shift) - 1)),
        half.eq(Const(1, unsigned(width)) << (shift - 1).as_unsigned()[:len(shift)]),
    ]
    return floor, frac > half, frac == half


def _round_to_float32(m, value, name):
    """``value`` rounded to 24 significant bits, ties to even: what a float32 holds.

    A priority encoder finds the magnitude's length; the bits below the top 24
    are rounded away like :func:`sim.golden.round_significant` does.
    """
    width = len(value)
    magnitude = Signal(unsigned(width), name=f"{name}_magnitude")
    length = Signal(range(width + 1), name=f"{name}_length")
    drop = Signal(range(width + 1), name=f"{name}_drop")
    result = Signal(signed(width + 1), name=f"{name}_float32")
    m.d.comb += magnitude.eq(Mux(value < 0, -value, value))
    for bit in range(width):  # the highest set bit wins
        with m.If(magnitude[bit]):
            m.d.comb += length.eq(bit + 1)
    m.d.comb += drop.eq(Mux(length > FLOAT32_SIGNIFICANT_BITS,
                            length - FLOAT32_SIGNIFICANT_BITS, 0))
    floor, above_half, at_half = _divide_by_power_of_two(m, value, drop, name)
    up = (drop != 0) & (above_half | (at_half & floor[0]))
    m.d.comb += result.eq((floor + up) << drop)
    return result

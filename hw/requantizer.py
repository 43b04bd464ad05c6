"""Per-column requantization of accumulator rows to bytes (or raw int32 bytes)."""

from math import ceil

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .config import ACC_WIDTH, check_config
from .serializer import out_vector_layout

__all__ = ["Requantizer", "requant_input_layout", "STAGES", "QUEUE_DEPTH"]

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
#: Pipeline registers of a lane: saturating bias add; the significant length of the sum;
#: the bits its float32 rounding drops; the lowest bit it keeps; that rounding; the four
#: partial products of the multiply (one MULT18X18D each, registered on both sides);
#: their middle sum; the 64-bit product; its significant length; the bits its float32
#: rounding drops; the lowest bit it keeps; that rounding; the shift (floor, half and
#: sticky bits); the rounded floor plus the zero point; the clamp.  Each float32
#: rounding takes three stages (the mask of the bits it drops, the lowest bit it keeps,
#: the add): on the ECP5 any two of them in one stage set the requantizer's clock.
STAGES = 15
#: Requantized rows the output queue holds.  A row takes a credit (a queue place) when it
#: enters and returns it when it leaves the queue; ``STAGES + 3`` places cover the rows in
#: flight between the two, so the queue never throttles a requantizer that the data-out
#: port keeps up with.
QUEUE_DEPTH = 1 << (STAGES + 2).bit_length()
assert QUEUE_DEPTH >= STAGES + 3
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


def _queue_layout(config):
    """A requantized row in the output queue: a byte per column (zero from ``n`` on)."""
    return data.StructLayout({"bytes": data.ArrayLayout(8, config.cols),
                              "n": range(config.cols + 1)})


def _tag_layout(config):
    """What travels down the lanes beside the arithmetic: which part of which row."""
    chunks = ceil(config.cols / config.requant_lanes)
    return data.StructLayout({"valid": 1, "chunk": range(chunks), "last": 1,
                              "n": range(config.cols + 1)})


def _pick(index, options):
    """``options[index]`` (Values of one width); the only one if there is one."""
    if len(options) == 1:
        return options[0]
    return Cat(*options).word_select(index, len(options[0]))


class Requantizer(wiring.Component):
    """Requantizes accumulator rows, ``requant_lanes`` columns at a time.

    Per column ``j`` (``docs/arithmetic.md``, parameters from :data:`hw.isa.PARAM_FIELDS`):

    1. ``t = saturate_int32(acc + bias_j)``
    2. ``p = t * multiplier_j`` (64-bit product)
    3. ``r = round(p / 2**shift_j)``: floor, plus one when the remainder exceeds half,
       or equals half and the column's rounding breaks ties upwards (half-even: the
       floor is odd; half-away: ``p >= 0``; half-up: always)
    4. ``y = min(max(r + output_zero_j, low_j), high_j)``, sent as its low byte.

    In ``FLOAT32`` rounding ``t`` and ``p`` are first rounded to 24 significant bits.
    With ``raw`` the row leaves as ``4 * n`` little-endian int32 bytes instead.

    A requantized row waits in a holding register while its columns go through the
    ``requant_lanes`` lanes, ``requant_lanes`` a cycle (``config.requant_cycles(n)``
    cycles); the lanes are a pipeline of :data:`STAGES` registers that always advances
    (a stage's registers load only when it holds a row, which is all its enable does),
    and the row's bytes, assembled, enter a queue of :data:`QUEUE_DEPTH` rows.  A row
    enters only while it has a credit, a place in that queue kept for it: a data-out
    stall stops the rows one cycle later, through the credit count, and never reaches
    the pipeline.  A raw row skips the arithmetic: it leaves from the holding register
    itself, once every requantized row before it has left.

    Timing, without stalls: a requantized row of ``n`` columns taken in cycle ``a`` is
    offered from cycle ``a + STAGES + requant_cycles(n) + 1``, a raw row from ``a + 1``;
    the next row is taken in cycle ``a + requant_cycles(n)`` (requantized) or in the
    cycle the raw row leaves.

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
        A row is held, in the lanes or in the queue.
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
        c = self.config
        cols, lanes = c.cols, c.requant_lanes
        chunks = ceil(cols / lanes)
        queue_layout = _queue_layout(c)
        m.submodules.queue = queue = fifo.SyncFIFO(width=queue_layout.as_shape().width,
                                                   depth=QUEUE_DEPTH)
        queued = data.View(queue_layout, queue.r_data)

        # The holding register and the chunk of it the lanes take this cycle.
        held = Signal(requant_input_layout(c))
        held_valid = Signal()
        chunk = Signal(range(chunks))
        last_chunk = Signal(init=1)
        # The columns the held row's next chunk would end at (an add, not a multiply: a
        # multiply by a constant would take a DSP).
        next_end = Signal(range((chunks + 1) * lanes + 1))
        credits = Signal(range(QUEUE_DEPTH + 1), init=QUEUE_DEPTH)
        tags = [Signal(_tag_layout(c), name=f"tag_{s + 1}") for s in range(STAGES)]
        issue = Signal()
        raw_out = Signal()
        free = Signal()
        accept = Signal()
        # Whether any stage holds a row, registered (the OR of the stages' valid bits next
        # cycle): behind the raw row's exit it was the requantizer's longest path.
        lanes_busy = Signal()

        out = self.vectors.payload
        with m.If(queue.r_rdy):
            m.d.comb += [self.vectors.valid.eq(1), queue.r_en.eq(self.vectors.ready),
                         out.length.eq(queued.n)]
            for j in range(cols):
                m.d.comb += out.bytes[j].eq(queued.bytes[j])
        with m.Elif(raw_out):
            m.d.comb += [self.vectors.valid.eq(1), out.length.eq(held.n * 4)]
            for j in range(cols):
                word = held.values[j].as_unsigned() & (j < held.n).replicate(ACC_WIDTH)
                for b in range(4):
                    m.d.comb += out.bytes[4 * j + b].eq(word.word_select(b, 8))

        m.d.comb += [
            issue.eq(held_valid & ~held.raw),
            # A raw row leaves once every requantized row before it has.
            raw_out.eq(held_valid & held.raw & ~lanes_busy & ~queue.r_rdy),
            free.eq(~held_valid | (issue & last_chunk) | (raw_out & self.vectors.ready)),
            self.rows.ready.eq(free & (credits != 0)),
            accept.eq(self.rows.valid & self.rows.ready),
            self.busy.eq(held_valid | lanes_busy | queue.r_rdy),
        ]
        m.d.sync += credits.eq(credits - (accept & ~self.rows.payload.raw)
                               + (queue.r_en & queue.r_rdy))
        with m.If(accept):
            m.d.sync += [held.eq(self.rows.payload), held_valid.eq(1)]
            if chunks > 1:
                m.d.sync += [chunk.eq(0), last_chunk.eq(self.rows.payload.n <= lanes),
                             next_end.eq(2 * lanes)]
        with m.Elif(free):
            m.d.sync += held_valid.eq(0)
        if chunks > 1:
            with m.If(issue & ~last_chunk):
                m.d.sync += [chunk.eq(chunk + 1), last_chunk.eq(held.n <= next_end),
                             next_end.eq(next_end + lanes)]

        # The tags follow the lanes' stages.
        m.d.sync += lanes_busy.eq(issue | Cat(*(t.valid for t in tags[:-1])).any())
        m.d.sync += [tags[0].valid.eq(issue), tags[0].chunk.eq(chunk),
                     tags[0].last.eq(last_chunk), tags[0].n.eq(held.n)]
        for s in range(1, STAGES):
            m.d.sync += tags[s].eq(tags[s - 1])

        def params_at(stage, lane):
            """The parameter record of ``lane``'s column at the input of register ``stage``
            (0: the holding register)."""
            index = chunk if stage == 0 else tags[stage - 1].chunk
            width = isa.param_layout().as_shape().width
            options = [Value.cast(self.params[k * lanes + lane]) if k * lanes + lane < cols
                       else Const(0, width) for k in range(chunks)]
            return data.View(isa.param_layout(), _pick(index, options))

        valids = [issue] + [t.valid for t in tags]
        lane_bytes = []
        for i in range(lanes):
            acc = _pick(chunk, [Value.cast(held.values[k * lanes + i]) if k * lanes + i < cols
                                else Const(0, ACC_WIDTH) for k in range(chunks)]).as_signed()
            lane_bytes.append(self._lane(m, i, acc, lambda s, i=i: params_at(s, i), valids))

        # Assemble the row's chunks and queue it with its last one.
        final = tags[-1]
        assembled = [Signal(8, name=f"assembled_{j}") for j in range((chunks - 1) * lanes)]
        for j, byte in enumerate(assembled):
            with m.If(final.valid & (final.chunk == j // lanes)):
                m.d.sync += byte.eq(lane_bytes[j % lanes])
        entry = data.View(queue_layout, queue.w_data)
        m.d.comb += [queue.w_en.eq(final.valid & final.last), entry.n.eq(final.n)]
        for j in range(cols):
            byte = lane_bytes[j % lanes]
            if j < len(assembled):
                byte = Mux(final.chunk == j // lanes, byte, assembled[j])
            m.d.comb += entry.bytes[j].eq(byte & (j < final.n).replicate(8))
        return m

    def _lane(self, m, i, acc, params_at, valids):
        """The :data:`STAGES` pipeline registers of lane ``i``; returns its output byte.

        ``params_at(s)`` is the parameter record at the input of register ``s`` (the
        chunk there selects the column), ``valids[s]`` whether that input holds a row.
        Register ``s`` loads only then: the arithmetic sits inside its enable, so a
        simulator computes it only for rows (no comb signal in between).  The comments
        number the registers.
        """
        stages = []

        def stage(shape, name):
            return Signal(shape, name=f"{name}_{i}")

        def load(number, *assignments):
            stages.append(number)
            with m.If(valids[number - 1]):
                m.d.sync += assignments

        def as_float32(number):
            return params_at(number - 1).rounding == isa.Rounding.FLOAT32

        # 1. t = saturate_int32(acc + bias)
        t = stage(signed(ACC_WIDTH), "sat")
        total = (acc + Value.cast(params_at(0).bias))
        overflow = total[-1] != total[-2]
        load(1, t.eq(Mux(overflow, Mux(total[-1], _INT32_MIN, _INT32_MAX), total[:ACC_WIDTH])))

        # 2. its significant length
        t_length = stage(range(ACC_WIDTH + 1), "t_length")
        t_2 = stage(signed(ACC_WIDTH), "t_2")
        load(2, t_length.eq(_significant_length(t)), t_2.eq(t))

        # 3. the bits the rounding of t to 24 significant bits drops in FLOAT32 mode (else
        #    none; |t| <= 2**31: at most 8 bits drop), as a mask
        t_mask = stage(ACC_WIDTH + 1, "t_mask")
        t_3 = stage(signed(ACC_WIDTH), "t_3")
        load(3, t_mask.eq(Cat(*_float32_mask(t_length, as_float32(3), ACC_WIDTH + 1))),
             t_3.eq(t_2))

        # 4. the lowest bit the mask keeps (a stage of its own: behind the mask's logic
        #    it set the clock)
        t_odd = stage(1, "t_odd")
        t_mask_4 = stage(ACC_WIDTH + 1, "t_mask_4")
        t_4 = stage(signed(ACC_WIDTH), "t_4")
        load(4, t_odd.eq(_lowest_kept(t_3, t_mask)), t_mask_4.eq(t_mask), t_4.eq(t_3))

        # 5. t rounded
        t_operand = stage(signed(ACC_WIDTH + 1), "t_operand")
        load(5, t_operand.eq(_round_to_float32(t_4, t_mask_4, t_odd)))

        # 6. the four partial products of t * multiplier, one DSP each
        multiplier = Value.cast(params_at(5).multiplier)
        t_low, t_high = t_operand[:_SPLIT], t_operand[_SPLIT:].as_signed()
        m_low, m_high = multiplier[:_SPLIT], multiplier[_SPLIT:]
        low_low = stage(unsigned(2 * _SPLIT), "low_low")
        low_high = stage(unsigned(_SPLIT + len(m_high)), "low_high")
        high_low = stage(signed(len(t_high) + _SPLIT + 1), "high_low")
        high_high = stage(signed(len(t_high) + len(m_high) + 1), "high_high")
        load(6, low_low.eq(t_low * m_low), low_high.eq(t_low * m_high),
             high_low.eq(t_high * m_low), high_high.eq(t_high * m_high))

        # 7. the middle sum (the others wait a stage)
        middle = stage(signed(max(len(low_high), len(high_low)) + 1), "middle")
        low_low_7 = stage(unsigned(2 * _SPLIT), "low_low_7")
        high_high_7 = stage(signed(len(high_high)), "high_high_7")
        load(7, middle.eq(low_high + high_low), low_low_7.eq(low_low),
             high_high_7.eq(high_high))

        # 8. the 64-bit product
        product = stage(signed(PRODUCT_WIDTH), "product")
        load(8, product.eq(low_low_7 + (middle << _SPLIT) + (high_high_7 << (2 * _SPLIT))))

        # 9. its significant length
        length = stage(range(PRODUCT_WIDTH + 1), "length")
        product_9 = stage(signed(PRODUCT_WIDTH), "product_9")
        load(9, length.eq(_significant_length(product)), product_9.eq(product))

        # 10. the bits its rounding to 24 significant bits drops in FLOAT32 mode (else
        #     none), as a mask
        product_mask = stage(PRODUCT_WIDTH + 1, "mask")
        product_10 = stage(signed(PRODUCT_WIDTH), "product_10")
        length_10 = stage(range(PRODUCT_WIDTH + 1), "length_10")
        load(10, product_mask.eq(Cat(*_float32_mask(length, as_float32(10), PRODUCT_WIDTH + 1))),
             product_10.eq(product_9), length_10.eq(length))

        # 11. the lowest bit the mask keeps
        product_odd = stage(1, "odd")
        product_mask_11 = stage(PRODUCT_WIDTH + 1, "mask_11")
        product_11 = stage(signed(PRODUCT_WIDTH), "product_11")
        length_11 = stage(range(PRODUCT_WIDTH + 1), "length_11")
        load(11, product_odd.eq(_lowest_kept(product_10, product_mask)),
             product_mask_11.eq(product_mask), product_11.eq(product_10),
             length_11.eq(length_10))

        # 12. the product rounded
        value = stage(signed(PRODUCT_WIDTH + 1), "value")
        length_12 = stage(range(PRODUCT_WIDTH + 1), "length_12")
        load(12, value.eq(_round_to_float32(product_11, product_mask_11, product_odd)),
             length_12.eq(length_11))

        # 13. floor(value / 2**shift) to FLOOR_WIDTH bits, its half and sticky bits, and
        #     whether it lies beyond them
        floor_bits = stage(FLOOR_WIDTH, "floor_bits")
        half = stage(1, "half")
        sticky = stage(1, "sticky")
        tie_up = stage(1, "tie_up")
        too_long = stage(1, "too_long")
        negative = stage(1, "negative")
        p13 = params_at(12)
        shift = Value.cast(p13.shift)
        floor_value = value >> shift
        rounding = p13.rounding
        # Beyond FLOOR_WIDTH - 2 bits the floor lies outside every clamp range, so a
        # saturated floor gives the same result; the float32 rounding above adds at most
        # one bit to the product's length.
        load(13, floor_bits.eq(floor_value[:FLOOR_WIDTH]),
             half.eq(value.bit_select((shift - 1).as_unsigned()[:len(shift)], 1)),
             sticky.eq((value & _below(shift, len(value) + 1)[1:]).any()),
             tie_up.eq(Mux((rounding == isa.Rounding.HALF_EVEN)
                           | (rounding == isa.Rounding.FLOAT32), floor_value[0],
                           Mux(rounding == isa.Rounding.HALF_AWAY, ~value[-1], 1))),
             too_long.eq(length_12 > shift + (FLOOR_WIDTH - 2)),
             negative.eq(value[-1]))

        # 14. the rounded floor, saturated, plus the output zero point
        offset = stage(signed(FLOOR_WIDTH + 2), "offset")
        floor_limit = Mux(negative, -(1 << (FLOOR_WIDTH - 1)), (1 << (FLOOR_WIDTH - 1)) - 1)
        floor = Mux(too_long, floor_limit, floor_bits.as_signed())
        up = ~too_long & half & (sticky | tie_up)
        load(14, offset.eq(floor + up + Value.cast(params_at(13).output_zero)))

        # 15. the clamp, min(max(offset, low), high), its comparisons side by side
        clamped = stage(signed(9), "clamped")
        p15 = params_at(14)
        low, high = Value.cast(p15.low), Value.cast(p15.high)
        load(15, clamped.eq(Mux(offset < low, Mux(low > high, high, low),
                                Mux(offset > high, high, offset))))
        assert stages == list(range(1, STAGES + 1))
        return clamped[:8]


def _significant_length(value):
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
    return Mux(found, Cat(*index) + 1, 0)


def _float32_mask(length, enable, width):
    """The ``width`` bits (a list, LSB first) of the mask of the low bits a rounding to
    24 significant bits drops from a value of significant length ``length`` (none unless
    ``enable``): bit ``i`` is set when ``length > 24 + i``, one comparison with a constant
    per bit.  A list, so that each use of a bit is that bit's expression alone."""
    return [enable & _greater_than(length, FLOAT32_SIGNIFICANT_BITS + i)
            for i in range(width)]


def _lowest_kept(value, mask):
    """The lowest bit of ``value`` that ``mask`` (a list of bits) keeps, when the mask
    drops any (else 0)."""
    return Cat(*(value[i] & mask[i - 1] & ~mask[i] for i in range(1, len(value)))).any()


def _round_to_float32(value, mask, odd):
    """``value`` with the low bits ``mask`` covers rounded away, ties to even: what a
    float32 holds when ``mask`` is :func:`_float32_mask` of its length (an empty mask:
    ``value`` itself).  ``odd`` is :func:`_lowest_kept`.

    Adding ``2**(drop - 1) - 1`` (``mask`` shifted down by one) and the lowest kept bit
    carries into the kept bits exactly when the dropped bits are above half a step, or
    half with the kept part odd; the dropped bits are then cleared (as
    :func:`sim.golden.round_significant` rounds).  Returns a value one bit wider than
    ``value``.
    """
    return (value.as_signed() + mask[1:] + odd) & ~mask


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

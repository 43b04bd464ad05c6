"""One processing element of the weight-stationary systolic array."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import ACC_WIDTH, OPERAND_WIDTH

__all__ = ["ProcessingElement", "PE_LATENCY"]

#: Enabled cycles from an activation at ``act_in`` to the partial sum it adds to at
#: ``psum_out``: the operands are registered, then the product, then the sum.  The cell
#: takes ``psum_in`` ``PE_LATENCY - 1`` cycles after the activation, and passes the
#: activation to its right neighbour one cycle after it came in.
PE_LATENCY = 3


class ProcessingElement(wiring.Component):
    """A weight-stationary multiply-accumulate cell with two weight banks, in three stages.

    Each enabled cycle the cell takes an activation and the bank bit that goes with it,
    and ``PE_LATENCY`` (3) enabled cycles later ``psum_out`` holds the partial sum it
    was added to, ``psum + act * weight[bank]``, with ``psum`` the value of ``psum_in``
    one cycle before that:

    1. the activation, its bank bit and the weight of that bank are registered (the
       activation and bank bit also go on to the cell to the right, ``act_out``);
    2. their product is registered (the multiplier sits between two registers);
    3. the product is added to ``psum_in`` into ``psum_out``.

    In an array the partial sum from the cell above, itself one cycle behind on its
    activation, arrives exactly in stage 3.  Weights load by shifting down the column
    into one bank (``weight_bank``) while activations keep using the other: the next
    tile loads while the current one computes.

    Operands are 9-bit signed (uint8, int8 and ``uint8 - zero_point`` all fit); the
    partial sum is a wrapping int32.

    Members
    -------
    en : In(1)
        Advance every pipeline register (low while the array stalls).
    weight_shift : In(1)
        Shift bank ``weight_bank`` of the column down by one cell.
    weight_bank : In(1)
        The bank that shifts.
    weight_in, weight_out : In/Out(signed(9))
        Weight from the cell above; this cell's weight in bank ``weight_bank``, to the
        cell below.
    act_in, act_out : In/Out(signed(9))
        Activation from the left; registered activation to the right.
    act_bank_in, act_bank_out : In/Out(1)
        The weight bank the activation multiplies with; registered to the right.
    psum_in, psum_out : In/Out(signed(32))
        Partial sum from above (taken in stage 3); registered partial sum to below.
    """

    def __init__(self):
        operand, acc = signed(OPERAND_WIDTH), signed(ACC_WIDTH)
        super().__init__({
            "en": In(1),
            "weight_shift": In(1),
            "weight_bank": In(1),
            "weight_in": In(operand),
            "weight_out": Out(operand),
            "act_in": In(operand),
            "act_out": Out(operand),
            "act_bank_in": In(1),
            "act_bank_out": Out(1),
            "psum_in": In(acc),
            "psum_out": Out(acc),
        })

    def elaborate(self, platform):
        m = Module()
        banks = [Signal(signed(OPERAND_WIDTH), name=f"weight_bank_{b}") for b in range(2)]
        m.d.comb += self.weight_out.eq(Mux(self.weight_bank, banks[1], banks[0]))
        with m.If(self.weight_shift):
            with m.If(self.weight_bank):
                m.d.sync += banks[1].eq(self.weight_in)
            with m.Else():
                m.d.sync += banks[0].eq(self.weight_in)

        # Stage 1: the operands (the activation register is also the output to the right).
        act = Signal(signed(OPERAND_WIDTH), name="operand_act")
        weight = Signal(signed(OPERAND_WIDTH), name="operand_weight")
        # Stage 2: the product of the registered operands.
        product = Signal(signed(2 * OPERAND_WIDTH), name="product")
        with m.If(self.en):
            m.d.sync += [
                act.eq(self.act_in),
                weight.eq(Mux(self.act_bank_in, banks[1], banks[0])),
                self.act_bank_out.eq(self.act_bank_in),
                product.eq(act * weight),
                # Stage 3.  Assigning to the 32-bit register wraps, as int32 arithmetic does.
                self.psum_out.eq(self.psum_in + product),
            ]
        m.d.comb += self.act_out.eq(act)
        return m

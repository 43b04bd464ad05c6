"""One processing element of the weight-stationary systolic array."""

from amaranth import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import ACC_WIDTH, OPERAND_WIDTH

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """A weight-stationary multiply-accumulate cell.

    The cell holds one weight.  Each enabled cycle it passes its activation to the
    right and ``psum_in + act_in * weight`` down, both through registers.  Weights
    load by shifting down the column: with ``weight_shift`` high the cell takes
    ``weight_in`` from the cell above and offers its old weight below.

    Operands are 9-bit signed (uint8, int8 and ``uint8 - zero_point`` all fit); the
    partial sum is a wrapping int32.

    Members
    -------
    en : In(1)
        Advance the activation and partial-sum registers (low while the array stalls).
    weight_shift : In(1)
        Shift the weight column down by one cell.
    weight_in, weight_out : In/Out(signed(9))
        Weight from the cell above; this cell's weight, to the cell below.
    act_in, act_out : In/Out(signed(9))
        Activation from the left; registered activation to the right.
    psum_in, psum_out : In/Out(signed(32))
        Partial sum from above; registered partial sum to below.
    """

    def __init__(self):
        operand, acc = signed(OPERAND_WIDTH), signed(ACC_WIDTH)
        super().__init__({
            "en": In(1),
            "weight_shift": In(1),
            "weight_in": In(operand),
            "weight_out": Out(operand),
            "act_in": In(operand),
            "act_out": Out(operand),
            "psum_in": In(acc),
            "psum_out": Out(acc),
        })

    def elaborate(self, platform):
        m = Module()
        weight = Signal(signed(OPERAND_WIDTH))
        m.d.comb += self.weight_out.eq(weight)
        with m.If(self.weight_shift):
            m.d.sync += weight.eq(self.weight_in)
        with m.If(self.en):
            m.d.sync += [
                self.act_out.eq(self.act_in),
                # Assigning to the 32-bit register wraps, as int32 arithmetic does.
                self.psum_out.eq(self.psum_in + self.act_in * weight),
            ]
        return m

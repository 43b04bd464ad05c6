"""One processing element of the weight-stationary systolic array."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import ACC_WIDTH, OPERAND_WIDTH

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """A weight-stationary multiply-accumulate cell with two weight banks.

    Each enabled cycle the cell passes its activation (and the activation's bank
    bit) to the right and ``psum_in + act_in * weight[act_bank_in]`` down, both
    through registers.  Weights load by shifting down the column into one bank
    (``weight_bank``) while activations keep using the other: the next tile loads
    while the current one computes.

    Operands are 9-bit signed (uint8, int8 and ``uint8 - zero_point`` all fit); the
    partial sum is a wrapping int32.

    Members
    -------
    en : In(1)
        Advance the activation and partial-sum registers (low while the array stalls).
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
        Partial sum from above; registered partial sum to below.
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
        banks = [Signal(signed(OPERAND_WIDTH), name=f"weight_{b}") for b in range(2)]
        m.d.comb += self.weight_out.eq(Mux(self.weight_bank, banks[1], banks[0]))
        with m.If(self.weight_shift):
            with m.If(self.weight_bank):
                m.d.sync += banks[1].eq(self.weight_in)
            with m.Else():
                m.d.sync += banks[0].eq(self.weight_in)
        weight = Mux(self.act_bank_in, banks[1], banks[0])
        with m.If(self.en):
            m.d.sync += [
                self.act_out.eq(self.act_in),
                self.act_bank_out.eq(self.act_bank_in),
                # Assigning to the 32-bit register wraps, as int32 arithmetic does.
                self.psum_out.eq(self.psum_in + self.act_in * weight),
            ]
        return m

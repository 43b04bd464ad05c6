"""A register slice for a stream: every output registered, ``ready`` upstream too."""

from amaranth import Module, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer", "LATENCY"]

#: Cycles from a payload entering to it being offered at the output.
LATENCY = 1


class SkidBuffer(wiring.Component):
    """Passes a stream through one register at full throughput, cutting every
    combinational path: the output's ``valid`` and payload come from the output
    register and the input's ``ready`` from a flip-flop (the skid register is empty).

    A payload that arrives in the cycle the output stalls goes into the skid register
    and follows once the output moves; meanwhile the input is not ready.

    Parameters
    ----------
    shape : shape-castable
        Of the payload.

    Members
    -------
    input : In(stream.Signature(shape))
    output : Out(stream.Signature(shape))
    busy : Out(1)
        A payload is held.

    Raises
    ------
    TypeError
        If ``shape`` is not shape-castable.
    """

    def __init__(self, *, shape):
        try:
            Shape.cast(shape)
        except TypeError:
            raise TypeError(f"shape must be shape-castable (a width or layout), "
                            f"not {shape!r}") from None
        self.shape = shape
        super().__init__({
            "input": In(stream.Signature(shape)),
            "output": Out(stream.Signature(shape)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        skid = Signal.like(self.input.payload)
        skid_valid = Signal()
        m.d.comb += [
            self.input.ready.eq(~skid_valid),
            self.busy.eq(self.output.valid | skid_valid),
        ]
        with m.If(~self.output.valid | self.output.ready):
            # The output register loads: the skidded payload first, else the input's.
            with m.If(skid_valid):
                m.d.sync += [self.output.payload.eq(skid), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.output.valid.eq(self.input.valid),
                             self.output.payload.eq(self.input.payload)]
        with m.Elif(self.input.valid & ~skid_valid):
            m.d.sync += [skid.eq(self.input.payload), skid_valid.eq(1)]
        return m

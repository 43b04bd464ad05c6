"""The weight-stationary systolic array with its input skew and output deskew."""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import ShapeCastable
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import ACC_WIDTH, OPERAND_WIDTH, NpuConfig
from .pe import ProcessingElement

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """``rows`` x ``cols`` processing elements computing ``a @ W`` for a stream of vectors.

    Weight-stationary dataflow: the tile ``W[rows, cols]`` sits in the cells.
    Activation vector ``a`` enters row ``r`` skewed by ``r`` cycles and moves right;
    partial sums move down; column ``c`` of the result leaves the bottom row ``c`` cycles
    after column 0 and is deskewed, so every output beat is one whole row
    ``a @ W`` of ``cols`` int32 values, ``rows + cols - 1`` enabled cycles after its
    input was accepted.  A tag travels with each vector (the accumulator address).

    The whole array stalls as one pipeline: it advances whenever its output is
    empty or accepted.  Weights load over ``rows`` beats of ``weight_in``, bottom
    row first, and only while no vector is in flight.

    Parameters
    ----------
    config : NpuConfig
        Array dimensions.
    tag_shape : shape-castable
        Shape of the tag carried from ``act_in`` to ``result``.

    Members
    -------
    weight_in : In(stream.Signature(ArrayLayout(signed(9), cols)))
        One weight row per beat; the first beat ends in the bottom row.
    act_in : In(stream.Signature(StructLayout({"values": ..., "tag": tag_shape})))
        Activation vectors, ``rows`` 9-bit operands each.
    result : Out(stream.Signature(StructLayout({"values": ..., "tag": tag_shape})))
        Result rows, ``cols`` int32 values each.
    busy : Out(1)
        A vector is in flight.
    """

    def __init__(self, *, config, tag_shape=0):
        if not isinstance(config, NpuConfig):
            raise TypeError(f"config must be an NpuConfig, not {config!r}")
        if not isinstance(tag_shape, ShapeCastable):
            tag_shape = unsigned(0) if tag_shape is None else tag_shape
        self.config = config
        self.tag_shape = tag_shape
        rows, cols = config.rows, config.cols
        self.act_layout = data.StructLayout({
            "values": data.ArrayLayout(signed(OPERAND_WIDTH), rows), "tag": tag_shape})
        self.result_layout = data.StructLayout({
            "values": data.ArrayLayout(signed(ACC_WIDTH), cols), "tag": tag_shape})
        super().__init__({
            "weight_in": In(stream.Signature(data.ArrayLayout(signed(OPERAND_WIDTH), cols))),
            "act_in": In(stream.Signature(self.act_layout)),
            "result": Out(stream.Signature(self.result_layout)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.config.rows, self.config.cols
        latency = self.config.array_latency

        # One enable for every pipeline register: a stalled output freezes the array.
        en = Signal()
        m.d.comb += en.eq(~self.result.valid | self.result.ready)

        in_flight = Signal(latency)
        m.d.comb += self.busy.eq(in_flight.any())
        # Weights may only shift while nothing is in flight; they win over activations.
        m.d.comb += [
            self.weight_in.ready.eq(~self.busy),
            self.act_in.ready.eq(en & ~self.weight_in.valid),
        ]
        shift_weights = self.weight_in.valid & self.weight_in.ready
        accept = self.act_in.valid & self.act_in.ready

        # Valid bits and tags march alongside the wavefront.
        tags = [Signal(self.tag_shape, name=f"tag_{i}") for i in range(latency)]
        with m.If(en):
            m.d.sync += in_flight.eq((in_flight << 1) | accept)
            m.d.sync += tags[0].eq(self.act_in.payload.tag)
            for i in range(1, latency):
                m.d.sync += tags[i].eq(tags[i - 1])
        m.d.comb += [
            self.result.valid.eq(in_flight[-1]),
            self.result.payload.tag.eq(tags[-1]),
        ]

        # Bubbles enter as zeros so that idle cells compute nothing surprising.
        lane = [Signal(signed(OPERAND_WIDTH), name=f"act_lane_{r}") for r in range(rows)]
        for r in range(rows):
            m.d.comb += lane[r].eq(Mux(accept, self.act_in.payload.values[r], 0))

        pes = [[ProcessingElement() for _ in range(cols)] for _ in range(rows)]
        for r in range(rows):
            # Row r enters r enabled cycles late.
            skewed = lane[r]
            for stage in range(r):
                delayed = Signal(signed(OPERAND_WIDTH), name=f"skew_{r}_{stage}")
                with m.If(en):
                    m.d.sync += delayed.eq(skewed)
                skewed = delayed
            for c in range(cols):
                pe = pes[r][c]
                m.submodules[f"pe_{r}_{c}"] = pe
                above = pes[r - 1][c] if r > 0 else None
                m.d.comb += [
                    pe.en.eq(en),
                    pe.weight_shift.eq(shift_weights),
                    pe.weight_in.eq(above.weight_out if above else self.weight_in.payload[c]),
                    pe.act_in.eq(skewed if c == 0 else pes[r][c - 1].act_out),
                    pe.psum_in.eq(above.psum_out if above else Const(0, signed(ACC_WIDTH))),
                ]

        for c in range(cols):
            # Column c leaves c cycles after column 0: delay it by the difference.
            out = pes[rows - 1][c].psum_out
            for stage in range(cols - 1 - c):
                delayed = Signal(signed(ACC_WIDTH), name=f"deskew_{c}_{stage}")
                with m.If(en):
                    m.d.sync += delayed.eq(out)
                out = delayed
            m.d.comb += self.result.payload.values[c].eq(out)
        return m

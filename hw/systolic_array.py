"""The weight-stationary systolic array with its input skew and output deskew."""

from amaranth import Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import ACC_WIDTH, OPERAND_WIDTH, check_config
from .pe import ProcessingElement

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """``rows`` x ``cols`` processing elements computing ``a @ W`` for a stream of vectors.

    Weight-stationary dataflow: the tile ``W[rows, cols]`` sits in the cells.
    Activation vector ``a`` enters row ``r`` skewed by ``r`` cycles and moves right;
    partial sums move down; column ``c`` of the result leaves the bottom row ``c`` cycles
    after column 0 and is deskewed, so every output beat is one whole row
    ``a @ W`` of ``cols`` int32 values, ``config.array_latency`` enabled cycles
    (``rows + cols - 2`` of skew and wavefront plus the cells' ``PE_LATENCY``) after
    its input was accepted.  A tag travels with each vector (the accumulator address).

    Every cell holds two weight banks and every vector names the bank it multiplies
    with, so a tile loads into one bank (over ``rows`` beats of ``weight_in``, bottom
    row first) while vectors stream through the other.  A bank takes weights only
    while no vector that uses it waits at ``act_in`` or is fewer than
    ``config.weight_hold`` cycles in (before every cell has registered its weight).

    The activation pipeline stalls as one: it advances whenever its output is
    empty or accepted.

    Parameters
    ----------
    config : NpuConfig
        Array dimensions.
    tag_shape : shape-castable
        Shape of the tag carried from ``act_in`` to ``result``.

    Members
    -------
    weight_in : In(stream.Signature(StructLayout({"values": ..., "bank": 1})))
        One weight row (``cols`` 9-bit operands) per beat, into bank ``bank``; the
        first beat of a tile ends in the bottom row.
    act_in : In(stream.Signature(StructLayout({"values": ..., "tag": tag_shape, "bank": 1})))
        Activation vectors, ``rows`` 9-bit operands each, and the bank they use.
    result : Out(stream.Signature(StructLayout({"values": ..., "tag": tag_shape})))
        Result rows, ``cols`` int32 values each.
    busy : Out(1)
        A vector is in flight.
    """

    def __init__(self, *, config, tag_shape=0):
        check_config(config)
        self.config = config
        self.tag_shape = tag_shape
        rows, cols = config.rows, config.cols
        self.weight_layout = data.StructLayout({
            "values": data.ArrayLayout(signed(OPERAND_WIDTH), cols), "bank": 1})
        self.act_layout = data.StructLayout({
            "values": data.ArrayLayout(signed(OPERAND_WIDTH), rows), "tag": tag_shape,
            "bank": 1})
        self.result_layout = data.StructLayout({
            "values": data.ArrayLayout(signed(ACC_WIDTH), cols), "tag": tag_shape})
        super().__init__({
            "weight_in": In(stream.Signature(self.weight_layout)),
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
        accept = self.act_in.valid & self.act_in.ready

        # Valid bits, banks and tags march alongside the wavefront.
        in_flight = Signal(latency)
        banks = Signal(latency)
        tags = [Signal(self.tag_shape, name=f"tag_{i}") for i in range(latency)]
        with m.If(en):
            m.d.sync += [
                in_flight.eq((in_flight << 1) | accept),
                banks.eq((banks << 1) | self.act_in.payload.bank),
                tags[0].eq(self.act_in.payload.tag),
            ]
            for i in range(1, latency):
                m.d.sync += tags[i].eq(tags[i - 1])
        m.d.comb += [
            self.busy.eq(in_flight.any()),
            self.result.valid.eq(in_flight[-1]),
            self.result.payload.tag.eq(tags[-1]),
        ]

        # A bank may change only when no vector waiting or in flight still takes weights
        # from it: every cell has registered its weight once it is weight_hold cycles in.
        bank = self.weight_in.payload.bank
        hold = self.config.weight_hold
        uses_bank = Signal()
        m.d.comb += uses_bank.eq(
            (in_flight[:hold] & Mux(bank, banks[:hold], ~banks[:hold])).any()
            | (self.act_in.valid & (self.act_in.payload.bank == bank)))
        m.d.comb += [
            self.weight_in.ready.eq(~uses_bank),
            self.act_in.ready.eq(en),
        ]
        shift_weights = self.weight_in.valid & self.weight_in.ready

        # Bubbles enter as zeros so that idle cells compute nothing surprising.
        lane = [Signal(signed(OPERAND_WIDTH), name=f"act_lane_{r}") for r in range(rows)]
        for r in range(rows):
            m.d.comb += lane[r].eq(Mux(accept, self.act_in.payload.values[r], 0))

        pes = [[ProcessingElement() for _ in range(cols)] for _ in range(rows)]
        for r in range(rows):
            # Row r (and its bank bit) enters r enabled cycles late.
            skewed, skewed_bank = lane[r], self.act_in.payload.bank
            for stage in range(r):
                delayed = Signal(signed(OPERAND_WIDTH), name=f"skew_{r}_{stage}")
                delayed_bank = Signal(name=f"skew_bank_{r}_{stage}")
                with m.If(en):
                    m.d.sync += [delayed.eq(skewed), delayed_bank.eq(skewed_bank)]
                skewed, skewed_bank = delayed, delayed_bank
            for c in range(cols):
                pe = pes[r][c]
                m.submodules[f"pe_{r}_{c}"] = pe
                above = pes[r - 1][c] if r > 0 else None
                left = pes[r][c - 1] if c > 0 else None
                m.d.comb += [
                    pe.en.eq(en),
                    pe.weight_shift.eq(shift_weights),
                    pe.weight_bank.eq(bank),
                    pe.weight_in.eq(above.weight_out if above else
                                    self.weight_in.payload.values[c]),
                    pe.act_in.eq(left.act_out if left else skewed),
                    pe.act_bank_in.eq(left.act_bank_out if left else skewed_bank),
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

"""Executes MATMUL: preloads a weight tile into the array and streams activations through it."""

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .accumulator import accumulate_tag_layout
from .config import NpuConfig

__all__ = ["MatmulUnit", "matmul_command_layout"]


def matmul_command_layout():
    return data.StructLayout({"act_addr": 16, "count": 16, "slot": 8, "acc_addr": 16,
                              "accumulate": 1})


class MatmulUnit(wiring.Component):
    """Sequences one MATMUL.

    It requests the ``rows`` weight rows of the slot bottom row first (they shift
    down the array), then ``count`` activation vectors, each tagged with its
    accumulator row, and waits until the datapath has drained before taking the
    next command.

    Members
    -------
    cmd : In(stream.Signature(matmul_command_layout()))
    weight_requests : Out(stream.Signature(StructLayout({"addr": ..., "tag": 0})))
    act_requests : Out(stream.Signature(StructLayout({"addr": ..., "tag": accumulate_tag_layout})))
    drained : In(1)
        No weight, activation or result is in flight anywhere in the datapath.
    busy : Out(1)
    """

    def __init__(self, *, config):
        if not isinstance(config, NpuConfig):
            raise TypeError(f"config must be an NpuConfig, not {config!r}")
        self.config = config
        super().__init__({
            "cmd": In(stream.Signature(matmul_command_layout())),
            "weight_requests": Out(stream.Signature(data.StructLayout({
                "addr": ceil_log2(config.weight_depth), "tag": 0}))),
            "act_requests": Out(stream.Signature(data.StructLayout({
                "addr": ceil_log2(config.act_depth), "tag": accumulate_tag_layout(config)}))),
            "drained": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rows = self.config.rows
        command = Signal(matmul_command_layout())
        index = Signal(16)

        m.d.comb += [
            self.weight_requests.payload.addr.eq(command.slot * rows + (rows - 1) - index),
            self.act_requests.payload.addr.eq(command.act_addr + index),
            self.act_requests.payload.tag.addr.eq(command.acc_addr + index),
            self.act_requests.payload.tag.accumulate.eq(command.accumulate),
        ]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [command.eq(self.cmd.payload), index.eq(0)]
                    m.next = "WEIGHTS"
            with m.State("WEIGHTS"):
                m.d.comb += self.weight_requests.valid.eq(1)
                with m.If(self.weight_requests.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == rows - 1):
                        m.d.sync += index.eq(0)
                        m.next = "ACTIVATIONS"
            with m.State("ACTIVATIONS"):
                m.d.comb += self.act_requests.valid.eq(1)
                with m.If(self.act_requests.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == command.count - 1):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                # The array holds one weight tile: the next MATMUL may not shift in
                # new weights before every result of this one has left.
                with m.If(self.drained):
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~self.cmd.ready)
        return m

"""Executes STORE: reads accumulator rows towards the requantizer and the data-out stream."""

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import isa
from .config import check_config

__all__ = ["StoreUnit", "store_command_layout", "store_end_shape", "store_tag_layout"]


def store_command_layout():
    return isa.fields_layout(isa.Store)


def store_end_shape():
    """Width of ``acc_addr + count`` of a STORE: one bit wider than the wider field."""
    return max(isa.Store.field("acc_addr").width, isa.Store.field("count").width) + 1


def store_tag_layout(config):
    """What travels with each accumulator row read: the output format."""
    return data.StructLayout({"raw": 1, "n": range(config.cols + 1)})


class StoreUnit(wiring.Component):
    """Requests accumulator rows ``acc_addr .. acc_addr + count - 1`` for the requantizer.

    Members
    -------
    cmd : In(stream.Signature(store_command_layout()))
    read_requests : Out(stream.Signature(StructLayout({"addr": ..., "tag": store_tag_layout})))
    current : Out(store_command_layout())
        The latest command, held until the next: its parameter set selects the
        requantizer's parameters and its rows are what a MATMUL must not overwrite
        while they are read.
    current_end : Out(store_end_shape())
        ``acc_addr + count`` of ``current``, registered with it, so that the
        controller's hazard check only compares.
    busy : Out(1)
        Requests are still being issued.
    """

    def __init__(self, *, config):
        check_config(config)
        self.config = config
        super().__init__({
            "cmd": In(stream.Signature(store_command_layout())),
            "read_requests": Out(stream.Signature(data.StructLayout({
                "addr": ceil_log2(config.acc_depth), "tag": store_tag_layout(config)}))),
            "current": Out(store_command_layout()),
            "current_end": Out(store_end_shape()),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        command = self.current
        index = Signal(command.count.shape())
        m.d.comb += [
            self.read_requests.payload.addr.eq(command.acc_addr + index),
            self.read_requests.payload.tag.raw.eq(command.raw),
            self.read_requests.payload.tag.n.eq(command.n),
        ]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [command.eq(self.cmd.payload), index.eq(0),
                                 self.current_end.eq(self.cmd.payload.acc_addr
                                                     + self.cmd.payload.count)]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += self.read_requests.valid.eq(1)
                with m.If(self.read_requests.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == command.count - 1):
                        m.next = "IDLE"
        m.d.comb += self.busy.eq(~self.cmd.ready)
        return m

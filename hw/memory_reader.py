"""Turns a synchronous memory read port into a request/response stream pair."""

from amaranth import Module, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MemoryReader"]


class MemoryReader(wiring.Component):
    """Reads a memory for a stream of addresses, with backpressure.

    The read port's data register holds its value while the response is stalled
    (the port is enabled only when the response register may change), so no
    skid buffer is needed and the reader sustains one read per cycle.

    Parameters
    ----------
    addr_width : int
        Width of the memory address.
    shape : shape-castable
        Shape of a memory word.
    tag_shape : shape-castable
        Side-band carried from each request to its response.

    Members
    -------
    port : In(memory.ReadPort.Signature(addr_width=addr_width, shape=shape))
        Connect to ``Memory.read_port()``.
    requests : In(stream.Signature(StructLayout({"addr": addr_width, "tag": tag_shape})))
    responses : Out(stream.Signature(StructLayout({"data": shape, "tag": tag_shape})))
    busy : Out(1)
        A response is waiting.
    """

    def __init__(self, *, addr_width, shape, tag_shape=0):
        if not isinstance(addr_width, int) or addr_width < 0:
            raise TypeError(f"addr_width must be a non-negative integer, not {addr_width!r}")
        self.tag_shape = tag_shape
        super().__init__({
            "port": In(memory.ReadPort.Signature(addr_width=addr_width, shape=shape)),
            "requests": In(stream.Signature(data.StructLayout({"addr": addr_width,
                                                               "tag": tag_shape}))),
            "responses": Out(stream.Signature(data.StructLayout({"data": shape,
                                                                 "tag": tag_shape}))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        advance = Signal()
        m.d.comb += [
            advance.eq(~self.responses.valid | self.responses.ready),
            self.requests.ready.eq(advance),
            self.port.en.eq(advance),
            self.port.addr.eq(self.requests.payload.addr),
            self.responses.payload.data.eq(self.port.data),
            self.busy.eq(self.responses.valid),
        ]
        with m.If(advance):
            m.d.sync += [
                self.responses.valid.eq(self.requests.valid),
                self.responses.payload.tag.eq(self.requests.payload.tag),
            ]
        return m

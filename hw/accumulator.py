"""The accumulator buffer: int32 rows written or accumulated by the array, read by stores."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .config import ACC_WIDTH, check_config
from .memory_reader import MemoryReader

__all__ = ["AccumulatorBuffer", "accumulate_tag_layout"]


def accumulate_tag_layout(config):
    """Where an array result row goes: accumulator address and overwrite/accumulate."""
    return data.StructLayout({"addr": ceil_log2(config.acc_depth), "accumulate": 1})


class AccumulatorBuffer(wiring.Component):
    """``acc_depth`` rows of ``cols`` int32 values.

    Result rows are written (or added to what the row holds) in a two-stage
    read-modify-write pipeline that takes a row every cycle; the read port is
    transparent to the write port, so a row accumulated twice in a row still sees
    its first sum.  Stores read rows through a backpressured request/response pair.

    Parameters
    ----------
    config : NpuConfig
    read_tag_shape : shape-castable
        Side-band carried from each read request to its response.

    Members
    -------
    results : In(stream.Signature(StructLayout({"values": ..., "tag": accumulate_tag_layout})))
        Always ready.
    read_requests : In(stream.Signature(StructLayout({"addr": ..., "tag": read_tag_shape})))
    read_responses : Out(stream.Signature(StructLayout({"data": ..., "tag": read_tag_shape})))
    writing : Out(1)
        A result row is being written.
    reading : Out(1)
        A read response is waiting.
    busy : Out(1)
        Writing or reading.
    """

    def __init__(self, *, config, read_tag_shape=0):
        check_config(config)
        self.config = config
        self.row_shape = data.ArrayLayout(signed(ACC_WIDTH), config.cols)
        addr_width = ceil_log2(config.acc_depth)
        self._reader = MemoryReader(addr_width=addr_width, shape=self.row_shape,
                                    tag_shape=read_tag_shape)
        super().__init__({
            "results": In(stream.Signature(data.StructLayout({
                "values": self.row_shape, "tag": accumulate_tag_layout(config)}))),
            "read_requests": In(self._reader.requests.signature.flip()),
            "read_responses": Out(self._reader.responses.signature),
            "writing": Out(1),
            "reading": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = mem = memory.Memory(shape=self.row_shape,
                                                  depth=self.config.acc_depth, init=[])
        write = mem.write_port()
        current = mem.read_port(transparent_for=(write,))
        m.submodules.reader = reader = self._reader
        wiring.connect(m, reader.port, mem.read_port())
        wiring.connect(m, wiring.flipped(self.read_requests), reader.requests)
        wiring.connect(m, reader.responses, wiring.flipped(self.read_responses))

        # Stage 1 reads the row the result goes to; stage 2 writes the (summed) row.
        pending = Signal()
        row = Signal.like(self.results.payload)
        m.d.comb += [
            self.results.ready.eq(1),
            current.en.eq(1),
            current.addr.eq(self.results.payload.tag.addr),
        ]
        m.d.sync += [pending.eq(self.results.valid), row.eq(self.results.payload)]
        m.d.comb += [
            write.en.eq(pending),
            write.addr.eq(row.tag.addr),
        ]
        for c in range(self.config.cols):
            m.d.comb += write.data[c].eq(
                Mux(row.tag.accumulate, current.data[c] + row.values[c], row.values[c]))
        m.d.comb += [
            self.writing.eq(pending),
            self.reading.eq(reader.busy),
            self.busy.eq(pending | reader.busy),
        ]
        return m

"""The accumulator buffer: int32 rows written or accumulated by the array, read by stores."""

from amaranth import Module, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .config import ACC_WIDTH, check_config
from .memory_reader import MemoryReader

__all__ = ["AccumulatorBuffer", "accumulate_tag_layout", "WRITE_LATENCY"]

#: Cycles from a result row taken at ``results`` to the cycle its row is written (the
#: last cycle ``writing`` is high for it): the row is read, the read registered, the
#: sum registered, then written.
WRITE_LATENCY = 3


def accumulate_tag_layout(config):
    """Where an array result row goes: accumulator address and overwrite/accumulate."""
    return data.StructLayout({"addr": ceil_log2(config.acc_depth), "accumulate": 1})


class AccumulatorBuffer(wiring.Component):
    """``acc_depth`` rows of ``cols`` int32 values.

    Result rows are written (or added to what the row holds) in a read-modify-write
    pipeline that takes a row every cycle and writes it ``WRITE_LATENCY`` (3) cycles
    later, with a register on every side of the buffer and of the adder:

    0. the row the result goes to is read;
    1. the row read is registered as it leaves the buffer; the three results ahead,
       which the read missed, are compared with the result's row, and which row it
       adds to is registered: the newest of those that goes to the same row
       (forwarding), else the row read;
    2. the sum (or, to overwrite, the result itself) is registered;
    3. the sum is written.

    So a row accumulated on consecutive cycles still sees every earlier sum.  Stores
    read rows through a backpressured request/response pair.

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
        A result row taken is not written yet.
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
        cols = self.config.cols
        m.submodules.memory = mem = memory.Memory(shape=self.row_shape,
                                                  depth=self.config.acc_depth, init=[])
        write = mem.write_port()
        # Not transparent: the rows still in the pipeline are forwarded below instead.
        current = mem.read_port()
        m.submodules.reader = reader = self._reader
        wiring.connect(m, reader.port, mem.read_port())
        wiring.connect(m, wiring.flipped(self.read_requests), reader.requests)
        wiring.connect(m, reader.responses, wiring.flipped(self.read_responses))

        result_shape = self.results.payload.shape()
        addr_shape = self.results.payload.tag.addr.shape()
        # Stage 0: read the row the result goes to.
        m.d.comb += [
            self.results.ready.eq(1),
            current.en.eq(1),
            current.addr.eq(self.results.payload.tag.addr),
        ]
        # Stage 1: the result; the buffer's row arrives.
        read_valid = Signal()
        read_result = Signal(result_shape)
        m.d.sync += [read_valid.eq(self.results.valid), read_result.eq(self.results.payload)]
        # Stage 2: the result, the row read (registered as it leaves the buffer) and
        # which row to add it to, chosen in stage 1 (one-hot; none: overwrite).
        add_valid = Signal()
        add_result = Signal(result_shape)
        read_row = Signal(self.row_shape)
        use = {name: Signal(name=f"add_to_{name}")
               for name in ("summed", "written", "written_before", "read")}
        # Stage 3: the row to write.
        sum_valid = Signal()
        sum_addr = Signal(addr_shape)
        sum_row = Signal(self.row_shape)
        # The rows written one and two cycles before: the buffer's read missed them.
        written_valid = Signal()
        written_addr = Signal(addr_shape)
        written_row, written_before_row = Signal(self.row_shape), Signal(self.row_shape)

        m.d.sync += [
            add_valid.eq(read_valid),
            add_result.eq(read_result),
            read_row.eq(current.data),
        ]
        # The buffer's row misses the three results ahead; the newest one that goes to
        # the same row wins: the one being summed now (in stage 3 next cycle), the one
        # being written (written one cycle before, next cycle), the one written a cycle
        # ago (two cycles before, next cycle).
        read_addr = read_result.tag.addr
        ahead = [("summed", add_valid & (add_result.tag.addr == read_addr)),
                 ("written", sum_valid & (sum_addr == read_addr)),
                 ("written_before", written_valid & (written_addr == read_addr)),
                 ("read", 1)]
        newer = 0
        for name, matches in ahead:
            m.d.sync += use[name].eq(read_result.tag.accumulate & matches & ~newer)
            newer = newer | matches

        base = Signal(self.row_shape)
        sources = {"summed": sum_row, "written": written_row,
                   "written_before": written_before_row, "read": read_row}
        selected = 0
        for name, row in sources.items():
            selected = selected | (row.as_value() & use[name].replicate(len(row.as_value())))
        m.d.comb += base.as_value().eq(selected)
        m.d.sync += [sum_valid.eq(add_valid), sum_addr.eq(add_result.tag.addr)]
        for c in range(cols):
            # Assigning to the 32-bit register wraps, as int32 arithmetic does.
            m.d.sync += sum_row[c].eq(base[c] + add_result.values[c])

        m.d.comb += [
            write.en.eq(sum_valid),
            write.addr.eq(sum_addr),
            write.data.eq(sum_row),
        ]
        m.d.sync += [written_valid.eq(sum_valid), written_addr.eq(sum_addr),
                     written_row.eq(sum_row), written_before_row.eq(written_row)]

        writing = read_valid | add_valid | sum_valid
        m.d.comb += [
            self.writing.eq(writing),
            self.reading.eq(reader.busy),
            self.busy.eq(writing | reader.busy),
        ]
        return m

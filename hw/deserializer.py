"""Assembles byte vectors from data-stream beats."""

from math import ceil

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from . import isa
from .config import check_config

__all__ = ["VectorDeserializer", "deserializer_command_layout", "VECTOR_COUNTS"]

#: The instruction fields that give how many vectors a load reads from the data stream.
VECTOR_COUNTS = (isa.LoadParams.field("count"), isa.LoadAct.field("count"),
                 isa.LoadWeight.field("k"))


def deserializer_command_layout(config):
    return data.StructLayout({"length": range(config.vector_bytes + 1),
                              "count": max(f.width for f in VECTOR_COUNTS)})


class VectorDeserializer(wiring.Component):
    """Collects ``ceil(length / data_bytes)`` beats into each vector of ``length`` bytes.

    A command ``{length, count}`` asks for ``count`` vectors; the deserializer takes
    exactly the beats they need from the data stream and no more, so data meant for
    a later command stays in the stream.  Bytes of the last beat beyond ``length``
    are dropped; vector bytes from ``length`` up are zero.

    Parameters
    ----------
    config : NpuConfig
        Gives the beat width and the longest vector (``config.vector_bytes``).

    Members
    -------
    beats : In(stream.Signature(data_width))
        The data-in stream.
    cmd : In(stream.Signature(deserializer_command_layout(config)))
        Vectors to assemble; taken when the previous command is complete.
    vectors : Out(stream.Signature(ArrayLayout(8, vector_bytes)))
        Whole vectors, byte 0 first.
    busy : Out(1)
        A vector is partly assembled or waiting.
    """

    def __init__(self, *, config):
        check_config(config)
        self.config = config
        super().__init__({
            "beats": In(stream.Signature(config.data_width)),
            "cmd": In(stream.Signature(deserializer_command_layout(config))),
            "vectors": Out(stream.Signature(data.ArrayLayout(8, config.vector_bytes))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nbytes, beat_bytes = self.config.vector_bytes, self.config.data_bytes
        max_beats = ceil(nbytes / beat_bytes)
        buffer = Signal(data.ArrayLayout(8, max_beats * beat_bytes))
        beat_index = Signal(range(max_beats + 1))
        offset_after = Signal(bits_for(max_beats * beat_bytes))

        length = Signal(range(nbytes + 1))
        remaining = Signal(self.cmd.payload.count.shape())
        m.d.comb += [
            self.cmd.ready.eq((remaining == 0) & ~self.vectors.valid),
            self.beats.ready.eq((remaining != 0) & (~self.vectors.valid | self.vectors.ready)),
            offset_after.eq((beat_index + 1) * beat_bytes),
            self.busy.eq(self.vectors.valid | (remaining != 0)),
        ]
        for i in range(nbytes):
            # Zero every byte past the vector's end, including stale bytes of longer vectors.
            m.d.comb += self.vectors.payload[i].eq(buffer[i] & (i < length).replicate(8))

        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [length.eq(self.cmd.payload.length), remaining.eq(self.cmd.payload.count),
                         beat_index.eq(0)]
        with m.If(self.vectors.valid & self.vectors.ready):
            m.d.sync += self.vectors.valid.eq(0)
        with m.If(self.beats.valid & self.beats.ready):
            with m.Switch(beat_index):
                for i in range(max_beats):
                    with m.Case(i):
                        m.d.sync += buffer.as_value().word_select(i, 8 * beat_bytes).eq(
                            self.beats.payload)
            with m.If(offset_after >= length):
                m.d.sync += [beat_index.eq(0), self.vectors.valid.eq(1),
                             remaining.eq(remaining - 1)]
            with m.Else():
                m.d.sync += beat_index.eq(beat_index + 1)
        return m

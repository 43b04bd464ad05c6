"""Splits byte vectors into data-stream beats."""

from math import ceil

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import check_config

__all__ = ["VectorSerializer", "out_vector_layout"]


def out_vector_layout(config):
    """Payload of a vector on its way out: bytes and how many of them to send."""
    return data.StructLayout({
        "bytes": data.ArrayLayout(8, config.out_vector_bytes),
        "length": range(config.out_vector_bytes + 1),
    })


class VectorSerializer(wiring.Component):
    """Sends each vector as ``ceil(length / data_bytes)`` beats, the last padded with zeros.

    Parameters
    ----------
    config : NpuConfig
        Gives the beat width and the longest vector (``config.out_vector_bytes``).

    Members
    -------
    vectors : In(stream.Signature(out_vector_layout(config)))
        Vectors with their length in bytes (at least 1).
    beats : Out(stream.Signature(data_width))
        The data-out stream.
    busy : Out(1)
        A vector is being sent.
    """

    def __init__(self, *, config):
        check_config(config)
        self.config = config
        super().__init__({
            "vectors": In(stream.Signature(out_vector_layout(config))),
            "beats": Out(stream.Signature(config.data_width)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nbytes, beat_bytes = self.config.out_vector_bytes, self.config.data_bytes
        max_beats = ceil(nbytes / beat_bytes)
        buffer = Signal(data.ArrayLayout(8, max_beats * beat_bytes))
        length = Signal(range(nbytes + 1))
        beat_index = Signal(range(max_beats + 1))
        # Whether the beat at the output is the vector's last, registered.
        last = Signal()

        m.d.comb += [
            self.busy.eq(self.beats.valid),
            # A new vector may enter while the last beat of the current one leaves.
            self.vectors.ready.eq(~self.beats.valid | (self.beats.ready & last)),
        ]
        with m.Switch(beat_index):
            for i in range(max_beats):
                with m.Case(i):
                    m.d.comb += self.beats.payload.eq(
                        buffer.as_value().word_select(i, 8 * beat_bytes))

        with m.If(self.beats.valid & self.beats.ready):
            with m.If(last):
                m.d.sync += [self.beats.valid.eq(0), beat_index.eq(0)]
            with m.Else():
                m.d.sync += [beat_index.eq(beat_index + 1),
                             last.eq((beat_index + 2) * beat_bytes >= length)]
        with m.If(self.vectors.valid & self.vectors.ready):
            m.d.sync += [self.beats.valid.eq(1), beat_index.eq(0),
                         length.eq(self.vectors.payload.length),
                         last.eq(self.vectors.payload.length <= beat_bytes)]
            for i in range(max_beats * beat_bytes):
                # Pad bytes past the length with zeros.
                value = (self.vectors.payload.bytes[i]
                         & (i < self.vectors.payload.length).replicate(8)) if i < nbytes else 0
                m.d.sync += buffer[i].eq(value)
        return m

"""The receive side of the serial link: frames (:mod:`hw.link_protocol`) out of a byte
stream, each checked in full before any of it leaves."""

import numbers
from functools import reduce

from amaranth import Cat, Module, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .crc import Crc
from .link_protocol import (
    COUNTER_WIDTH,
    CRC,
    CRC_BYTES,
    MAX_PAYLOAD,
    SYNC,
    FrameType,
    count_up,
    frame_header_layout,
)

__all__ = ["FrameParser"]


class FrameParser(wiring.Component):
    """Hunts for frames, checks them and hands on the intact ones.

    A sync byte starts a frame.  A header whose type is no :class:`FrameType` or whose
    length is above :data:`MAX_PAYLOAD` is a header error; a frame whose CRC differs is a
    CRC error; a frame that stops arriving for ``timeout_cycles`` cycles is truncated.
    Each is dropped and counted, and the hunt for a sync byte goes on from the next byte.
    (Bytes already taken are not searched again: the sender sends again what was not
    acknowledged.)  An intact frame's payload waits in a buffer of
    :data:`MAX_PAYLOAD` bytes until its CRC has passed; then its header leaves, then its
    payload.  No byte is taken while an intact frame leaves.

    Parameters
    ----------
    timeout_cycles : int
        Cycles without a byte after which a frame that has begun is truncated.

    Members
    -------
    bytes : In(stream.Signature(8))
        The line's bytes (:class:`hw.uart_rx.UartRx`).
    header : Out(stream.Signature(frame_header_layout()))
        The header of each intact frame.
    payload : Out(stream.Signature(8))
        Its ``length`` payload bytes, after the header was taken.
    header_errors, crc_errors, truncated : Out(COUNTER_WIDTH)
        Frames dropped, each counter stopping at its largest value (the link status
        record's counters, :mod:`hw.link_protocol`).
    idle : Out(1)
        Hunting for a sync byte: no frame begun or waiting to leave.
    """

    def __init__(self, *, timeout_cycles):
        if not isinstance(timeout_cycles, numbers.Integral) or isinstance(timeout_cycles, bool) \
                or timeout_cycles <= 0:
            raise TypeError(f"timeout_cycles must be a positive integer, not {timeout_cycles!r}")
        self.timeout_cycles = int(timeout_cycles)
        super().__init__({
            "bytes": In(stream.Signature(8)),
            "header": Out(stream.Signature(frame_header_layout())),
            "payload": Out(stream.Signature(8)),
            "header_errors": Out(COUNTER_WIDTH),
            "crc_errors": Out(COUNTER_WIDTH),
            "truncated": Out(COUNTER_WIDTH),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = Crc(algorithm=CRC)
        m.submodules.buffer = buffer = memory.Memory(shape=8, depth=MAX_PAYLOAD, init=[])
        write = buffer.write_port()
        read = buffer.read_port()

        byte = self.bytes.payload
        taken = Signal()
        m.d.comb += taken.eq(self.bytes.valid & self.bytes.ready)
        header = Signal(frame_header_layout())
        m.d.comb += self.header.payload.eq(header)
        index = Signal(range(MAX_PAYLOAD + 1))
        crc_mismatch = Signal()
        idle = Signal(range(self.timeout_cycles + 1))

        header_ok = Signal()
        length = Signal.like(header.length)
        m.d.comb += [
            length.eq(Cat(header.length[:8], byte)),
            header_ok.eq(reduce(lambda a, b: a | b, (header.type == t for t in FrameType))
                         & (length <= MAX_PAYLOAD)),
            write.addr.eq(index),
            write.data.eq(byte),
            crc.data.eq(byte),
            self.payload.payload.eq(read.data),
        ]

        receiving = Signal()    # inside a frame, waiting for its next byte
        with m.If(receiving & ~taken):
            m.d.sync += idle.eq(idle + 1)
        with m.Else():
            m.d.sync += idle.eq(0)
        timed_out = Signal()
        m.d.comb += timed_out.eq(receiving & ~taken & (idle == self.timeout_cycles - 1))

        def receive(feed_crc=True):
            """Take bytes of a frame that has begun; drop it when the line falls silent."""
            m.d.comb += [self.bytes.ready.eq(1), receiving.eq(1)]
            if feed_crc:
                m.d.comb += crc.valid.eq(taken)
            with m.If(timed_out):
                count_up(m, self.truncated)
                m.next = "HUNT"

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += [self.bytes.ready.eq(1), self.idle.eq(1)]
                with m.If(taken & (byte == SYNC)):
                    m.d.comb += crc.clear.eq(1)
                    m.next = "TYPE"
            for field, following in (("type", "SEQ"), ("seq", "LENGTH_LOW")):
                with m.State(field.upper()):
                    receive()
                    with m.If(taken):
                        m.d.sync += getattr(header, field).eq(byte)
                        m.next = following
            with m.State("LENGTH_LOW"):
                receive()
                with m.If(taken):
                    m.d.sync += header.length.eq(byte)
                    m.next = "LENGTH_HIGH"
            with m.State("LENGTH_HIGH"):
                receive()
                with m.If(taken):
                    m.d.sync += [header.length.eq(length), index.eq(0), crc_mismatch.eq(0)]
                    with m.If(~header_ok):
                        count_up(m, self.header_errors)
                        m.next = "HUNT"
                    with m.Elif(length == 0):
                        m.next = "CRC"
                    with m.Else():
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                receive()
                m.d.comb += write.en.eq(taken)
                with m.If(taken):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == header.length - 1):
                        m.d.sync += index.eq(0)
                        m.next = "CRC"
            with m.State("CRC"):
                receive(feed_crc=False)
                with m.If(taken):
                    expected = crc.value.word_select(index[:2], 8)
                    mismatch = crc_mismatch | (byte != expected)
                    m.d.sync += [index.eq(index + 1), crc_mismatch.eq(mismatch)]
                    with m.If(index == CRC_BYTES - 1):
                        m.d.sync += index.eq(0)
                        with m.If(mismatch):
                            count_up(m, self.crc_errors)
                            m.next = "HUNT"
                        with m.Else():
                            m.d.sync += self.header.valid.eq(1)
                            m.next = "HEADER_OUT"
            with m.State("HEADER_OUT"):
                with m.If(self.header.ready):
                    m.d.sync += self.header.valid.eq(0)
                    m.next = "PAYLOAD_OUT"
            with m.State("PAYLOAD_OUT"):
                # The read port's data is the payload: it moves on only when the byte
                # shown has been taken (or none is shown yet).
                advance = ~self.payload.valid | self.payload.ready
                m.d.comb += [read.addr.eq(index), read.en.eq(advance)]
                with m.If(advance):
                    with m.If(index != header.length):
                        m.d.sync += [self.payload.valid.eq(1), index.eq(index + 1)]
                    with m.Else():
                        m.d.sync += [self.payload.valid.eq(0), index.eq(0)]
                        m.next = "HUNT"
        return m

"""The send side of the serial link: frames (:mod:`hw.link_protocol`) onto a byte
stream."""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .crc import Crc
from .link_protocol import CRC, CRC_BYTES, SYNC, frame_header_layout

__all__ = ["Framer"]


class Framer(wiring.Component):
    """Sends each header and the payload bytes that follow it as one frame.

    The sync byte and the header go out first, then the payload bytes as they come
    (nothing is buffered), then the CRC of the header and payload.  Keeping a frame for
    sending again is the link layer's business.

    Members
    -------
    header : In(stream.Signature(frame_header_layout()))
        The frame's type, sequence number and length, at most
        :data:`~hw.link_protocol.MAX_PAYLOAD` (a longer one goes out and the receiver
        drops it).  Taken while no frame is being sent.
    payload : In(stream.Signature(8))
        Exactly ``length`` bytes for each header.
    bytes : Out(stream.Signature(8))
        The frames (to :class:`hw.uart_tx.UartTx`).
    """

    def __init__(self):
        super().__init__({
            "header": In(stream.Signature(frame_header_layout())),
            "payload": In(stream.Signature(8)),
            "bytes": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = Crc(algorithm=CRC)
        header = Signal(frame_header_layout())
        index = Signal(range(max(1 << len(header.length), CRC_BYTES)))
        sent = Signal()
        m.d.comb += [sent.eq(self.bytes.valid & self.bytes.ready),
                     crc.data.eq(self.bytes.payload)]

        def send(byte, following, *, feed_crc=True):
            m.d.comb += [self.bytes.valid.eq(1), self.bytes.payload.eq(byte)]
            if feed_crc:
                m.d.comb += crc.valid.eq(sent)
            with m.If(sent):
                m.next = following

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.header.ready.eq(1)
                with m.If(self.header.valid):
                    m.d.sync += header.eq(self.header.payload)
                    m.d.comb += crc.clear.eq(1)
                    m.next = "SYNC"
            with m.State("SYNC"):
                send(SYNC, "TYPE", feed_crc=False)
            with m.State("TYPE"):
                send(header.type, "SEQ")
            with m.State("SEQ"):
                send(header.seq, "LENGTH_LOW")
            with m.State("LENGTH_LOW"):
                send(header.length[:8], "LENGTH_HIGH")
            with m.State("LENGTH_HIGH"):
                send(header.length[8:], "PAYLOAD")
                with m.If(sent):
                    m.d.sync += index.eq(0)
                    with m.If(header.length == 0):
                        m.next = "CRC"
            with m.State("PAYLOAD"):
                m.d.comb += [self.bytes.valid.eq(self.payload.valid),
                             self.bytes.payload.eq(self.payload.payload),
                             self.payload.ready.eq(self.bytes.ready),
                             crc.valid.eq(sent)]
                with m.If(sent):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == header.length - 1):
                        m.d.sync += index.eq(0)
                        m.next = "CRC"
            with m.State("CRC"):
                m.d.comb += [self.bytes.valid.eq(1),
                             self.bytes.payload.eq(crc.value.word_select(index[:2], 8))]
                with m.If(sent):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == CRC_BYTES - 1):
                        m.next = "IDLE"
        return m

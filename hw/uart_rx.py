"""A UART receiver: an 8N1 line (:mod:`hw.uart`) into a byte stream."""

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from .link_protocol import COUNTER_WIDTH, count_up
from .uart import DATA_BITS, check_divisor

__all__ = ["UartRx"]


class UartRx(wiring.Component):
    """Samples the line in the middle of each bit and delivers the bytes it finds.

    The line passes a two flip-flop synchronizer first (it comes from a pin).  A falling
    edge on the idle line starts a byte; if the line is high again half a bit later it
    was a glitch, not a start bit, and the receiver waits for the next falling edge.  A
    byte whose stop bit is low is a framing error: it is dropped and counted, and the
    receiver waits until the line is high before it looks for a start bit again (so a
    line held low, a break, counts once).  The receiver keeps one byte: one that arrives
    while the previous one has not been taken is an overrun, dropped and counted.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (:func:`hw.uart.uart_divisor`).

    Members
    -------
    rx : In(1)
        The line; high when idle.
    data : Out(stream.Signature(8))
        The bytes received.
    framing_errors, overruns : Out(COUNTER_WIDTH)
        Bytes dropped for a low stop bit, and for a full output; each stops at its
        largest value (the link status record's counters, :mod:`hw.link_protocol`).
    """

    def __init__(self, *, divisor):
        self.divisor = check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(DATA_BITS)),
            "framing_errors": Out(COUNTER_WIDTH),
            "overruns": Out(COUNTER_WIDTH),
        })

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.synchronizer = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(self.divisor))
        bits_left = Signal(range(DATA_BITS + 1))
        shift = Signal(DATA_BITS)
        stop_seen = Signal()

        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    # Half a bit to the middle of the start bit.
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    m.next = "IDLE"     # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(self.divisor - 1), bits_left.eq(DATA_BITS)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [
                        shift.eq(Cat(shift[1:], line)),     # least significant bit first
                        bits_left.eq(bits_left - 1),
                        timer.eq(self.divisor - 1),
                    ]
                    with m.If(bits_left == 1):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    # Back to idle in the middle of the stop bit, so that a sender a
                    # little faster than this clock does not lose its next start edge.
                    m.d.comb += stop_seen.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    count_up(m, self.framing_errors)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"

        with m.If(stop_seen):
            with m.If(self.data.valid & ~self.data.ready):
                count_up(m, self.overruns)
            with m.Else():
                m.d.sync += [self.data.valid.eq(1), self.data.payload.eq(shift)]
        return m

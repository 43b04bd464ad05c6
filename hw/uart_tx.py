"""A UART transmitter: a byte stream onto an 8N1 line (:mod:`hw.uart`)."""

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .uart import DATA_BITS, check_divisor

__all__ = ["UartTx"]


class UartTx(wiring.Component):
    """Sends each byte as a start bit, its eight bits least significant first and a
    stop bit, each ``divisor`` cycles long.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (:func:`hw.uart.uart_divisor`).

    Members
    -------
    data : In(stream.Signature(8))
        Bytes to send.  Taken while the line is idle or in the last cycle of a stop bit,
        so bytes offered in time go out back to back.
    tx : Out(1)
        The line; high when idle.
    """

    def __init__(self, *, divisor):
        self.divisor = check_divisor(divisor)
        super().__init__({
            "data": In(stream.Signature(DATA_BITS)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        symbols = DATA_BITS + 2
        # The bits after the one on the line: data bits, then the stop bit.
        following = Signal(DATA_BITS + 1)
        symbols_left = Signal(range(symbols + 1))
        timer = Signal(range(self.divisor))

        # Ready in the last cycle of the stop bit too: the next start bit follows it at once.
        m.d.comb += self.data.ready.eq((symbols_left == 0) | ((symbols_left == 1) & (timer == 0)))
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [
                self.tx.eq(0),
                following.eq(Cat(self.data.payload, Const(1, 1))),
                symbols_left.eq(symbols),
                timer.eq(self.divisor - 1),
            ]
        with m.Elif(symbols_left != 0):
            with m.If(timer == 0):
                m.d.sync += [
                    self.tx.eq(following[0]),
                    # Ones after the stop bit: the line stays high when the byte ends.
                    following.eq(Cat(following[1:], Const(1, 1))),
                    symbols_left.eq(symbols_left - 1),
                    timer.eq(self.divisor - 1),
                ]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m

"""The top of a board: the clock from a PLL, a reset button, the chip and its host link.

Everything about the board arrives as arguments (resource names, the PLL settings): the
facts of each board live in ``boards/``, which also builds the bitstream.
"""

from amaranth import ClockDomain, Elaboratable, Module, Value
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from .host_link import LinkedChip
from .pll import DirectClock, Ecp5PllSettings, Ice40PllSettings, Pll

__all__ = ["BoardTop"]


def _check_resource(name, resource):
    if not (isinstance(resource, tuple) and len(resource) == 2 and isinstance(resource[0], str)
            and isinstance(resource[1], int)):
        raise TypeError(f"{name} must be a (resource name, number) pair, not {resource!r}")
    return resource


class BoardTop(Elaboratable):
    """The chip and its host link on a board, clocked by a PLL.

    The ``sync`` domain runs from the PLL's output and stays in reset while the reset
    button is pressed or the PLL has not locked; the reset is released synchronously
    (:class:`amaranth.lib.cdc.ResetSynchronizer`).  The link's ``leds`` drive the board's
    LEDs, bit 0 on the first; bits beyond the board's LEDs are not shown.

    Parameters
    ----------
    link : amaranth.lib.wiring.Component
        The host link (see :mod:`hw.host_link`), e.g. :class:`hw.self_test.SelfTest`.
    pll : Ecp5PllSettings, Ice40PllSettings or DirectClock
        Makes the clock from the oscillator (:func:`hw.pll.pll_settings`); its output
        frequency becomes the clock constraint of the ``sync`` domain.
    clock : (str, int)
        The oscillator's platform resource.
    reset : (str, int)
        The reset button's platform resource (high while pressed).
    leds : sequence of (str, int)
        The LEDs' platform resources, in the order of the link's ``leds`` bits.
    uart : (str, int), optional
        The UART's platform resource (subsignals ``rx`` and ``tx``), for a link with
        ``rx`` and ``tx`` members (:class:`hw.serial_link.SerialLink`); required by one.

    Raises
    ------
    TypeError
        If a resource is not a (name, number) pair, the PLL settings are of no known
        kind, or a link with ``rx`` and ``tx`` gets no ``uart``.
    """

    def __init__(self, *, link, pll, clock, reset, leds, uart=None):
        if not isinstance(pll, (Ecp5PllSettings, Ice40PllSettings, DirectClock)):
            raise TypeError(f"pll must be Ecp5PllSettings, Ice40PllSettings or DirectClock, "
                            f"not {pll!r}")
        self.pll = pll
        self.clock = _check_resource("clock", clock)
        self.reset = _check_resource("reset", reset)
        self.leds = tuple(_check_resource("leds", led) for led in leds)
        self.chip = LinkedChip(link=link)
        members = self.chip.signature.members
        self.serial = "rx" in members and "tx" in members
        if self.serial and uart is None:
            raise TypeError(f"uart must be the board's UART resource for a link with rx and "
                            f"tx pins ({type(link).__name__}), not None")
        self.uart = None if uart is None else _check_resource("uart", uart)

    @property
    def frequency_mhz(self):
        """The clock the PLL makes, in MHz."""
        return self.pll.output_mhz

    def elaborate(self, platform):
        m = Module()
        clock_pin = platform.request(*self.clock, dir="-")
        if self.pll.pad_input:
            clk_in = clock_pin.io
        else:
            m.submodules.clock_buffer = clock_buffer = io.Buffer("i", clock_pin)
            clk_in = clock_buffer.i
        m.submodules.pll = pll = Pll(settings=self.pll, clk_in=clk_in)

        m.domains.sync = sync = ClockDomain("sync")
        m.d.comb += sync.clk.eq(pll.clk_out)
        platform.add_clock_constraint(sync.clk, self.pll.output_mhz * 1e6)
        m.submodules.button = button = io.Buffer("i", platform.request(*self.reset, dir="-"))
        m.submodules.reset_sync = ResetSynchronizer(arst=button.i | ~pll.locked, domain="sync")

        m.submodules.chip = chip = self.chip
        if self.serial:
            pins = platform.lookup(*self.uart)
            uart = platform.request(*self.uart, dir={pin.name: "-" for pin in pins.ios})
            m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
            m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
            m.d.comb += [chip.rx.eq(rx.i), tx.o.eq(chip.tx)]
        lights = Value.cast(chip.leds)
        for bit, led in enumerate(self.leds[:len(lights)]):
            m.submodules[f"led_{bit}"] = light = io.Buffer("o", platform.request(*led, dir="-"))
            m.d.comb += light.o.eq(lights[bit])
        return m

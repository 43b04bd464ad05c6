"""What a board is to the build: the facts each board module (``boards/ulx3s.py``,
``boards/icebreaker.py``) fills in, in one place per board."""

import importlib
from dataclasses import dataclass, field

from hw.config import NpuConfig
from hw.fpga import Device
from hw.pll import PllLimits

__all__ = ["Board", "SERIAL_BAUD"]

#: The serial link's baud rate on every board (FT231X and FT2232H both make 3 Mbaud).
SERIAL_BAUD = 3_000_000


@dataclass(frozen=True, kw_only=True)
class Board:
    """One FPGA board.

    Attributes
    ----------
    name : str
        ``BOARD=`` of ``make bitstream``.
    title : str
        The board and its part, for reports.
    platform : str
        The amaranth-boards platform class, as ``"module:Class"``.
    device : hw.fpga.Device
        The part as yosys and nextpnr name it (family, package, speed grade).
    clock : (str, int)
        The oscillator's platform resource.
    clock_mhz : float
        Its frequency.
    pll : hw.pll.PllLimits
        The ranges of the part's PLL; :attr:`default_mhz` and every ``--freq`` are checked
        against them.
    default_mhz : float
        The clock the bitstream runs at unless told otherwise (the oscillator's runs
        without the PLL when the PLL cannot make it: :func:`hw.pll.pll_settings`).
    reset : (str, int)
        The button that resets the chip (its platform resource, high while pressed).
    leds : tuple of (str, int)
        LED resources, in the order of the host link's ``leds`` bits.
    resources : dict of str to str
        ``LUT``, ``FF``, ``DSP``, ``BRAM`` (and other kinds) to nextpnr's resource type.
    default_config : NpuConfig
        The array ``make bitstream`` builds without ``CONFIG=``.
    largest_config : NpuConfig or None
        The largest array measured to fit, or None when none fits yet.
    fits : str
        What fits and why, as measured (for reports and the README).
    synthesis_bounds : dict of str to (int, int)
        Cells by yosys type that the default configuration's top must stay within (the
        test suite's synthesis check), with headroom for the work in progress.
    uart : (str, int)
        The UART resource wired to the board's USB serial converter (the serial link).
    uart_chip : str
        That converter, and which of its ports the host opens.
    serial_mhz : float
        The clock the serial link's bitstream runs at: a multiple of 3 MHz, so that 3
        Mbaud divides it exactly (:data:`SERIAL_BAUD`).
    load : tuple of str
        Commands that load the bitstream onto the board (``{bitstream}``: its path).
    bitstream : str
        The file the packer writes.
    """

    name: str
    title: str
    platform: str
    device: Device
    clock: tuple
    clock_mhz: float
    pll: PllLimits
    default_mhz: float
    reset: tuple
    leds: tuple
    resources: dict
    default_config: NpuConfig
    largest_config: NpuConfig | None
    fits: str
    synthesis_bounds: dict = field(default_factory=dict)
    uart: tuple = ("uart", 0)
    uart_chip: str = ""
    serial_mhz: float = 0.0
    load: tuple = ()
    bitstream: str = "top.bit"

    def __post_init__(self):
        self.pll.check_input(self.clock_mhz)
        if self.default_mhz != self.clock_mhz:
            self.pll.check_output(self.default_mhz)
        if self.serial_mhz and self.serial_mhz != self.clock_mhz:
            self.pll.check_output(self.serial_mhz)
        if self.pll.family != self.device.family:
            raise ValueError(f"{self.name}: a {self.pll.family} PLL on a "
                             f"{self.device.family} part")

    def make_platform(self):
        """A new instance of the amaranth-boards platform."""
        module, _, cls = self.platform.partition(":")
        return getattr(importlib.import_module(module), cls)()

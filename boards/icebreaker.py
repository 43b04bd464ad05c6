"""The iCEBreaker with the iCE40UP5K: every fact of the board the build uses."""

from hw.config import NpuConfig
from hw.fpga import DEVICES
from hw.pll import ICE40_PLL_LIMITS

from .board import Board

__all__ = ["BOARD"]

BOARD = Board(
    name="icebreaker",
    title="iCEBreaker (iCE40UP5K-SG48)",
    platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
    device=DEVICES["ice40-up5k"],
    clock=("clk12", 0),       # 12 MHz oscillator on pin 35
    clock_mhz=12.0,
    pll=ICE40_PLL_LIMITS,     # SB_PLL40_PAD (the UP5K's PLL sits beside pin 35)
    # The PLL makes 16 MHz and more; today's chip reaches about 15.5 MHz, so it runs from
    # the oscillator itself.
    default_mhz=12.0,
    reset=("button", 0),      # the user button (pin 10)
    leds=(("led_g", 0), ("led_r", 0)),   # passed, failed
    resources={"LUT": "ICESTORM_LC", "DSP": "ICESTORM_DSP", "BRAM": "ICESTORM_RAM",
               "SPRAM": "ICESTORM_SPRAM"},
    # The smallest chip: 1-byte streams, small buffers.
    default_config=NpuConfig(rows=1, cols=1, act_depth=16, weight_tiles=2, acc_depth=16,
                             data_bytes=1),
    largest_config=None,
    fits="nothing fits yet: the 1x1 chip needs more than the 5,280 logic cells (the "
         "requantizer alone takes about 2,500 per column)",
    load=("openFPGALoader -b ice40_generic {bitstream}", "iceprog {bitstream}"),
    bitstream="top.bin",
)

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
    # 1-byte streams, small buffers. Synthesized with -dsp, every multiplier takes one
    # SB_MAC16 of 8: one per PE, four for each column's requantizer lane and one more
    # (measured 2026-12-01: 1x1 6, 2x1 7, 3x1 8, 4x1 9). So one column and three rows
    # (71 % of the logic cells); the LUTs are not the limit.
    default_config=NpuConfig(rows=3, cols=1, act_depth=16, weight_tiles=2, acc_depth=16,
                             data_bytes=1),
    largest_config=NpuConfig(rows=3, cols=1, act_depth=16, weight_tiles=2, acc_depth=16,
                             data_bytes=1),
    fits="3x1 with 1-byte streams fits (8 of 8 SB_MAC16, about 71 % of the logic cells); "
         "4x1 needs 9 SB_MAC16 and a second column four more (its requantizer lane)",
    uart=("uart", 0),         # FT2232H channel B: FPGA rx pin 6, tx pin 9
    uart_chip="FT2232H channel B, the second of its two ports (/dev/ttyUSB1 on Linux)",
    serial_mhz=12.0,          # the oscillator: 3 Mbaud at divisor 4
    load=("openFPGALoader -b ice40_generic {bitstream}", "iceprog {bitstream}"),
    bitstream="top.bin",
)

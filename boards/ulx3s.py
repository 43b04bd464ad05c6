"""The ULX3S with the LFE5U-85F: every fact of the board the build uses."""

from hw.config import NpuConfig
from hw.fpga import DEVICES
from hw.pll import ECP5_PLL_LIMITS

from .board import Board

__all__ = ["BOARD"]

BOARD = Board(
    name="ulx3s",
    title="ULX3S (LFE5U-85F-6BG381)",
    platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
    device=DEVICES["ecp5-85f"],
    clock=("clk25", 0),       # 25 MHz oscillator on G2
    clock_mhz=25.0,
    pll=ECP5_PLL_LIMITS,      # EHXPLLL
    default_mhz=25.0,
    reset=("button_pwr", 0),  # PWR button (D6, active low): the board has no reset pin
    leds=(("led", 0), ("led", 1), ("led", 2)),
    resources={"LUT": "TRELLIS_COMB", "FF": "TRELLIS_FF", "DSP": "MULT18X18D",
               "BRAM": "DP16KD"},
    default_config=NpuConfig(),
    # Each PE takes one MULT18X18D and each requantizer lane four: 12x12 with three lanes
    # (a row in four cycles) needs 144 + 12 = 156 of 156; with its default eight lanes it
    # would need 176, and 13x13 with one lane 173.
    largest_config=NpuConfig(rows=12, cols=12, requant_lanes=3),
    fits="8x8 (default) and 12x12 with 3 requantizer lanes fit the 156 MULT18X18D "
         "(one per PE, four per requantizer lane); 13x13 and larger do not",
    synthesis_bounds={
        # yosys cells of the 8x8 board top, measured 2026-12-01 (README, FPGA): LUT4 12,145,
        # CCU2C 2,377, TRELLIS_FF 12,558, MULT18X18D 96, DP16KD 20. Headroom for the
        # pipelining (more flip-flops) and the requantizer's lane sharing (fewer DSPs) in
        # progress; at least one MULT18X18D per PE.
        "LUT4": (4_000, 40_000),
        "CCU2C": (500, 10_000),
        "TRELLIS_FF": (4_000, 40_000),
        "MULT18X18D": (64, 156),
        "DP16KD": (4, 208),
        "EHXPLLL": (1, 1),
    },
    uart=("uart", 0),         # FT231X: FPGA rx M1, tx L4; the host opens /dev/ttyUSB0
    uart_chip="FT231X (the US1 USB port), /dev/ttyUSB0 on Linux",
    # 25 MHz is 4.2 % off any whole divisor of 3 Mbaud.  The EHXPLLL cannot make 48 MHz
    # from 25 within 1 % (46.88 or 50); it makes 30 MHz exactly: divisor 10 (45 MHz and
    # divisor 15 too, with less timing margin for the 8x8 array).
    serial_mhz=30.0,
    load=("openFPGALoader -b ulx3s {bitstream}",),
    bitstream="top.bit",
)

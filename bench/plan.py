"""What the benchmark measures: the arrays, the GEMMs of a full and a quick run, and the
reference cycle counts of earlier schedules."""

from dataclasses import dataclass

from hw.config import NpuConfig

__all__ = ["CONFIGS", "DEFAULT_CONFIG", "RTL_BACKENDS", "Gemm", "BenchPlan", "FULL_PLAN",
           "QUICK_PLAN", "DIGITS", "DIGITS_WIDTHS", "DIGITS_IMAGES", "PREVIOUS_DESIGN_CYCLES",
           "GEMM_SCHEDULE_CYCLES", "array_name"]

#: The array sizes compared; the buffers and streams are the defaults of NpuConfig.
CONFIGS = (NpuConfig(rows=4, cols=4), NpuConfig(), NpuConfig(rows=16, cols=16))
#: The configuration of the validation, speed and activity sections.
DEFAULT_CONFIG = NpuConfig()
#: Simulated-RTL backends, in the order they are measured: the Verilog on Verilator (the
#: compiled host loop, then under cocotb) and Icarus, the Amaranth description in
#: Amaranth's simulator.
RTL_BACKENDS = ("verilator", "verilator-cocotb", "icarus", "amaranth")
#: The digits MLP of ``examples/digits``: layer widths and the images it classifies.
DIGITS_WIDTHS = (64, 32, 10)
DIGITS_IMAGES = 1797
DIGITS = "digits MLP 64-32-10, 1797 images"
#: Cycles of the same workloads on the 8x8 array of the previous design, which ran one
#: command at a time (commit 535ac24: its cycle model, this benchmark's programs and the
#: driver's lowering); the "before" of section 5.
PREVIOUS_DESIGN_CYCLES = {"64x64x64": 7_952, "8x256x256": 50_752, "256x256x256": 951_296,
                          "1x1024x1024": 676_352, "1x256x256": 43_136, DIGITS: 151_520}
#: Cycles of every GEMM of both plans, by array, under the benchmark's own schedule
#: ``sim.programs.gemm_schedule`` of commit 8d016d9, since removed: one M pass per
#: act_depth / ceil(K / rows) rows, one activation region, no READ_STATUS at the end.
#: Since then every GEMM lowers through the driver's schedule; the tables show both.
GEMM_SCHEDULE_CYCLES = {
    "4x4": {
        "8x8x8": 131, "16x16x16": 443, "13x21x11": 421, "100x24x40": 7_036, "32x32x32": 2_523,
        "1x64x64": 3_290, "8x64x64": 3_491, "32x64x64": 9_083, "64x64x64": 18_125,
        "128x64x64": 36_209, "512x64x64": 144_713, "128x128x128": 140_457, "1x256x256": 49_946,
        "8x256x256": 50_723, "32x256x256": 202_841, "128x256x256": 811_313,
        "256x256x256": 1_622_609, "512x256x256": 3_245_201, "512x512x512": 25_430_285,
        "1x1024x1024": 789_530, "8x1024x1024": 3_159_119, "32x1024x1024": 12_636_443,
        "128x1024x1024": 50_545_739, "512x1024x1024": 202_182_923,
    },
    "8x8": {
        "8x8x8": 95, "16x16x16": 223, "13x21x11": 264, "100x24x40": 2_093, "32x32x32": 839,
        "1x64x64": 1_446, "8x64x64": 1_551, "32x64x64": 2_631, "64x64x64": 4_967,
        "128x64x64": 9_861, "512x64x64": 39_225, "128x128x128": 37_025, "1x256x256": 21_030,
        "8x256x256": 21_423, "32x256x256": 44_821, "128x256x256": 179_209,
        "256x256x256": 358_393, "512x256x256": 716_761, "512x512x512": 5_359_505,
        "1x1024x1024": 329_766, "8x1024x1024": 660_553, "32x1024x1024": 2_642_173,
        "128x1024x1024": 10_568_653, "512x1024x1024": 42_274_573,
    },
    "16x16": {
        "8x8x8": 127, "16x16x16": 215, "13x21x11": 247, "100x24x40": 1_244, "32x32x32": 551,
        "1x64x64": 995, "8x64x64": 1_072, "32x64x64": 1_375, "64x64x64": 1_967,
        "128x64x64": 3_631, "512x64x64": 13_729, "128x128x128": 11_413, "1x256x256": 13_775,
        "8x256x256": 14_020, "32x256x256": 15_055, "128x256x256": 60_001,
        "256x256x256": 119_929, "512x256x256": 239_785, "512x512x512": 1_762_441,
        "1x1024x1024": 214_655, "8x1024x1024": 215_572, "32x1024x1024": 862_213,
        "128x1024x1024": 3_448_777, "512x1024x1024": 13_795_033,
    },
}


@dataclass(frozen=True)
class Gemm:
    """``A[m, k] @ W[k, n]``, requantized to uint8, as one layer runs it."""
    m: int
    k: int
    n: int

    @property
    def macs(self):
        return self.m * self.k * self.n

    def __str__(self):
        return f"{self.m}x{self.k}x{self.n}"


@dataclass(frozen=True)
class BenchPlan:
    """What one run measures."""
    #: Edge lengths of the square GEMMs of section 1.
    square_sizes: tuple
    #: Batch sizes (M) and layer widths (K = N) of the MLP-like GEMMs of section 1.
    mlp_batches: tuple
    mlp_widths: tuple
    #: Section 2: small GEMMs on every RTL backend, against the cycle model.
    validation: tuple
    #: Section 4: the GEMM each simulator is timed on, and the golden model's GEMM.
    speed: Gemm
    golden: Gemm
    #: Section 3: (rows, cols, GEMM) run by SCALE-Sim and by our cycle model.
    scalesim: tuple
    #: Section 5: GEMMs whose cycles are accounted for; the first is the headline.
    activity: tuple
    #: Section 4: (configuration, GEMM) pairs the compiled Verilator loop is timed on.
    long_runs: tuple = ()
    #: Section 6: GEMMs run with a share of their weight tiles pruned to zero, and the
    #: shares (the driver skips all-zero tiles: no load, no matmul).
    pruned: tuple = ()
    pruned_shares: tuple = (0.5, 0.9)

    def sweep(self):
        """``(family, Gemm)`` of section 1: squares, then batch x width."""
        squares = [("square", Gemm(s, s, s)) for s in self.square_sizes]
        layers = [("mlp", Gemm(b, w, w)) for w in self.mlp_widths for b in self.mlp_batches]
        return squares + layers


def _scalesim_cases(arrays, gemms):
    return tuple((rows, cols, gemm) for rows, cols in arrays for gemm in gemms)


FULL_PLAN = BenchPlan(
    square_sizes=(16, 32, 64, 128, 256, 512),
    mlp_batches=(1, 8, 32, 128, 512),
    mlp_widths=(64, 256, 1024),
    validation=(Gemm(8, 8, 8), Gemm(13, 21, 11), Gemm(32, 32, 32), Gemm(1, 64, 64),
                Gemm(100, 24, 40)),
    speed=Gemm(64, 64, 64),
    golden=Gemm(256, 256, 256),
    scalesim=(_scalesim_cases([(8, 8)], [Gemm(16, 16, 16), Gemm(32, 32, 32), Gemm(64, 64, 64),
                                         Gemm(128, 128, 128), Gemm(1, 256, 256),
                                         Gemm(32, 256, 256)])
              + _scalesim_cases([(4, 4), (16, 16)], [Gemm(32, 32, 32), Gemm(64, 64, 64)])),
    activity=(Gemm(64, 64, 64), Gemm(8, 256, 256), Gemm(256, 256, 256), Gemm(1, 1024, 1024)),
    long_runs=((NpuConfig(), Gemm(512, 512, 512)),
               (NpuConfig(rows=16, cols=16), Gemm(512, 512, 512))),
    pruned=(Gemm(64, 64, 64), Gemm(256, 256, 256), Gemm(1, 1024, 1024)),
)

QUICK_PLAN = BenchPlan(
    square_sizes=(16, 32, 64),
    mlp_batches=(1, 32),
    mlp_widths=(64, 256),
    validation=(Gemm(8, 8, 8), Gemm(13, 21, 11)),
    speed=Gemm(16, 16, 16),
    golden=Gemm(64, 64, 64),
    scalesim=_scalesim_cases([(8, 8)], [Gemm(16, 16, 16), Gemm(32, 32, 32)]),
    activity=(Gemm(64, 64, 64), Gemm(1, 256, 256)),
    long_runs=((NpuConfig(), Gemm(64, 64, 64)),),
    pruned=(Gemm(32, 64, 64),),
)


def array_name(config):
    """``rows x cols`` of a configuration, as the tables name arrays."""
    return f"{config.rows}x{config.cols}"

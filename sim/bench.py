"""``python -m sim.bench`` — how fast the Npu is, and how fast it simulates.

Writes ``report.md``, ``results.json`` and PNG plots into ``--output``:

1. cycles and array utilization (useful MACs / (cycles x rows x cols)) of square and
   MLP-shaped GEMMs on 4x4, 8x8 and 16x16 arrays, from the cycle model;
2. the cycle model against the cycles the simulated RTL measures;
3. SCALE-Sim's weight-stationary compute cycles for the same arrays and GEMMs;
4. simulation speed of Verilator, Icarus and Amaranth, and the golden model's wall time;
5. where the cycles go, by command type.

``--quick`` runs a reduced set in well under a minute (the tests use it).
"""

import argparse
import contextlib
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from hw import isa
from hw.config import NpuConfig
from hw.isa import ErrorCode, Opcode
from sim.cycle_model import FETCH_CYCLES, command_cycles, program_cycles
from sim.golden import GoldenNpu
from sim.programs import gemm_program, random_params

__all__ = ["Gemm", "BenchPlan", "FULL_PLAN", "QUICK_PLAN", "CATEGORIES", "gemm_command_mix",
           "cycle_breakdown", "run_scalesim", "run_bench", "main"]

#: The array sizes compared; the buffers and streams are the defaults of NpuConfig.
CONFIGS = (NpuConfig(rows=4, cols=4), NpuConfig(), NpuConfig(rows=16, cols=16))
#: The configuration of the validation, speed and breakdown sections.
DEFAULT_CONFIG = NpuConfig()
#: Simulated-RTL backends, in the order they are measured: the Verilog on Verilator and
#: Icarus, the Amaranth description in Amaranth's simulator.
RTL_BACKENDS = ("verilator", "icarus", "amaranth")
#: Where the cycles of a GEMM go; every cycle of the cycle model lands in exactly one.
CATEGORIES = ("fetch", "load activations", "load weights", "load parameters",
              "matmul streaming", "matmul overhead", "store")
#: GEMMs up to this many MACs also run on the golden model, to check that the grouped
#: command mix below counts exactly the cycles of the real command stream.
_MIX_CHECK_MACS = 1 << 20


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
    #: Section 5: GEMMs whose cycles are broken down; the first is the headline.
    breakdown: tuple

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
    breakdown=(Gemm(64, 64, 64), Gemm(8, 256, 256), Gemm(256, 256, 256), Gemm(1, 1024, 1024)),
)

QUICK_PLAN = BenchPlan(
    square_sizes=(16, 32, 64),
    mlp_batches=(1, 32),
    mlp_widths=(64, 256),
    validation=(Gemm(8, 8, 8), Gemm(13, 21, 11)),
    speed=Gemm(16, 16, 16),
    golden=Gemm(64, 64, 64),
    scalesim=_scalesim_cases([(8, 8)], [Gemm(16, 16, 16), Gemm(32, 32, 32)]),
    breakdown=(Gemm(64, 64, 64), Gemm(1, 256, 256)),
)


def _array(config):
    return f"{config.rows}x{config.cols}"


# -- cycle model of whole GEMMs -------------------------------------------------------------

def _tile_sizes(total, tile):
    """``(size, how many)`` of the pieces that cut ``total`` into tiles of ``tile``."""
    sizes = [(tile, total // tile)] if total >= tile else []
    if total % tile:
        sizes.append((total % tile, 1))
    return sizes


def gemm_command_mix(config, gemm):
    """The commands :func:`sim.programs.gemm_program` issues for ``gemm``, grouped.

    Same tiling (M passes as deep as the buffers allow, K tiles of ``rows``, N tiles of
    ``cols``, requantization parameters per N tile), but without data: a 512x1024x1024
    GEMM on a 4x4 array is a dozen groups instead of millions of commands.  Addresses
    and slots stay 0 because they do not change a command's cycles.  The benchmark
    checks the result against the real command stream on the golden model.

    Parameters
    ----------
    config : NpuConfig
    gemm : Gemm

    Returns
    -------
    list of (hw.isa.Instruction, int)
        Each command and how many times the stream holds it.
    """
    k_tiles = math.ceil(gemm.k / config.rows)
    m_tile = min(config.act_depth // k_tiles, config.acc_depth)
    if m_tile < 1:
        raise ValueError(f"K={gemm.k} does not fit the activation buffer of a {config}")
    mix = []
    for rows_per_pass, passes in _tile_sizes(gemm.m, m_tile):
        for length, count in _tile_sizes(gemm.k, config.rows):
            mix.append((isa.LoadAct(count=rows_per_pass, length=length), passes * count))
        for columns, n_tiles in _tile_sizes(gemm.n, config.cols):
            tiles = passes * n_tiles
            mix.append((isa.LoadParams(count=columns), tiles))
            for depth, k_count in _tile_sizes(gemm.k, config.rows):
                mix.append((isa.LoadWeight(k=depth, n=columns), tiles * k_count))
                mix.append((isa.Matmul(count=rows_per_pass), tiles * k_count))
            mix.append((isa.Store(count=rows_per_pass, n=columns), tiles))
    return mix


_CATEGORY_OF = {Opcode.LOAD_ACT: "load activations", Opcode.LOAD_WEIGHT: "load weights",
                Opcode.LOAD_PARAMS: "load parameters", Opcode.STORE: "store"}


def cycle_breakdown(config, mix):
    """Cycles of a command mix by :data:`CATEGORIES`; they add up to the run's cycles.

    A ``MATMUL`` splits into streaming (one cycle per activation vector, the only
    cycles in which the array does useful work) and overhead (weight preload, pipeline
    latency and the reader/accumulator stages around them).
    """
    parts = dict.fromkeys(CATEGORIES, 0)
    for instruction, repeats in mix:
        unit = command_cycles(instruction, config) - FETCH_CYCLES
        parts["fetch"] += FETCH_CYCLES * repeats
        if instruction.OPCODE == Opcode.MATMUL:
            parts["matmul streaming"] += instruction.count * repeats
            parts["matmul overhead"] += (unit - instruction.count) * repeats
        else:
            parts[_CATEGORY_OF[instruction.OPCODE]] += unit * repeats
    return parts


def _utilization(config, gemm, cycles):
    return gemm.macs / (cycles * config.rows * config.cols)


def _random_program(config, gemm, rng):
    """``gemm`` with random uint8 activations, int8 weights and requantization records."""
    a = rng.integers(0, 256, (gemm.m, gemm.k)).astype(np.uint8)
    w = rng.integers(-128, 128, (gemm.k, gemm.n)).astype(np.int8)
    return gemm_program(config, a, w, random_params(rng, gemm.n))


def model_sweep(plan, rng):
    """Section 1: cycles and utilization of every sweep GEMM on every array size."""
    rows = []
    for config in CONFIGS:
        for family, gemm in plan.sweep():
            mix = gemm_command_mix(config, gemm)
            cycles = sum(cycle_breakdown(config, mix).values())
            row = {"array": _array(config), "family": family, "gemm": str(gemm),
                   "m": gemm.m, "k": gemm.k, "n": gemm.n, "macs": gemm.macs,
                   "commands": sum(repeats for _, repeats in mix), "cycles": cycles,
                   "utilization": _utilization(config, gemm, cycles), "golden_cycles": None}
            if gemm.macs <= _MIX_CHECK_MACS:
                program = _random_program(config, gemm, rng)
                row["golden_cycles"] = program_cycles(program.commands, program.data_in, config)
            rows.append(row)
    return rows


# -- SCALE-Sim --------------------------------------------------------------------------------

_SCALESIM_CONFIG = """\
[general]
run_name = npu

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: {ifmap_kb}
FilterSramSzkB: {filter_kb}
OfmapSramSzkB: {ofmap_kb}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth: 10
Dataflow: ws
MemoryBanks: 1
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 1
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 1
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""


def _scalar_max(*values):
    """``max`` that returns a NumPy scalar even for a list of one-element arrays."""
    return np.max(values[0] if len(values) == 1 else values)


def _scalesim_array(rows, cols, gemms, workdir):
    """Run SCALE-Sim once for one array size; a worker process, so its globals stay there.

    Returns ``[(compute cycles, cycles incl. prefetch, stall cycles), ...]`` per GEMM.
    """
    from scalesim.memory import double_buffered_scratchpad_mem
    from scalesim.scale_sim import scalesim
    # SCALE-Sim 3.0.0 takes int() of max() over one-element arrays, which NumPy 2.4
    # refuses (scalesim-project/SCALE-Sim#160); the same values as scalars fix it.
    double_buffered_scratchpad_mem.max = _scalar_max
    config = NpuConfig(rows=rows, cols=cols)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # The SRAMs as large as the Npu's buffers; in CALC bandwidth mode they do not
    # change the compute cycles.
    (workdir / "npu.cfg").write_text(_SCALESIM_CONFIG.format(
        rows=rows, cols=cols, ifmap_kb=max(1, config.act_depth * rows // 1024),
        filter_kb=max(1, config.weight_depth * cols // 1024),
        ofmap_kb=max(1, config.acc_depth * cols * 4 // 1024)))
    # SCALE-Sim's GEMM topology: M rows of the input, N filters, K-long dot products.
    (workdir / "gemms.csv").write_text("Layer,M,N,K,\n" + "".join(
        f"gemm{i},{g.m},{g.n},{g.k},\n" for i, g in enumerate(gemms)))
    # It reads a layout file even when custom layouts are off; a header suffices.
    (workdir / "layout.csv").write_text("Layer,\n")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        sim = scalesim(save_disk_space=True, verbose=False, config=str(workdir / "npu.cfg"),
                       topology=str(workdir / "gemms.csv"),
                       layout=str(workdir / "layout.csv"), input_type_gemm=True)
        sim.run_scale(top_path=str(workdir / "out"))
    results = []
    for layer in sim.runner.single_layer_sim_object_list:
        with_prefetch, compute, stalls, *_ = layer.get_compute_report_items()
        results.append((int(compute), int(with_prefetch), int(stalls)))
    return results


def run_scalesim(cases, workdir, *, workers=2):
    """SCALE-Sim (weight-stationary) compute cycles for ``(rows, cols, Gemm)`` cases.

    Parameters
    ----------
    cases : sequence of (int, int, Gemm)
    workdir : path-like
        Where SCALE-Sim's input and report files go.
    workers : int
        Array sizes simulated in parallel (SCALE-Sim is single-threaded Python).

    Returns
    -------
    dict
        ``(rows, cols, Gemm)`` -> ``(compute cycles, cycles incl. prefetch, stall cycles)``.
    """
    by_array = {}
    for rows, cols, gemm in cases:
        by_array.setdefault((rows, cols), []).append(gemm)
    # spawn: the parent holds threads (rich's progress display) that fork would copy.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {array: pool.submit(_scalesim_array, *array, gemms,
                                      Path(workdir) / f"{array[0]}x{array[1]}")
                   for array, gemms in by_array.items()}
        return {(*array, gemm): result
                for array, future in futures.items()
                for gemm, result in zip(by_array[array], future.result(), strict=True)}


def scalesim_comparison(plan, workdir):
    """Section 3: SCALE-Sim's compute cycles next to ours for the same GEMMs."""
    measured = run_scalesim(plan.scalesim, workdir)
    rows = []
    for (array_rows, array_cols, gemm), (compute, with_prefetch, stalls) in measured.items():
        config = NpuConfig(rows=array_rows, cols=array_cols)
        mix = gemm_command_mix(config, gemm)
        matmuls = [(ins, repeats) for ins, repeats in mix if ins.OPCODE == Opcode.MATMUL]
        ours_total = sum(cycle_breakdown(config, mix).values())
        # SCALE-Sim maps each rows x cols weight tile once ("fold") and streams all M rows.
        folds = math.ceil(gemm.k / array_rows) * math.ceil(gemm.n / array_cols)
        rows.append({
            "array": _array(config), "gemm": str(gemm), "m": gemm.m, "k": gemm.k, "n": gemm.n,
            "scalesim_compute_cycles": compute, "scalesim_cycles_with_prefetch": with_prefetch,
            "scalesim_stall_cycles": stalls,
            "scalesim_utilization": _utilization(config, gemm, compute),
            "scalesim_folds": folds,
            "scalesim_formula": folds * (2 * array_rows + array_cols + gemm.m - 2) - 1,
            "our_weight_tiles": sum(repeats for _, repeats in matmuls),
            "our_matmul_cycles": sum(command_cycles(ins, config) * r for ins, r in matmuls),
            "our_cycles": ours_total,
            "our_utilization": _utilization(config, gemm, ours_total)})
    return rows


# -- the simulated RTL ------------------------------------------------------------------------

def _build_stamp(name, config):
    """When ``name``'s build for ``config`` was last made (None: never, or no build step).

    Opening a backend rebuilds only when the generated Verilog changed; comparing this
    before and after tells whether the start time includes a build.
    """
    if name not in ("verilator", "icarus"):
        return None
    from sim.rtl import RtlSimulation
    marker = RtlSimulation(config=config, simulator=name).build_dir / "built.json"
    return marker.stat().st_mtime_ns if marker.exists() else None


def _run_and_check(chip, program, config):
    """Run ``program``; its cycles and bytes next to the golden model's."""
    expected = GoldenNpu(config).run(program.commands, program.data_in)
    started = time.perf_counter()
    result = chip.execute(program.commands, program.data_in)
    seconds = time.perf_counter() - started
    return {"measured_cycles": result.cycles, "model_cycles": expected.cycles,
            "bytes_match": result.data_out == expected.data_out
            and result.status.error == ErrorCode.NONE, "seconds": seconds}


def measure_backends(plan, rng, backends=RTL_BACKENDS, on_step=None):
    """Sections 2 and 4: each backend runs the validation GEMMs, then the speed GEMM.

    The validation runs also warm the simulator up, so the timed run measures the
    steady state.  Returns ``(validation rows, speed rows)``.
    """
    from driver.backends import BackendUnavailable, open_backend
    config = DEFAULT_CONFIG
    validation_programs = [(gemm, _random_program(config, gemm, rng)) for gemm in plan.validation]
    speed_program = _random_program(config, plan.speed, rng)
    validation, speed = [], []
    for name in backends:
        if on_step:
            on_step(f"{name}: build (if needed), start, {len(plan.validation) + 1} GEMMs")
        stamp = _build_stamp(name, config)
        started = time.perf_counter()
        try:
            chip = open_backend(name, config=config)
        except (BackendUnavailable, RuntimeError) as exc:  # missing tool, failed start
            speed.append({"backend": name, "available": False, "reason": str(exc)})
            continue
        with chip:
            start_seconds = time.perf_counter() - started
            cached = None if name == "amaranth" else stamp == _build_stamp(name, config)
            for gemm, program in validation_programs:
                validation.append({"backend": name, "gemm": str(gemm),
                                   **_run_and_check(chip, program, config)})
            timed = _run_and_check(chip, speed_program, config)
        speed.append({"backend": name, "available": True, "build_cached": cached,
                      "start_seconds": start_seconds, "gemm": str(plan.speed), **timed,
                      "cycles_per_second": timed["measured_cycles"] / timed["seconds"]})
    return validation, speed


def time_golden(plan, rng):
    """Section 4: wall time of the golden model for one whole GEMM (program built before)."""
    program = _random_program(DEFAULT_CONFIG, plan.golden, rng)
    started = time.perf_counter()
    result = GoldenNpu(DEFAULT_CONFIG).run(program.commands, program.data_in)
    seconds = time.perf_counter() - started
    return {"gemm": str(plan.golden), "commands": len(program.instructions),
            "cycles": result.cycles, "seconds": seconds,
            "cycles_per_second": result.cycles / seconds}


def breakdown_rows(plan):
    """Section 5: cycles by category for the breakdown GEMMs on the default array.

    Two bounds show what the next steps can gain: utilization if loads and stores
    overlapped the MATMULs completely, and if double-buffered weights also hid each
    MATMUL's preload (``rows`` cycles) behind the previous tile's streaming.
    """
    config = DEFAULT_CONFIG
    rows = []
    for gemm in plan.breakdown:
        mix = gemm_command_mix(config, gemm)
        parts = cycle_breakdown(config, mix)
        total = sum(parts.values())
        matmuls = [(ins, repeats) for ins, repeats in mix if ins.OPCODE == Opcode.MATMUL]
        matmul_cycles = sum(command_cycles(ins, config) * repeats for ins, repeats in matmuls)
        preload_cycles = config.rows * sum(repeats for _, repeats in matmuls)
        rows.append({"gemm": str(gemm), "array": _array(config), "cycles": total,
                     "parts": parts, "utilization": _utilization(config, gemm, total),
                     "matmul_only_utilization": _utilization(config, gemm, matmul_cycles),
                     "no_preload_utilization":
                         _utilization(config, gemm, matmul_cycles - preload_cycles)})
    return rows


# -- plots ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _figure(path, figsize, ncols=1):
    """Axes of a new figure that is laid out, written to ``path`` (PNG) and closed on exit."""
    import matplotlib
    matplotlib.use("Agg")  # files only: benchmarks run without a display
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=figsize)
    try:
        yield axes
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def plot_utilization(sweep, path):
    """Utilization of the square GEMMs against size, and of MLP layers against batch."""
    with _figure(path, (12, 4.5), ncols=2) as (squares, layers):
        for array in dict.fromkeys(row["array"] for row in sweep):
            points = [r for r in sweep if r["array"] == array and r["family"] == "square"]
            squares.plot([r["m"] for r in points], [100 * r["utilization"] for r in points],
                         marker="o", label=f"{array} array")
        squares.set(xscale="log", xlabel="M = K = N", ylabel="array utilization (%)",
                    title="square GEMMs", ylim=(0, 100))
        squares.set_xticks([r["m"] for r in sweep if r["family"] == "square"],
                           labels=[str(r["m"]) for r in sweep if r["family"] == "square"])
        squares.minorticks_off()
        squares.legend()
        styles = {"4x4": ":", "8x8": "-", "16x16": "--"}
        widths = dict.fromkeys(row["k"] for row in sweep if row["family"] == "mlp")
        colours = {width: f"C{i}" for i, width in enumerate(widths)}
        for array in dict.fromkeys(row["array"] for row in sweep):
            for width, colour in colours.items():
                points = [r for r in sweep if r["array"] == array and r["family"] == "mlp"
                          and r["k"] == width]
                layers.plot([r["m"] for r in points], [100 * r["utilization"] for r in points],
                            linestyle=styles.get(array, "-"), color=colour, marker=".",
                            label=f"{width}->{width}, {array}")
        layers.set(xscale="log", xlabel="batch (M)", ylabel="array utilization (%)",
                   title="MLP layers K = N (colour) on each array (line style)", ylim=(0, 100))
        layers.legend(fontsize="x-small", ncol=3)


def plot_scalesim(rows, path):
    """SCALE-Sim's compute cycles next to our MATMUL-only and whole-stream cycles."""
    with _figure(path, (max(7, 0.9 * len(rows)), 4.5)) as ax:
        x = np.arange(len(rows))
        series = [("SCALE-Sim compute (ws)", "scalesim_compute_cycles"),
                  ("ours: MATMUL commands only", "our_matmul_cycles"),
                  ("ours: whole command stream", "our_cycles")]
        for i, (label, key) in enumerate(series):
            ax.bar(x + (i - 1) * 0.27, [r[key] for r in rows], width=0.27, label=label)
        ax.set_xticks(x, [f"{r['array']}\n{r['gemm']}" for r in rows], fontsize="small")
        ax.set(yscale="log", ylabel="cycles", title="SCALE-Sim and the Npu's cycle model")
        ax.legend()


def plot_speed(speed, golden, path):
    """Simulated cycles per wall-clock second of every simulator and the golden model."""
    ran = [s for s in speed if s["available"]]
    names = [s["backend"] for s in ran] + ["golden model"]
    rates = [s["cycles_per_second"] for s in ran] + [golden["cycles_per_second"]]
    with _figure(path, (7, 3.2)) as ax:
        ax.barh(names, rates, color=[f"C{i}" for i in range(len(names))])
        for y, rate in enumerate(rates):
            ax.text(rate, y, f" {rate:,.0f}", va="center", fontsize="small")
        ax.set(xscale="log", xlabel="simulated cycles per wall-clock second",
               title=f"simulation speed ({_array(DEFAULT_CONFIG)} array)",
               xlim=(None, 5 * max(rates)))  # room for the labels right of the bars
        ax.invert_yaxis()


def plot_breakdown(rows, path):
    """Each breakdown GEMM as a bar stacked by :data:`CATEGORIES`, in percent of its cycles."""
    with _figure(path, (8, 4.5)) as ax:
        x = np.arange(len(rows))
        bottom = np.zeros(len(rows))
        for i, category in enumerate(CATEGORIES):
            share = np.array([100 * r["parts"][category] / r["cycles"] for r in rows])
            ax.bar(x, share, bottom=bottom, label=category, color=f"C{i}")
            bottom += share
        ax.set_xticks(x, [f"{r['gemm']}\n{r['cycles']:,} cycles" for r in rows], fontsize="small")
        ax.set(ylabel="share of cycles (%)", ylim=(0, 100),
               title=f"where the cycles go ({rows[0]['array']} array)")
        ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize="small")


# -- the report -------------------------------------------------------------------------------

def _markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _percent(value):
    return f"{100 * value:.1f} %"


def _yes(flag):
    return "yes" if flag else "**NO**"


def _headline(results):
    """The numbers README and the console summary quote."""
    first = results["breakdown"][0]
    lines = {f"{first['gemm']} on {first['array']}":
             f"{first['cycles']:,} cycles, {_percent(first['utilization'])} utilization"}
    best = max((r for r in results["utilization"] if r["array"] == first["array"]),
               key=lambda r: r["utilization"])
    lines[f"best on {first['array']}"] = (f"{best['gemm']}: {_percent(best['utilization'])}")
    scalesim = results["scalesim"]
    for row in scalesim["rows"]:
        if (row["array"], row["gemm"]) == (first["array"], first["gemm"]):
            lines[f"SCALE-Sim {row['gemm']} on {row['array']}"] = (
                f"{row['scalesim_compute_cycles']:,} compute cycles vs our "
                f"{row['our_matmul_cycles']:,} MATMUL / {row['our_cycles']:,} total")
    for s in results["speed"]:
        lines[f"{s['backend']} speed"] = (f"{s['cycles_per_second']:,.0f} cycles/s"
                                          if s["available"] else "unavailable")
    golden = results["golden"]
    lines[f"golden model {golden['gemm']}"] = f"{golden['seconds']:.2f} s"
    return lines


def _pass_depth_note(widths):
    """Why utilization stops growing with M: the rows one M pass can hold."""
    config = DEFAULT_CONFIG
    depths = ", ".join(f"{config.act_depth // math.ceil(k / config.rows)} at K = {k}"
                       for k in widths)
    return ("Utilization stops growing with M once an M pass is full: a pass keeps every K "
            "tile of its activations in the buffer while all N tiles run, so it holds at "
            f"most act_depth / ceil(K / rows) rows, on the {_array(config)} array {depths}. "
            "Every further pass loads all weight tiles again, which is also why the square "
            "curves fall beyond 64-128.")


def write_report(results, output):
    """``report.md`` from ``results`` (as written to ``results.json``)."""
    meta = results["meta"]
    sweep, validation = results["utilization"], results["validation"]
    scalesim, speed, golden = results["scalesim"], results["speed"], results["golden"]
    breakdown = results["breakdown"]
    checked = [r for r in sweep if r["golden_cycles"] is not None]
    out = [f"# systolic-npu benchmarks{' (quick run)' if meta['quick'] else ''}", "",
           f"{meta['date']}, {meta['cpus']} CPUs, load average {meta['load_average']} at the "
           f"start, Python {meta['python']}, {meta['wall_seconds']:.0f} s in all. "
           f"Reproduce with `make bench` (or `python -m sim.bench --output DIR [--quick]`).", "",
           "Cycles are clock cycles of an unstalled run from the first command to idle, "
           "as the chip's own cycle counter reports them. Utilization is useful MACs "
           "(M·K·N) / (cycles × rows × cols). Every GEMM is the whole quantized layer as the "
           "driver issues it (`sim.programs.gemm_program`): activation, weight and "
           "parameter loads over the 8-byte data stream, MATMULs, requantized stores.", "",
           "## Headlines", "",
           _markdown_table(["", ""], _headline(results).items()), ""]

    out += ["## 1. Cycles and array utilization (cycle model)", "",
            "![utilization](utilization.png)", "",
            f"The cycle model counted {len(sweep)} GEMMs on three arrays (default buffers: "
            "512 activation vectors, 4 weight tiles, 512 accumulator rows). For the "
            f"{len(checked)} of them with at most {_MIX_CHECK_MACS:,} MACs the whole command "
            "stream also ran on the golden model; its cycle count agrees for "
            f"{sum(r['cycles'] == r['golden_cycles'] for r in checked)} of {len(checked)}.", "",
            _pass_depth_note(meta["plan"]["mlp_widths"]), ""]
    for array in dict.fromkeys(r["array"] for r in sweep):
        out += [f"**{array} array**", "", _markdown_table(
            ["GEMM (MxKxN)", "kind", "commands", "cycles", "utilization"],
            [(r["gemm"], r["family"], f"{r['commands']:,}", f"{r['cycles']:,}",
              _percent(r["utilization"])) for r in sweep if r["array"] == array]), ""]

    out += ["## 2. The cycle model against the simulated RTL", "",
            f"Random GEMMs on the {_array(DEFAULT_CONFIG)} array, each run on "
            f"{', '.join(meta['backends'])} with the chip's cycle counter next to the cycle "
            "model's count, and every output byte against the golden model.", ""]
    if validation:
        out += [_markdown_table(
            ["backend", "GEMM", "measured cycles", "cycle model", "equal", "bytes match"],
            [(r["backend"], r["gemm"], f"{r['measured_cycles']:,}", f"{r['model_cycles']:,}",
              _yes(r["measured_cycles"] == r["model_cycles"]), _yes(r["bytes_match"]))
             for r in validation]), ""]
    out += [f"- {s['backend']} did not run: {s['reason']}" for s in speed if not s["available"]]

    out += ["", "## 3. Side by side with SCALE-Sim", ""]
    if scalesim["ran"]:
        rows = scalesim["rows"]
        formula_holds = all(r["scalesim_compute_cycles"] == r["scalesim_formula"] for r in rows)
        out += ["![SCALE-Sim](scalesim.png)", "",
                "SCALE-Sim 3.0.0, weight-stationary dataflow, same array, same GEMMs (GEMM "
                "topology `M, N, K`), CALC bandwidth mode. The two count different things:", "",
                "- **SCALE-Sim** counts the array's compute only: for each rows x cols weight "
                "tile (a *fold*) rows cycles to shift the weights in, M cycles of activations "
                "and rows + cols - 2 cycles of skew and drain, "
                "`folds x (2 rows + cols + M - 2) - 1` in all (it reports the last cycle's "
                f"index; this formula gives its count for every row: {_yes(formula_holds)}). "
                "Operands are already in its SRAMs; no stalls occur in this mode.",
                "- **Ours, MATMUL only**: the same array work per weight tile, "
                "`2 rows + cols + M + 4` cycles: 2 to fetch the command, rows of preload, "
                "rows + cols - 1 of pipeline latency and 3 of buffer reader and accumulator. "
                "An M pass is limited to act_depth / ceil(K / rows) rows, so large K splits "
                "M into passes and the weight tiles are loaded once per pass.",
                "- **Ours, total**: the whole command stream, adding what SCALE-Sim leaves "
                "out: command fetch, activation, weight and parameter loads over the data "
                "stream, requantization and stores.", "",
                _markdown_table(
                    ["array", "GEMM", "SCALE-Sim compute", "SCALE-Sim util.",
                     "weight tiles (SCALE-Sim / ours)", "ours MATMUL", "ours total",
                     "ours util.", "total / SCALE-Sim"],
                    [(r["array"], r["gemm"], f"{r['scalesim_compute_cycles']:,}",
                      _percent(r["scalesim_utilization"]),
                      f"{r['scalesim_folds']:,} / {r['our_weight_tiles']:,}",
                      f"{r['our_matmul_cycles']:,}", f"{r['our_cycles']:,}",
                      _percent(r["our_utilization"]),
                      f"{r['our_cycles'] / r['scalesim_compute_cycles']:.2f}x")
                     for r in rows]), ""]
    else:
        out += [f"**SCALE-Sim was not run**: {scalesim['reason']}", ""]

    out += ["## 4. Simulation speed", "", "![speed](speed.png)", "",
            f"Each simulator runs the same {Gemm(**meta['plan']['speed'])} GEMM on the "
            f"{_array(DEFAULT_CONFIG)} array after the validation runs above (so it is warm); "
            "cycles per wall-clock second exclude building and starting, which are listed "
            "separately (for Verilator and Icarus: generating the Verilog, compiling it when "
            "no cached build matches, starting the simulator; for Amaranth: elaboration). "
            "A Python cocotb testbench drives the RTL simulators every cycle, which bounds "
            "their speed.", ""]
    speed_rows = []
    for s in speed:
        if not s["available"]:
            speed_rows.append((s["backend"], "unavailable", "", "", "", ""))
            continue
        start = {True: "start (build cached)", False: "build and start",
                 None: "elaborate and start"}[s["build_cached"]]
        speed_rows.append((s["backend"], f"{s['start_seconds']:.1f} s {start}",
                           f"{s['measured_cycles']:,}", f"{s['seconds']:.2f} s",
                           f"{s['cycles_per_second']:,.0f}",
                           _yes(s["measured_cycles"] == s["model_cycles"] and s["bytes_match"])))
    speed_rows.append(("golden model (NumPy)", "", f"{golden['cycles']:,}",
                       f"{golden['seconds']:.2f} s", f"{golden['cycles_per_second']:,.0f}", ""))
    out += [_markdown_table(["simulator", "build / start", "cycles", "wall time", "cycles/s",
                             "cycles and bytes correct"], speed_rows), "",
            f"The golden model ran a {golden['gemm']} GEMM ({golden['commands']:,} commands) "
            f"in {golden['seconds']:.2f} s.", ""]

    first = breakdown[0]
    out += ["## 5. Where the cycles go", "", "![breakdown](breakdown.png)", "",
            f"By command type on the {first['array']} array. *Matmul streaming* is the only "
            "time the array does useful work (one activation vector per cycle); *matmul "
            "overhead* is the weight preload and the pipeline latency of every MATMUL; "
            "*fetch* is two cycles per command.", ""]
    out += [_markdown_table(
        ["GEMM", "cycles", *CATEGORIES, "utilization", "util. if loads and stores hidden",
         "... and weight preload hidden"],
        [(r["gemm"], f"{r['cycles']:,}",
          *(f"{r['parts'][c]:,} ({100 * r['parts'][c] / r['cycles']:.0f} %)"
            for c in CATEGORIES), _percent(r["utilization"]),
          _percent(r["matmul_only_utilization"]), _percent(r["no_preload_utilization"]))
         for r in breakdown]), ""]
    shares = {c: first["parts"][c] / first["cycles"] for c in CATEGORIES}
    loads = shares["load activations"] + shares["load weights"] + shares["load parameters"]
    out += [f"For {first['gemm']}, loads over the data stream take {_percent(loads)} of the "
            f"cycles and the MATMUL overhead {_percent(shares['matmul overhead'])}, while the "
            f"array streams for {_percent(shares['matmul streaming'])}. Every command runs "
            "after the previous one finishes, so none of this overlaps. The next throughput "
            "steps follow: loads that overlap compute hide the data stream, and "
            "double-buffered weights (the reserved opcode 9) hide each preload behind the "
            "previous tile's streaming; the last two columns bound what these two steps gain "
            "one after the other. What then remains is the pipeline latency of every MATMUL, "
            "which back-to-back MATMULs (the reserved hardware loop, opcode 10) would hide.", ""]
    (Path(output) / "report.md").write_text("\n".join(out))


# -- driver -----------------------------------------------------------------------------------

def _scalesim_problem():
    try:
        import scalesim  # noqa: F401
    except ImportError:
        return "the `scalesim` package is not installed (`pip install -e '.[bench]'`)"
    return None


def run_bench(output, *, quick=False, scalesim=True, backends=RTL_BACKENDS, console=None,
              seed=0):
    """Run every section, write the report, results and plots to ``output``.

    Parameters
    ----------
    output : path-like
        Folder for ``report.md``, ``results.json`` and the plots (created).
    quick : bool
        Run :data:`QUICK_PLAN` instead of :data:`FULL_PLAN`.
    scalesim : bool
        Compare against SCALE-Sim (the report says so when it did not run).
    backends : sequence of str
        Simulators of sections 2 and 4, from :data:`RTL_BACKENDS`.
    console : rich.console.Console, optional
    seed : int
        Seed of the random GEMM operands.

    Returns
    -------
    dict
        What ``results.json`` holds.
    """
    console = console or Console()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    plan = QUICK_PLAN if quick else FULL_PLAN
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    results = {"meta": {"quick": quick, "seed": seed, "backends": list(backends),
                        "cpus": os.cpu_count(),
                        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                        "python": platform.python_version(),
                        "load_average": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
                        "plan": asdict(plan)}}
    scalesim_problem = None if scalesim else "switched off with --no-scalesim"
    scalesim_problem = scalesim_problem or _scalesim_problem()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("benchmarks", total=5)

        def step(text):
            progress.update(task, description=text)

        step("cycle model: utilization sweep")
        results["utilization"] = model_sweep(plan, rng)
        progress.advance(task)
        results["validation"], results["speed"] = measure_backends(plan, rng, backends,
                                                                   on_step=step)
        progress.advance(task)
        step("golden model: wall time")
        results["golden"] = time_golden(plan, rng)
        progress.advance(task)
        # After the timed simulators, so that SCALE-Sim's processes do not slow them down.
        step("SCALE-Sim")
        if scalesim_problem is None:
            with tempfile.TemporaryDirectory(prefix="npu-scalesim-") as workdir:
                results["scalesim"] = {"ran": True, "reason": None,
                                       "rows": scalesim_comparison(plan, workdir)}
        else:
            results["scalesim"] = {"ran": False, "reason": scalesim_problem, "rows": []}
        progress.advance(task)
        step("breakdown, plots, report")
        results["breakdown"] = breakdown_rows(plan)
        plot_utilization(results["utilization"], output / "utilization.png")
        if results["scalesim"]["ran"]:
            plot_scalesim(results["scalesim"]["rows"], output / "scalesim.png")
        plot_speed(results["speed"], results["golden"], output / "speed.png")
        plot_breakdown(results["breakdown"], output / "breakdown.png")
        results["meta"]["wall_seconds"] = time.perf_counter() - started
        (output / "results.json").write_text(json.dumps(results, indent=1))
        write_report(results, output)
        progress.advance(task)
    return results


def _consistent(results):
    """Every count that must agree does: model vs golden, model vs RTL, bytes."""
    return (all(r["cycles"] == r["golden_cycles"] for r in results["utilization"]
                if r["golden_cycles"] is not None)
            and all(r["measured_cycles"] == r["model_cycles"] and r["bytes_match"]
                    for r in results["validation"]))


def main(argv=None):
    """Command line: run the benchmarks, print the headlines; exit 1 if a count disagrees."""
    parser = argparse.ArgumentParser(prog="python -m sim.bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--output", "-o", type=Path, default=Path("build/bench"),
                        help="folder for report.md, results.json and plots (default build/bench)")
    parser.add_argument("--quick", action="store_true", help="a reduced run (for tests)")
    parser.add_argument("--no-scalesim", dest="scalesim", action="store_false",
                        help="skip the SCALE-Sim comparison")
    parser.add_argument("--backends", default=",".join(RTL_BACKENDS),
                        help="comma-separated simulators to validate and time "
                             f"(default {','.join(RTL_BACKENDS)})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    backends = [name for name in args.backends.split(",") if name]
    unknown = set(backends) - set(RTL_BACKENDS)
    if unknown:
        parser.error(f"unknown backends {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(RTL_BACKENDS)}")
    console = Console()
    results = run_bench(args.output, quick=args.quick, scalesim=args.scalesim,
                        backends=backends, console=console, seed=args.seed)
    table = Table(title=f"systolic-npu benchmarks -> {args.output / 'report.md'}",
                  show_header=False)
    for name, value in _headline(results).items():
        table.add_row(name, value)
    table.add_row("cycle model = golden model = RTL", _yes(_consistent(results)))
    table.add_row("benchmark wall time", f"{results['meta']['wall_seconds']:.0f} s")
    console.print(table)
    return 0 if _consistent(results) else 1


if __name__ == "__main__":
    sys.exit(main())

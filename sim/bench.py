"""``python -m sim.bench`` — how fast the Npu is, and how fast it simulates.

Writes ``report.md``, ``results.json`` and PNG plots into ``--output``:

1. cycles and array utilization (useful MACs / (cycles x rows x cols)) of square and
   MLP-shaped GEMMs on 4x4, 8x8 and 16x16 arrays, from the cycle model replaying the
   command stream of :func:`sim.programs.gemm_program`;
2. the cycle model against the cycles the simulated RTL measures;
3. SCALE-Sim's weight-stationary compute cycles for the same arrays and GEMMs;
4. simulation speed of Verilator, Icarus and Amaranth, and the golden model's wall time;
5. what the array does in every cycle of the overlapped schedule (streaming, or waiting
   and for what), weight tiles preloaded and reused, and utilization before and after
   the overlap, for a few GEMMs and the digits MLP of ``examples/digits``.

``--quick`` runs a reduced set in well under a minute (the tests use it).
"""

import argparse
import contextlib
import io
import itertools
import json
import math
import os
import platform
import sys
import tempfile
import textwrap
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

from hw.config import NpuConfig
from hw.isa import ErrorCode, Opcode
from sim.cycle_model import CycleModel, program_cycles
from sim.golden import GoldenNpu
from sim.programs import gemm_program, gemm_schedule, random_params

__all__ = ["Gemm", "BenchPlan", "FULL_PLAN", "QUICK_PLAN", "ACTIVITIES", "ArrayActivity",
           "gemm_instructions", "replay_gemm", "digits_mlp", "run_scalesim", "run_bench",
           "main"]

#: The array sizes compared; the buffers and streams are the defaults of NpuConfig.
CONFIGS = (NpuConfig(rows=4, cols=4), NpuConfig(), NpuConfig(rows=16, cols=16))
#: The configuration of the validation, speed and activity sections.
DEFAULT_CONFIG = NpuConfig()
#: Simulated-RTL backends, in the order they are measured: the Verilog on Verilator and
#: Icarus, the Amaranth description in Amaranth's simulator.
RTL_BACKENDS = ("verilator", "icarus", "amaranth")
#: What the array does in a cycle; every cycle of a run lands in exactly one.  The gaps
#: between two MATMULs are named after the commands issued between them.
ACTIVITIES = {
    "streaming": "an activation vector enters the array",
    "fill": "before the first vector (first loads, weight preload)",
    "weights": "waiting for the next weight tile",
    "store": "next N tile (drain, store, parameters)",
    "activations": "next M pass (activations reloaded)",
    "drain": "after the last vector (pipeline, accumulator, store)",
}
#: GEMMs up to this many MACs also run on the golden model, to check that the replayed
#: command stream counts exactly the cycles of the real program with its data.
_PROGRAM_CHECK_MACS = 1 << 20
#: The digits MLP of ``examples/digits``: layer widths and the images it classifies.
DIGITS_WIDTHS = (64, 32, 10)
DIGITS_IMAGES = 1797
DIGITS = "digits MLP 64-32-10, 1797 images"
#: Cycles of the same workloads on the 8x8 array of the previous design, which ran one
#: command at a time (commit 535ac24: its cycle model, this benchmark's programs and the
#: driver's lowering); the "before" of section 5.
PREVIOUS_DESIGN_CYCLES = {"64x64x64": 7_952, "8x256x256": 50_752, "256x256x256": 951_296,
                          "1x1024x1024": 676_352, "1x256x256": 43_136, DIGITS: 151_520}


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
)


def _array(config):
    return f"{config.rows}x{config.cols}"


# -- the cycle model, cycle by cycle ----------------------------------------------------------

#: CycleModel attributes that hold cycle numbers.  A negative one means "has not
#: happened" (every event of a run is at cycle 0 or later) and stays as it is when the
#: schedule is shifted in time.  Every other attribute is compared as it is, so a new
#: one can only make :meth:`ArrayActivity.repeat` skip less, never count wrong.
_MODEL_CLOCKS = ("last_dispatch", "load_through", "preload_through", "preloader_free",
                 "stream_last", "matmul_through", "compute_through", "store_through",
                 "output_through", "bank_last_accept", "error_visible", "act_read_last")
#: CycleModel attributes that only count up; repeated commands add the same amount.
_MODEL_COUNTERS = ("commands",)


def _shifted(value, delta):
    """A clock value (or list of them) ``delta`` cycles later; "never" stays never."""
    if isinstance(value, list):
        return [_shifted(v, delta) for v in value]
    return value + delta if value is not None and value >= 0 else value


def _relative(value, origin):
    """A clock value (or list of them) relative to ``origin``, hashable."""
    if isinstance(value, list):
        return tuple(_relative(v, origin) for v in value)
    return value - origin if value is not None and value >= 0 else "never"


class ArrayActivity:
    """Drives a :class:`~sim.cycle_model.CycleModel` and accounts for every array cycle.

    Each cycle of a run lands in one of :data:`ACTIVITIES`: an activation vector enters
    the array (streaming), or the array waits before its first vector, between two
    MATMULs, or after its last vector.  A wait between two MATMULs is named after what
    was issued between them: activation loads (a new M pass), a store or parameter load
    (the next N tile), otherwise only weights.

    Parameters
    ----------
    config : NpuConfig
    """

    def __init__(self, config):
        self.config = config
        self.model = CycleModel(config)
        self.parts = dict.fromkeys(ACTIVITIES, 0)
        self.finished_cycles = 0        # of the runs before the current one
        #: Repetitions :meth:`repeat` accounted for without replaying them.
        self.repetitions_skipped = 0
        self._start_counting()

    def _start_counting(self):
        self._first_vector = None       # cycle the run's first vector entered the array
        self._last_vector = None
        self._since_matmul = frozenset()   # opcodes issued since the last MATMUL

    def start_run(self):
        """Close the current run and start a new one on the idle chip, as a new
        ``execute`` call does (the weight banks keep their tiles)."""
        cycles, fill, drain = self._run_edges()
        self.finished_cycles += cycles
        self.parts["fill"] += fill
        self.parts["drain"] += drain
        self.model.start_run()
        self._start_counting()

    def _run_edges(self):
        """Cycles of the current run, and its cycles before the first / after the last vector."""
        cycles = self.model.cycles
        if self._first_vector is None:
            return cycles, cycles, 0
        return cycles, self._first_vector, cycles - 1 - self._last_vector

    def step(self, instruction):
        """Dispatch one well-formed command (a bench program raises no error)."""
        self.model.step(instruction)
        if instruction.OPCODE != Opcode.MATMUL:
            self._since_matmul |= {instruction.OPCODE}
            return
        # The streamer sends vectors in the cycles after the handoff, up to stream_last.
        last = self.model.stream_last
        first = last - instruction.count + 1
        if self._last_vector is None:
            self._first_vector = first
        else:
            self.parts[self._wait_cause()] += first - self._last_vector - 1
        self.parts["streaming"] += instruction.count
        self._last_vector = last
        self._since_matmul = frozenset()

    def _wait_cause(self):
        if Opcode.LOAD_ACT in self._since_matmul:
            return "activations"
        if self._since_matmul & {Opcode.STORE, Opcode.LOAD_PARAMS}:
            return "store"
        return "weights"

    def repeat(self, instructions, times):
        """:meth:`step` through ``instructions`` ``times`` times in a row, exactly, but
        replaying only until the schedule repeats itself.

        The model is deterministic and counts time only relative to earlier events, so
        once the state at the start of a repetition equals the state ``period``
        repetitions earlier shifted by ``delta`` cycles, every further ``period``
        repetitions shift it by ``delta`` again and add the same counts.  Those are
        added without replaying them; the rest are replayed.
        """
        seen = {}
        done = 0
        while done < times:
            key, origin = self._schedule_key()
            if key in seen:
                earlier, earlier_origin, earlier_counts = seen[key]
                period = done - earlier
                jumps = (times - done) // period
                counts = self._counts()
                self._advance(jumps * (origin - earlier_origin),
                              {name: jumps * (value - earlier_counts[name])
                               for name, value in counts.items()})
                self.repetitions_skipped += jumps * period
                done += jumps * period
                seen.clear()    # fewer than a period left: replay them
            else:
                seen[key] = (done, origin, self._counts())
            if done < times:
                for instruction in instructions:
                    self.step(instruction)
                done += 1

    def _schedule_key(self):
        """What decides the rest of the schedule, relative to the last dispatch."""
        model = self.model
        origin = model.last_dispatch
        clocks = tuple(_relative(getattr(model, name), origin) for name in _MODEL_CLOCKS)
        others = tuple(repr(value) for name, value in sorted(vars(model).items())
                       if name not in (*_MODEL_CLOCKS, *_MODEL_COUNTERS, "breakdown"))
        mine = (self._since_matmul, self._first_vector is None,
                _relative(self._last_vector, origin))
        return (clocks, others, mine), origin

    def _counts(self):
        counts = {f"model.{name}": getattr(self.model, name) for name in _MODEL_COUNTERS}
        counts.update({f"breakdown.{name}": value
                       for name, value in asdict(self.model.breakdown).items()})
        counts.update({f"parts.{name}": value for name, value in self.parts.items()})
        return counts

    def _advance(self, delta, added):
        """The state ``delta`` cycles later, with ``added`` counts more."""
        for name in _MODEL_CLOCKS:
            setattr(self.model, name, _shifted(getattr(self.model, name), delta))
        self._last_vector = _shifted(self._last_vector, delta)
        for name, value in added.items():
            group, field = name.split(".")
            if group == "model":
                setattr(self.model, field, getattr(self.model, field) + value)
            elif group == "breakdown":
                setattr(self.model.breakdown, field,
                        getattr(self.model.breakdown, field) + value)
            else:
                self.parts[field] += value

    def summary(self):
        """Totals over every run so far, as ``results.json`` stores them.

        Returns
        -------
        dict
            ``cycles``, ``commands``, ``parts`` (cycles by :data:`ACTIVITIES`, adding
            up to ``cycles``), ``matmuls``, ``preloads`` and ``reused_tiles``.
        """
        cycles, fill, drain = self._run_edges()
        parts = dict(self.parts)
        parts["fill"] += fill
        parts["drain"] += drain
        breakdown = self.model.breakdown
        return {"cycles": self.finished_cycles + cycles, "commands": self.model.commands,
                "parts": parts, "matmuls": breakdown.matmuls, "preloads": breakdown.preloads,
                "reused_tiles": breakdown.reused_tiles}


# -- whole GEMMs --------------------------------------------------------------------------

def _tile_sizes(total, tile):
    """``(size, how many)`` of the pieces that cut ``total`` into tiles of ``tile``."""
    sizes = [(tile, total // tile)] if total >= tile else []
    if total % tile:
        sizes.append((total % tile, 1))
    return sizes


def gemm_pass_depth(config, k):
    """Rows of one M pass of :func:`~sim.programs.gemm_program`: every K tile of the
    pass's activations sits in the buffer while all N tiles run."""
    k_tiles = math.ceil(k / config.rows)
    depth = min(config.act_depth // k_tiles, config.acc_depth)
    if depth < 1:
        raise ValueError(f"K={k} does not fit the activation buffer of a {config}")
    return depth


def gemm_pass_instructions(config, gemm, rows):
    """The commands :func:`~sim.programs.gemm_program` issues for one M pass of ``rows``
    rows of ``gemm`` (uint8 activations, int8 weights, requantized), without data.

    Addresses are relative to the pass, so every pass of the same depth issues the
    same commands.
    """
    return [instruction for instruction, _ in
            gemm_schedule(config, rows, gemm.k, gemm.n, m_tile=rows)]


def gemm_instructions(config, gemm):
    """Every command of :func:`~sim.programs.gemm_program` for ``gemm``, in order."""
    for rows, passes in _tile_sizes(gemm.m, gemm_pass_depth(config, gemm.k)):
        unit = gemm_pass_instructions(config, gemm, rows)
        for _ in range(passes):
            yield from unit


def replay_gemm(config, gemm):
    """:meth:`ArrayActivity.summary` of :func:`gemm_instructions` on a fresh chip.

    Identical M passes are accounted for by :meth:`ArrayActivity.repeat`, which makes a
    512x1024x1024 GEMM on a 4x4 array (34 million commands) take milliseconds.
    """
    activity = ArrayActivity(config)
    for rows, passes in _tile_sizes(gemm.m, gemm_pass_depth(config, gemm.k)):
        activity.repeat(gemm_pass_instructions(config, gemm, rows), passes)
    return activity.summary()


def _utilization(config, macs, cycles):
    return macs / (cycles * config.rows * config.cols)


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
            replay = replay_gemm(config, gemm)
            row = {"array": _array(config), "family": family, "gemm": str(gemm),
                   "m": gemm.m, "k": gemm.k, "n": gemm.n, "macs": gemm.macs,
                   "commands": replay["commands"], "cycles": replay["cycles"],
                   "utilization": _utilization(config, gemm.macs, replay["cycles"]),
                   "golden_cycles": None}
            if gemm.macs <= _PROGRAM_CHECK_MACS:
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
        ours = replay_gemm(config, gemm)
        # SCALE-Sim maps each rows x cols weight tile once ("fold") and streams all M rows.
        folds = math.ceil(gemm.k / array_rows) * math.ceil(gemm.n / array_cols)
        rows.append({
            "array": _array(config), "gemm": str(gemm), "m": gemm.m, "k": gemm.k, "n": gemm.n,
            "scalesim_compute_cycles": compute, "scalesim_cycles_with_prefetch": with_prefetch,
            "scalesim_stall_cycles": stalls,
            "scalesim_utilization": _utilization(config, gemm.macs, compute),
            "scalesim_folds": folds,
            "scalesim_formula": folds * (2 * array_rows + array_cols + gemm.m - 2) - 1,
            "our_weight_tiles": ours["matmuls"],
            "our_streaming_cycles": ours["parts"]["streaming"],
            "our_cycles": ours["cycles"],
            "our_utilization": _utilization(config, gemm.macs, ours["cycles"])})
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


# -- where the cycles go ----------------------------------------------------------------------

def digits_mlp(config=DEFAULT_CONFIG, *, seed=0):
    """The digits MLP of ``examples/digits`` through the driver on the golden backend.

    The chip's schedule depends on the layer shapes and the batch alone, so random
    weights and images stand in for the trained model and the data set: this runs in
    a second, without training, and counts what ``python -m examples.digits.run``
    prints.

    Returns
    -------
    dict
        :meth:`ArrayActivity.summary` of the driver's command streams (one run per
        layer), ``macs``, and ``driver_cycles``: what the driver's statistics report.
    """
    import driver
    rng = np.random.default_rng(seed)
    scale, layers = 1 / 64, []
    for index, (k, n) in enumerate(itertools.pairwise(DIGITS_WIDTHS), start=1):
        last = index == len(DIGITS_WIDTHS) - 1
        layers.append(driver.QuantLinear(
            weight=rng.integers(-127, 128, (n, k)).astype(np.int8), weight_scale=0.01,
            input_scale=scale, input_zero_point=0, output_scale=scale, output_zero_point=0,
            activation="none" if last else "relu", name=f"fc{index}"))
    images = rng.integers(0, 256, (DIGITS_IMAGES, DIGITS_WIDTHS[0])).astype(np.uint8)
    with driver.open("golden", config=config) as npu:
        npu.run(layers, images)
        stats = npu.stats
    activity = ArrayActivity(config)
    for chip_pass in driver.lower(layers, batch=DIGITS_IMAGES, config=config).chip_passes:
        activity.start_run()    # the driver runs each layer as one execute call
        for instruction in chip_pass.instructions:
            activity.step(instruction)
    return {**activity.summary(), "macs": stats.macs, "driver_cycles": stats.cycles}


def activity_rows(plan):
    """Section 5: every cycle of the activity GEMMs and the digits MLP on the default array,
    with the utilization of the previous, one-command-at-a-time design."""
    config = DEFAULT_CONFIG
    workloads = [(str(gemm), gemm.macs, replay_gemm(config, gemm)) for gemm in plan.activity]
    digits = digits_mlp(config)
    workloads.append((DIGITS, digits["macs"], digits))
    rows = []
    for name, macs, summary in workloads:
        previous = PREVIOUS_DESIGN_CYCLES.get(name)
        rows.append({"workload": name, "array": _array(config), "macs": macs, **summary,
                     "utilization": _utilization(config, macs, summary["cycles"]),
                     "previous_cycles": previous,
                     "previous_utilization": previous and _utilization(config, macs, previous)})
    return rows


# -- plots ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _figure(path, figsize, ncols=1, **options):
    """Axes of a new figure that is laid out, written to ``path`` (PNG) and closed on exit."""
    import matplotlib
    matplotlib.use("Agg")  # files only: benchmarks run without a display
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=figsize, **options)
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
    """SCALE-Sim's compute cycles next to our streaming and whole-layer cycles."""
    with _figure(path, (max(7, 0.9 * len(rows)), 4.5)) as ax:
        x = np.arange(len(rows))
        series = [("SCALE-Sim compute (ws)", "scalesim_compute_cycles"),
                  ("ours: array streaming", "our_streaming_cycles"),
                  ("ours: whole layer", "our_cycles")]
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


def plot_activity(rows, path):
    """Each workload's cycles stacked by :data:`ACTIVITIES`, and utilization before and
    after the overlap."""
    def label(row):
        return textwrap.fill(row["workload"].split(",")[0], 12)

    with _figure(path, (12, 6), ncols=2, width_ratios=(3, 2)) as (shares, before_after):
        x = np.arange(len(rows))
        bottom = np.zeros(len(rows))
        for i, (activity, text) in enumerate(ACTIVITIES.items()):
            share = np.array([100 * r["parts"][activity] / r["cycles"] for r in rows])
            shares.bar(x, share, bottom=bottom, label=f"{activity}: {text}", color=f"C{i}")
            bottom += share
        shares.set_xticks(x, [f"{label(r)}\n{r['cycles']:,} cycles" for r in rows],
                          fontsize="x-small")
        shares.set(ylabel="share of cycles (%)", ylim=(0, 100),
                   title=f"what the array does ({rows[0]['array']} array)")
        shares.legend(bbox_to_anchor=(0.5, -0.2), loc="upper center", ncol=2,
                      fontsize="x-small")
        compared = [r for r in rows if r["previous_cycles"]]
        x = np.arange(len(compared))
        series = [(-0.2, "one command at a time", "previous_utilization"),
                  (0.2, "overlapped", "utilization")]
        for offset, text, key in series:
            bars = before_after.bar(x + offset, [100 * r[key] for r in compared], width=0.4,
                                    label=text)
            before_after.bar_label(bars, fmt="%.0f", fontsize="x-small")
        before_after.set_xticks(x, [label(r) for r in compared], fontsize="x-small")
        before_after.set(ylabel="array utilization (%)", ylim=(0, 100),
                         title="before and after the overlap")
        before_after.legend(fontsize="small")


# -- the report -------------------------------------------------------------------------------

def _markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _percent(value):
    return f"{100 * value:.1f} %"


def _yes(flag):
    return "yes" if flag else "**NO**"


def _cycles_and_utilization(cycles, utilization):
    return f"{cycles:,} cycles, {_percent(utilization)} utilization"


def _headline(results):
    """The numbers README and the console summary quote."""
    def with_previous(name, cycles, utilization, macs):
        text = _cycles_and_utilization(cycles, utilization)
        previous = PREVIOUS_DESIGN_CYCLES.get(name)
        if previous:
            text += (f" (one command at a time: {previous:,}, "
                     f"{_percent(_utilization(DEFAULT_CONFIG, macs, previous))})")
        return text

    default = _array(DEFAULT_CONFIG)
    headline_gemm, golden_gemm = results["activity"][0]["workload"], results["golden"]["gemm"]
    on_default = [r for r in results["utilization"] if r["array"] == default]
    lines = {}
    for row in on_default:
        if row["gemm"] in (headline_gemm, golden_gemm):
            lines[f"{row['gemm']} on {default}"] = with_previous(
                row["gemm"], row["cycles"], row["utilization"], row["macs"])
    best = max(on_default, key=lambda r: r["utilization"])
    lines[f"best on {default}"] = f"{best['gemm']}: {_percent(best['utilization'])}"
    for row in results["activity"]:
        if row["workload"] == DIGITS:
            lines[f"{DIGITS} on {default}"] = with_previous(
                DIGITS, row["cycles"], row["utilization"], row["macs"])
    for row in results["scalesim"]["rows"]:
        if (row["array"], row["gemm"]) == (default, headline_gemm):
            lines[f"SCALE-Sim {row['gemm']} on {row['array']}"] = (
                f"{row['scalesim_compute_cycles']:,} compute cycles vs our "
                f"{row['our_cycles']:,} for the whole layer "
                f"({row['our_streaming_cycles']:,} streaming)")
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
            "Every further pass loads all weight tiles again, and a shallow pass streams "
            "each tile for fewer cycles than the next one takes to arrive over the data "
            "stream, which is why the square curves fall beyond 128.")


def _share(part, total):
    return f"{part:,} ({100 * part / total:.0f} %)"


def _scalesim_section(rows):
    formula_holds = all(r["scalesim_compute_cycles"] == r["scalesim_formula"] for r in rows)
    ratios = [r["our_cycles"] / r["scalesim_compute_cycles"] for r in rows]
    return [
        "![SCALE-Sim](scalesim.png)", "",
        "SCALE-Sim 3.0.0, weight-stationary dataflow, same array, same GEMMs (GEMM "
        "topology `M, N, K`), CALC bandwidth mode. The three counts measure different "
        "things:", "",
        "- **SCALE-Sim compute** is the array alone, operands already in its SRAMs: for "
        "each rows x cols weight tile (a *fold*) rows cycles to fill the weights, M cycles "
        "of activations and rows + cols - 2 of skew and drain, one fold after the other: "
        "`folds x (2 rows + cols + M - 2) - 1` (it reports the last cycle's index; this "
        f"formula gives its count for every row: {_yes(formula_holds)}). No stalls occur "
        "in this mode.",
        "- **Ours, streaming** counts the cycles in which an activation vector enters the "
        "array: M x folds, since every row of A meets every weight tile once. It is the "
        "floor of any weight-stationary schedule on the array, and SCALE-Sim's count "
        "without its per-fold fill, skew and drain.",
        "- **Ours, whole layer** is every cycle from the first command to idle, with what "
        "SCALE-Sim leaves out: command dispatch, activation, weight and parameter loads "
        "over the 8-byte data stream, requantization and stores. In exchange the next "
        "tile's weights load and preload into the idle bank while the current tile "
        "streams, and one tile's skew and drain overlap the next tile's streaming; "
        "SCALE-Sim's weight-stationary count overlaps neither. Large K splits M into "
        "passes of act_depth / ceil(K / rows) rows and each pass loads its weight tiles "
        "again, hence more weight tiles than folds.", "",
        f"Our whole layer takes {min(ratios):.2f}-{max(ratios):.2f}x SCALE-Sim's compute "
        "cycles here. Where the ratio is near "
        + ("or below " if min(ratios) < 1 else "")
        + "1, hiding each fold's weight fill, skew and drain behind streaming saves "
        "about as much as moving the operands over the data stream costs"
        + (", or more" if min(ratios) < 1 else "")
        + ". It is highest for small GEMMs on large arrays, where the first loads, the "
        "first fill and the last drain are a large part of the whole; a large K adds "
        "weight tiles, since every M pass loads them again.", "",
        _markdown_table(
            ["array", "GEMM", "SCALE-Sim compute", "SCALE-Sim util.",
             "weight tiles (SCALE-Sim / ours)", "ours streaming", "ours whole layer",
             "ours util.", "whole layer / SCALE-Sim"],
            [(r["array"], r["gemm"], f"{r['scalesim_compute_cycles']:,}",
              _percent(r["scalesim_utilization"]),
              f"{r['scalesim_folds']:,} / {r['our_weight_tiles']:,}",
              f"{r['our_streaming_cycles']:,}", f"{r['our_cycles']:,}",
              _percent(r["our_utilization"]), f"{ratio:.2f}x")
             for r, ratio in zip(rows, ratios, strict=True)]), ""]


def _activity_section(rows):
    first = rows[0]
    waits = {name: first["parts"][name] for name in ACTIVITIES if name != "streaming"}
    largest_wait = max(waits, key=waits.get)
    compared = [r for r in rows if r["previous_cycles"]]
    return [
        "## 5. What the array does in every cycle", "", "![activity](activity.png)", "",
        f"Every cycle of a run on the {first['array']} array, from the first command to "
        "idle, by what the array does in the cycle model's schedule. *Streaming* is a "
        "cycle in which an activation vector enters the array, the only useful work; "
        "the rest is waiting, before the first vector, between two MATMULs or after the "
        "last. A wait between two MATMULs is named after what was issued between them: "
        "weight loads only (the next tile's load over the data stream and its preload "
        "into the idle bank took longer than the previous tile streamed), a store and "
        "a parameter load (the next N tile: the STORE waits for every result of the "
        "array in the accumulator, the next MATMUL for the STORE's accumulator reads), "
        "or activation loads (the next M pass: a LOAD_ACT waits until the array is done "
        "with the buffer). Utilization falls below the streaming share only where K or "
        "N do not fill the array. The digits MLP is the driver's command streams, one "
        "run per layer (cycle model: "
        + ", ".join(f"{r['cycles']:,}" for r in rows if r["workload"] == DIGITS)
        + "; the driver's golden backend: "
        + ", ".join(f"{r['driver_cycles']:,}" for r in rows if r["workload"] == DIGITS)
        + ").", "",
        _markdown_table(
            ["workload", "cycles", *ACTIVITIES, "weight tiles preloaded / reused",
             "utilization", "one command at a time", "utilization then"],
            [(r["workload"], f"{r['cycles']:,}",
              *(_share(r["parts"][name], r["cycles"]) for name in ACTIVITIES),
              f"{r['preloads']:,} / {r['reused_tiles']:,}", _percent(r["utilization"]),
              f"{r['previous_cycles']:,}" if r["previous_cycles"] else "",
              _percent(r["previous_utilization"]) if r["previous_cycles"] else "")
             for r in rows]), "",
        f"Columns: {'; '.join(f'*{name}*: {text}' for name, text in ACTIVITIES.items())}. "
        "*One command at a time* is the previous design (commit 535ac24), which fetched "
        "each command only when the datapath had drained from the one before.", "",
        f"For {first['workload']} the array streams in "
        f"{_percent(first['parts']['streaming'] / first['cycles'])} of the cycles and "
        f"waits {first['parts']['weights']:,} cycles for weight tiles"
        + (" (every load and preload hides behind the previous tile's streaming)"
           if first["parts"]["weights"] == 0 else "")
        + f"; its largest wait is *{largest_wait}* "
        f"({_percent(waits[largest_wait] / first['cycles'])}). Utilization went from "
        + ", ".join(f"{_percent(r['previous_utilization'])} to {_percent(r['utilization'])}"
                    f" ({r['workload']})" for r in compared)
        + ". No tile is reused in these programs: with more weight tiles than the "
        "4 slots, `gemm_program` and the driver load a tile before every MATMUL; the "
        "driver keeps a layer's tiles resident across M blocks when all of them fit.", ""]


def write_report(results, output):
    """``report.md`` from ``results`` (as written to ``results.json``)."""
    meta = results["meta"]
    sweep, validation = results["utilization"], results["validation"]
    scalesim, speed, golden = results["scalesim"], results["speed"], results["golden"]
    checked = [r for r in sweep if r["golden_cycles"] is not None]
    out = [f"# systolic-npu benchmarks{' (quick run)' if meta['quick'] else ''}", "",
           f"{meta['date']}, {meta['cpus']} CPUs, load average {meta['load_average']} at the "
           f"start, Python {meta['python']}, {meta['wall_seconds']:.0f} s in all. "
           f"Reproduce with `make bench` (or `python -m sim.bench --output DIR [--quick]`).", "",
           "Cycles are clock cycles of an unstalled run from the first command to idle, "
           "as the chip's own cycle counter reports them. Utilization is useful MACs "
           "(M·K·N) / (cycles × rows × cols). Every GEMM is the whole quantized layer as "
           "`sim.programs.gemm_program` issues it: activation, weight and parameter loads "
           "over the 8-byte data stream, MATMULs, requantized stores. The chip overlaps "
           "them: each command is dispatched as soon as its unit is free and no earlier "
           "command still uses what it touches, and the next weight tile preloads into "
           "the idle weight bank while the array streams.", "",
           "## Headlines", "",
           _markdown_table(["", ""], _headline(results).items()), ""]

    out += ["## 1. Cycles and array utilization (cycle model)", "",
            "![utilization](utilization.png)", "",
            f"The cycle model replayed {len(sweep)} GEMMs on three arrays (default buffers: "
            "512 activation vectors, 4 weight tiles, 512 accumulator rows), command by "
            "command, until the schedule of an M pass repeated itself shifted in time; "
            "the remaining identical passes add the same cycles each. For the "
            f"{len(checked)} GEMMs with at most {_PROGRAM_CHECK_MACS:,} MACs the real "
            "program, data included, also ran on the golden model; its cycle count agrees "
            f"for {sum(r['cycles'] == r['golden_cycles'] for r in checked)} of "
            f"{len(checked)}.", "",
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
        out += _scalesim_section(scalesim["rows"])
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

    out += _activity_section(results["activity"])
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
        step("array activity, digits MLP, plots, report")
        results["activity"] = activity_rows(plan)
        plot_utilization(results["utilization"], output / "utilization.png")
        if results["scalesim"]["ran"]:
            plot_scalesim(results["scalesim"]["rows"], output / "scalesim.png")
        plot_speed(results["speed"], results["golden"], output / "speed.png")
        plot_activity(results["activity"], output / "activity.png")
        results["meta"]["wall_seconds"] = time.perf_counter() - started
        (output / "results.json").write_text(json.dumps(results, indent=1))
        write_report(results, output)
        progress.advance(task)
    return results


def _consistent(results):
    """Every count that must agree does: replay vs golden, model vs RTL, bytes, and the
    digits MLP's replay vs the driver's count."""
    return (all(r["cycles"] == r["golden_cycles"] for r in results["utilization"]
                if r["golden_cycles"] is not None)
            and all(r["measured_cycles"] == r["model_cycles"] and r["bytes_match"]
                    for r in results["validation"])
            and all(r["cycles"] == r["driver_cycles"] for r in results["activity"]
                    if "driver_cycles" in r))


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

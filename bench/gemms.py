"""GEMMs as the driver lowers them, replayed on the cycle model: sections 1 and 5.

Every GEMM is a :class:`~driver.lowering.ChipPass` of
:func:`driver.lowering.lower_matmul`, the schedule the driver runs.  Its M blocks
repeat (the driver makes identical blocks one object), so :func:`replay` replays one
period of them until the schedule repeats itself and adds the rest
(:meth:`~bench.activity.ArrayActivity.repeat`): a 512x1024x1024 GEMM on a 4x4 array
(34 million commands) takes seconds.
"""

import itertools

import numpy as np

import driver
from driver.lowering import lower_matmul
from hw.isa import ParamRecord
from sim.golden import GoldenNpu
from sim.programs import random_params

from .activity import ArrayActivity
from .plan import (
    CONFIGS,
    DEFAULT_CONFIG,
    DIGITS,
    DIGITS_IMAGES,
    DIGITS_WIDTHS,
    GEMM_SCHEDULE_CYCLES,
    PREVIOUS_DESIGN_CYCLES,
    array_name,
)

__all__ = ["lower_gemm", "random_gemm", "periodic_runs", "replay", "replay_gemm",
           "utilization", "model_sweep", "digits_mlp", "activity_rows"]

#: GEMMs up to this many MACs also run on the golden model, with data, to check that the
#: replay counts exactly the cycles of the real program.
PROGRAM_CHECK_MACS = 1 << 20
#: A requantization record for GEMMs whose data is never made (the bench's replays).
_ANY_RECORD = ParamRecord(multiplier=1 << 30, shift=31)


def lower_gemm(config, gemm):
    """The driver's pass for ``gemm`` (uint8 activations, int8 weights, requantized),
    commands only: its weights and records are placeholders."""
    return lower_matmul(np.zeros((gemm.k, gemm.n), np.int8), batch=gemm.m, config=config,
                        act_signed=False, records=[_ANY_RECORD] * gemm.n, name=str(gemm))


def random_gemm(config, gemm, rng):
    """``gemm`` with random uint8 activations, int8 weights and requantization records:
    the driver's pass and its data-in stream."""
    a = rng.integers(0, 256, (gemm.m, gemm.k)).astype(np.uint8)
    w = rng.integers(-128, 128, (gemm.k, gemm.n)).astype(np.int8)
    chip_pass = lower_matmul(w, batch=gemm.m, config=config, act_signed=False,
                             records=random_params(rng, gemm.n), name=str(gemm))
    return chip_pass, chip_pass.data_in(a)


def periodic_runs(items, *, max_period=4):
    """``items`` as ``(unit, times)`` runs: ``unit`` (a list of up to ``max_period``
    items) ``times`` times in a row; items are compared by identity."""
    runs, i = [], 0
    while i < len(items):
        best = (1, 1)
        for period in range(1, max_period + 1):
            times = 1
            while (i + (times + 1) * period <= len(items)
                   and all(items[i + times * period + j] is items[i + j]
                           for j in range(period))):
                times += 1
            if times > 1 and period * times > best[0] * best[1]:
                best = (period, times)
        period, times = best
        runs.append((items[i:i + period], times))
        i += period * times
    return runs


def replay(chip_pass, activity):
    """Step ``activity`` through ``chip_pass``'s commands, repeated M blocks by
    :meth:`~bench.activity.ArrayActivity.repeat`."""
    for unit, times in periodic_runs(chip_pass.blocks):
        activity.repeat([ins for block in unit for ins in block.instructions], times)
    for instruction in chip_pass.tail:
        activity.step(instruction)
    return activity


def replay_gemm(config, gemm):
    """:meth:`~bench.activity.ArrayActivity.summary` of ``gemm``'s pass on a fresh chip."""
    return replay(lower_gemm(config, gemm), ArrayActivity(config)).summary()


def utilization(config, macs, cycles):
    """Useful MACs per array cycle and PE."""
    return macs / (cycles * config.rows * config.cols)


def _schedule_cycles(config, gemm):
    """The cycles of the removed ``gemm_schedule`` (see ``GEMM_SCHEDULE_CYCLES``)."""
    return GEMM_SCHEDULE_CYCLES.get(array_name(config), {}).get(str(gemm))


def model_sweep(plan, rng):
    """Section 1: cycles and utilization of every sweep GEMM on every array size."""
    rows = []
    for config in CONFIGS:
        for family, gemm in plan.sweep():
            replayed = replay_gemm(config, gemm)
            row = {"array": array_name(config), "family": family, "gemm": str(gemm),
                   "m": gemm.m, "k": gemm.k, "n": gemm.n, "macs": gemm.macs,
                   "commands": replayed["commands"], "cycles": replayed["cycles"],
                   "utilization": utilization(config, gemm.macs, replayed["cycles"]),
                   "schedule_cycles": _schedule_cycles(config, gemm), "golden_cycles": None}
            if gemm.macs <= PROGRAM_CHECK_MACS:
                chip_pass, data_in = random_gemm(config, gemm, rng)
                row["golden_cycles"] = GoldenNpu(config).run(chip_pass.commands,
                                                             data_in).cycles
            rows.append(row)
    return rows


def digits_mlp(config=DEFAULT_CONFIG, *, seed=0):
    """The digits MLP of ``examples/digits`` through the driver on the golden backend.

    The chip's schedule depends on the layer shapes and the batch alone, so random
    weights and images stand in for the trained model and the data set: this runs in
    a second, without training, and counts what ``python -m examples.digits.run``
    prints.

    Returns
    -------
    dict
        :meth:`~bench.activity.ArrayActivity.summary` of the driver's command streams
        (one run per layer), ``macs``, and ``driver_cycles``: what the driver's
        statistics report.
    """
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
        replay(chip_pass, activity)
    return {**activity.summary(), "macs": stats.macs, "driver_cycles": stats.cycles}


def activity_rows(plan):
    """Section 5: every cycle of the activity GEMMs and the digits MLP on the default array,
    with the cycles of the previous, one-command-at-a-time design."""
    config = DEFAULT_CONFIG
    workloads = [(str(gemm), gemm.macs, replay_gemm(config, gemm), _schedule_cycles(config, gemm))
                 for gemm in plan.activity]
    digits = digits_mlp(config)
    workloads.append((DIGITS, digits["macs"], digits, None))
    rows = []
    for name, macs, summary, schedule in workloads:
        previous = PREVIOUS_DESIGN_CYCLES.get(name)
        rows.append({"workload": name, "array": array_name(config), "macs": macs, **summary,
                     "utilization": utilization(config, macs, summary["cycles"]),
                     "schedule_cycles": schedule, "previous_cycles": previous,
                     "previous_utilization": previous and utilization(config, macs, previous)})
    return rows


def pruned_rows(plan, rng, config=DEFAULT_CONFIG):
    """Section 6: each pruned GEMM dense and with a share of its weight tiles zero.

    Whole ``rows`` x ``cols`` weight tiles are zeroed at random (block sparsity, the
    granularity the driver skips at), the pass is lowered with zero-tile skipping and
    run on the golden model with random data, and its output is checked against NumPy.
    """
    rows = []
    for gemm in plan.pruned:
        a = rng.integers(0, 256, (gemm.m, gemm.k)).astype(np.uint8)
        w = rng.integers(-128, 128, (gemm.k, gemm.n)).astype(np.int8)
        k_tiles, n_tiles = -(-gemm.k // config.rows), -(-gemm.n // config.cols)
        dense = None
        for share in (0.0, *plan.pruned_shares):
            pruned = w.copy()
            tiles = rng.permutation(k_tiles * n_tiles)[:round(share * k_tiles * n_tiles)]
            for tile in tiles:
                kt, nt = divmod(int(tile), n_tiles)
                pruned[kt * config.rows:(kt + 1) * config.rows,
                       nt * config.cols:(nt + 1) * config.cols] = 0
            chip_pass = lower_matmul(pruned, batch=gemm.m, config=config, act_signed=False,
                                     skip_zero_tiles=True, name=str(gemm))
            result = GoldenNpu(config).run(chip_pass.commands, chip_pass.data_in(a))
            exact = np.array_equal(chip_pass.decode(result.data_out),
                                   a.astype(np.int64) @ pruned.astype(np.int64))
            dense = result.cycles if dense is None else dense
            rows.append({"array": array_name(config), "gemm": str(gemm), "share": share,
                         "zero_tiles": len(tiles), "tiles": k_tiles * n_tiles,
                         "commands": len(chip_pass.commands), "cycles": result.cycles,
                         "saved": dense - result.cycles, "exact": exact})
    return rows

"""The benchmark: its replays of the driver's GEMMs count the real programs' cycles, cycle
for cycle, and a quick run writes a consistent report."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.activity import ACTIVITIES, ArrayActivity
from bench.gemms import lower_gemm, periodic_runs, random_gemm, replay, replay_gemm
from bench.plan import FULL_PLAN, GEMM_SCHEDULE_CYCLES, QUICK_PLAN, Gemm, array_name
from bench.report import write_report
from hw.config import NpuConfig
from hw.isa import Matmul
from sim.golden import GoldenNpu
from sim.programs import random_program

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Buffers so small that most GEMMs take many M blocks.
SMALL_BUFFERS = NpuConfig(rows=3, cols=5, act_depth=16, weight_tiles=2, acc_depth=8,
                          data_bytes=2)
#: Two activation regions and weight tiles that stay resident across M blocks.
RESIDENT = NpuConfig(rows=2, cols=2, act_depth=40, weight_tiles=8, acc_depth=30, data_bytes=1)
GEMMS = [Gemm(1, 1, 1), Gemm(17, 7, 11), Gemm(20, 9, 5), Gemm(40, 24, 16), Gemm(37, 5, 4),
         Gemm(300, 4, 4), Gemm(90, 16, 9)]


@pytest.mark.parametrize("config", [SMALL_BUFFERS, RESIDENT, NpuConfig()], ids=str)
@pytest.mark.parametrize("gemm", GEMMS, ids=str)
def test_replay_counts_the_cycles_of_the_real_program(config, gemm):
    chip_pass, data_in = random_gemm(config, gemm, np.random.default_rng(gemm.macs))
    replayed = replay_gemm(config, gemm)
    assert replayed["cycles"] == GoldenNpu(config).run(chip_pass.commands, data_in).cycles
    assert replayed["commands"] == len(chip_pass.instructions)
    assert lower_gemm(config, gemm).commands == chip_pass.commands
    assert set(replayed["parts"]) == set(ACTIVITIES)
    assert sum(replayed["parts"].values()) == replayed["cycles"]
    # Every row of A meets every weight tile once, one activation vector per cycle.
    tiles = math.ceil(gemm.k / config.rows) * math.ceil(gemm.n / config.cols)
    assert replayed["parts"]["streaming"] == gemm.m * tiles
    assert replayed["preloads"] + replayed["reused_tiles"] == replayed["matmuls"]


def _stepped(config, unit, times):
    activity = ArrayActivity(config)
    for _ in range(times):
        for instruction in unit:
            activity.step(instruction)
    return activity


@pytest.mark.parametrize("seed", range(12))
def test_repeat_skips_repetitions_without_changing_the_schedule(seed):
    # Random command mixes repeat with different periods (a unit with an odd number of
    # preloads alternates the weight banks) and leave different units idle for long.
    config = NpuConfig(rows=4, cols=4, act_depth=32, weight_tiles=3, acc_depth=16,
                       data_bytes=4)
    rng = np.random.default_rng(seed)
    unit = [ins for ins in random_program(config, rng, length=15).instructions
            if not (isinstance(ins, Matmul) and ins.count == 0)]   # an error, not a bench
    times = 11
    plain = _stepped(config, unit, times)
    fast = ArrayActivity(config)
    fast.repeat(unit, times)
    assert fast.summary() == plain.summary()
    assert fast.model.snapshot() == plain.model.snapshot()
    assert fast.model.counts() == plain.model.counts()
    assert fast.model.last_dispatch == plain.model.last_dispatch


@pytest.mark.parametrize("config", [SMALL_BUFFERS, RESIDENT], ids=str)
def test_replay_skips_identical_blocks(config):
    chip_pass = lower_gemm(config, Gemm(300, 4, 4))
    distinct = {id(block) for block in chip_pass.blocks}
    assert len(distinct) < len(chip_pass.blocks) // 4
    fast = replay(chip_pass, ArrayActivity(config))
    # Repetitions of a period of blocks (two activation regions take turns).
    assert fast.repetitions_skipped >= len(chip_pass.blocks) // 3
    plain = _stepped(config, chip_pass.instructions, 1)
    assert fast.summary() == plain.summary()


def test_periodic_runs():
    a, b, c = object(), object(), object()
    items = [a, b, c, b, c, b, c, a, a, a, b]
    runs = periodic_runs(items)
    assert [(len(unit), times) for unit, times in runs] == [(1, 1), (2, 3), (1, 3), (1, 1)]
    assert [x for unit, times in runs for _ in range(times) for x in unit] == items
    # Equal but distinct objects are not taken for repetitions.
    assert len(periodic_runs([[1], [1]])) == 2


def test_schedule_reference_covers_every_gemm():
    # Every GEMM row has the removed schedule's cycles beside the driver's.
    for plan in (FULL_PLAN, QUICK_PLAN):
        gemms = ([g for _, g in plan.sweep()] + list(plan.activity)
                 + [g for _, _, g in plan.scalesim])
        for config in (NpuConfig(rows=4, cols=4), NpuConfig(), NpuConfig(rows=16, cols=16)):
            assert all(str(g) in GEMM_SCHEDULE_CYCLES[array_name(config)] for g in gemms)


def test_quick_run_writes_a_consistent_report(tmp_path):
    # Amaranth only: it needs no build, while Icarus takes minutes to compile the default
    # chip and Verilator's builds are covered elsewhere; the backends share the host loop.
    # The timeout only guards against a hang.
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(tmp_path),
         "--backends", "amaranth"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = (tmp_path / "report.md").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    for plot in ("utilization.png", "speed.png", "activity.png"):
        assert (tmp_path / plot).stat().st_size > 0
        assert f"({plot})" in report
    for section in range(1, 8):
        assert f"## {section}. " in report
    assert "Not measured: run `make bench-fpga`" in report

    sweep = results["utilization"]
    assert {r["array"] for r in sweep} == {"4x4", "8x8", "16x16"}
    assert all(0 < r["utilization"] <= 1 for r in sweep)
    checked = [r for r in sweep if r["golden_cycles"] is not None]
    assert checked and all(r["cycles"] == r["golden_cycles"] for r in checked)
    assert all(r["schedule_cycles"] > 0 for r in sweep)
    assert "gemm_schedule (8d016d9)" in report

    assert {r["backend"] for r in results["validation"]} >= {"amaranth"}
    assert all(r["measured_cycles"] == r["model_cycles"] and r["bytes_match"]
               for r in results["validation"])
    speeds = {s["backend"]: s for s in results["speed"]}
    assert set(speeds) == {"amaranth"}
    assert speeds["amaranth"]["available"] and speeds["amaranth"]["cycles_per_second"] > 0
    assert results["golden"]["seconds"] > 0

    activity = results["activity"]
    for row in activity:
        assert sum(row["parts"].values()) == row["cycles"]
        assert 0 < row["utilization"] <= row["parts"]["streaming"] / row["cycles"] <= 1
        # Overlapping commands must never make a workload slower than running them
        # one at a time.
        assert row["previous_cycles"] is None or row["cycles"] < row["previous_cycles"]
    digits = [r for r in activity if "driver_cycles" in r]
    assert len(digits) == 1 and digits[0]["cycles"] == digits[0]["driver_cycles"]

    scalesim = results["scalesim"]
    if scalesim["ran"]:
        assert (tmp_path / "scalesim.png").exists()
        for row in scalesim["rows"]:
            assert row["scalesim_compute_cycles"] == row["scalesim_formula"]
            # Both stream M rows past every fold; SCALE-Sim adds fill, skew and drain per
            # fold, our whole layer the data movement around the streaming.
            assert row["our_streaming_cycles"] == row["m"] * row["scalesim_folds"]
            assert row["our_streaming_cycles"] < row["scalesim_compute_cycles"]
            assert row["our_streaming_cycles"] < row["our_cycles"]
    else:
        assert "SCALE-Sim was not run" in report

    # Without SCALE-Sim the report says so instead of showing a comparison.
    results["scalesim"] = {"ran": False, "reason": "switched off", "rows": []}
    write_report(results, tmp_path)
    assert "**SCALE-Sim was not run**: switched off" in (tmp_path / "report.md").read_text()


def test_pruned_tiles_save_cycles_exactly():
    from bench.gemms import pruned_rows
    from bench.plan import QUICK_PLAN
    rows = pruned_rows(QUICK_PLAN, np.random.default_rng(1))
    assert len(rows) == len(QUICK_PLAN.pruned) * (1 + len(QUICK_PLAN.pruned_shares))
    assert all(r["exact"] for r in rows)
    dense, *pruned = rows[:1 + len(QUICK_PLAN.pruned_shares)]
    assert dense["zero_tiles"] == 0 and dense["saved"] == 0
    # More zero tiles: fewer commands and fewer cycles than the dense pass.
    assert [r["zero_tiles"] for r in pruned] == sorted(r["zero_tiles"] for r in pruned)
    assert all(0 < r["saved"] and r["commands"] < dense["commands"] for r in pruned)
    assert pruned[-1]["cycles"] < pruned[0]["cycles"]

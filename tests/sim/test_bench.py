"""The benchmark: its replayed GEMMs are the real programs cycle for cycle, and a quick run
writes a consistent report."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hw.config import NpuConfig
from hw.isa import Matmul
from sim.bench import (
    ACTIVITIES,
    ArrayActivity,
    Gemm,
    gemm_instructions,
    gemm_pass_depth,
    gemm_pass_instructions,
    replay_gemm,
    write_report,
)
from sim.cycle_model import program_cycles
from sim.programs import gemm_program, random_params, random_program

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Buffers so small that most GEMMs take many M passes.
SMALL_BUFFERS = NpuConfig(rows=3, cols=5, act_depth=16, weight_tiles=2, acc_depth=8,
                          data_bytes=2)
GEMMS = [Gemm(1, 1, 1), Gemm(17, 7, 11), Gemm(20, 9, 5), Gemm(40, 24, 16), Gemm(37, 5, 4)]


def _real_program(config, gemm):
    rng = np.random.default_rng(gemm.macs)
    a = rng.integers(0, 256, (gemm.m, gemm.k)).astype(np.uint8)
    w = rng.integers(-128, 128, (gemm.k, gemm.n)).astype(np.int8)
    return gemm_program(config, a, w, random_params(rng, gemm.n))


@pytest.mark.parametrize("config", [SMALL_BUFFERS, NpuConfig()], ids=str)
@pytest.mark.parametrize("gemm", GEMMS, ids=str)
def test_bench_commands_are_the_real_programs_commands(config, gemm):
    assert list(gemm_instructions(config, gemm)) == _real_program(config, gemm).instructions


@pytest.mark.parametrize("config", [SMALL_BUFFERS, NpuConfig()], ids=str)
@pytest.mark.parametrize("gemm", GEMMS, ids=str)
def test_replay_counts_the_cycles_of_the_real_program(config, gemm):
    program = _real_program(config, gemm)
    replay = replay_gemm(config, gemm)
    assert replay["cycles"] == program_cycles(program.commands, program.data_in, config)
    assert replay["commands"] == len(program.instructions)
    assert set(replay["parts"]) == set(ACTIVITIES)
    assert sum(replay["parts"].values()) == replay["cycles"]
    # Every row of A meets every weight tile once, one activation vector per cycle.
    tiles = math.ceil(gemm.k / config.rows) * math.ceil(gemm.n / config.cols)
    assert replay["parts"]["streaming"] == gemm.m * tiles
    assert replay["preloads"] + replay["reused_tiles"] == replay["matmuls"]


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
    assert vars(fast.model) == vars(plain.model)


def test_repeat_skips_identical_gemm_passes():
    gemm = Gemm(40, 24, 16)
    depth = gemm_pass_depth(SMALL_BUFFERS, gemm.k)
    unit = gemm_pass_instructions(SMALL_BUFFERS, gemm, depth)
    passes = gemm.m // depth
    fast = ArrayActivity(SMALL_BUFFERS)
    fast.repeat(unit, passes)
    assert fast.repetitions_skipped > passes // 2
    plain = _stepped(SMALL_BUFFERS, unit, passes)
    assert fast.summary() == plain.summary()


def test_quick_run_writes_a_consistent_report(tmp_path):
    # Not Verilator: after a hardware change its rebuild alone takes over a minute, while
    # Icarus builds in seconds and Amaranth needs no build; the RTL backends share code.
    completed = subprocess.run(
        [sys.executable, "-m", "sim.bench", "--quick", "--output", str(tmp_path),
         "--backends", "icarus,amaranth"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = (tmp_path / "report.md").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    for plot in ("utilization.png", "speed.png", "activity.png"):
        assert (tmp_path / plot).stat().st_size > 0
        assert f"({plot})" in report
    for section in range(1, 6):
        assert f"## {section}. " in report

    sweep = results["utilization"]
    assert {r["array"] for r in sweep} == {"4x4", "8x8", "16x16"}
    assert all(0 < r["utilization"] <= 1 for r in sweep)
    checked = [r for r in sweep if r["golden_cycles"] is not None]
    assert checked and all(r["cycles"] == r["golden_cycles"] for r in checked)

    assert {r["backend"] for r in results["validation"]} >= {"amaranth"}
    assert all(r["measured_cycles"] == r["model_cycles"] and r["bytes_match"]
               for r in results["validation"])
    speeds = {s["backend"]: s for s in results["speed"]}
    assert set(speeds) == {"icarus", "amaranth"}
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

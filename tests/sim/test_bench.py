"""The benchmark: the grouped cycle count is exact, and a quick run writes a consistent report."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hw.config import NpuConfig
from sim.bench import CATEGORIES, Gemm, cycle_breakdown, gemm_command_mix, write_report
from sim.cycle_model import program_cycles
from sim.programs import gemm_program, random_params

REPO_ROOT = Path(__file__).resolve().parents[2]

SMALL_BUFFERS = NpuConfig(rows=3, cols=5, act_depth=16, weight_tiles=2, acc_depth=8,
                          data_bytes=2)


@pytest.mark.parametrize("config", [SMALL_BUFFERS, NpuConfig()], ids=str)
@pytest.mark.parametrize("gemm", [Gemm(1, 1, 1), Gemm(17, 7, 11), Gemm(20, 9, 5),
                                  Gemm(40, 24, 16)], ids=str)
def test_command_mix_counts_the_cycles_of_the_real_program(config, gemm):
    rng = np.random.default_rng(gemm.macs)
    a = rng.integers(0, 256, (gemm.m, gemm.k)).astype(np.uint8)
    w = rng.integers(-128, 128, (gemm.k, gemm.n)).astype(np.int8)
    program = gemm_program(config, a, w, random_params(rng, gemm.n))
    mix = gemm_command_mix(config, gemm)
    parts = cycle_breakdown(config, mix)
    assert set(parts) == set(CATEGORIES)
    assert sum(parts.values()) == program_cycles(program.commands, program.data_in, config)
    assert sum(repeats for _, repeats in mix) == len(program.instructions)
    # The array streams one activation vector per cycle for every weight tile.
    assert parts["matmul streaming"] * config.rows * config.cols >= gemm.macs


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
    for plot in ("utilization.png", "speed.png", "breakdown.png"):
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

    for row in results["breakdown"]:
        assert sum(row["parts"].values()) == row["cycles"]
        assert 0 < row["utilization"] <= row["matmul_only_utilization"] \
            <= row["no_preload_utilization"] <= 1

    scalesim = results["scalesim"]
    if scalesim["ran"]:
        assert (tmp_path / "scalesim.png").exists()
        for row in scalesim["rows"]:
            assert row["scalesim_compute_cycles"] == row["scalesim_formula"]
            # Ours streams the same tiles plus fetch and buffer stages, then adds loads
            # and stores: never fewer cycles than the array's compute alone.
            assert row["scalesim_compute_cycles"] < row["our_matmul_cycles"] <= row["our_cycles"]
    else:
        assert "SCALE-Sim was not run" in report

    # Without SCALE-Sim the report says so instead of showing a comparison.
    results["scalesim"] = {"ran": False, "reason": "switched off", "rows": []}
    write_report(results, tmp_path)
    assert "**SCALE-Sim was not run**: switched off" in (tmp_path / "report.md").read_text()

"""Runs the cocotb testbench ``npu_tb`` on the generated Verilog, on Verilator and Icarus."""

from pathlib import Path

import pytest

from hw.config import NpuConfig
from sim.rtl import RtlSimulation, simulator_problem

HERE = Path(__file__).parent

CONFIGS = {
    "4x4": NpuConfig(rows=4, cols=4, act_depth=64, weight_tiles=2, acc_depth=32, data_bytes=4),
    "2x3": NpuConfig(rows=2, cols=3, act_depth=48, weight_tiles=3, acc_depth=24, data_bytes=1),
    "8x8": NpuConfig(),
}


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_npu_cocotb(simulator, name, tmp_path):
    problem = simulator_problem(simulator)
    if problem:
        pytest.fail(f"{simulator} is required for the RTL tests: {problem}")
    sim = RtlSimulation(config=CONFIGS[name], simulator=simulator)
    tests, failures, results = sim.run_tests(
        "npu_tb", test_dir=tmp_path, seed=1234,
        extra_env={"PYTHONPATH": f"{HERE}:{HERE.parent}:{sim._environment()['PYTHONPATH']}"})
    log = (tmp_path / "sim.log").read_text(errors="replace")
    assert tests == 4, f"expected 4 cocotb tests, ran {tests}:\n{log[-3000:]}"
    assert failures == 0, f"{failures} cocotb test(s) failed:\n{log[-6000:]}"

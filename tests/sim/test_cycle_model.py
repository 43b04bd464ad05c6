"""The cycle model against the RTL's own cycle counter (Amaranth simulator, no stalls)."""

import numpy as np
import pytest

from hw import isa
from hw.config import NpuConfig
from sim.amaranth_runner import run_amaranth
from sim.cycle_model import command_cycles, program_cycles
from sim.golden import GoldenNpu
from sim.programs import gemm_program, random_params

CONFIGS = [
    NpuConfig(rows=4, cols=4, act_depth=32, weight_tiles=2, acc_depth=16, data_bytes=4),
    NpuConfig(rows=2, cols=3, act_depth=16, weight_tiles=2, acc_depth=8, data_bytes=1),
    NpuConfig(rows=3, cols=5, act_depth=16, weight_tiles=1, acc_depth=8, data_bytes=16),
]


def _program(config, seed):
    """A tiled GEMM, a requantized and a raw store, status reads, and a malformed command."""
    rng = np.random.default_rng(seed)
    m, k, n = 5, 2 * config.rows + 1, config.cols + 1
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    program = gemm_program(config, a, w, random_params(rng, n))
    program.add(isa.Store(acc_addr=0, count=2, n=1, raw=1))
    program.add(isa.ReadStatus())
    program.add(isa.Matmul(act_addr=0, count=0, slot=0, acc_addr=0))   # ZERO_SIZE
    program.add(isa.Store(acc_addr=0, count=1, n=1))                   # skipped
    program.add(isa.ReadStatus())
    program.add(isa.ClearError())
    program.add(isa.Fence())
    program.add(isa.Nop())
    return program


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_cycle_model_matches_rtl(config):
    program = _program(config, seed=config.rows)
    rtl = run_amaranth(config, program.commands, program.data_in)
    golden = GoldenNpu(config).run(program.commands, program.data_in)
    assert rtl.data_out == golden.data_out
    assert golden.status.error == isa.ErrorCode.NONE
    assert rtl.cycles == golden.cycles == program_cycles(program.commands, program.data_in,
                                                         config)
    # Array cycles: one per activation vector streamed.
    assert rtl.array_cycles * config.rows * config.cols == golden.array_macs


def test_skipped_commands_take_fetch_cycles_only():
    config = CONFIGS[0]
    store = isa.Store(acc_addr=0, count=4, n=4)
    assert command_cycles(store, config, executed=False) < command_cycles(store, config)
    assert command_cycles(None, config, executed=False) == command_cycles(isa.Nop(), config)

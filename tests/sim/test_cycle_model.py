"""The cycle model against the RTL's own cycle counter (Amaranth simulator, no stalls).

Random command mixes (loads, matmuls that reuse or replace resident weight tiles,
stores, status reads, fences, both kinds of error and the commands they skip) on
four configurations: the model's count must equal the chip's, cycle for cycle,
and the chip's output must equal the golden model's.
"""

import numpy as np
import pytest

from driver.lowering import lower_matmul
from hw import isa
from hw.config import NpuConfig
from sim.amaranth_runner import AmaranthSession
from sim.cycle_model import CycleModel, Outcome
from sim.golden import GoldenNpu
from sim.programs import random_params, random_program

CONFIGS = [
    NpuConfig(rows=4, cols=4, act_depth=32, weight_tiles=2, acc_depth=16, data_bytes=4),
    NpuConfig(rows=2, cols=3, act_depth=16, weight_tiles=3, acc_depth=8, data_bytes=1),
    NpuConfig(rows=3, cols=5, act_depth=16, weight_tiles=2, acc_depth=8, data_bytes=16),
    NpuConfig(rows=1, cols=1, act_depth=8, weight_tiles=2, acc_depth=8, data_bytes=2),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_cycle_model_matches_rtl_on_random_programs(config):
    rng = np.random.default_rng(config.rows * 7 + config.cols)
    model = GoldenNpu(config)
    with AmaranthSession(config=config) as chip:
        for _ in range(6):   # one chip: weight banks and errors carry over between runs
            program = random_program(config, rng)
            expected = model.run(program.commands, program.data_in)
            got = chip.run(program.commands, program.data_in)
            assert got.data_out == expected.data_out, program.disassemble()
            assert got.status == expected.status
            assert got.cycles == expected.cycles, program.disassemble()


@pytest.mark.parametrize("config, m, k, n", [
    (CONFIGS[0], 19, 13, 9), (CONFIGS[1], 19, 7, 7),
    (CONFIGS[0], 40, 4, 9),    # two activation regions: the next block loads meanwhile
], ids=str)
def test_cycle_model_matches_rtl_on_tiled_gemms(config, m, k, n):
    # The driver's schedule: several M blocks, K and N tiles.
    rng = np.random.default_rng(11)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    chip_pass = lower_matmul(w, batch=len(a), config=config, act_signed=False,
                             records=random_params(rng, w.shape[1]))
    assert len(chip_pass.blocks) > 1
    commands, data_in = chip_pass.commands, chip_pass.data_in(a)
    with AmaranthSession(config=config) as chip:
        got = chip.run(commands, data_in)
    expected = GoldenNpu(config).run(commands, data_in)
    assert got.data_out == expected.data_out
    assert got.cycles == expected.cycles


#: Small enough for the Amaranth simulator, large enough for the blocked schedule.
BLOCKED_CONFIG = NpuConfig(rows=2, cols=2, act_depth=64, weight_tiles=2, acc_depth=64,
                           data_bytes=2)


@pytest.mark.parametrize("m, k, n, prune", [
    (45, 10, 5, False),   # three K groups through two activation regions, a lone last tile
    (44, 9, 6, True),     # all-zero weight tiles skipped
], ids=str)
def test_cycle_model_matches_rtl_on_blocked_gemms(m, k, n, prune):
    config = BLOCKED_CONFIG
    rng = np.random.default_rng(m + k + n)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    if prune:
        w[:4, :2] = 0
    chip_pass = lower_matmul(w, batch=m, config=config, act_signed=False,
                             records=random_params(rng, n), skip_zero_tiles=prune)
    plan = chip_pass.plan
    assert plan.n_group is not None and plan.k_group < len(plan.k_tiles)
    assert len(chip_pass.blocks) > 1 and bool(chip_pass.skipped) == prune
    commands, data_in = chip_pass.commands, chip_pass.data_in(a)
    with AmaranthSession(config=config) as chip:
        got = chip.run(commands, data_in)
    expected = GoldenNpu(config).run(commands, data_in)
    assert got.data_out == expected.data_out
    assert got.status == expected.status and got.status.error == 0
    assert got.cycles == expected.cycles


def test_overlap_hides_weight_loads_behind_streaming():
    # Two tiles, each streamed for 64 vectors: loading and preloading the second tile
    # happen while the first streams, so the array streams back to back.
    config = CONFIGS[0]
    model = CycleModel(config)
    stream = 16
    for slot in range(2):
        model.step(isa.LoadWeight(slot=slot, k=config.rows, n=config.cols))
        model.step(isa.Matmul(act_addr=0, count=stream, slot=slot, acc_addr=0))
    first_tile_alone = CycleModel(config)
    first_tile_alone.step(isa.LoadWeight(slot=0, k=config.rows, n=config.cols))
    first_tile_alone.step(isa.Matmul(act_addr=0, count=stream, slot=0, acc_addr=0))
    assert model.cycles == first_tile_alone.cycles + stream


def test_resident_tile_needs_no_preload():
    config = CONFIGS[0]
    model = CycleModel(config)
    model.step(isa.LoadWeight(slot=1, k=config.rows, n=config.cols))
    for _ in range(3):
        model.step(isa.Matmul(act_addr=0, count=4, slot=1, acc_addr=0))
    assert model.breakdown.preloads == 1 and model.breakdown.reused_tiles == 2
    model.step(isa.LoadWeight(slot=1, k=1, n=1))   # rewriting the slot evicts the tile
    model.step(isa.Matmul(act_addr=0, count=4, slot=1, acc_addr=0))
    assert model.breakdown.preloads == 2


def test_skipped_commands_cost_one_dispatch_cycle():
    config = CONFIGS[0]
    model = CycleModel(config)
    store = isa.Store(acc_addr=0, count=4, n=4)
    first = model.step(store, Outcome.SKIPPED)
    assert model.step(store, Outcome.SKIPPED) == first + 1
    assert model.cycles == first + 2


def test_cycle_model_matches_rtl_with_lanes_slower_than_the_port():
    # One requantizer lane behind a 2-byte port: a requantized row occupies the lane
    # longer than its beats take, and after long raw rows its first rows wait in the
    # queue for the serializer; more rows than the queue holds, so credits run out.
    from sim.programs import CommandStream, _records
    config = NpuConfig(rows=2, cols=12, act_depth=32, weight_tiles=1, acc_depth=32,
                       data_bytes=2, requant_lanes=1)
    assert config.requant_cycles(5) > config.beats(5)
    rng = np.random.default_rng(5)
    program = CommandStream(config)

    def rows_of(shape):
        from hw.beats import pack_rows
        return pack_rows(config, rng.integers(0, 256, shape))

    program.add(isa.LoadAct(addr=0, count=32, length=2), rows_of((32, 2)))
    program.add(isa.LoadWeight(slot=0, k=2, n=12), rows_of((2, 12)))
    program.add(isa.LoadParams(count=12), _records(config, random_params(rng, 12)))
    program.add(isa.Matmul(act_addr=0, count=32, slot=0, acc_addr=0))
    for n, count, raw in [(12, 3, 1), (5, 30, 0), (12, 2, 1), (3, 20, 0), (12, 20, 0),
                          (1, 4, 1), (7, 18, 0)]:
        program.add(isa.Store(acc_addr=0, count=count, n=n, raw=raw))
        if n == 3:
            program.add(isa.ReadStatus())
    expected = GoldenNpu(config).run(program.commands, program.data_in)
    with AmaranthSession(config=config) as chip:
        got = chip.run(program.commands, program.data_in)
    assert got.data_out == expected.data_out
    assert got.status == expected.status
    assert got.cycles == expected.cycles, program.disassemble()
